"""The local state's reads: the caches (kept in memory between changes) and snapshots.

`caches()` re-reads only the caches this process's commits touched, or all of
them when another process has committed (SQLite's `data_version` changed).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gitsync.model import CacheEvent, CacheStatus, ObservedCache
from gitsync.providers.local.statedb import _ADD_EVENT, _parse_ts, _ts
from gitsync.providers.local.stateleases import LeaseStore


def _listing_order(cache: ObservedCache) -> tuple[str, datetime]:
    return (cache.name, cache.created_at or _EPOCH)


_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """What one finished pull froze: per image its resolved manifest, and the content size."""

    snapshot_id: str
    cache_id: str
    created_at: datetime
    content_bytes: int
    images: tuple[dict[str, object], ...]


def image_digests(images: Sequence[Mapping[str, object]]) -> list[list[str]]:
    """[image as written, digest its reference resolved to] of a snapshot's image records.

    The digest is the index's for a multi-platform image, else the manifest's:
    what a registry answers for the tag, so a later answer can be compared.
    """
    pairs: list[list[str]] = []
    for record in images:
        image = record.get("image")
        digest = record.get("indexDigest") or record.get("manifestDigest")
        if isinstance(image, str) and isinstance(digest, str):
            pairs.append([image, digest])
    return pairs


def _held(stored: str | None, legacy: str | None) -> tuple[tuple[str, str], ...]:
    """A cache's `image_digests` from its snapshot's column, else (before schema 4) its record."""
    try:
        if stored is not None:
            pairs = json.loads(stored)
        elif legacy is not None:
            pairs = image_digests(json.loads(legacy))
        else:
            return ()
        return tuple((str(image), str(digest)) for image, digest in pairs)
    except (ValueError, TypeError, AttributeError):
        return ()  # an unreadable record holds nothing known: no move is ever seen in it


class StateReads(LeaseStore):
    """The cache and snapshot queries, and the scrub's one write (`mark_damaged`)."""

    def updated_at(self, cache_id: str) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT updated_at FROM caches WHERE id = ?", (cache_id,)
            ).fetchone()
        return None if row is None else _parse_ts(row["updated_at"])

    def caches(self) -> tuple[ObservedCache, ...]:
        """Every cache with its events; the same tuple object while nothing has changed."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if self._snapshot is None or version != self._data_version:
                self._by_id = self._read_caches(None)
                self._dirty.clear()
                self._snapshot = None
            elif self._dirty:
                ids = sorted(self._dirty)
                self._dirty.clear()
                fresh = self._read_caches(ids)
                for cache_id in ids:
                    if cache_id in fresh:
                        self._by_id[cache_id] = fresh[cache_id]
                    else:
                        self._by_id.pop(cache_id, None)
                self._snapshot = None
            self._data_version = version
            if self._snapshot is None:
                self._snapshot = tuple(sorted(self._by_id.values(), key=_listing_order))
            return self._snapshot

    def cache(self, cache_id: str) -> ObservedCache | None:
        self.caches()
        with self._lock:
            return self._by_id.get(cache_id)

    def expired(self, now: datetime) -> tuple[ObservedCache, ...]:
        """Caches whose expiry has passed; a cheap SQL count first, as most passes find none."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM caches WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (_ts(now),),
            ).fetchone()
        if not row[0]:
            return ()
        return tuple(c for c in self.caches() if c.expires_at is not None and c.expires_at <= now)

    def _read_caches(self, ids: list[str] | None) -> dict[str, ObservedCache]:
        """Rows of `ids` (all when None) with their events, as ObservedCache by id."""
        where, params = "", tuple(ids or ())
        if ids is not None:
            where = f" WHERE {{}} IN ({', '.join('?' * len(ids))})"
        # Only "?" placeholders are formatted into the SQL; the ids travel as parameters.
        # A snapshot's whole record only where it predates `image_digests` (schema 4).
        cache_sql = (
            "SELECT c.*, s.content_bytes, s.created_at AS snapshot_at,"  # noqa: S608  # placeholders only
            " s.image_digests AS snapshot_digests,"
            " CASE WHEN s.image_digests IS NULL THEN s.images END AS legacy_images"
            " FROM caches c LEFT JOIN snapshots s ON s.id = c.snapshot_id" + where.format("c.id")
        )
        event_sql = (
            "SELECT * FROM events"  # noqa: S608  # placeholders only
            + where.format("cache_id")
            + " ORDER BY last_timestamp, first_timestamp"
        )
        with self._lock:
            rows = self._db.execute(cache_sql, params).fetchall()
            events = self._db.execute(event_sql, params).fetchall()
        by_cache: dict[str, list[CacheEvent]] = {}
        for e in events:
            by_cache.setdefault(e["cache_id"], []).append(
                CacheEvent(
                    type=e["type"],
                    reason=e["reason"],
                    message=e["message"],
                    count=e["count"],
                    first_timestamp=_parse_ts(e["first_timestamp"]),
                    last_timestamp=_parse_ts(e["last_timestamp"]),
                )
            )
        return {
            r["id"]: ObservedCache(
                name=r["name"],
                cache_id=r["id"],
                status=CacheStatus(r["status"]),
                images=tuple(json.loads(r["images"])),
                image_cache_size_gib=r["image_cache_size_gib"],
                retention_days=r["retention_days"],
                image_pull_secrets=tuple(json.loads(r["image_pull_secrets"])),
                owner=r["owner"],
                created_at=_parse_ts(r["created_at"]),
                expires_at=_parse_ts(r["expires_at"]),
                last_matched_at=_parse_ts(r["last_matched_at"]),
                snapshot_id=r["snapshot_id"],
                content_bytes=r["content_bytes"],
                events=tuple(by_cache.get(r["id"], ())),
                prune=bool(r["prune"]),
                snapshot_problem=r["snapshot_problem"],
                image_digests=_held(r["snapshot_digests"], r["legacy_images"]),
                image_digests_at=_parse_ts(r["snapshot_at"]),
            )
            for r in rows
        }

    def snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)
            ).fetchone()
        if row is None:
            return None
        return SnapshotRecord(
            snapshot_id=row["id"],
            cache_id=row["cache_id"],
            created_at=datetime.fromisoformat(row["created_at"]),
            content_bytes=row["content_bytes"],
            images=tuple(json.loads(row["images"])),
        )

    def snapshot_blobs(
        self, snapshot_ids: Collection[str]
    ) -> dict[str, tuple[tuple[str, int | None], ...]]:
        """(digest, recorded size or None) of each snapshot's blobs; snapshots are immutable."""
        ids = sorted(set(snapshot_ids))
        found: dict[str, list[tuple[str, int | None]]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            sql = (
                "SELECT snapshot_id, digest, size FROM snapshot_blobs"  # noqa: S608  # placeholders only
                f" WHERE snapshot_id IN ({', '.join('?' * len(batch))})"
            )
            with self._lock:
                rows = self._db.execute(sql, batch).fetchall()
            for row in rows:
                found[row["snapshot_id"]].append((row["digest"], row["size"]))
        return {i: tuple(blobs) for i, blobs in found.items()}

    def ready_blobs_after(self, after: str, *, limit: int) -> list[tuple[str, int | None]]:
        """The next `limit` digests after `after`, in order, that a Ready cache's snapshot uses."""
        with self._lock:
            rows = self._db.execute(
                "SELECT b.digest, MAX(b.size) AS size FROM snapshot_blobs b"
                " JOIN caches c ON c.snapshot_id = b.snapshot_id"
                " WHERE c.status = ? AND b.digest > ?"
                " GROUP BY b.digest ORDER BY b.digest LIMIT ?",
                (CacheStatus.READY.value, after, limit),
            ).fetchall()
        return [(r["digest"], r["size"]) for r in rows]

    def ready_users(self, digest: str) -> list[tuple[str, str]]:
        """(cache id, snapshot id) of the Ready caches whose snapshot references `digest`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.snapshot_id FROM caches c"
                " JOIN snapshot_blobs b ON b.snapshot_id = c.snapshot_id"
                " WHERE b.digest = ? AND c.status = ? ORDER BY c.id",
                (digest, CacheStatus.READY.value),
            ).fetchall()
        return [(r["id"], r["snapshot_id"]) for r in rows]

    def mark_damaged(self, cache_id: str, *, snapshot_id: str, problem: str, message: str) -> bool:
        """A Ready cache whose snapshot is damaged: Failed, why, and a Warning event, at once.

        Only while the cache still serves `snapshot_id` and is Ready: a rebuild that
        committed meanwhile is left alone. True if marked.
        """
        now = _ts(self.now())
        with self.transaction(touches=cache_id) as db:
            found = db.execute(
                "UPDATE caches SET status = ?, snapshot_problem = ?, updated_at = ?"
                " WHERE id = ? AND snapshot_id = ? AND status = ?",
                (
                    CacheStatus.FAILED.value,
                    problem,
                    now,
                    cache_id,
                    snapshot_id,
                    CacheStatus.READY.value,
                ),
            ).rowcount
            if found:
                db.execute(_ADD_EVENT, (cache_id, "Warning", "SnapshotDamaged", message, now, now))
        return bool(found)

    def referenced_digests(self) -> frozenset[str]:
        """Every blob digest some snapshot references: what `gc` must keep."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT digest FROM snapshot_blobs").fetchall()
        return frozenset(r["digest"] for r in rows)

"""The local backend's durable state: caches, snapshots, events and the controller's memory.

SQLite in WAL mode (stdlib `sqlite3`) because the daemon, `gitsync status`
and `gitsync gc` read it from separate processes while a pull writes, and a
crash must never leave half a record: every change is one transaction.

Tables mirror the cloud's objects:

- `caches`: one row per cache (`imc-…` id, name, owner, spec, status, times).
  The row is written *before* pulling (status Pending), so a crash mid-pull
  leaves a visible, owned cache that the next pass recognises as interrupted
  instead of creating a duplicate.
- `snapshots`: immutable records of what a finished pull produced: the
  resolved manifests and the expanded content size. A cache points at its
  current snapshot; while an update pulls or after it fails, the old snapshot
  still serves.
- `snapshot_blobs`: which blob digests each snapshot references, for `gc`.
- `leases` and `lease_blobs`: blobs an operation in progress (a pull, an
  export) uses before any snapshot references them, as containerd's leases do:
  `gc` keeps what snapshots reference and what live leases hold, and nothing
  else. A lease expires unless renewed, so one left by a killed process lets
  go on its own (see `leases`).
- `events`: the cloud's event shape, deduplicated by (cache, type, reason,
  message) with a count and first/last timestamps.
- `meta`: small key/value facts (the applied revision, the last error, the
  schema version).

Schema versions: 1 had no leases; 2 adds them; 3 adds each snapshot blob's
size (what the per-pass check compares with the file), a cache's
`snapshot_problem` (why a Ready snapshot was found damaged, until a new
snapshot replaces it) and the scrub's position (meta keys). Opening a data dir upgrades it
in one transaction; a data dir written by a newer gitsync is refused rather
than misread.

A full disk: SQLite refuses the transaction (SQLITE_FULL) and rolls it back
whole, so the database stays consistent; `transaction` makes sure no half-open
transaction is left on the connection and raises `DiskFullError`, a
TemporaryError. In WAL mode every write, a DELETE too, appends frames to the
WAL; they need new disk space unless a checkpoint has let the WAL start over
in the space its file already holds. Hence a small WAL checkpointed often
(`WAL_CHECKPOINT_PAGES`), and a build's failure recorded in one transaction
(`record_failure`: status, event and the end of its lease), after the build
has given back the space it took, and once more after a checkpoint if the
disk refused it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeGuard

from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import CacheEvent, CacheSpec, CacheStatus, ObservedCache

SCHEMA_VERSION = 3
# Checkpoint the WAL once it holds this many pages (SQLite's default is 1000, ~4 MiB).
# A small WAL is copied into the database often and then written again from its
# start, so the state takes little disk and a transaction mostly lands in space the
# WAL already holds, which is what still works when the disk is full.
WAL_CHECKPOINT_PAGES = 64

# Version 1, created as it always was (CREATE … IF NOT EXISTS), then upgraded by _MIGRATIONS.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS caches (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT,
    status TEXT NOT NULL,
    images TEXT NOT NULL,
    image_cache_size_gib INTEGER NOT NULL,
    retention_days INTEGER NOT NULL,
    image_pull_secrets TEXT NOT NULL,
    prune INTEGER NOT NULL DEFAULT 1,
    snapshot_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT,
    last_matched_at TEXT
);
CREATE INDEX IF NOT EXISTS caches_name ON caches(name);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    cache_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    content_bytes INTEGER NOT NULL,
    images TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_blobs (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, digest)
);
CREATE INDEX IF NOT EXISTS snapshot_blobs_digest ON snapshot_blobs(digest);
CREATE TABLE IF NOT EXISTS events (
    cache_id TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_timestamp TEXT NOT NULL,
    last_timestamp TEXT NOT NULL,
    PRIMARY KEY (cache_id, type, reason, message)
);
CREATE TABLE IF NOT EXISTS tombstones (
    name TEXT PRIMARY KEY,
    message TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""

# Statements that take version N-1 to N, run in one transaction with the version bump.
# Lease times are Unix seconds (REAL): gc compares them with its clock, to the second.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "CREATE TABLE IF NOT EXISTS leases ("
        " id TEXT PRIMARY KEY,"
        " purpose TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " created_at REAL NOT NULL,"
        " expires_at REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS lease_blobs ("
        " lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,"
        " digest TEXT NOT NULL,"
        " PRIMARY KEY (lease_id, digest))",
        "CREATE INDEX IF NOT EXISTS lease_blobs_digest ON lease_blobs(digest)",
    ),
    # NULL size: a snapshot committed before version 3, checked for presence only
    # (the scrub still hashes its blobs).
    3: (
        "ALTER TABLE snapshot_blobs ADD COLUMN size INTEGER",
        "ALTER TABLE caches ADD COLUMN snapshot_problem TEXT",
    ),
}
SCRUB_STARTED_KEY = "scrub_pass_started_at"  # Unix seconds, the pass in progress (or last)
SCRUB_AFTER_KEY = "scrub_after_digest"  # the last digest hashed in that pass; "" once done
SCRUB_FINISHED_KEY = "scrub_pass_finished_at"  # Unix seconds the last full pass ended


class SchemaVersionError(PermanentError):
    """The state database was written by a newer gitsync, whose schema this one cannot read."""


class DataDiskError(TemporaryError):
    """Writing to the data disk failed: nothing half-written was kept; retry later."""


class DiskFullError(DataDiskError):
    """The data disk is full (ENOSPC, SQLITE_FULL): nothing of the write was kept."""


def _state_disk_full(path: Path, exc: sqlite3.Error) -> DiskFullError:
    return DiskFullError(
        f"cannot write the state database {path}: the disk is full ({exc});"
        " nothing of this change was written"
    )


def _disk_full(exc: BaseException) -> TypeGuard[sqlite3.Error]:
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == (
        sqlite3.SQLITE_FULL
    )


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _parse_ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _listing_order(cache: ObservedCache) -> tuple[str, datetime]:
    return (cache.name, cache.created_at or _EPOCH)


_EPOCH = datetime.fromtimestamp(0, UTC)
# Events are deduplicated by (cache, type, reason, message), counted, and timestamped.
_ADD_EVENT = (
    "INSERT INTO events(cache_id, type, reason, message, count, first_timestamp,"
    " last_timestamp) VALUES (?, ?, ?, ?, 1, ?, ?)"
    " ON CONFLICT(cache_id, type, reason, message)"
    " DO UPDATE SET count = count + 1, last_timestamp = excluded.last_timestamp"
)
_ANY = "*"  # transaction(touches=...) default: any cache may have changed


def new_cache_id() -> str:
    """`imc-` and 8 lower-case alphanumerics, the shape of the cloud's ids."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "imc-" + "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease as stored: who holds it, for what, until when (Unix seconds), and how much."""

    lease_id: str
    purpose: str
    owner: str
    created_at: float
    expires_at: float
    blobs: int


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """What one gc batch found: digests kept for a snapshot or a lease, and those removed."""

    referenced: int
    leased: int
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """What one finished pull froze: per image its resolved manifest, and the content size."""

    snapshot_id: str
    cache_id: str
    created_at: datetime
    content_bytes: int
    images: tuple[dict[str, object], ...]


class StateStore:
    """Transactions over the state database; one instance per process, safe across threads."""

    def __init__(self, path: Path, *, clock: type[datetime] = datetime) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # check_same_thread=False: the executor's worker threads share this connection;
        # the RLock serialises them, which SQLite needs anyway for writes.
        self._db = sqlite3.connect(
            path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        # caches() is kept in memory: our own commits mark the caches they touch
        # (re-read alone), another process's commit changes SQLite's `data_version`
        # (everything is re-read). At 10,000 caches a full read costs ~100 ms.
        self._by_id: dict[str, ObservedCache] = {}
        self._snapshot: tuple[ObservedCache, ...] | None = None
        self._data_version: int | None = None
        self._dirty: set[str] = set()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)  # idempotent: CREATE … IF NOT EXISTS
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if _disk_full(exc):
                raise _state_disk_full(path, exc) from exc
            raise

    def _schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        # No version row: a database just created from _SCHEMA, which is version 1.
        if row is None or row["value"] is None:
            return 1
        try:
            return int(row["value"])
        except ValueError as exc:
            raise SchemaVersionError(
                f"{self.path}: schema_version {row['value']!r} in its meta table is not a"
                " number; this is not a gitsync state database, or it is damaged"
            ) from exc

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, all steps and the new version in one transaction."""
        if self._schema_version() == SCHEMA_VERSION:
            return  # the usual case: no write, so other processes' caches stay valid
        with self.transaction(touches=None) as db:
            current = self._schema_version()  # again, under the write lock
            if current == SCHEMA_VERSION:
                return  # another process upgraded it meanwhile
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {current}, newer than this gitsync"
                    f" understands ({SCHEMA_VERSION}); upgrade gitsync, or give it another"
                    " --data-dir"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def now(self) -> datetime:
        return self._clock.now(UTC).replace(microsecond=0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, *, touches: str | None = _ANY) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: all of a change or none of it, even on SIGKILL.

        `touches` names the cache the change is about, so `caches()` re-reads just
        it; None says no cache changed; by default anything may have changed.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # SQLITE_FULL and friends may have rolled it back already; a failed
                    # statement or COMMIT may not have: never leave a transaction open.
                    if self._db.in_transaction:
                        with suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if _disk_full(exc):
                    raise _state_disk_full(self.path, exc) from exc
                raise
            if touches is _ANY:
                self._data_version = None  # unknown change: read everything again
            elif touches is not None:
                self._dirty.add(touches)

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"]) if row["value"] is not None else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction(touches=None) as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---------------------------------------------------------------- caches

    def insert_cache(self, spec: CacheSpec, *, owner: str, status: CacheStatus) -> str:
        now = self.now()
        cache_id = new_cache_id()
        with self.transaction(touches=cache_id) as db:
            db.execute(
                "INSERT INTO caches(id, name, owner, status, images, image_cache_size_gib,"
                " retention_days, image_pull_secrets, prune, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cache_id,
                    spec.name,
                    owner,
                    status.value,
                    json.dumps(list(spec.images)),
                    spec.image_cache_size_gib,
                    spec.retention_days,
                    json.dumps(list(spec.image_pull_secrets)),
                    int(spec.prune),
                    _ts(now),
                    _ts(now),
                ),
            )
        return cache_id

    def set_spec(self, cache_id: str, spec: CacheSpec, *, status: CacheStatus) -> None:
        with self.transaction(touches=cache_id) as db:
            db.execute(
                "UPDATE caches SET status = ?, images = ?, image_cache_size_gib = ?,"
                " retention_days = ?, image_pull_secrets = ?, prune = ?, updated_at = ?"
                " WHERE id = ?",
                (
                    status.value,
                    json.dumps(list(spec.images)),
                    spec.image_cache_size_gib,
                    spec.retention_days,
                    json.dumps(list(spec.image_pull_secrets)),
                    int(spec.prune),
                    _ts(self.now()),
                    cache_id,
                ),
            )

    def set_status(self, cache_id: str, status: CacheStatus) -> None:
        with self.transaction(touches=cache_id) as db:
            db.execute(
                "UPDATE caches SET status = ?, updated_at = ? WHERE id = ?",
                (status.value, _ts(self.now()), cache_id),
            )

    def commit_snapshot(
        self,
        cache_id: str,
        *,
        content_bytes: int,
        images: Sequence[dict[str, object]],
        blob_digests: Iterable[str],
        retention_days: int,
        lease_id: str | None = None,
        check: Callable[[], None] | None = None,
        blob_sizes: Mapping[str, int] | None = None,
    ) -> str:
        """Record a finished pull and make it the cache's snapshot, Ready, in one transaction.

        `check` runs inside the transaction, before anything is written: gc removes
        blobs only inside transactions too, so what `check` sees present stays present
        until the snapshot references it; raising aborts the commit. The pull's lease
        (`lease_id`) ends in the same transaction, as the snapshot now keeps its blobs.
        `blob_sizes` are what the per-pass check compares each blob's file with.
        """
        sizes = blob_sizes or {}
        now = self.now()
        snapshot_id = "snap-" + secrets.token_hex(6)
        expires = now + timedelta(days=retention_days) if retention_days > 0 else None
        with self.transaction(touches=cache_id) as db:
            if check is not None:
                check()
            db.execute(
                "INSERT INTO snapshots(id, cache_id, created_at, content_bytes, images)"
                " VALUES (?, ?, ?, ?, ?)",
                (snapshot_id, cache_id, _ts(now), content_bytes, json.dumps(list(images))),
            )
            db.executemany(
                "INSERT OR IGNORE INTO snapshot_blobs(snapshot_id, digest, size) VALUES (?, ?, ?)",
                [(snapshot_id, d, sizes.get(d)) for d in sorted(set(blob_digests))],
            )
            old = db.execute("SELECT snapshot_id FROM caches WHERE id = ?", (cache_id,)).fetchone()
            db.execute(
                "UPDATE caches SET snapshot_id = ?, status = ?, updated_at = ?, expires_at = ?,"
                " snapshot_problem = NULL WHERE id = ?",
                (snapshot_id, CacheStatus.READY.value, _ts(now), _ts(expires), cache_id),
            )
            if old is not None and old["snapshot_id"]:
                db.execute("DELETE FROM snapshots WHERE id = ?", (old["snapshot_id"],))
            if lease_id is not None:
                db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        return snapshot_id

    def delete_cache(self, cache_id: str) -> None:
        with self.transaction(touches=cache_id) as db:
            db.execute(
                "DELETE FROM snapshots WHERE cache_id = ?",
                (cache_id,),
            )
            db.execute("DELETE FROM events WHERE cache_id = ?", (cache_id,))
            db.execute("DELETE FROM caches WHERE id = ?", (cache_id,))

    def touch_matched(self, cache_id: str, moment: datetime) -> None:
        with self.transaction(touches=cache_id) as db:
            db.execute(
                "UPDATE caches SET last_matched_at = ? WHERE id = ?", (_ts(moment), cache_id)
            )

    def add_event(self, cache_id: str, *, type_: str, reason: str, message: str) -> None:
        now = _ts(self.now())
        with self.transaction(touches=cache_id) as db:
            db.execute(_ADD_EVENT, (cache_id, type_, reason, message, now, now))

    def record_failure(
        self,
        cache_id: str,
        *,
        status: CacheStatus,
        reason: str,
        message: str,
        lease_id: str | None = None,
    ) -> bool:
        """A build failed: its status, a Warning event and the end of its lease, at once.

        One transaction, not three: each transaction appends its own frames to the
        WAL, and this one has to fit on a disk that may still be full. Refused for
        want of room, it checkpoints the WAL, so that the WAL starts over in the
        space it already holds, and tries once more. False (and only the lease
        ended) if the cache is gone meanwhile.
        """
        try:
            return self._record_failure(cache_id, status, reason, message, lease_id)
        except DiskFullError:
            self.checkpoint()
            return self._record_failure(cache_id, status, reason, message, lease_id)

    def _record_failure(
        self,
        cache_id: str,
        status: CacheStatus,
        reason: str,
        message: str,
        lease_id: str | None,
    ) -> bool:
        now = _ts(self.now())
        with self.transaction(touches=cache_id) as db:
            found = db.execute(
                "UPDATE caches SET status = ?, updated_at = ? WHERE id = ?",
                (status.value, now, cache_id),
            ).rowcount
            if found:
                db.execute(_ADD_EVENT, (cache_id, "Warning", reason, message, now, now))
            if lease_id is not None:
                db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        return bool(found)

    def checkpoint(self) -> bool:
        """Copy the WAL into the database now, without waiting for readers; best effort.

        Once all of it is copied and no reader still needs it, the next transaction
        writes the WAL from its start again, into space the file already holds: on a
        full disk that is the room a small transaction can still have. True if done.
        """
        with self._lock:
            try:
                _, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                return False  # e.g. the database file cannot grow: the disk is that full
        return bool(frames == copied)

    def put_tombstone(self, name: str, message: str) -> None:
        """Remember why a cache disappeared (expiry), for the event of its successor."""
        with self.transaction(touches=None) as db:
            db.execute(
                "INSERT INTO tombstones(name, message, at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET message = excluded.message, at = excluded.at",
                (name, message, _ts(self.now())),
            )

    def pop_tombstone(self, name: str) -> str | None:
        with self.transaction(touches=None) as db:
            row = db.execute("SELECT message FROM tombstones WHERE name = ?", (name,)).fetchone()
            db.execute("DELETE FROM tombstones WHERE name = ?", (name,))
        return None if row is None else str(row["message"])

    # ----------------------------------------------------------------- reads

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
        cache_sql = (
            "SELECT c.*, s.content_bytes FROM caches c"  # noqa: S608  # placeholders only
            " LEFT JOIN snapshots s ON s.id = c.snapshot_id" + where.format("c.id")
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

    # ---------------------------------------------------------------- leases

    def create_lease(
        self, lease_id: str, *, purpose: str, owner: str, now: float, expires_at: float
    ) -> None:
        with self.transaction(touches=None) as db:
            db.execute(
                "INSERT INTO leases(id, purpose, owner, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (lease_id, purpose, owner, now, expires_at),
            )

    def hold_blobs(self, lease_id: str, digests: Collection[str], *, expires_at: float) -> bool:
        """Add digests to a lease and extend it; False (and nothing held) if the lease is gone."""
        with self.transaction(touches=None) as db:
            renewed = db.execute(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, lease_id),
            ).rowcount
            if not renewed:
                return False
            db.executemany(
                "INSERT OR IGNORE INTO lease_blobs(lease_id, digest) VALUES (?, ?)",
                [(lease_id, d) for d in sorted(set(digests))],
            )
        return True

    def hold_snapshot(self, lease_id: str, snapshot_id: str, *, expires_at: float) -> bool:
        """Hold every blob a snapshot references; False if the snapshot or the lease is gone."""
        with self.transaction(touches=None) as db:
            renewed = db.execute(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, lease_id),
            ).rowcount
            found = db.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
            if not renewed or found is None:
                return False
            db.execute(
                "INSERT OR IGNORE INTO lease_blobs(lease_id, digest)"
                " SELECT ?, digest FROM snapshot_blobs WHERE snapshot_id = ?",
                (lease_id, snapshot_id),
            )
        return True

    def renew_leases(self, lease_ids: Collection[str], *, expires_at: float) -> set[str]:
        """Extend leases; returns the ids no longer in the table (gc dropped them)."""
        ids = sorted(set(lease_ids))
        if not ids:
            return set()
        with self.transaction(touches=None) as db:
            db.executemany(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                [(expires_at, lease_id) for lease_id in ids],
            )
            sql = (
                "SELECT id FROM leases"  # noqa: S608  # placeholders only
                f" WHERE id IN ({', '.join('?' * len(ids))})"
            )
            present = {row["id"] for row in db.execute(sql, ids)}
        return set(ids) - present

    def release_lease(self, lease_id: str) -> None:
        with self.transaction(touches=None) as db:
            db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))

    def drop_leases(self, lease_ids: Collection[str]) -> None:
        """Forget leases whose holders are gone or expired; their blobs lose this root."""
        if not lease_ids:
            return
        with self.transaction(touches=None) as db:
            db.executemany("DELETE FROM leases WHERE id = ?", [(i,) for i in sorted(lease_ids)])

    def leases(self) -> tuple[LeaseRecord, ...]:
        with self._lock:
            rows = self._db.execute(
                "SELECT l.*, (SELECT COUNT(*) FROM lease_blobs b WHERE b.lease_id = l.id) AS blobs"
                " FROM leases l ORDER BY l.created_at, l.id"
            ).fetchall()
        return tuple(
            LeaseRecord(
                lease_id=r["id"],
                purpose=r["purpose"],
                owner=r["owner"],
                created_at=float(r["created_at"]),
                expires_at=float(r["expires_at"]),
                blobs=int(r["blobs"]),
            )
            for r in rows
        )

    def lease_ids(self) -> frozenset[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM leases").fetchall()
        return frozenset(r["id"] for r in rows)

    def sweep(self, digests: Sequence[str], remove: Callable[[str], bool]) -> SweepOutcome:
        """gc's step: in one write transaction, `remove` every digest no snapshot or lease holds.

        Pulls record a lease's claim on a digest (a write transaction) before they
        create or reuse its file, so no claim can commit between this transaction's
        reading of the roots and its removals: a claim either came first and keeps
        the blob, or comes after and finds the file gone (and fetches it again).
        Keep batches small: pulls wait for this transaction to end.
        """
        if not digests:
            return SweepOutcome(referenced=0, leased=0, removed=())
        marks = ", ".join("?" * len(digests))
        # Only "?" placeholders are formatted into the SQL; the digests travel as parameters.
        snapshot_sql = f"SELECT DISTINCT digest FROM snapshot_blobs WHERE digest IN ({marks})"  # noqa: S608
        lease_sql = f"SELECT DISTINCT digest FROM lease_blobs WHERE digest IN ({marks})"  # noqa: S608
        removed: list[str] = []
        with self.transaction(touches=None) as db:
            referenced = {row["digest"] for row in db.execute(snapshot_sql, tuple(digests))}
            leased = {row["digest"] for row in db.execute(lease_sql, tuple(digests))} - referenced
            for digest in digests:
                if digest not in referenced and digest not in leased and remove(digest):
                    removed.append(digest)
        return SweepOutcome(referenced=len(referenced), leased=len(leased), removed=tuple(removed))

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

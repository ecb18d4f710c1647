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

Schema versions and what a full disk does: see `statedb`.

The store is built in layers, each its own module: `statedb` (schema,
migrations, connection, transactions, meta), `stateleases` (leases and gc's
sweep), `statereads` (the cache and snapshot queries); `StateStore` here adds
the writes that change caches.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.statedb import (
    _ADD_EVENT,
    SCHEMA_VERSION,
    SCRUB_AFTER_KEY,
    SCRUB_FINISHED_KEY,
    SCRUB_STARTED_KEY,
    WAL_CHECKPOINT_PAGES,
    DataDiskError,
    DiskFullError,
    SchemaVersionError,
    StateDatabase,
    _ts,
)
from gitsync.providers.local.stateleases import LeaseRecord, LeaseStore, SweepOutcome
from gitsync.providers.local.statereads import SnapshotRecord, StateReads, image_digests

__all__ = [
    "SCHEMA_VERSION",
    "SCRUB_AFTER_KEY",
    "SCRUB_FINISHED_KEY",
    "SCRUB_STARTED_KEY",
    "WAL_CHECKPOINT_PAGES",
    "DataDiskError",
    "DiskFullError",
    "LeaseRecord",
    "LeaseStore",
    "SchemaVersionError",
    "SnapshotRecord",
    "StateDatabase",
    "StateReads",
    "StateStore",
    "SweepOutcome",
    "new_cache_id",
]


def new_cache_id() -> str:
    """`imc-` and 8 lower-case alphanumerics, the shape of the cloud's ids."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "imc-" + "".join(secrets.choice(alphabet) for _ in range(8))


class StateStore(StateReads):
    """Transactions over the state database; one instance per process, safe across threads.

    The writes that change caches are here; the connection, leases and reads are
    in the base classes (`StateReads`, `LeaseStore`, `StateDatabase`).
    """

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
                "INSERT INTO snapshots(id, cache_id, created_at, content_bytes, images,"
                " image_digests) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot_id,
                    cache_id,
                    _ts(now),
                    content_bytes,
                    json.dumps(list(images)),
                    json.dumps(image_digests(images)),
                ),
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

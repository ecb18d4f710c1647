"""The local state database itself: schema, migrations, connection and transactions.

Schema versions: 1 had no leases; 2 adds them; 3 adds each snapshot blob's
size (what the per-pass check compares with the file), a cache's
`snapshot_problem` (why a Ready snapshot was found damaged, until a new
snapshot replaces it) and the scrub's position (meta keys); 4 adds each
snapshot's `image_digests` (per image as written, the digest its reference
resolved to), read with every cache, so that a moved tag is seen without
parsing whole snapshot records (a snapshot committed before version 4 has
NULL there, and its record is parsed instead). Opening a data dir upgrades it
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

`StateDatabase` is the base the store's queries build on (`stateleases`,
`statereads`, then `state.StateStore` for the writes): one connection, one
lock, one `transaction`, so every part commits the same way.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeGuard

from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import ObservedCache

SCHEMA_VERSION = 4
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
    # JSON [[image as written, digest], ...]; NULL for snapshots committed before.
    4: ("ALTER TABLE snapshots ADD COLUMN image_digests TEXT",),
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


# Events are deduplicated by (cache, type, reason, message), counted, and timestamped.
_ADD_EVENT = (
    "INSERT INTO events(cache_id, type, reason, message, count, first_timestamp,"
    " last_timestamp) VALUES (?, ?, ?, ?, 1, ?, ?)"
    " ON CONFLICT(cache_id, type, reason, message)"
    " DO UPDATE SET count = count + 1, last_timestamp = excluded.last_timestamp"
)
_ANY = "*"  # transaction(touches=...) default: any cache may have changed


class StateDatabase:
    """The connection, its lock and transactions, the schema upgrade and the meta table."""

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

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

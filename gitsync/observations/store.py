"""The observations database: lookups kept in SQLite, bounded, aggregated by SQL.

Why a file of its own (`<data-dir>/observations.db`) and not the local
backend's state.db: every backend has a data dir, and a stream of lookups
must not contend with the provider's writes for one database lock.

Schema (version 1, in `PRAGMA user_version`; `PRAGMA application_id` marks
the file as gitsync's, so another program's database is refused, not misread):

* `images(id, ref, bytes)`: each canonical image reference once, with the
  last size a lookup reported (NULL when none did);
* `caches(id, name)`: each cache name once (ids never reused: AUTOINCREMENT);
* `lookups(image, cache, result, at, n, source, seconds, grp, first)`: one
  row per lookup, all numbers: ids into the two tables above (cache 0:
  none), result 0 hit / 1 partial / 2 miss, Unix seconds, a sequence number
  (rows alike in all else stay distinct), source 0 mirror / 1 pod, the
  seconds when known, the start group as a 64-bit hash of its id (pod uid or
  mirror burst; NULL when none), and `first` = 1 on a group's first lookup
  of an image (and on a lookup without a group). Clustered by its key
  (image, cache, result, at, n) (WITHOUT ROWID), so the evidence is one scan
  in key order with no sort; indexed by time, for the oldest row and pruning;
* `groups(id, at, size, members)`: each start group once (id: the same
  hash), with its first lookup's time and its members (sorted image ids,
  comma-joined), kept up to date as lookups join it, so the distinct sets of
  images started together are read from a partial index (`size >= 2`), not
  from a pass over the lookups.

About 100 bytes of disk a lookup, its time index and its group's share
included (bench/suggest.py's mix), so the default cap of 2,000,000 rows is
about 200 MB. `prune(now)` drops lookups older than the retention (default
30 days), then the oldest beyond the cap, then groups older than the oldest
lookup kept, and images and cache names no lookup names; between prunes the
table may run past the cap by what arrived meanwhile.

`evidence(since=, until=)` reads a window inside one read transaction (one
consistent view; the queries are in `gitsync.observations.reading`). A start
group counts in the window of its first lookup; `pods` counts each group once
per image, at its first lookup of that image.

WAL: the daemon's recorder writes while `gitsync suggest` and the API read.
`open_readonly` opens the file read-only and never creates it: no file means
no observations yet, an empty `Evidence`.

Errors: sqlite3's are translated here. A file that is not an observations
database (corrupt, another program's, a newer gitsync's schema) is an
`ObservationStoreError` (permanent: move it aside); a failing disk (full, I/O
error, locked too long) an `ObservationDiskError` (temporary).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from gitsync.errors import PermanentError, TemporaryError
from gitsync.observations.model import Evidence, Lookup, LookupResult, LookupSource
from gitsync.observations.reading import read_evidence

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RETENTION_SECONDS",
    "SCHEMA_VERSION",
    "ObservationDiskError",
    "ObservationStore",
    "ObservationStoreError",
]

SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x6773_6F62  # "gsob": gitsync observations
DEFAULT_RETENTION_SECONDS: Final = 30 * 86_400.0
DEFAULT_MAX_ROWS: Final = 2_000_000
_BUSY_TIMEOUT_SECONDS: Final = 10.0
_WAL_LIMIT_BYTES: Final = 16 << 20  # the WAL file shrinks back to this after a checkpoint
_MEMO_LIMIT: Final = 100_000  # image/cache ids remembered by the writer before starting over
_GROUP_MEMO_LIMIT: Final = 20_000  # groups whose members the writer remembers (LRU)
_WRITER_CACHE_KIB: Final = 16 << 10
_NO_CACHE: Final = 0
_CHUNK: Final = 500  # ids per `IN (…)`, under SQLite's variable limit

_T = TypeVar("_T")
_RESULT_CODE: Final = {LookupResult.HIT: 0, LookupResult.PARTIAL: 1, LookupResult.MISS: 2}
_SOURCE_CODE: Final = {LookupSource.MIRROR: 0, LookupSource.POD: 1}

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS images ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT NOT NULL UNIQUE, bytes INTEGER)",
    "CREATE TABLE IF NOT EXISTS caches ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS lookups ("
    " image INTEGER NOT NULL, cache INTEGER NOT NULL, result INTEGER NOT NULL,"
    " at REAL NOT NULL, n INTEGER NOT NULL, source INTEGER NOT NULL, seconds REAL,"
    " grp INTEGER, first INTEGER NOT NULL,"
    " PRIMARY KEY (image, cache, result, at, n)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS lookups_at ON lookups(at)",
    "CREATE TABLE IF NOT EXISTS groups ("
    " id INTEGER PRIMARY KEY, at REAL NOT NULL, size INTEGER NOT NULL, members TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS groups_sets ON groups(members, at) WHERE size >= 2",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

_INSERT: Final = (
    "INSERT INTO lookups(image, cache, result, at, n, source, seconds, grp, first)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_GROUP: Final = (
    "INSERT INTO groups(id, at, size, members) VALUES (?, ?, ?, ?) ON CONFLICT(id)"
    " DO UPDATE SET at = MIN(at, excluded.at), size = excluded.size, members = excluded.members"
)


class ObservationStoreError(PermanentError):
    """The observations file cannot be used: not a gitsync observations database, or damaged."""


class ObservationDiskError(TemporaryError):
    """Reading or writing observations failed on the disk (full, I/O error, locked); retry."""


class _Memo:
    """What the writer remembers between batches: ids by name, groups' members, the sequence.

    Only ever a shortcut to what the database holds: `forget()` after a failed
    write (the rolled-back transaction's ids do not exist) or a prune (what
    it names may be gone).
    """

    def __init__(self) -> None:
        self._images: dict[str, tuple[int, int | None]] = {}
        self._caches: dict[str, int] = {}
        self._groups: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._next_n: int | None = None

    def forget(self) -> None:
        self._images.clear()
        self._caches.clear()
        self._groups.clear()
        self._next_n = None

    def sequence(self, db: sqlite3.Connection) -> int:
        """The next lookup's sequence number."""
        if self._next_n is None:
            row = db.execute("SELECT value FROM meta WHERE key = 'next_n'").fetchone()
            self._next_n = 0 if row is None else int(row[0])
        return self._next_n

    def members(self, db: sqlite3.Connection, groups: set[int]) -> dict[int, tuple[int, ...]]:
        """The image ids each group already holds: remembered, else read (in chunks)."""
        found = {group: self._groups[group] for group in groups if group in self._groups}
        unknown = sorted(groups - found.keys())
        for start in range(0, len(unknown), _CHUNK):
            chunk = unknown[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT id, members FROM groups WHERE id IN ({marks})"  # noqa: S608  # placeholders only
            for group, text in db.execute(sql, chunk):
                found[int(group)] = tuple(int(part) for part in str(text).split(",") if part)
        return found

    def remember(self, group: int, members: tuple[int, ...]) -> None:
        self._groups[group] = members
        self._groups.move_to_end(group)
        while len(self._groups) > _GROUP_MEMO_LIMIT:
            self._groups.popitem(last=False)

    def image_id(self, db: sqlite3.Connection, ref: str, size: int | None) -> int:
        known = self._images.get(ref)
        if known is not None and (size is None or size == known[1]):
            return known[0]
        if len(self._images) >= _MEMO_LIMIT:
            self._images.clear()
        row = db.execute(
            "INSERT INTO images(ref, bytes) VALUES (?, ?) ON CONFLICT(ref)"
            " DO UPDATE SET bytes = COALESCE(excluded.bytes, bytes) RETURNING id, bytes",
            (ref, size),
        ).fetchone()
        self._images[ref] = (int(row[0]), row[1])
        return int(row[0])

    def cache_id(self, db: sqlite3.Connection, name: str) -> int:
        known = self._caches.get(name)
        if known is not None:
            return known
        if len(self._caches) >= _MEMO_LIMIT:
            self._caches.clear()
        row = db.execute(
            "INSERT INTO caches(name) VALUES (?) ON CONFLICT(name)"
            " DO UPDATE SET name = excluded.name RETURNING id",
            (name,),
        ).fetchone()
        self._caches[name] = int(row[0])
        return int(row[0])

    def advance(
        self, next_n: int, members: dict[int, tuple[int, ...]], changed: Iterable[int]
    ) -> None:
        """After a commit: the sequence goes on from `next_n`; the changed groups are kept."""
        self._next_n = next_n
        for group in changed:
            self.remember(group, members[group])


class ObservationStore:
    """Lookups in SQLite at `path`; one connection, guarded by a lock (any thread may call)."""

    _db: sqlite3.Connection | None  # None: closed, or a read-only open of a missing file

    def __init__(
        self,
        path: Path,
        *,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        """Open (creating it and its folder if need be) the database for reading and writing."""
        if retention_seconds <= 0 or max_rows <= 0:
            raise ValueError("retention_seconds and max_rows must be positive")
        self._setup(path, retention_seconds=retention_seconds, max_rows=max_rows, readonly=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ObservationDiskError(f"cannot create {path.parent}: {exc}") from exc
        self._db = _open(path, readonly=False)

    @classmethod
    def open_readonly(cls, path: Path) -> ObservationStore:
        """Open for reading only; a missing file is an empty store, and is not created."""
        store = cls.__new__(cls)
        store._setup(
            path,
            retention_seconds=DEFAULT_RETENTION_SECONDS,
            max_rows=DEFAULT_MAX_ROWS,
            readonly=True,
        )
        if path.exists():
            store._db = _open(path, readonly=True)
        return store

    def _setup(
        self, path: Path, *, retention_seconds: float, max_rows: int, readonly: bool
    ) -> None:
        self.path = path
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self.readonly = readonly
        self._db = None
        self._lock = threading.Lock()
        self._memo = _Memo()  # the writer's; forgotten when a write fails or a prune deletes

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise ObservationStoreError(f"{self.path}: the observations store is closed")
        return self._db

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with suppress(sqlite3.Error):
                db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------- writes

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; on failure nothing is kept, memos forgotten."""
        if self.readonly:
            raise ObservationStoreError(f"{self.path} was opened read-only; cannot {doing}")
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
            except BaseException as exc:
                self._memo.forget()  # what the rolled-back transaction did does not exist
                if isinstance(exc, sqlite3.Error):
                    raise _translate(self.path, exc, doing) from exc
                raise

    def add(self, lookups: Sequence[Lookup]) -> int:
        """Store `lookups` in one transaction (all or none); returns how many."""
        if not lookups:
            return 0
        with self._write("record lookups") as db:
            memo = self._memo
            n = memo.sequence(db)
            keys = {lookup.group: _group_key(lookup.group) for lookup in lookups if lookup.group}
            members = memo.members(db, set(keys.values()))
            changed: dict[int, float] = {}  # group -> its earliest lookup in this batch
            rows = []
            for lookup in lookups:
                image = memo.image_id(db, lookup.image, lookup.image_bytes)
                first = 1
                group = keys.get(lookup.group) if lookup.group else None
                if group is not None:
                    known = members.get(group, ())
                    if image in known:
                        first = 0
                    else:
                        members[group] = tuple(sorted((*known, image)))
                    changed[group] = min(changed.get(group, lookup.at), lookup.at)
                rows.append(
                    (
                        image,
                        memo.cache_id(db, lookup.cache) if lookup.cache else _NO_CACHE,
                        _RESULT_CODE[lookup.result],
                        lookup.at,
                        n,
                        _SOURCE_CODE[lookup.source],
                        lookup.seconds,
                        group,
                        first,
                    )
                )
                n += 1
            db.executemany(_INSERT, rows)
            db.executemany(
                _UPSERT_GROUP,
                [
                    (group, at, len(members[group]), ",".join(map(str, members[group])))
                    for group, at in changed.items()
                ],
            )
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('next_n', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (n,),
            )
            memo.advance(n, members, changed)
        return len(rows)

    def prune(self, now: float) -> int:
        """Drop lookups older than the retention, then the oldest beyond the cap; how many."""
        with self._write("prune lookups") as db:
            dropped = db.execute(
                "DELETE FROM lookups WHERE at < ?", (now - self.retention_seconds,)
            ).rowcount
            rows = int(db.execute("SELECT COUNT(*) FROM lookups").fetchone()[0])
            if rows > self.max_rows:
                dropped += db.execute(
                    "DELETE FROM lookups WHERE (image, cache, result, at, n) IN"
                    " (SELECT image, cache, result, at, n FROM lookups ORDER BY at LIMIT ?)",
                    (rows - self.max_rows,),
                ).rowcount
            if dropped:
                oldest = db.execute("SELECT MIN(at) FROM lookups").fetchone()[0]
                # A scan of the groups (no index on their time: the disk it would take is
                # worth more than the tenth of a second an hourly prune saves).
                if oldest is None:
                    db.execute("DELETE FROM groups")
                else:
                    db.execute("DELETE FROM groups WHERE at < ?", (oldest,))
                db.execute(
                    "DELETE FROM images WHERE NOT EXISTS"
                    " (SELECT 1 FROM lookups WHERE lookups.image = images.id)"
                )
                db.execute(
                    "DELETE FROM caches WHERE id NOT IN (SELECT DISTINCT cache FROM lookups)"
                )
                self._memo.forget()  # remembered ids and groups may be gone
        return int(dropped)

    # -------------------------------------------------------------------- reads

    def count(self) -> int:
        """How many lookups the store holds."""
        if self._db is None and self.readonly:
            return 0
        return self._read(lambda db: int(db.execute("SELECT COUNT(*) FROM lookups").fetchone()[0]))

    def evidence(self, *, since: float, until: float) -> Evidence:
        """The lookups from `since` to `until` (Unix seconds, both included), aggregated."""
        if self._db is None and self.readonly:
            return Evidence(since=since, until=until)
        return self._read(lambda db: read_evidence(db, since=since, until=until))

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN")  # one snapshot for every query of the read
                try:
                    return query(db)
                finally:
                    with suppress(sqlite3.Error):
                        db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate(self.path, exc, "read lookups") from exc


# ---------------------------------------------------------------------- opening


def _open(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection to the database at `path`, checked; for writing, its schema created.

    check_same_thread=False: the recorder's thread writes, API threads read;
    the store's lock serialises them on its one connection.
    """
    try:
        db = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode={'ro' if readonly else 'rwc'}",
            uri=True,
            timeout=_BUSY_TIMEOUT_SECONDS,
            check_same_thread=False,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise _translate(path, exc, "open") from exc
    try:
        _check_identity(db, path)
        if not readonly:
            _prepare(db)
    except sqlite3.Error as exc:
        db.close()
        raise _translate(path, exc, "open") from exc
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection) -> None:
    """Create the schema if need be; WAL so that readers never wait for the writer."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Lookups land all over the table (it is kept in image order): a page cache larger
    # than the default 2 MB spares reading the same pages again for every batch.
    db.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
    db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
    if _pragma(db, "user_version") == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _check_identity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse another program's database, or a schema newer than this gitsync reads."""
    application = _pragma(db, "application_id")
    version = _pragma(db, "user_version")
    empty = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    if application not in (0, APPLICATION_ID) or (application == 0 and not empty):
        raise ObservationStoreError(
            f"{path} is an SQLite database, but not gitsync's observations;"
            " move it aside (gitsync starts a new one) or give another --data-dir"
        )
    if version > SCHEMA_VERSION:
        raise ObservationStoreError(
            f"{path} has schema version {version}, newer than this gitsync reads"
            f" ({SCHEMA_VERSION}); upgrade gitsync, or give another --data-dir"
        )


# ---------------------------------------------------------------------- helpers


def _pragma(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute(f"PRAGMA {name}").fetchone()[0])


def _rollback(db: sqlite3.Connection) -> None:
    """Never leave a transaction open (SQLITE_FULL may have rolled it back already)."""
    if db.in_transaction:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _group_key(group: str) -> int:
    """A start group's id as a 64-bit integer: small rows, collisions negligible at 2M rows."""
    digest = hashlib.blake2b(group.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _translate(
    path: Path, exc: sqlite3.Error, doing: str
) -> ObservationStoreError | ObservationDiskError:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return ObservationStoreError(
            f"{path} is not a readable observations database ({exc}): it is damaged or"
            " another program's; move it aside and gitsync starts a new one"
        )
    if code == sqlite3.SQLITE_FULL:
        return ObservationDiskError(f"cannot {doing} in {path}: the disk is full ({exc})")
    if code == sqlite3.SQLITE_CANTOPEN:
        return ObservationDiskError(f"cannot open {path} to {doing}: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return ObservationDiskError(f"cannot {doing} in {path}: {exc}")
    return ObservationStoreError(f"cannot {doing} in {path}: {exc}")

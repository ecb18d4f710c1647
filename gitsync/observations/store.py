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
consistent view) with two queries: one scan of the lookups that yields a row
per image and per cache, and the distinct sets of started-together images
with their counts. Python only turns those rows into records. A start group
counts in the window of its first lookup; `pods` counts each group once per
image, at its first lookup of that image.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from gitsync.errors import PermanentError, TemporaryError
from gitsync.observations.model import (
    CacheUse,
    Evidence,
    ImageEvidence,
    Lookup,
    LookupResult,
    LookupSource,
    StartGroup,
)

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

# One scan of the lookups in the table's key order (no sort; `+at` keeps the planner
# from the time index, which would need one) with plain aggregates only, since at a
# million rows each aggregate call per row counts; then, from those few rows, one row
# per image (kind 0: its figures, and the caches that served it) and one per cache
# (kind 1: its hits, partials and last hit).
_EVIDENCE: Final = """
WITH k AS MATERIALIZED (
    SELECT image, cache, result, COUNT(*) AS c, TOTAL(seconds) AS s, COUNT(seconds) AS t,
           MIN(at) AS lo, MAX(at) AS hi, SUM(first) AS p
    FROM lookups WHERE +at BETWEEN ? AND ?
    GROUP BY image, cache, result
)
SELECT 0, image,
       TOTAL(CASE result WHEN 0 THEN c END), TOTAL(CASE result WHEN 1 THEN c END),
       TOTAL(CASE result WHEN 2 THEN c END),
       TOTAL(CASE result WHEN 2 THEN s END), TOTAL(CASE result WHEN 2 THEN t END),
       TOTAL(CASE result WHEN 0 THEN s END), TOTAL(CASE result WHEN 0 THEN t END),
       MIN(lo), MAX(hi), SUM(p),
       group_concat(DISTINCT CASE WHEN result < 2 AND cache != 0 THEN cache END)
FROM k GROUP BY image
UNION ALL
SELECT 1, cache,
       TOTAL(CASE result WHEN 0 THEN c END), TOTAL(CASE result WHEN 1 THEN c END),
       0, 0, 0, 0, 0, 0, MAX(CASE result WHEN 0 THEN hi END), 0, NULL
FROM k WHERE cache != 0 AND result < 2 GROUP BY cache
"""

# Distinct sets of started-together images, in the partial index's order (no sort).
_GROUPS: Final = """
SELECT members, COUNT(*) FROM groups INDEXED BY groups_sets
WHERE size >= 2 AND at BETWEEN ? AND ?
GROUP BY members
"""


class ObservationStoreError(PermanentError):
    """The observations file cannot be used: not a gitsync observations database, or damaged."""


class ObservationDiskError(TemporaryError):
    """Reading or writing observations failed on the disk (full, I/O error, locked); retry."""


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
        self._db = self._connect(f"{_uri(path)}?mode=rwc")
        self._prepare()

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
            store._db = store._connect(f"{_uri(path)}?mode=ro")
            store._check_identity()
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
        # The writer's memos, all forgotten when a write fails or a prune deletes.
        self._images: dict[str, tuple[int, int | None]] = {}
        self._caches: dict[str, int] = {}
        self._groups: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._next_n: int | None = None

    # ------------------------------------------------------------------ opening

    def _connect(self, uri: str) -> sqlite3.Connection:
        try:
            # check_same_thread=False: the recorder's thread writes, API threads read;
            # self._lock serialises them on this one connection.
            return sqlite3.connect(
                uri,
                uri=True,
                timeout=_BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise _translate(self.path, exc, "open") from exc

    def _prepare(self) -> None:
        """Create or check the schema; WAL so that readers never wait for the writer."""
        db = self._connection()
        try:
            with self._lock:
                self._check_identity()
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                # Lookups land all over the table (it is kept in image order): a page cache
                # larger than the default 2 MB spares rereading the same pages per batch.
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
        except sqlite3.Error as exc:
            self.close()
            raise _translate(self.path, exc, "prepare") from exc
        except ObservationStoreError:
            self.close()
            raise

    def _check_identity(self) -> None:
        """Refuse another program's database, or a schema newer than this gitsync reads."""
        db = self._connection()
        try:
            application = _pragma(db, "application_id")
            version = _pragma(db, "user_version")
            empty = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        except sqlite3.Error as exc:
            self.close()
            raise _translate(self.path, exc, "open") from exc
        if application not in (0, APPLICATION_ID) or (application == 0 and not empty):
            self.close()
            raise ObservationStoreError(
                f"{self.path} is an SQLite database, but not gitsync's observations;"
                " move it aside (gitsync starts a new one) or give another --data-dir"
            )
        if version > SCHEMA_VERSION:
            self.close()
            raise ObservationStoreError(
                f"{self.path} has schema version {version}, newer than this gitsync reads"
                f" ({SCHEMA_VERSION}); upgrade gitsync, or give another --data-dir"
            )

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
                self._forget()  # what the rolled-back transaction did does not exist
                if isinstance(exc, sqlite3.Error):
                    raise _translate(self.path, exc, doing) from exc
                raise

    def _forget(self) -> None:
        self._images.clear()
        self._caches.clear()
        self._groups.clear()
        self._next_n = None

    def add(self, lookups: Sequence[Lookup]) -> int:
        """Store `lookups` in one transaction (all or none); returns how many."""
        if not lookups:
            return 0
        with self._write("record lookups") as db:
            n = self._sequence(db)
            keys = {lookup.group: _group_key(lookup.group) for lookup in lookups if lookup.group}
            members = self._members(db, set(keys.values()))
            changed: dict[int, float] = {}  # group -> its earliest lookup in this batch
            rows = []
            for lookup in lookups:
                image = self._image_id(db, lookup.image, lookup.image_bytes)
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
                        self._cache_id(db, lookup.cache) if lookup.cache else _NO_CACHE,
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
            self._next_n = n
            for group in changed:
                self._remember(group, members[group])
        return len(rows)

    def _sequence(self, db: sqlite3.Connection) -> int:
        if self._next_n is None:
            row = db.execute("SELECT value FROM meta WHERE key = 'next_n'").fetchone()
            self._next_n = 0 if row is None else int(row[0])
        return self._next_n

    def _members(self, db: sqlite3.Connection, groups: set[int]) -> dict[int, tuple[int, ...]]:
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

    def _remember(self, group: int, members: tuple[int, ...]) -> None:
        self._groups[group] = members
        self._groups.move_to_end(group)
        while len(self._groups) > _GROUP_MEMO_LIMIT:
            self._groups.popitem(last=False)

    def _image_id(self, db: sqlite3.Connection, ref: str, size: int | None) -> int:
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

    def _cache_id(self, db: sqlite3.Connection, name: str) -> int:
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
                self._forget()  # remembered ids and groups may be gone
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
        return self._read(lambda db: _aggregate(db, since, until))

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


def _aggregate(db: sqlite3.Connection, since: float, until: float) -> Evidence:
    window = (since, until)
    refs: dict[int, tuple[str, int | None]] = {
        int(row[0]): (str(row[1]), row[2])
        for row in db.execute("SELECT id, ref, bytes FROM images")
    }
    names = {int(row[0]): str(row[1]) for row in db.execute("SELECT id, name FROM caches")}

    images: list[ImageEvidence] = []
    caches: dict[str, CacheUse] = {}
    lookups = 0
    for row in db.execute(_EVIDENCE, window):
        kind, key, hits, partials, misses = row[0], row[1], int(row[2]), int(row[3]), int(row[4])
        if kind == 1:
            name = names.get(key)
            if name is not None:  # else pruned meanwhile
                caches[name] = CacheUse(
                    cache=name, hits=hits, partials=partials, last_hit_at=row[10]
                )
            continue
        lookups += hits + partials + misses
        known = refs.get(key)
        if known is None:
            continue  # pruned meanwhile
        served = (names.get(int(part)) for part in str(row[12] or "").split(",") if part)
        images.append(
            ImageEvidence(
                image=known[0],
                hits=hits,
                partials=partials,
                misses=misses,
                pods=int(row[11]),
                miss_seconds=float(row[5]),
                timed_misses=int(row[6]),
                hit_seconds=float(row[7]),
                timed_hits=int(row[8]),
                first_at=float(row[9]),
                last_at=float(row[10]),
                caches=tuple(sorted(name for name in served if name is not None)),
                image_bytes=known[1],
            )
        )
    images.sort(key=lambda evidence: evidence.image)

    sets: dict[frozenset[str], int] = {}
    for members, count in db.execute(_GROUPS, window):
        found = [refs.get(int(part)) for part in str(members).split(",")]
        group = frozenset(ref[0] for ref in found if ref is not None)
        if len(group) >= 2:
            sets[group] = sets.get(group, 0) + int(count)
    # Most often seen first; among equals, the order of their member ids (stable sort).
    groups = sorted(
        (StartGroup(images=members, count=count) for members, count in sets.items()),
        key=lambda group: -group.count,
    )

    oldest = db.execute("SELECT MIN(at) FROM lookups").fetchone()[0]
    return Evidence(
        since=since,
        until=until,
        images=tuple(images),
        caches=dict(sorted(caches.items())),
        groups=tuple(groups),
        lookups=lookups,
        first_at=None if oldest is None else float(oldest),
    )


# ---------------------------------------------------------------------- helpers


def _uri(path: Path) -> str:
    return path.absolute().as_uri()


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

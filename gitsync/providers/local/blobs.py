"""A content-addressed blob store on the local disk, safe for concurrent pulls and `gc`.

Why content-addressed: a layer that several images or caches share has one
digest, so it is stored once and fetched once, and a snapshot only needs to
list digests. Why atomic writes: a crash (even kill -9) must never leave a
file under a digest whose content does not hash to that digest, so every blob
is written to a temporary file *in the same directory*, verified while it is
written, fsynced, and only then renamed to its final name (rename is atomic
within one file system).

Layout under `root`::

    blobs/sha256/<hex>                 a verified blob; never modified once renamed in
    blobs/sha256/.tmp-<hex>-<random>[~<lease>]
                                       a write in progress (or left by a crash)
    layers/sha256/<hex>.json           facts about a verified layer blob: its diff_id
                                       and expanded size, so a reused layer is not
                                       decompressed again
    quarantine/sha256-<hex>-<unix time>
                                       a blob found damaged (wrong size or hash), moved
                                       aside so nothing serves or reuses it; kept for the
                                       operator to look at, never read by gitsync, and
                                       removed by `gc` once older than QUARANTINE_DAYS

Concurrency inside one process: two workers that want the same digest at the
same moment serialise on a per-digest lock (`ingest`); the second one finds the
blob present and reuses it, so it is fetched once. Across processes, writes
stay correct (same content, atomic rename) but may both download.

Protocol for a `gc` that runs while pulls run (the roots and the locking are
the state database's, see `leases`; this module does the file side):

1. A pull works through a store bound to its lease (`with_lease`). Before such
   a store creates a blob's temporary file (`writer`) or looks at an existing
   blob to reuse it (`claim`, and so `ingest` and `put_bytes`), it records the
   lease's claim on the digest (`BlobLease.hold`), committed.
2. gc removes a blob only inside a state-database write transaction that found
   no snapshot and no live lease holding the digest. Claims are write
   transactions too, so a claim either came first (the blob stays) or comes
   after the removal (the claim sees the file absent and the pull fetches it).
3. With a grace period, gc also keeps blobs written or claimed (mtime) less than
   that long ago: `delete_if_older` re-reads the mtime under an exclusive
   `flock` that `claim` takes shared, and unlinks only the inode it checked.
   A claim that loses that race sees st_nlink == 0 and reports the blob absent.
4. A temporary file carries its writer's lease id in its name
   (`.tmp-<hex>-<random>~<lease>`), so `sweep_temp` removes those of leases
   that ended or died at once; one without a lease id (a store used without a
   lease) goes only once older than a bound far longer than any write.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Self

from gitsync.errors import PermanentError

# Digest algorithms the OCI image spec registers, with their hex length.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_TMP_PREFIX = ".tmp-"
_TMP_LEASE_RE = re.compile(r"~([0-9a-f]{16})$")  # the writer's lease id, at the end of the name
QUARANTINE_DIR = "quarantine"
QUARANTINE_DAYS = 7  # how long gc keeps a damaged blob moved aside, for a post-mortem


class BlobStoreError(PermanentError):
    """The blob store was used wrongly or its files are not what they should be."""


class InvalidDigestError(BlobStoreError, ValueError):
    """A string is not a digest this store accepts (`sha256:<64 hex>` or `sha512:<128 hex>`)."""

    def __init__(self, digest: str) -> None:
        super().__init__(
            f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits"
            " (or 'sha512:' and 128)"
        )
        self.digest = digest


class BlobNotFoundError(BlobStoreError, KeyError):
    """No blob with this digest is in the store."""

    def __init__(self, digest: str, root: Path) -> None:
        super().__init__(f"blob {digest} is not in the store at {root}")
        self.digest = digest

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DigestMismatchError(PermanentError):
    """Content does not hash to the digest it was announced under: corrupt or tampered with."""

    def __init__(self, *, digest: str, actual: str, where: str) -> None:
        super().__init__(
            f"content of {where} does not match its digest: expected {digest}, got {actual};"
            " the blob was rejected and nothing was stored under that digest"
        )
        self.digest = digest
        self.actual = actual
        self.where = where


class SizeMismatchError(PermanentError):
    """Content is longer or shorter than the size its descriptor announced."""

    def __init__(self, *, digest: str, expected: int, actual: int, where: str) -> None:
        more = "at least " if actual > expected else ""
        super().__init__(
            f"{where} ({digest}) has {more}{actual} bytes but its descriptor says {expected};"
            " the blob was rejected"
        )
        self.digest = digest
        self.expected = expected
        self.actual = actual


def parse_digest(digest: str) -> tuple[str, str]:
    """Split `algo:hex` after checking it strictly (it becomes a path, so no surprises)."""
    match = _DIGEST_RE.match(digest)
    if match is None or len(match.group(2)) != DIGEST_HEX_LENGTHS[match.group(1)]:
        raise InvalidDigestError(digest)
    return match.group(1), match.group(2)


def new_hasher(digest: str) -> hashlib._Hash:
    """A fresh hash object of the digest's algorithm."""
    algorithm, _ = parse_digest(digest)
    return hashlib.new(algorithm)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of `data` in `algo:hex` form."""
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise BlobStoreError(f"unsupported digest algorithm {algorithm!r}: use sha256 or sha512")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class BlobLease(Protocol):
    """What a store bound to a lease needs of it (`leases.Lease` is the real one)."""

    @property
    def lease_id(self) -> str: ...

    def hold(self, digests: Collection[str]) -> None:
        """Record, committed, that these digests are in use; before their files are touched."""


def temp_lease(name: str) -> str | None:
    """The lease id a temporary file's name carries, or None."""
    match = _TMP_LEASE_RE.search(name)
    return None if match is None else match.group(1)


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """What verifying a layer taught us: its uncompressed digest and size."""

    diff_id: str
    expanded_size: int


class BlobWriter:
    """Writes one blob to a temporary file, checking size and digest as bytes arrive.

    A write past the announced size fails at once, so a lying server cannot
    fill the disk. `commit()` checks the digest, fsyncs and renames; anything
    else (an exception, `abort()`) removes the temporary file. A write the disk
    refuses (ENOSPC) removes it at once, before the error travels up: whatever
    records the failure next needs that space.
    """

    def __init__(self, *, store: BlobStore, digest: str, size: int | None) -> None:
        self._store = store
        self.digest = digest
        self.expected_size = size
        self._hasher = new_hasher(digest)
        self.written = 0
        final = store.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = final.parent / store.temp_name(final.name)
        self._file: BinaryIO | None = open(self._tmp, "xb")  # noqa: SIM115 - closed in commit/abort
        self._verified = False
        self.committed = False

    def write(self, chunk: bytes | memoryview) -> None:
        if self._file is None:
            raise BlobStoreError(f"write to blob {self.digest} after it was committed or aborted")
        new_total = self.written + len(chunk)
        if self.expected_size is not None and new_total > self.expected_size:
            raise SizeMismatchError(
                digest=self.digest,
                expected=self.expected_size,
                actual=new_total,
                where=f"blob {self.digest}",
            )
        self._hasher.update(chunk)
        try:
            self._file.write(chunk)
        except OSError:
            self.abort()  # free the space now: a full disk must not stay full for the caller
            raise
        self.written = new_total

    def verify(self, *, where: str | None = None) -> None:
        """Check size and digest of everything written; idempotent, done by commit() too."""
        if self._verified:
            return
        where = where or f"blob {self.digest}"
        if self.expected_size is not None and self.written != self.expected_size:
            raise SizeMismatchError(
                digest=self.digest, expected=self.expected_size, actual=self.written, where=where
            )
        algorithm, _ = parse_digest(self.digest)
        actual = f"{algorithm}:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(digest=self.digest, actual=actual, where=where)
        self._verified = True

    def commit(self) -> None:
        """Verify, make durable, and publish the blob under its digest."""
        if self.committed:
            return
        if self._file is None:
            raise BlobStoreError(f"blob {self.digest} was aborted and cannot be committed")
        try:
            self.verify()
            self._file.flush()
            if self._store.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            final = self._store.path(self.digest)
            os.replace(self._tmp, final)
        except BaseException:
            self.abort()  # a rejected or failed blob leaves no temporary file behind
            raise
        self.committed = True
        if self._store.fsync:
            _fsync_dir(final.parent)

    def abort(self) -> None:
        """Drop the temporary file; a no-op after commit. Never fails on a full disk."""
        if self.committed:
            return
        # Unlink first: closing flushes what the buffer still holds, and on a full disk
        # that flush fails (ENOSPC) after the file is closed; the name must be gone by then.
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # the bytes are discarded: a failed flush is moot
                file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# Per-digest locks shared by every BlobStore object of the process on the same
# root, so two caches pulled by two store objects still fetch a blob once.
class _LockEntry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[tuple[str, str], _LockEntry] = {}


@contextlib.contextmanager
def _digest_lock(root: str, digest: str) -> Iterator[None]:
    """Hold the process-wide lock of `digest` under the store at `root` (a resolved path)."""
    key = (root, digest)
    with _LOCKS_GUARD:
        entry = _LOCKS.get(key)
        if entry is None:
            entry = _LOCKS[key] = _LockEntry()
        entry.users += 1
    try:
        with entry.lock:
            yield
    finally:
        with _LOCKS_GUARD:
            entry.users -= 1
            if entry.users == 0:
                del _LOCKS[key]


class BlobStore:
    """Blobs by digest under `root`; see the module docstring for layout and gc protocol.

    One class, longer than the house's ~250 lines, because every method applies the
    one on-disk layout (blob, layer-facts, temporary and quarantine paths) and the
    one file-side protocol with `gc` (the lease's claim before a file is touched,
    the shared flock of `claim` against the exclusive one of `delete_if_older`);
    split, each half would have to know the other's paths and locks. The
    verifying write is `BlobWriter`'s, the per-digest lock table `_digest_lock`'s.
    """

    def __init__(self, root: Path, *, fsync: bool = True, lease: BlobLease | None = None) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.lease = lease
        self._key_root = str(self.root.resolve())

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def with_lease(self, lease: BlobLease) -> BlobStore:
        """The same store, claiming every digest for `lease` before touching its files."""
        return BlobStore(self.root, fsync=self.fsync, lease=lease)

    def hold(self, digests: Collection[str]) -> None:
        """Claim digests for this store's lease ahead of use (one transaction for many)."""
        if self.lease is not None and digests:
            self.lease.hold(digests)

    def temp_name(self, name: str) -> str:
        """A fresh temporary name next to `name`, tagged with the lease when there is one."""
        tag = f"~{self.lease.lease_id}" if self.lease is not None else ""
        return f"{_TMP_PREFIX}{name}-{secrets.token_hex(6)}{tag}"

    # -- paths and reading ---------------------------------------------------

    def path(self, digest: str) -> Path:
        """Where the blob lives (or would live); does not say whether it exists."""
        algorithm, hexpart = parse_digest(digest)
        return self.root / "blobs" / algorithm / hexpart

    def _info_path(self, digest: str) -> Path:
        algorithm, hexpart = parse_digest(digest)
        return self.root / "layers" / algorithm / f"{hexpart}.json"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFoundError(digest, self.root) from exc

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for reading; the caller closes it."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFoundError(digest, self.root) from exc

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as fh:
            return fh.read()

    def iter_digests(self) -> Iterator[str]:
        """Every stored blob's digest (temporary files excluded), in no particular order."""
        base = self.root / "blobs"
        for algorithm, length in DIGEST_HEX_LENGTHS.items():
            folder = base / algorithm
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                name = entry.name
                if len(name) == length and not name.startswith(_TMP_PREFIX) and entry.is_file():
                    digest = f"{algorithm}:{name}"
                    if _DIGEST_RE.match(digest):
                        yield digest

    # -- writing -------------------------------------------------------------

    def writer(self, digest: str, *, size: int | None) -> BlobWriter:
        """A verifying writer; use as a context manager (commit on success, abort on error)."""
        self.hold((digest,))  # before the temporary file exists: gc must know it is wanted
        return BlobWriter(store=self, digest=digest, size=size)

    def put_bytes(self, data: bytes, *, digest: str | None = None) -> str:
        """Store small content (manifests, configs), verifying `digest` if given."""
        digest = digest or compute_digest(data)
        if self.claim(digest):
            return digest
        # No per-digest lock: small writes racing each other both publish the
        # same verified bytes atomically, and callers may already hold the lock.
        with self.writer(digest, size=len(data)) as w:
            w.write(data)
        return digest

    def ingest(self, digest: str, fill: Callable[[], None]) -> bool:
        """Make sure the blob is present, calling `fill` to write it only if it is not.

        Returns True when `fill` ran (the blob was fetched now), False when the
        blob was already there or another worker stored it while this one
        waited. `fill` must commit a writer for `digest`.
        """
        if self.claim(digest):
            return False
        with _digest_lock(self._key_root, digest):
            if self.claim(digest):
                return False
            fill()
            if not self.has(digest):
                raise BlobStoreError(f"blob {digest} was not stored by its writer")
            return True

    # -- layer facts ---------------------------------------------------------

    def layer_info(self, digest: str) -> LayerInfo | None:
        """Facts recorded when the layer was verified, or None if unknown or unreadable."""
        try:
            raw = json.loads(self._info_path(digest).read_text(encoding="utf-8"))
            info = LayerInfo(diff_id=str(raw["diff_id"]), expanded_size=int(raw["expanded_size"]))
            parse_digest(info.diff_id)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # recomputable from the blob; a torn file after power loss is fine
        return info

    def put_layer_info(self, digest: str, info: LayerInfo) -> None:
        """Record a layer's facts atomically (before the blob itself is published)."""
        path = self._info_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / self.temp_name(path.name)
        try:
            tmp.write_text(
                json.dumps({"diff_id": info.diff_id, "expanded_size": info.expanded_size}),
                encoding="utf-8",
            )
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a full disk leaves no torn temporary file behind
            raise

    # -- gc support ----------------------------------------------------------

    def claim(self, digest: str) -> bool:
        """Mark a present blob as in use now; False if it is absent.

        With a lease, the lease's claim on the digest is recorded first, so gc keeps
        the blob from then on. The mtime := now, under a shared flock so it cannot
        interleave with `delete_if_older`, is what a gc with a grace period goes by.
        """
        self.hold((digest,))
        try:
            fd = os.open(self.path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_nlink == 0:
                return False  # gc unlinked it while we waited for the lock
            os.utime(fd)
            return True
        finally:
            os.close(fd)  # releases the flock

    def delete(self, digest: str) -> bool:
        """Remove a blob and its layer facts unconditionally; True if it existed."""
        with contextlib.suppress(FileNotFoundError):
            self._info_path(digest).unlink()
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, digest: str, *, now: float | None = None) -> Path | None:
        """Move a damaged blob (and its layer facts) aside; where it went, or None if absent.

        A rename, so a reader that has the file open keeps its bytes, and nothing opens
        it by digest afterwards: the next pull fetches the blob again.
        """
        algorithm, hexpart = parse_digest(digest)
        moment = int(time.time() if now is None else now)
        folder = self.root / QUARANTINE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{algorithm}-{hexpart}-{moment}"
        with contextlib.suppress(FileNotFoundError):
            self._info_path(digest).unlink()
        try:
            os.replace(self.path(digest), target)
        except FileNotFoundError:
            return None
        return target

    def sweep_quarantine(self, *, older_than: float, now: float | None = None) -> int:
        """Remove quarantined blobs moved aside more than `older_than` seconds ago."""
        now = time.time() if now is None else now
        folder = self.root / QUARANTINE_DIR
        if not folder.is_dir():
            return 0
        removed = 0
        for entry in os.scandir(folder):
            moved = entry.name.rsplit("-", 1)[-1]
            if moved.isdigit() and now - int(moved) > older_than:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def delete_if_older(self, digest: str, cutoff: float) -> bool:
        """gc's primitive: delete the blob only if nobody wrote or claimed it since `cutoff`.

        `cutoff` is a time.time() value. True if the blob was deleted.
        """
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            if st.st_nlink == 0 or st.st_mtime >= cutoff:
                return False
            try:
                if os.stat(path).st_ino != st.st_ino:
                    return False  # replaced by a fresh write meanwhile
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                self._info_path(digest).unlink()
            path.unlink()
            return True
        finally:
            os.close(fd)

    def sweep_temp(
        self,
        *,
        older_than: float,
        now: float | None = None,
        live_leases: Callable[[], Collection[str]] | None = None,
    ) -> int:
        """Remove temporary files left by crashes and by writers whose lease ended.

        A file tagged with a lease goes at once unless that lease is among
        `live_leases()` (called after the listing, so a lease seen live there was
        live when its file was found); one without a tag, or any file when
        `live_leases` is None, only once older than `older_than` seconds.
        """
        now = time.time() if now is None else now
        found = self.temp_files()
        live = frozenset(live_leases()) if live_leases is not None else None
        removed = 0
        for path in found:
            lease = temp_lease(path.name)
            with contextlib.suppress(FileNotFoundError):
                if live is not None and lease is not None:
                    stale = lease not in live
                else:
                    stale = now - path.stat().st_mtime > older_than
                if stale:
                    path.unlink()
                    removed += 1
        return removed

    def temp_files(self) -> list[Path]:
        """Temporary files present now (writes in progress or crash leftovers)."""
        found: list[Path] = []
        for sub in ("blobs", "layers"):
            base = self.root / sub
            if base.is_dir():
                found.extend(p for p in base.glob(f"*/{_TMP_PREFIX}*") if p.is_file())
        return found


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

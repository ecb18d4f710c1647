"""Leases: what keeps the blobs of an operation in progress safe from `gc`, as in containerd.

Why leases rather than an age window: a deleted cache's blobs should go at the
next `gitsync gc`, not an hour later, yet a pull running in another process
must not lose a blob it has written or decided to reuse before its snapshot
references it. containerd solves the same problem with leases (see its
docs/garbage-collection.md): every resource is either referenced by a root or
held by a lease, and gc removes the rest. Here:

* gc roots = blobs referenced by snapshots ∪ blobs held by live leases.
* A pull acquires a lease before it touches the store and records the lease's
  claim on a digest (a committed write transaction) *before* it creates the
  blob's file or checks whether the file is there to reuse. gc removes blobs
  only inside write transactions (`StateStore.sweep`), so a claim and a
  removal of the same digest cannot interleave.
* The lease ends in the transaction that commits the snapshot (which then
  references the blobs), or in the one that records the pull's failure.

A lease is live while both hold:

* it has not expired: it is created for `ttl` seconds and a heartbeat thread
  renews every live lease of the process every `ttl / 5` seconds, so only a
  process that stopped (or hung) lets its leases lapse;
* its holder is alive: the holder keeps an exclusive `flock` on
  `<data dir>/leases/<id>` for the lease's life. The kernel drops the lock when
  the process dies, even by SIGKILL, so gc, able to take the lock, knows at
  once that the holder is gone and frees its blobs without waiting for expiry.
  The file appears under its name already locked (created under a temporary
  name, locked, renamed), so "lockable" never means "not locked yet". If the
  file is missing, only expiry decides.

A holder whose lease gc dropped anyway (it hung past expiry) re-creates it at
its next renewal; any blob gc removed meanwhile is caught when the snapshot
commits, which checks in its transaction that every blob is present.
Temporary files carry their writer's lease id in their name, so gc removes
those of dead leases at once too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from gitsync.errors import PermanentError, TemporaryError
from gitsync.providers.local.state import StateStore

log = logging.getLogger("gitsync.providers.local.leases")

LEASE_TTL_SECONDS = 300.0  # a lease whose holder stopped renewing lapses after this
LOCK_DIR = "leases"
LEASE_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_STALE_NEW_LOCK_SECONDS = 3600.0  # a `.new` lock file older than this lost its creator


def new_lease_id() -> str:
    return secrets.token_hex(8)


class LeaseError(PermanentError):
    """A lease was used after it ended (a bug in the caller)."""


def _state_error(what: str, exc: sqlite3.Error) -> TemporaryError:
    return TemporaryError(f"cannot {what} in the state database: {exc}")


class Lease:
    """One operation's hold on blobs; thread-safe, released exactly once."""

    def __init__(self, *, manager: LeaseManager, lease_id: str, purpose: str, fd: int) -> None:
        self._manager = manager
        self.lease_id = lease_id
        self.purpose = purpose
        self._fd: int | None = fd
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Lease({self.lease_id!r}, {self.purpose!r})"

    @property
    def released(self) -> bool:
        return self._fd is None

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def hold(self, digests: Collection[str]) -> None:
        """Record the claim on `digests` (committed) before the caller touches their files."""
        with self._lock:
            if self._fd is None:
                raise LeaseError(f"lease {self.lease_id} ({self.purpose}) was already released")
            new = {d for d in digests if d not in self._held}
            if not new:
                return
            manager = self._manager
            try:
                if not manager.state.hold_blobs(self.lease_id, new, expires_at=manager.deadline()):
                    # gc dropped this lease (we hung past its expiry): take it out again.
                    manager.recreate(self, self._held | new)
            except sqlite3.Error as exc:
                raise _state_error(f"record the lease of {self.purpose}", exc) from exc
            self._held |= new

    def hold_snapshot(self, snapshot_id: str) -> bool:
        """Hold every blob of a snapshot at once; False if the snapshot no longer exists."""
        with self._lock:
            if self._fd is None:
                raise LeaseError(f"lease {self.lease_id} ({self.purpose}) was already released")
            manager = self._manager
            try:
                return manager.state.hold_snapshot(
                    self.lease_id, snapshot_id, expires_at=manager.deadline()
                )
            except sqlite3.Error as exc:
                raise _state_error(f"record the lease of {self.purpose}", exc) from exc

    def release(self, *, end_row: bool = True) -> None:
        """End the lease: its blobs keep only the roots they have elsewhere. Idempotent.

        The lock file goes first, so its space is free before the database write: a
        failed pull is recorded right after, on a disk that may just have been full.
        Without the file, gc goes by the row's expiry, so until the row is deleted the
        lease still counts as live. `end_row=False`: the caller deletes the row in its
        own transaction (`commit_snapshot`, `record_failure`); nothing is written here.
        """
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        self._manager.forget(self)
        with contextlib.suppress(FileNotFoundError):
            self._manager.lock_path(self.lease_id).unlink()
        os.close(fd)  # drops the flock
        if not end_row:
            return
        try:
            self._manager.state.release_lease(self.lease_id)
        except (sqlite3.Error, TemporaryError) as exc:
            # Not fatal: nobody renews it any more, so it lapses at its expiry.
            log.warning(
                "could not end lease %s (%s): %s; it lapses within %.0f s",
                self.lease_id,
                self.purpose,
                exc,
                self._manager.ttl,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class DroppedLeases:
    """What `LeaseManager.drop_dead` removed: leases of stopped holders and expired ones."""

    stopped: tuple[str, ...]
    expired: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.stopped) + len(self.expired)


class LeaseManager:
    """Creates, renews and (for gc) judges the leases of one data dir."""

    def __init__(
        self,
        *,
        state: StateStore,
        folder: Path,
        clock: Callable[[], float] = time.time,
        ttl: float = LEASE_TTL_SECONDS,
        renew_every: float | None = None,
    ) -> None:
        self.state = state
        self.folder = folder
        self._clock = clock
        self.ttl = ttl
        self.renew_every = ttl / 5 if renew_every is None else renew_every
        self._owner = f"pid {os.getpid()} on {socket.gethostname()}"
        self._active: dict[str, Lease] = {}
        self._guard = threading.Condition()
        self._heartbeat: threading.Thread | None = None
        self._closed = False

    def deadline(self) -> float:
        return self._clock() + self.ttl

    def lock_path(self, lease_id: str) -> Path:
        return self.folder / lease_id

    # -- holders ------------------------------------------------------------------

    def acquire(self, *, purpose: str) -> Lease:
        """A new lease, locked and recorded; raises TemporaryError if the disk or database fails."""
        lease_id = new_lease_id()
        try:
            fd = self._locked_file(lease_id)
        except OSError as exc:
            raise TemporaryError(
                f"cannot create the lease file for {purpose} in {self.folder}:"
                f" {exc.strerror or exc}"
            ) from exc
        lease = Lease(manager=self, lease_id=lease_id, purpose=purpose, fd=fd)
        try:
            now = self._clock()
            self.state.create_lease(
                lease_id, purpose=purpose, owner=self._owner, now=now, expires_at=now + self.ttl
            )
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path(lease_id).unlink()
            os.close(fd)
            if isinstance(exc, sqlite3.Error):
                raise _state_error(f"create a lease for {purpose}", exc) from exc
            raise
        self._track(lease)
        return lease

    def _locked_file(self, lease_id: str) -> int:
        """`folder/<id>`, exclusively flocked by us before anyone can see it under that name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = self.folder / f".{lease_id}.new"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{self._owner}\n".encode())
            os.rename(fresh, self.lock_path(lease_id))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                fresh.unlink()
            os.close(fd)
            raise
        return fd

    def recreate(self, lease: Lease, digests: Collection[str]) -> None:
        """Put back a lease gc dropped while its holder lived (it hung past expiry)."""
        now = self._clock()
        log.warning(
            "lease %s (%s) had expired and was dropped by gc; taking it out again",
            lease.lease_id,
            lease.purpose,
        )
        with contextlib.suppress(sqlite3.IntegrityError):  # our own retry raced us
            self.state.create_lease(
                lease.lease_id,
                purpose=lease.purpose,
                owner=self._owner,
                now=now,
                expires_at=now + self.ttl,
            )
        self.state.hold_blobs(lease.lease_id, digests, expires_at=now + self.ttl)

    # -- heartbeat ----------------------------------------------------------------

    def _track(self, lease: Lease) -> None:
        with self._guard:
            self._active[lease.lease_id] = lease
            if self._heartbeat is None and not self._closed:
                self._heartbeat = threading.Thread(
                    target=self._renew_loop, name="gitsync-lease-renew", daemon=True
                )
                self._heartbeat.start()

    def forget(self, lease: Lease) -> None:
        with self._guard:
            self._active.pop(lease.lease_id, None)
            self._guard.notify_all()

    def _renew_loop(self) -> None:
        # The cadence is real time (monotonic); expiry is in the clock's time.
        next_beat = time.monotonic() + self.renew_every
        while True:
            with self._guard:
                while not self._closed and self._active:
                    left = next_beat - time.monotonic()
                    if left <= 0:
                        break
                    self._guard.wait(timeout=left)
                if self._closed or not self._active:
                    self._heartbeat = None
                    return
                leases = list(self._active.values())
            next_beat = time.monotonic() + self.renew_every
            self.renew(leases)

    def renew(self, leases: Collection[Lease]) -> None:
        """Extend `leases`; any gc dropped while we lived is taken out again."""
        try:
            gone = self.state.renew_leases(
                [lease.lease_id for lease in leases], expires_at=self.deadline()
            )
            for lease in leases:
                if lease.lease_id in gone and not lease.released:
                    self.recreate(lease, lease.held())
        except (sqlite3.Error, TemporaryError) as exc:
            # The next beat tries again; the lease lapses only after `ttl` of failures.
            log.warning("could not renew leases: %s", exc)

    def close(self) -> None:
        """Stop the heartbeat (leases still open lapse at expiry or when the process ends)."""
        with self._guard:
            self._closed = True
            thread = self._heartbeat
            self._guard.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- gc -------------------------------------------------------------------------

    def holder_alive(self, lease_id: str) -> bool | None:
        """True if the holder still locks the lease file, False if not, None if no file."""
        try:
            fd = os.open(self.lock_path(lease_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def drop_dead(self) -> DroppedLeases:
        """Drop leases that expired or whose holder is gone, and lock files nobody holds."""
        now = self._clock()
        stopped: list[str] = []
        expired: list[str] = []
        for record in self.state.leases():
            alive = self.holder_alive(record.lease_id)
            if alive is False:
                stopped.append(record.lease_id)
            elif record.expires_at <= now:
                expired.append(record.lease_id)
        self.state.drop_leases([*stopped, *expired])
        for lease_id in stopped:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path(lease_id).unlink()
        self._sweep_lock_files(now)
        return DroppedLeases(stopped=tuple(stopped), expired=tuple(expired))

    def _sweep_lock_files(self, now: float) -> None:
        """Remove lock files no lease row names and no process holds (crash leftovers)."""
        if not self.folder.is_dir():
            return
        known = self.state.lease_ids()
        for entry in os.scandir(self.folder):
            name = entry.name
            if LEASE_ID_RE.match(name):
                if name not in known and self.holder_alive(name) is False:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            elif name.startswith(".") and name.endswith(".new"):
                # Killed between creating and renaming its lock file: nobody can own it.
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime > _STALE_NEW_LOCK_SECONDS:
                        os.unlink(entry.path)

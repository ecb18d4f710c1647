"""Lookups written in batches by a background thread, off the request path.

Why: the mirror answers a manifest request in well under a millisecond, and
a pod observer sees thousands of pods; an SQLite commit per lookup would cost
more than the request and make every pull wait for the disk. So `record`
only appends to a bounded in-memory queue (O(1), never blocks on I/O, never
raises); when the queue is full the lookup is dropped and counted
(`dropped`), which loses a little evidence but never slows a pull.

One thread owns the store (it opens it, writes, prunes, closes it): it wakes
every `flush_interval` seconds, or as soon as `max_batch` lookups are queued,
and writes what is queued in transactions of up to `max_batch` rows. It
prunes the store when it starts and every `prune_interval` seconds after
(by the injected clock). A failing disk loses the batch it could not write:
logged once when the failures start (and once when they stop), counted in
`failed_batches` and `lost`, never raised to the caller; the next batch tries
again (reopening the store if it could not be opened).

`stop()` writes what is queued, then closes the store. `flush()` (tests, the
API before it reads) waits until every lookup queued before the call has been
written or lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from gitsync.errors import GitSyncError
from gitsync.observations.model import Lookup
from gitsync.observations.store import ObservationStore

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_SECONDS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PRUNE_INTERVAL_SECONDS",
    "BatchRecorder",
]

log = logging.getLogger("gitsync.observations")

DEFAULT_FLUSH_INTERVAL_SECONDS: Final = 1.0
DEFAULT_MAX_BATCH: Final = 1_000
DEFAULT_MAX_QUEUE: Final = 100_000  # ~20 MB of queued lookups at worst
DEFAULT_PRUNE_INTERVAL_SECONDS: Final = 3_600.0


class BatchRecorder:
    """Queue lookups from any thread; one background thread writes them to the store."""

    def __init__(
        self,
        open_store: Callable[[], ObservationStore],
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL_SECONDS,
    ) -> None:
        """`open_store` is called on the writer thread, which then owns the store."""
        if max_batch < 1 or max_queue < 1 or flush_interval <= 0 or prune_interval <= 0:
            raise ValueError("max_batch, max_queue, flush_interval and prune_interval must be > 0")
        self._open_store = open_store
        self._clock = clock
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._prune_interval = prune_interval
        self._queue: deque[Lookup] = deque()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)  # notified as batches finish
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._accepted = 0  # lookups ever queued
        self._finished = 0  # of those, written or lost
        self.dropped = 0  # refused because the queue was full
        self.written = 0
        self.lost = 0  # queued, but a failing store could not take them
        self.failed_batches = 0
        self.pruned = 0
        self._failing = False

    # ------------------------------------------------------------ request path

    def record(self, lookup: Lookup) -> None:
        """Queue one lookup; O(1), no I/O. Dropped (and counted) when the queue is full."""
        with self._lock:
            if len(self._queue) >= self._max_queue:
                self.dropped += 1
                return
            self._queue.append(lookup)
            self._accepted += 1
            full = len(self._queue) >= self._max_batch
        if full:
            self._wake.set()

    def record_many(self, lookups: Sequence[Lookup]) -> None:
        """Queue several lookups (a pod's images), as far as the queue has room."""
        with self._lock:
            room = max(0, self._max_queue - len(self._queue))
            taken = lookups[:room]
            self._queue.extend(taken)
            self._accepted += len(taken)
            self.dropped += len(lookups) - len(taken)
            full = len(self._queue) >= self._max_batch
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the writer thread (again, after `stop()`)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="gitsync-observations", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the store and end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if not thread.is_alive():
            self._thread = None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every lookup queued before this call is written (or lost); False on timeout.

        Without a running writer nothing can finish: False at once.
        """
        if self._thread is None:
            return False
        with self._lock:
            target = self._accepted
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._finished >= target, timeout)

    # ---------------------------------------------------------------- writer

    def _run(self) -> None:
        store: ObservationStore | None = None
        next_prune = self._clock()
        try:
            while True:
                self._wake.wait(self._flush_interval)
                self._wake.clear()
                stopping = self._stopping.is_set()
                if store is None:
                    store = self._open()
                self._drain(store)
                now = self._clock()
                if store is not None and now >= next_prune:
                    self._prune(store, now)
                    next_prune = now + self._prune_interval
                if stopping:
                    break
        finally:
            if store is not None:
                store.close()

    def _open(self) -> ObservationStore | None:
        try:
            store = self._open_store()
        except (GitSyncError, OSError) as exc:
            self._failed(f"cannot open the observations store: {exc}")
            return None
        return store

    def _drain(self, store: ObservationStore | None) -> None:
        """Write everything queued now, `max_batch` rows per transaction."""
        while True:
            with self._lock:
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            if not batch:
                return
            written = False
            if store is not None:
                try:
                    store.add(batch)
                    written = True
                except GitSyncError as exc:
                    self._failed(f"cannot write {len(batch)} lookups: {exc}")
                except Exception:  # a malformed lookup is a bug, but must not end the writer
                    log.exception("cannot write %d lookups", len(batch))
            if written:
                self.written += len(batch)
                if self._failing:
                    self._failing = False
                    log.info("observations are written again")
            else:
                self.lost += len(batch)
                self.failed_batches += 1
            with self._done:
                self._finished += len(batch)
                self._done.notify_all()

    def _prune(self, store: ObservationStore, now: float) -> None:
        try:
            self.pruned += store.prune(now)
        except GitSyncError as exc:
            self._failed(f"cannot prune the observations store: {exc}")

    def _failed(self, message: str) -> None:
        """Log the first of a run of failures; the counters say how many followed."""
        if not self._failing:
            self._failing = True
            log.warning("%s; lookups are lost until the disk recovers", message)

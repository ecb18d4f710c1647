"""The scrub: re-hash, at a bounded rate, every blob a Ready cache serves, as ZFS and Ceph do.

The per-pass check (`checks`) stats blobs and so finds a file deleted or
truncated; a flipped byte keeps the size, and only hashing finds it. Hashing
the whole store every pass would cost what pulling it did, so the daemon runs
a scrub in a thread of its own: one pass over the distinct blobs the Ready
caches' snapshots reference, in digest order, every `interval_seconds`
(`--scrub-interval`, 24h by default), reading at most `rate_bytes` per second
(`--scrub-rate`) through a token bucket, so pulls and the mirror keep the
disk.

Resumable: every second at most, and after every batch of blobs, the pass
records in the state database's `meta` table the digest it finished with (and
when the pass started); a daemon
restarted, even after kill -9, carries on after that digest instead of from the
start, and a finished pass records when it ended, so the next one waits out
the interval across restarts too. A blob changed between being hashed and the
crash was hashed before it changed: the next pass finds it, as it would have.

A blob that does not hash to its digest goes to `LocalProvider.report_damage`
(moved aside; its caches Failed with a `SnapshotDamaged` event; rebuilt by the
next pass). A blob that is missing is left to the per-pass check. Bytes hashed
are counted through `on_bytes` (the daemon's `gitsync_scrub_bytes_total`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gitsync.providers.local.blobs import parse_digest
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.state import SCRUB_AFTER_KEY, SCRUB_FINISHED_KEY, SCRUB_STARTED_KEY

__all__ = ["DEFAULT_RATE_BYTES", "ScrubPass", "Scrubber", "TokenBucket"]

log = logging.getLogger("gitsync.providers.local.scrub")

DEFAULT_RATE_BYTES = 50 * 1024 * 1024  # per second: a fraction of any disk's sequential read
DEFAULT_INTERVAL_SECONDS = 24 * 3600.0
CHUNK_BYTES = 1 << 20
BATCH = 200  # digests read from the database at a time
# The position is written at least this often and after every batch: a restart hashes
# again at most this much work, and a store of small blobs costs few transactions.
RECORD_EVERY_SECONDS = 1.0


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take` waits for what it asks.

    A request larger than the burst is let through once the bucket is full and
    leaves it in debt, so big chunks still average out to `rate`. `wait(seconds)`
    sleeps and returns True if told to stop meanwhile (a `threading.Event.wait`).
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool],
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, not {rate} and {burst}")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._wait = wait
        self._tokens = burst
        self._at = clock()

    def take(self, amount: float) -> bool:
        """Wait until `amount` may pass; False if told to stop while waiting."""
        while True:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            need = min(amount, self._burst)
            # A token's worth of slack: the clock's rounding must not turn into a spin.
            if self._tokens + 1.0 > need:
                self._tokens -= amount
                return True
            if self._wait((need - self._tokens) / self._rate):
                return False


@dataclass(frozen=True, slots=True)
class ScrubPass:
    """What one call to `Scrubber.scrub` did."""

    blobs: int  # hashed to the end
    bytes: int
    damaged: tuple[str, ...]  # digests that did not match (reported)
    finished: bool  # False: stopped part-way (the position is recorded)


class Scrubber:
    """Scrubs `provider`'s store; `run` is the daemon thread's body (see the module docstring)."""

    def __init__(
        self,
        provider: LocalProvider,
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        rate_bytes: int = DEFAULT_RATE_BYTES,
        on_bytes: Callable[[int], None] = lambda _n: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds}")
        if rate_bytes <= 0:
            raise ValueError(f"rate_bytes must be positive, not {rate_bytes}")
        self._provider = provider
        self._state = provider.state
        self._interval = interval_seconds
        self._rate = rate_bytes
        self._on_bytes = on_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._chunk = min(chunk_bytes, rate_bytes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="gitsync-scrub", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Scrub whenever a pass is due, until `stop`; a failed pass is retried later."""
        while not self._stop.is_set():
            delay = self.due_in()
            if delay > 0:
                if self._stop.wait(delay):
                    return
                continue
            try:
                self.scrub()
            except Exception as exc:  # a disk or database error: try again in a while
                log.error("the scrub stopped: %s; it carries on in 10 minutes", exc)
                if self._stop.wait(600.0):
                    return

    # ------------------------------------------------------------ the passes

    def due_in(self) -> float:
        """Seconds until a pass is due: 0 when one is in progress or none ever finished."""
        if self._in_progress():
            return 0.0
        finished = _number(self._state.get_meta(SCRUB_FINISHED_KEY))
        if finished is None:
            return 0.0
        return max(0.0, finished + self._interval - self._clock())

    def _in_progress(self) -> bool:
        started = _number(self._state.get_meta(SCRUB_STARTED_KEY))
        finished = _number(self._state.get_meta(SCRUB_FINISHED_KEY))
        return started is not None and (finished is None or finished < started)

    def scrub(self, *, on_blob: Callable[[str], None] = lambda _d: None) -> ScrubPass:
        """Carry on with the pass in progress, or start one; until done or stopped.

        `on_blob(digest)` is called as each blob starts (tests follow the order).
        """
        if not self._in_progress():
            self._state.set_meta(SCRUB_AFTER_KEY, "")
            self._state.set_meta(SCRUB_STARTED_KEY, repr(self._clock()))
            log.info("scrub: a pass over the store starts")
        after = self._state.get_meta(SCRUB_AFTER_KEY) or ""
        bucket = TokenBucket(
            rate=self._rate, burst=self._rate, clock=self._monotonic, wait=self._stop.wait
        )
        hashed = total = 0
        damaged: list[str] = []
        recorded_at = self._monotonic()
        while True:
            batch = self._state.ready_blobs_after(after, limit=BATCH)
            if not batch:
                break
            for digest, _size in batch:
                on_blob(digest)
                outcome = self._hash(digest, bucket)
                if outcome is None:
                    return ScrubPass(
                        blobs=hashed, bytes=total, damaged=tuple(damaged), finished=False
                    )
                read, actual = outcome
                total += read
                hashed += 1
                if actual is not None and actual != digest:
                    damaged.append(digest)
                    self._provider.report_damage(
                        digest, f"does not match its digest (the scrub read {actual})"
                    )
                after = digest
                if self._monotonic() - recorded_at >= RECORD_EVERY_SECONDS:
                    self._state.set_meta(SCRUB_AFTER_KEY, after)
                    recorded_at = self._monotonic()
            self._state.set_meta(SCRUB_AFTER_KEY, after)
            recorded_at = self._monotonic()
        self._state.set_meta(SCRUB_FINISHED_KEY, repr(self._clock()))
        self._state.set_meta(SCRUB_AFTER_KEY, "")
        log.info(
            "scrub: pass done, %d blobs (%.1f MiB) hashed, %d damaged",
            hashed,
            total / 2**20,
            len(damaged),
        )
        return ScrubPass(blobs=hashed, bytes=total, damaged=tuple(damaged), finished=True)

    def _hash(self, digest: str, bucket: TokenBucket) -> tuple[int, str | None] | None:
        """(bytes read, digest of the file or None if it is missing); None when stopped."""
        algorithm, _ = parse_digest(digest)
        hasher = hashlib.new(algorithm)
        read = 0
        try:
            with open(self._provider.blobs.path(digest), "rb") as fh:
                while data := fh.read(self._chunk):
                    # Pay for what was read (a small blob costs its size, not a chunk).
                    if not bucket.take(len(data)):
                        return None
                    hasher.update(data)
                    read += len(data)
                    self._on_bytes(len(data))
        except FileNotFoundError:
            return read, None  # the per-pass check reports a missing blob
        return read, f"{algorithm}:{hasher.hexdigest()}"


def _number(text: str | None) -> float | None:
    try:
        return None if text is None or text == "" else float(text)
    except ValueError:
        return None  # a hand-edited value: start afresh

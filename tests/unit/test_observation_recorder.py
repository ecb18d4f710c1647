"""The batch recorder: a real store on disk, a writer thread, waits that fail at a deadline."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.observations.recorder import BatchRecorder
from gitsync.observations.store import ObservationDiskError, ObservationStore

DAY = 86_400.0
NOW = 1_900_000_000.0
WAIT = 10.0  # seconds a test waits for the writer before it fails


def lookup(n: int, *, at: float = NOW) -> Lookup:
    return Lookup(
        image=f"docker.io/library/image{n % 7}:1",
        result=LookupResult.MISS,
        at=at,
        source=LookupSource.MIRROR,
        group=f"10.0.0.1#{n // 3}",
    )


class WatchedStore(ObservationStore):
    """The real store, telling the test the size of each batch it writes."""

    def __init__(self, path: Path, *, fail_first: int = 0) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.wrote = threading.Event()
        self._fail_first = fail_first

    def add(self, lookups: Sequence[Lookup]) -> int:
        if self._fail_first:
            self._fail_first -= 1
            raise ObservationDiskError(f"cannot record lookups in {self.path}: disk I/O error")
        written = super().add(lookups)
        self.batches.append(len(lookups))
        self.wrote.set()
        return written


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "observations.db"


@pytest.fixture
def stores(path: Path) -> Iterator[list[WatchedStore]]:
    opened: list[WatchedStore] = []
    yield opened
    for store in opened:
        store.close()


def opener(path: Path, stores: list[WatchedStore], **options: int) -> WatchedStore:
    store = WatchedStore(path, **options)
    stores.append(store)
    return store


def stored(path: Path) -> int:
    with ObservationStore.open_readonly(path) as reader:
        return reader.count()


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    path: Path, stores: list[WatchedStore]
) -> None:
    recorder = BatchRecorder(
        lambda: opener(path, stores), flush_interval=3_600, max_batch=3, clock=lambda: NOW
    )
    recorder.start()
    try:
        for n in range(3):
            recorder.record(lookup(n))
        # No flush(): only the full batch can wake the writer within the hour's interval.
        assert _wait_for_store(stores).wrote.wait(WAIT), "a full batch was not written"
        assert stores[0].batches == [3]
        for n in range(3, 10):
            recorder.record(lookup(n))
        assert recorder.flush(WAIT)
        assert sum(stores[0].batches) == 10
        assert max(stores[0].batches) <= 3  # never more than max_batch per transaction
    finally:
        recorder.stop()
    assert (recorder.written, recorder.dropped, recorder.lost) == (10, 0, 0)
    assert stored(path) == 10


def test_a_full_queue_drops_and_counts_instead_of_waiting(
    path: Path, stores: list[WatchedStore]
) -> None:
    recorder = BatchRecorder(lambda: opener(path, stores), max_queue=4, max_batch=100)
    for n in range(6):
        recorder.record(lookup(n))  # no writer yet: the queue fills
    recorder.record_many([lookup(6), lookup(7)])
    assert (recorder.pending, recorder.dropped) == (4, 4)
    recorder.start()
    try:
        assert recorder.flush(WAIT)
    finally:
        recorder.stop()
    assert recorder.written == 4
    assert stored(path) == 4


def test_stop_writes_what_is_queued(path: Path, stores: list[WatchedStore]) -> None:
    recorder = BatchRecorder(lambda: opener(path, stores), flush_interval=3_600)
    recorder.start()
    recorder.record_many([lookup(n) for n in range(5)])
    recorder.stop()
    assert recorder.pending == 0
    assert stored(path) == 5
    assert not recorder.flush(0.1)  # stopped: nothing can be written any more


def test_flush_waits_for_exactly_what_was_queued_before_it(
    path: Path, stores: list[WatchedStore]
) -> None:
    recorder = BatchRecorder(lambda: opener(path, stores), flush_interval=3_600, max_batch=2)
    recorder.start()
    try:
        for round_no in range(1, 4):
            recorder.record_many([lookup(n) for n in range(5)])
            assert recorder.flush(WAIT)
            assert stored(path) == 5 * round_no
    finally:
        recorder.stop()


def test_a_failing_disk_loses_the_batch_logs_once_and_recovers(
    path: Path, stores: list[WatchedStore], caplog: pytest.LogCaptureFixture
) -> None:
    recorder = BatchRecorder(
        lambda: opener(path, stores, fail_first=2), flush_interval=3_600, max_batch=100
    )
    recorder.start()
    try:
        with caplog.at_level(logging.INFO, logger="gitsync.observations"):
            for n in range(2):
                recorder.record(lookup(n))  # never raises into the caller
                assert recorder.flush(WAIT)
            recorder.record(lookup(2))
            assert recorder.flush(WAIT)
    finally:
        recorder.stop()
    assert (recorder.lost, recorder.failed_batches, recorder.written) == (2, 2, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "disk I/O error" in warnings[0].getMessage()
    assert any("written again" in r.getMessage() for r in caplog.records)
    assert stored(path) == 1


def test_a_store_that_cannot_be_opened_is_retried(path: Path) -> None:
    attempts: list[int] = []

    def open_store() -> ObservationStore:
        attempts.append(1)
        if len(attempts) == 1:
            raise ObservationDiskError(f"cannot open {path}: unable to open database file")
        return ObservationStore(path)

    recorder = BatchRecorder(open_store, flush_interval=3_600)
    recorder.start()
    try:
        recorder.record(lookup(0))
        assert recorder.flush(WAIT)
        recorder.record(lookup(1))
        assert recorder.flush(WAIT)
    finally:
        recorder.stop()
    assert (recorder.lost, recorder.written, len(attempts)) == (1, 1, 2)
    assert stored(path) == 1


def test_the_writer_prunes_on_start_and_then_every_interval(path: Path) -> None:
    with ObservationStore(path) as seed:
        seed.add([lookup(0, at=NOW - 40 * DAY), lookup(1, at=NOW - 10 * DAY), lookup(2, at=NOW)])
    now = [NOW]
    recorder = BatchRecorder(
        lambda: ObservationStore(path, retention_seconds=30 * DAY),
        clock=lambda: now[0],
        flush_interval=3_600,
        prune_interval=3_600,
    )
    recorder.start()
    recorder.stop()  # one pass of the writer: it pruned on starting
    assert (recorder.pruned, stored(path)) == (1, 2)

    now[0] += 25 * DAY  # the row 10 days old is now 35 days old
    recorder.start()
    recorder.stop()
    assert (recorder.pruned, stored(path)) == (2, 1)


def _wait_for_store(stores: list[WatchedStore]) -> WatchedStore:
    """The store the writer opened; it opens it on its first wake-up."""
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if stores:
            return stores[0]
        deadline.wait(0.01)
    raise AssertionError("the writer never opened its store")

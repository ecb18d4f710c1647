"""FolderWatch on a real folder with watchdog's real observer (inotify on Linux).

The daemon gets its watch from the source (`FolderSource.watch`); the last tests
check that a folder source hands out a live watch on its tree and a git source none,
and that a daemon over a folder passes on an edit and stops the watch when it stops.

Waits are bounded by events where possible; "no callback" is checked after a
quiet window several times the debounce, then a real change proves the watch
was alive all along (so a dead watch cannot pass a negative check). After a
stop, a change made before it proves the watch was alive, and the threads it
started must all have ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_until

from gitsync.controller_record import RecordFile
from gitsync.daemon import Daemon
from gitsync.metrics import DaemonMetrics, ExpositionRegistry
from gitsync.pricing import PriceTable
from gitsync.providers.local.provider import LocalProvider
from gitsync.reconciler import ReconcilePolicy, Reconciler
from gitsync.sources import open_source
from gitsync.sources.git import GitSource, SourceError
from gitsync.sources.watch import FolderWatch

DEBOUNCE = 0.15
QUIET = DEBOUNCE * 4  # long enough for a pending callback to have fired


class Counter:
    """A thread-safe callback that counts calls and lets a test wait for the next one."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self._lock = threading.Condition()
        self.count = 0
        self._fail_first = fail_first

    def __call__(self) -> None:
        with self._lock:
            self.count += 1
            self._lock.notify_all()
            if self._fail_first and self.count == 1:
                raise RuntimeError("the first callback fails on purpose")

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        with self._lock:
            self._lock.wait_for(lambda: self.count >= count, timeout)
            return self.count


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "specs"
    root.mkdir()
    (root / "web.yaml").write_text("name: web\n")
    return root


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def watch(folder: Path, counter: Counter) -> Iterator[FolderWatch]:
    with FolderWatch(folder, counter, debounce_seconds=DEBOUNCE) as running:
        yield running


def burst(folder: Path, files: int = 20) -> None:
    for i in range(files):
        (folder / f"cache-{i}.yaml").write_text(f"name: cache-{i}\n")
    (folder / "cache-0.yaml").touch()
    (folder / "cache-1.yaml").unlink()


@pytest.mark.usefixtures("watch")
def test_a_burst_of_changes_calls_back_once(folder: Path, counter: Counter) -> None:
    burst(folder)
    assert counter.wait_for(1) == 1
    time.sleep(QUIET)
    assert counter.count == 1

    (folder / "web.yaml").touch()
    assert counter.wait_for(2) == 2
    time.sleep(QUIET)
    assert counter.count == 2


@pytest.mark.usefixtures("watch")
def test_changes_under_dot_git_are_ignored(folder: Path, counter: Counter) -> None:
    git_dir = folder / ".git"
    (git_dir / "objects" / "ab").mkdir(parents=True)
    (git_dir / "index").write_bytes(b"DIRC")
    (git_dir / "objects" / "ab" / "cdef").write_bytes(b"blob")
    (git_dir / "index").rename(git_dir / "index.old")
    time.sleep(QUIET)
    assert counter.count == 0

    (folder / "team").mkdir()
    (folder / "team" / "api.yaml").write_text("name: api\n")
    assert counter.wait_for(1) == 1


@pytest.mark.usefixtures("watch")
def test_reading_files_does_not_call_back(folder: Path, counter: Counter) -> None:
    """A pass reads every spec; if that counted, each pass would trigger the next."""
    for _ in range(5):
        assert (folder / "web.yaml").read_text() == "name: web\n"
    list(folder.rglob("*.yaml"))
    time.sleep(QUIET)
    assert counter.count == 0

    (folder / "web.yaml").write_text("name: web\nimages: [nginx:1.27]\n")
    assert counter.wait_for(1) == 1


def test_a_folder_that_never_goes_quiet_still_triggers(folder: Path, counter: Counter) -> None:
    with FolderWatch(folder, counter, debounce_seconds=0.25, max_delay_seconds=0.4):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # a write every 50 ms: never 0.25 s of quiet
            (folder / "busy.yaml").write_text(str(time.monotonic()))
            time.sleep(0.05)
        during = counter.count
    assert during >= 1


def test_a_failing_callback_does_not_end_the_watch(folder: Path) -> None:
    counter = Counter(fail_first=True)
    with FolderWatch(folder, counter, debounce_seconds=DEBOUNCE):
        (folder / "a.yaml").write_text("a\n")
        assert counter.wait_for(1) == 1
        time.sleep(QUIET)
        (folder / "b.yaml").write_text("b\n")
        assert counter.wait_for(2) == 2


def test_stop_ends_callbacks_and_is_idempotent(folder: Path, counter: Counter) -> None:
    running_before = set(threading.enumerate())
    watch = FolderWatch(folder, counter, debounce_seconds=DEBOUNCE)
    watch.start()
    started = set(threading.enumerate()) - running_before
    with pytest.raises(RuntimeError, match="already started"):
        watch.start()
    # The watch is alive before the stop: a change made now is seen.
    (folder / "before-stop.yaml").write_text("x\n")
    assert counter.wait_for(1) == 1

    watch.stop()
    watch.stop()
    # Every thread the watch started has ended, the one that runs callbacks included,
    # so nothing is left that could call back.
    assert started
    assert [t.name for t in started if t.is_alive()] == []
    (folder / "after-stop.yaml").write_text("x\n")
    time.sleep(QUIET)
    assert counter.count == 1


def test_a_missing_folder_cannot_be_watched(tmp_path: Path, counter: Counter) -> None:
    with pytest.raises(SourceError, match="not a folder"):
        FolderWatch(tmp_path / "nowhere", counter).start()


def test_bad_timings_are_rejected(folder: Path, counter: Counter) -> None:
    with pytest.raises(ValueError, match="max delay"):
        FolderWatch(folder, counter, debounce_seconds=1.0, max_delay_seconds=0.5)


def test_a_folder_source_watches_its_tree_until_the_caller_stops_it(
    tmp_path: Path, counter: Counter
) -> None:
    folder = tmp_path / "specs"
    (folder / "prod").mkdir(parents=True)
    (folder / "prod" / "web.yaml").write_text("name: web\n")
    source = open_source(url=str(folder), path="prod", cache_dir=tmp_path / "cache")
    assert source.fetch().tree == folder / "prod"
    running_before = set(threading.enumerate())
    watch = source.watch(counter)
    assert watch is not None
    started = set(threading.enumerate()) - running_before
    try:
        (folder / "prod" / "api.yaml").write_text("name: api\n")
        assert counter.wait_for(1) == 1
    finally:
        watch.stop()
    assert started
    assert [t.name for t in started if t.is_alive()] == []


def test_a_folder_source_that_cannot_watch_says_so(tmp_path: Path, counter: Counter) -> None:
    source = open_source(url=str(tmp_path / "nowhere"), cache_dir=tmp_path / "cache")
    with pytest.raises(SourceError, match="not a folder"):
        source.watch(counter)


def test_a_git_source_has_no_watch(tmp_path: Path, counter: Counter) -> None:
    source = GitSource(url="https://git.example.test/r.git", cache_dir=tmp_path / "cache")
    assert source.watch(counter) is None


def test_a_daemon_over_a_folder_passes_on_an_edit_and_stops_its_watch(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    data = tmp_path / "data"
    provider = LocalProvider(data_dir=data)
    registry = ExpositionRegistry()
    daemon = Daemon(
        source=open_source(url=str(folder), cache_dir=data / "source"),
        reconciler=Reconciler(
            provider=provider,
            records=RecordFile(data),
            policy=ReconcilePolicy(),
            prices=PriceTable(),
        ),
        registry=registry,
        metrics=DaemonMetrics(registry=registry, version="test"),
        interval_seconds=3600,  # no poll during the test: only the watch can cause a pass
        host="127.0.0.1",
        port=0,
        branch="main",
        webhook_secret=None,
        version="test",
    )
    running_before = set(threading.enumerate())
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    try:
        wait_until(daemon.ready_to_serve, timeout=30, what="the first pass")
        first = daemon.status()["newestRevision"]
        (folder / "web.yaml").write_text("name: web\n")
        wait_until(
            lambda: daemon.status()["newestRevision"] != first,
            timeout=30,
            what="a pass caused by the edit",
            detail=lambda: str(daemon.queue.counts_by_source()),
        )
        assert daemon.queue.counts_by_source()["watch"] >= 1
    finally:
        daemon.stop()
        thread.join(30)
        provider.close()
    assert not thread.is_alive(), "the daemon did not stop"
    started = set(threading.enumerate()) - running_before
    assert [t.name for t in started if t.is_alive()] == []

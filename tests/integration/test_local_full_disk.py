"""The local backend when the data disk refuses writes: what is recorded, and when.

A database at its `max_page_count` refuses to grow with SQLITE_FULL, the code
a full disk gives, so these tests provoke the state database's refusal without
a small file system; the provider's test stands in a refusing `record_failure`
for the same reason (tests/reliability/test_fault_injection.py fills a real
file system under a running daemon).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_images import Pusher, small_layer

from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.leases import LeaseManager
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.registryhttp import NotFoundError
from gitsync.providers.local.state import WAL_CHECKPOINT_PAGES, DiskFullError, StateStore

DIGEST = "sha256:" + "c" * 64
HUGE = "x" * 100_000  # an event this long needs new pages, so a full database refuses it


def _spec(name: str, image: str) -> CacheSpec:
    return CacheSpec(name=name, images=(image,), image_cache_size_gib=1, retention_days=0)


def _fill(state: StateStore) -> None:
    """No page more: what the database may still write fits in the pages it has."""
    pages = state._db.execute("PRAGMA page_count").fetchone()[0]
    state._db.execute(f"PRAGMA max_page_count = {pages}")


def _room(state: StateStore) -> None:
    state._db.execute("PRAGMA max_page_count = 1073741823")


def _event_rows(state: StateStore, cache_id: str) -> int:
    row = state._db.execute("SELECT COUNT(*) FROM events WHERE cache_id = ?", (cache_id,))
    return int(row.fetchone()[0])


def test_a_refused_state_write_is_a_disk_full_error_and_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.db")
    cache_id = state.insert_cache(
        _spec("web", "busybox:1.36.1"), owner="gitsync", status=CacheStatus.PENDING
    )
    _fill(state)
    with pytest.raises(DiskFullError, match="the disk is full"):
        state.add_event(cache_id, type_="Normal", reason="Big", message=HUGE)
    assert _event_rows(state, cache_id) == 0
    # No transaction is left open on the connection: the next write (which fits) works.
    state.set_status(cache_id, CacheStatus.FAILED)
    cache = state.cache(cache_id)
    assert cache is not None
    assert cache.status is CacheStatus.FAILED
    state.close()


def test_a_failure_is_recorded_with_its_event_and_the_end_of_its_lease_at_once(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.db")
    manager = LeaseManager(state=state, folder=tmp_path / "leases")
    cache_id = state.insert_cache(
        _spec("web", "busybox:1.36.1"), owner="gitsync", status=CacheStatus.PENDING
    )
    lease = manager.acquire(purpose="pull")
    lease.hold([DIGEST])

    _fill(state)
    with pytest.raises(DiskFullError):
        state.record_failure(
            cache_id,
            status=CacheStatus.FAILED,
            reason="DiskFull",
            message=HUGE,
            lease_id=lease.lease_id,
        )
    cache = state.cache(cache_id)
    assert cache is not None
    assert cache.status is CacheStatus.PENDING  # all of it or nothing
    assert [record.blobs for record in state.leases()] == [1]
    assert _event_rows(state, cache_id) == 0

    _room(state)
    assert state.record_failure(
        cache_id,
        status=CacheStatus.FAILED,
        reason="DiskFull",
        message="no room",
        lease_id=lease.lease_id,
    )
    cache = state.cache(cache_id)
    assert cache is not None
    assert cache.status is CacheStatus.FAILED
    assert [(e.type, e.reason, e.message) for e in cache.events] == [
        ("Warning", "DiskFull", "no room")
    ]
    assert state.leases() == ()  # and with it, its claim on the blob

    # The cache deleted meanwhile: the lease still ends, and no event is left orphaned.
    other = manager.acquire(purpose="pull")
    state.delete_cache(cache_id)
    assert not state.record_failure(
        cache_id,
        status=CacheStatus.FAILED,
        reason="DiskFull",
        message="gone",
        lease_id=other.lease_id,
    )
    assert state.leases() == ()
    assert _event_rows(state, cache_id) == 0
    for held in (lease, other):
        held.release(end_row=False)
    manager.close()
    state.close()


def test_a_failure_the_state_database_refuses_is_written_by_the_next_observe(
    pusher: Pusher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = pusher.repo("unrecorded")  # nothing pushed yet: the pull fails with a 404
    image = f"{pusher.registry.host}/{repo}:v1"
    data = tmp_path / "data"
    local = LocalProvider(data_dir=data)
    caplog.set_level(logging.INFO, logger="gitsync.providers.local")

    lock_files: list[list[str]] = []

    def refuse(cache_id: str, **_: object) -> bool:
        lock_files.append(sorted(p.name for p in (data / "leases").iterdir()))
        raise DiskFullError(f"cannot write the state database: the disk is full ({cache_id})")

    local.state.record_failure = refuse  # type: ignore[method-assign]
    with pytest.raises(NotFoundError):
        local.create(_spec("web", image), owner="gitsync")
    del local.state.record_failure  # the real method again

    assert lock_files == [[]]  # the lease's lock file was gone before the write
    (cache,) = local.current()
    assert cache.status is CacheStatus.PENDING  # the database refused the failure...
    assert len(local.state.leases()) == 1  # ...and the end of the lease with it
    assert "cannot record that cache" in caplog.text

    (cache,) = local.observe().caches
    assert cache.status is CacheStatus.FAILED  # ...which the next observe writes
    assert [e.reason for e in cache.events if e.type == "Warning"] == ["ImageNotFound"]
    assert local.state.leases() == ()
    assert "recorded that cache" in caplog.text

    # A failure still unrecorded when a new build of the cache starts is superseded by it.
    local.state.record_failure = refuse  # type: ignore[method-assign]
    with pytest.raises(NotFoundError):
        local.update(_spec("web", image), cache)
    del local.state.record_failure
    pusher.push_image(repo, [small_layer(repo)])
    (cache,) = local.current()
    rebuilt = local.update(_spec("web", image), cache)
    assert rebuilt.status is CacheStatus.READY
    (cache,) = local.observe().caches
    assert cache.status is CacheStatus.READY  # the stale failure was not written over it
    assert local.state.leases() == ()  # the superseded failure's lease ended too
    local.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a file system that really fills up (needs mount rights)."""
    path = tmp_path / "disk"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "gitsync-test", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("needs mount rights to fill a real file system")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=10)


def _fill_up(folder: Path) -> None:
    with contextlib.suppress(OSError), open(folder / "ballast", "wb") as out:
        while True:
            out.write(b"\0" * 4096)
            out.flush()


def test_on_a_full_disk_a_failure_still_lands_in_the_space_the_wal_holds(
    small_fs: Path,
) -> None:
    """The state database keeps a small WAL that starts over in its own space.

    With SQLite's default checkpoint (1000 pages) every build here grows the WAL
    by some 60 KiB, and on a full disk nothing more can be written; with
    `WAL_CHECKPOINT_PAGES` the WAL stays small and a failure is still recorded.
    """
    state = StateStore(small_fs / "state.db")
    manager = LeaseManager(state=state, folder=small_fs / "leases")
    spec = _spec("web", "busybox:1.36.1")
    cache_id = state.insert_cache(spec, owner="gitsync", status=CacheStatus.PENDING)
    for attempt in range(30):  # what each failed build writes
        state.set_spec(cache_id, spec, status=CacheStatus.PENDING)
        state.add_event(cache_id, type_="Normal", reason="Creating", message="pulling")
        lease = manager.acquire(purpose="pull")
        lease.hold([f"sha256:{attempt:064x}"])
        lease.release(end_row=False)
        state.record_failure(
            cache_id,
            status=CacheStatus.FAILED,
            reason="DiskFull",
            message="no room",
            lease_id=lease.lease_id,
        )
    wal = (small_fs / "state.db-wal").stat().st_size
    assert wal < 2 * WAL_CHECKPOINT_PAGES * 4096, wal  # not 30 builds' worth (~1.8 MiB)

    state.set_spec(cache_id, spec, status=CacheStatus.PENDING)
    lease = manager.acquire(purpose="pull")
    lease.hold(["sha256:" + "f" * 64])
    _fill_up(small_fs)
    lease.release(end_row=False)
    for message in ("no room", "a message not seen before"):
        assert state.record_failure(
            cache_id,
            status=CacheStatus.FAILED,
            reason="DiskFull",
            message=message,
            lease_id=lease.lease_id,
        )
    cache = state.cache(cache_id)
    assert cache is not None
    assert cache.status is CacheStatus.FAILED
    assert state.leases() == ()
    manager.close()
    state.close()

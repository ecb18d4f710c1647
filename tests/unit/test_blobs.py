"""The blob store: verified atomic writes, per-digest dedupe, and the gc protocol."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from gitsync.providers.local.blobs import (
    BlobNotFoundError,
    BlobStore,
    DigestMismatchError,
    InvalidDigestError,
    LayerInfo,
    SizeMismatchError,
    compute_digest,
    parse_digest,
    temp_lease,
)


class RecordingLease:
    """A lease that records what it holds and can refuse (as a failed transaction would)."""

    def __init__(self, lease_id: str = "0123456789abcdef") -> None:
        self.lease_id = lease_id
        self.held: list[str] = []
        self.refuse = False

    def hold(self, digests: Collection[str]) -> None:
        if self.refuse:
            raise RuntimeError("state database unavailable")
        self.held.extend(digests)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_write_verifies_and_publishes_under_the_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"hello blob" * 1000
    digest = _digest(data)
    with store.writer(digest, size=len(data)) as writer:
        writer.write(data[:5000])
        assert not store.has(digest)  # invisible until committed
        writer.write(data[5000:])
    assert store.has(digest)
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest.split(":")[1]
    assert store.size(digest) == len(data)
    assert store.read_bytes(digest) == data
    with store.open(digest) as fh:
        assert fh.read(5) == b"hello"
    assert list(store.iter_digests()) == [digest]
    assert store.temp_files() == []


def test_wrong_content_is_rejected_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    claimed = _digest(b"the real thing")
    with (
        pytest.raises(DigestMismatchError, match=claimed) as info,
        store.writer(claimed, size=14) as writer,
    ):
        writer.write(b"a fake thing!!")
    assert info.value.actual == _digest(b"a fake thing!!")
    assert not store.has(claimed)
    assert store.temp_files() == []
    assert list(store.iter_digests()) == []


def test_size_overrun_fails_on_the_write_that_passes_it(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = _digest(b"x" * 10)
    with store.writer(digest, size=10) as writer:
        writer.write(b"x" * 8)
        with pytest.raises(SizeMismatchError, match="at least 12 bytes"):
            writer.write(b"x" * 4)
        assert writer.written == 8  # the overrunning chunk was not written
        writer.write(b"x" * 2)
    assert store.has(digest)


def test_short_content_is_a_size_mismatch(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = _digest(b"y" * 10)
    with pytest.raises(SizeMismatchError, match="has 9 bytes"), store.writer(digest, size=10) as w:
        w.write(b"y" * 9)
    assert not store.has(digest)


def test_temp_files_live_next_to_the_blob_and_are_not_digests(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"in progress"
    digest = _digest(data)
    writer = store.writer(digest, size=len(data))
    writer.write(data)
    (temp,) = store.temp_files()
    assert temp.parent == store.path(digest).parent  # same dir: the rename is atomic
    assert list(store.iter_digests()) == []
    writer.abort()
    assert store.temp_files() == []


def test_put_bytes_computes_or_checks_the_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"{}")
    assert digest == compute_digest(b"{}")
    assert store.put_bytes(b"{}", digest=digest) == digest
    with pytest.raises(DigestMismatchError):
        store.put_bytes(b"[]", digest=_digest(b"other"))


def test_missing_blobs_and_bad_digests(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    absent = _digest(b"absent")
    assert not store.has(absent)
    with pytest.raises(BlobNotFoundError, match=absent):
        store.open(absent)
    with pytest.raises(BlobNotFoundError):
        store.size(absent)
    assert store.delete(absent) is False
    for bad in ("sha256:../../etc/passwd", "sha256:ABC", "md5:" + "0" * 32, "sha256:" + "0" * 63):
        with pytest.raises(InvalidDigestError):
            store.path(bad)
    assert parse_digest("sha512:" + "a" * 128) == ("sha512", "a" * 128)


def test_ingest_fetches_a_digest_once_when_workers_race(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(100_000)
    digest = _digest(data)
    calls: list[int] = []
    start = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def fill() -> None:
        calls.append(1)
        time.sleep(0.05)  # hold the per-digest lock while the others arrive
        with store.writer(digest, size=len(data)) as writer:
            writer.write(data)

    def worker() -> None:
        # A second store object on the same root shares the per-digest locks.
        own = BlobStore(tmp_path)
        start.wait()
        fetched = own.ingest(digest, fill)
        with lock:
            results.append(fetched)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(results) == [False] * 7 + [True]
    assert store.read_bytes(digest) == data


def test_ingest_propagates_a_failed_fill_and_a_later_one_can_succeed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"retry me"
    digest = _digest(data)

    def broken() -> None:
        with store.writer(digest, size=len(data)) as writer:
            writer.write(data[:3])
            raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        store.ingest(digest, broken)
    assert not store.has(digest)
    assert store.temp_files() == []

    def good() -> None:
        with store.writer(digest, size=len(data)) as writer:
            writer.write(data)

    assert store.ingest(digest, good) is True


def test_layer_info_round_trip_and_torn_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"layer"
    digest = store.put_bytes(data)
    assert store.layer_info(digest) is None
    info = LayerInfo(diff_id=_digest(b"tar"), expanded_size=1234)
    store.put_layer_info(digest, info)
    assert store.layer_info(digest) == info
    info_file = next((tmp_path / "layers").rglob("*.json"))
    info_file.write_text('{"diff_id": "sha256:')  # torn by a power cut: recomputable
    assert store.layer_info(digest) is None
    store.put_layer_info(digest, info)
    assert store.delete(digest) is True
    assert store.layer_info(digest) is None  # removed with its blob


def test_gc_deletes_only_blobs_not_written_or_claimed_since_the_cutoff(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    old = store.put_bytes(b"old and unused")
    reused = store.put_bytes(b"old but reused by a running pull")
    past = time.time() - 3600
    for digest in (old, reused):
        os.utime(store.path(digest), (past, past))
    cutoff = time.time() - 60  # gc started; a pull started just before it
    assert store.claim(reused) is True  # the running pull reuses this blob
    fresh = store.put_bytes(b"written by the running pull")

    deleted = {d for d in list(store.iter_digests()) if store.delete_if_older(d, cutoff)}
    assert deleted == {old}
    assert store.has(reused)
    assert store.has(fresh)
    assert store.claim(old) is False  # a pull arriving later sees it gone and fetches again


def test_claim_after_gc_unlinked_the_inode_reports_absent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"racing")
    past = time.time() - 3600
    os.utime(store.path(digest), (past, past))
    assert store.delete_if_older(digest, time.time()) is True
    assert store.claim(digest) is False
    assert store.delete_if_older(digest, time.time()) is False


def test_sweep_temp_removes_only_old_leftovers(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"crashed"
    digest = _digest(data)
    stale = store.writer(digest, size=len(data))
    stale.write(b"cra")
    (temp,) = store.temp_files()
    past = time.time() - 7200
    os.utime(temp, (past, past))
    in_progress = store.writer(_digest(b"live"), size=4)
    assert store.sweep_temp(older_than=3600) == 1
    (remaining,) = store.temp_files()
    assert remaining != temp  # the live write is untouched
    in_progress.abort()
    stale.abort()
    assert store.temp_files() == []


def test_a_leased_store_claims_a_digest_before_it_touches_the_file(tmp_path: Path) -> None:
    lease = RecordingLease()
    store = BlobStore(tmp_path).with_lease(lease)
    existing = store.put_bytes(b"already here")
    assert set(lease.held) == {existing}  # (the real lease makes repeated claims no-ops)
    past = time.time() - 3600
    os.utime(store.path(existing), (past, past))
    lease.refuse = True
    # With the claim refused nothing may happen on disk: the claim comes first.
    new = _digest(b"new")
    with pytest.raises(RuntimeError):
        store.writer(new, size=3)
    with pytest.raises(RuntimeError):
        store.put_bytes(b"new")
    with pytest.raises(RuntimeError):
        store.ingest(new, lambda: pytest.fail("fill ran before the claim"))
    with pytest.raises(RuntimeError):
        store.claim(existing)
    assert store.temp_files() == []
    assert not store.has(new)
    assert store.path(existing).stat().st_mtime == past  # not even touched
    lease.refuse = False
    assert store.claim(existing) is True
    with store.writer(new, size=3) as writer:
        (temp,) = store.temp_files()
        assert temp_lease(temp.name) == lease.lease_id  # gc can tell whose write it is
        writer.write(b"new")
    assert set(lease.held) == {existing, new}
    assert BlobStore(tmp_path).lease is None  # the plain store is unchanged


def test_sweep_temp_removes_files_of_ended_leases_at_once(tmp_path: Path) -> None:
    live, dead = RecordingLease("a" * 16), RecordingLease("b" * 16)
    base = BlobStore(tmp_path)
    live_write = base.with_lease(live).writer(_digest(b"live"), size=4)
    dead_write = base.with_lease(dead).writer(_digest(b"dead"), size=4)
    untagged = base.writer(_digest(b"untagged"), size=8)
    dead_write.write(b"de")
    assert len(base.temp_files()) == 3

    assert base.sweep_temp(older_than=3600, live_leases=lambda: {live.lease_id}) == 1
    left = {temp_lease(p.name) for p in base.temp_files()}
    assert left == {live.lease_id, None}  # the live write, and the young untagged one
    assert base.sweep_temp(older_than=3600, live_leases=frozenset) == 1  # now the live one
    (remaining,) = base.temp_files()
    assert temp_lease(remaining.name) is None
    for writer in (live_write, dead_write, untagged):
        writer.abort()  # a writer whose file gc removed aborts cleanly
    assert base.temp_files() == []


# A child process, so that the file size limit binds it and not pytest: past the limit,
# write() fails with EFBIG after a short write, as it fails with ENOSPC on a full disk,
# and the buffered file still holds bytes that its close() cannot flush either.
_FULL_DISK_CHILD = """
import json, resource, sys
from pathlib import Path
from gitsync.providers.local.blobs import BlobStore, LayerInfo

root, limit, lease_id, what = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

class Lease:
    lease_id = lease_id
    def hold(self, digests):
        pass

store = BlobStore(root, fsync=False)
if lease_id:
    store = store.with_lease(Lease())
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
error = None
try:
    if what == "blob":
        data = bytes(range(256)) * 1024
        digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
        with store.writer(digest, size=len(data)) as writer:
            for start in range(0, len(data), 1000):  # small chunks: some stay buffered
                writer.write(data[start : start + 1000])
    else:
        store.put_layer_info("sha256:" + "a" * 64, LayerInfo("sha256:" + "b" * 64, 10))
except OSError as exc:
    error = exc.errno
print(json.dumps({"errno": error, "temp": [p.name for p in store.temp_files()]}))
"""


def _fill_in_child(root: Path, *, limit: int, lease_id: str, what: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(root), str(limit), lease_id, what],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("lease_id", ["", "0123456789abcdef"])
def test_a_write_the_disk_refuses_leaves_no_temporary_file(tmp_path: Path, lease_id: str) -> None:
    """Whatever the lease, the failed write's temporary file is gone when the error arrives.

    On a full disk the space it holds is what the caller needs to record the failure.
    """
    result = _fill_in_child(tmp_path, limit=100_000, lease_id=lease_id, what="blob")
    assert result["errno"] == errno.EFBIG
    assert result["temp"] == []
    assert list(BlobStore(tmp_path).iter_digests()) == []


def test_layer_facts_the_disk_refuses_leave_no_temporary_file(tmp_path: Path) -> None:
    result = _fill_in_child(tmp_path, limit=10, lease_id="0123456789abcdef", what="layer")
    assert result["errno"] == errno.EFBIG
    assert result["temp"] == []
    assert BlobStore(tmp_path).layer_info("sha256:" + "a" * 64) is None

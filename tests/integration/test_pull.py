"""pull_images against a real docker-registry: dedupe, updates, corruption, failures, size limit."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path

import pytest
from oci_images import (
    CountingTransport,
    Fault,
    FaultProxy,
    Pusher,
    RegistryProcess,
    make_layer,
    random_layer,
    small_layer,
    zeros_layer,
)

from gitsync.errors import TemporaryError
from gitsync.imageref import parse
from gitsync.providers.local.blobs import BlobStore, DigestMismatchError
from gitsync.providers.local.oci import Platform
from gitsync.providers.local.pull import (
    LayerVerificationError,
    ProgressKind,
    PullProgress,
    SizeLimitExceededError,
    UnsupportedLayerError,
    pull_images,
)
from gitsync.providers.local.registry import RegistryClient

pytestmark = pytest.mark.registry

Sleep = tuple[list[float], Callable[[float], None]]


def _stored_ok(store: BlobStore) -> None:
    """Every blob in the store hashes to its name, and no temporary file is left."""
    for digest in store.iter_digests():
        algorithm, hexpart = digest.split(":")
        assert hashlib.new(algorithm, store.read_bytes(digest)).hexdigest() == hexpart
    assert store.temp_files() == []


def test_two_images_sharing_a_layer_fetch_and_store_it_once(tmp_path: Path, pusher: Pusher) -> None:
    shared = random_layer(200_000, seed="shared-1")
    repo_a, repo_b = pusher.repo("share-a"), pusher.repo("share-b")
    a = pusher.push_image(repo_a, [shared, small_layer("only-a")])
    b = pusher.push_image(repo_b, [shared, small_layer("only-b")])
    host = pusher.registry.host
    store = BlobStore(tmp_path / "store")
    transport = CountingTransport()
    events: list[PullProgress] = []
    with RegistryClient(transport=transport) as client:
        result = pull_images(
            [parse(f"{host}/{repo_a}:v1"), parse(f"{host}/{repo_b}:v1")],
            client=client,
            store=store,
            on_progress=events.append,
        )
    gets = transport.blob_gets()
    assert gets[shared.digest] == 1
    assert all(count == 1 for count in gets.values())
    layer_sizes = [layer.size for layer in (*a.layers, *b.layers)]
    unique = {layer.digest: layer for layer in (*a.layers, *b.layers)}
    configs = sum(store.size(d) for d in (a.config_digest, b.config_digest))
    assert result.fetched_bytes == sum(layer.size for layer in unique.values()) + configs
    assert result.fetched_bytes < sum(layer_sizes) + configs  # the shared layer counted once
    assert result.reused_bytes == 0
    assert result.content_bytes == sum(layer.expanded_size for layer in unique.values())
    image_a, image_b = result.images
    assert image_a.manifest_digest == a.manifest_digest
    assert image_a.layer_digests == tuple(layer.digest for layer in a.layers)
    assert image_a.diff_ids == tuple(layer.diff_id for layer in a.layers)
    assert image_a.expanded_bytes == sum(layer.expanded_size for layer in a.layers)
    assert image_b.config_digest == b.config_digest
    for digest in result.blob_digests:
        assert store.has(digest)
    assert store.read_bytes(a.manifest_digest) == a.manifest  # exact bytes kept for export
    assert store.layer_info(shared.digest) is not None
    _stored_ok(store)
    # Progress: every unique layer reported done once, totals consistent at the end.
    fetched_layers = [e.digest for e in events if e.kind is ProgressKind.FETCHED]
    assert sorted(set(fetched_layers)) == sorted(fetched_layers)
    last = events[-1]
    assert last.layers_done == last.layers_total == 3
    assert last.bytes_done == last.bytes_total == result.fetched_bytes
    assert last.images_resolved == last.images_total == 2


def test_concurrent_pulls_of_two_caches_fetch_a_shared_layer_once(
    tmp_path: Path, pusher: Pusher
) -> None:
    shared = random_layer(2_000_000, seed="shared-concurrent")
    repo_a, repo_b = pusher.repo("conc-a"), pusher.repo("conc-b")
    pusher.push_image(repo_a, [shared])
    pusher.push_image(repo_b, [shared, small_layer("conc-b")])
    host = pusher.registry.host
    store = BlobStore(tmp_path / "store")
    transport = CountingTransport()
    results = {}
    barrier = threading.Barrier(2)
    with RegistryClient(transport=transport) as client:

        def run(name: str, repo: str) -> None:
            barrier.wait()
            results[name] = pull_images([parse(f"{host}/{repo}:v1")], client=client, store=store)

        threads = [
            threading.Thread(target=run, args=(n, r)) for n, r in (("a", repo_a), ("b", repo_b))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert transport.blob_gets()[shared.digest] == 1
    total_fetched = results["a"].fetched_bytes + results["b"].fetched_bytes
    total_reused = results["a"].reused_bytes + results["b"].reused_bytes
    assert shared.size <= total_fetched < 2 * shared.size
    assert total_reused >= shared.size  # one of the two pulls waited and reused it
    _stored_ok(store)


def test_second_pull_with_one_new_layer_fetches_only_that_layer(
    tmp_path: Path, pusher: Pusher
) -> None:
    base = [random_layer(100_000, seed="upd-1"), random_layer(100_000, seed="upd-2")]
    new = small_layer("upd-new")
    repo = pusher.repo("update")
    first = pusher.push_image(repo, base, tag="v1")
    second = pusher.push_image(repo, [*base, new], tag="v2")
    host = pusher.registry.host
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        pull_images([parse(f"{host}/{repo}:v1")], client=client, store=store)
    transport = CountingTransport()
    with RegistryClient(transport=transport) as client:
        result = pull_images(
            [parse(f"{host}/{repo}:v1"), parse(f"{host}/{repo}:v2")], client=client, store=store
        )
    assert set(transport.blob_gets()) == {new.digest, second.config_digest}
    assert result.fetched_bytes == new.size + store.size(second.config_digest)
    assert result.reused_bytes == sum(layer.size for layer in base) + store.size(
        first.config_digest
    )
    assert [image.manifest_digest for image in result.images] == [
        first.manifest_digest,
        second.manifest_digest,
    ]
    _stored_ok(store)


def test_pull_by_digest_after_the_first_pull_needs_no_network(
    tmp_path: Path, pusher: Pusher
) -> None:
    repo = pusher.repo("offline")
    image = pusher.push_image(repo, [small_layer("off")])
    ref = parse(f"{pusher.registry.host}/{repo}@{image.manifest_digest}")
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        first = pull_images([ref], client=client, store=store)
    transport = CountingTransport()
    with RegistryClient(transport=transport) as client:
        again = pull_images([ref], client=client, store=store)
    assert transport.requests == []
    assert again.images == first.images
    assert again.fetched_bytes == 0


def test_multi_arch_pull_keeps_index_and_picks_platform(tmp_path: Path, pusher: Pusher) -> None:
    repo = pusher.repo("pull-multi")
    index_digest, built = pusher.push_index(
        repo,
        [("linux/amd64", [small_layer("pm-amd")]), ("linux/arm64/v8", [small_layer("pm-arm")])],
    )
    ref = parse(f"{pusher.registry.host}/{repo}:v1")
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        amd = pull_images([ref], client=client, store=store).images[0]
        arm = pull_images(
            [ref], client=client, store=store, platform=Platform.parse("linux/arm64")
        ).images[0]
    assert amd.index_digest == arm.index_digest == index_digest
    assert amd.manifest_digest == built["linux/amd64"].manifest_digest
    assert arm.manifest_digest == built["linux/arm64/v8"].manifest_digest
    assert arm.layer_digests == (built["linux/arm64/v8"].layers[0].digest,)
    assert store.has(index_digest)


def test_corrupt_blob_is_rejected_and_nothing_is_stored(
    tmp_path: Path, pusher: Pusher, registry: RegistryProcess
) -> None:
    good = small_layer("corrupt-good")
    victim = random_layer(50_000, seed="corrupt-victim")
    repo = pusher.repo("corrupt")
    pusher.push_image(repo, [good, victim])
    data = bytearray(registry.blob_data_path(victim.digest).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    registry.blob_data_path(victim.digest).write_bytes(bytes(data))
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client, pytest.raises(DigestMismatchError) as info:
        pull_images([parse(f"{registry.host}/{repo}:v1")], client=client, store=store)
    assert victim.digest in str(info.value)
    assert not store.has(victim.digest)
    _stored_ok(store)


def test_config_whose_diff_id_does_not_match_the_layer(tmp_path: Path, pusher: Pusher) -> None:
    real = small_layer("diffid-real")
    liar = type(real)(real.blob, real.media_type, "sha256:" + "0" * 64, real.expanded_size)
    repo = pusher.repo("diffid")
    pusher.push_image(repo, [liar])
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client, pytest.raises(LayerVerificationError) as info:
        pull_images([parse(f"{pusher.registry.host}/{repo}:v1")], client=client, store=store)
    assert real.digest in str(info.value)
    assert real.diff_id in str(info.value)
    assert not store.has(real.digest)
    _stored_ok(store)


def test_uncompressed_and_zstd_layers(tmp_path: Path, pusher: Pusher) -> None:
    pytest.importorskip("zstandard")
    tar = make_layer({"plain.txt": b"plain tar layer\n"}, compression="none")
    zstd = make_layer({"z.bin": b"z" * 300_000}, compression="zstd")
    repo = pusher.repo("compressions")
    pusher.push_image(repo, [tar, zstd])
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        result = pull_images(
            [parse(f"{pusher.registry.host}/{repo}:v1")], client=client, store=store
        )
    assert result.images[0].diff_ids == (tar.diff_id, zstd.diff_id)
    assert result.content_bytes == tar.expanded_size + zstd.expanded_size
    assert store.layer_info(zstd.digest) is not None


def test_zstd_layer_without_the_module_is_a_clear_error(
    tmp_path: Path, pusher: Pusher, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("zstandard")  # needed to build the layer
    zstd = make_layer({"z.bin": b"zz" * 1000}, compression="zstd")
    repo = pusher.repo("nozstd")
    pusher.push_image(repo, [zstd])
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import now fails
    transport = CountingTransport()
    store = BlobStore(tmp_path / "store")
    with (
        RegistryClient(transport=transport) as client,
        pytest.raises(UnsupportedLayerError, match=r"zstd.*install the 'zstandard'"),
    ):
        pull_images([parse(f"{pusher.registry.host}/{repo}:v1")], client=client, store=store)
    assert zstd.digest not in transport.blob_gets()  # refused before downloading


def test_size_limit_stops_a_compressible_layer_early(tmp_path: Path, pusher: Pusher) -> None:
    bomb = zeros_layer(64 * 1024 * 1024)
    assert bomb.size < 200 * 1024  # 64 MiB of zeros travel as ~64 KiB
    other = random_layer(3_000_000, seed="limit-other")
    repo = pusher.repo("limit")
    pusher.push_image(repo, [bomb, other])
    store = BlobStore(tmp_path / "store")
    limit = 16 * 1024 * 1024
    with RegistryClient() as client, pytest.raises(SizeLimitExceededError) as info:
        pull_images(
            [parse(f"{pusher.registry.host}/{repo}:v1")],
            client=client,
            store=store,
            limit_bytes=limit,
            max_workers=2,
        )
    error = info.value
    assert error.limit_bytes == limit
    assert limit < error.needed_bytes <= limit + 2 * 1024 * 1024  # stopped within a buffer
    assert str(limit) in str(error)
    assert str(error.needed_bytes) in str(error)
    assert not store.has(bomb.digest)
    stored = sum(p.stat().st_size for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert stored < 4 * 1024 * 1024  # nothing expanded was written
    _stored_ok(store)


def test_size_limit_counts_layers_already_in_the_store(tmp_path: Path, pusher: Pusher) -> None:
    layer = make_layer({"ten.bin": 10 * 1024 * 1024}, level=9)
    repo = pusher.repo("limit-reuse")
    pusher.push_image(repo, [layer])
    ref = parse(f"{pusher.registry.host}/{repo}:v1")
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        pull_images([ref], client=client, store=store)
        with pytest.raises(SizeLimitExceededError):
            pull_images([ref], client=client, store=store, limit_bytes=5 * 1024 * 1024)


def test_connection_cut_mid_body_is_retried_from_scratch(
    tmp_path: Path, pusher: Pusher, no_sleep: Sleep
) -> None:
    layer = random_layer(300_000, seed="cut-once")
    repo = pusher.repo("cut-once")
    pusher.push_image(repo, [layer])
    store = BlobStore(tmp_path / "store")
    delays, sleep = no_sleep
    with FaultProxy(pusher.registry.host) as proxy:
        proxy.faults.append(Fault(layer.digest, cut_after=100_000, times=1))
        with RegistryClient(sleep=sleep) as client:
            result = pull_images([parse(f"{proxy.host}/{repo}:v1")], client=client, store=store)
        assert proxy.hits[f"/v2/{repo}/blobs/{layer.digest}"] == 2
    assert result.fetched_bytes >= layer.size
    assert store.has(layer.digest)
    assert len(delays) == 1
    _stored_ok(store)


def test_connection_cut_every_time_gives_up_without_a_partial_blob(
    tmp_path: Path, pusher: Pusher, no_sleep: Sleep
) -> None:
    layer = random_layer(300_000, seed="cut-always")
    repo = pusher.repo("cut-always")
    pusher.push_image(repo, [layer])
    store = BlobStore(tmp_path / "store")
    _, sleep = no_sleep
    with FaultProxy(pusher.registry.host) as proxy:
        proxy.faults.append(Fault(layer.digest, cut_after=100_000, times=None))
        with (
            RegistryClient(sleep=sleep, max_attempts=3) as client,
            pytest.raises(TemporaryError, match=rf"{layer.digest}.*3 attempts"),
        ):
            pull_images([parse(f"{proxy.host}/{repo}:v1")], client=client, store=store)
        assert proxy.hits[f"/v2/{repo}/blobs/{layer.digest}"] == 3
    assert not store.has(layer.digest)
    _stored_ok(store)


def test_registry_that_dies_mid_pull(
    tmp_path: Path, pusher: Pusher, registry_storage: Path, no_sleep: Sleep
) -> None:
    first, second = random_layer(4_000_000, seed="die-1"), random_layer(100_000, seed="die-2")
    repo = pusher.repo("dies")
    pusher.push_image(repo, [first, second])
    doomed = RegistryProcess(storage=registry_storage, workdir=tmp_path / "doomed").start()
    store = BlobStore(tmp_path / "store")
    _, sleep = no_sleep

    def kill_on_first_layer_bytes(event: PullProgress) -> None:
        if event.kind is ProgressKind.STARTED and event.digest == first.digest:
            doomed.kill()

    try:
        with (
            RegistryClient(sleep=sleep, max_attempts=3) as client,
            pytest.raises(TemporaryError) as info,
        ):
            pull_images(
                [parse(f"{doomed.host}/{repo}:v1")],
                client=client,
                store=store,
                max_workers=1,
                on_progress=kill_on_first_layer_bytes,
            )
    finally:
        doomed.stop()
    assert doomed.host in str(info.value)
    assert not store.has(second.digest)
    _stored_ok(store)


def test_one_image_by_tag_and_by_digest_is_fetched_once(tmp_path: Path, pusher: Pusher) -> None:
    repo = pusher.repo("twice")
    image = pusher.push_image(repo, [random_layer(50_000, seed="twice")])
    host = pusher.registry.host
    refs = [parse(f"{host}/{repo}:v1"), parse(f"{host}/{repo}@{image.manifest_digest}")]
    transport = CountingTransport()
    events: list[PullProgress] = []
    store = BlobStore(tmp_path / "store")
    with RegistryClient(transport=transport) as client:
        result = pull_images(
            [*refs, refs[0]], client=client, store=store, on_progress=events.append
        )
    assert [i.reference for i in result.images] == refs  # duplicates folded, order kept
    assert {i.manifest_digest for i in result.images} == {image.manifest_digest}
    assert all(count == 1 for count in transport.blob_gets().values())
    assert result.fetched_bytes == image.layers[0].size + store.size(image.config_digest)
    assert events[-1].bytes_done == events[-1].bytes_total == result.fetched_bytes


class CheckingLease:
    """A lease that fails the pull if a digest it is asked to hold was touched already.

    "Touched" means: a temporary file for it exists, or the blob exists though it
    was not in the store before the pull (written before it was claimed).
    """

    lease_id = "feedfacefeedface"

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.before = set(store.iter_digests())
        self.held: set[str] = set()
        self.late: list[str] = []
        self._lock = threading.Lock()

    def hold(self, digests: Collection[str]) -> None:
        with self._lock:
            temps = {p.name for p in self.store.temp_files()}
            for digest in set(digests) - self.held:
                hexpart = digest.split(":")[1]
                written = self.store.has(digest) and digest not in self.before
                if written or any(name.startswith(f".tmp-{hexpart}") for name in temps):
                    self.late.append(digest)
                self.held.add(digest)


def test_a_leased_pull_claims_every_blob_before_writing_or_reusing_it(
    tmp_path: Path, pusher: Pusher
) -> None:
    reused = random_layer(300_000, seed="lease-reused")
    repo_old, repo_new = pusher.repo("lease-old"), pusher.repo("lease-new")
    pusher.push_image(repo_old, [reused])
    pusher.push_image(repo_new, [reused, random_layer(300_000, seed="lease-new"), small_layer("n")])
    host = pusher.registry.host
    store = BlobStore(tmp_path / "store")
    with RegistryClient() as client:
        pull_images([parse(f"{host}/{repo_old}:v1")], client=client, store=store)
        lease = CheckingLease(store)
        result = pull_images(
            [parse(f"{host}/{repo_new}:v1")], client=client, store=store.with_lease(lease)
        )
    assert reused.digest in lease.before  # one blob was reused, the others written
    assert set(result.blob_digests) <= lease.held
    assert lease.late == []
    _stored_ok(store)

"""Snapshots are checked on the local backend: damage under a Ready cache is found and repaired.

Real files, Debian's docker-registry, skopeo-pushed images: a blob of a Ready
cache is truncated, deleted, or (for the scrub) has a byte flipped; the
manifest blob is deleted. Each time the cache must leave Ready with a
`SnapshotDamaged` event naming the image and the blob, the damaged file must be
moved aside, and the rebuild must fetch that blob and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from oci_images import Pusher, random_layer, small_layer
from waiting import wait_until

from gitsync.model import CacheSpec, CacheStatus, ObservedCache, SnapshotCheck
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.scrub import Scrubber
from gitsync.providers.local.state import SCRUB_AFTER_KEY

MIB = 1024 * 1024


class CountingClients:
    """A RegistryClient factory whose clients count the blob and manifest GETs they send."""

    def __init__(self) -> None:
        self.blob_gets: list[str] = []
        self.manifest_gets: list[str] = []

    def __call__(self, **kwargs: object) -> RegistryClient:
        def record(request: httpx.Request) -> None:
            if request.method != "GET":
                return
            last = request.url.path.rsplit("/", 1)[-1]
            if "/blobs/" in request.url.path:
                self.blob_gets.append(last)
            elif "/manifests/" in request.url.path:
                self.manifest_gets.append(last)

        client = RegistryClient(transport=httpx.HTTPTransport(), **kwargs)  # type: ignore[arg-type]
        client.session.http.event_hooks["request"].append(record)
        return client

    def clear(self) -> None:
        self.blob_gets.clear()
        self.manifest_gets.clear()


def _spec(name: str, image: str) -> CacheSpec:
    return CacheSpec(name=name, images=(image,), image_cache_size_gib=20, retention_days=0)


@pytest.fixture
def built(pusher: Pusher, tmp_path: Path) -> Iterator[tuple[LocalProvider, CountingClients, str]]:
    """A Ready cache "web" of a two-layer image, and the image reference."""
    repo = pusher.repo("damage")
    pusher.push_image(repo, [random_layer(MIB, seed=f"damage-{repo}"), small_layer(repo)])
    image = f"{pusher.registry.host}/{repo}:v1"
    clients = CountingClients()
    local = LocalProvider(data_dir=tmp_path / "data", client_factory=clients)
    cache = local.create(_spec("web", image), owner="gitsync")
    assert cache.status is CacheStatus.READY
    clients.clear()
    yield local, clients, image
    local.close()


def _record(local: LocalProvider, cache: ObservedCache) -> dict[str, object]:
    snapshot = local.state.snapshot(cache.snapshot_id or "")
    assert snapshot is not None
    return snapshot.images[0]


def _only(local: LocalProvider) -> ObservedCache:
    (cache,) = local.observe().caches
    return cache


def _assert_reported(local: LocalProvider, cache: ObservedCache, digest: str, image: str) -> None:
    assert cache.status is CacheStatus.FAILED
    assert cache.snapshot_problem is not None
    assert digest in cache.snapshot_problem
    assert image in cache.snapshot_problem
    events = [e for e in cache.events if e.reason == "SnapshotDamaged"]
    assert len(events) == 1
    assert events[0].type == "Warning"
    assert digest in events[0].message
    assert image in events[0].message
    assert not local.blobs.has(digest)  # moved aside or gone: never served


def _repair(local: LocalProvider, cache: ObservedCache, image: str) -> ObservedCache:
    # What the planner's RECREATE does with the local provider: update in place.
    repaired = local.update(_spec("web", image), cache)
    assert repaired.status is CacheStatus.READY
    assert repaired.snapshot_problem is None
    again = _only(local)
    assert again.status is CacheStatus.READY
    return again


def test_a_truncated_layer_is_found_by_the_next_observe_and_only_it_is_fetched_again(
    built: tuple[LocalProvider, CountingClients, str],
) -> None:
    local, clients, image = built
    cache = _only(local)
    layer = str(_record(local, cache)["layers"][0])  # type: ignore[index]
    path = local.blobs.path(layer)
    original = path.read_bytes()
    with path.open("r+b") as fh:
        fh.truncate(len(original) // 2)

    damaged = _only(local)

    _assert_reported(local, damaged, layer, image)
    assert "bytes, not the" in (damaged.snapshot_problem or "")
    quarantined = list((local.data_dir / "store" / "quarantine").iterdir())
    assert [p.name.rsplit("-", 1)[0] for p in quarantined] == [layer.replace(":", "-")]
    assert local.observe().snapshot_checks is not None
    assert local.observe().snapshot_checks.get(SnapshotCheck.DAMAGED) == 1  # type: ignore[union-attr]

    _repair(local, damaged, image)

    assert clients.blob_gets == [layer]
    assert local.blobs.read_bytes(layer) == original


def test_a_deleted_layer_is_missing_and_only_it_is_fetched_again(
    built: tuple[LocalProvider, CountingClients, str],
) -> None:
    local, clients, image = built
    cache = _only(local)
    layer = str(_record(local, cache)["layers"][1])  # type: ignore[index]
    local.blobs.path(layer).unlink()

    damaged = _only(local)

    _assert_reported(local, damaged, layer, image)
    assert "is missing from the store" in (damaged.snapshot_problem or "")
    checks = local.observe().snapshot_checks
    assert checks is not None
    assert checks.get(SnapshotCheck.MISSING) == 1
    assert checks.get(SnapshotCheck.OK) >= 1  # the observe before the deletion

    _repair(local, damaged, image)
    assert clients.blob_gets == [layer]


def test_a_deleted_manifest_is_missing_and_only_it_is_fetched_again(
    built: tuple[LocalProvider, CountingClients, str],
) -> None:
    local, clients, image = built
    cache = _only(local)
    manifest = str(_record(local, cache)["manifestDigest"])
    local.blobs.path(manifest).unlink()

    damaged = _only(local)

    _assert_reported(local, damaged, manifest, image)
    _repair(local, damaged, image)
    assert clients.blob_gets == []  # config and layers were still there
    assert local.blobs.has(manifest)


def test_a_read_only_status_reports_the_damage_without_moving_anything(
    built: tuple[LocalProvider, CountingClients, str],
) -> None:
    local, _, _ = built
    cache = _only(local)
    layer = str(_record(local, cache)["layers"][0])  # type: ignore[index]
    with local.blobs.path(layer).open("r+b") as fh:
        fh.truncate(10)

    reader = LocalProvider(data_dir=local.data_dir, writable=False)
    (seen,) = reader.observe().caches
    reader.close()

    assert seen.status is CacheStatus.FAILED
    assert layer in (seen.snapshot_problem or "")
    assert local.blobs.has(layer)  # only a writable instance moves it aside
    assert _only(local).status is CacheStatus.FAILED


def _gitsync(*args: str, data: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    env["GITSYNC_DATA_DIR"] = str(data)
    done = subprocess.run(
        [sys.executable, "-m", "gitsync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert "Traceback" not in done.stderr
    return done


def test_cli_apply_finds_a_deleted_blob_and_rebuilds_so_export_works(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("damage-cli")
    pusher.push_image(repo, [small_layer(repo)])
    image = f"{pusher.registry.host}/{repo}:v1"
    tree = tmp_path / "repo"
    tree.mkdir()
    (tree / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
        f"spec:\n  images: [{image}]\n"
    )
    data = tmp_path / "data"
    first = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with contextlib.closing(sqlite3.connect(data / "state.db")) as db:
        (layer,) = [
            d
            for (d,) in db.execute("SELECT digest FROM snapshot_blobs")
            if d
            in json.loads(db.execute("SELECT images FROM snapshots").fetchone()[0])[0]["layers"]
        ]
    (data / "store" / "blobs" / "sha256" / layer.split(":")[1]).unlink()

    status = _gitsync("status", "--format", "json", data=data, cwd=tmp_path)
    (seen,) = json.loads(status.stdout)["caches"]
    assert seen["status"] == "Failed"

    second = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert layer in second.stdout + second.stderr  # the plan says why it rebuilds

    status = _gitsync("status", "--format", "json", data=data, cwd=tmp_path)
    (seen,) = json.loads(status.stdout)["caches"]
    assert seen["status"] == "Ready"
    exported = _gitsync(
        "export", "web", "--dest", f"oci:{tmp_path / 'out'}", data=data, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "blobs" / "sha256" / layer.split(":")[1]).is_file()


# -- the scrub ----------------------------------------------------------------------------


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def test_a_flipped_byte_is_found_by_the_scrub_and_only_that_blob_is_fetched_again(
    built: tuple[LocalProvider, CountingClients, str],
) -> None:
    local, clients, image = built
    cache = _only(local)
    layer = str(_record(local, cache)["layers"][0])  # type: ignore[index]
    original = local.blobs.read_bytes(layer)
    _flip_byte(local.blobs.path(layer), len(original) // 2)
    assert _only(local).status is CacheStatus.READY  # same size: the stat cannot tell

    counted: list[int] = []
    done = Scrubber(local, rate_bytes=64 * MIB, on_bytes=counted.append).scrub()

    assert done.finished
    assert done.damaged == (layer,)
    assert sum(counted) == done.bytes > len(original)
    damaged = _only(local)
    _assert_reported(local, damaged, layer, image)
    assert "does not match its digest" in (damaged.snapshot_problem or "")
    _repair(local, damaged, image)
    assert clients.blob_gets == [layer]
    assert local.blobs.read_bytes(layer) == original


_SCRUB_SCRIPT = """
import sys
from pathlib import Path
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.scrub import Scrubber
provider = LocalProvider(data_dir=Path(sys.argv[1]))
Scrubber(provider, rate_bytes=int(sys.argv[2]), chunk_bytes=16384).scrub()
"""


def _meta(data: Path, key: str) -> str | None:
    with contextlib.closing(sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def test_a_scrub_killed_part_way_carries_on_after_the_last_blob_it_recorded(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("scrub-kill")
    layers = [random_layer(256 * 1024, seed=f"{repo}-{n}") for n in range(4)]
    pusher.push_image(repo, layers)
    data = tmp_path / "data"
    local = LocalProvider(data_dir=data)
    try:
        cache = local.create(_spec("web", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
        served = sorted(d for d, _ in local.state.ready_blobs_after("", limit=100))
        last = served[-1]
        _flip_byte(local.blobs.path(last), 7)  # the scrub reaches it last, after the kill
        worker = subprocess.Popen(
            [sys.executable, "-c", _SCRUB_SCRIPT, str(data), str(256 * 1024)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            recorded = wait_until(
                lambda: _meta(data, SCRUB_AFTER_KEY),
                timeout=60,
                what="the scrub to record its first blob",
            )
        finally:
            worker.kill()
            _, err = worker.communicate(timeout=30)
        assert "Traceback" not in err
        assert recorded in served
        assert recorded != last  # killed part-way (at 256 KiB/s it takes seconds)
        assert _meta(data, SCRUB_AFTER_KEY) == recorded  # a kill -9 keeps the position

        seen: list[str] = []
        done = Scrubber(local, rate_bytes=64 * MIB).scrub(on_blob=seen.append)

        assert done.finished
        assert seen == [d for d in served if d > recorded]  # carried on, lost nothing
        assert done.damaged == (last,)
        (after,) = local.observe().caches
        assert after.cache_id == cache.cache_id
        assert after.status is CacheStatus.FAILED
        assert _meta(data, SCRUB_AFTER_KEY) == ""
        assert Scrubber(local, interval_seconds=3600).due_in() > 3500  # done: next in a day
    finally:
        local.close()

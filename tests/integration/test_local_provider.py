"""The local backend end to end against Debian's docker-registry: caches, snapshots, events, gc.

Images are built in Python and pushed with skopeo (see oci_images.py). Each
test uses repositories no other test uses, and its own data dir.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    Pusher,
    RegistryProcess,
    random_layer,
    small_layer,
    zeros_layer,
)
from waiting import wait_until

from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.registry import RegistryClient

MIB = 1024 * 1024


class CountingClients:
    """A RegistryClient factory whose clients count the blob GETs they send."""

    def __init__(self) -> None:
        self.blob_gets: list[str] = []

    def __call__(self, **kwargs: object) -> RegistryClient:
        def record(request: httpx.Request) -> None:
            if request.method == "GET" and "/blobs/" in request.url.path:
                self.blob_gets.append(request.url.path.rsplit("/", 1)[-1])

        transport = httpx.HTTPTransport()
        client = RegistryClient(transport=transport, **kwargs)  # type: ignore[arg-type]
        client._http.event_hooks["request"].append(record)  # a probe on the client's pool
        return client


def provider(data: Path, **kwargs: object) -> LocalProvider:
    return LocalProvider(data_dir=data, **kwargs)  # type: ignore[arg-type]


def spec(name: str, *images: str, size: int = 20, retention: int = 0, **kw: object) -> CacheSpec:
    return CacheSpec(
        name=name,
        images=images,
        image_cache_size_gib=size,
        retention_days=retention,
        **kw,  # type: ignore[arg-type]
    )


def test_two_caches_sharing_a_layer_fetch_and_store_it_once(pusher: Pusher, tmp_path: Path) -> None:
    shared = random_layer(2 * MIB, seed="shared-base")
    repo_a, repo_b = pusher.repo("app-a"), pusher.repo("app-b")
    image_a = pusher.push_image(repo_a, [shared, small_layer("a")])
    pusher.push_image(repo_b, [shared, small_layer("b")])
    host = pusher.registry.host
    clients = CountingClients()
    local = provider(tmp_path / "data", client_factory=clients)

    first = local.create(spec("a", f"{host}/{repo_a}:v1"), owner="gitsync")
    second = local.create(spec("b", f"{host}/{repo_b}:v1"), owner="gitsync")

    assert first.status is CacheStatus.READY
    assert second.status is CacheStatus.READY
    assert first.snapshot_id
    assert second.snapshot_id
    assert clients.blob_gets.count(shared.digest) == 1
    assert local.blobs.has(shared.digest)
    assert first.content_bytes == sum(layer.expanded_size for layer in image_a.layers)
    created = [e for e in first.events if e.reason == "Created"]
    assert created
    assert created[0].type == "Normal"
    snapshot = local.state.snapshot(first.snapshot_id)
    assert snapshot is not None
    assert snapshot.images[0]["manifestDigest"] == image_a.manifest_digest
    local.close()


def test_an_update_fetches_only_the_new_layers_and_old_snapshot_serves(
    pusher: Pusher, tmp_path: Path
) -> None:
    base = random_layer(MIB, seed="update-base")
    extra = random_layer(MIB, seed="update-extra")
    repo_1, repo_2 = pusher.repo("upd-one"), pusher.repo("upd-two")
    pusher.push_image(repo_1, [base])
    pusher.push_image(repo_2, [base, extra])
    host = pusher.registry.host
    clients = CountingClients()
    local = provider(tmp_path / "data", client_factory=clients)
    cache = local.create(spec("web", f"{host}/{repo_1}:v1"), owner="gitsync")
    old_snapshot = cache.snapshot_id
    clients.blob_gets.clear()

    updated = local.update(spec("web", f"{host}/{repo_1}:v1", f"{host}/{repo_2}:v1"), cache)

    assert updated.status is CacheStatus.READY
    assert updated.cache_id == cache.cache_id
    assert updated.snapshot_id != old_snapshot
    layer_gets = [d for d in clients.blob_gets if d in (base.digest, extra.digest)]
    assert layer_gets == [extra.digest]
    assert local.state.snapshot(old_snapshot or "") is None  # replaced, not leaked
    assert [e.reason for e in updated.events].count("Updated") == 1
    local.close()


def test_a_failed_update_keeps_the_old_snapshot_serving(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("keep-serving")
    pusher.push_image(repo, [small_layer("keep")])
    host = pusher.registry.host
    local = provider(tmp_path / "data")
    cache = local.create(spec("web", f"{host}/{repo}:v1"), owner="gitsync")
    with pytest.raises(PermanentError):
        local.update(spec("web", f"{host}/{repo}:missing-tag"), cache)
    (after,) = local.observe().caches
    assert after.status is CacheStatus.UPDATE_FAILED
    assert after.snapshot_id == cache.snapshot_id
    warning = [e for e in after.events if e.type == "Warning"]
    assert warning[-1].reason == "ImageNotFound"
    assert "missing-tag" in warning[-1].message
    local.close()


def test_the_size_limit_fails_the_cache_with_what_it_needs(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("too-big")
    pusher.push_image(repo, [zeros_layer(64 * MIB)])  # ~64 KiB on the wire
    local = provider(tmp_path / "data", gib_bytes=MIB)  # imageCacheSize 20 → 20 MiB here
    with pytest.raises(PermanentError):
        local.create(spec("big", f"{pusher.registry.host}/{repo}:v1", size=20), owner="gitsync")
    (cache,) = local.observe().caches
    assert cache.status is CacheStatus.FAILED
    assert cache.snapshot_id is None
    event = next(e for e in cache.events if e.type == "Warning")
    assert event.reason == "SizeLimitExceeded"
    assert "20" in event.message
    local.close()


def test_a_corrupt_blob_is_rejected_with_a_warning_naming_it(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("corrupt")
    layer = random_layer(256 * 1024, seed="to-corrupt")
    pusher.push_image(repo, [layer])
    data_path = pusher.registry.blob_data_path(layer.digest)
    original = data_path.read_bytes()
    data_path.write_bytes(original[:-16] + bytes(16))  # same size, wrong content
    try:
        local = provider(tmp_path / "data")
        with pytest.raises(PermanentError):
            local.create(spec("bad", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
        (cache,) = local.observe().caches
        assert cache.status is CacheStatus.FAILED
        assert cache.snapshot_id is None
        event = next(e for e in cache.events if e.type == "Warning")
        assert event.reason == "DigestMismatch"
        assert layer.digest in event.message
        assert not local.blobs.has(layer.digest)
        local.close()
    finally:
        data_path.write_bytes(original)


def test_basic_auth_through_a_dockerconfigjson_secret(
    pusher: Pusher, basic_registry: RegistryProcess, tmp_path: Path
) -> None:
    repo = pusher.repo("private")
    pusher.push_image(repo, [small_layer("private")])  # same storage as basic_registry
    secrets = tmp_path / "secrets"
    (secrets / "team").mkdir(parents=True)
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    config = {"auths": {basic_registry.host: {"auth": auth}}}
    (secrets / "team/regcred.yaml").write_text(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\n"
        "metadata: {name: regcred, namespace: team}\n"
        f"data:\n  .dockerconfigjson: {base64.b64encode(json.dumps(config).encode()).decode()}\n"
    )
    image = f"{basic_registry.host}/{repo}:v1"
    without = provider(tmp_path / "no-secret")
    with pytest.raises(PermanentError):
        without.create(spec("p", image), owner="gitsync")
    (failed,) = without.observe().caches
    assert [e.reason for e in failed.events if e.type == "Warning"] == ["AuthFailed"]
    without.close()

    local = provider(tmp_path / "data", secrets_dir=secrets)
    cache = local.create(spec("p", image, image_pull_secrets=("team/regcred",)), owner="gitsync")
    assert cache.status is CacheStatus.READY
    status = json.dumps([e.message for e in cache.events])
    assert BASIC_PASSWORD not in status
    local.close()


def test_a_missing_pull_secret_is_a_warning_and_public_images_still_build(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("public")
    pusher.push_image(repo, [small_layer("public")])
    local = provider(tmp_path / "data", secrets_dir=tmp_path / "empty")
    cache = local.create(
        spec("p", f"{pusher.registry.host}/{repo}:v1", image_pull_secrets=("ns/absent",)),
        owner="gitsync",
    )
    assert cache.status is CacheStatus.READY
    warning = next(e for e in cache.events if e.type == "Warning")
    assert warning.reason == "PullSecretNotFound"
    assert "ns/absent" in warning.message
    local.close()


def test_an_unreachable_registry_fails_one_cache_and_not_the_others(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("healthy")
    pusher.push_image(repo, [small_layer("healthy")])
    local = provider(tmp_path / "data")
    with pytest.raises(TemporaryError):
        local.create(spec("gone", "127.0.0.1:9/nothing/here:v1"), owner="gitsync")
    ok = local.create(spec("ok", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
    assert ok.status is CacheStatus.READY
    gone = next(c for c in local.observe().caches if c.name == "gone")
    assert gone.status is CacheStatus.FAILED
    assert [e.reason for e in gone.events if e.type == "Warning"] == ["RegistryUnavailable"]
    local.close()


def test_create_is_idempotent_by_name_and_owner(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("idem")
    pusher.push_image(repo, [small_layer("idem")])
    local = provider(tmp_path / "data")
    first = local.create(spec("web", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
    again = local.create(spec("web", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
    assert again.cache_id == first.cache_id
    assert len(local.observe().caches) == 1
    local.close()


def test_interrupted_builds_are_reported_failed_on_the_next_start(
    pusher: Pusher, tmp_path: Path
) -> None:
    local = provider(tmp_path / "data")
    local.state.insert_cache(
        spec("web", "busybox:1.36.1"), owner="gitsync", status=CacheStatus.PENDING
    )
    local.close()
    reader = provider(tmp_path / "data", writable=False)
    assert reader.observe().caches[0].status is CacheStatus.PENDING  # readers change nothing
    reader.close()
    writer = provider(tmp_path / "data")
    (cache,) = writer.observe().caches
    assert cache.status is CacheStatus.FAILED
    assert cache.events[-1].reason == "Interrupted"
    writer.close()


def test_expired_caches_are_deleted_and_their_successor_says_why(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("expiring")
    pusher.push_image(repo, [small_layer("expiring")])
    image = f"{pusher.registry.host}/{repo}:v1"
    local = provider(tmp_path / "data")
    cache = local.create(spec("web", image, retention=1), owner="gitsync")
    assert cache.expires_at is not None
    # Retention counts from the snapshot (when the cache became usable), not the first row.
    lifetime = cache.expires_at - cache.created_at  # type: ignore[operator]
    assert timedelta(days=1) <= lifetime <= timedelta(days=1, minutes=1)
    local.close()
    later = (datetime.now(UTC) + timedelta(days=2)).timestamp()
    future = provider(tmp_path / "data", clock=lambda: later)
    assert future.observe().caches == ()
    successor = future.create(spec("web", image, retention=1), owner="gitsync")
    recreated = next(e for e in successor.events if e.reason == "Recreated")
    assert cache.cache_id in recreated.message
    future.close()


def test_gc_removes_only_blobs_no_snapshot_references(pusher: Pusher, tmp_path: Path) -> None:
    shared = small_layer("gc-shared")
    only_b = random_layer(512 * 1024, seed="gc-only-b")
    repo_a, repo_b = pusher.repo("gc-a"), pusher.repo("gc-b")
    pusher.push_image(repo_a, [shared])
    image_b = pusher.push_image(repo_b, [shared, only_b])
    host = pusher.registry.host
    local = provider(tmp_path / "data")
    local.create(spec("a", f"{host}/{repo_a}:v1"), owner="gitsync")
    b = local.create(spec("b", f"{host}/{repo_b}:v1"), owner="gitsync")

    assert local.gc(grace_seconds=0).removed_blobs == 0
    local.delete(b)
    kept_young = local.gc(grace_seconds=3600)
    assert kept_young.removed_blobs == 0  # inside the grace period: a pull may still want it
    done = local.gc(grace_seconds=0)
    assert done.removed_blobs >= 3  # manifest, config and the layer only b used
    assert not local.blobs.has(only_b.digest)
    assert not local.blobs.has(image_b.manifest_digest)
    assert local.blobs.has(shared.digest)
    referenced = local.state.referenced_digests()
    assert all(local.blobs.has(d) for d in referenced)
    assert set(local.blobs.iter_digests()) == set(referenced)
    local.close()


def _gitsync(*args: str, data: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    env["GITSYNC_DATA_DIR"] = str(data)
    return subprocess.Popen(
        [sys.executable, "-m", "gitsync", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_during_a_pull_then_apply_converges(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("kill9")
    layers = [random_layer(8 * MIB, seed=f"kill9-{i}") for i in range(6)]
    pusher.push_image(repo, layers)
    tree = tmp_path / "repo"
    tree.mkdir()
    (tree / "c.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: big\n"
        f"spec:\n  images: [{pusher.registry.host}/{repo}:v1]\n"
    )
    data = tmp_path / "data"
    process = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    blobs = data / "store" / "blobs" / "sha256"

    def writing_or_ended() -> bool:
        if process.poll() is not None:
            return True
        return blobs.is_dir() and any(
            p.name.startswith(".tmp-") or len(p.name) == 64 for p in blobs.iterdir()
        )

    wait_until(
        writing_or_ended, timeout=60, what="the pull to write its first layer", interval=0.01
    )
    assert process.poll() is None, "apply ended before a layer was written: no kill mid-pull"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)

    done = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    status = _gitsync("status", "--format", "json", data=data, cwd=tmp_path)
    out, err = status.communicate(timeout=60)
    caches = json.loads(out)["caches"]
    assert [(c["name"], c["status"]) for c in caches] == [("big", "Ready")]
    with sqlite3.connect(data / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cli_apply_status_and_gc(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("cli")
    pusher.push_image(repo, [small_layer("cli")])
    tree = tmp_path / "repo"
    tree.mkdir()
    doc = (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: {name}\n"
        "spec:\n  images: [" + f"{pusher.registry.host}/{repo}:v1" + "]\n  retentionDays: 7\n"
    )
    (tree / "a.yaml").write_text(doc.format(name="a"))
    (tree / "b.yaml").write_text(doc.format(name="b"))
    data = tmp_path / "data"
    apply = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    out, err = apply.communicate(timeout=120)
    assert apply.returncode == 0, err
    assert "converged" in out

    status = _gitsync("status", "--format", "json", data=data, cwd=tmp_path)
    out, _ = status.communicate(timeout=60)
    report = json.loads(out)
    assert report["provider"] == "local"
    assert [c["name"] for c in report["caches"]] == ["a", "b"]
    for cache in report["caches"]:
        assert cache["status"] == "Ready"
        assert cache["managed"] is True
        assert cache["id"].startswith("imc-")
        assert cache["expiresAt"] is not None
        assert cache["contentBytes"] > 0

    (tree / "b.yaml").unlink()
    apply = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    _, err = apply.communicate(timeout=120)
    assert apply.returncode == 0, err
    gc = _gitsync("gc", "--grace", "0s", data=data, cwd=tmp_path)
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert out.startswith("removed 0 blobs")  # b shared every blob with a

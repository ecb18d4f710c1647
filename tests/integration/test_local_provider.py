"""The local backend end to end against Debian's docker-registry: caches, snapshots, events, gc.

Images are built in Python and pushed with skopeo (see oci_images.py). Each
test uses repositories no other test uses, and its own data dir.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

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
from gitsync.providers.local import export
from gitsync.providers.local.leases import LeaseManager
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.state import SCHEMA_VERSION, SchemaVersionError, StateStore

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
        client.session.http.event_hooks["request"].append(record)  # a probe on the client's pool
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

    assert local.gc().removed_blobs == 0
    local.delete(b)
    kept_young = local.gc(grace_seconds=3600)
    assert kept_young.removed_blobs == 0  # --grace 1h: young blobs stay whatever holds them
    done = local.gc()  # the default: only snapshots and leases keep blobs, so b's go now
    assert done.removed_blobs == 3  # manifest, config and the layer only b used
    assert done.leased_blobs == 0
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


# -- gc and leases ------------------------------------------------------------------------


class GateProxy:
    """A loopback proxy to the registry that stops one blob's body half-way until opened.

    With it a pull in another process can be paused at a known point: some blobs
    stored, one being written (its temporary file on disk), the rest waiting.
    """

    def __init__(self, upstream: str, *, digest: str, after: int) -> None:
        self.upstream = upstream
        self.digest = digest
        self.after = after
        self.held = threading.Event()  # the gated body is paused now
        self.opened = threading.Event()
        self.blob_gets: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.client = httpx.Client(base_url=f"http://{upstream}", timeout=30)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _GateHandler)
        self._server.daemon_threads = True
        self._server.gate = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def count(self, path: str) -> None:
        if "/blobs/" in path:
            with self._lock:
                self.blob_gets[path.rsplit("/", 1)[-1]] += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.opened.set()
        self._server.shutdown()
        self._server.server_close()
        self.client.close()


class _GateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's name
        pass

    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def do_GET(self) -> None:
        self._forward("GET")

    def _forward(self, method: str) -> None:
        gate: GateProxy = self.server.gate  # type: ignore[attr-defined]
        if method == "GET":
            gate.count(self.path)
        gated = method == "GET" and self.path.endswith(f"/blobs/{gate.digest}")
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        with gate.client.stream(method, self.path, headers=headers) as upstream:
            self.send_response(upstream.status_code)
            for name, value in upstream.headers.multi_items():
                if name.lower() not in ("connection", "keep-alive", "transfer-encoding"):
                    self.send_header(name, value)
            if "content-length" not in upstream.headers:
                body = upstream.read() if method == "GET" else b""
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.end_headers()
            sent = 0
            for chunk in upstream.iter_raw():
                rest = chunk
                if gated and sent < gate.after <= sent + len(chunk):
                    cut = gate.after - sent
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    gate.held.set()
                    gate.opened.wait(timeout=120)
                    rest = chunk[cut:]
                self.wfile.write(rest)
                sent += len(chunk)


def _cache_doc(name: str, image: str) -> str:
    return (
        f"apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: {name}\n"
        f"spec:\n  images: [{image}]\n"
    )


def _blob_files(data: Path) -> set[str]:
    folder = data / "store" / "blobs" / "sha256"
    if not folder.is_dir():
        return set()
    return {f"sha256:{p.name}" for p in folder.iterdir() if not p.name.startswith(".tmp-")}


def _temp_files(data: Path) -> list[Path]:
    return sorted((data / "store").glob("*/*/.tmp-*"))


def _db_rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def _referenced(data: Path) -> set[str]:
    return {row[0] for row in _db_rows(data, "SELECT DISTINCT digest FROM snapshot_blobs")}


def _run(*args: str, data: Path, cwd: Path, timeout: float = 120) -> str:
    process = _gitsync(*args, data=data, cwd=cwd)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    return out


def test_cli_gc_right_after_a_delete_frees_the_deleted_caches_own_blobs(
    pusher: Pusher, tmp_path: Path
) -> None:
    shared = random_layer(MIB, seed="gc-cli-shared")
    only_a = small_layer("gc-cli-only-a")
    only_b = random_layer(512 * 1024, seed="gc-cli-only-b")
    repo_a, repo_b = pusher.repo("gc-cli-a"), pusher.repo("gc-cli-b")
    image_a = pusher.push_image(repo_a, [shared, only_a])
    image_b = pusher.push_image(repo_b, [shared, only_b])
    host = pusher.registry.host
    tree = tmp_path / "repo"
    tree.mkdir()
    (tree / "a.yaml").write_text(_cache_doc("a", f"{host}/{repo_a}:v1"))
    (tree / "b.yaml").write_text(_cache_doc("b", f"{host}/{repo_b}:v1"))
    data = tmp_path / "data"
    _run("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    b_own = {image_b.manifest_digest, image_b.config_digest, only_b.digest}
    a_all = {image_a.manifest_digest, image_a.config_digest, shared.digest, only_a.digest}
    assert _blob_files(data) == a_all | b_own

    (tree / "b.yaml").unlink()
    _run("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    assert _blob_files(data) == a_all | b_own  # a delete leaves blobs to gc

    out = _run("gc", data=data, cwd=tmp_path)  # right away, default flags
    assert out.startswith("removed 3 blobs"), out
    assert "(0 held by running pulls)" in out
    assert _blob_files(data) == a_all  # b's own blobs gone; the shared layer stays with a
    assert _referenced(data) == a_all
    assert _run("gc", data=data, cwd=tmp_path).startswith("removed 0 blobs")


def _paused_pull(
    pusher: Pusher, tmp_path: Path, stem: str
) -> tuple[Path, Path, dict[str, str], Callable[[], GateProxy]]:
    """A data dir holding the blobs of a deleted cache, and the images of a new one.

    Returns the data dir, a repo tree, digests by role, and a factory for the proxy
    that pauses the new image's big layer half-way.
    """
    reused = random_layer(MIB, seed=f"{stem}-reused")
    old_only = random_layer(256 * 1024, seed=f"{stem}-old-only")
    fresh = small_layer(f"{stem}-fresh")
    gated = random_layer(2 * MIB, seed=f"{stem}-gated")
    repo_old, repo_new = pusher.repo(f"{stem}-old"), pusher.repo(f"{stem}-new")
    old_image = pusher.push_image(repo_old, [reused, old_only])
    new_image = pusher.push_image(repo_new, [gated, reused, fresh])
    data = tmp_path / "data"
    local = provider(data)
    old = local.create(spec("old", f"{pusher.registry.host}/{repo_old}:v1"), owner="gitsync")
    local.delete(old)  # its blobs are garbage now; the new pull will reuse one of them
    local.close()
    tree = tmp_path / "repo"
    tree.mkdir()
    digests = {
        "reused": reused.digest,
        "old_only": old_only.digest,
        "old_manifest": old_image.manifest_digest,
        "old_config": old_image.config_digest,
        "fresh": fresh.digest,
        "gated": gated.digest,
        "new_manifest": new_image.manifest_digest,
        "new_config": new_image.config_digest,
        "repo_new": repo_new,
    }

    def gate() -> GateProxy:
        return GateProxy(pusher.registry.host, digest=gated.digest, after=256 * 1024)

    return data, tree, digests, gate


def test_gc_while_a_pull_runs_in_another_process_keeps_what_the_pull_holds(
    pusher: Pusher, tmp_path: Path
) -> None:
    data, tree, d, make_gate = _paused_pull(pusher, tmp_path, "lease-live")
    garbage = {d["old_only"], d["old_manifest"], d["old_config"]}
    with make_gate() as gate:
        (tree / "new.yaml").write_text(_cache_doc("new", f"{gate.host}/{d['repo_new']}:v1"))
        pull = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
        try:
            wait_until(gate.held.is_set, timeout=60, what="the big layer to pause half-way")
            wait_until(
                lambda: d["fresh"] in _blob_files(data),
                timeout=60,
                what="the small layer to be stored",
            )
            (temp,) = _temp_files(data)  # the paused write, tagged with the pull's lease
            assert temp.name.startswith(".tmp-" + d["gated"].removeprefix("sha256:"))
            assert d["gated"] not in _blob_files(data)
            (lease_count,) = _db_rows(data, "SELECT COUNT(*) FROM leases")[0]
            assert lease_count == 1

            out = _run("gc", data=data, cwd=tmp_path)  # another process, default flags

            assert out.startswith("removed 3 blobs"), out  # the deleted cache's own blobs
            assert "dropped 0 dead leases" in out
            left = _blob_files(data)
            assert garbage.isdisjoint(left)
            # Held by the running pull's lease, though no snapshot references them yet:
            assert {d["reused"], d["fresh"], d["new_manifest"], d["new_config"]} <= left
            assert _temp_files(data) == [temp]  # the paused write's file is still there
        finally:
            gate.opened.set()
        out, err = pull.communicate(timeout=120)
    assert pull.returncode == 0, err
    assert gate.blob_gets[d["reused"]] == 0  # reused, never fetched again: gc kept it
    assert gate.blob_gets[d["gated"]] == 1  # the paused body finished, not retried
    snapshot = {d["reused"], d["fresh"], d["gated"], d["new_manifest"], d["new_config"]}
    assert _referenced(data) == snapshot
    folder = data / "store" / "blobs" / "sha256"
    for digest in snapshot:
        content = (folder / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(content).hexdigest() == digest
    status = json.loads(_run("status", "--format", "json", data=data, cwd=tmp_path))
    assert [(c["name"], c["status"]) for c in status["caches"]] == [("new", "Ready")]
    assert _db_rows(data, "SELECT COUNT(*) FROM leases") == [(0,)]  # ended with the commit
    assert _run("gc", data=data, cwd=tmp_path).startswith("removed 0 blobs")
    assert _blob_files(data) == snapshot
    assert _temp_files(data) == []


def test_a_killed_pulls_lease_is_dropped_by_the_next_gc_with_its_blobs(
    pusher: Pusher, tmp_path: Path
) -> None:
    data, tree, d, make_gate = _paused_pull(pusher, tmp_path, "lease-killed")
    with make_gate() as gate:
        (tree / "new.yaml").write_text(_cache_doc("new", f"{gate.host}/{d['repo_new']}:v1"))
        pull = _gitsync("apply", "--repo", str(tree), data=data, cwd=tmp_path)
        wait_until(gate.held.is_set, timeout=60, what="the big layer to pause half-way")
        wait_until(
            lambda: d["fresh"] in _blob_files(data), timeout=60, what="the small layer to be stored"
        )
        os.kill(pull.pid, signal.SIGKILL)
        pull.communicate(timeout=30)
        assert _db_rows(data, "SELECT COUNT(*) FROM leases") == [(1,)]  # left behind
        assert len(_temp_files(data)) == 1

        out = _run("gc", data=data, cwd=tmp_path)

        # Its lock is gone with the process: no waiting for the lease to expire.
        assert "dropped 1 dead leases" in out, out
        assert _blob_files(data) == set()  # no snapshot at all: everything was garbage
        assert _temp_files(data) == []  # the killed write's file too, at once
        assert _db_rows(data, "SELECT COUNT(*) FROM leases") == [(0,)]
        assert list((data / "leases").iterdir()) == []
        gate.opened.set()
        _run("apply", "--repo", str(tree), data=data, cwd=tmp_path)
    status = json.loads(_run("status", "--format", "json", data=data, cwd=tmp_path))
    assert [(c["name"], c["status"]) for c in status["caches"]] == [("new", "Ready")]
    assert _blob_files(data) == _referenced(data)


def test_a_lease_whose_holder_cannot_be_checked_holds_until_it_expires(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("lease-expiry")
    layer = random_layer(256 * 1024, seed="lease-expiry")
    pusher.push_image(repo, [layer])
    data = tmp_path / "data"
    local = provider(data)
    cache = local.create(spec("web", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
    local.delete(cache)
    # A lease from another machine sharing the data dir: no lock file here to probe.
    now = time.time()
    local.state.create_lease(
        "0123456789abcdef",
        purpose="pull elsewhere",
        owner="pid 1 on other",
        now=now,
        expires_at=now + 300,
    )
    assert local.state.hold_blobs("0123456789abcdef", [layer.digest], expires_at=now + 300)
    held = local.gc()
    assert held.leased_blobs == 1
    assert held.removed_blobs == 2  # manifest and config: the lease holds only the layer
    assert local.blobs.has(layer.digest)
    local.close()

    later = provider(data, clock=lambda: now + 301)
    expired = later.gc()
    assert expired.dropped_leases == 1
    assert expired.removed_blobs == 1
    assert not later.blobs.has(layer.digest)
    assert later.state.leases() == ()
    later.close()


def test_a_running_lease_is_renewed_by_its_heartbeat_and_ends_with_release(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.db")
    clock = [1000.0]
    manager = LeaseManager(
        state=state, folder=tmp_path / "leases", clock=lambda: clock[0], ttl=60, renew_every=0.05
    )
    lease = manager.acquire(purpose="test")
    (record,) = state.leases()
    assert record.expires_at == 1060.0
    assert manager.holder_alive(lease.lease_id) is True  # our own flock, another descriptor
    clock[0] = 5000.0

    def renewed() -> bool:
        return state.leases()[0].expires_at == 5060.0

    wait_until(renewed, timeout=60, what="the heartbeat to renew the lease")
    dropped = manager.drop_dead()
    assert len(dropped) == 0  # renewed and locked: alive
    lease.hold(["sha256:" + "a" * 64])
    assert state.leases()[0].blobs == 1
    lease.release()
    assert state.leases() == ()
    assert not manager.lock_path(lease.lease_id).exists()
    lease.release()  # idempotent
    manager.close()
    state.close()


def test_a_lease_gc_dropped_while_its_holder_hung_comes_back_at_the_next_renewal(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.db")
    clock = [1000.0]
    manager = LeaseManager(state=state, folder=tmp_path / "leases", clock=lambda: clock[0], ttl=60)
    lease = manager.acquire(purpose="hung")
    digest = "sha256:" + "b" * 64
    lease.hold([digest])
    clock[0] = 2000.0  # no renewal for longer than the ttl: gc may drop it
    dropped = manager.drop_dead()
    assert dropped.expired == (lease.lease_id,)
    assert state.leases() == ()
    assert manager.lock_path(lease.lease_id).exists()  # the holder still has its lock
    manager.renew([lease])
    (record,) = state.leases()
    assert record.lease_id == lease.lease_id
    assert record.blobs == 1
    assert record.expires_at == 2060.0
    lease.release()
    manager.close()
    state.close()


def test_a_version_1_state_database_is_upgraded_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    fresh = StateStore(path)
    cache_id = fresh.insert_cache(
        spec("web", "busybox:1.36.1"), owner="gitsync", status=CacheStatus.FAILED
    )
    fresh.close()
    # What a data dir written by an old release looks like: no lease tables, no blob sizes,
    # no snapshot_problem, no snapshot image digests, version 1.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "DROP TABLE lease_blobs; DROP TABLE leases;"
            " ALTER TABLE snapshot_blobs DROP COLUMN size;"
            " ALTER TABLE caches DROP COLUMN snapshot_problem;"
            " ALTER TABLE snapshots DROP COLUMN image_digests;"
            " UPDATE meta SET value = '1' WHERE key = 'schema_version';"
        )
    upgraded = StateStore(path)
    assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION) == "4"
    assert [c.cache_id for c in upgraded.caches()] == [cache_id]
    assert upgraded.leases() == ()
    upgraded.create_lease("00000000000000aa", purpose="p", owner="o", now=1.0, expires_at=2.0)
    assert upgraded.integrity_check() == "ok"
    upgraded.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    upgraded.close()
    with pytest.raises(SchemaVersionError, match="newer than this gitsync understands"):
        StateStore(path)


def test_an_export_keeps_its_blobs_through_a_delete_and_gc_mid_way(
    pusher: Pusher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = pusher.repo("export-lease")
    layers = [random_layer(256 * 1024, seed=f"export-lease-{i}") for i in range(3)]
    image = pusher.push_image(repo, layers)
    local = provider(tmp_path / "data")
    cache = local.create(spec("web", f"{pusher.registry.host}/{repo}:v1"), owner="gitsync")
    copy_blob = export._LayoutWriter.blob
    during: list[Any] = []

    def blob_after_a_gc(self: Any, digest: str, *, image: str) -> None:
        if not during:  # the first blob: delete the cache and collect, as another process might
            local.delete(cache)
            during.append(local.gc())
        copy_blob(self, digest, image=image)

    monkeypatch.setattr(export._LayoutWriter, "blob", blob_after_a_gc)
    result = export.export_cache(provider=local, name="web", dest=tmp_path / "bundle", fsync=False)

    assert during[0].removed_blobs == 0
    assert during[0].leased_blobs == 2 + len(layers)  # manifest, config and layers
    assert result.blobs_copied == 2 + len(layers)
    for layer in layers:
        assert (tmp_path / "bundle/blobs/sha256" / layer.digest.split(":")[1]).is_file()
    after = local.gc()  # the export ended, and its lease with it
    assert after.removed_blobs == 2 + len(layers)
    assert not local.blobs.has(image.manifest_digest)
    local.close()

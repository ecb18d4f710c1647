"""The `/v2/` mirror behind the real ControlServer: skopeo pulls through it, httpx probes it.

One provider per module holds two caches built from the test registry (a
single-manifest image and a two-platform index of which it holds linux/amd64)
and two caches of the same repository path on two registries, written
straight into the state store (nothing here may reach docker.io). Lookups feed
a real `UsageMetrics` on a fresh registry; tests compare counts before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from containerd_client import containerd
from oci_images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    OciLayout,
    Pusher,
    RegistryProcess,
    make_layer,
    random_layer,
    small_layer,
)
from prometheus_client import CollectorRegistry

from gitsync.metrics import UsageMetrics
from gitsync.model import CacheSpec, CacheStatus
from gitsync.observations.model import Lookup, LookupResult, LookupSource, StartGroup
from gitsync.observations.recorder import BatchRecorder
from gitsync.observations.store import ObservationStore
from gitsync.providers.local.mirror import Mirror
from gitsync.providers.local.provider import LocalProvider
from gitsync.server import ControlServer, ServerHooks

pytestmark = pytest.mark.registry

API_HEADER = "Docker-Distribution-API-Version"


@dataclass(frozen=True)
class Fake:
    """A cache written into the state store: its manifest and the blobs it references."""

    cache_id: str
    manifest: bytes
    digest: str
    layer: bytes
    layer_digest: str


@dataclass
class Setup:
    provider: LocalProvider
    mirror: Mirror
    base: str  # http://127.0.0.1:PORT
    host: str  # 127.0.0.1:PORT of the mirror
    upstream: str  # host of the test registry
    app_repo: str
    app: BuiltImage
    app_cache: str
    multi_repo: str
    multi: BuiltImage
    multi_arm: BuiltImage
    multi_index: str
    hub: Fake  # docker.io/library/nginx:latest
    private: Fake  # registry.example.com/library/nginx:latest
    metrics: CollectorRegistry
    observations: list[Lookup] = field(default_factory=list)

    def lookups(self, cache: str, result: str) -> float:
        value = self.metrics.get_sample_value(
            "gitsync_cache_lookups_total", {"cache": cache, "result": result}
        )
        return value or 0.0

    def startups(self, result: str) -> float:
        value = self.metrics.get_sample_value("gitsync_startup_seconds_count", {"result": result})
        return value or 0.0

    def last_matched(self, cache_id: str) -> datetime | None:
        return next(
            c.last_matched_at for c in self.provider.state.caches() if c.cache_id == cache_id
        )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_cache(provider: LocalProvider, name: str, reference: str, *, seed: str) -> Fake:
    """A Ready cache of one image whose blobs are put in the store directly."""
    layer = make_layer({f"{seed}.txt": seed.encode()})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
    ).encode()
    for blob in (layer.blob, config, manifest):
        provider.blobs.put_bytes(blob)
    cache_id = provider.state.insert_cache(
        CacheSpec(name=name, images=(reference,)), owner="gitsync", status=CacheStatus.PENDING
    )
    record = {
        "image": reference,
        "reference": reference,
        "manifestDigest": sha256(manifest),
        "mediaType": OCI_MANIFEST,
        "indexDigest": None,
        "indexMediaType": None,
        "platform": "linux/amd64",
        "configDigest": sha256(config),
        "layers": [layer.digest],
        "diffIds": [layer.diff_id],
    }
    provider.state.commit_snapshot(
        cache_id,
        content_bytes=layer.expanded_size,
        images=[record],
        blob_digests=[sha256(manifest), sha256(config), layer.digest],
        retention_days=0,
    )
    return Fake(cache_id, manifest, sha256(manifest), layer.blob, layer.digest)


def image_bytes(manifest: bytes) -> int:
    """What a pull of a single-manifest image moves: the manifest, its config and layers."""
    document = json.loads(manifest)
    blobs = [document["config"], *document["layers"]]
    return len(manifest) + sum(int(blob["size"]) for blob in blobs)


def mirror_server(mirror: Mirror) -> ControlServer:
    """The daemon's listener on a free loopback port, with only the mirror behind it."""
    return ControlServer(
        host="127.0.0.1",
        port=0,
        hooks=ServerHooks(
            metrics=lambda: (b"", "text/plain"),
            healthy=lambda: True,
            ready=lambda: True,
            status=dict,
            trigger=lambda _reason: None,
            registry=mirror.handle,
        ),
        branch="main",
        webhook_secret=None,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess) -> Iterator[Setup]:
    pusher = Pusher(layout=OciLayout(tmp_path_factory.mktemp("mirror-src")), registry=registry)
    app_repo, multi_repo = pusher.repo("mirror-app"), pusher.repo("mirror-multi")
    app = pusher.push_image(
        app_repo,
        [make_layer({"etc/motd": b"served from the cache\n"}), random_layer(200_000, seed="mir")],
        tag="v1",
    )
    index_digest, platforms = pusher.push_index(
        multi_repo,
        [("linux/amd64", [small_layer("mir-amd")]), ("linux/arm64/v8", [small_layer("mir-arm")])],
        tag="v2",
    )
    provider = LocalProvider(data_dir=tmp_path_factory.mktemp("mirror-data"))
    upstream = registry.host
    app_cache = provider.create(
        CacheSpec(name="apps", images=(f"{upstream}/{app_repo}:v1", f"{upstream}/{multi_repo}:v2")),
        owner="gitsync",
    )
    hub = fake_cache(provider, "hub-nginx", "docker.io/library/nginx:latest", seed="hub")
    private = fake_cache(
        provider, "private-nginx", "registry.example.com/library/nginx:latest", seed="private"
    )
    metrics = CollectorRegistry()
    usage = UsageMetrics(registry=metrics)

    def on_lookup(cache: str | None, result: str, seconds: float) -> None:
        usage.record(cache=cache, result=result, seconds=seconds)

    observations: list[Lookup] = []
    mirror = Mirror(provider, on_lookup=on_lookup, on_observation=observations.append)
    server = mirror_server(mirror)
    server.start()
    try:
        host = f"127.0.0.1:{server.address[1]}"
        yield Setup(
            provider=provider,
            mirror=mirror,
            base=f"http://{host}",
            host=host,
            upstream=upstream,
            app_repo=app_repo,
            app=app,
            app_cache=app_cache.cache_id,
            multi_repo=multi_repo,
            multi=platforms["linux/amd64"],
            multi_arm=platforms["linux/arm64/v8"],
            multi_index=index_digest,
            hub=hub,
            private=private,
            metrics=metrics,
            observations=observations,
        )
    finally:
        server.stop()
        provider.close()


@pytest.fixture
def http(setup: Setup) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=setup.base, timeout=10) as client:
        yield client


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is missing: install Debian's skopeo package (CI's .ci/run does)")
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, timeout=60, check=False
    )


# ------------------------------------------------------------------ real clients


def test_skopeo_pulls_through_the_mirror_with_the_upstream_digests(
    setup: Setup, tmp_path: Path
) -> None:
    hits = setup.lookups("apps", "hit")
    startups = setup.startups("hit")
    layout = tmp_path / "pulled"

    done = skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{setup.host}/{setup.app_repo}:v1",
        f"oci:{layout}:x",
    )

    assert done.returncode == 0, done.stderr.decode()
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [setup.app.manifest_digest]
    stored = layout / "blobs" / "sha256" / setup.app.manifest_digest.split(":")[1]
    assert stored.read_bytes() == setup.app.manifest
    for layer in setup.app.layers:
        assert (layout / "blobs" / "sha256" / layer.digest.split(":")[1]).read_bytes() == layer.blob
    # The same manifest digest as the upstream registry serves for the tag.
    upstream = httpx.head(
        f"http://{setup.upstream}/v2/{setup.app_repo}/manifests/v1",
        headers={"Accept": OCI_MANIFEST},
    )
    assert upstream.headers["Docker-Content-Digest"] == setup.app.manifest_digest
    # One pull, one lookup, one startup observation; the cache was marked as used.
    assert setup.lookups("apps", "hit") == hits + 1
    assert setup.startups("hit") == startups + 1
    assert setup.last_matched(setup.app_cache) is not None


def test_skopeo_pulls_the_cached_platform_of_a_multi_platform_image(
    setup: Setup, tmp_path: Path
) -> None:
    hits = setup.lookups("apps", "hit")
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{setup.host}/{setup.multi_repo}:v2"
    )
    assert raw.returncode == 0, raw.stderr.decode()
    assert sha256(raw.stdout) == setup.multi_index  # the tag answers the upstream index

    done = skopeo(
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{setup.host}/{setup.multi_repo}:v2",
        f"oci:{tmp_path / 'pulled'}:x",
    )

    assert done.returncode == 0, done.stderr.decode()
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [setup.multi.manifest_digest]
    assert setup.lookups("apps", "hit") == hits + 1  # the index fetches were not counted


def test_skopeo_inspect_of_an_uncached_image_gets_404_and_counts_a_miss(setup: Setup) -> None:
    misses = setup.lookups("", "miss")

    done = skopeo("inspect", "--tls-verify=false", f"docker://{setup.host}/team/uncached:v9")

    assert done.returncode != 0
    assert "name unknown" in done.stderr.decode().lower()
    assert setup.lookups("", "miss") == misses + 1
    assert setup.observations[-1].image == "docker.io/team/uncached:v9"  # no ns: Docker Hub
    assert setup.observations[-1].result is LookupResult.MISS


def test_skopeo_inspect_of_another_tag_of_a_cached_repository_counts_a_partial(
    setup: Setup,
) -> None:
    partials, misses = setup.lookups("apps", "partial"), setup.lookups("", "miss")

    done = skopeo("inspect", "--tls-verify=false", f"docker://{setup.host}/{setup.app_repo}:v9")

    assert done.returncode != 0
    assert "manifest unknown" in done.stderr.decode().lower()
    assert setup.lookups("apps", "partial") == partials + 1  # the cloud's name-only match
    assert setup.lookups("", "miss") == misses
    observed = setup.observations[-1]
    assert (observed.image, observed.result, observed.cache) == (
        f"{setup.upstream}/{setup.app_repo}:v9",  # the registry of the cache holding it
        LookupResult.PARTIAL,
        "apps",
    )


# -------------------------------------------------------------- protocol details


def test_the_base_endpoint_answers_like_a_registry(http: httpx.Client) -> None:
    response = http.get("/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers[API_HEADER] == "registry/2.0"


def test_head_of_a_manifest_gives_its_headers_and_is_no_lookup(
    setup: Setup, http: httpx.Client
) -> None:
    hits = setup.lookups("apps", "hit")
    response = http.head(f"/v2/{setup.app_repo}/manifests/v1")

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == str(len(setup.app.manifest))
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert response.headers["Docker-Content-Digest"] == setup.app.manifest_digest
    assert setup.lookups("apps", "hit") == hits  # containerd's resolve; its GET counts


def test_get_by_digest_serves_the_stored_bytes(setup: Setup, http: httpx.Client) -> None:
    response = http.get(f"/v2/{setup.app_repo}/manifests/{setup.app.manifest_digest}")
    assert response.status_code == 200
    assert response.content == setup.app.manifest
    assert sha256(response.content) == response.headers["Docker-Content-Digest"]


def test_a_client_that_takes_no_index_gets_the_platform_manifest(
    setup: Setup, http: httpx.Client
) -> None:
    by_default = http.get(f"/v2/{setup.multi_repo}/manifests/v2")
    assert by_default.headers["Content-Type"] == OCI_INDEX
    assert by_default.headers["Docker-Content-Digest"] == setup.multi_index

    narrow = http.get(f"/v2/{setup.multi_repo}/manifests/v2", headers={"Accept": OCI_MANIFEST})
    assert narrow.headers["Content-Type"] == OCI_MANIFEST
    assert narrow.content == setup.multi.manifest


def test_another_platform_of_a_cached_index_is_404_and_a_partial(
    setup: Setup, http: httpx.Client
) -> None:
    partials = setup.lookups("apps", "partial")
    response = http.get(f"/v2/{setup.multi_repo}/manifests/{setup.multi_arm.manifest_digest}")

    assert response.status_code == 404
    (error,) = response.json()["errors"]
    assert error["code"] == "MANIFEST_UNKNOWN"
    assert "another platform" in error["message"]
    # The repository is cached, not this manifest: the runtime pulls it from upstream.
    assert setup.lookups("apps", "partial") == partials + 1


def test_blob_ranges(setup: Setup, http: httpx.Client) -> None:
    layer = setup.app.layers[1]
    url = f"/v2/{setup.app_repo}/blobs/{layer.digest}"
    size = layer.size

    whole = http.get(url)
    assert whole.status_code == 200
    assert whole.content == layer.blob
    assert whole.headers["Accept-Ranges"] == "bytes"

    first = http.get(url, headers={"Range": "bytes=0-9"})
    assert first.status_code == 206
    assert first.content == layer.blob[:10]
    assert first.headers["Content-Range"] == f"bytes 0-9/{size}"

    resume = http.get(url, headers={"Range": "bytes=1000-"})
    assert resume.status_code == 206
    assert resume.content == layer.blob[1000:]
    assert resume.headers["Content-Length"] == str(size - 1000)

    tail = http.get(url, headers={"Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, layer.blob[-5:])

    clipped = http.get(url, headers={"Range": f"bytes={size - 3}-{size + 100}"})
    assert clipped.content == layer.blob[-3:]
    assert clipped.headers["Content-Range"] == f"bytes {size - 3}-{size - 1}/{size}"

    for bad in (f"bytes={size}-", "bytes=9-2", "bytes=abc", "bytes=-0"):
        refused = http.get(url, headers={"Range": bad})
        assert refused.status_code == 416, bad
        assert refused.headers["Content-Range"] == f"bytes */{size}"
        assert refused.json()["errors"][0]["code"] == "RANGE_INVALID"

    several = http.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, layer.blob)  # ignored, as RFC allows


def test_head_of_a_blob_gives_its_size(setup: Setup, http: httpx.Client) -> None:
    layer = setup.app.layers[1]
    response = http.head(f"/v2/{setup.app_repo}/blobs/{layer.digest}")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(layer.size)
    assert response.headers["Docker-Content-Digest"] == layer.digest
    assert response.content == b""


def test_a_blob_is_served_only_under_a_repository_whose_image_uses_it(
    setup: Setup, http: httpx.Client
) -> None:
    layer = setup.app.layers[1].digest
    assert setup.provider.blobs.has(layer)

    elsewhere = http.get(f"/v2/{setup.multi_repo}/blobs/{layer}")
    assert elsewhere.status_code == 404
    assert elsewhere.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    unknown = http.get(f"/v2/{setup.app_repo}/blobs/sha256:{'0' * 64}")
    assert unknown.status_code == 404
    garbage = http.get(f"/v2/{setup.app_repo}/blobs/../../etc/passwd")
    assert garbage.status_code == 404


def test_ns_narrows_by_registry_and_short_names_map_to_library(
    setup: Setup, http: httpx.Client
) -> None:
    def digest(path: str) -> str | int:
        response = http.get(path)
        return (
            response.headers["Docker-Content-Digest"]
            if response.status_code == 200
            else response.status_code
        )

    hub, private = setup.hub.digest, setup.private.digest
    assert digest("/v2/library/nginx/manifests/latest?ns=docker.io") == hub
    assert digest("/v2/library/nginx/manifests/latest?ns=registry.example.com") == private
    assert digest("/v2/library/nginx/manifests/latest?ns=quay.io") == 404
    assert digest("/v2/library/nginx/manifests/latest") == hub  # a bare path means docker.io
    assert digest("/v2/nginx/manifests/latest") == hub
    assert digest("/v2/nginx/manifests/latest?ns=registry.example.com") == 404
    assert digest("/v2/registry.example.com/library/nginx/manifests/latest") == private
    # Blobs are narrowed the same way.
    blob = f"/v2/library/nginx/blobs/{setup.private.layer_digest}"
    assert http.get(blob + "?ns=registry.example.com").content == setup.private.layer
    assert http.get(blob + "?ns=docker.io").status_code == 404


def test_tags_list_names_the_cached_tags(setup: Setup, http: httpx.Client) -> None:
    response = http.get(f"/v2/{setup.app_repo}/tags/list")
    assert response.json() == {"name": setup.app_repo, "tags": ["v1"]}
    assert http.get("/v2/not-cached/tags/list").status_code == 404


def test_uncached_names_and_tags_answer_oci_errors(setup: Setup, http: httpx.Client) -> None:
    unknown_name = http.get("/v2/not-cached/app/manifests/v1")
    assert unknown_name.status_code == 404
    assert unknown_name.headers["Content-Type"] == "application/json"
    assert unknown_name.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    unknown_tag = http.get(f"/v2/{setup.app_repo}/manifests/v0")
    assert unknown_tag.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    head = http.head("/v2/not-cached/app/manifests/v1")
    assert head.status_code == 404
    assert head.content == b""


def test_writes_are_refused(setup: Setup, http: httpx.Client) -> None:
    assert http.put(f"/v2/{setup.app_repo}/manifests/v1", content=b"{}").status_code == 405
    assert http.post(f"/v2/{setup.app_repo}/blobs/uploads/").status_code == 405
    direct = setup.mirror.handle("DELETE", f"/v2/{setup.app_repo}/manifests/v1", {})
    assert direct.status == 405
    assert direct.headers["Allow"] == "GET, HEAD"
    assert isinstance(direct.body, bytes)
    assert json.loads(direct.body)["errors"][0]["code"] == "UNSUPPORTED"


# ------------------------------------------------------------ state and lookups


def test_ready_and_updating_caches_are_served_and_matched_time_is_throttled(
    tmp_path: Path,
) -> None:
    provider = LocalProvider(data_dir=tmp_path / "data")
    try:
        fake = fake_cache(provider, "web", "docker.io/library/nginx:1.27.2", seed="ready")
        seen: list[tuple[str | None, str]] = []
        now = [1_900_000_000.0]
        mirror = Mirror(
            provider,
            on_lookup=lambda cache, result, _seconds: seen.append((cache, result)),
            clock=lambda: now[0],
            touch_interval_seconds=60,
        )
        path = "/v2/library/nginx/manifests/1.27.2?ns=docker.io"

        assert mirror.handle("GET", path, {}).status == 200
        first = datetime.fromtimestamp(now[0], UTC)
        now[0] += 30
        assert mirror.handle("GET", path, {}).status == 200
        (cache,) = provider.state.caches()
        assert cache.last_matched_at == first  # within a minute: not written again
        now[0] += 31
        mirror.handle("GET", path, {})
        (cache,) = provider.state.caches()
        assert cache.last_matched_at == datetime.fromtimestamp(now[0], UTC)

        # A rebuild keeps serving the previous snapshot until the new one is Ready.
        provider.state.set_status(fake.cache_id, CacheStatus.UPDATING)
        assert mirror.handle("GET", path, {}).status == 200
        blob = mirror.handle("GET", f"/v2/library/nginx/blobs/{fake.layer_digest}", {})
        assert blob.status == 200
        assert b"".join(blob.body) == fake.layer  # type: ignore[arg-type]  # streamed chunks
        for status in (CacheStatus.PENDING, CacheStatus.FAILED, CacheStatus.UPDATE_FAILED):
            provider.state.set_status(fake.cache_id, status)
            assert mirror.handle("GET", path, {}).status == 404, status
            blob = mirror.handle("GET", f"/v2/library/nginx/blobs/{fake.layer_digest}", {})
            assert blob.status == 404, status
        provider.state.set_status(fake.cache_id, CacheStatus.READY)
        assert mirror.handle("GET", path, {}).status == 200
        assert seen == [("web", "hit")] * 4 + [(None, "miss")] * 3 + [("web", "hit")]
    finally:
        provider.close()


def test_a_containerd_style_miss_counts_once_and_a_lone_digest_miss_counts_too(
    setup: Setup, http: httpx.Client
) -> None:
    """The request sequence containerd 1.6 sends for an image the mirror lacks."""
    ns = f"?ns={setup.upstream}"
    misses = setup.lookups("", "miss")
    digest = f"sha256:{'1' * 64}"

    assert http.head(f"/v2/team/uncached/manifests/v1{ns}").status_code == 404
    assert http.get(f"/v2/team/uncached/manifests/{digest}{ns}").status_code == 404
    assert http.get(f"/v2/team/uncached/blobs/{digest}{ns}").status_code == 404
    assert setup.lookups("", "miss") == misses + 1

    # skopeo or CRI-O pulling by digest ask with one GET: that is a lookup of its own.
    assert http.get(f"/v2/team/other/manifests/{digest}{ns}").status_code == 404
    assert setup.lookups("", "miss") == misses + 2


def test_a_containerd_style_hit_counts_once(setup: Setup, http: httpx.Client) -> None:
    hits = setup.lookups("apps", "hit")
    ns = f"?ns={setup.upstream}"
    resolved = http.head(f"/v2/{setup.multi_repo}/manifests/v2{ns}")
    index = http.get(
        f"/v2/{setup.multi_repo}/manifests/{resolved.headers['Docker-Content-Digest']}{ns}"
    )
    child = json.loads(index.content)["manifests"][0]["digest"]
    assert child == setup.multi.manifest_digest
    assert http.get(f"/v2/{setup.multi_repo}/manifests/{child}{ns}").status_code == 200
    assert setup.lookups("apps", "hit") == hits + 1


# ------------------------------------------------------------------ containerd


def test_containerd_pulls_through_the_mirror_with_hosts_toml(
    setup: Setup, registry: RegistryProcess, tmp_path: Path
) -> None:
    """The README's hosts.toml, with the real containerd: a hit, an index, and a fallback."""
    pusher = Pusher(layout=OciLayout(tmp_path / "src"), registry=registry)
    uncached_repo = pusher.repo("mirror-uncached")
    uncached = pusher.push_image(uncached_repo, [small_layer("uncached")])
    hits, misses = setup.lookups("apps", "hit"), setup.lookups("", "miss")
    with containerd(setup.upstream, setup.host) as ctr:
        for repo, tag in ((setup.app_repo, "v1"), (setup.multi_repo, "v2"), (uncached_repo, "v1")):
            ctr("images", "pull", f"{setup.upstream}/{repo}:{tag}")
        listed = dict(line.split()[:3:2] for line in ctr("images", "ls").splitlines()[1:])

    assert listed[f"{setup.upstream}/{setup.app_repo}:v1"] == setup.app.manifest_digest
    assert listed[f"{setup.upstream}/{setup.multi_repo}:v2"] == setup.multi_index
    assert listed[f"{setup.upstream}/{uncached_repo}:v1"] == uncached.manifest_digest
    assert setup.lookups("apps", "hit") == hits + 2
    assert setup.lookups("", "miss") == misses + 1


def test_containerd_pulls_are_recorded_as_a_hit_a_partial_and_a_miss_in_one_burst(
    setup: Setup, registry: RegistryProcess, tmp_path: Path
) -> None:
    """What `gitsync suggest` reads: each pull once, by canonical name, grouped by the node."""
    pusher = Pusher(layout=OciLayout(tmp_path / "src"), registry=registry)
    newer = pusher.push_image(setup.app_repo, [small_layer("newer-tag")], tag="v2")
    uncached_repo = pusher.repo("mirror-never-cached")
    pusher.push_image(uncached_repo, [small_layer("never")], tag="v1")
    store_path = tmp_path / "data" / "observations.db"
    recorder = BatchRecorder(lambda: ObservationStore(store_path), flush_interval=3_600)
    counted: list[tuple[str | None, str]] = []
    mirror = Mirror(
        setup.provider,
        on_lookup=lambda cache, result, _seconds: counted.append((cache, result)),
        on_observation=recorder.record,
    )
    server = mirror_server(mirror)
    recorder.start()
    server.start()
    try:
        with containerd(setup.upstream, f"127.0.0.1:{server.address[1]}") as ctr:
            for repo, tag in (
                (setup.app_repo, "v1"),
                (setup.app_repo, "v2"),
                (uncached_repo, "v1"),
            ):
                ctr("images", "pull", f"{setup.upstream}/{repo}:{tag}")
            listed = dict(line.split()[:3:2] for line in ctr("images", "ls").splitlines()[1:])
        assert recorder.flush(30)
    finally:
        server.stop()
        recorder.stop()
    assert listed[f"{setup.upstream}/{setup.app_repo}:v2"] == newer.manifest_digest  # upstream's

    assert counted == [("apps", "hit"), ("apps", "partial"), (None, "miss")]
    with ObservationStore.open_readonly(store_path) as store:
        evidence = store.evidence(since=0, until=4_000_000_000)
    hit, partial, miss = (
        f"{setup.upstream}/{setup.app_repo}:v1",
        f"{setup.upstream}/{setup.app_repo}:v2",
        f"{setup.upstream}/{uncached_repo}:v1",
    )
    seen = {i.image: (i.hits, i.partials, i.misses, i.pods, i.caches) for i in evidence.images}
    assert seen == {
        hit: (1, 0, 0, 1, ("apps",)),
        partial: (0, 1, 0, 1, ("apps",)),
        miss: (0, 0, 1, 1, ()),
    }
    by_image = {i.image: i for i in evidence.images}
    assert by_image[hit].image_bytes == image_bytes(setup.app.manifest)
    assert by_image[hit].timed_hits == 1
    assert (by_image[miss].timed_misses, by_image[partial].image_bytes) == (0, None)
    assert evidence.groups == (StartGroup(images=frozenset({hit, partial, miss}), count=1),)
    assert evidence.caches["apps"].hits == 1
    assert evidence.caches["apps"].partials == 1
    assert evidence.lookups == 3


def test_each_lookup_is_observed_by_canonical_name_and_grouped_by_client_burst(
    tmp_path: Path,
) -> None:
    provider = LocalProvider(data_dir=tmp_path / "data")
    try:
        fake = fake_cache(provider, "web", "docker.io/library/nginx:1.27.2", seed="observed")
        now = [1_900_000_000.0]
        seen: list[Lookup] = []
        counted: list[tuple[str | None, str]] = []
        mirror = Mirror(
            provider,
            on_lookup=lambda cache, result, _seconds: counted.append((cache, result)),
            on_observation=seen.append,
            clock=lambda: now[0],
        )

        def get(path: str, client: str, *, method: str = "GET") -> int:
            return mirror.handle(method, path, {}, client=client).status

        assert get("/v2/nginx/manifests/1.27.2?ns=docker.io", "10.0.0.1") == 200
        now[0] += 10
        assert get("/v2/library/nginx/manifests/1.28", "10.0.0.1") == 404
        now[0] += 10
        api = "/v2/team/api/manifests/{}?ns=registry.example.com"
        assert get(api.format("v2"), "10.0.0.1", method="HEAD") == 404
        # containerd's GET by digest after that HEAD: the same pull, not counted again
        assert get(api.format(f"sha256:{'2' * 64}"), "10.0.0.1") == 404
        assert get("/v2/nginx/manifests/1.27.2?ns=index.docker.io", "10.0.0.2") == 200
        now[0] += 40  # a pause longer than 30 s: the next pull of 10.0.0.1 is a new start
        assert get("/v2/library/nginx/manifests/1.27.2", "10.0.0.1") == 200
        assert get("/v2/nginx/manifests/1.27.2", "") == 200  # no peer address: no group
    finally:
        provider.close()

    start = 1_900_000_000_000
    size = image_bytes(fake.manifest)
    nginx, web = "docker.io/library/nginx:1.27.2", "web"
    hit, partial, miss = LookupResult.HIT, LookupResult.PARTIAL, LookupResult.MISS
    assert [(o.image, o.result, o.cache, o.group, o.image_bytes) for o in seen] == [
        (nginx, hit, web, f"10.0.0.1#{start}", size),
        ("docker.io/library/nginx:1.28", partial, web, f"10.0.0.1#{start}", None),
        ("registry.example.com/team/api:v2", miss, None, f"10.0.0.1#{start}", None),
        (nginx, hit, web, f"10.0.0.2#{start + 20_000}", size),
        (nginx, hit, web, f"10.0.0.1#{start + 60_000}", size),
        (nginx, hit, web, None, size),
    ]
    assert [o.at - 1_900_000_000.0 for o in seen] == [0, 10, 20, 20, 60, 60]
    assert {o.source for o in seen} == {LookupSource.MIRROR}
    # A hit has its serve seconds; a 404's are not the pull's, which happened upstream.
    assert [o.seconds is not None for o in seen] == [True, False, False, True, True, True]
    assert counted == [
        ("web", "hit"),
        ("web", "partial"),
        (None, "miss"),
        ("web", "hit"),
        ("web", "hit"),
        ("web", "hit"),
    ]


# ------------------------------------------------------------------ damaged blobs


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _received(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The body bytes that arrived, and whether the response was complete."""
    got = bytearray()
    try:
        with client.stream("GET", url, headers=headers) as response:
            assert response.status_code in (200, 206)
            for chunk in response.iter_raw():
                got.extend(chunk)
    except httpx.RemoteProtocolError:
        return bytes(got), False
    return bytes(got), True


def test_a_damaged_blob_is_never_served_whole_and_is_reported(tmp_path: Path) -> None:
    provider = LocalProvider(data_dir=tmp_path / "data")
    mirror = Mirror(provider, chunk_bytes=16)  # many chunks: the damage is mid-stream
    server = mirror_server(mirror)
    server.start()
    try:
        fake = fake_cache(provider, "web", "docker.io/library/nginx:1.27.3", seed="damaged")
        path = provider.blobs.path(fake.layer_digest)
        size = len(fake.layer)
        url = f"/v2/library/nginx/blobs/{fake.layer_digest}?ns=docker.io"
        with httpx.Client(base_url=f"http://127.0.0.1:{server.address[1]}", timeout=10) as http:
            intact, complete = _received(http, url, {})
            assert (intact, complete) == (fake.layer, True)  # verifying costs no correct answer
            ranged, complete = _received(http, url, {"Range": "bytes=0-9"})
            assert (ranged, complete) == (fake.layer[:10], True)

            _flip_byte(path, size - 3)  # same size: only hashing can tell
            assert provider.observe().caches[0].status is CacheStatus.READY

            body, complete = _received(http, url, {})
            assert not complete
            assert len(body) < size
            (cache,) = provider.observe().caches
            assert cache.status is CacheStatus.FAILED
            assert fake.layer_digest in (cache.snapshot_problem or "")
            assert [e.reason for e in cache.events if e.type == "Warning"] == ["SnapshotDamaged"]
            assert not provider.blobs.has(fake.layer_digest)
            quarantined = list((tmp_path / "data" / "store" / "quarantine").iterdir())
            assert len(quarantined) == 1
            assert http.get(url).status_code == 404  # gone from the mirror: pull upstream
    finally:
        server.stop()
        provider.close()


def test_a_damaged_blob_is_not_served_for_a_range_either(tmp_path: Path) -> None:
    provider = LocalProvider(data_dir=tmp_path / "data")
    try:
        fake = fake_cache(provider, "web", "docker.io/library/nginx:1.27.4", seed="ranged")
        mirror = Mirror(provider, chunk_bytes=16)
        _flip_byte(provider.blobs.path(fake.layer_digest), len(fake.layer) - 1)  # after the range
        reply = mirror.handle(
            "GET", f"/v2/library/nginx/blobs/{fake.layer_digest}", {"range": "bytes=0-40"}
        )
        assert reply.status == 206
        assert reply.headers["Content-Length"] == "41"
        assert not isinstance(reply.body, bytes)
        sent = b"".join(reply.body)
        assert len(sent) < 41  # the range stops short: its last chunk is never sent
        (cache,) = provider.observe().caches
        assert cache.status is CacheStatus.FAILED

        other = fake_cache(provider, "app", "docker.io/library/redis:7", seed="manifest")
        manifest = provider.blobs.path(other.digest)
        _flip_byte(manifest, 5)
        answer = mirror.handle("GET", "/v2/library/redis/manifests/7?ns=docker.io", {})
        assert answer.status == 404
        assert provider.observe().caches[0].status is CacheStatus.FAILED  # "app" sorts first
    finally:
        provider.close()

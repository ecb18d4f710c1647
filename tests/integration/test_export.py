"""`export_cache` against real tools: a cache built from the test registry, read by skopeo, umoci.

One cache is built per module (two images: a single manifest with two layers,
and a two-platform index of which the cache holds linux/amd64), then each test
exports it into its own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from oci_images import (
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
from waiting import wait_until

from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.export import (
    ANNOTATION_INDEX_DIGEST,
    ANNOTATION_REF_NAME,
    ExportError,
    export_cache,
    parse_dest,
)
from gitsync.providers.local.provider import LocalProvider

pytestmark = pytest.mark.registry

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Built:
    provider: LocalProvider
    cache_id: str
    app: BuiltImage  # pushed as a single manifest
    app_ref: str  # the normalised reference, i.e. the ref name in the layout
    multi: BuiltImage  # the linux/amd64 manifest of a two-platform index
    multi_ref: str
    multi_index: str
    host: str


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is missing: install Debian's {name} package (CI's .ci/run does)")
    return path


def _run(*command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess) -> Iterator[Built]:
    pusher = Pusher(layout=OciLayout(tmp_path_factory.mktemp("export-src")), registry=registry)
    app_repo, multi_repo = pusher.repo("export-app"), pusher.repo("export-multi")
    app = pusher.push_image(
        app_repo,
        [
            make_layer({"etc/app.conf": b"answer = 42\n"}),
            random_layer(300_000, seed="export-app"),
        ],
        tag="1.0",
    )
    index_digest, platforms = pusher.push_index(
        multi_repo,
        [
            ("linux/amd64", [small_layer("export-amd64")]),
            ("linux/arm64/v8", [small_layer("export-arm64")]),
        ],
        tag="2.0",
    )
    host = registry.host
    provider = LocalProvider(data_dir=tmp_path_factory.mktemp("export-data"))
    cache = provider.create(
        CacheSpec(name="bundle", images=(f"{host}/{app_repo}:1.0", f"{host}/{multi_repo}:2.0")),
        owner="gitsync",
    )
    assert cache.status is CacheStatus.READY
    try:
        yield Built(
            provider=provider,
            cache_id=cache.cache_id,
            app=app,
            app_ref=f"{host}/{app_repo}:1.0",
            multi=platforms["linux/amd64"],
            multi_ref=f"{host}/{multi_repo}:2.0",
            multi_index=index_digest,
            host=host,
        )
    finally:
        provider.close()


def _index(layout: Path) -> dict[str, object]:
    document = json.loads((layout / "index.json").read_text())
    assert isinstance(document, dict)
    return document


def _refs(layout: Path) -> dict[str, dict[str, object]]:
    manifests = _index(layout)["manifests"]
    assert isinstance(manifests, list)
    return {m["annotations"][ANNOTATION_REF_NAME]: m for m in manifests}


def test_skopeo_reads_the_original_manifest_bytes_by_ref_name(built: Built, tmp_path: Path) -> None:
    _tool("skopeo")
    dest = tmp_path / "bundle"
    result = export_cache(provider=built.provider, name="bundle", dest=dest)

    assert [image.ref_name for image in result.images] == [built.app_ref, built.multi_ref]
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    raw = _run("skopeo", "inspect", "--raw", f"oci:{dest}:{built.app_ref}").stdout
    assert raw == built.app.manifest
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == built.app.manifest_digest
    config = json.loads(_run("skopeo", "inspect", "--config", f"oci:{dest}:{built.app_ref}").stdout)
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in built.app.layers]
    # Every blob the layout holds is named by its content.
    for blob in (dest / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_a_multi_platform_image_is_exported_as_its_platform_manifest(
    built: Built, tmp_path: Path
) -> None:
    _tool("skopeo")
    dest = tmp_path / "bundle"
    export_cache(provider=built.provider, name=built.cache_id, dest=dest)  # by id this time

    descriptor = _refs(dest)[built.multi_ref]
    assert descriptor["mediaType"] == OCI_MANIFEST
    assert descriptor["digest"] == built.multi.manifest_digest
    assert descriptor["size"] == len(built.multi.manifest)
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}
    assert descriptor["annotations"][ANNOTATION_INDEX_DIGEST] == built.multi_index
    assert all(m["mediaType"] != OCI_INDEX for m in _refs(dest).values())
    raw = _run("skopeo", "inspect", "--raw", f"oci:{dest}:{built.multi_ref}").stdout
    assert raw == built.multi.manifest
    arm_only = built.multi_index.split(":")[1]
    assert not (dest / "blobs" / "sha256" / arm_only).exists()  # only reachable blobs


def test_skopeo_copies_an_exported_image_to_a_registry_with_digests_unchanged(
    built: Built, tmp_path: Path
) -> None:
    _tool("skopeo")
    dest = tmp_path / "bundle"
    export_cache(provider=built.provider, name="bundle", dest=dest)
    target = f"{built.host}/export-copied:from-layout"

    _run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        f"oci:{dest}:{built.app_ref}",
        f"docker://{target}",
    )

    response = httpx.get(
        f"http://{built.host}/v2/export-copied/manifests/from-layout",
        headers={"Accept": OCI_MANIFEST},
    )
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == built.app.manifest_digest
    assert response.content == built.app.manifest


def test_umoci_lists_the_refs_and_unpacks_an_image(built: Built, tmp_path: Path) -> None:
    umoci = _tool("umoci")
    dest = tmp_path / "bundle"
    export_cache(provider=built.provider, name="bundle", dest=dest)

    listed = _run(umoci, "ls", "--layout", str(dest)).stdout.decode().split()
    assert sorted(listed) == sorted([built.app_ref, built.multi_ref])
    bundle = tmp_path / "unpacked"
    _run(umoci, "unpack", "--rootless", "--image", f"{dest}:{built.app_ref}", str(bundle))
    assert (bundle / "rootfs" / "etc" / "app.conf").read_bytes() == b"answer = 42\n"
    assert (bundle / "config.json").is_file()


def test_export_sets_the_last_matched_time_and_reports_what_it_wrote(
    built: Built, tmp_path: Path
) -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = export_cache(
        provider=built.provider, name="bundle", dest=tmp_path / "b", clock=moment.timestamp
    )

    (cache,) = [c for c in built.provider.state.caches() if c.cache_id == built.cache_id]
    assert cache.last_matched_at == moment
    blobs = list((tmp_path / "b" / "blobs" / "sha256").iterdir())
    assert result.blobs_copied == len(blobs)  # 2 manifests, 2 configs, 3 layers
    assert result.blobs_copied == 7
    assert result.bytes_copied == sum(b.stat().st_size for b in blobs)
    assert (result.blobs_linked, result.blobs_present) == (0, 0)
    assert result.seconds >= 0


def test_reexport_and_a_second_cache_into_one_layout_write_only_what_is_new(
    built: Built, tmp_path: Path
) -> None:
    dest = tmp_path / "bundle"
    export_cache(provider=built.provider, name="bundle", dest=dest)
    again = export_cache(provider=built.provider, name="bundle", dest=dest)
    assert (again.blobs_copied, again.blobs_present) == (0, 7)
    assert len(_refs(dest)) == 2

    # A foreign image someone added to the bundle stays; ours are replaced, not duplicated.
    foreign = dict(next(iter(_refs(dest).values())))
    foreign["annotations"] = {ANNOTATION_REF_NAME: "example.com/kept:1"}
    index = {**_index(dest), "manifests": [*_refs(dest).values(), foreign]}
    (dest / "index.json").write_text(json.dumps(index))
    export_cache(provider=built.provider, name="bundle", dest=dest)
    assert sorted(_refs(dest)) == sorted([built.app_ref, built.multi_ref, "example.com/kept:1"])


def test_link_hard_links_blobs_on_the_same_file_system(built: Built) -> None:
    dest = built.provider.data_dir / "exports" / "linked"  # surely the store's file system
    result = export_cache(provider=built.provider, name="bundle", dest=dest, link=True)

    assert result.blobs_linked == 5  # configs and layers; manifests are written from checked bytes
    layer = built.app.layers[1].digest
    exported = dest / "blobs" / "sha256" / layer.split(":")[1]
    assert os.stat(exported).st_ino == os.stat(built.provider.blobs.path(layer)).st_ino
    shutil.rmtree(dest)
    assert built.provider.blobs.has(layer)  # removing the export leaves the store intact


def test_a_damaged_store_blob_is_refused_not_exported(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    pusher = Pusher(layout=OciLayout(tmp_path / "src"), registry=registry)
    repo = pusher.repo("export-rot")
    image = pusher.push_image(repo, [random_layer(10_000, seed="rot")])
    provider = LocalProvider(data_dir=tmp_path / "data")
    try:
        provider.create(CacheSpec(name="rot", images=(f"{registry.host}/{repo}:v1",)), owner="x")
        blob = provider.blobs.path(image.layers[0].digest)
        blob.write_bytes(bytes(blob.stat().st_size))  # same size, wrong content

        with pytest.raises(
            ExportError, match=r"does not match its digest.*run `gitsync apply` to repair cache rot"
        ):
            export_cache(provider=provider, name="rot", dest=tmp_path / "out")
        assert not (tmp_path / "out" / "index.json").exists()
        leftovers = list((tmp_path / "out" / "blobs" / "sha256").glob(".tmp-*"))
        assert leftovers == []
        assert not blob.exists()  # moved aside: nothing reuses or serves it

        # What the message promises: apply (an observe, then the rebuild) repairs the cache.
        (damaged,) = provider.observe().caches
        assert damaged.status is CacheStatus.FAILED
        assert image.layers[0].digest in (damaged.snapshot_problem or "")
        spec = CacheSpec(name="rot", images=(f"{registry.host}/{repo}:v1",))
        assert provider.update(spec, damaged).status is CacheStatus.READY
        export_cache(provider=provider, name="rot", dest=tmp_path / "again")
        layer = tmp_path / "again" / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]
        assert layer.read_bytes() == image.layers[0].blob
    finally:
        provider.close()


def test_unknown_or_unbuilt_caches_and_unusable_folders_are_refused(
    built: Built, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"no cache is named or has id 'nope'.*bundle"):
        export_cache(provider=built.provider, name="nope", dest=tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty and holds no OCI layout"):
        export_cache(provider=built.provider, name="bundle", dest=busy)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_cache(provider=built.provider, name="bundle", dest=tmp_path / "file")

    pending = LocalProvider(data_dir=tmp_path / "empty-data")
    try:
        pending.state.insert_cache(
            CacheSpec(name="later", images=("nginx",)), owner="x", status=CacheStatus.PENDING
        )
        with pytest.raises(ExportError, match="is Pending and has no snapshot yet"):
            export_cache(provider=pending, name="later", dest=tmp_path / "b")
    finally:
        pending.close()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/srv/bundle", "write oci:DIR"),
        ("docker://x/y", "write oci:DIR"),
        ("oci:", "needs a folder"),
        ("oci:/srv/bundle:latest", "must not contain ':'"),
    ],
)
def test_parse_dest_says_what_would_be_valid(text: str, problem: str) -> None:
    with pytest.raises(ExportError, match=problem):
        parse_dest(text)


def test_parse_dest_accepts_an_oci_folder() -> None:
    assert parse_dest("oci:/srv/bundles/web") == Path("/srv/bundles/web")


def test_containerd_imports_the_export_under_the_full_image_names(
    built: Built, tmp_path: Path
) -> None:
    """`ctr -n k8s.io images import` names each image by its reference, as the kubelet looks up."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is missing: install Debian's containerd package")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root for its content store and snapshotter")
    dest = tmp_path / "bundle"
    export_cache(provider=built.provider, name="bundle", dest=dest)
    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(dest.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(dest)), recursive=False)
    work = Path(tempfile.mkdtemp(prefix="gitsync-ctr-"))  # short: a socket path has ~100 bytes
    (work / "config.toml").write_text(
        f'version = 2\nroot = "{work}/root"\nstate = "{work}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{work}/sock"\n'
    )
    with open(work / "log", "wb") as log:
        daemon = subprocess.Popen(
            ["containerd", "--config", str(work / "config.toml")], stdout=log, stderr=log
        )
    try:
        wait_until(
            (work / "sock").exists,
            timeout=10,
            what="containerd's socket",
            detail=lambda: (work / "log").read_text(errors="replace")[-2000:],
        )
        ctr = ["ctr", "--address", str(work / "sock"), "-n", "k8s.io", "images"]
        _run(*ctr, "import", "--snapshotter", "native", str(archive))
        listed = _run(*ctr, "ls").stdout.decode().splitlines()[1:]
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    names = dict(line.split()[:3:2] for line in listed)
    assert names == {
        built.app_ref: built.app.manifest_digest,
        built.multi_ref: built.multi.manifest_digest,
    }


def test_a_docker_format_image_keeps_its_bytes_and_media_type(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    _tool("skopeo")
    layout = OciLayout(tmp_path / "src")
    layout.add_image([small_layer("docker-format")], tag="src")
    repo = f"export-docker-{os.getpid()}"
    _run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        f"oci:{layout.root}:src",
        f"docker://{registry.host}/{repo}:v1",
    )
    upstream = httpx.get(
        f"http://{registry.host}/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST}
    )
    assert upstream.headers["Content-Type"] == DOCKER_MANIFEST
    provider = LocalProvider(data_dir=tmp_path / "data")
    try:
        provider.create(CacheSpec(name="d", images=(f"{registry.host}/{repo}:v1",)), owner="x")
        dest = tmp_path / "bundle"
        export_cache(provider=provider, name="d", dest=dest)
    finally:
        provider.close()

    (descriptor,) = _refs(dest).values()
    assert descriptor["mediaType"] == DOCKER_MANIFEST
    assert descriptor["digest"] == upstream.headers["Docker-Content-Digest"]
    stored = dest / "blobs" / "sha256" / str(descriptor["digest"]).split(":")[1]
    assert stored.read_bytes() == upstream.content

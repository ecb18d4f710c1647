"""`gitsync plan`'s size check as a process, against Debian's docker-registry.

How the "too small" case is made honest without 20 GiB of real image: one
layer is an 18 GiB file of zeros, gzipped as many concatenated gzip members
of 1 MiB each (valid gzip, RFC 1952 §2.2, and what the pull decompresses), so
the blob is about 20 MiB. A real `gitsync apply` pulls it into the local store,
verifying its diff_id and counting its expanded bytes as it would any layer;
the plan then reads that count (exact), so nothing about the sizes is faked.
Building and pulling it hashes and inflates 19 GiB once per session: slow.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    OCI_LAYER_GZIP,
    FaultProxy,
    Layer,
    OciLayout,
    Pusher,
    RegistryProcess,
    free_port,
    random_layer,
    skopeo_push,
    small_layer,
)

pytestmark = pytest.mark.registry

GIB = 1024**3
MIB = 1024**2
ZEROS_GIB = 19


def gitsync(
    *args: str, data: Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    env["GITSYNC_DATA_DIR"] = str(data)
    env["HOME"] = str(cwd)  # no docker config of the machine's user
    return subprocess.run(
        [sys.executable, "-m", "gitsync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_cache(folder: Path, name: str, *images: str, size: int = 20, secrets: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pull_secrets = f"  imagePullSecrets: [{secrets}]\n" if secrets else ""
    (folder / f"{name}.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n"
        f"  images: [{', '.join(images)}]\n  imageCacheSize: {size}\n{pull_secrets}"
    )


def plan_json(repo: Path, data: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    done = gitsync("plan", "--repo", str(repo), "--format", "json", *extra, data=data, cwd=repo)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def size_of(report: dict[str, object], name: str) -> dict[str, object]:
    check = report["sizeCheck"]
    assert isinstance(check, dict)
    [entry] = [c for c in check["caches"] if c["name"] == name]
    return entry


# -- the big image ------------------------------------------------------------------


def zeros_file_layer(expanded_gib: int) -> Layer:
    """A layer holding one file of `expanded_gib` GiB of zeros, as 1 MiB gzip members."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = expanded_gib * GIB
    info.mtime = 0
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    tail = bytes(1024)  # end of archive: two zero blocks (the file needs no padding)
    zeros = bytes(MIB)
    zero_member = gzip.compress(zeros, compresslevel=9, mtime=0)
    blob = io.BytesIO()
    blob.write(gzip.compress(header, mtime=0))
    diff_id = hashlib.sha256(header)
    for _ in range(expanded_gib * 1024):
        blob.write(zero_member)
        diff_id.update(zeros)
    blob.write(gzip.compress(tail, mtime=0))
    diff_id.update(tail)
    expanded = len(header) + info.size + len(tail)
    return Layer(blob.getvalue(), OCI_LAYER_GZIP, "sha256:" + diff_id.hexdigest(), expanded)


@dataclass(frozen=True)
class PulledBig:
    image: str
    layer: Layer
    data: Path  # a data dir whose store holds the layer, and cache "seed" of 30 GiB


@pytest.fixture(scope="module")
def pulled_big(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> PulledBig:
    root = tmp_path_factory.mktemp("big")
    layer = zeros_file_layer(ZEROS_GIB)
    layout = OciLayout(root / "layout")
    layout.add_image([layer], tag="big")
    image = f"{registry.host}/size-big:v1"
    skopeo_push(layout, "big", image)
    seed = root / "seed"
    write_cache(seed, "seed", image, size=30)
    data = root / "data"
    done = gitsync("apply", "--repo", str(seed), data=data, cwd=root, timeout=280)
    assert done.returncode == 0, done.stderr
    return PulledBig(image=image, layer=layer, data=data)


@pytest.mark.slow
def test_a_cache_too_small_for_its_pulled_images_fails_the_plan_until_raised(
    pulled_big: PulledBig, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_cache(repo, "seed", pulled_big.image, size=30)  # unchanged: not checked
    write_cache(repo, "big", pulled_big.image, size=20)

    done = gitsync("plan", "--repo", str(repo), data=pulled_big.data, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert error.strip().startswith("big.yaml:")
    assert error.endswith("[size-fit]")
    assert "cache 'big' cannot fit its images" in error
    assert "imageCacheSize 20 GiB" in error
    assert "they need 19.0 GiB on disk" in error  # 20 MiB compressed + 19 GiB expanded
    assert "expanded sizes exact, from the local store" in error

    # --detailed-exitcode would say 2 (changes): the error wins.
    again = gitsync(
        "plan", "--repo", str(repo), "--detailed-exitcode", data=pulled_big.data, cwd=tmp_path
    )
    assert again.returncode == 1

    code, report, _ = plan_json(repo, pulled_big.data)
    assert code == 1
    big = size_of(report, "big")
    assert big["exact"] is True
    assert big["expandedBytes"] == pulled_big.layer.expanded_size
    assert big["compressedBytes"] == pulled_big.layer.size
    assert big["fit"] == "too-small"
    assert report["sizeCheck"]["ok"] is False  # type: ignore[index]
    assert [c["name"] for c in report["sizeCheck"]["caches"]] == ["big"]  # type: ignore[index]

    markdown = gitsync(
        "plan", "--repo", str(repo), "--format", "markdown", data=pulled_big.data, cwd=tmp_path
    )
    assert markdown.returncode == 1
    assert "**Size check failed:**" in markdown.stdout
    assert "| `big` | 1 |" in markdown.stdout
    assert ":x: **error**" in markdown.stdout

    # Raised, but with less than 20 % headroom: a warning, exit 0.
    write_cache(repo, "big", pulled_big.image, size=24)
    code, report, _ = plan_json(repo, pulled_big.data)
    assert code == 0
    big = size_of(report, "big")
    assert big["fit"] == "tight"
    assert 0 < big["headroom"] < 0.2  # type: ignore[operator]
    [warning] = report["sizeCheck"]["diagnostics"]  # type: ignore[index]
    assert warning["severity"] == "warning"
    assert warning["rule"] == "size-fit"
    assert "headroom" in warning["message"]

    # Raised enough: no diagnostic at all.
    write_cache(repo, "big", pulled_big.image, size=32)
    done = gitsync("plan", "--repo", str(repo), data=pulled_big.data, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[size-fit]" not in done.stdout
    assert " fits" in done.stdout


# -- estimates, requests, failures -------------------------------------------------


def test_each_manifest_is_fetched_once_and_unpulled_sizes_are_estimated(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo_name = pusher.repo("multi")
    amd64 = [random_layer(300_000, seed="size-a"), small_layer("size-amd")]
    arm64 = [random_layer(200_000, seed="size-b")]
    index_digest, built = pusher.push_index(
        repo_name, [("linux/amd64", amd64), ("linux/arm64", arm64)]
    )
    other = pusher.repo("single")
    pusher.push_image(other, [amd64[0], small_layer("size-other")])  # shares a layer
    with FaultProxy(pusher.registry.host) as proxy:
        tag = f"{proxy.host}/{repo_name}:v1"
        pinned = f"{proxy.host}/{repo_name}@{index_digest}"
        repo = tmp_path / "repo"
        write_cache(repo, "one", tag, f"{proxy.host}/{other}:v1")
        write_cache(repo, "two", tag)
        write_cache(repo, "three", pinned)
        code, report, stderr = plan_json(repo, tmp_path / "data")
        hits = dict(proxy.hits)
        text = gitsync("plan", "--repo", str(repo), data=tmp_path / "data", cwd=tmp_path)
    assert code == 0, stderr
    manifest_gets = {path: n for path, n in hits.items() if "/manifests/" in path}
    assert manifest_gets == {
        f"/v2/{repo_name}/manifests/v1": 1,
        f"/v2/{repo_name}/manifests/{built['linux/amd64'].manifest_digest}": 1,
        f"/v2/{other}/manifests/v1": 1,
    }
    assert not [p for p in hits if "/blobs/" in p]  # sizes come from manifests alone

    one = size_of(report, "one")
    shared = amd64[0].size + amd64[1].size + small_layer("size-other").size
    assert one["compressedBytes"] == shared  # the shared layer counts once
    assert one["exact"] is False
    assert one["fit"] == "fits"
    assert one["expandedBytesMin"] < one["expandedBytes"]
    assert size_of(report, "three")["compressedBytes"] == amd64[0].size + amd64[1].size
    assert report["sizeCheck"]["diagnostics"] == []  # type: ignore[index]
    assert not (tmp_path / "data").exists()  # the plan wrote nothing

    assert " est. " in text.stdout
    assert "monthly +" in text.stdout
    assert "one-off +" in text.stdout


def test_the_platform_flag_picks_the_manifest_measured(pusher: Pusher, tmp_path: Path) -> None:
    repo_name = pusher.repo("arch")
    arm64 = [random_layer(123_456, seed="size-arm")]
    pusher.push_index(
        repo_name, [("linux/amd64", [small_layer("size-x86")]), ("linux/arm64", arm64)]
    )
    repo = tmp_path / "repo"
    write_cache(repo, "arm", f"{pusher.registry.host}/{repo_name}:v1")
    code, report, _ = plan_json(repo, tmp_path / "data", "--platform", "linux/arm64")
    assert code == 0
    assert size_of(report, "arm")["compressedBytes"] == arm64[0].size


def test_an_unreachable_registry_is_a_warning_that_the_check_was_skipped(
    tmp_path: Path,
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    repo = tmp_path / "repo"
    write_cache(repo, "web", f"{dead}/app:v1")
    done = gitsync("plan", "--repo", str(repo), data=tmp_path / "data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    [warning] = [line for line in done.stdout.splitlines() if ": warning: " in line]
    assert "size check skipped for 1 of 1 images of cache 'web'" in warning
    assert f"{dead}/app:v1: " in warning
    assert "Connection refused" in warning
    assert warning.endswith("[size-fit]")

    detailed = gitsync(
        "plan", "--repo", str(repo), "--detailed-exitcode", data=tmp_path / "data", cwd=tmp_path
    )
    assert detailed.returncode == 2  # changes; a warning does not change the exit

    off = gitsync(
        "plan", "--repo", str(repo), "--no-size-check", data=tmp_path / "data", cwd=tmp_path
    )
    assert off.returncode == 0
    assert "Size check: off (--no-size-check)." in off.stdout
    assert "[size-fit]" not in off.stdout


def test_pull_secrets_of_the_cache_are_used_to_read_private_manifests(
    pusher: Pusher, basic_registry: RegistryProcess, tmp_path: Path
) -> None:
    repo_name = pusher.repo("private")
    layer = small_layer("size-private")
    pusher.push_image(repo_name, [layer])  # the same storage serves basic_registry
    secrets = tmp_path / "secrets"
    (secrets / "team").mkdir(parents=True)
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    config = json.dumps({"auths": {basic_registry.host: {"auth": auth}}}).encode()
    (secrets / "team/regcred.yaml").write_text(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\n"
        f"data:\n  .dockerconfigjson: {base64.b64encode(config).decode()}\n"
    )
    image = f"{basic_registry.host}/{repo_name}:v1"
    repo = tmp_path / "repo"
    # Caches are checked in name order: the one without the secret asks first (401),
    # then the image is read with the other cache's secret.
    write_cache(repo, "a-without", image)
    write_cache(repo, "b-with", image, secrets="team/regcred")
    code, report, _ = plan_json(repo, tmp_path / "data", "--secrets-dir", str(secrets))
    assert code == 0
    # The size does not depend on who asks: known for both, no warning for either.
    assert size_of(report, "a-without")["compressedBytes"] == layer.size
    assert size_of(report, "b-with")["compressedBytes"] == layer.size
    assert report["sizeCheck"]["diagnostics"] == []  # type: ignore[index]

    write_cache(repo, "b-with", image)  # now nobody has the secret
    code, report, _ = plan_json(repo, tmp_path / "data", "--secrets-dir", str(secrets))
    assert code == 0
    messages = [d["message"] for d in report["sizeCheck"]["diagnostics"]]  # type: ignore[index]
    assert len(messages) == 2
    assert all("401 Unauthorized" in m for m in messages)
    assert BASIC_PASSWORD not in json.dumps(report)

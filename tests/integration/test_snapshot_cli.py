"""A CBS snapshot deleted behind gitsync's back, as a user meets it: `gitsync` processes.

The issue's "done when": on the Tencent backend, a snapshot deleted behind
gitsync's back leads to the cache being recreated. Here with the real entry
point, `python -m gitsync`, flags and environment as a user gives them, against
the TKE emulator in this process (which also answers CBS and checks every
signature): `apply --wait` builds two caches; the snapshot of one is deleted in
CBS; `plan` shows the rebuild, why and what it costs once; `apply --wait`
rebuilds it with a new snapshot. Then the same with `gitsync run`, which also
counts the check in `gitsync_snapshot_checks_total{result="missing"}`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("tencentcloud.cbs.v20170312", reason="needs the extra 'tencent'")

from gitrepo import git
from oci_images import free_port
from tke_fixtures import PROXY_VARIABLES, REGION, SECRET_ID, SECRET_KEY, TkeEmulator
from waiting import wait_until

pytestmark = pytest.mark.slow  # several `python -m gitsync` processes, ~1 s each

VPC_ID = "vpc-1"
SUBNET_ID = "subnet-1"
READY_AFTER = 0.5  # seconds a create stays Pending in the emulator
CACHES = {"web": "nginx:1.27.2", "api": "redis:7.4.1"}
CACHE_DOC = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: {name}
spec:
  images: [{image}]
"""


def make_repo(root: Path) -> str:
    root.mkdir(parents=True)
    for name, image in CACHES.items():
        (root / f"{name}.yaml").write_text(CACHE_DOC.format(name=name, image=image))
    git("init", "-q", "-b", "main", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-qm", "two caches", cwd=root)
    return git("rev-parse", "HEAD", cwd=root)


def child_env() -> dict[str, str]:
    dropped = ("GITSYNC_", "TENCENTCLOUD_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in PROXY_VARIABLES and k.lower() != "no_proxy"
    }
    return {**env, "TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}


def tencent_flags(tke: TkeEmulator, data: Path) -> list[str]:
    return [
        "--provider", "tencentcloud",
        "--region", REGION,
        "--vpc-id", VPC_ID,
        "--subnet-id", SUBNET_ID,
        "--tencentcloud-endpoint", tke.endpoint,
        "--tencentcloud-cbs-endpoint", tke.cbs_endpoint,
        "--tencentcloud-scheme", "http",
        "--data-dir", str(data),
    ]  # fmt: skip


def gitsync(
    command: str, *args: str, tke: TkeEmulator, data: Path
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gitsync", command, *tencent_flags(tke, data), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ids(tke: TkeEmulator) -> dict[str, str]:
    return {c["ImageCacheName"]: c["ImageCacheId"] for c in tke.caches()}


@dataclass
class Setup:
    tke: TkeEmulator
    repo: Path
    data: Path
    head: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    repo = tmp_path / "repo"
    head = make_repo(repo)
    # Only the children speak to the emulator, with child_env's proxy-free environment.
    with TkeEmulator(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, region=REGION, ready_after=READY_AFTER
    ) as tke:
        yield Setup(tke, repo, tmp_path / "data", head)


def test_plan_and_apply_rebuild_a_cache_whose_snapshot_was_deleted(setup: Setup) -> None:
    tke, repo, data = setup.tke, setup.repo, setup.data
    built = gitsync("apply", "--repo", str(repo), "--wait", "--timeout", "60s", tke=tke, data=data)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"converged at {setup.head}" in built.stdout
    before = ids(tke)
    gone = tke.snapshot_of(before["web"])
    assert gone is not None
    tke.delete_snapshot(gone)  # someone with the rights, in the CBS console
    tke.reset_calls()

    text = gitsync("plan", "--repo", str(repo), "--detailed-exitcode", tke=tke, data=data)
    as_json = gitsync("plan", "--repo", str(repo), "--format", "json", tke=tke, data=data)
    status = gitsync("status", "--format", "json", tke=tke, data=data)

    assert text.returncode == 2, text.stdout + text.stderr  # changes
    reason = f"snapshot {gone} is gone (DescribeSnapshots)"
    (line,) = [line for line in text.stdout.splitlines() if "recreate" in line and "web" in line]
    assert reason in line
    assert "0 to create, 0 to update, 1 to recreate, 0 to delete" in text.stdout
    plan = json.loads(as_json.stdout)
    (recreate,) = [a for a in plan["actions"] if a["action"] == "recreate"]
    assert (recreate["name"], recreate["reason"]) == ("web", reason)
    assert recreate["cost"]["oneOff"] > 0
    assert plan["cost"]["oneOff"] == recreate["cost"]["oneOff"]
    (cost_line,) = [line for line in text.stdout.splitlines() if line.startswith("Cost delta:")]
    one_off = re.search(r"one-off \+([0-9.]+) ", cost_line)
    assert one_off is not None, cost_line
    assert float(one_off.group(1)) > 0
    caches = {c["name"]: c for c in json.loads(status.stdout)["caches"]}
    assert caches["web"]["status"] == "Failed"
    assert caches["web"]["events"][-1]["reason"] == "SnapshotMissing"
    assert gone in caches["web"]["events"][-1]["message"]
    assert caches["api"]["status"] == "Ready"
    # Each one-shot command checked once: one DescribeSnapshots for both caches, at the CBS host.
    assert tke.count("DescribeSnapshots") == 3
    assert {c.host for c in tke.cbs_calls} == {tke.cbs_endpoint}
    assert {len(c.params["SnapshotIds"]) for c in tke.cbs_calls} == {2}
    assert set(tke.counts()) == {"DescribeImageCaches"}  # planning and status write nothing

    rebuilt = gitsync(
        "apply", "--repo", str(repo), "--wait", "--timeout", "60s", tke=tke, data=data
    )

    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"converged at {setup.head}" in rebuilt.stdout
    after = ids(tke)
    assert after["api"] == before["api"]
    assert after["web"] != before["web"]  # a new cache: only a new one gets a new snapshot
    fresh = tke.snapshot_of(after["web"])
    assert fresh is not None
    assert fresh != gone
    assert fresh in {s["SnapshotId"] for s in tke.snapshots()}
    assert [c["Status"] for c in tke.caches()] == ["Ready", "Ready"]
    again = gitsync("plan", "--repo", str(repo), "--detailed-exitcode", tke=tke, data=data)
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_daemon_rebuilds_it_and_counts_the_missing_snapshot(setup: Setup) -> None:
    tke, data = setup.tke, setup.data
    port = free_port()
    log = data.parent / "daemon.log"
    data.mkdir()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gitsync", "run",
                *tencent_flags(tke, data),
                "--repo", str(setup.repo),
                "--interval", "1s",
                "--snapshot-check-interval", "1s",
                "--listen", f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return log.read_text()[-3000:]

    def status() -> dict[str, dict[str, object]] | None:
        assert process.poll() is None, tail()
        try:
            found = httpx.get(f"{base}/api/v1/status", timeout=5).json()
        except httpx.TransportError:
            return None
        return {c["name"]: c for c in found["caches"]}

    def checks() -> dict[str, float]:
        found = {}
        for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
            if line.startswith("gitsync_snapshot_checks_total{"):
                series, _, value = line.rpartition(" ")
                found[series.split('"')[1]] = float(value)
        return found

    def all_ready(
        other_than: str | None = None,
    ) -> dict[str, dict[str, object]] | None:
        """Both caches Ready (and web no longer `other_than`), or None."""
        caches = status()
        if caches is None or len(caches) != 2:
            return None
        if {c["status"] for c in caches.values()} != {"Ready"}:
            return None
        return None if caches["web"]["id"] == other_than else caches

    try:
        first = wait_until(all_ready, timeout=60, what="two Ready caches", detail=tail)
        assert checks()["missing"] == 0
        gone = str(first["web"]["snapshotId"])
        tke.delete_snapshot(gone)

        rebuilt = wait_until(
            lambda: all_ready(other_than=str(first["web"]["id"])),
            timeout=60,
            what="web rebuilt with a new cache",
            detail=tail,
        )
        counted = checks()
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert process.returncode == 0, tail()
    assert counted["missing"] >= 1
    assert counted["ok"] >= 2
    assert rebuilt["api"]["id"] == first["api"]["id"]
    assert rebuilt["web"]["snapshotId"] != gone
    assert f"snapshot {gone} is gone (DescribeSnapshots)" in log.read_text()
    assert {c.host for c in tke.cbs_calls} == {tke.cbs_endpoint}

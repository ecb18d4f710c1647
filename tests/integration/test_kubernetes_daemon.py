"""`gitsync run --provider kubernetes` as processes, with leader election, on kmock's emulator.

Two replicas share one Lease: the leader applies the repository's ImageCaches, the
follower stays ready and writes nothing; SIGTERM releases the Lease and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from kube_fixtures import KubeServer
from oci_images import free_port

GROUP = "eks.cloud.tencent.com"


def cache_doc(name: str, image: str) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images: [{image}]\n"
    )


def start(
    tmp_path: Path, kubeconfig: Path, repo: Path, who: str
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITSYNC_", "KUBECONFIG"))}
    log = open(tmp_path / f"{who}.log", "w")  # noqa: SIM115  # closed with the process below
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gitsync", "run",
            "--provider", "kubernetes",
            "--kubeconfig", str(kubeconfig),
            "--repo", str(repo),
            "--interval", "3600s",
            "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(tmp_path / f"data-{who}"),
            "--leader-elect", "true",
            "--leader-election-namespace", "gitsync-system",
            "--leader-election-identity", who,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip
    log.close()
    return process, f"http://127.0.0.1:{port}"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_leader_applies_follower_waits_and_sigterm_releases(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "web.yaml").write_text(cache_doc("web", "nginx:1.27.2"))
    (repo / "tools.yaml").write_text(cache_doc("tools", "busybox:1.36.1"))
    with KubeServer() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        leader, leader_url = start(tmp_path, kubeconfig, repo, "replica-a")
        try:
            wait_for(
                "the leader's caches",
                lambda: kube.api.names(GROUP, "imagecaches") == {"web", "tools"},
            )
            web = kube.api.get(GROUP, "imagecaches", None, "web")
            assert web["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gitsync"
            assert web["spec"]["images"] == ["nginx:1.27.2"]
            follower, follower_url = start(tmp_path, kubeconfig, repo, "replica-b")
            try:
                wait_for(
                    "a ready follower",
                    lambda: httpx.get(follower_url + "/readyz").status_code == 200,
                )
                assert httpx.get(leader_url + "/readyz").status_code == 200
                lease = kube.api.get(
                    "coordination.k8s.io", "leases", "gitsync-system", "gitsync-leader"
                )
                assert lease["spec"]["holderIdentity"] == "replica-a"
                follower_log = (tmp_path / "replica-b.log").read_text()
                assert "became the leader" not in follower_log
            finally:
                follower.send_signal(signal.SIGTERM)
                assert follower.wait(timeout=30) == 0
            leader.send_signal(signal.SIGTERM)
            assert leader.wait(timeout=30) == 0
            lease = kube.api.get(
                "coordination.k8s.io", "leases", "gitsync-system", "gitsync-leader"
            )
            assert not lease["spec"].get("holderIdentity")  # released on the way out
        finally:
            for process in (leader,):
                if process.poll() is None:
                    process.kill()
                    process.wait()

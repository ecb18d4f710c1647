"""`gitsync run` as a process: real git remote, real registry, webhooks, safety rules, SIGTERM.

The daemon polls only once an hour here, so every pass after the first is
caused by a signed webhook: that is also how the test proves webhooks work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gitrepo import git
from oci_images import Pusher, free_port, small_layer
from waiting import wait_until

SECRET = "whsec-planted-7f3a9c"  # a marked secret: it must never show up in any output


def cache_doc(name: str, *images: str) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images: [{', '.join(images)}]\n"
    )


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    base: str
    work: Path
    data: Path
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=5)

    def hook(
        self, body: bytes, *, signature: str | None = None, event: str = "push"
    ) -> httpx.Response:
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": f"sha256={digest}" if signature is None else signature,
            "Content-Type": "application/json",
        }
        return httpx.post(self.base + "/hooks/github", content=body, headers=headers, timeout=5)

    def push(self, message: str, *, branch: str = "main") -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:{branch}", cwd=self.work)
        revision = git("rev-parse", "HEAD", cwd=self.work)
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": revision}).encode()
        assert self.hook(body).status_code == 202
        return revision

    def status(self) -> dict[str, object]:
        return dict(self.get("/api/v1/status").json())

    def wait_for(self, what: str, check: Callable[[dict[str, object]], bool]) -> dict[str, object]:
        deadline = time.monotonic() + 60
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            status = self.status()
            if check(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(status)[:2000]}")

    def metric(self, name: str) -> float | None:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def metrics(self, prefix: str) -> dict[str, float]:
        """Every sample whose name starts with `prefix`, keyed by name and labels as printed."""
        samples = {}
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(prefix):
                series, _, value = line.rpartition(" ")
                samples[series] = float(value)
        return samples


def caches_of(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in status["caches"]}  # type: ignore[index, union-attr]


@pytest.fixture
def daemon(tmp_path: Path, pusher: Pusher) -> Iterator[Daemon]:
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    (work / "caches").mkdir()
    repos = [pusher.repo(f"d{i}") for i in range(3)]
    for i, repo in enumerate(repos):
        pusher.push_image(repo, [small_layer(f"daemon-{i}")])
    images = [f"{pusher.registry.host}/{repo}:v1" for repo in repos]
    (work / "caches/web.yaml").write_text(cache_doc("web", images[0]))
    (work / "caches/tools.yaml").write_text(cache_doc("tools", images[1]))
    git("add", "-A", cwd=work)
    git("commit", "-qm", "two caches", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gitsync", "run",
                "--repo", f"file://{bare}",
                "--branch", "main",
                "--interval", "3600s",
                "--listen", f"127.0.0.1:{port}",
                "--webhook-secret-file", str(secret_file),
                "--data-dir", str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
    running = Daemon(process, f"http://127.0.0.1:{port}", work, data, log)
    running.images = images  # type: ignore[attr-defined]

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return running.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(
            ready, timeout=30, what="/readyz", detail=lambda: log.read_text()[-3000:], interval=0.1
        )
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_daemon_keeps_caches_equal_to_git(daemon: Daemon) -> None:
    images: list[str] = daemon.images  # type: ignore[attr-defined]
    first = daemon.wait_for(
        "two Ready caches",
        lambda s: [c["status"] for c in caches_of(s).values()] == ["Ready", "Ready"],
    )
    revision_1 = git("rev-parse", "HEAD", cwd=daemon.work)
    assert first["appliedRevision"] == revision_1
    assert daemon.metric("gitsync_spec_valid") == 1

    # Changing images updates the cache.
    (daemon.work / "caches/web.yaml").write_text(cache_doc("web", images[0], images[2]))
    revision_2 = daemon.push("web gets a second image")
    status = daemon.wait_for("the update", lambda s: s["appliedRevision"] == revision_2)
    web = caches_of(status)["web"]
    assert web["images"] == [images[0], images[2]]
    assert web["status"] == "Ready"

    # An invalid commit changes and deletes nothing; the metric drops to 0.
    (daemon.work / "caches/tools.yaml").unlink()
    (daemon.work / "caches/web.yaml").write_text(cache_doc("web", "NOT A REFERENCE"))
    revision_3 = daemon.push("broken")
    status = daemon.wait_for("the invalid revision", lambda s: s["newestRevision"] == revision_3)
    assert status["appliedRevision"] == revision_2
    assert status["specValid"] is False
    assert set(caches_of(status)) == {"web", "tools"}
    assert daemon.metric("gitsync_spec_valid") == 0
    assert "caches/web.yaml:6:" in json.dumps(status["diagnostics"])

    # A fixed commit applies (and removes tools: 1 of 2 is within the default ratio).
    (daemon.work / "caches/web.yaml").write_text(cache_doc("web", images[0]))
    revision_4 = daemon.push("fixed")
    status = daemon.wait_for("the fix", lambda s: s["appliedRevision"] == revision_4)
    assert set(caches_of(status)) == {"web"}
    assert daemon.metric("gitsync_spec_valid") == 1

    # A cache deleted behind gitsync's back comes back on the next pass.
    web_id = caches_of(status)["web"]["id"]
    with sqlite3.connect(daemon.data / "state.db") as db:
        db.execute("DELETE FROM caches WHERE id = ?", (web_id,))
    assert daemon.hook(json.dumps({"ref": "refs/heads/main"}).encode()).status_code == 202
    status = daemon.wait_for(
        "the restored cache",
        lambda s: (
            caches_of(s).get("web", {}).get("id") not in (None, web_id)
            and caches_of(s)["web"]["status"] == "Ready"
        ),
    )

    # A commit that deletes every cache is refused by the guard.
    (daemon.work / "caches/web.yaml").unlink()
    revision_5 = daemon.push("delete everything")
    status = daemon.wait_for("the refusal", lambda s: s["newestRevision"] == revision_5)
    assert "--allow-mass-delete" in str(status["lastError"])
    assert set(caches_of(status)) == {"web"}
    assert status["appliedRevision"] == revision_4

    # SIGTERM drains and exits 0; nothing secret was logged.
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
    log = daemon.log.read_text()
    assert SECRET not in log
    for line in log.splitlines():
        json.loads(line)  # every log line is JSON when stdout is not a terminal


def test_webhook_signatures_and_branches(daemon: Daemon) -> None:
    """Forged and off-branch webhooks are answered and counted, and queue no pass.

    The server counts a request and queues its trigger before it answers, so
    both counters are read as soon as the answers are in: no waiting.
    """
    daemon.wait_for("the first pass", lambda s: s["appliedRevision"] is not None)
    webhook = 'gitsync_webhook_requests_total{hook="github",outcome="%s"}'
    triggers = "gitsync_triggers_total"
    before = daemon.metrics("gitsync_")
    assert before[triggers + '{source="start"}'] == 1

    body = json.dumps({"ref": "refs/heads/main"}).encode()
    forged = daemon.hook(body, signature="sha256=" + "0" * 64)
    unsigned = daemon.hook(body, signature="")
    other = daemon.hook(json.dumps({"ref": "refs/heads/feature"}).encode())
    assert forged.status_code == unsigned.status_code == 401
    assert "X-Hub-Signature-256" in forged.json()["error"]
    assert other.status_code == 202  # accepted, but ignored: another branch
    assert other.json() == {"triggered": False, "reason": "ignored: push to refs/heads/feature"}

    after = daemon.metrics("gitsync_")
    moved = {k: after[k] - before[k] for k in after if k.startswith(("gitsync_webhook", triggers))}
    assert {k: v for k, v in moved.items() if v} == {
        webhook % "unauthorized": 2,
        webhook % "ignored": 1,
    }

    # The same counters see a signed push to the branch at once: they are live.
    triggered = daemon.hook(body)
    assert triggered.status_code == 202
    assert triggered.json() == {"triggered": True}
    last = daemon.metrics("gitsync_")
    assert last[webhook % "triggered"] == after[webhook % "triggered"] + 1
    assert last[triggers + '{source="webhook"}'] == after[triggers + '{source="webhook"}'] + 1
    assert daemon.get("/healthz").status_code == 200
    assert daemon.get("/nothing").status_code == 404


def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    daemon.wait_for("the first pass", lambda s: s["appliedRevision"] is not None)
    done = subprocess.run(
        [sys.executable, "-m", "gitsync", "run", "--repo", str(tmp_path / "remote.git"),
         "--data-dir", str(daemon.data), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "in use by another gitsync process" in done.stderr


def test_match_api_and_mirror_are_served_and_counted(daemon: Daemon) -> None:
    images: list[str] = daemon.images  # type: ignore[attr-defined]
    daemon.wait_for(
        "two Ready caches",
        lambda s: [c["status"] for c in caches_of(s).values()] == ["Ready", "Ready"],
    )
    answer = httpx.post(daemon.base + "/api/v1/match", json={"images": [images[0]]}, timeout=5)
    assert answer.status_code == 200
    decision = answer.json()
    assert decision["result"] == "hit"
    assert decision["cache"] == "web"
    miss = httpx.post(daemon.base + "/api/v1/match", json={"images": ["busybox:9"]}, timeout=5)
    assert miss.json()["result"] == "miss"
    assert daemon.metric('gitsync_cache_lookups_total{cache="web",result="hit"}') == 1
    assert daemon.metric('gitsync_cache_lookups_total{cache="",result="miss"}') == 1
    bad = httpx.post(daemon.base + "/api/v1/match", json={"images": "nope"}, timeout=5)
    assert bad.status_code == 400
    status = daemon.wait_for(
        "the last matched time", lambda s: caches_of(s)["web"]["lastMatchedAt"] is not None
    )
    assert caches_of(status)["tools"]["lastMatchedAt"] is None

    # The registry mirror answers the distribution API over the same listener.
    root = daemon.get("/v2/")
    assert root.status_code == 200
    name, tag = images[1].split("/", 1)[1].rsplit(":", 1)
    manifest = httpx.get(
        f"{daemon.base}/v2/{name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"].startswith("sha256:")
    assert daemon.get("/v2/not/cached/manifests/v1").status_code == 404

"""Moving tags and image policies end to end: `gitsync run`, a real registry, a real git remote.

The issue's "done when", as processes against Debian's `docker-registry` and a
bare git repository:

* a cache of `app:1` annotated `gitsync.io/refresh: 10s`: re-pushing `app:1`
  upstream makes the daemon's `/v2/` mirror serve the new digest within a
  minute, with a `DigestChanged` event, and Git untouched;
* `api:1.4.0   # gitsync: semver=~1.4` with tags 1.4.0, 1.4.3 and 1.5.0 in the
  registry: `--automation-branch auto` puts `api:1.4.3` (not 1.5.0) on branch
  `auto`, marker kept, the tracked branch left alone; once `auto` is merged the
  cache holds 1.4.3 and, nothing being pending any more, `auto` is deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gitrepo import git
from oci_images import Pusher, free_port, small_layer
from waiting import wait_until

REFRESHED = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: web
  annotations:
    gitsync.io/refresh: 10s
spec:
  images:
    - {image}
"""

POLICY = """\
# The API team's cache: the policy moves it along the 1.4 line.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: api
  annotations:
    gitsync.io/refresh: 5s
spec:
  images:
    - {image}:1.4.0   # gitsync: semver=~1.4
"""


@dataclass
class Running:
    base: str
    bare: Path
    work: Path
    log: Path
    process: subprocess.Popen[str]

    def status(self) -> dict[str, object]:
        return dict(httpx.get(self.base + "/api/v1/status", timeout=5).json())

    def cache(self, name: str) -> dict[str, object]:
        caches = [c for c in self.status()["caches"] if c["name"] == name]  # type: ignore[union-attr]
        return dict(caches[0]) if caches else {}

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    started: list[Running] = []

    def run(files: dict[str, str], *flags: str) -> Running:
        bare = tmp_path / "remote.git"
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
        work = tmp_path / "work"
        git("clone", "-q", str(bare), str(work), cwd=tmp_path)
        git("checkout", "-q", "-b", "main", cwd=work)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git("add", "-A", cwd=work)
        git("commit", "-qm", "caches", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        port, log = free_port(), tmp_path / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
        with open(log, "w") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "gitsync", "run",
                    "--repo", f"file://{bare}", "--branch", "main", "--interval", "2s",
                    "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
                    *flags,
                ],
                stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
        running = Running(f"http://127.0.0.1:{port}", bare, work, log, process)
        started.append(running)
        return running

    yield run
    for running in started:
        running.process.terminate()
        running.process.wait(timeout=30)


def served_digest(running: Running, registry: str, repository: str, tag: str) -> str | None:
    answer = httpx.get(
        f"{running.base}/v2/{repository}/manifests/{tag}?ns={registry}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    )
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None


def test_a_re_pushed_tag_is_served_with_its_new_digest_within_a_minute(
    start: object, pusher: Pusher
) -> None:
    repository = pusher.repo("drift-app")
    registry = pusher.registry.host
    old = pusher.push_image(repository, [small_layer("drift-old")], tag="1")
    image = f"{registry}/{repository}:1"
    running = start({"caches/web.yaml": REFRESHED.format(image=image)})  # type: ignore[operator]

    def serving(digest: str) -> bool:
        running.alive()
        try:
            return served_digest(running, registry, repository, "1") == digest
        except httpx.TransportError:
            return False

    wait_until(lambda: serving(old.manifest_digest), timeout=60, what="the first build")
    revision = git("rev-parse", "main", cwd=running.bare)

    new = pusher.push_image(repository, [small_layer("drift-new")], tag="1")
    assert new.manifest_digest != old.manifest_digest
    wait_until(
        lambda: serving(new.manifest_digest),
        timeout=60,
        what="the new digest through the mirror",
        detail=lambda: running.log.read_text()[-3000:],
    )

    web = running.cache("web")
    assert web["status"] == "Ready"
    moved = [e for e in web["events"] if e["reason"] == "DigestChanged"]  # type: ignore[union-attr]
    assert moved, web["events"]
    assert old.manifest_digest in moved[-1]["message"]
    assert new.manifest_digest in moved[-1]["message"]
    (row,) = web["imageDigests"]  # type: ignore[misc]
    assert (row["held"], row["resolved"]) == (new.manifest_digest, new.manifest_digest)
    metrics = httpx.get(running.base + "/metrics", timeout=5).text
    assert 'gitsync_image_digest_changes_total{cache="web"} 1.0' in metrics

    # `gitsync status`, a process of its own, shows what the daemon last resolved too.
    def status_row() -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
        done = subprocess.run(
            [sys.executable, "-m", "gitsync", "status", "--format", "json",
             "--data-dir", str(running.log.parent / "data")],
            capture_output=True, text=True, check=True, env=env, timeout=60,
        )  # fmt: skip
        caches = json.loads(done.stdout)["caches"]
        return dict(next(c for c in caches if c["name"] == "web")["imageDigests"][0])

    wait_until(
        lambda: status_row()["resolved"] == new.manifest_digest,
        timeout=30,
        what="gitsync status showing the resolved digest",
    )
    assert status_row()["held"] == new.manifest_digest
    assert status_row()["resolvedAt"]
    assert git("rev-parse", "main", cwd=running.bare) == revision  # Git is never changed


def test_a_semver_policy_puts_the_newest_allowed_tag_on_the_automation_branch(
    start: object, pusher: Pusher
) -> None:
    repository = pusher.repo("drift-api")
    registry = pusher.registry.host
    for tag in ("1.4.0", "1.4.3", "1.5.0"):
        pusher.push_image(repository, [small_layer(f"api-{tag}")], tag=tag)
    image = f"{registry}/{repository}"
    running = start(  # type: ignore[operator]
        {"caches/api.yaml": POLICY.format(image=image)}, "--automation-branch", "auto"
    )
    main = git("rev-parse", "main", cwd=running.bare)

    def branch(name: str) -> str | None:
        running.alive()
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", f"refs/heads/{name}"],
            cwd=running.bare,
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() or None

    wait_until(
        lambda: branch("auto") is not None,
        timeout=60,
        what="branch auto",
        detail=lambda: running.log.read_text()[-3000:],
    )
    proposed = git("show", "auto:caches/api.yaml", cwd=running.bare)
    assert f"    - {image}:1.4.3   # gitsync: semver=~1.4" in proposed.splitlines()
    assert "1.5.0" not in proposed
    assert proposed.startswith("# The API team's cache: the policy moves it along the 1.4 line.\n")
    assert git("rev-parse", "auto^", cwd=running.bare) == main
    assert git("rev-parse", "main", cwd=running.bare) == main  # the tracked branch is left alone
    message = git("log", "-1", "--format=%B", "auto", cwd=running.bare)
    assert "1.4.0" in message
    assert "1.4.3" in message

    # The same bump is a suggestion of the daemon, with the policy that made it.
    def suggested() -> list[dict[str, object]]:
        body = httpx.get(running.base + "/api/v1/suggestions", timeout=5).json()
        return [s for s in body["suggestions"] if s.get("policy")]

    wait_until(lambda: bool(suggested()), timeout=30, what="the policy's suggestion")
    (bump,) = suggested()
    assert (bump["kind"], bump["policy"], bump["to"]) == (
        "bump-tag",
        "semver=~1.4",
        [f"{image}:1.4.3"],
    )

    # The branch is merged (a fast-forward, as a reviewer's merge would be).
    git("update-ref", "refs/heads/main", "refs/heads/auto", cwd=running.bare)
    wait_until(
        lambda: (
            running.cache("api").get("images") == [f"{image}:1.4.3"]
            and running.cache("api").get("status") == "Ready"
        ),
        timeout=60,
        what="the cache holding 1.4.3",
        detail=lambda: running.log.read_text()[-3000:],
    )
    wait_until(lambda: branch("auto") is None, timeout=60, what="branch auto deleted")

"""`gitsync suggest` end to end: a daemon, its mirror, real pulls, a real git remote.

The issue's "done when", with real parts only: `gitsync run` (a process, local
backend) keeps a cache of `app:1` from a bare git repository; a real
containerd pulls through the daemon's `/v2/` mirror with the README's
hosts.toml: `app:1` (a hit), then `app:2` three times (the repository is cached
under another tag: partials) and an uncached image three times (misses).
Then `gitsync suggest` (a process) must propose the newer tag for the cache
that holds the old one and the uncached image for a cache, with evidence that
counts those pulls; `--write` must keep the file's comments and leave a valid
tree; `--push --branch suggestions` must create that branch on the remote,
over plain `file://` and over smart HTTP (`git http-backend` behind a token),
and leave the tracked branch where it was.
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
from containerd_client import containerd
from githttp import serve_git_http
from gitrepo import git
from oci_images import Pusher, free_port, small_layer
from waiting import wait_until

CACHE_FILE = """\
# Caches of the storefront team: reviewed like code.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: web  # what pods of the storefront match
spec:
  images:
    - {app}:1   # the release pods run
  retentionDays: 7
"""


@dataclass
class World:
    registry: str
    app: str  # registry/repository of the cached image
    other: str  # registry/repository never cached
    bare: Path
    work: Path
    data: Path
    base: str  # the daemon's address
    log: Path

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}

    def suggest(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitsync", "suggest", "--data-dir", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env(),
            cwd=cwd or self.work,
        )


@pytest.fixture
def world(tmp_path: Path, pusher: Pusher) -> Iterator[World]:
    host = pusher.registry.host
    app, other = pusher.repo("e2e-app"), pusher.repo("e2e-other")
    pusher.push_image(app, [small_layer("app-1")], tag="1")
    pusher.push_image(app, [small_layer("app-2")], tag="2")
    pusher.push_image(other, [small_layer("other-1")], tag="1")
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    (work / "caches").mkdir()
    (work / "caches/web.yaml").write_text(CACHE_FILE.format(app=f"{host}/{app}"))
    git("add", "-A", cwd=work)
    git("commit", "-qm", "the web cache", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    port, data, log = free_port(), tmp_path / "data", tmp_path / "daemon.log"
    made = World(
        registry=host,
        app=f"{host}/{app}",
        other=f"{host}/{other}",
        bare=bare,
        work=work,
        data=data,
        base=f"http://127.0.0.1:{port}",
        log=log,
    )
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gitsync", "run",
                "--repo", f"file://{bare}", "--branch", "main", "--interval", "3600s",
                "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                "--suggest-interval", "1s",
            ],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=made.env(),
        )  # fmt: skip

    def web_ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            caches = httpx.get(made.base + "/api/v1/status", timeout=5).json()["caches"]
        except httpx.TransportError:
            return False
        return [c["status"] for c in caches if c["name"] == "web"] == ["Ready"]

    try:
        wait_until(web_ready, timeout=60, what="cache web Ready", detail=log.read_text)
        yield made
    finally:
        process.terminate()
        process.wait(timeout=30)


def _pull_through_the_mirror(world: World) -> None:
    with containerd(world.registry, world.base.removeprefix("http://")) as ctr:
        ctr("images", "pull", f"{world.app}:1")
        for _ in range(3):
            ctr("images", "pull", f"{world.app}:2")
        for _ in range(3):
            ctr("images", "pull", f"{world.other}:1")


def _suggestions(world: World) -> dict[str, object]:
    """`gitsync suggest --format json` once the daemon's writer has stored all seven pulls."""
    answer: dict[str, object] = {}

    def stored() -> bool:
        nonlocal answer
        done = world.suggest("--repo", str(world.work), "--format", "json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        return len(answer["suggestions"]) == 2  # type: ignore[arg-type]

    wait_until(stored, timeout=30, what="both suggestions", detail=lambda: json.dumps(answer))
    return answer


def test_suggest_proposes_the_newer_tag_and_the_missed_image_and_writes_and_pushes_them(
    world: World, tmp_path: Path
) -> None:
    _pull_through_the_mirror(world)
    answer = _suggestions(world)
    by_kind = {s["kind"]: s for s in answer["suggestions"]}  # type: ignore[union-attr]

    bump = by_kind["bump-tag"]
    assert bump["cache"] == "web"
    assert bump["file"] == "caches/web.yaml"
    assert (bump["from"], bump["to"]) == ([f"{world.app}:1"], [f"{world.app}:2"])
    assert bump["evidence"]["partials"] == 3
    # The uncached image goes in the cache of the images it was pulled with (one burst).
    add = by_kind["add-image"]
    assert (add["cache"], add["images"]) == ("web", [f"{world.other}:1"])
    assert add["evidence"]["misses"] == 3
    # The mirror does not time misses (the pull goes upstream): the size, read from the
    # registry, prices a pull instead.
    assert "a pull (" in add["reason"], add["reason"]
    assert add["monthlyCost"] != 0

    # The daemon serves the same suggestions, and counts them.
    def served() -> bool:
        body = httpx.get(world.base + "/api/v1/suggestions", timeout=5).json()
        return sorted(s["kind"] for s in body["suggestions"]) == ["add-image", "bump-tag"]

    wait_until(served, timeout=30, what="/api/v1/suggestions")
    body = httpx.get(world.base + "/api/v1/suggestions", timeout=5).json()
    assert {m["image"]: m["misses"] for m in body["missed"]}[f"{world.other}:1"] == 3
    metrics = httpx.get(world.base + "/metrics", timeout=5).text
    assert 'gitsync_suggestions{kind="bump-tag"} 1.0' in metrics
    assert 'gitsync_suggestions{kind="remove-cache"} 0.0' in metrics
    assert 'gitsync_cache_saved_seconds_total{cache="web"}' in metrics

    # --write: the comments stay, the tags move, the tree validates.
    written = world.suggest("--repo", str(world.work), "--write")
    assert written.returncode == 0, written.stderr
    text = (world.work / "caches/web.yaml").read_text()
    assert text.startswith("# Caches of the storefront team: reviewed like code.\n")
    assert "  name: web  # what pods of the storefront match\n" in text
    assert f"    - {world.app}:2   # the release pods run\n" in text
    assert f"    - {world.other}:1\n" in text
    assert f"{world.app}:1" not in text
    validated = subprocess.run(
        [sys.executable, "-m", "gitsync", "validate", "caches"],
        cwd=world.work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr

    # --push --branch suggestions: the branch appears on the remote, main stays.
    git("checkout", "-q", "--", ".", cwd=world.work)  # the push reads the tracked tip, not this
    main_before = git("rev-parse", "refs/heads/main", cwd=world.bare)
    pushed = world.suggest("--repo", str(world.work), "--push", "--branch", "suggestions")
    assert pushed.returncode == 0, pushed.stderr
    assert git("rev-parse", "refs/heads/main", cwd=world.bare) == main_before
    assert git("rev-parse", "suggestions^", cwd=world.bare) == main_before
    on_branch = git("show", "suggestions:caches/web.yaml", cwd=world.bare)
    assert f"{world.app}:2   # the release pods run" in on_branch
    assert "bump-tag web" in git("log", "-1", "--format=%B", "suggestions", cwd=world.bare)
    # The local repository's checkout is untouched.
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=world.work) == "main"
    assert git("status", "--porcelain", cwd=world.work) == ""

    # A second run replaces the branch's one commit instead of adding one.
    again = world.suggest("--repo", str(world.work), "--push", "--branch", "suggestions")
    assert again.returncode == 0, again.stderr
    assert git("rev-list", "--count", "main..suggestions", cwd=world.bare) == "1"

    # The tracked branch itself is refused.
    refused = world.suggest("--repo", str(world.work), "--push", "--branch", "main")
    assert refused.returncode == 2
    assert "tracks" in refused.stderr
    assert "Traceback" not in refused.stderr

    # Over smart HTTP with a token, from the URL alone (a bare clone under the data dir).
    token = tmp_path / "token"
    token.write_text("s3cret-push-token\n")
    with serve_git_http(
        world.bare.parent, user="x-access-token", token="s3cret-push-token"
    ) as server:
        url = server.url(world.bare.name)
        over_http = world.suggest(
            "--repo", url, "--git-token-file", str(token), "--push", "--branch", "via-http"
        )
        assert over_http.returncode == 0, over_http.stderr
        assert "s3cret-push-token" not in over_http.stderr + over_http.stdout
    assert git("rev-parse", "via-http^", cwd=world.bare) == main_before

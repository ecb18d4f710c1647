"""`gitsync suggest` as a process: its errors, formats and what it writes, from a recorded store.

The lookups are written straight into `observations.db` with the store the
daemon uses, so each case states exactly what was observed; the daemon and
the real pulls are in tests/integration/test_suggest_e2e.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.observations.store import ObservationStore

CACHE = """\
# the team's cache
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: web
spec:
  images:
    - {registry}/app:1  # keep me
"""


def closed_port() -> int:
    """A loopback port nothing listens on: the registry that cannot be reached."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=_git_env()
    )
    return done.stdout.strip()


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITSYNC_", "GIT_"))}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    return env


def suggest(*args: str, cwd: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitsync", "suggest", "--data-dir", str(data), *args],
        cwd=cwd,
        env=_git_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def record(data: Path, *lookups: Lookup) -> None:
    with ObservationStore(data / "observations.db") as store:
        store.add(lookups)


def misses(image: str, count: int) -> list[Lookup]:
    now = time.time()
    return [
        Lookup(
            image=image, result=LookupResult.MISS, at=now - 60 * (i + 1), source=LookupSource.POD
        )
        for i in range(count)
    ]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "caches").mkdir(parents=True)
    (work / "caches/web.yaml").write_text(CACHE.format(registry=f"127.0.0.1:{closed_port()}"))
    return work


def test_an_unreachable_registry_gives_a_new_cache_without_a_size_and_says_so(
    repo: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    missed = f"127.0.0.1:{closed_port()}/tools:2"
    record(data, *misses(missed, 3))

    done = suggest("--repo", str(repo), "--format", "json", cwd=repo, data=data)
    assert done.returncode == 0, done.stderr
    (new,) = json.loads(done.stdout)["suggestions"]
    assert (new["kind"], new["images"], new["size"]) == ("new-cache", [missed], None)
    assert new["evidence"]["misses"] == 3
    assert "tools:2" in new["sizeNote"]

    written = suggest("--repo", str(repo), "--write", cwd=repo, data=data)
    assert written.returncode == 0, written.stderr
    created = repo / new["file"]
    assert "imageCacheSize" not in created.read_text()
    assert f"- {missed}" in created.read_text()
    validated = subprocess.run(
        [sys.executable, "-m", "gitsync", "validate", "."],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout


def test_below_min_misses_nothing_is_suggested_and_the_diff_is_empty(
    repo: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    record(data, *misses(f"127.0.0.1:{closed_port()}/tools:2", 2))
    done = suggest("--repo", str(repo), "--format", "diff", cwd=repo, data=data)
    assert (done.returncode, done.stdout) == (0, "")
    lowered = suggest(
        "--repo", str(repo), "--min-misses", "2", "--format", "diff", cwd=repo, data=data
    )
    assert lowered.returncode == 0, lowered.stderr
    assert lowered.stdout.startswith("--- /dev/null\n+++ b/caches/")


def test_an_invalid_repository_is_reported_and_nothing_is_written(
    repo: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    record(data, *misses(f"127.0.0.1:{closed_port()}/tools:2", 5))
    broken = repo / "caches/broken.yaml"
    broken.write_text("apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata: {}\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    done = suggest("--repo", str(repo), "--write", cwd=repo, data=data)
    assert done.returncode == 1
    assert "caches/broken.yaml:3:" in done.stderr
    assert "nothing suggested or written" in done.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--since", "a week"), "--since"),
        (("--since", "-7d"), "--since"),
        (("--min-misses", "0"), "--min-misses"),
        (("--push",), "--push needs --branch"),
        (("--push", "--branch", "main"), "tracks"),
        (("--push", "--branch", "prod", "--tracked-branch", "prod"), "tracks"),
        (("--repo", "https://git.example.invalid/caches.git", "--write"), "--write"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    repo: Path, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    done = suggest(*args, cwd=repo, data=tmp_path / "data")
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rejected_push_is_a_clear_error_and_keeps_the_local_commit(
    repo: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "caches", cwd=repo)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected: suggestions need an approver' >&2\nexit 1\n")
    hook.chmod(0o755)
    data = tmp_path / "data"
    record(data, *misses(f"127.0.0.1:{closed_port()}/tools:2", 3))

    done = suggest("--repo", str(repo), "--push", "--branch", "suggestions", cwd=repo, data=data)
    assert done.returncode == 1
    assert "protected: suggestions need an approver" in done.stderr
    assert "refs/heads/suggestions" in done.stderr
    assert "Traceback" not in done.stderr
    kept = git("log", "-1", "--format=%s", "refs/heads/suggestions", cwd=repo)
    assert kept.startswith("gitsync suggest:")
    assert git("ls-remote", "--heads", str(bare), cwd=repo).count("refs/heads/") == 1  # main only
    assert git("status", "--porcelain", cwd=repo) == ""

"""`gitsync plan` as a process: against a real git repository and the local backend's state."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.state import StateStore

CACHE = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: {name}
spec:
  images: [{images}]
  imageCacheSize: {size}
"""


def gitsync(*args: str, cwd: Path, data: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    env["GITSYNC_DATA_DIR"] = str(data)
    # These specs name Docker Hub images, which this machine cannot reach; the size
    # check reads registries and has its own tests (tests/integration/test_plan_size.py).
    env["GITSYNC_NO_SIZE_CHECK"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "gitsync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "caches").mkdir(parents=True)
    (root / "caches/web.yaml").write_text(CACHE.format(name="web", images="nginx:1.27.2", size=20))
    (root / "caches/tools.yaml").write_text(
        CACHE.format(name="tools", images="busybox:1.36.1", size=30)
    )
    git("init", "-q", "-b", "main", cwd=root)
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "add", ".", cwd=root)
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "c1", cwd=root)
    return root


def test_plan_on_an_empty_provider_creates_everything(repo: Path, tmp_path: Path) -> None:
    done = gitsync(
        "plan", "--repo", str(repo), "--format", "json", cwd=tmp_path, data=tmp_path / "d"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["summary"]["create"] == 2
    assert data["revision"] == git("rev-parse", "HEAD", cwd=repo)
    assert {a["name"] for a in data["actions"]} == {"web", "tools"}
    assert data["cost"]["monthly"] > 0
    assert not (tmp_path / "d").exists()  # planning writes nothing


def test_detailed_exitcode_says_whether_anything_changes(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    done = gitsync("plan", "--repo", str(repo), "--detailed-exitcode", cwd=tmp_path, data=data)
    assert done.returncode == 2
    assert "2 to create" in done.stdout
    store = StateStore(data / "state.db")
    for name, image, size in (("web", "nginx:1.27.2", 20), ("tools", "busybox:1.36.1", 30)):
        cache_id = store.insert_cache(
            CacheSpec(name=name, images=(image,), image_cache_size_gib=size),
            owner="gitsync",
            status=CacheStatus.PENDING,
        )
        store.commit_snapshot(
            cache_id, content_bytes=10, images=[], blob_digests=[], retention_days=0
        )
    store.close()
    done = gitsync("plan", "--repo", str(repo), "--detailed-exitcode", cwd=tmp_path, data=data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 to create, 0 to update, 0 to recreate, 0 to delete, 2 unchanged" in done.stdout


def test_plan_of_an_older_revision_and_markdown(repo: Path, tmp_path: Path) -> None:
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "caches/tools.yaml").unlink()
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "c2", cwd=repo)
    done = gitsync(
        "plan",
        "--repo",
        str(repo),
        "--revision",
        first,
        "--format",
        "markdown",
        cwd=tmp_path,
        data=tmp_path / "d",
    )
    assert done.returncode == 0, done.stderr
    assert f"### gitsync plan for `{first[:12]}` (local)" in done.stdout
    assert "| + | create | `tools` |" in done.stdout


def test_an_invalid_revision_plans_nothing_and_says_where(repo: Path, tmp_path: Path) -> None:
    (repo / "caches/web.yaml").write_text(CACHE.format(name="web", images="nginx:1.27", size=10))
    done = gitsync("plan", "--repo", str(repo), cwd=tmp_path, data=tmp_path / "d")
    assert done.returncode == 1
    assert "caches/web.yaml:7:" in done.stderr
    assert "nothing would be applied" in done.stderr
    assert done.stdout == ""


def test_unknown_format_is_a_usage_error(repo: Path, tmp_path: Path) -> None:
    done = gitsync("plan", "--repo", str(repo), "--format", "yaml", cwd=tmp_path, data=tmp_path)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_standing_and_one_off_costs_each_have_their_own_column(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    store = StateStore(data / "state.db")
    cache_id = store.insert_cache(
        CacheSpec(name="web", images=("nginx:1.27.2",), image_cache_size_gib=20),
        owner="gitsync",
        status=CacheStatus.PENDING,
    )
    store.commit_snapshot(
        cache_id, content_bytes=2 * 1024**3, images=[], blob_digests=[], retention_days=0
    )
    store.set_status(cache_id, CacheStatus.FAILED)
    store.close()
    # web is rebuilt as it was (no standing change, one build); tools is new (both).
    text = gitsync("plan", "--repo", str(repo), cwd=tmp_path, data=data)
    assert text.returncode == 0, text.stderr
    [recreate] = [line for line in text.stdout.splitlines() if "recreate web" in line]
    assert re.search(r"monthly +0\.00 CNY  one-off \+0\.\d\d CNY  status Failed", recreate)
    [create] = [line for line in text.stdout.splitlines() if "create   tools" in line]
    assert "monthly +" in create
    assert "Size check: off (--no-size-check)." in text.stdout
    assert "Cost delta: standing +" in text.stdout

    markdown = gitsync("plan", "--repo", str(repo), "--format", "markdown", cwd=tmp_path, data=data)
    assert "| | action | cache | details | monthly | one-off |" in markdown.stdout
    [row] = [line for line in markdown.stdout.splitlines() if "| recreate |" in line]
    *_, monthly, one_off, _ = (cell.strip() for cell in row.split("|"))
    assert monthly == "0.00 CNY"
    assert one_off.startswith("+0.")

    report = json.loads(
        gitsync("plan", "--repo", str(repo), "--format", "json", cwd=tmp_path, data=data).stdout
    )
    [web] = [a for a in report["actions"] if a["name"] == "web"]
    assert web["action"] == "recreate"
    assert web["cost"]["standingMonthly"] == 0
    assert web["cost"]["oneOff"] > 0
    assert web["cost"]["monthly"] == web["cost"]["oneOff"]  # unchanged field: both together
    assert report["sizeCheck"]["enabled"] is False

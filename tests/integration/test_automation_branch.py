"""The automation branch against real remotes: a bare repository, and `git http-backend`.

The remote's `main` holds `caches/api.yaml` with `- REG/api:1.4.0   # gitsync:
semver=~1.4`; the bump to `1.4.3` is fed as the policy engine would give it (the
registry is not needed to decide it). The checks: branch `auto` appears as one
commit on top of `main` with the marker kept and `main` untouched; `main`
moving rebuilds it on the new tip, still one commit; the bump going away
deletes it; with `allow_push_to_tracked` the tracked branch itself gets a
fast-forward commit; a push a hook rejects is counted and retried with backoff
by the thread, which goes on and pushes once the hook relents; the token is in
no argv, file, commit, log or status. Every git process goes through
`gitsync.sources.gitwrite._run`, which the `calls` fixture records.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from githttp import GitHttpServer, serve_git_http
from gitrepo import BareRemote, Call, git, isolate_git, watch_git_calls
from prometheus_client import CollectorRegistry
from waiting import wait_until

from gitsync.automation import AUTOMATION_GIT_DIR, AutomationBranch, RoundResult
from gitsync.errors import ConfigError
from gitsync.metrics.automation import AutomationMetrics
from gitsync.model import SourceLocation
from gitsync.sources import gitwrite
from gitsync.sources.credentials import GitCredentials
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind

TOKEN = "ghp_PLANTED-automation-s3cret-4481"  # a planted secret: must never show up anywhere
USER = "x-access-token"
REG = "ccr.ccs.tencentyun.com/team"
OLD_DIGEST = "sha256:" + "a" * 64
NEW_DIGEST = "sha256:" + "b" * 64
API = f"""\
# The api team's cache: reviewed like code.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: api
spec:
  images:
    - {REG}/api:1.4.0   # gitsync: semver=~1.4
  retentionDays: 7
"""
BUMPED = API.replace("api:1.4.0", "api:1.4.3")
BUMP = Suggestion(
    kind=SuggestionKind.BUMP_TAG,
    cache="api",
    reason="policy semver=~1.4 allows 1.4.3, newer than 1.4.0",
    evidence=SuggestionEvidence(),
    saved_seconds_per_day=0.0,
    monthly_cost=0.0,
    from_images=(f"{REG}/api:1.4.0",),
    to_images=(f"{REG}/api:1.4.3",),
    location=SourceLocation("caches/api.yaml", 2, 1),
    file="caches/api.yaml",
    policy="semver=~1.4",
    from_digests=(OLD_DIGEST,),
    to_digests=(NEW_DIGEST,),
)


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_git(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every git process the automation branch starts, in order."""
    return watch_git_calls(monkeypatch, gitwrite)


@dataclass
class Remote(BareRemote):
    seed: Path

    def show(self, branch: str, path: str) -> str:
        return git("show", f"{branch}:{path}", cwd=self.bare) + "\n"

    def advance(self, name: str, text: str) -> str:
        """Someone pushes one more commit to main; its id."""
        git("pull", "--quiet", "origin", "main", cwd=self.seed)
        (self.seed / name).parent.mkdir(parents=True, exist_ok=True)
        (self.seed / name).write_text(text)
        git("add", "--all", cwd=self.seed)
        git("commit", "--quiet", "-m", f"change {name}", cwd=self.seed)
        git("push", "--quiet", "origin", "HEAD:main", cwd=self.seed)
        return self.tip("main")

    def refuse_pushes(self, reason: str) -> Path:
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho '{reason}' >&2\nexit 1\n")
        hook.chmod(0o755)
        return hook


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    bare = tmp_path / "remote.git"
    seed = tmp_path / "seed"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "caches").mkdir()
    (seed / "caches" / "api.yaml").write_text(API)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "first", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    return Remote(bare=bare, seed=seed)


@dataclass
class Pending:
    """What the policy engine would give: the bumps, set by the test."""

    bumps: tuple[Suggestion, ...] | None = (BUMP,)

    def __call__(self) -> tuple[Suggestion, ...] | None:
        return self.bumps


def automation(
    tmp_path: Path, repo: str, *, pending: Pending, registry: CollectorRegistry, **kwargs: Any
) -> AutomationBranch:
    options: dict[str, Any] = {
        "tracked_branch": "main",
        "branch": "auto",
        "work_dir": tmp_path / "data" / AUTOMATION_GIT_DIR,
        "interval_seconds": 3600.0,
        "metrics": AutomationMetrics(registry=registry),
    }
    options.update(kwargs)
    return AutomationBranch(repo=repo, bumps=pending, **options)


def rounds(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("gitsync_automation_pushes_total", {"result": result})
    assert value is not None
    return value


def assert_one_commit_on_main(remote: Remote, done: RoundResult) -> None:
    main = remote.tip("main")
    assert done.commit == remote.tip("auto")
    assert done.tracked_commit == main
    parents = git("rev-list", "--parents", "-n", "1", "auto", cwd=remote.bare).split()
    assert parents == [remote.tip("auto"), main]
    assert git("diff", "--name-only", "main", "auto", cwd=remote.bare) == "caches/api.yaml"
    assert remote.show("auto", "caches/api.yaml") == BUMPED  # every other byte, marker too


# ------------------------------------------------------------------ the branch's life


def test_the_bump_becomes_one_commit_on_main_with_the_marker_kept(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    registry = CollectorRegistry()
    main = remote.tip("main")
    branch = automation(tmp_path, remote.url, pending=Pending(), registry=registry)

    done = branch.run_round()

    assert done.result == "pushed", done.detail
    assert remote.tip("main") == main
    assert_one_commit_on_main(remote, done)
    assert "# gitsync: semver=~1.4" in remote.show("auto", "caches/api.yaml")
    message = git("log", "-1", "--format=%B", "auto", cwd=remote.bare)
    assert message.startswith("gitsync: 1 image bump on main\n")
    assert f"- api: {REG}/api 1.4.0 -> 1.4.3 (policy semver=~1.4)" in message
    assert f"from {OLD_DIGEST}" in message
    assert f"to   {NEW_DIGEST}" in message
    assert done.applied == (f"caches/api.yaml:8: {REG}/api:1.4.0 → {REG}/api:1.4.3",)
    assert rounds(registry, "pushed") == 1
    assert registry.get_sample_value("gitsync_automation_pending_bumps") == 1
    assert branch.status().failures == 0
    assert branch.status().last == done

    # Nothing moved: the round stops after looking at the tracked tip, and writes nothing.
    calls.clear()
    again = branch.run_round()

    assert again.result == "unchanged"
    assert again.commit == done.commit == remote.tip("auto")
    assert {call.command for call in calls} <= {"ls-remote", "fetch", "rev-parse"}
    assert rounds(registry, "unchanged") == 1
    assert rounds(registry, "pushed") == 1


def test_main_moving_rebuilds_the_branch_on_the_new_tip(tmp_path: Path, remote: Remote) -> None:
    registry = CollectorRegistry()
    branch = automation(tmp_path, remote.url, pending=Pending(), registry=registry)
    first = branch.run_round()
    moved = remote.advance("caches/web.yaml", API.replace("name: api", "name: web"))

    second = branch.run_round()

    assert second.result == "pushed", second.detail
    assert second.tracked_commit == moved
    assert second.commit != first.commit
    assert_one_commit_on_main(remote, second)
    assert git("rev-list", "--count", "main..auto", cwd=remote.bare) == "1"
    assert remote.show("auto", "caches/web.yaml") == API.replace("name: api", "name: web")
    assert rounds(registry, "pushed") == 2


def test_the_branch_is_deleted_when_the_bump_goes_away(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    registry = CollectorRegistry()
    pending = Pending()
    branch = automation(tmp_path, remote.url, pending=pending, registry=registry)
    assert branch.run_round().result == "pushed"

    pending.bumps = ()
    gone = branch.run_round()

    assert gone.result == "deleted", gone.detail
    assert gone.commit is None
    assert remote.branches() == {"main"}
    assert rounds(registry, "deleted") == 1
    assert registry.get_sample_value("gitsync_automation_pending_bumps") == 0

    calls.clear()
    assert branch.run_round().result == "unchanged"
    assert calls == []  # nothing pending, as last round: not even a look at the remote


def test_a_bump_already_on_main_deletes_the_branch(tmp_path: Path, remote: Remote) -> None:
    branch = automation(tmp_path, remote.url, pending=Pending(), registry=CollectorRegistry())
    assert branch.run_round().result == "pushed"
    remote.advance("caches/api.yaml", BUMPED)  # someone merged the bump

    done = branch.run_round()

    assert done.result == "deleted", done.detail
    assert len(done.skipped) == 1
    assert "no longer holds" in done.skipped[0]
    assert remote.branches() == {"main"}


def test_nothing_is_written_while_the_bumps_are_not_known_yet(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    registry = CollectorRegistry()
    pending = Pending()
    branch = automation(tmp_path, remote.url, pending=pending, registry=registry)
    assert branch.run_round().result == "pushed"
    calls.clear()

    pending.bumps = None  # a daemon restarting: the registries not listed yet
    done = branch.run_round()

    assert done.result == "unchanged"
    assert calls == []
    assert "auto" in remote.branches()


def test_an_invalid_tracked_tree_fails_the_round_and_pushes_nothing(
    tmp_path: Path, remote: Remote
) -> None:
    registry = CollectorRegistry()
    remote.advance("caches/broken.yaml", API.replace("images:", "imagez:"))
    branch = automation(tmp_path, remote.url, pending=Pending(), registry=registry)

    done = branch.run_round()

    assert done.result == "failed"
    assert "would not validate, so nothing was pushed" in done.detail
    assert "caches/broken.yaml" in done.detail
    assert remote.branches() == {"main"}
    assert rounds(registry, "failed") == 1
    assert branch.status().failures == 1


def test_the_tracked_branch_itself_gets_a_fast_forward_when_allowed(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    with pytest.raises(ConfigError, match="needs --allow-push-to-tracked"):
        automation(
            tmp_path, remote.url, pending=Pending(), registry=CollectorRegistry(), branch="main"
        )
    main = remote.tip("main")
    branch = automation(
        tmp_path,
        remote.url,
        pending=Pending(),
        registry=CollectorRegistry(),
        branch="main",
        allow_push_to_tracked=True,
    )

    done = branch.run_round()

    assert done.result == "pushed", done.detail
    assert git("rev-parse", "main~1", cwd=remote.bare) == main
    assert remote.tip("main") == done.commit
    assert remote.show("main", "caches/api.yaml") == BUMPED
    assert remote.branches() == {"main"}
    (push,) = [call for call in calls if call.command == "push"]
    assert not any(arg.startswith("--force") for arg in push.argv)

    # The bump is on main now; until the policy engine catches up it is still pending,
    # and finds nothing to change: no second commit.
    again = branch.run_round()
    assert again.result == "unchanged", again.detail
    assert remote.tip("main") == done.commit


def test_a_path_prefixes_the_files_the_bumps_name(tmp_path: Path, remote: Remote) -> None:
    remote.advance("clusters/prod/caches/api.yaml", API)
    branch = automation(
        tmp_path, remote.url, pending=Pending(), registry=CollectorRegistry(), path="clusters/prod"
    )

    done = branch.run_round()

    assert done.result == "pushed", done.detail
    changed = git("diff", "--name-only", "main", "auto", cwd=remote.bare)
    assert changed == "clusters/prod/caches/api.yaml"
    assert remote.show("auto", "caches/api.yaml") == API  # the same path outside --path


# ------------------------------------------------------------------ failures and the thread


def test_a_rejected_push_is_counted_and_retried_with_backoff(
    tmp_path: Path, remote: Remote
) -> None:
    """The schedule on a fake clock: the backoff holds against pokes, a success ends it."""
    registry = CollectorRegistry()
    now = [1000.0]
    branch = automation(
        tmp_path,
        remote.url,
        pending=Pending(),
        registry=registry,
        clock=lambda: now[0],
        retry_base_seconds=10.0,
        retry_cap_seconds=40.0,
    )
    hook = remote.refuse_pushes("policy: no robots on Fridays")

    failed = branch.run_round()

    assert failed.result == "failed"
    assert "pre-receive hook declined" in failed.detail
    assert "policy: no robots on Fridays" in failed.detail
    assert 5.0 <= branch.due_in() <= 10.0  # equal jitter: half of the base fixed
    branch.poke()
    assert branch.due_in() > 0  # a poke does not cut a backoff short
    branch.run_round()
    branch.run_round()
    assert branch.status().failures == 3
    assert 20.0 <= branch.due_in() <= 40.0  # doubled twice, up to the cap
    branch.run_round()
    assert 20.0 <= branch.due_in() <= 40.0  # capped
    assert rounds(registry, "failed") == 4
    assert remote.branches() == {"main"}

    hook.unlink()
    now[0] += 40.0
    assert branch.due_in() == 0.0
    done = branch.run_round()

    assert done.result == "pushed", done.detail
    assert branch.status().failures == 0
    assert branch.due_in() == 3600.0  # back to the interval
    branch.poke()
    assert branch.due_in() == 0.0


def test_the_thread_retries_a_rejected_push_and_goes_on(
    tmp_path: Path, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    hook = remote.refuse_pushes("frozen for the release")
    branch = automation(
        tmp_path,
        remote.url,
        pending=Pending(),
        registry=registry,
        retry_base_seconds=0.05,
        retry_cap_seconds=0.2,
    )
    caplog.set_level(logging.WARNING, logger="gitsync.automation")
    branch.start()
    try:
        # The interval is an hour: only the backoff can bring the second and third tries.
        wait_until(
            lambda: rounds(registry, "failed") >= 3,
            timeout=60,
            what="three failed rounds",
            detail=lambda: repr(branch.status()),
        )
        assert remote.branches() == {"main"}
        logged = [r.getMessage() for r in caplog.records if r.name == "gitsync.automation"]
        assert any(
            "round failed" in line and "frozen for the release" in line for line in logged
        ), logged
        hook.unlink()
        wait_until(
            lambda: "auto" in remote.branches(),
            timeout=60,
            what="the branch, once the hook relents",
            detail=lambda: repr(branch.status()),
        )
        wait_until(
            lambda: rounds(registry, "pushed") == 1,
            timeout=60,
            what="the push counted",
        )
        assert branch.status().failures == 0
        assert remote.show("auto", "caches/api.yaml") == BUMPED
    finally:
        branch.stop()
    assert not any(t.name == "gitsync-automation" and t.is_alive() for t in threading.enumerate())


def test_a_poke_runs_a_round_and_a_broken_input_does_not_stop_the_thread(
    tmp_path: Path, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    calls = {"n": 0}

    def flaky() -> tuple[Suggestion, ...]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the policy engine has a bug")
        return (BUMP,)

    branch = AutomationBranch(
        repo=remote.url,
        tracked_branch="main",
        branch="auto",
        work_dir=tmp_path / "data" / AUTOMATION_GIT_DIR,
        bumps=flaky,
        interval_seconds=3600.0,
        metrics=AutomationMetrics(registry=registry),
        retry_base_seconds=0.05,
        retry_cap_seconds=0.1,
    )
    caplog.set_level(logging.ERROR, logger="gitsync.automation")
    branch.start()
    try:
        wait_until(
            lambda: rounds(registry, "pushed") == 1,
            timeout=60,
            what="a push after the broken round",
            detail=lambda: repr(branch.status()),
        )
        assert rounds(registry, "failed") == 1
        assert any("the round failed" in r.getMessage() for r in caplog.records)
        remote.advance("caches/web.yaml", API.replace("name: api", "name: web"))
        branch.poke()  # the interval is an hour: only the poke rebuilds the branch
        moved = remote.tip("main")
        wait_until(
            lambda: git("rev-parse", "auto~1", cwd=remote.bare) == moved,
            timeout=60,
            what="the branch rebuilt on the new main after a poke",
            detail=lambda: repr(branch.status()),
        )
    finally:
        branch.stop()


# ------------------------------------------------------------------ HTTPS with a token


@pytest.fixture
def http(remote: Remote) -> Iterator[GitHttpServer]:
    with serve_git_http(remote.bare.parent, user=USER, token=TOKEN) as server:
        yield server


def assert_secret_absent(calls: list[Call], folder: Path, *texts: str) -> None:
    basic = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    for call in calls:
        assert not any(TOKEN in arg for arg in call.argv), call.argv
    for file in folder.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
    for text in texts:
        assert TOKEN not in text
        assert basic not in text


def test_https_with_a_token_leaves_no_secret_anywhere(
    tmp_path: Path,
    remote: Remote,
    http: GitHttpServer,
    calls: list[Call],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    branch = automation(
        tmp_path,
        http.url("remote.git"),
        pending=Pending(),
        registry=registry,
        credentials=GitCredentials(https_token=TOKEN),
    )

    done = branch.run_round()

    assert done.result == "pushed", done.detail
    assert_one_commit_on_main(remote, done)
    assert {"ls-remote", "fetch", "push"} <= {call.command for call in calls}
    config = (tmp_path / "data" / AUTOMATION_GIT_DIR / "repo.git" / "config").read_text()
    assert "127.0.0.1" not in config  # the URL is given on each call, never stored

    # A refusal that quotes the token, through a URL that carries it too.
    remote.advance("caches/web.yaml", API.replace("name: api", "name: web"))
    remote.refuse_pushes(f"denied for {TOKEN}")
    with_userinfo = http.url("remote.git").replace("http://", f"http://{USER}:{TOKEN}@")
    leaky = automation(tmp_path, with_userinfo, pending=Pending(), registry=CollectorRegistry())
    failed = leaky.run_round()

    assert failed.result == "failed"
    assert "denied for ***" in failed.detail
    message = git("log", "-1", "--format=%B", "auto", cwd=remote.bare)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    metrics = "\n".join(str(s) for m in registry.collect() for s in m.samples)
    assert_secret_absent(
        calls,
        tmp_path / "data",
        message,
        logs,
        metrics,
        repr(branch.status()),
        repr(leaky.status()),
    )


def test_a_wrong_token_and_a_remote_gone_are_failed_rounds_that_name_no_secret(
    tmp_path: Path, remote: Remote, http: GitHttpServer
) -> None:
    registry = CollectorRegistry()
    wrong = "ghp_PLANTED-wrong-token-9917"
    branch = automation(
        tmp_path,
        http.url("remote.git"),
        pending=Pending(),
        registry=registry,
        credentials=GitCredentials(https_token=wrong),
    )

    refused = branch.run_round()

    assert refused.result == "failed"
    assert "refused the credentials" in refused.detail
    assert wrong not in refused.detail
    http.shutdown()
    http.server_close()

    gone = branch.run_round()

    assert gone.result == "failed"
    assert http.url("remote.git") in gone.detail, gone.detail
    assert rounds(registry, "failed") == 2
    assert branch.status().failures == 2
    assert remote.branches() == {"main"}

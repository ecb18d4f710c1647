"""`publish` against real remotes: a bare repository, and `git http-backend` behind Basic auth.

The remote is a bare repository in tmp_path whose `main` a seeding clone has
pushed. `publish` writes to it from a URL (its clone cache in the data dir) or
from a person's local clone (worked in place). The checks: the branch is one
commit on top of `main`; `main`, the local work tree, index and HEAD are as
they were; a second run rewrites the branch, an identical one pushes nothing;
a hook's refusal and a remote gone at push time are clear errors that keep
the local commit; the tracked branch, a checked-out branch and a local branch
with someone's commits are refused; the token appears in no argv, no file and
no message. Every git process `publish` starts goes through
`gitsync.sources.gitwrite._run`, which the `calls` fixture records.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from githttp import GitHttpServer, serve_git_http
from gitrepo import BareRemote, Call, git, isolate_git, watch_git_calls

from gitsync.errors import ConfigError, PermanentError, TemporaryError
from gitsync.sources import gitwrite
from gitsync.sources.base import SourceError
from gitsync.sources.credentials import GitCredentials
from gitsync.sources.gitwrite import (
    DEFAULT_IDENTITY,
    GitIdentity,
    ProtectedBranchError,
    PublishResult,
    PushRejectedError,
    PushUnavailableError,
    publish,
)

TOKEN = "ghp_PLANTED-push-s3cret-7713"  # a planted secret: must never show up anywhere
USER = "x-access-token"
WEB = "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
WEB += "spec:\n  images:\n    - nginx:1.27   # gitsync: semver=~1.27\n"
CHANGES: dict[str, str | None] = {
    "caches/web.yaml": WEB.replace("nginx:1.27", "nginx:1.28"),
    "caches/new/api.yaml": "apiVersion: eks.cloud.tencent.com/v1\r\nkind: ImageCache\r\n",
    "caches/old.yaml": None,
}


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_git(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every process `publish` starts, in order."""
    return watch_git_calls(monkeypatch, gitwrite)


@dataclass
class Remote(BareRemote):
    def show(self, branch: str, path: str) -> bytes:
        done = subprocess.run(
            ["git", "cat-file", "blob", f"{branch}:{path}"],
            cwd=self.bare,
            capture_output=True,
            check=True,
            timeout=30,
        )
        return done.stdout


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A bare `main` holding three files, one of them executable."""
    bare = tmp_path / "remote.git"
    seed = tmp_path / "seed"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "caches").mkdir()
    (seed / "caches" / "web.yaml").write_text(WEB)
    (seed / "caches" / "old.yaml").write_text("kind: Old\n")
    (seed / "tool.sh").write_text("#!/bin/sh\n")
    (seed / "tool.sh").chmod(0o755)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "first", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    return Remote(bare)


def advance(remote: Remote, tmp_path: Path, files: dict[str, str]) -> str:
    """Someone pushes one more commit to main; its id."""
    work = tmp_path / "advance"
    if not work.exists():
        git("clone", "--quiet", str(remote.bare), str(work), cwd=tmp_path)
    git("pull", "--quiet", "origin", "main", cwd=work)
    for name, text in files.items():
        (work / name).write_text(text)
    git("commit", "--quiet", "-am", "moved on", cwd=work)
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    return remote.tip("main")


def run(tmp_path: Path, repo: str | Path, **kwargs: Any) -> PublishResult:
    options: dict[str, Any] = {
        "tracked_branch": "main",
        "branch": "suggestions",
        "changes": CHANGES,
        "message": "gitsync suggest: 2 changes\n\n- web: nginx 1.27 → 1.28\n",
        "work_dir": tmp_path / "data" / "suggest-git",
    }
    options.update(kwargs)
    return publish(repo=str(repo), **options)


def assert_one_commit_on_main(remote: Remote, result: PublishResult) -> None:
    main = remote.tip("main")
    assert result.commit == remote.tip("suggestions")
    assert result.tracked_commit == main
    assert git("rev-list", "--parents", "-n", "1", "suggestions", cwd=remote.bare).split() == [
        result.commit,
        main,
    ]
    changed = git("diff", "--name-status", "main", "suggestions", cwd=remote.bare)
    assert sorted(changed.splitlines()) == [
        "A\tcaches/new/api.yaml",
        "D\tcaches/old.yaml",
        "M\tcaches/web.yaml",
    ]


# ------------------------------------------------------------------ from a URL


def test_a_url_gets_one_commit_on_top_of_the_tracked_branch(tmp_path: Path, remote: Remote) -> None:
    main = remote.tip("main")

    result = run(tmp_path, remote.url)

    assert result.pushed
    assert not result.unchanged
    assert not result.empty
    assert remote.tip("main") == main  # the tracked branch as it was
    assert_one_commit_on_main(remote, result)
    # The exact bytes: the marker, and CRLF, which no filter touched.
    assert remote.show("suggestions", "caches/web.yaml") == CHANGES["caches/web.yaml"].encode()
    assert remote.show("suggestions", "caches/new/api.yaml").count(b"\r\n") == 2
    assert "100755 blob" in git("ls-tree", "suggestions", "tool.sh", cwd=remote.bare)
    who = git("log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", "suggestions", cwd=remote.bare)
    assert who.startswith(f"{DEFAULT_IDENTITY}|{DEFAULT_IDENTITY}|gitsync suggest: 2 changes")
    cache = tmp_path / "data" / "suggest-git" / "repo.git"
    assert result.local_ref == f"refs/heads/suggestions in {cache}"
    assert git("rev-parse", "refs/heads/suggestions", cwd=cache) == result.commit


def test_a_second_run_rewrites_the_branch_instead_of_piling_up(
    tmp_path: Path, remote: Remote
) -> None:
    first = run(tmp_path, remote.url)
    moved = advance(remote, tmp_path, {"tool.sh": "#!/bin/sh\necho moved\n"})

    second = run(tmp_path, remote.url, message="gitsync suggest: again")

    assert second.pushed
    assert second.commit != first.commit
    assert second.tracked_commit == moved
    assert_one_commit_on_main(remote, second)
    assert git("rev-list", "--count", "main..suggestions", cwd=remote.bare) == "1"
    # The branch carries main's new commit: the file it changed is main's version.
    assert remote.show("suggestions", "tool.sh") == b"#!/bin/sh\necho moved\n"


def test_an_identical_rerun_pushes_nothing(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    first = run(tmp_path, remote.url)
    calls.clear()

    again = run(tmp_path, remote.url, message="other evidence counts, same change")

    assert again.unchanged
    assert not again.pushed
    assert again.commit == first.commit == remote.tip("suggestions")
    assert "push" not in [call.command for call in calls]
    assert "commit-tree" not in [call.command for call in calls]


def test_changes_already_on_the_tracked_branch_make_no_commit_and_can_delete_the_branch(
    tmp_path: Path, remote: Remote
) -> None:
    run(tmp_path, remote.url)
    same = {"caches/web.yaml": WEB}

    kept = run(tmp_path, remote.url, changes=same)
    assert kept.empty
    assert not kept.pushed
    assert kept.commit == remote.tip("main")
    assert "suggestions" in remote.branches()

    gone = run(tmp_path, remote.url, changes=same, delete_when_empty=True)
    assert gone.deleted
    assert gone.pushed
    assert remote.branches() == {"main"}


def test_the_tracked_branch_is_refused_before_any_git_call(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    for branch in ("main", "refs/heads/main"):
        with pytest.raises(ProtectedBranchError, match="is the tracked branch") as caught:
            run(tmp_path, remote.url, branch=branch)
        assert isinstance(caught.value, ConfigError)  # a usage error: exit 2
    assert calls == []
    assert remote.branches() == {"main"}


def test_the_tracked_branch_when_explicitly_allowed_is_a_fast_forward(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    main = remote.tip("main")

    result = run(tmp_path, remote.url, branch="main", allow_tracked=True)

    assert result.pushed
    assert git("rev-parse", "main~1", cwd=remote.bare) == main
    (push,) = [call for call in calls if call.command == "push"]
    assert not any(arg.startswith("--force") for arg in push.argv)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"../outside.yaml": "x"}, "is not a path inside the repository"),
        ({".git/config": "x"}, "is not a path inside the repository"),
        ({"caches": "x"}, "caches is a folder in the tracked branch"),
        ({"tool.sh/x.yaml": "x"}, "tool.sh is a file in the tracked branch"),
    ],
)
def test_paths_outside_the_tree_or_over_a_folder_are_refused(
    tmp_path: Path, remote: Remote, changes: dict[str, str | None], message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        run(tmp_path, remote.url, changes=changes)
    assert remote.branches() == {"main"}


def test_a_tracked_branch_missing_on_the_remote_is_a_source_error(
    tmp_path: Path, remote: Remote
) -> None:
    with pytest.raises(SourceError, match="branch 'trunk' is not on the remote"):
        run(tmp_path, remote.url, tracked_branch="trunk")


# ------------------------------------------------------------------ a hook refuses


def test_a_refused_push_names_the_remote_and_the_reason_and_keeps_the_commit(
    tmp_path: Path, remote: Remote
) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: branch suggestions is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)

    with pytest.raises(PushRejectedError) as caught:
        run(tmp_path, remote.url)

    message = str(caught.value)
    assert f"git push of suggestions to {remote.url} was rejected" in message
    assert "pre-receive hook declined" in message
    assert "policy: branch suggestions is frozen" in message
    cache = tmp_path / "data" / "suggest-git" / "repo.git"
    assert f"stays on refs/heads/suggestions in {cache}" in message
    assert git("rev-parse", "refs/heads/suggestions", cwd=cache) == caught.value.commit
    assert caught.value.local_ref == f"refs/heads/suggestions in {cache}"
    assert remote.branches() == {"main"}


# ------------------------------------------------------------------ a person's local clone


@pytest.fixture
def clone(tmp_path: Path, remote: Remote) -> Path:
    """A clone on main with a staged change, an unstaged change and an untracked file."""
    work = tmp_path / "clone"
    git("clone", "--quiet", str(remote.bare), str(work), cwd=tmp_path)
    (work / "tool.sh").write_text("#!/bin/sh\necho staged\n")
    git("add", "tool.sh", cwd=work)
    (work / "caches" / "web.yaml").write_text("edited, not staged\n")
    (work / "notes.txt").write_text("untracked\n")
    return work


def snapshot(work: Path) -> tuple[str, str, bytes, str, bytes]:
    return (
        git("status", "--porcelain=v1", "--untracked-files=all", cwd=work),
        git("symbolic-ref", "HEAD", cwd=work) + " " + git("rev-parse", "HEAD", cwd=work),
        (work / ".git" / "index").read_bytes(),
        git("diff", cwd=work),
        (work / "caches" / "web.yaml").read_bytes(),
    )


def test_a_local_clone_keeps_its_work_tree_index_and_head(
    tmp_path: Path, remote: Remote, clone: Path
) -> None:
    before = snapshot(clone)

    result = run(tmp_path, clone)

    assert snapshot(clone) == before
    assert_one_commit_on_main(remote, result)
    assert git("rev-parse", "refs/heads/suggestions", cwd=clone) == result.commit
    assert result.local_ref == f"refs/heads/suggestions in {clone}"
    assert result.remote == f"origin ({remote.bare})"
    assert git("rev-parse", "--is-shallow-repository", cwd=clone) == "false"


def test_a_local_clone_fetches_the_tracked_tip_from_its_remote(
    tmp_path: Path, remote: Remote, clone: Path
) -> None:
    moved = advance(remote, tmp_path, {"tool.sh": "#!/bin/sh\necho moved\n"})
    head = git("rev-parse", "HEAD", cwd=clone)

    result = run(tmp_path, clone)

    assert result.tracked_commit == moved != head
    assert git("rev-parse", "HEAD", cwd=clone) == head
    assert_one_commit_on_main(remote, result)


def test_a_checked_out_branch_and_a_branch_with_someone_elses_commits_are_refused(
    tmp_path: Path, remote: Remote, clone: Path
) -> None:
    with pytest.raises(ProtectedBranchError, match="is checked out in"):
        run(tmp_path, clone, tracked_branch="other", branch="main")
    git("branch", "suggestions", "main", cwd=clone)
    mine = git("rev-parse", "suggestions", cwd=clone)

    with pytest.raises(ProtectedBranchError, match="which gitsync did not make"):
        run(tmp_path, clone)

    assert git("rev-parse", "suggestions", cwd=clone) == mine
    assert remote.branches() == {"main"}


def test_a_local_repository_without_the_remote_says_how_to_add_it(tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    git("init", "--quiet", "-b", "main", str(lonely), cwd=tmp_path)
    with pytest.raises(SourceError, match="has no remote 'origin': add it"):
        run(tmp_path, lonely)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(SourceError, match="is not a git repository"):
        run(tmp_path, plain)
    with pytest.raises(SourceError, match="does not exist"):
        run(tmp_path, tmp_path / "missing")


# ------------------------------------------------------------------ HTTPS with a token


@pytest.fixture
def http(remote: Remote) -> Iterator[GitHttpServer]:
    with serve_git_http(remote.bare.parent, user=USER, token=TOKEN) as server:
        yield server


def assert_secret_absent(token: str, calls: list[Call], folder: Path, *texts: str) -> None:
    for call in calls:
        assert not any(token in arg for arg in call.argv), call.argv
    for file in folder.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file
    for text in texts:
        assert token not in text
        assert base64.b64encode(f"{USER}:{token}".encode()).decode() not in text


def test_https_push_with_a_token_through_askpass_only(
    tmp_path: Path, remote: Remote, http: GitHttpServer, calls: list[Call]
) -> None:
    result = run(tmp_path, http.url("remote.git"), credentials=GitCredentials(https_token=TOKEN))

    assert_one_commit_on_main(remote, result)
    assert result.remote == http.url("remote.git")
    expected = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert f"Basic {expected}" in http.authorizations
    assert {"ls-remote", "fetch", "push"} <= {call.command for call in calls}
    assert_secret_absent(TOKEN, calls, tmp_path / "data")
    config = (tmp_path / "data" / "suggest-git" / "repo.git" / "config").read_text()
    assert "127.0.0.1" not in config  # the URL is given on each call, never stored
    local = [c for c in calls if c.command not in {"ls-remote", "fetch", "push"}]
    assert local
    assert all(TOKEN not in call.env.values() for call in local)


def test_a_local_clone_of_an_https_remote_gets_the_token_through_askpass_only(
    tmp_path: Path, remote: Remote, http: GitHttpServer, clone: Path, calls: list[Call]
) -> None:
    git("remote", "set-url", "origin", http.url("remote.git"), cwd=clone)
    config = (clone / ".git" / "config").read_bytes()

    result = run(tmp_path, clone, credentials=GitCredentials(https_token=TOKEN))

    assert_one_commit_on_main(remote, result)
    assert result.remote == f"origin ({http.url('remote.git')})"
    assert (clone / ".git" / "config").read_bytes() == config
    assert_secret_absent(TOKEN, calls, clone / ".git")
    assert_secret_absent(TOKEN, calls, tmp_path / "data")


def test_https_token_in_the_url_and_a_refused_push_name_no_secret(
    tmp_path: Path, remote: Remote, http: GitHttpServer, calls: list[Call]
) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho 'denied for {TOKEN}' >&2\nexit 1\n")
    hook.chmod(0o755)
    url = http.url("remote.git").replace("http://", f"http://{USER}:{TOKEN}@")

    with pytest.raises(PushRejectedError) as caught:
        run(tmp_path, url)

    message = str(caught.value)
    assert "pre-receive hook declined" in message
    assert "denied for ***" in message
    assert_secret_absent(TOKEN, calls, tmp_path / "data", message)


def test_a_wrong_token_fails_before_any_commit_and_names_no_secret(
    tmp_path: Path, http: GitHttpServer
) -> None:
    wrong = "ghp_PLANTED-wrong-token-2261"
    with pytest.raises(SourceError, match="refused the credentials") as caught:
        run(tmp_path, http.url("remote.git"), credentials=GitCredentials(https_token=wrong))
    assert wrong not in str(caught.value)


def test_a_remote_gone_at_push_time_is_temporary_and_keeps_the_commit(
    tmp_path: Path, remote: Remote, http: GitHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = gitwrite._run

    def stop_before_push(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        if "push" in argv:
            http.shutdown()
            http.server_close()
        return real_run(argv, **kwargs)

    monkeypatch.setattr(gitwrite, "_run", stop_before_push)
    with pytest.raises(PushUnavailableError) as caught:
        run(tmp_path, http.url("remote.git"), credentials=GitCredentials(https_token=TOKEN))

    assert isinstance(caught.value, TemporaryError)
    message = str(caught.value)
    assert http.url("remote.git") in message
    assert "will retry" in message
    cache = tmp_path / "data" / "suggest-git" / "repo.git"
    assert f"the commit {caught.value.commit[:12]} stays on refs/heads/suggestions in {cache}" in (
        message
    )
    assert remote.branches() == {"main"}


def test_a_token_is_refused_for_plain_http_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clear text"):
        run(
            tmp_path,
            "http://git.example.test/org/caches.git",
            credentials=GitCredentials(https_token=TOKEN),
        )


def test_an_author_can_be_given_and_the_committer_stays_gitsync(
    tmp_path: Path, remote: Remote
) -> None:
    run(tmp_path, remote.url, author=GitIdentity(name="Jane Doe", email="jane@example.com"))
    who = git("log", "-1", "--format=%an <%ae>|%cn <%ce>", "suggestions", cwd=remote.bare)
    assert who == f"Jane Doe <jane@example.com>|{DEFAULT_IDENTITY}"
    with pytest.raises(ConfigError, match="must be non-empty, on one line"):
        GitIdentity(name="Eve <x>", email="eve@example.com")

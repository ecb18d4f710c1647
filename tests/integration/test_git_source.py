"""GitSource against real git: a bare remote and a working clone in tmp_path.

Commits are pushed from the tests, then `fetch()` is checked for what it
returns and for which git commands it ran (every git process of the daemon's
clone goes through `gitsync.sources.git._run`, which the `calls` fixture
records). HTTPS runs against `git http-backend` behind a Basic-auth HTTP server
on 127.0.0.1; SSH has no server here, so a fake `ssh` on PATH plays the host
that fails. The one-shot readers (`export_revision`, `head_revision`) read local
repositories through GitPython, and URLs through a GitSource. A plain folder is a
FolderSource, which `open_source` picks as `gitsync run` does.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from githttp import GitHttpServer, serve_git_http
from gitrepo import Call, isolate_git, watch_git_calls

import gitsync.sources.git as gitmod
from gitsync.errors import ConfigError, PermanentError, TemporaryError
from gitsync.sources import open_source
from gitsync.sources.base import Source
from gitsync.sources.folder import FolderSource
from gitsync.sources.git import (
    FOLDER_REVISION_PREFIX,
    GitCredentials,
    GitSource,
    SourceError,
    SourceUnavailable,
    export_revision,
    head_revision,
)

TOKEN = "ghp_PLANTED-s3cret-token-0451"  # a planted secret: must never show up anywhere
USER = "x-access-token"


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user or system git config, a fixed identity, and no proxy for 127.0.0.1."""
    return isolate_git(monkeypatch, tmp_path_factory.mktemp("home"))


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, check=True, timeout=30, text=True
    )
    return done.stdout.strip()


class Remote:
    """A bare repository and a working clone that commits and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=root)
        git("init", "--quiet", "-b", "main", str(self.work), cwd=root)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(self, files: Mapping[str, str | None], message: str = "change") -> str:
        """Write (or, for None, delete) files, commit them, return the commit id."""
        for name, text in files.items():
            target = self.work / name
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, *refs: str, force: bool = False) -> None:
        git("push", "--quiet", *(["--force"] if force else []), "origin", *refs, cwd=self.work)

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.work)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every process GitSource starts, in order."""
    return watch_git_calls(monkeypatch, gitmod)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    repo = Remote(tmp_path)
    repo.commit({"caches/web.yaml": "name: web\n", "README.md": "specs\n"}, "first")
    repo.push("main")
    return repo


def source(tmp_path: Path, url: str | Path, **kwargs: Any) -> GitSource:
    return GitSource(url=str(url), cache_dir=tmp_path / "cache", **kwargs)


def opened(tmp_path: Path, url: str | Path, **kwargs: Any) -> Source:
    """The source `gitsync run --repo URL` reads: a GitSource, or a FolderSource for a folder."""
    return open_source(url=str(url), cache_dir=tmp_path / "cache", **kwargs)


def files_of(tree: Path) -> set[str]:
    return {
        p.relative_to(tree).as_posix()
        for p in tree.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(tree).parts
    }


# ------------------------------------------------------------------ clone and fetch


def test_first_fetch_clones_the_tracked_branch(tmp_path: Path, remote: Remote) -> None:
    src = source(tmp_path, remote.bare)
    assert src.last_revision is None

    result = src.fetch()

    assert result.changed is True
    assert result.revision == remote.git("rev-parse", "HEAD")
    assert result.tree == tmp_path / "cache" / "repo"
    assert files_of(result.tree) == {"caches/web.yaml", "README.md"}
    assert src.last_revision == result.revision
    # A shallow clone: only the tip commit is in it.
    assert git("rev-parse", "--is-shallow-repository", cwd=result.tree) == "true"


def test_unchanged_remote_runs_only_ls_remote_and_leaves_the_tree_alone(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    src = source(tmp_path, remote.bare)
    first = src.fetch()
    marker = first.tree / "untracked-marker.txt"
    marker.write_text("a checkout or clean would remove me")
    calls.clear()

    again = src.fetch()

    assert again.changed is False
    assert again.revision == first.revision
    assert [call.command for call in calls] == ["ls-remote"]
    assert marker.read_text() == "a checkout or clean would remove me"


def test_a_pushed_commit_is_fetched_and_checked_out(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    src = source(tmp_path, remote.bare)
    first = src.fetch()
    (first.tree / "untracked-marker.txt").write_text("left over")
    new = remote.commit({"caches/api.yaml": "name: api\n", "caches/web.yaml": None})
    remote.push("main")
    calls.clear()

    result = src.fetch()

    assert result.changed is True
    assert result.revision == new != first.revision
    assert files_of(result.tree) == {"caches/api.yaml", "README.md"}
    commands = [call.command for call in calls]
    assert commands[:2] == ["ls-remote", "fetch"]
    assert {"checkout", "clean"} <= set(commands)
    fetch = next(call for call in calls if call.command == "fetch")
    assert "--depth" in fetch.argv
    assert fetch.argv[fetch.argv.index("--depth") + 1] == "1"
    assert fetch.argv[-1] == f"+refs/heads/main:{gitmod.TRACKED_REF}"


def test_other_branches_are_not_followed(tmp_path: Path, remote: Remote) -> None:
    src = source(tmp_path, remote.bare)
    first = src.fetch()
    remote.git("switch", "--quiet", "-c", "feature")
    remote.commit({"caches/feature.yaml": "name: feature\n"})
    remote.push("feature")
    remote.git("switch", "--quiet", "main")

    result = src.fetch()

    assert result.changed is False
    assert result.revision == first.revision
    assert "caches/feature.yaml" not in files_of(result.tree)
    # The clone holds no other branch either: only the tracked ref was fetched.
    local_refs = git("for-each-ref", "--format=%(refname)", cwd=result.tree).split()
    assert local_refs == [gitmod.TRACKED_REF]


def test_annotated_tag_ref_checks_out_the_tagged_commit(tmp_path: Path, remote: Remote) -> None:
    tagged = remote.git("rev-parse", "HEAD")
    remote.git("tag", "-a", "v1", "-m", "release 1")
    remote.commit({"caches/later.yaml": "name: later\n"})
    remote.push("main", "v1")
    src = source(tmp_path, remote.bare, ref="v1")

    first = src.fetch()
    assert first.revision == tagged  # the commit, not the tag object
    assert "caches/later.yaml" not in files_of(first.tree)

    remote.commit({"caches/even-later.yaml": "x: 1\n"})
    remote.push("main")
    assert src.fetch().changed is False  # the branch moved, the tag did not

    remote.git("tag", "--force", "-a", "v1", "-m", "release 1, again")
    remote.push("v1", force=True)
    moved = src.fetch()
    assert moved.changed is True
    assert moved.revision == remote.git("rev-parse", "HEAD")
    assert "caches/even-later.yaml" in files_of(moved.tree)


def test_lightweight_tag_and_full_ref_names_work(tmp_path: Path, remote: Remote) -> None:
    tagged = remote.git("rev-parse", "HEAD")
    remote.git("tag", "light")
    remote.commit({"caches/later.yaml": "name: later\n"})
    remote.push("main", "light")

    assert source(tmp_path / "a", remote.bare, ref="light").fetch().revision == tagged
    full = source(tmp_path / "b", remote.bare, ref="refs/tags/light").fetch()
    assert full.revision == tagged
    head = source(tmp_path / "c", remote.bare, ref="HEAD").fetch()
    assert head.revision == remote.git("rev-parse", "HEAD")


def test_commit_id_ref_checks_out_that_commit_and_never_asks_again(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    old = remote.git("rev-parse", "HEAD")
    remote.commit({"caches/later.yaml": "name: later\n"})
    remote.push("main")
    src = source(tmp_path, remote.bare, ref=old.upper())

    first = src.fetch()
    assert first.revision == old
    assert files_of(first.tree) == {"caches/web.yaml", "README.md"}
    calls.clear()

    again = src.fetch()
    assert again.changed is False
    assert calls == []  # a commit id cannot move: no network call at all


def test_path_limits_the_tree_to_a_subfolder(tmp_path: Path, remote: Remote) -> None:
    src = source(tmp_path, remote.bare, path="caches")
    result = src.fetch()
    assert result.tree == tmp_path / "cache" / "repo" / "caches"
    assert files_of(result.tree) == {"web.yaml"}


def test_missing_path_is_an_error_until_a_commit_adds_it(tmp_path: Path, remote: Remote) -> None:
    src = source(tmp_path, remote.bare, path="clusters/prod")
    with pytest.raises(SourceError, match=r"'clusters/prod' is not a folder in revision"):
        src.fetch()
    assert src.last_revision is None
    with pytest.raises(SourceError):  # same revision: still an error, not a silent no-op
        src.fetch()

    added = remote.commit({"clusters/prod/web.yaml": "name: web\n"})
    remote.push("main")
    result = src.fetch()
    assert (result.revision, result.changed) == (added, True)
    assert files_of(result.tree) == {"web.yaml"}


def test_force_push_rewriting_history_still_converges(tmp_path: Path, remote: Remote) -> None:
    base = remote.git("rev-parse", "HEAD")
    remote.commit({"caches/doomed.yaml": "name: doomed\n"}, "to be rewritten")
    remote.push("main")
    src = source(tmp_path, remote.bare)
    assert "caches/doomed.yaml" in files_of(src.fetch().tree)

    remote.git("reset", "--quiet", "--hard", base)
    rewritten = remote.commit({"caches/kept.yaml": "name: kept\n"}, "rewritten")
    remote.push("main", force=True)

    result = src.fetch()
    assert (result.revision, result.changed) == (rewritten, True)
    assert files_of(result.tree) == {"caches/web.yaml", "caches/kept.yaml", "README.md"}


def test_a_restarted_source_reuses_the_clone_without_downloading(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    first = source(tmp_path, remote.bare).fetch()
    (first.tree / "caches" / "web.yaml").write_text("edited behind gitsync's back\n")
    calls.clear()

    restarted = source(tmp_path, remote.bare)
    result = restarted.fetch()

    assert (result.revision, result.changed) == (first.revision, True)  # new instance: new to it
    commands = [call.command for call in calls]
    assert "fetch" not in commands
    assert "checkout" in commands  # the first fetch of an instance repairs the tree
    assert (result.tree / "caches" / "web.yaml").read_text() == "name: web\n"


def test_local_work_tree_counts_only_committed_state(tmp_path: Path, remote: Remote) -> None:
    src = source(tmp_path, remote.work)
    first = src.fetch()
    (remote.work / "caches" / "draft.yaml").write_text("name: draft\n")  # not committed

    assert src.fetch().changed is False
    assert "caches/draft.yaml" not in files_of(first.tree)

    committed = remote.commit({})
    result = src.fetch()
    assert (result.revision, result.changed) == (committed, True)
    assert "caches/draft.yaml" in files_of(result.tree)


def test_the_clone_ignores_git_variables_inherited_from_a_hook(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "users-checkout"
    git("init", "--quiet", "-b", "main", str(other), cwd=tmp_path)
    (other / "kept.txt").write_text("committed\n")
    git("add", "kept.txt", cwd=other)
    git("commit", "--quiet", "-m", "theirs", cwd=other)
    (other / "untracked.txt").write_text("a clean -ffdx there would delete me\n")
    index = (other / ".git" / "index").read_bytes()
    head = git("rev-parse", "HEAD", cwd=other)
    # What git sets for a hook it runs (GIT_INDEX_FILE for pre-commit), and more.
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other / ".git" / "objects"))

    result = source(tmp_path, remote.bare).fetch()

    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        monkeypatch.delenv(name)
    assert files_of(result.tree) == {"caches/web.yaml", "README.md"}
    assert result.revision == remote.git("rev-parse", "HEAD")
    assert (other / "untracked.txt").exists()
    assert (other / ".git" / "index").read_bytes() == index
    assert git("rev-parse", "HEAD", cwd=other) == head
    assert git("for-each-ref", "--format=%(refname)", cwd=other) == "refs/heads/main"


# ------------------------------------------------------------------ a plain folder


def test_plain_folder_is_its_own_tree_with_a_content_revision(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    (folder / "team").mkdir(parents=True)
    (folder / "team" / "web.yaml").write_text("name: web\n")
    (folder / "notes.txt").write_text("not a spec\n")
    src = opened(tmp_path, folder)

    first = src.fetch()
    assert first.tree == folder
    assert first.revision.startswith(FOLDER_REVISION_PREFIX)
    assert first.changed is True
    assert not (tmp_path / "cache").exists()  # nothing cloned

    (folder / "notes.txt").write_text("edited, still not a spec\n")
    assert src.fetch().changed is False

    (folder / "team" / "web.yaml").write_text("name: web\nimages: [nginx:1.27]\n")
    edited = src.fetch()
    assert edited.changed is True
    assert edited.revision != first.revision

    (folder / "team" / "api.yml").write_text("name: api\n")
    added = src.fetch()
    assert added.changed is True
    (folder / "team" / "api.yml").unlink()
    assert src.fetch().revision == edited.revision  # same content, same revision


def test_plain_folder_with_path_and_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    (folder / "prod").mkdir(parents=True)
    (folder / "prod" / "web.yaml").write_text("name: web\n")
    assert opened(tmp_path, folder, path="prod").fetch().tree == folder / "prod"

    with pytest.raises(SourceError, match="does not exist"):
        opened(tmp_path, tmp_path / "nowhere").fetch()


def test_a_plain_folder_needs_neither_git_nor_gitpython(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "web.yaml").write_text("name: web\n")
    repo = Remote(tmp_path)  # before PATH loses git
    repo.commit({"web.yaml": "name: web\n"})
    empty_bin = tmp_path / "no-git-here"
    empty_bin.mkdir()
    script = f"""
import sys
from pathlib import Path
from gitsync.sources import open_source
from gitsync.sources.git import SourceError, export_revision, head_revision
result = open_source(url={str(folder)!r}, cache_dir=Path({str(tmp_path / "cache")!r})).fetch()
assert result.revision.startswith("sha256:"), result
assert "git" not in sys.modules, "GitPython was imported for a plain folder"
assert head_revision(Path({str(folder)!r})) is None
try:
    export_revision(repo={str(repo.work)!r}, revision="HEAD", dest=Path({str(tmp_path / "out")!r}))
except SourceError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PATH": str(empty_bin)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the git command is not installed or not on PATH"


def test_open_source_picks_the_source_by_what_the_path_is(tmp_path: Path, remote: Remote) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    assert isinstance(opened(tmp_path, folder), FolderSource)
    assert isinstance(opened(tmp_path, tmp_path / "nowhere"), FolderSource)
    for repository in (remote.bare, remote.work, f"file://{remote.bare}", "git@host:org/r.git"):
        assert isinstance(opened(tmp_path, repository), GitSource)
    with pytest.raises(ConfigError, match="is not a valid git ref"):  # as for a repository
        opened(tmp_path, folder, ref="main..x")
    with pytest.raises(ConfigError, match="must be a folder inside the repository"):
        opened(tmp_path, folder, path="../elsewhere")


def test_a_path_that_changes_kind_asks_for_a_restart(tmp_path: Path, remote: Remote) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "web.yaml").write_text("name: web\n")
    plain = opened(tmp_path / "a", folder)
    plain.fetch()
    git("init", "--quiet", str(folder), cwd=tmp_path)
    with pytest.raises(SourceError, match=r"is a git repository now.*restart gitsync"):
        plain.fetch()

    local = tmp_path / "local"
    git("clone", "--quiet", str(remote.bare), str(local), cwd=tmp_path)
    repository = opened(tmp_path / "b", local)
    repository.fetch()
    shutil.rmtree(local / ".git")
    with pytest.raises(SourceError, match=r"is not a git repository \(any more\).*restart gitsync"):
        repository.fetch()


# ------------------------------------------------------------------ failures


def test_missing_branch_is_a_permanent_error(tmp_path: Path, remote: Remote) -> None:
    with pytest.raises(SourceError, match=r"'release' is not a branch or tag of") as caught:
        source(tmp_path, remote.bare, ref="release").fetch()
    assert isinstance(caught.value, PermanentError)


def test_unknown_commit_id_is_a_permanent_error(tmp_path: Path, remote: Remote) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        source(tmp_path, remote.bare, ref="0123456789abcdef0123456789abcdef01234567").fetch()


def test_not_a_repository_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        source(tmp_path, f"file://{tmp_path}/no-such-repo.git").fetch()


def test_unreachable_remote_is_temporary(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnavailable, match="will retry") as caught:
        source(tmp_path, f"http://127.0.0.1:{port}/repo.git").fetch()
    assert isinstance(caught.value, TemporaryError)


def test_a_remote_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as server:  # accepts connections, never says a word
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        src = source(tmp_path, f"http://127.0.0.1:{port}/repo.git", timeout_seconds=0.5)
        with pytest.raises(SourceUnavailable, match=r"did not finish within 0\.5 s"):
            src.fetch()


# ------------------------------------------------------------------ one-shot reads


def test_export_of_a_local_revision_writes_that_commit_not_the_work_tree(
    tmp_path: Path, remote: Remote, calls: list[Call]
) -> None:
    first = remote.git("rev-parse", "HEAD")
    remote.git("tag", "-a", "v1", "-m", "release 1")
    tool = remote.work / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (remote.work / "link.yaml").symlink_to("caches/web.yaml")
    second = remote.commit(
        {"caches/api.yaml": "name: api\n", ".gitattributes": "README.md export-ignore\n"}
    )
    (remote.work / "caches" / "draft.yaml").write_text("name: draft\n")  # not committed

    head = export_revision(repo=str(remote.work), revision="HEAD", dest=tmp_path / "head")

    assert head.revision == second
    assert head.path == tmp_path / "head"
    # What a checkout has: export-ignore is an archive setting, not part of the commit.
    assert files_of(head.path) == {
        "caches/web.yaml",
        "caches/api.yaml",
        "README.md",
        "tool.sh",
        "link.yaml",
        ".gitattributes",
    }
    assert os.access(head.path / "tool.sh", os.X_OK)
    assert not os.access(head.path / "README.md", os.X_OK)
    assert os.readlink(head.path / "link.yaml") == "caches/web.yaml"
    for revision in ("v1", first[:8], "HEAD~1", "main^", first.upper()):
        old = export_revision(repo=str(remote.work), revision=revision, dest=tmp_path / revision)
        assert old.revision == first, revision
        assert files_of(old.path) == {"caches/web.yaml", "README.md"}, revision
    assert calls == []  # read in place by GitPython: no clone, no runner call


def test_export_in_a_pre_receive_hook_reads_the_quarantined_push(
    tmp_path: Path, remote: Remote
) -> None:
    # git keeps pushed objects in a quarantine until the hook accepts them and tells
    # the hook where (GIT_OBJECT_DIRECTORY); GitPython reads them there, as git does.
    out = tmp_path / "exported"
    program = (
        "import sys; from pathlib import Path; from gitsync.sources.git import export_revision; "
        "c = export_revision(repo='.', revision=sys.argv[1], dest=Path(sys.argv[2])); "
        "print('exported', c.revision)"
    )
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nread old new ref\n"
        f'exec {shlex.quote(sys.executable)} -c "{program}" "$new" {shlex.quote(str(out))}\n'
    )
    hook.chmod(0o755)
    pushed = remote.commit({"caches/api.yaml": "name: api\n"})

    done = subprocess.run(
        ["git", "push", "origin", "main"],
        cwd=remote.work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"exported {pushed}" in done.stderr
    assert files_of(out) == {"caches/web.yaml", "caches/api.yaml", "README.md"}


def test_export_from_a_folder_in_the_work_tree_writes_that_folder(
    tmp_path: Path, remote: Remote
) -> None:
    first = remote.git("rev-parse", "HEAD")
    remote.commit({"caches/new/api.yaml": "name: api\n"})

    sub = export_revision(repo=str(remote.work / "caches"), revision="HEAD", dest=tmp_path / "a")
    assert files_of(sub.path) == {"web.yaml", "new/api.yaml"}  # like `git archive` there
    with pytest.raises(SourceError, match=r"folder 'caches/new' does not exist in revision"):
        export_revision(repo=str(remote.work / "caches" / "new"), revision=first, dest=tmp_path)
    bare = export_revision(repo=str(remote.bare), revision="main", dest=tmp_path / "b")
    assert (bare.revision, files_of(bare.path)) == (first, {"caches/web.yaml", "README.md"})


@pytest.mark.parametrize(
    "revision", ["no-such-branch", "0123456789abcdef0123456789abcdef01234567", "HEAD^{tree}"]
)
def test_export_of_a_revision_that_names_no_commit_says_so(
    tmp_path: Path, remote: Remote, revision: str
) -> None:
    with pytest.raises(SourceError, match=r"is not a commit: give a branch, a tag") as caught:
        export_revision(repo=str(remote.work), revision=revision, dest=tmp_path / "out")
    assert repr(revision) in str(caught.value)


def test_export_of_a_damaged_repository_is_a_source_error(tmp_path: Path, remote: Remote) -> None:
    blob = remote.git("rev-parse", "HEAD:caches/web.yaml")
    (remote.work / ".git" / "objects" / blob[:2] / blob[2:]).unlink()  # loose: never packed
    with pytest.raises(SourceError, match=r"reading revision 'HEAD' of .* failed: .*missing"):
        export_revision(repo=str(remote.work), revision="HEAD", dest=tmp_path / "out")
    commit = remote.git("rev-parse", "HEAD")
    (remote.work / ".git" / "objects" / commit[:2] / commit[2:]).unlink()
    assert head_revision(remote.work) is None


def test_export_of_a_folder_outside_any_repository_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="is not in a git repository"):
        export_revision(repo=str(tmp_path / "plain"), revision="HEAD", dest=tmp_path / "out")


@pytest.mark.parametrize("name", ["..", ".git", ".GIT"])
def test_export_refuses_tree_entries_git_never_checks_out(
    tmp_path: Path, remote: Remote, name: str
) -> None:
    # `git mktree` writes any name; fsck and checkout refuse these, and so must we.
    blob = remote.git("hash-object", "-w", "caches/web.yaml")
    inner = subprocess.run(
        ["git", "mktree"],
        cwd=remote.work,
        input=f"100644 blob {blob}\tescaped.yaml\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = subprocess.run(
        ["git", "mktree"],
        cwd=remote.work,
        input=f"040000 tree {inner}\t{name}\n100644 blob {blob}\tweb.yaml\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit = remote.git("commit-tree", outer, "-m", "crafted")
    dest = tmp_path / "out" / "tree"

    with pytest.raises(SourceError, match="refusing to write a path git never checks out") as no:
        export_revision(repo=str(remote.work), revision=commit, dest=dest)
    assert f"{name}'" in str(no.value)
    assert not (tmp_path / "out" / "escaped.yaml").exists()
    assert not (dest / name / "escaped.yaml").exists()


def test_head_revision_of_work_trees_folders_and_empty_repositories(
    tmp_path: Path, remote: Remote
) -> None:
    head = remote.git("rev-parse", "HEAD")
    assert head_revision(remote.work) == head
    assert head_revision(remote.work / "caches") == head
    (tmp_path / "plain").mkdir()
    assert head_revision(tmp_path / "plain") is None
    git("init", "--quiet", str(tmp_path / "empty"), cwd=tmp_path)
    assert head_revision(tmp_path / "empty") is None  # no commit yet


# ------------------------------------------------------------------ HTTPS with a token


@pytest.fixture
def http_remote(tmp_path: Path, remote: Remote) -> Iterator[GitHttpServer]:
    with serve_git_http(remote.bare.parent, user=USER, token=TOKEN) as server:
        yield server


def assert_secret_absent(token: str, calls: list[Call], folder: Path) -> None:
    """Not in any command line (what `ps` shows) and in no file gitsync wrote."""
    for call in calls:
        assert not any(token in arg for arg in call.argv), call.argv
    for file in folder.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file


def test_https_token_is_sent_through_askpass_only(
    tmp_path: Path, remote: Remote, http_remote: GitHttpServer, calls: list[Call]
) -> None:
    src = source(
        tmp_path, http_remote.url("remote.git"), credentials=GitCredentials(https_token=TOKEN)
    )
    result = src.fetch()

    assert result.revision == remote.git("rev-parse", "HEAD")
    assert files_of(result.tree) == {"caches/web.yaml", "README.md"}
    expected = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert f"Basic {expected}" in http_remote.authorizations
    assert_secret_absent(TOKEN, calls, tmp_path / "cache")
    network = [call for call in calls if call.command in {"ls-remote", "fetch"}]
    assert network
    assert all(
        call.env.get("GIT_ASKPASS") == str(tmp_path / "cache" / "git-askpass") for call in network
    )
    # Local commands (checkout, clean, …) never get the secret in their environment.
    local = [call for call in calls if call.command not in {"ls-remote", "fetch"}]
    assert all(TOKEN not in call.env.values() for call in local)


def test_token_in_the_url_is_moved_out_of_it(
    tmp_path: Path, http_remote: GitHttpServer, calls: list[Call]
) -> None:
    url = http_remote.url("remote.git").replace("http://", f"http://{USER}:{TOKEN}@")
    src = source(tmp_path, url)

    assert TOKEN not in repr(src)
    assert TOKEN not in src.url
    src.fetch()
    assert_secret_absent(TOKEN, calls, tmp_path / "cache")


def test_export_of_a_url_sends_the_token_through_askpass_only(
    tmp_path: Path, remote: Remote, http_remote: GitHttpServer, calls: list[Call]
) -> None:
    url = http_remote.url("remote.git").replace("http://", f"http://{USER}:{TOKEN}@")

    checkout = export_revision(repo=url, revision="main", dest=tmp_path / "out")

    assert checkout.revision == remote.git("rev-parse", "HEAD")
    assert files_of(checkout.path) == {"caches/web.yaml", "README.md"}
    expected = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert f"Basic {expected}" in http_remote.authorizations
    assert {call.command for call in calls} >= {"ls-remote", "fetch"}
    assert_secret_absent(TOKEN, calls, tmp_path / "out")
    with pytest.raises(ConfigError, match="not a valid git ref"):  # no rev-parse on a URL
        export_revision(repo=url, revision="main~1", dest=tmp_path / "other")


def test_a_configured_credential_helper_never_stores_the_token(
    tmp_path: Path, http_remote: GitHttpServer, isolated_git: Path
) -> None:
    store = tmp_path / "git-credentials"
    isolated_git.write_text(f"[credential]\n\thelper = store --file={store}\n")
    src = source(
        tmp_path, http_remote.url("remote.git"), credentials=GitCredentials(https_token=TOKEN)
    )
    src.fetch()
    assert not store.exists() or TOKEN not in store.read_text()


def test_wrong_token_is_a_permanent_error_that_names_no_secret(
    tmp_path: Path, http_remote: GitHttpServer
) -> None:
    wrong = "ghp_PLANTED-wrong-token-7781"
    src = source(
        tmp_path, http_remote.url("remote.git"), credentials=GitCredentials(https_token=wrong)
    )
    with pytest.raises(SourceError, match="refused the credentials") as caught:
        src.fetch()
    message = str(caught.value)
    assert wrong not in message
    assert base64.b64encode(f"{USER}:{wrong}".encode()).decode() not in message

    url = http_remote.url("remote.git").replace("http://", f"http://alice:{wrong}@")
    with pytest.raises(SourceError) as in_url:
        GitSource(url=url, cache_dir=tmp_path / "other").fetch()
    assert wrong not in str(in_url.value)
    assert "alice:" not in str(in_url.value)


def test_no_token_fails_instead_of_prompting(tmp_path: Path, http_remote: GitHttpServer) -> None:
    with pytest.raises(SourceError, match="refused the credentials"):
        source(tmp_path, http_remote.url("remote.git")).fetch()


# ------------------------------------------------------------------ SSH (no server: a fake ssh)


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An `ssh` first on PATH that records its arguments and prints FAKE_SSH_STDERR."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args_file = tmp_path / "ssh-args"
    stderr_file = tmp_path / "ssh-stderr"
    script = bin_dir / "ssh"
    script.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{args_file}'\ncat '{stderr_file}' >&2\nexit 255\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return args_file, stderr_file


def test_ssh_unknown_host_gets_a_clear_error_and_strict_options(
    tmp_path: Path, fake_ssh: tuple[Path, Path]
) -> None:
    args_file, stderr_file = fake_ssh
    stderr_file.write_text("Host key verification failed.\n")
    key, known_hosts = tmp_path / "id ed25519", tmp_path / "known_hosts"
    src = source(
        tmp_path,
        "ssh://git@git.example.test:2222/team/caches.git",
        credentials=GitCredentials(ssh_key_path=key, known_hosts_path=known_hosts),
    )
    with pytest.raises(SourceError) as caught:
        src.fetch()

    message = str(caught.value)
    assert "host key for git.example.test is not in the known_hosts file" in message
    assert str(known_hosts) in message
    assert "ssh-keyscan -p 2222 git.example.test" in message
    args = args_file.read_text().splitlines()
    for option in (
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        f"UserKnownHostsFile={known_hosts}",
    ):
        assert option in args
    assert args[args.index("-i") + 1] == str(key)  # the space in the path survived the shell


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("git@git.example.test: Permission denied (publickey).\n", SourceError),
        ("ssh: connect to host git.example.test port 22: Connection refused\n", SourceUnavailable),
        (
            "ssh: Could not resolve hostname git.example.test: Name or service not known\n",
            SourceUnavailable,
        ),
    ],
)
def test_ssh_failures_are_classified(
    tmp_path: Path, fake_ssh: tuple[Path, Path], stderr: str, error: type[Exception]
) -> None:
    _, stderr_file = fake_ssh
    stderr_file.write_text(stderr)
    with pytest.raises(error):
        source(tmp_path, "git@git.example.test:team/caches.git").fetch()

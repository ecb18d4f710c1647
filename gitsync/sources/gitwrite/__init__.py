"""Edited files committed on a branch and pushed: how a suggestion reaches review.

`publish` puts a set of file changes (path → new text, None deletes) on
branch NAME of the repository's remote as exactly one commit on top of the
tracked branch's tip, and pushes it. Run again, it rewrites that one commit
(a force push), so the branch never piles up commits: it always reads "the
tracked branch, plus what gitsync proposes now". `gitsync suggest --push` uses
it, and so can an automation branch that follows the tracked branch.

How, and why:

* The commit is built with plumbing on top of the tip just fetched from the
  remote: a temporary index (GIT_INDEX_FILE in a scratch folder) read from the
  tip's tree, `hash-object -w` of the new texts, `update-index --index-info`,
  `write-tree`, `commit-tree`, then `update-ref refs/heads/NAME`. No checkout
  happens, so a local repository's working tree, index and checked-out branch
  stay exactly as they were, whatever state they are in.
* A URL is worked in a bare clone cache (`work_dir/repo.git`), fetched with
  `--depth 1` and given the URL on each call, like the daemon's clone
  (`gitsync.sources.git`), so .git/config never holds it. A local path is
  worked in place: its remote (`origin` by default) is fetched into
  `refs/remotes/<remote>/…`, as `git fetch` would, never shallow, and the
  commit stays on its refs/heads/NAME, where a person can look at it. A branch
  checked out in any of its worktrees is never moved, and a local branch that
  holds commits gitsync did not make is never overwritten.
* Credentials are those of `gitsync run` (`gitsync.sources.credentials`): an
  HTTPS token through the askpass helper (never in argv, .git/config or a
  message), an SSH key with strict host keys; every process gets the scrubbed
  environment and a hard deadline (`gitsync.sources.gitcommand`), hooks off.
* A second run whose tree and parent equal the remote branch's tip pushes
  nothing (`unchanged`); the commit message is not compared, so evidence counts
  that moved do not churn the branch. Changes that leave the tracked tip's tree
  as it is make no commit (`empty`), and with `delete_when_empty` the remote
  branch is deleted: nothing is pending.
* The push uses `--force-with-lease` on the branch's tip as just listed, so a
  concurrent writer is not silently overwritten. Writing the tracked branch
  itself is a usage error (`ProtectedBranchError`) unless `allow_tracked`; then
  the push is a plain fast-forward, never forced.
* A push the remote refuses (a hook, a protected branch, the credentials) is a
  `PushRejectedError`; one that could not reach the remote a
  `PushUnavailableError` (retry later). Both name the remote without
  credentials and git's reason, and say where the local commit stays.

Who the commit is by: the author is the `author` argument, default
`gitsync <gitsync@noreply.invalid>`; the committer is always that fixed
identity. The repository's or the user's user.name/user.email are not read: a
daemon has none worth using, and a human's name on a change a machine wrote
would mislead the reviewer; `.invalid` is a domain that can never belong to
anyone. The commit is not signed (a signing prompt would hang a daemon).

One module per concern, each importing only those below it (an import-linter
contract in pyproject.toml keeps it so); this one holds the entry points and
checks their arguments:

* `publishing`: the order of the steps and what each outcome means.
* `opening`: where the work happens, the clone cache or the local repository.
* `remote`: ls-remote, fetch and push, and the classification of their failures.
* `plumbing`: the temporary index, trees, commits and refs; nothing on the network.
* `model`, `errors`: the identities, results and errors the others share.

Every git process of `publish` and `fetch_tracked` goes through this module's
`_run` (handed to the others as their runner), so there is one place to watch.

Not thread-safe for one `work_dir`: the caller holds the data dir's lock.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from gitsync.errors import ConfigError
from gitsync.sources.base import SourceError
from gitsync.sources.credentials import GitCredentials
from gitsync.sources.git import GIT_TIMEOUT_SECONDS, check_ref
from gitsync.sources.gitcommand import run as _run  # looked up here: tests watch every git call
from gitsync.sources.gitwrite.errors import (
    ProtectedBranchError,
    PushRejectedError,
    PushUnavailableError,
)
from gitsync.sources.gitwrite.model import DEFAULT_IDENTITY, GitIdentity, PublishResult, TrackedTip
from gitsync.sources.gitwrite.opening import open_repository
from gitsync.sources.gitwrite.plumbing import HEADS
from gitsync.sources.gitwrite.publishing import publish_on
from gitsync.sources.gitwrite.remote import Remote

__all__ = [
    "DEFAULT_IDENTITY",
    "GitIdentity",
    "ProtectedBranchError",
    "PublishResult",
    "PushRejectedError",
    "PushUnavailableError",
    "TrackedTip",
    "fetch_tracked",
    "publish",
]

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def publish(
    *,
    repo: str,
    tracked_branch: str,
    branch: str,
    changes: Mapping[str, str | None],
    message: str,
    work_dir: Path,
    credentials: GitCredentials | None = None,
    author: GitIdentity | None = None,
    remote: str = "origin",
    allow_tracked: bool = False,
    delete_when_empty: bool = False,
    timeout_seconds: float = GIT_TIMEOUT_SECONDS,
) -> PublishResult:
    """Commit `changes` on top of the remote's `tracked_branch` as `branch`, and push it.

    `repo` is a URL (worked in `work_dir/repo.git`) or a local repository (worked
    in place, pushing to its `remote`). `changes` maps repository-relative POSIX
    paths to their new UTF-8 text (None deletes the file). See the module
    docstring for what runs and for the errors.
    """
    tracked = _branch_name(tracked_branch, what="tracked branch")
    target = _branch_name(branch, what="branch")
    if target == tracked and not allow_tracked:
        raise ProtectedBranchError(
            f"branch {target!r} is the tracked branch: gitsync proposes changes on another "
            "branch for review and never pushes to the branch it tracks; choose another --branch"
        )
    if not message.strip():
        raise ConfigError("the commit message is empty; say what the change does")
    if timeout_seconds <= 0:
        raise ConfigError(f"git timeout must be positive seconds, got {timeout_seconds}")
    files = {_repository_path(path): text for path, text in changes.items()}
    git = _open(
        repo=repo,
        remote=remote,
        work_dir=work_dir,
        credentials=credentials,
        timeout=timeout_seconds,
    )
    return publish_on(
        git,
        tracked=tracked,
        target=target,
        files=files,
        message=message,
        author=author or DEFAULT_IDENTITY,
        allow_tracked=allow_tracked,
        delete_when_empty=delete_when_empty,
    )


def fetch_tracked(
    *,
    repo: str,
    tracked_branch: str,
    work_dir: Path,
    credentials: GitCredentials | None = None,
    remote: str = "origin",
    timeout_seconds: float = GIT_TIMEOUT_SECONDS,
) -> TrackedTip:
    """Fetch the remote's tracked branch, as `publish` will build on it, to read its files.

    `gitsync suggest --push` reads the specs from this commit rather than from a
    working tree that may have drifted, so the commit it pushes changes only what
    the suggestions change. The same repository, cache and credentials as `publish`.
    """
    tracked = _branch_name(tracked_branch, what="tracked branch")
    git = _open(
        repo=repo,
        remote=remote,
        work_dir=work_dir,
        credentials=credentials,
        timeout=timeout_seconds,
    )
    listed = git.ls_remote(tracked)
    if tracked not in listed:
        raise SourceError(
            f"branch {tracked!r} is not on the remote {git.display}: give the branch "
            "gitsync tracks (--tracked-branch, or gitsync run's --branch)"
        )
    tracked_ref, _ = git.fetch(tracked, None)
    commit = git.repository.rev_parse(f"{tracked_ref}^{{commit}}")
    return TrackedTip(commit=commit, git_dir=git.repository.cwd)


def _open(
    *, repo: str, remote: str, work_dir: Path, credentials: GitCredentials | None, timeout: float
) -> Remote:
    return open_repository(
        repo=repo,
        remote=remote,
        work_dir=work_dir,
        credentials=credentials,
        timeout=timeout,
        run=_run_git,
    )


def _run_git(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout: float,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Every git process of a publish: through `_run` as this module holds it at the call."""
    return _run(argv, cwd=cwd, env=env, timeout=timeout, stdin=stdin)


def _branch_name(name: str, *, what: str) -> str:
    short = name.removeprefix(HEADS)
    if short == "HEAD" or short.startswith("refs/") or _SHA_RE.fullmatch(short):
        raise ConfigError(f"{what} {name!r} must be a branch name, such as main or suggestions")
    check_ref(short)
    return short


def _repository_path(path: str) -> str:
    pure = PurePosixPath(path)
    parts = pure.parts
    if (
        not path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
        or any(part.lower() == ".git" for part in parts)
        or "\0" in path
    ):
        raise ConfigError(
            f"{path!r} is not a path inside the repository: give a relative path with '/' "
            "separators, without '.', '..' or .git (for example caches/web.yaml)"
        )
    return path

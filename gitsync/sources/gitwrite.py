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

Not thread-safe for one `work_dir`: the caller holds the data dir's lock.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from gitsync.errors import ConfigError, GitSyncError, PermanentError
from gitsync.sources.base import SourceError, SourceUnavailable
from gitsync.sources.credentials import (
    GitCredentials,
    Scrubber,
    auth_environment,
    redact_url,
    remote_credentials,
    write_askpass,
)
from gitsync.sources.git import GIT_TIMEOUT_SECONDS, check_ref, is_local_path
from gitsync.sources.gitcommand import SAFE_CONFIG, base_env, classify_failure, stderr_detail
from gitsync.sources.gitcommand import run as _run  # looked up here: tests watch every git call

__all__ = [
    "DEFAULT_IDENTITY",
    "GitIdentity",
    "ProtectedBranchError",
    "PublishResult",
    "PushRejectedError",
    "PushUnavailableError",
    "publish",
]

log = logging.getLogger("gitsync.sources.git")

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_HEADS = "refs/heads/"
# The clone cache's own refs for what was fetched (a local repository uses refs/remotes/).
_CACHE_TRACKED_REF = "refs/gitsync/publish/tracked"
_CACHE_BRANCH_REF = "refs/gitsync/publish/branch"
_MAX_REMOTE_LINES = 5  # of a hook's output, in an error message


class ProtectedBranchError(ConfigError):
    """The branch to write is one gitsync must leave alone.

    The tracked branch (unless explicitly allowed), a branch checked out in the
    local repository, or a local branch holding commits gitsync did not make.
    """


class PushRejectedError(PermanentError):
    """The remote refused the push: a hook, a protected branch, the credentials.

    The commit stays on `local_ref` (`refs/heads/NAME in PATH`).
    """

    def __init__(self, message: str, *, commit: str, local_ref: str) -> None:
        super().__init__(message)
        self.commit = commit
        self.local_ref = local_ref


class PushUnavailableError(SourceUnavailable):
    """The push did not reach the remote: the network, a timeout, a 5xx; retry later.

    The commit stays on `local_ref`.
    """

    def __init__(self, message: str, *, commit: str, local_ref: str) -> None:
        super().__init__(message)
        self.commit = commit
        self.local_ref = local_ref


@dataclass(frozen=True, slots=True)
class GitIdentity:
    """A commit's author or committer."""

    name: str
    email: str

    def __post_init__(self) -> None:
        for value, what in ((self.name, "name"), (self.email, "email")):
            if not value.strip() or any(c in value for c in "<>\n\r\0"):
                raise ConfigError(
                    f"git author {what} {value!r} must be non-empty, on one line, "
                    "without '<' or '>' (for example: Jane Doe <jane@example.com>)"
                )

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


DEFAULT_IDENTITY = GitIdentity(name="gitsync", email="gitsync@noreply.invalid")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What `publish` did."""

    branch: str
    commit: str  # what refs/heads/<branch> holds now; the tracked tip when `empty`
    tracked_commit: str  # the tracked branch's tip the commit sits on
    pushed: bool  # the remote branch was written (or deleted)
    unchanged: bool  # the remote branch already held this tree on this parent
    empty: bool  # the changes leave the tracked tip's tree as it is: no commit
    deleted: bool  # `empty`, and the remote branch was deleted (delete_when_empty)
    remote: str  # the remote, safe to show
    local_ref: str  # where the commit is kept: "refs/heads/NAME in PATH"


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
    git = _Repository.open(
        repo=repo,
        remote=remote,
        work_dir=work_dir,
        credentials=credentials,
        timeout=timeout_seconds,
    )
    return git.publish(
        tracked=tracked,
        target=target,
        files=files,
        message=message,
        author=author or DEFAULT_IDENTITY,
        allow_tracked=allow_tracked,
        delete_when_empty=delete_when_empty,
    )


def _branch_name(name: str, *, what: str) -> str:
    short = name.removeprefix(_HEADS)
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


@dataclass(frozen=True, slots=True)
class _Commit:
    tree: str
    parents: tuple[str, ...]
    committer_email: str


class _Repository:
    """One repository gitsync writes in: the clone cache of a URL, or a local repository."""

    def __init__(
        self,
        *,
        cwd: Path,
        remote: str,
        display: str,
        local: bool,
        credentials: GitCredentials | None,
        scrub: Scrubber,
        askpass: Path,
        timeout: float,
        fetched: tuple[str, str],
    ) -> None:
        self.cwd = cwd
        self.remote = remote  # what git gets: a URL, or the local repository's remote name
        self.display = display  # the remote, safe to show
        self.local = local
        self.credentials = credentials
        self.scrub = scrub
        self.askpass = askpass
        self.timeout = timeout
        self.fetched_tracked, self.fetched_branch = fetched

    @classmethod
    def open(
        cls,
        *,
        repo: str,
        remote: str,
        work_dir: Path,
        credentials: GitCredentials | None,
        timeout: float,
    ) -> _Repository:
        if not repo or repo.startswith("-"):
            raise ConfigError(
                f"repository {redact_url(repo)!r} is not a git URL or a folder: give "
                "https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git "
                "or a local repository"
            )
        askpass = work_dir / "git-askpass"
        if not is_local_path(repo):
            url, credentials, scrub = remote_credentials(repo, credentials)
            cache = work_dir / "repo.git"
            git = cls(
                cwd=cache,
                remote=url,
                display=redact_url(url),
                local=False,
                credentials=credentials,
                scrub=scrub,
                askpass=askpass,
                timeout=timeout,
                fetched=(_CACHE_TRACKED_REF, _CACHE_BRANCH_REF),
            )
            git.ensure_cache()
            return git
        folder = Path(repo).expanduser().absolute()
        if not folder.is_dir():
            raise SourceError(f"repository {folder} does not exist: give a local git repository")
        probe = cls(
            cwd=folder,
            remote=remote,
            display=str(folder),
            local=True,
            credentials=credentials,
            scrub=Scrubber(()),
            askpass=askpass,
            timeout=timeout,
            fetched=("", ""),
        )
        try:
            probe.git("rev-parse", "--git-dir")
        except SourceError as exc:
            raise SourceError(
                f"{folder} is not a git repository: pushing a branch needs one (or a URL)"
            ) from exc
        if not remote or remote.startswith("-") or "/" in remote:
            raise ConfigError(f"remote {remote!r} must be the name of a git remote, like origin")
        try:
            url = probe.git("remote", "get-url", remote).decode().strip()
        except SourceError as exc:
            raise SourceError(
                f"{folder} has no remote {remote!r}: add it (git remote add {remote} URL) "
                "or give the remote's URL as the repository"
            ) from exc
        # git reads the URL (and any userinfo in it) from the repository's config; the
        # scrubber still learns every secret it might print.
        _, _, scrub = remote_credentials(url, credentials)
        return cls(
            cwd=folder,
            remote=remote,
            display=f"{remote} ({redact_url(url)})",
            local=True,
            credentials=credentials,
            scrub=scrub,
            askpass=askpass,
            timeout=timeout,
            fetched=(f"refs/remotes/{remote}/", f"refs/remotes/{remote}/"),
        )

    # ------------------------------------------------------------ the steps

    def publish(
        self,
        *,
        tracked: str,
        target: str,
        files: Mapping[str, str | None],
        message: str,
        author: GitIdentity,
        allow_tracked: bool,
        delete_when_empty: bool,
    ) -> PublishResult:
        local_ref = f"{_HEADS}{target} in {self.where}"
        if self.local:
            self.refuse_checked_out(target)
        listed = self.ls_remote(tracked, target)
        if tracked not in listed:
            raise SourceError(
                f"branch {tracked!r} is not on the remote {self.display}: give the branch "
                "gitsync tracks (gitsync run --branch)"
            )
        remote_tip = listed.get(target)
        # (With allow_tracked the branch may be the tracked one: fetched once.)
        other = target if remote_tip is not None and target != tracked else None
        tracked_ref, branch_ref = self.fetch(tracked, other)
        tip = self.rev_parse(f"{tracked_ref}^{{commit}}")
        tip_tree = self.rev_parse(f"{tip}^{{tree}}")
        tree = self.tree_with(tip, files)
        result = PublishResult(
            branch=target,
            commit=tip,
            tracked_commit=tip,
            pushed=False,
            unchanged=False,
            empty=True,
            deleted=False,
            remote=self.display,
            local_ref=local_ref,
        )
        if tree == tip_tree:
            if delete_when_empty and remote_tip is not None and target != tracked:
                self.push(target, new=None, lease=remote_tip, local_ref=local_ref, commit=tip)
                ref = f"{_HEADS}{target}"
                if self.rev_parse_or_none(ref) == remote_tip:  # ours, as pushed: goes too
                    self.git("update-ref", "-d", ref, remote_tip)
                return replace(result, pushed=True, deleted=True)
            return result
        if remote_tip is not None and branch_ref is not None:
            there = self.read_commit(remote_tip)
            if there.tree == tree and there.parents == (tip,):
                self.set_branch(target, remote_tip, remote_tip=remote_tip, tracked=tracked)
                return replace(result, commit=remote_tip, unchanged=True, empty=False)
        commit = self.commit_tree(tree, parent=tip, message=message, author=author)
        self.set_branch(target, commit, remote_tip=remote_tip, tracked=tracked)
        force = not (allow_tracked and target == tracked)
        self.push(
            target,
            new=commit,
            lease=(remote_tip or "") if force else None,
            local_ref=local_ref,
            commit=commit,
        )
        self.gc()
        log.info("pushed %s (%s) to %s", target, commit[:12], self.display)
        return replace(result, commit=commit, pushed=True, empty=False)

    @property
    def where(self) -> str:
        return str(self.cwd)

    def ensure_cache(self) -> None:
        if (self.cwd / "HEAD").is_file() and (self.cwd / "objects").is_dir():
            return
        try:
            self.cwd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(
                f"cannot create the clone folder {self.cwd}: {exc.strerror}; "
                "the data dir must be writable"
            ) from exc
        self.git("init", "--quiet", "--bare")

    def refuse_checked_out(self, target: str) -> None:
        listing = self.git("worktree", "list", "--porcelain").decode("utf-8", "replace")
        worktree = ""
        for line in listing.splitlines():
            if line.startswith("worktree "):
                worktree = line.removeprefix("worktree ")
            elif line == f"branch {_HEADS}{target}":
                raise ProtectedBranchError(
                    f"branch {target!r} is checked out in {worktree}: gitsync never moves a "
                    "checked-out branch; choose another --branch"
                )

    def ls_remote(self, *branches: str) -> dict[str, str]:
        names = [f"{_HEADS}{branch}" for branch in branches]
        output = self.network("ls-remote", "--", self.remote, *names).decode("utf-8", "replace")
        found: dict[str, str] = {}
        for line in output.splitlines():
            sha, _, name = line.partition("\t")
            if name.strip() in names:
                found[name.strip().removeprefix(_HEADS)] = sha.strip()
        return found

    def fetch(self, tracked: str, branch: str | None) -> tuple[str, str | None]:
        """Fetch the tracked tip (and the branch's, if it exists); the local refs they are on."""
        tracked_ref = self._fetched_ref(self.fetched_tracked, tracked)
        refspecs = [f"+{_HEADS}{tracked}:{tracked_ref}"]
        branch_ref = None
        if branch is not None:
            branch_ref = self._fetched_ref(self.fetched_branch, branch)
            refspecs.append(f"+{_HEADS}{branch}:{branch_ref}")
        options = ["--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules"]
        options += ["--no-auto-gc", "--no-prune"]
        if not self.local:
            options += ["--depth", "1"]  # the cache needs the tips only; never a user's repository
        self.network("fetch", *options, "--", self.remote, *refspecs)
        return tracked_ref, branch_ref

    def _fetched_ref(self, base: str, branch: str) -> str:
        return base + branch if base.endswith("/") else base

    def tree_with(self, tip: str, files: Mapping[str, str | None]) -> str:
        """The tree of `tip` with `files` written or removed, built in a temporary index."""
        modes = self.modes(tip, list(files))
        with tempfile.TemporaryDirectory(prefix="gitsync-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", tip, env=index)
            written = {path: text for path, text in files.items() if text is not None}
            blobs: dict[str, str] = {}
            if written:
                sources = []
                for number, (path, content) in enumerate(written.items()):
                    blob = Path(scratch) / f"blob-{number}"
                    blob.write_bytes(content.encode("utf-8"))
                    sources.append((path, blob))
                out = self.git(
                    "hash-object",
                    "-w",
                    "--no-filters",  # the exact bytes: CRLF stays CRLF
                    "--stdin-paths",
                    stdin="".join(f"{blob}\n" for _, blob in sources).encode(),
                )
                blobs = dict(zip(written, out.decode().split(), strict=True))
            zero = "0" * len(tip)
            records = []
            for path, text in files.items():
                if text is None:
                    records.append(f"0 {zero}\t{path}\0")
                else:
                    records.append(f"{modes.get(path, '100644')} {blobs[path]}\t{path}\0")
            self.git(
                "update-index", "-z", "--index-info", env=index, stdin="".join(records).encode()
            )
            return self.git("write-tree", env=index).decode().strip()

    def modes(self, tip: str, paths: list[str]) -> dict[str, str]:
        """The modes of `paths` in `tip`; a link, a submodule or a folder there is refused, and
        so is a path under a file (git would silently replace the file with a folder)."""
        if not paths:
            return {}
        parents = {str(parent) for path in paths for parent in PurePosixPath(path).parents}
        parents.discard(".")
        wanted = sorted(set(paths) | parents)
        out = self.git("ls-tree", "-z", "--full-tree", tip, "--", *wanted).decode("utf-8")
        modes: dict[str, str] = {}
        for entry in filter(None, out.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, kind, _ = meta.split(" ", 2)
            if path in parents and kind != "tree":
                raise SourceError(
                    f"{path} is a file in the tracked branch, so nothing can be written under it"
                )
            if path in paths:
                if kind != "blob" or mode not in ("100644", "100755"):
                    what = {"tree": "a folder", "commit": "a submodule"}.get(kind, "a link")
                    raise SourceError(
                        f"{path} is {what} in the tracked branch; gitsync writes regular files only"
                    )
                modes[path] = mode
        return modes

    def read_commit(self, commit: str) -> _Commit:
        text = self.git("cat-file", "commit", commit).decode("utf-8", "replace")
        header = text.partition("\n\n")[0]
        tree, parents, email = "", [], ""
        for line in header.splitlines():
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = value
            elif key == "parent":
                parents.append(value)
            elif key == "committer":
                email = value.partition("<")[2].partition(">")[0]
        return _Commit(tree=tree, parents=tuple(parents), committer_email=email)

    def commit_tree(self, tree: str, *, parent: str, message: str, author: GitIdentity) -> str:
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": DEFAULT_IDENTITY.name,
            "GIT_COMMITTER_EMAIL": DEFAULT_IDENTITY.email,
        }
        text = self.scrub(message.strip()) + "\n"
        out = self.git(
            "commit-tree",
            "--no-gpg-sign",
            tree,
            "-p",
            parent,
            "-F",
            "-",
            env=env,
            stdin=text.encode(),
        )
        return out.decode().strip()

    def set_branch(self, target: str, commit: str, *, remote_tip: str | None, tracked: str) -> None:
        """Point refs/heads/<target> at `commit`, unless that would lose someone's commits."""
        ref = f"{_HEADS}{target}"
        old = self.rev_parse_or_none(ref)
        if old == commit:
            return
        if old is not None and self.local and old != remote_tip:
            mine = self.read_commit(old).committer_email == DEFAULT_IDENTITY.email
            if not mine or target == tracked:
                raise ProtectedBranchError(
                    f"local branch {target!r} in {self.where} holds commit {old[:12]}, which "
                    "gitsync did not make; gitsync will not overwrite it: rename or delete "
                    "that branch, or choose another --branch"
                )
        # The old value guards against a concurrent writer between the read and the write.
        self.git("update-ref", "-m", "gitsync: publish", ref, commit, old or "0" * len(commit))

    def push(
        self, target: str, *, new: str | None, lease: str | None, local_ref: str, commit: str
    ) -> None:
        """Push `new` (None deletes) to the branch; `lease`: its tip as listed ("" = absent)."""
        options = ["--porcelain", "--no-verify", "--no-follow-tags", "--recurse-submodules=no"]
        if lease is not None:
            options.append(f"--force-with-lease={_HEADS}{target}:{lease}")
        source = f"{_HEADS}{target}" if new is not None else ""
        refspec = f"{source}:{_HEADS}{target}"
        try:
            done = self._network_call("push", [*options, "--", self.remote, refspec])
        except subprocess.TimeoutExpired as exc:
            raise PushUnavailableError(
                f"git push of {target} to {self.display} did not finish within "
                f"{self.timeout:g} s; {self._kept(commit, local_ref, new)}",
                commit=commit,
                local_ref=local_ref,
            ) from exc
        if done.returncode == 0:
            return
        rejected = [
            line.split("\t")
            for line in done.stdout.decode("utf-8", "replace").splitlines()
            if line.startswith("!\t")
        ]
        said = self._remote_said(done.stderr)
        if rejected:
            reason = rejected[0][2] if len(rejected[0]) > 2 else "rejected"
            if "stale info" in reason:
                reason += " (the branch moved on the remote while gitsync wrote it; run again)"
            raise PushRejectedError(
                f"git push of {target} to {self.display} was rejected: {self.scrub(reason)}"
                f"{said}; {self._kept(commit, local_ref, new)}",
                commit=commit,
                local_ref=local_ref,
            )
        failure = classify_failure(
            operation="push",
            url=self.display,
            ref=target,
            stderr=done.stderr,
            returncode=done.returncode,
            known_hosts_path=self.credentials.known_hosts_path if self.credentials else None,
            scrub=self.scrub,
            access="write",
        )
        kind = PushUnavailableError if isinstance(failure, SourceUnavailable) else PushRejectedError
        raise kind(
            f"{failure}; {self._kept(commit, local_ref, new)}", commit=commit, local_ref=local_ref
        )

    def _kept(self, commit: str, local_ref: str, new: str | None) -> str:
        if new is None:
            return "the remote branch was left as it was"
        return f"the commit {commit[:12]} stays on {local_ref}"

    def _remote_said(self, stderr: bytes) -> str:
        lines = [
            line.removeprefix("remote:").strip()
            for line in stderr.decode("utf-8", "replace").splitlines()
            if line.startswith("remote:")
        ]
        lines = [line for line in lines if line][-_MAX_REMOTE_LINES:]
        return f" (the remote said: {self.scrub(' / '.join(lines))})" if lines else ""

    def gc(self) -> None:
        if self.local:
            return  # a person's repository: their gc, not ours
        try:
            self.git("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
        except GitSyncError as exc:
            log.warning("git gc in %s failed: %s", self.cwd, exc)

    def rev_parse(self, name: str) -> str:
        return self.git("rev-parse", "--verify", "--quiet", name).decode().strip()

    def rev_parse_or_none(self, name: str) -> str | None:
        try:
            return self.rev_parse(name) or None
        except SourceError:
            return None

    # ------------------------------------------------------------ running git

    def git(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
    ) -> bytes:
        """A local git command: no credentials, the scrubbed environment, the deadline."""
        argv = ["git", *SAFE_CONFIG, *args]
        operation = next(a for a in args if not a.startswith("-") and "=" not in a)
        try:
            done = _run(
                argv,
                cwd=self.cwd,
                env={**base_env(), **(env or {})},
                timeout=self.timeout,
                stdin=stdin,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"git {operation} in {self.cwd} did not finish within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            raise SourceError(f"cannot run git in {self.cwd}: {self.scrub(str(exc))}") from exc
        if done.returncode != 0:
            raise SourceError(
                f"git {operation} in {self.cwd} failed: "
                f"{self.scrub(stderr_detail(done.stderr, done.returncode))}"
            )
        return done.stdout

    def network(self, command: str, *args: str) -> bytes:
        """ls-remote or fetch: a failure is classified as the daemon's fetches are."""
        try:
            done = self._network_call(command, list(args))
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"git {command} of {self.display} did not finish within {self.timeout:g} s; "
                "the remote is slow or unreachable"
            ) from exc
        if done.returncode != 0:
            raise classify_failure(
                operation=command,
                url=self.display,
                ref=None,
                stderr=done.stderr,
                returncode=done.returncode,
                known_hosts_path=self.credentials.known_hosts_path if self.credentials else None,
                scrub=self.scrub,
            )
        return done.stdout

    def _network_call(
        self, command: str, args: Iterable[str]
    ) -> subprocess.CompletedProcess[bytes]:
        if self.credentials and self.credentials.https_token:
            write_askpass(self.askpass)
        auth = auth_environment(
            self.credentials, askpass_path=self.askpass, connect_timeout_seconds=self.timeout
        )
        argv = ["git", *SAFE_CONFIG, *auth.config_args, command, *args]
        try:
            return _run(argv, cwd=self.cwd, env={**base_env(), **auth.env}, timeout=self.timeout)
        except FileNotFoundError as exc:
            raise SourceError("the git command is not installed or not on PATH") from exc
        except OSError as exc:
            raise SourceError(f"cannot run git in {self.cwd}: {self.scrub(str(exc))}") from exc

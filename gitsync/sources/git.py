"""A git repository as the source: the daemon's clone, and the one-shot `export_revision`.

Two users:

* one-shot commands (`gitsync plan --repo PATH|URL --revision REV`) call
  `export_revision`/`head_revision`: exactly one revision into a folder;
* the daemon calls `GitSource.fetch()` once per pass: a shallow clone kept in the
  data dir, brought to the newest commit of one tracked ref.

Which does what, and why:

* GitPython reads a local repository in place (`gitsync.sources.revisions`): the
  commit HEAD names, and for `plan --revision` the files of the commit a revision
  names. It is imported on first use, so a plain folder of specs needs no git.
* The daemon's clone (ls-remote, fetch, checkout, clean, gc and the rev-parse
  between them) is worked by the `git` command (`gitsync.sources.gitcommand`),
  because GitPython cannot give three things the clone needs. The deadline: every
  git process runs in its own session, and at the deadline the whole group (git,
  git-remote-https, ssh) is killed; GitPython's `kill_after_timeout` looks the
  children up with pgrep or ps, which the slim image lacks, kills git alone, and
  then waits on pipes the surviving helper holds, for ever if the server accepts
  and never answers. The environment: GitPython starts each process from
  os.environ and can only add to it, and `Repo()` itself honours GIT_WORK_TREE,
  GIT_COMMON_DIR and GIT_OBJECT_DIRECTORY; the clone is private, so a checkout
  and a `clean -ffdx` there must not follow a GIT_WORK_TREE or GIT_INDEX_FILE
  inherited from a hook into someone's work tree, and `gitcommand.base_env`
  removes them. The layout: `Repo.clone_from` records the URL as `origin` in
  .git/config and cannot start from a commit id; the clone keeps no remote
  (below). Each of these is the same git process either way, so GitPython would
  not make them faster. A URL given to `plan --revision` goes through a
  `GitSource` too, so it gets the same credential handling and deadline.

Errors become `SourceUnavailable` (retry later) or `SourceError` (a human must
act), decided from git's stderr by `gitcommand.classify_failure`; credentials
reach git only through the askpass helper and GIT_SSH_COMMAND, and every message
is scrubbed of them (`gitsync.sources.credentials`).

How the daemon's fetch stays cheap: when the ref is a branch or tag, one
`git ls-remote` asks the remote where it points; when that is the commit
already checked out, nothing else runs (`changed=False`). A full commit id is
immutable, so once it is checked out no git call runs at all. Otherwise one
`git fetch --depth 1` of that single ref, a checkout, and a clean. The clone
has no remote configured: the URL is given on each call, so `.git/config`
never holds it, and changing `--repo` needs no migration.

A local path that is a git repository (a work tree root or a bare repository)
is treated as a remote: it is cloned and fetched like a URL, so only committed
state counts; uncommitted edits there are not seen. A plain local folder is a
`gitsync.sources.folder.FolderSource`; `gitsync.sources.open_source` picks.

Submodules and Git LFS content are not fetched: spec files are plain YAML.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from gitsync.errors import ConfigError, GitSyncError
from gitsync.sources.base import (
    Checkout,
    FetchResult,
    SourceError,
    SourceUnavailable,
    check_subpath,
    is_git_repository,
    subtree,
)
from gitsync.sources.credentials import (
    DEFAULT_HTTPS_USERNAME,
    GitCredentials,
    auth_environment,
    redact_url,
    remote_credentials,
    ssh_command,
    write_askpass,
)
from gitsync.sources.folder import FOLDER_REVISION_PREFIX
from gitsync.sources.gitcommand import SAFE_CONFIG, base_env, classify_failure
from gitsync.sources.gitcommand import run as _run  # looked up here: tests watch every git call
from gitsync.sources.revisions import export_local_revision, head_revision

__all__ = [  # what callers (the cli, tests, benchmarks) import from here
    "DEFAULT_HTTPS_USERNAME",
    "FOLDER_REVISION_PREFIX",
    "GIT_TIMEOUT_SECONDS",
    "TRACKED_REF",
    "Checkout",
    "FetchResult",
    "GitCredentials",
    "GitSource",
    "SourceError",
    "SourceUnavailable",
    "auth_environment",
    "check_ref",
    "classify_failure",
    "export_revision",
    "head_revision",
    "is_local_path",
    "redact_url",
    "ssh_command",
]

log = logging.getLogger(__name__)

GIT_TIMEOUT_SECONDS = 120.0
# The local ref that keeps the fetched commit alive; no branch, so no upstream logic.
TRACKED_REF = "refs/gitsync/tracked"

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BAD_REF_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)|^[/.]|[/.]$")


def export_revision(*, repo: str, revision: str, dest: Path) -> Checkout:
    """The files of `revision` of `repo` (a local path or a URL), written under `dest`.

    A local repository is read in place with GitPython, and `revision` is anything
    its rev-parse takes (a branch, a tag, a commit id, abbreviated too, `HEAD~1`).
    Given a folder inside a work tree, only that folder of the revision is written,
    as `git archive` does. A URL is fetched into `dest` by a `GitSource`, with its
    credential handling and deadline; `revision` is then a branch, a tag, a full
    ref name or a full commit id.
    """
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(repo)
    if not local.is_dir():
        source = GitSource(
            url=repo, ref=revision, cache_dir=dest, timeout_seconds=GIT_TIMEOUT_SECONDS
        )
        fetched = source.fetch()
        return Checkout(path=fetched.tree, revision=fetched.revision)
    return export_local_revision(local=local, revision=revision, dest=dest)


def is_local_path(url: str) -> bool:
    """git's own rule: a URL has `scheme://`, an scp-like address a colon before any slash."""
    if "://" in url:
        return False
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or (0 <= slash < colon)


def check_ref(ref: str) -> str:
    """`ref` if git would take it as a branch, tag, full ref name or full commit id."""
    if _SHA_RE.fullmatch(ref.lower()):
        return ref.lower()
    if not ref or ref.startswith("-") or _BAD_REF_RE.search(ref):
        raise ConfigError(
            f"ref {ref!r} is not a valid git ref: give a branch name (main), a tag (v1.2.0), "
            "a full name (refs/heads/main) or a full 40- or 64-hex commit id"
        )
    return ref


class GitSource:
    """The tracked ref of one git repository (a URL or a local path), checked out in `cache_dir`.

    Layout of `cache_dir`: `repo/` is the clone (its work tree is what `fetch()`
    returns), `git-askpass` the helper script. Not thread-safe across instances
    sharing one `cache_dir` (the cli holds one lock per data dir); calls on one
    instance are serialised.
    """

    def __init__(
        self,
        *,
        url: str,
        ref: str = "main",
        path: str | None = None,
        cache_dir: Path,
        credentials: GitCredentials | None = None,
        timeout_seconds: float = 60.0,
    ) -> None:
        if not url or url.startswith("-"):
            raise ConfigError(
                f"repository {redact_url(url)!r} is not a git URL or a folder: give "
                "https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git "
                "or a local path"
            )
        if timeout_seconds <= 0:
            raise ConfigError(f"git timeout must be positive seconds, got {timeout_seconds}")
        bare_url, credentials, self._scrub = remote_credentials(url, credentials)
        self._local: Path | None = (
            Path(bare_url).expanduser().absolute() if is_local_path(bare_url) else None
        )
        self._url = str(self._local) if self._local is not None else bare_url
        self._ref = check_ref(ref)
        self._is_commit = _SHA_RE.fullmatch(self._ref) is not None
        self._path = check_subpath(path)
        self._cache_dir = cache_dir
        self._worktree = cache_dir / "repo"
        self._askpass = cache_dir / "git-askpass"
        self._credentials = credentials
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._last_revision: str | None = None
        self._head: str | None = None  # commit this instance checked out (None: not yet)

    def __repr__(self) -> str:
        return f"GitSource(url={redact_url(self._url)!r}, ref={self._ref!r}, path={self._path!r})"

    @property
    def url(self) -> str:
        """The repository, safe to show: no credentials."""
        return redact_url(self._url)

    @property
    def last_revision(self) -> str | None:
        """The revision the last successful `fetch()` returned, or None before one."""
        return self._last_revision

    def fetch(self) -> FetchResult:
        """Bring the tracked ref up to date; see the module docstring for what runs when."""
        with self._lock:
            if self._local is not None and not is_git_repository(self._local):
                if not self._local.is_dir():
                    raise SourceError(
                        f"repository {self._local} does not exist: give a folder of spec files, "
                        "a local git repository or a git URL"
                    )
                # A plain folder is a FolderSource: open_source picks one when gitsync starts.
                raise SourceError(
                    f"repository {self._local} is not a git repository (any more): gitsync "
                    "chooses how to read --repo when it starts; restart gitsync to read it "
                    "as a plain folder"
                )
            revision, tree = self._fetch_git()
            changed = revision != self._last_revision
            self._last_revision = revision
            return FetchResult(revision=revision, changed=changed, tree=tree)

    def watch(self, on_change: Callable[[], None]) -> None:
        """None: a repository is polled, and webhooks say when it moved."""
        del on_change

    def _fetch_git(self) -> tuple[str, Path]:
        self._ensure_clone()
        if self._is_commit:
            # A commit id never moves: once checked out, no git call is needed at all.
            wanted, refspec = self._ref, f"+{self._ref}:{TRACKED_REF}"
        else:
            remote_ref, wanted = self._resolve_ref()
            refspec = f"+{remote_ref}:{TRACKED_REF}"
        if wanted == self._head:
            return wanted, self._tree(self._worktree, wanted)  # the remote has not moved
        commit: str | None = wanted
        if self._head is not None or self._rev_parse(f"{TRACKED_REF}^{{commit}}") != wanted:
            # (A restarted daemon whose clone already holds the commit skips the download.)
            self._network("fetch", refspec)
            commit = self._rev_parse(f"{TRACKED_REF}^{{commit}}")
        if commit is None:
            raise SourceError(
                f"git fetch of {self.url} (ref {self._ref!r}) brought no commit; "
                "the ref must point at a commit (or an annotated tag of one)"
            )
        if commit != self._head:
            # The first fetch of an instance always checks out: that also repairs a work
            # tree left half-written by a crash. Later ones only when the commit moved.
            self._local_git("checkout", "--quiet", "--force", "--detach", commit)
            self._local_git("clean", "-ffdxq")
            self._head = commit
            self._gc()
        return commit, self._tree(self._worktree, commit)

    def _ensure_clone(self) -> None:
        if (self._worktree / ".git").is_dir():
            return
        try:
            self._worktree.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(
                f"cannot create the clone folder {self._worktree}: {exc.strerror}; "
                "the data dir must be writable"
            ) from exc
        self._local_git("init", "--quiet")
        self._head = None

    def _resolve_ref(self) -> tuple[str, str]:
        """(full remote ref name, commit id) of the tracked branch or tag, by ls-remote."""
        if self._ref.startswith("refs/") or self._ref == "HEAD":
            candidates = [self._ref]  # HEAD: the remote's default branch
        else:
            # Like `git clone --branch`: a branch wins over a tag of the same name.
            candidates = [f"refs/heads/{self._ref}", f"refs/tags/{self._ref}"]
        patterns = [*candidates, *(f"{name}^{{}}" for name in candidates)]
        output = self._network("ls-remote", *patterns).decode("utf-8", "replace")
        refs: dict[str, str] = {}
        for line in output.splitlines():
            sha, _, name = line.partition("\t")
            refs[name.strip()] = sha.strip()
        for name in candidates:
            if name in refs:
                # An annotated tag's own id is not a commit; its peeled line is.
                return name, refs.get(f"{name}^{{}}", refs[name])
        raise SourceError(
            f"ref {self._ref!r} is not a branch or tag of {self.url}: give an existing branch "
            "(main), a tag (v1.2.0), a full ref name (refs/heads/main) or a full commit id"
        )

    def _network(self, command: str, *args: str) -> bytes:
        """ls-remote or fetch: the only calls that get credentials and reach the remote."""
        if self._credentials and self._credentials.https_token:
            write_askpass(self._askpass)
        auth = auth_environment(
            self._credentials,
            askpass_path=self._askpass,
            connect_timeout_seconds=self._timeout,
        )
        if command == "fetch":
            options = ["--quiet", "--no-tags", "--depth", "1", "--no-write-fetch-head"]
            options += ["--no-recurse-submodules", "--no-auto-gc"]
        else:
            options = []
        argv = ["git", *SAFE_CONFIG, *auth.config_args, command, *options, "--", self._url, *args]
        return self._call(argv, env={**base_env(), **auth.env}, operation=command)

    def _local_git(self, *args: str) -> bytes:
        argv = ["git", *SAFE_CONFIG, *args]
        operation = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
        return self._call(argv, env=base_env(), operation=operation)

    def _rev_parse(self, name: str) -> str | None:
        try:
            out = self._local_git("rev-parse", "--verify", "--quiet", name)
        except SourceError:
            return None
        return out.decode().strip() or None

    def _gc(self) -> None:
        # Old revisions become unreachable at each checkout; gc --auto prunes them once
        # enough pile up. It is housekeeping: a failure must not fail the pass.
        try:
            # In the foreground, so it runs under our deadline and leaves no process behind.
            self._local_git("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
        except GitSyncError as exc:
            log.warning("git gc in %s failed: %s", self._worktree, exc)

    def _call(self, argv: list[str], *, env: Mapping[str, str], operation: str) -> bytes:
        try:
            done = _run(argv, cwd=self._worktree, env=env, timeout=self._timeout)
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"git {operation} of {self.url} (ref {self._ref!r}) did not finish within "
                f"{self._timeout:g} s; the remote is slow or unreachable, will retry"
            ) from exc
        except FileNotFoundError as exc:
            raise SourceError("the git command is not installed or not on PATH") from exc
        except OSError as exc:
            raise SourceError(
                f"cannot run git in {self._worktree}: {self._scrub(str(exc))}"
            ) from exc
        if done.returncode != 0:
            raise classify_failure(
                operation=operation,
                url=self._url,
                ref=self._ref,
                stderr=done.stderr,
                returncode=done.returncode,
                known_hosts_path=self._credentials.known_hosts_path if self._credentials else None,
                scrub=self._scrub,
            )
        return done.stdout

    def _tree(self, root: Path, revision: str) -> Path:
        return subtree(root, self._path, revision=revision, url=self.url)

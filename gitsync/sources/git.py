"""Reading revisions of a cache repository: GitPython reads, the `git` command fetches.

Two users:

* one-shot commands (`gitsync plan --repo PATH|URL --revision REV`) call
  `export_revision`/`head_revision`: exactly one revision into a folder;
* the daemon calls `GitSource.fetch()` once per pass: a shallow clone kept in the
  data dir, brought to the newest commit of one tracked ref.

Which does what, and why:

* GitPython reads a local repository in place: the commit HEAD names, and for
  `plan --revision` the commit a revision names (`repo.commit(rev)`, GitPython's
  rev-parse) and the files of its tree, walked from `commit.tree` with the blobs
  read by one `git cat-file --batch`. Like git, it reads objects where the
  caller's GIT_OBJECT_DIRECTORY and GIT_ALTERNATE_OBJECT_DIRECTORIES point, so
  `plan` in a pre-receive hook sees the pushed commit in its quarantine. It is
  imported on first use: the import runs `git version`, and fails without git,
  which a plain folder of specs does not need (and `validate` never loads it).
* The daemon's clone (ls-remote, fetch, checkout, clean, gc and the rev-parse
  between them) is worked by the `git` command through `_run`, because GitPython
  cannot give three things the clone needs. The deadline: every git process runs
  in its own session, and at the deadline the whole group (git,
  git-remote-https, ssh) is killed; GitPython's `kill_after_timeout` looks the
  children up with pgrep or ps, which the slim image lacks, kills git alone, and
  then waits on pipes the surviving helper holds, for ever if the server accepts
  and never answers. The environment: GitPython starts each process from
  os.environ and can only add to it, and `Repo()` itself honours GIT_WORK_TREE,
  GIT_COMMON_DIR and GIT_OBJECT_DIRECTORY; the clone is private, so a checkout
  and a `clean -ffdx` there must not follow a GIT_WORK_TREE or GIT_INDEX_FILE
  inherited from a hook into someone's work tree, and `_run` removes them. The
  layout: `Repo.clone_from` records the URL as `origin` in .git/config and cannot
  start from a commit id; the clone keeps no remote (below). Each of these is the
  same git process either way, so GitPython would not make them faster.
  A URL given to `plan --revision` goes through a `GitSource` too, so it gets
  the same credential handling and deadline.

Errors become `SourceUnavailable` (a `TemporaryError`: the network, a timeout,
a 5xx; retry later) or `SourceError` (a `PermanentError`: authentication,
unknown host key, missing ref, not a repository; a human must act), decided
from git's stderr; GitPython's exceptions are translated where they are caught.

How the daemon's fetch stays cheap: when the ref is a branch or tag, one
`git ls-remote` asks the remote where it points; when that is the commit
already checked out, nothing else runs (`changed=False`). A full commit id is
immutable, so once it is checked out no git call runs at all. Otherwise one
`git fetch --depth 1` of that single ref, a checkout, and a clean. The clone
has no remote configured: the URL is given on each call, so `.git/config`
never holds it, and changing `--repo` needs no migration.

Credentials never reach an argument list (visible in `ps`) or a file:

* an HTTPS token is answered to git's password prompt by a tiny askpass script
  (`GIT_ASKPASS`) that prints an environment variable set on that one git
  process only; configured credential helpers are switched off for the call so
  none of them stores the token. `https://user:secret@host/…` in the URL is
  moved out of the URL the same way. The default user name is
  `x-access-token`: GitHub accepts it for personal and app tokens, GitLab and
  Gitea for personal, project and group tokens (any non-empty name works there);
  GitLab OAuth tokens need `oauth2` and Bitbucket `x-token-auth`, set explicitly.
  A token is refused for a plain `http://` remote, except on loopback.
* SSH runs as `ssh -i KEY -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes
  -o UserKnownHostsFile=FILE -o BatchMode=yes`: an unknown or changed host key
  fails with a message naming the host and the file, never a prompt.
* every message that may carry git's output goes through a scrubber that
  removes the token, its encoded forms and any `scheme://user:pass@` userinfo.

A plain local folder (not a git repository) is a development source: `fetch()`
returns the folder itself, and its revision is `sha256:` + a digest of the spec
files (`*.yaml`, `*.yml`) in it, so `changed` works the same way. A local path
that IS a git repository (a work tree root or a bare repository) is treated as
a remote: it is cloned and fetched like a URL, so only committed state counts;
uncommitted edits there are not seen.

Submodules and Git LFS content are not fetched: spec files are plain YAML.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gitsync.errors import ConfigError, GitSyncError, PermanentError, TemporaryError

if TYPE_CHECKING:
    import git

log = logging.getLogger(__name__)

GIT_TIMEOUT_SECONDS = 120.0
# See the module docstring for why this name; override with GitCredentials.https_username.
DEFAULT_HTTPS_USERNAME = "x-access-token"
# The local ref that keeps the fetched commit alive; no branch, so no upstream logic.
TRACKED_REF = "refs/gitsync/tracked"
SPEC_SUFFIXES = (".yaml", ".yml")
FOLDER_REVISION_PREFIX = "sha256:"

# Settings for every git call: no hooks (a user's core.hooksPath must not run in a
# daemon), no reflogs (they would keep every old revision's objects for 90 days).
_SAFE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.logAllRefUpdates=false",
    "-c",
    "advice.detachedHead=false",
)
# Variables that would point git at another repository or inject configuration
# (they are set when gitsync itself runs from a git hook, for instance).
_DROPPED_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
    }
)
_USERNAME_ENV = "GITSYNC_GIT_USERNAME"
_PASSWORD_ENV = "GITSYNC_GIT_PASSWORD"  # noqa: S105  # the variable's name, not a password
_ASKPASS_SCRIPT = f"""#!/bin/sh
# gitsync askpass helper: git runs this to answer its credential prompts. It holds
# no secret: it prints variables set on that one git process only.
case "$1" in
  Username*) printf '%s\\n' "${_USERNAME_ENV}" ;;
  *) printf '%s\\n' "${_PASSWORD_ENV}" ;;
esac
"""
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Greedy up to the last "@" before the path: a password may hold a raw "@".
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s'\"]+)@")
_BAD_REF_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)|^[/.]|[/.]$")


class SourceError(PermanentError):
    """The repository or revision does not exist, or is not a git repository."""


class SourceUnavailable(TemporaryError):
    """The remote did not answer in time or the network failed; try again later."""


@dataclass(frozen=True, slots=True)
class Checkout:
    """A folder holding the files of one revision, and that revision's commit id (or None)."""

    path: Path
    revision: str | None


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """How to authenticate to the remote; every field is optional.

    The cli reads the values from files or the environment and passes them in.
    The user name and token are left out of `repr`, so logging this object, or
    an object holding it, shows no secret.
    """

    https_username: str | None = field(default=None, repr=False)  # DEFAULT_HTTPS_USERNAME
    https_token: str | None = field(default=None, repr=False)
    ssh_key_path: Path | None = None
    known_hosts_path: Path | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one `GitSource.fetch()` found."""

    revision: str  # full commit id checked out, or `sha256:…` for a plain folder
    changed: bool  # False: same revision as the last fetch, the caller skips all further work
    tree: Path  # the files of that revision (the work tree, or work tree / path)


@dataclass(frozen=True, slots=True)
class GitAuth:
    """What one network git call gets for authentication: config flags and environment."""

    config_args: tuple[str, ...]  # `-c` pairs, never secret: they go on the command line
    env: Mapping[str, str] = field(repr=False)  # may hold the token: for that process only


# ---------------------------------------------------------------- scrubbing


def redact_url(url: str) -> str:
    """`url` with any `user:password@` userinfo replaced, safe to log and show in status."""
    return _USERINFO_RE.sub(lambda m: f"{m['scheme']}***@", url)


class _Scrubber:
    """Removes known secrets, in every form git might print them, from a text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update({secret, urllib.parse.quote(secret, safe="")})
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: no partial leftovers

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return redact_url(text)


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(url without userinfo, user, password) for `scheme://user:pass@host/…` URLs."""
    match = _USERINFO_RE.match(url)
    if match is None:
        return url, None, None
    user, _, password = match["userinfo"].partition(":")
    bare = match["scheme"] + url[match.end() :]
    return (
        bare,
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if password else None,
    )


# ---------------------------------------------------------------- running git


def _base_env() -> dict[str, str]:
    # git inherits the process environment (HOME for its config, PATH, proxies, the
    # ssh agent); we drop what would redirect it, forbid prompts, which would hang a
    # daemon, and fix the message language, which the error classification reads.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_ENV and not key.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C"})
    return env


def _run(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout: float,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one command with a hard deadline; raise `subprocess.TimeoutExpired` past it.

    The command gets its own session, so on timeout the whole process group is
    killed: git's helpers (git-remote-https, ssh, upload-pack) would otherwise
    outlive it and keep the pipes open.
    """
    started = time.monotonic()
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise
        finally:
            if process.poll() is None:  # interrupted some other way (KeyboardInterrupt)
                _kill_group(process)
    log.debug("git call took %.4f s, exit code %s", time.monotonic() - started, process.returncode)
    return subprocess.CompletedProcess(list(argv), process.returncode or 0, stdout, stderr)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)


def _stderr_detail(stderr: bytes, returncode: int) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("hint:")]
    if not lines:
        return f"exit code {returncode}"
    # The last line is the summary ("fatal: …"); the one before often says why.
    return "; ".join(lines[-2:]) if len(lines) > 1 else lines[-1]


_UNAVAILABLE_MARKERS = (
    "could not resolve host",
    "could not resolve hostname",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "connection reset",
    "network is unreachable",
    "no route to host",
    "temporary failure in name resolution",
    "early eof",
    "the remote end hung up unexpectedly",
    "rpc failed",
    "ssh: connect to host",
    "connection closed by",
    "the requested url returned error: 5",
    "gnutls_handshake() failed",
    "ssl_connect",
    "tls connection was non-properly terminated",
)
_AUTH_MARKERS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied",
    "invalid username or password",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
)
_MISSING_MARKERS = (
    "couldn't find remote ref",
    "not our ref",
    "does not appear to be a git repository",
    "repository not found",
    "not found",
    "the requested url returned error: 404",
    "no such file or directory",
    "not a git repository",
)


def classify_failure(
    *,
    operation: str,
    url: str,
    ref: str | None,
    stderr: bytes,
    returncode: int,
    known_hosts_path: Path | None = None,
    scrub: _Scrubber | None = None,
) -> GitSyncError:
    """The error a failed git call means, with a message that names no secret.

    Host-key and authentication failures are checked before network ones: ssh
    ends both with "Could not read from remote repository", which alone would
    look like an outage.
    """
    scrub = scrub or _Scrubber(())
    detail = scrub(_stderr_detail(stderr, returncode))
    lowered = stderr.decode("utf-8", "replace").lower()
    where = f"{redact_url(url)}" + (f" (ref {ref!r})" if ref else "")
    if "host key verification failed" in lowered or "no matching host key" in lowered:
        host, port = _ssh_host(url)
        file = str(known_hosts_path) if known_hosts_path else "~/.ssh/known_hosts (ssh's default)"
        keyscan = f"ssh-keyscan -p {port} {host}" if port else f"ssh-keyscan {host}"
        return SourceError(
            f"git {operation} of {where} failed: the SSH host key for {host} is not in the "
            f"known_hosts file {file}, or differs from the one recorded there; verify the "
            f"host's key and add it, for example with `{keyscan} >> {file}`"
        )
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return SourceError(
            f"git {operation} of {where} failed: the remote refused the credentials "
            f"(an HTTPS token with read access, or an SSH key the host accepts, is needed): "
            f"{detail}"
        )
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return SourceUnavailable(f"git {operation} of {where} failed, will retry: {detail}")
    if any(marker in lowered for marker in _MISSING_MARKERS):
        return SourceError(
            f"git {operation} of {where} failed: the repository or ref does not exist "
            f"(valid refs: a branch, a tag, refs/… or a full commit id): {detail}"
        )
    return SourceError(f"git {operation} of {where} failed: {detail}")


def _ssh_host(url: str) -> tuple[str, int | None]:
    """Host and port of an ssh:// or scp-like (user@host:path) URL, for messages."""
    if "://" in url:
        parsed = urllib.parse.urlsplit(url)
        return parsed.hostname or url, parsed.port
    host = url.split(":", 1)[0]
    return host.rpartition("@")[2], None


def _open_repo(path: Path) -> git.Repo:
    """GitPython's view of the repository that holds `path` (a work tree, a subfolder, a bare one).

    GitPython is imported here, on first use: importing it runs `git version`, and
    fails without git, which a plain folder of specs does not need.
    """
    try:
        import git  # noqa: PLC0415  # see the docstring
    except ImportError as exc:
        if exc.name in {"git", "gitdb", "smmap"}:
            raise SourceError(
                "GitPython is not installed: pip install 'gitpython>=3.1.40'"
            ) from exc
        raise SourceError("the git command is not installed or not on PATH") from exc
    try:
        return git.Repo(path, search_parent_directories=True)
    except git.exc.NoSuchPathError as exc:
        raise SourceError(f"repository {path} does not exist") from exc
    except git.exc.InvalidGitRepositoryError as exc:
        raise SourceError(
            f"{path} is not in a git repository: give a git work tree (or a folder in one), "
            "a bare repository or a URL"
        ) from exc


def _gitpython_failure(exc: Exception, *, what: str) -> SourceError:
    """The SourceError for a git process GitPython ran that failed; no command line in it."""
    import git  # noqa: PLC0415  # loaded already: only _open_repo's repositories get here

    if isinstance(exc, git.exc.GitCommandNotFound):
        return SourceError("the git command is not installed or not on PATH")
    if isinstance(exc, git.exc.GitCommandError):
        stderr = exc.stderr.removeprefix("\n  stderr: '").removesuffix("'")
        status = exc.status if isinstance(exc.status, int) else -1
        return SourceError(f"{what} failed: {redact_url(_stderr_detail(stderr.encode(), status))}")
    return SourceError(f"{what} failed: {redact_url(str(exc))}")


def head_revision(repo: Path) -> str | None:
    """The commit checked out in a work tree, or None: not a git work tree, or no commit yet."""
    try:
        opened = _open_repo(repo)
    except SourceError:
        return None
    import git  # noqa: PLC0415  # loaded by _open_repo

    with opened:
        try:
            return opened.head.commit.hexsha
        except ValueError:  # an unborn branch: `git init` and no commit yet
            return None
        except (git.exc.GitError, git.exc.ODBError) as exc:  # a damaged repository
            log.debug("cannot read HEAD of %s: %s", repo, _gitpython_failure(exc, what="git"))
            return None


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
    with _open_repo(local) as opened:
        import git  # noqa: PLC0415  # loaded by _open_repo, which turns its absence into a SourceError

        where = f"revision {revision!r} of {local}"
        try:
            commit = opened.commit(revision)
            tree = commit.tree  # reads the commit: a full id that names nothing fails here
        except (git.exc.BadName, git.exc.BadObject, ValueError) as exc:
            raise SourceError(
                f"{where} is not a commit: give a branch, a tag, a commit id (abbreviated too) "
                "or an expression such as HEAD~1"
            ) from exc
        except (git.exc.GitError, git.exc.ODBError) as exc:
            raise _gitpython_failure(exc, what=f"reading {where}") from exc
        prefix = _folder_in_work_tree(local, opened.working_tree_dir)
        if prefix:
            try:
                found = tree / prefix
            except KeyError:
                found = None
            if found is None or found.type != "tree":
                raise SourceError(
                    f"folder {prefix!r} does not exist in revision {commit.hexsha[:12]} of "
                    f"{opened.working_tree_dir}; give the repository root or a folder that "
                    "the revision has"
                )
            tree = found
        try:
            _write_tree(tree, dest)
        except (git.exc.GitError, git.exc.ODBError, ValueError) as exc:  # a damaged object
            raise _gitpython_failure(exc, what=f"reading {where}") from exc
        except OSError as exc:
            raise SourceError(f"cannot write {where} into {dest}: {exc.strerror or exc}") from exc
        return Checkout(path=dest, revision=commit.hexsha)


def _folder_in_work_tree(folder: Path, work_tree: str | os.PathLike[str] | None) -> str:
    """`folder` relative to the work tree root, '' for the root itself or a bare repository."""
    if work_tree is None:
        return ""
    try:
        relative = folder.resolve().relative_to(Path(work_tree).resolve())
    except ValueError:  # GIT_WORK_TREE names another folder: take the whole tree, as git does
        return ""
    return "" if relative == Path() else relative.as_posix()


def _write_tree(tree: git.Tree, dest: Path) -> None:
    """Write the files of a git tree under `dest`: blobs from the object database, no checkout.

    A git tree can be made by hand (`git mktree`) with names git would never check
    out; those are refused, so nothing lands outside `dest` or in a `.git` folder.
    Every file is created new (O_EXCL, O_NOFOLLOW), and symbolic links are made
    last, so no write goes through a link the tree itself holds.
    """
    links: list[tuple[Path, str]] = []
    pending = [(tree, dest)]
    while pending:
        current, folder = pending.pop()
        try:
            entries = list(current)
        except ValueError as exc:  # GitPython ≥ 3.2 checks the names as it parses a tree
            raise SourceError(f"refusing to write a path git never checks out: {exc}") from exc
        for entry in entries:
            name = entry.name
            if name in {"", ".", ".."} or "/" in name or "\0" in name or name.lower() == ".git":
                raise SourceError(f"refusing to write a path git never checks out: {entry.path!r}")
            target = folder / name
            if entry.type == "tree":
                target.mkdir()
                pending.append((entry, target))
            elif entry.type != "blob":  # a submodule: an empty folder, as in a checkout
                target.mkdir()
            elif stat.S_ISLNK(entry.mode):
                links.append((target, os.fsdecode(entry.data_stream.read())))
            else:
                mode = 0o777 if entry.mode & 0o111 else 0o666  # the umask applies, as in git
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, mode), "wb") as file:
                    entry.stream_data(file)
    for target, link in links:
        os.symlink(link, target)


# ---------------------------------------------------------------- credentials


def ssh_command(credentials: GitCredentials | None, *, connect_timeout_seconds: float) -> str:
    """The GIT_SSH_COMMAND for a fetch: strict host keys, no prompts, only the given key.

    git runs it through a shell, so every path is quoted.
    """
    parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    parts += ["-o", f"ConnectTimeout={max(1, round(connect_timeout_seconds))}"]
    if credentials is not None and credentials.ssh_key_path is not None:
        parts += ["-i", str(credentials.ssh_key_path), "-o", "IdentitiesOnly=yes"]
    if credentials is not None and credentials.known_hosts_path is not None:
        # Only the given file counts, so the error message can name the one file to fix.
        parts += ["-o", f"UserKnownHostsFile={credentials.known_hosts_path}"]
        parts += ["-o", "GlobalKnownHostsFile=/dev/null"]
    return shlex.join(parts)


def auth_environment(
    credentials: GitCredentials | None,
    *,
    askpass_path: Path,
    connect_timeout_seconds: float,
) -> GitAuth:
    """Config flags and environment for one network git call (ls-remote, fetch)."""
    env = {
        "GIT_SSH_COMMAND": ssh_command(credentials, connect_timeout_seconds=connect_timeout_seconds)
    }
    config: tuple[str, ...] = ()
    if credentials is not None and credentials.https_token:
        env.update(
            {
                "GIT_ASKPASS": str(askpass_path),
                _USERNAME_ENV: credentials.https_username or DEFAULT_HTTPS_USERNAME,
                _PASSWORD_ENV: credentials.https_token,
            }
        )
        # An empty value resets the helper list: no configured helper is asked, and
        # none is told to store (approve) the token after a successful fetch.
        config = ("-c", "credential.helper=")
    return GitAuth(config_args=config, env=env)


# ---------------------------------------------------------------- the daemon's source


def _is_local_path(url: str) -> bool:
    """git's own rule: a URL has `scheme://`, an scp-like address a colon before any slash."""
    if "://" in url:
        return False
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or (0 <= slash < colon)


def _is_clear_text_remote(url: str) -> bool:
    """A plain-http URL to a host other than loopback: no place for a token."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "http":
        return False
    host = parsed.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return True


def _is_git_repository(folder: Path) -> bool:
    """A work tree root or a bare repository: what `git clone PATH` accepts."""
    if (folder / ".git").exists():
        return True
    return (
        (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()
    )


def _check_ref(ref: str) -> str:
    if _SHA_RE.fullmatch(ref.lower()):
        return ref.lower()
    if not ref or ref.startswith("-") or _BAD_REF_RE.search(ref):
        raise ConfigError(
            f"ref {ref!r} is not a valid git ref: give a branch name (main), a tag (v1.2.0), "
            "a full name (refs/heads/main) or a full 40- or 64-hex commit id"
        )
    return ref


def _check_subpath(path: str | None) -> str | None:
    if path is None or path.strip() in {"", ".", "./"}:
        return None
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ConfigError(
            f"path {path!r} must be a folder inside the repository, relative to its root "
            "and without '..' (for example clusters/prod)"
        )
    return str(pure)


class GitSource:
    """The tracked ref of one repository, kept checked out in `cache_dir`.

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
        bare_url, url_user, url_password = _split_userinfo(url)
        if url.lower().startswith(("http://", "https://")) and url_user:
            # A secret written into the URL (`https://user:token@…`, or the token alone
            # as `https://token@…`) moves to the askpass channel, so it never lands in
            # argv or .git/config. Explicit credentials win over it.
            if not (credentials and credentials.https_token):
                base = credentials or GitCredentials()
                credentials = GitCredentials(
                    https_username=url_user if url_password else base.https_username,
                    https_token=url_password or url_user,
                    ssh_key_path=base.ssh_key_path,
                    known_hosts_path=base.known_hosts_path,
                )
        else:
            bare_url = url  # `ssh://git@host/…`: the user name is no secret, ssh needs it
        if credentials and credentials.https_token and _is_clear_text_remote(bare_url):
            raise ConfigError(
                f"{redact_url(bare_url)}: a token would travel in clear text over plain http; "
                "use an https:// URL (plain http is allowed only on loopback, 127.0.0.0/8 or ::1)"
            )
        self._local: Path | None = (
            Path(bare_url).expanduser().absolute() if _is_local_path(bare_url) else None
        )
        self._url = str(self._local) if self._local is not None else bare_url
        self._ref = _check_ref(ref)
        self._is_commit = _SHA_RE.fullmatch(self._ref) is not None
        self._path = _check_subpath(path)
        self._cache_dir = cache_dir
        self._worktree = cache_dir / "repo"
        self._askpass = cache_dir / "git-askpass"
        self._credentials = credentials
        self._timeout = timeout_seconds
        # What messages must never show: userinfo the URL carried (git never gets it,
        # but a message could quote the URL), the token, and its Basic-auth encoding.
        secrets: list[str | None] = [url_password or url_user] if bare_url != url else []
        if credentials and credentials.https_token:
            user = credentials.https_username or DEFAULT_HTTPS_USERNAME
            basic = f"{user}:{credentials.https_token}".encode()
            secrets += [credentials.https_token, base64.b64encode(basic).decode()]
        self._scrub = _Scrubber(secrets)
        self._lock = threading.Lock()
        self._last_revision: str | None = None
        self._head: str | None = None  # commit this instance checked out (None: not yet)
        self._folder_files: dict[str, tuple[int, int, int, bytes]] = {}

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
            if self._local is not None and not _is_git_repository(self._local):
                if not self._local.is_dir():
                    raise SourceError(
                        f"repository {self._local} does not exist: give a folder of spec files, "
                        "a local git repository or a git URL"
                    )
                revision, tree = self._fetch_folder(self._local)
            else:
                revision, tree = self._fetch_git()
            changed = revision != self._last_revision
            self._last_revision = revision
            return FetchResult(revision=revision, changed=changed, tree=tree)

    # ------------------------------------------------------------ git mode

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
        self._write_askpass()
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
        argv = ["git", *_SAFE_CONFIG, *auth.config_args, command, *options, "--", self._url, *args]
        return self._call(argv, env={**_base_env(), **auth.env}, operation=command)

    def _local_git(self, *args: str) -> bytes:
        argv = ["git", *_SAFE_CONFIG, *args]
        operation = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
        return self._call(argv, env=_base_env(), operation=operation)

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

    def _write_askpass(self) -> None:
        if not (self._credentials and self._credentials.https_token):
            return
        try:
            if self._askpass.is_file() and self._askpass.read_text() == _ASKPASS_SCRIPT:
                return
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            partial = self._askpass.with_name(self._askpass.name + ".tmp")
            partial.write_text(_ASKPASS_SCRIPT)
            partial.chmod(stat.S_IRWXU)  # executable for git, readable by us only
            partial.replace(self._askpass)
        except OSError as exc:
            raise SourceError(
                f"cannot write the git askpass helper {self._askpass}: {exc.strerror}; "
                "the data dir must be writable and allow executables"
            ) from exc

    def _tree(self, root: Path, revision: str) -> Path:
        tree = root / self._path if self._path else root
        if not tree.is_dir():
            raise SourceError(
                f"path {self._path!r} is not a folder in revision {revision} of {self.url}; "
                "give a folder that exists in the tracked ref, relative to the repository root"
            )
        return tree

    # ------------------------------------------------------------ folder mode

    def _fetch_folder(self, folder: Path) -> tuple[str, Path]:
        tree = self._tree(folder, "(working folder)")
        return FOLDER_REVISION_PREFIX + self._folder_digest(tree), tree

    def _folder_digest(self, tree: Path) -> str:
        """A digest of the spec files' names and contents.

        Files whose size, mtime and inode are unchanged reuse their last digest,
        which keeps a no-op pass over thousands of files to stat calls. A file
        written in the last two seconds is always re-read: a write within the
        clock's granularity might not change its mtime.
        """
        recent = time.time_ns() - 2_000_000_000
        seen: dict[str, tuple[int, int, int, bytes]] = {}
        total = hashlib.sha256()
        pending = [(str(tree), "")]
        entries: list[tuple[str, str]] = []  # (relative name, full path) of spec files
        while pending:
            directory, prefix = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    for entry in listing:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name != ".git":
                                pending.append((entry.path, f"{prefix}{entry.name}/"))
                        elif entry.name.endswith(SPEC_SUFFIXES):
                            entries.append((prefix + entry.name, entry.path))
            except FileNotFoundError:  # removed while we walked: the next pass sees it
                continue
            except OSError as exc:
                raise SourceError(f"cannot list {directory}: {exc.strerror}") from exc
        for relative, full in sorted(entries):
            try:
                info = os.stat(full)
                key = (info.st_size, info.st_mtime_ns, info.st_ino)
                cached = self._folder_files.get(relative)
                if cached is not None and cached[:3] == key and info.st_mtime_ns < recent:
                    digest = cached[3]
                else:
                    with open(full, "rb") as file:
                        digest = hashlib.sha256(file.read()).digest()
            except FileNotFoundError:  # deleted while we walked: the next pass sees it
                continue
            except OSError as exc:
                raise SourceError(f"cannot read spec file {full}: {exc.strerror}") from exc
            seen[relative] = (*key, digest)
            total.update(relative.encode() + b"\0" + digest)
        self._folder_files = seen
        return total.hexdigest()

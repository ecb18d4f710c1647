"""Running the `git` command for the daemon's clone: environment, deadline, what a failure means.

The clone is worked by the `git` command, not GitPython, for its deadline and
its environment (see `gitsync.sources.git`). Here:

* `base_env` is the environment every git process gets: the caller's, without
  the variables that would point git at another repository or inject
  configuration (set when gitsync runs from a git hook), with prompts off and
  the message language fixed, because `classify_failure` reads the messages;
* `run` starts one command in its own session with a hard deadline, and at the
  deadline kills the whole process group (git, git-remote-https, ssh);
* `classify_failure` turns git's stderr into `SourceUnavailable` (a
  `TemporaryError`: the network, a timeout, a 5xx; retry later) or `SourceError`
  (a `PermanentError`: authentication, unknown host key, missing ref, not a
  repository; a human must act), with a message that names no secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from gitsync.errors import GitSyncError
from gitsync.sources.base import SourceError, SourceUnavailable
from gitsync.sources.credentials import Scrubber, redact_url

# The git source's logger: everything the git source logs goes under one name.
log = logging.getLogger("gitsync.sources.git")

# Settings for every git call: no hooks (a user's core.hooksPath must not run in a
# daemon), no reflogs (they would keep every old revision's objects for 90 days).
SAFE_CONFIG = (
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


def base_env() -> dict[str, str]:
    """The environment of every git process: see the module docstring."""
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


def run(
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


def stderr_detail(stderr: bytes, returncode: int) -> str:
    """The lines of git's stderr that say what failed, without its hints."""
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
    scrub: Scrubber | None = None,
    access: str = "read",
) -> GitSyncError:
    """The error a failed git call means, with a message that names no secret.

    Host-key and authentication failures are checked before network ones: ssh
    ends both with "Could not read from remote repository", which alone would
    look like an outage. `access` is what the credentials needed: "read" to
    fetch, "write" to push.
    """
    scrub = scrub or Scrubber(())
    detail = scrub(stderr_detail(stderr, returncode))
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
            f"(an HTTPS token with {access} access, or an SSH key the host accepts, is needed): "
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

"""The network side of a publish: ls-remote, fetch and push, and what their failures mean.

Apart from the plumbing because only these processes get credentials and talk
to the remote, and because their failures are classified rather than just
reported: an ls-remote or fetch fails as the daemon's fetches do
(`gitsync.sources.gitcommand.classify_failure`), and a push is either
refused (`PushRejectedError`: a hook, a protected branch, the credentials, a
lease that no longer holds) or did not get through (`PushUnavailableError`:
retry later). Both name the remote without credentials and git's reason, and
say where the local commit stays.

Credentials are those of `gitsync run` (`gitsync.sources.credentials`): an
HTTPS token through the askpass helper (never in argv, .git/config or a
message), an SSH key with strict host keys. The push uses
`--force-with-lease` on the branch's tip as just listed, so a concurrent
writer is not silently overwritten.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gitsync.sources.base import SourceError, SourceUnavailable
from gitsync.sources.credentials import GitCredentials, auth_environment, write_askpass
from gitsync.sources.gitcommand import SAFE_CONFIG, base_env, classify_failure
from gitsync.sources.gitwrite.errors import PushRejectedError, PushUnavailableError
from gitsync.sources.gitwrite.plumbing import HEADS, Repository

_MAX_REMOTE_LINES = 5  # of a hook's output, in an error message


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    """The remote as `repository` reaches it, and the local refs a fetch writes.

    `fetched_tracked` and `fetched_branch` are a ref, or a prefix ending in "/"
    that the branch name completes (a local repository's refs/remotes/<remote>/).
    """

    repository: Repository
    remote: str  # what git gets: a URL, or the local repository's remote name
    display: str  # the remote, safe to show
    credentials: GitCredentials | None
    askpass: Path
    fetched_tracked: str
    fetched_branch: str

    def ls_remote(self, *branches: str) -> dict[str, str]:
        names = [f"{HEADS}{branch}" for branch in branches]
        output = self.network("ls-remote", "--", self.remote, *names).decode("utf-8", "replace")
        found: dict[str, str] = {}
        for line in output.splitlines():
            sha, _, name = line.partition("\t")
            if name.strip() in names:
                found[name.strip().removeprefix(HEADS)] = sha.strip()
        return found

    def fetch(self, tracked: str, branch: str | None) -> tuple[str, str | None]:
        """Fetch the tracked tip (and the branch's, if it exists); the local refs they are on."""
        tracked_ref = self._fetched_ref(self.fetched_tracked, tracked)
        refspecs = [f"+{HEADS}{tracked}:{tracked_ref}"]
        branch_ref = None
        if branch is not None:
            branch_ref = self._fetched_ref(self.fetched_branch, branch)
            refspecs.append(f"+{HEADS}{branch}:{branch_ref}")
        options = ["--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules"]
        options += ["--no-auto-gc", "--no-prune"]
        if not self.repository.local:
            options += ["--depth", "1"]  # the cache needs the tips only; never a user's repository
        self.network("fetch", *options, "--", self.remote, *refspecs)
        return tracked_ref, branch_ref

    def _fetched_ref(self, base: str, branch: str) -> str:
        return base + branch if base.endswith("/") else base

    def push(
        self, target: str, *, new: str | None, lease: str | None, local_ref: str, commit: str
    ) -> None:
        """Push `new` (None deletes) to the branch; `lease`: its tip as listed ("" = absent)."""
        options = ["--porcelain", "--no-verify", "--no-follow-tags", "--recurse-submodules=no"]
        if lease is not None:
            options.append(f"--force-with-lease={HEADS}{target}:{lease}")
        source = f"{HEADS}{target}" if new is not None else ""
        refspec = f"{source}:{HEADS}{target}"
        scrub = self.repository.scrub
        try:
            done = self._network_call("push", [*options, "--", self.remote, refspec])
        except subprocess.TimeoutExpired as exc:
            raise PushUnavailableError(
                f"git push of {target} to {self.display} did not finish within "
                f"{self.repository.timeout:g} s; {self._kept(commit, local_ref, new)}",
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
                f"git push of {target} to {self.display} was rejected: {scrub(reason)}"
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
            scrub=scrub,
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
        return f" (the remote said: {self.repository.scrub(' / '.join(lines))})" if lines else ""

    def network(self, command: str, *args: str) -> bytes:
        """ls-remote or fetch: a failure is classified as the daemon's fetches are."""
        try:
            done = self._network_call(command, list(args))
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"git {command} of {self.display} did not finish within "
                f"{self.repository.timeout:g} s; the remote is slow or unreachable"
            ) from exc
        if done.returncode != 0:
            raise classify_failure(
                operation=command,
                url=self.display,
                ref=None,
                stderr=done.stderr,
                returncode=done.returncode,
                known_hosts_path=self.credentials.known_hosts_path if self.credentials else None,
                scrub=self.repository.scrub,
            )
        return done.stdout

    def _network_call(
        self, command: str, args: Iterable[str]
    ) -> subprocess.CompletedProcess[bytes]:
        repository = self.repository
        if self.credentials and self.credentials.https_token:
            write_askpass(self.askpass)
        auth = auth_environment(
            self.credentials, askpass_path=self.askpass, connect_timeout_seconds=repository.timeout
        )
        argv = ["git", *SAFE_CONFIG, *auth.config_args, command, *args]
        try:
            return repository.run(
                argv, cwd=repository.cwd, env={**base_env(), **auth.env}, timeout=repository.timeout
            )
        except FileNotFoundError as exc:
            raise SourceError("the git command is not installed or not on PATH") from exc
        except OSError as exc:
            raise SourceError(
                f"cannot run git in {repository.cwd}: {repository.scrub(str(exc))}"
            ) from exc

"""Where a publish works: the clone cache of a URL, or a local repository in place.

A URL is worked in a bare clone cache (`work_dir/repo.git`), fetched with
`--depth 1` and given the URL on each call, like the daemon's clone
(`gitsync.sources.git`), so .git/config never holds it; what it fetched sits
on gitsync's own refs. A local path is worked in place: its remote (`origin`
by default) is fetched into `refs/remotes/<remote>/…`, as `git fetch` would,
never shallow, and the commit stays on its refs/heads/NAME, where a person can
look at it. The choice, and the checks that the folder is a repository with
that remote, are made here once, before any step runs.
"""

from __future__ import annotations

from pathlib import Path

from gitsync.errors import ConfigError
from gitsync.sources.base import SourceError
from gitsync.sources.credentials import GitCredentials, Scrubber, redact_url, remote_credentials
from gitsync.sources.git import is_local_path
from gitsync.sources.gitwrite.plumbing import Repository, Runner
from gitsync.sources.gitwrite.remote import Remote

# The clone cache's own refs for what was fetched (a local repository uses refs/remotes/).
_CACHE_TRACKED_REF = "refs/gitsync/publish/tracked"
_CACHE_BRANCH_REF = "refs/gitsync/publish/branch"


def open_repository(
    *,
    repo: str,
    remote: str,
    work_dir: Path,
    credentials: GitCredentials | None,
    timeout: float,
    run: Runner,
) -> Remote:
    """The remote to publish to, with the repository (`Remote.repository`) that reaches it."""
    if not repo or repo.startswith("-"):
        raise ConfigError(
            f"repository {redact_url(repo)!r} is not a git URL or a folder: give "
            "https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git "
            "or a local repository"
        )
    askpass = work_dir / "git-askpass"
    if not is_local_path(repo):
        url, credentials, scrub = remote_credentials(repo, credentials)
        cache = Repository(
            cwd=work_dir / "repo.git", local=False, scrub=scrub, timeout=timeout, run=run
        )
        cache.ensure_cache()
        return Remote(
            repository=cache,
            remote=url,
            display=redact_url(url),
            credentials=credentials,
            askpass=askpass,
            fetched_tracked=_CACHE_TRACKED_REF,
            fetched_branch=_CACHE_BRANCH_REF,
        )
    folder = Path(repo).expanduser().absolute()
    if not folder.is_dir():
        raise SourceError(f"repository {folder} does not exist: give a local git repository")
    probe = Repository(cwd=folder, local=True, scrub=Scrubber(()), timeout=timeout, run=run)
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
    return Remote(
        repository=Repository(cwd=folder, local=True, scrub=scrub, timeout=timeout, run=run),
        remote=remote,
        display=f"{remote} ({redact_url(url)})",
        credentials=credentials,
        askpass=askpass,
        fetched_tracked=f"refs/remotes/{remote}/",
        fetched_branch=f"refs/remotes/{remote}/",
    )

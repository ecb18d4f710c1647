"""Where desired state comes from: git repositories and local folders.

`open_source` turns `--repo` into a source the daemon fetches once per pass
(the protocol is `gitsync.sources.base.Source`):

* a URL, or a local path that is a git repository → `git.GitSource`, a clone
  of one tracked ref kept in the data dir;
* any other local path → `folder.FolderSource`, the folder read in place and
  watched for edits (development).

The choice is made once, when gitsync starts; a path that changes kind while it
runs (`git init` in the folder, say) fails the fetch with a message that asks
for a restart, rather than switching what counts as the desired state.
"""

from __future__ import annotations

from pathlib import Path

from gitsync.sources.base import Source, is_git_repository
from gitsync.sources.credentials import GitCredentials
from gitsync.sources.folder import FolderSource
from gitsync.sources.git import GitSource, check_ref, is_local_path

__all__ = ["open_source"]


def open_source(
    *,
    url: str,
    ref: str = "main",
    path: str | None = None,
    cache_dir: Path,
    credentials: GitCredentials | None = None,
    timeout_seconds: float = 60.0,
) -> Source:
    """The source for `url` (`--repo`); `ref`, `credentials` and the timeout are for git only.

    `ref` is checked for a folder too, so a mistyped `--branch` is an error whatever
    `--repo` is.
    """
    if url and not url.startswith("-") and is_local_path(url):
        folder = Path(url).expanduser().absolute()
        if not is_git_repository(folder):
            check_ref(ref)
            return FolderSource(folder=folder, path=path)
    return GitSource(
        url=url,
        ref=ref,
        path=path,
        cache_dir=cache_dir,
        credentials=credentials,
        timeout_seconds=timeout_seconds,
    )

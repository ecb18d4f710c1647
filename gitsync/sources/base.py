"""What every source of desired state gives the daemon, and the errors it raises.

A source is a git repository (`gitsync.sources.git.GitSource`) or a plain local
folder of spec files (`gitsync.sources.folder.FolderSource`); `open_source` in
`gitsync.sources` picks one from `--repo`. The daemon sees only this protocol:
it calls `fetch()` once per pass, and asks the source once, after the first
good fetch, for a watch that triggers a pass on change (only a folder has one;
git is polled and told by webhooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from gitsync.errors import ConfigError, PermanentError, TemporaryError


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
class FetchResult:
    """What one `fetch()` of a source found."""

    revision: str  # full commit id checked out, or `sha256:…` for a plain folder
    changed: bool  # False: same revision as the last fetch, the caller skips all further work
    tree: Path  # the files of that revision (the work tree, or work tree / path)


class Watch(Protocol):
    """A running watch; the one who asked for it stops it."""

    def stop(self, timeout: float = 5.0) -> None: ...


class Source(Protocol):
    """Where the daemon reads desired state from."""

    @property
    def url(self) -> str:
        """The repository or folder, safe to show: no credentials."""
        ...

    def fetch(self) -> FetchResult:
        """The newest revision; raises SourceError or SourceUnavailable."""
        ...

    def watch(self, on_change: Callable[[], None]) -> Watch | None:
        """Start calling `on_change` when the source changes; None: this source is polled only.

        Raises SourceError if the watch cannot start.
        """
        ...


def check_subpath(path: str | None) -> str | None:
    """`--path` as a relative POSIX path inside the repository, or None for its root."""
    if path is None or path.strip() in {"", ".", "./"}:
        return None
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ConfigError(
            f"path {path!r} must be a folder inside the repository, relative to its root "
            "and without '..' (for example clusters/prod)"
        )
    return str(pure)


def is_git_repository(folder: Path) -> bool:
    """A work tree root or a bare repository: what `git clone PATH` accepts."""
    if (folder / ".git").exists():
        return True
    return (
        (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()
    )


def subtree(root: Path, path: str | None, *, revision: str, url: str) -> Path:
    """`root / path`, which must be a folder of that revision."""
    tree = root / path if path else root
    if not tree.is_dir():
        raise SourceError(
            f"path {path!r} is not a folder in revision {revision} of {url}; "
            "give a folder that exists in the tracked ref, relative to the repository root"
        )
    return tree

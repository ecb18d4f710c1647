"""A plain local folder of spec files as the source: for development.

`gitsync run --repo ./specs`, where `./specs` is not a git repository, reads
the folder in place: `fetch()` returns the folder itself (or its `--path`
subfolder), and its revision is `sha256:` + a digest of the spec files
(`*.yaml`, `*.yml`) in it, so `changed` works as for a commit. Only spec files
count: editing a README there is no new revision. A local path that IS a git
repository is a `GitSource` instead (only committed state counts there);
`open_source` decides which when gitsync starts, and a `FolderSource` refuses
a folder that has become a git repository since.

The folder is also watched (`watch()`), so a saved file triggers a pass within
a second instead of at the next poll. Neither git nor GitPython is needed.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gitsync.sources.base import (
    FetchResult,
    SourceError,
    Watch,
    check_subpath,
    is_git_repository,
    subtree,
)

SPEC_SUFFIXES = (".yaml", ".yml")
FOLDER_REVISION_PREFIX = "sha256:"


class FolderSource:
    """The spec files in one local folder, which is not a git repository."""

    def __init__(self, *, folder: Path, path: str | None = None) -> None:
        self._folder = folder.expanduser().absolute()
        self._path = check_subpath(path)
        self._lock = threading.Lock()
        self._last_revision: str | None = None
        # Per spec file: (size, mtime, inode, digest), so a no-op pass reads no file.
        self._files: dict[str, tuple[int, int, int, bytes]] = {}

    def __repr__(self) -> str:
        return f"FolderSource(folder={str(self._folder)!r}, path={self._path!r})"

    @property
    def url(self) -> str:
        """The folder (a local path carries no credentials)."""
        return str(self._folder)

    @property
    def last_revision(self) -> str | None:
        """The revision the last successful `fetch()` returned, or None before one."""
        return self._last_revision

    def fetch(self) -> FetchResult:
        """The folder as it is now, and the digest of its spec files as the revision."""
        with self._lock:
            if not self._folder.is_dir():
                raise SourceError(
                    f"repository {self._folder} does not exist: give a folder of spec files, "
                    "a local git repository or a git URL"
                )
            if is_git_repository(self._folder):
                # Serving its work tree would apply uncommitted edits, and a bare
                # repository holds no spec files at all, which would read as "delete all".
                raise SourceError(
                    f"repository {self._folder} is a git repository now, but was not one when "
                    "gitsync started (a plain folder, or missing); restart gitsync to track "
                    "its commits"
                )
            tree = subtree(self._folder, self._path, revision="(working folder)", url=self.url)
            revision = FOLDER_REVISION_PREFIX + self._digest(tree)
            changed = revision != self._last_revision
            self._last_revision = revision
            return FetchResult(revision=revision, changed=changed, tree=tree)

    def watch(self, on_change: Callable[[], None]) -> Watch:
        """Call `on_change` once per burst of edits in the folder (or its `--path` subfolder).

        Raises SourceError if the folder cannot be watched (it is missing, or the
        inotify watch limit is reached); the caller stops the watch.
        """
        from gitsync.sources.watch import FolderWatch  # noqa: PLC0415  # watchdog: only `run` needs it

        root = self._folder / self._path if self._path else self._folder
        watch = FolderWatch(root, on_change)
        watch.start()
        return watch

    def _digest(self, tree: Path) -> str:
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
                cached = self._files.get(relative)
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
        self._files = seen
        return total.hexdigest()

"""The file walk: which files a validation reads, in order, each once, never outside the tree.

Kept apart from reading and parsing because its dangers are the file
system's, not the YAML's: symlinks that leave the validated tree
(`symlink-escape`), loops through linked folders, broken links, a file named
twice or reached twice. A refusal here is a diagnostic; only a path given
on the command line that does not exist raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gitsync.errors import SpecError
from gitsync.model import Diagnostic, Severity, SourceLocation

YAML_SUFFIXES: Final = (".yaml", ".yml")
_ERROR = Severity.ERROR


@dataclass(frozen=True, slots=True)
class _File:
    path: str  # as opened
    display: str  # as reported


def _display(path: str, base: str) -> str:
    """`path` relative to `base` when under it, else as given; '/' separators either way."""
    absolute = os.path.abspath(path)
    prefix = base.rstrip(os.sep) + os.sep
    if absolute.startswith(prefix):
        shown = absolute[len(prefix) :]
    elif absolute == base:
        shown = "."
    else:
        shown = path
    return shown.replace(os.sep, "/")


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip(os.sep) + os.sep)


class _Walker:
    """Finds every YAML file to read, in order and each once; refusals become diagnostics."""

    def __init__(self, *, base: str, diagnostics: list[Diagnostic]) -> None:
        self.base = base
        self.diagnostics = diagnostics
        self.files: list[_File] = []
        self.seen: set[object] = set()

    def refuse(self, path: str, rule: str, message: str) -> None:
        location = SourceLocation(_display(path, self.base), 1, 1)
        self.diagnostics.append(
            Diagnostic(location=location, severity=_ERROR, rule=rule, message=message)
        )

    def add(self, path: str, entry: os.DirEntry[str] | None = None) -> None:
        try:
            info = entry.stat() if entry is not None else os.stat(path)
        except OSError:
            identity: object = path  # vanished or unreadable: _read reports it
        else:
            identity = (info.st_dev, info.st_ino)
        if identity not in self.seen:  # named twice, or also reached through a symlink: read once
            self.seen.add(identity)
            self.files.append(_File(path=path, display=_display(path, self.base)))

    def walk(self, given: Path) -> None:
        text = os.fspath(given)
        if not os.path.lexists(text):
            raise SpecError(f"no such file or directory: {text}")
        if not os.path.isdir(text):
            if os.path.exists(text):
                self.add(text)  # named explicitly: read whatever its suffix, follow a symlink
            else:
                self.refuse(text, "file-unreadable", f"broken symlink: {text} points to nothing")
            return
        tree = os.path.realpath(text)
        visited = {tree}
        stack = [text]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as exc:
                self.refuse(directory, "file-unreadable", f"cannot list directory: {exc.strerror}")
                continue
            subdirs: list[str] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # .git, .github, editor files: not part of the spec tree
                if entry.is_symlink():
                    self._symlink(entry, tree=tree, shown=text, visited=visited, subdirs=subdirs)
                elif entry.is_dir(follow_symlinks=False):
                    visited.add(os.path.realpath(entry.path))
                    subdirs.append(entry.path)
                elif entry.name.endswith(YAML_SUFFIXES):
                    self.add(entry.path, entry)
            stack.extend(reversed(subdirs))  # depth-first, in name order

    def _symlink(
        self,
        entry: os.DirEntry[str],
        *,
        tree: str,
        shown: str,
        visited: set[str],
        subdirs: list[str],
    ) -> None:
        is_yaml = entry.name.endswith(YAML_SUFFIXES)
        real = os.path.realpath(entry.path)
        if not os.path.exists(real):
            if is_yaml:
                self.refuse(
                    entry.path, "file-unreadable", f"broken symlink: {entry.name} points to nothing"
                )
            return
        is_dir = os.path.isdir(real)
        if not (is_dir or is_yaml):
            return  # a linked README or script is none of our business
        if not _within(real, tree):
            self.refuse(
                entry.path,
                "symlink-escape",
                f"symlink {entry.name} points to {real}, outside {shown}; not followed: specs "
                "must live in the validated tree (copy the file in, or link inside the tree)",
            )
        elif not is_dir:
            self.add(entry.path)
        elif real not in visited:  # a link to a parent folder would loop forever
            visited.add(real)
            subdirs.append(entry.path)

"""The edited tree, validated before anything is written: `--write` never leaves an invalid tree.

`validate_edited` copies the tree's YAML files (and its folders and symbolic
links, as links) into a temporary folder, applies the edits there, and runs
gitsync's own loader over it, the same `load_repository` that `gitsync
validate` runs, so a name clash with another file or an image the edit made
duplicate is caught across the whole tree. Only after that passes does the
caller touch the real files. Diagnostics name paths relative to `root`, as
`gitsync validate` run in `root` would.

Links are copied as links, not followed: a link out of the tree would
otherwise copy whatever it points at. A link with an absolute target into the
tree therefore points out of the copy, and is reported as escaping it; the
cache repositories this is meant for use relative links, if any.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from gitsync.errors import SpecError
from gitsync.specs import YAML_SUFFIXES, LoadResult, load_repository

__all__ = ["validate_edited"]


def validate_edited(
    *, root: Path, changes: Mapping[str, str | None], paths: Sequence[str] = (".",)
) -> LoadResult:
    """Load `paths` (relative to `root`) as they would be with `changes` (path → text, None
    deletes) applied; raises SpecError for a path outside `root` or one that is missing."""
    with tempfile.TemporaryDirectory(prefix="gitsync-edit-") as scratch:
        copy = Path(scratch) / "tree"
        shutil.copytree(root, copy, symlinks=True, ignore=_not_yaml)
        for relative, text in changes.items():
            target = copy / _inside(relative)
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text.encode("utf-8"))  # bytes: CRLF stays CRLF
        return load_repository([copy / _inside(path) for path in paths], root=copy)


def _inside(relative: str) -> PurePosixPath:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise SpecError(f"{relative}: give a path inside the repository, without '..'")
    return pure


def _not_yaml(folder: str, names: list[str]) -> set[str]:
    """What copytree leaves out: .git, and everything but folders, links and regular YAML files
    (a FIFO would block the copy; the loader reads nothing else anyway)."""
    ignored = set()
    for name in names:
        path = os.path.join(folder, name)
        if name == ".git":
            ignored.add(name)
        elif os.path.islink(path) or os.path.isdir(path):
            continue
        elif not (os.path.isfile(path) and name.endswith(YAML_SUFFIXES)):
            ignored.add(name)
    return ignored

"""The entry point: a repository's files walked, checked (or taken from the cache), and joined.

`load_repository` is what `gitsync validate` and the reconciler call; it owns
the one check that needs every file at once (unique names across the
repository) and the order of the result. `FileCache` lets the daemon skip
files whose stat has not changed since the last load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitsync.errors import SpecError
from gitsync.model import CacheSpec, DesiredState, Diagnostic, Severity, SourceLocation
from gitsync.specs.documents import _check_file, _FileResult
from gitsync.specs.pool import _check_files
from gitsync.specs.text import _short
from gitsync.specs.walk import _File, _Walker

_ERROR = Severity.ERROR


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a repository holds: its valid caches and every diagnostic, in file order.

    `caches` holds only documents without errors, sorted by name; a revision
    is applied only when `ok`, so a partly valid repository never half-applies.
    """

    caches: tuple[CacheSpec, ...]
    diagnostics: tuple[Diagnostic, ...]
    files: int
    documents: int

    @property
    def ok(self) -> bool:
        """True when no diagnostic is an error (warnings and notes are allowed)."""
        return not any(d.severity is _ERROR for d in self.diagnostics)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is _ERROR)

    def desired(self, revision: str | None) -> DesiredState:
        """The desired state of this revision; refuses an invalid one (it must never be applied)."""
        if not self.ok:
            first = self.errors[0]
            raise SpecError(
                f"revision {revision or '(working tree)'} is invalid: {len(self.errors)} "
                f"error(s), first at {first.location}: {first.message}"
            )
        return DesiredState(caches=self.caches, revision=revision)


class FileCache:
    """Per-file results kept between loads, for a daemon that validates a tree again and again.

    A file is checked again only when its stat changes (inode, size, mtime,
    ctime: what git itself trusts to spot a changed work-tree file). A new
    commit that touches one file of 1,000 then costs one parse, plus the
    cross-file checks, which always run over the whole tree.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[tuple[int, int, int, int], _FileResult]] = {}

    def results(self, files: list[_File]) -> list[_FileResult]:
        fresh: dict[tuple[str, str], tuple[tuple[int, int, int, int], _FileResult]] = {}
        results = []
        for file in files:
            try:
                info = os.stat(file.path)
                key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            except OSError:
                results.append(_check_file(file))  # reports the problem; nothing to cache
                continue
            known = self._entries.get((file.path, file.display))
            result = known[1] if known is not None and known[0] == key else _check_file(file)
            fresh[(file.path, file.display)] = (key, result)
            results.append(result)
        self._entries = fresh  # files that are gone are forgotten
        return results


def load_repository(
    paths: Sequence[Path], *, root: Path | None = None, cache: FileCache | None = None
) -> LoadResult:
    """Read every YAML file under `paths` (files or directories) and validate it.

    Diagnostic paths are relative to `root` (default: the working directory)
    when under it, else as given, always with '/' separators. Raises SpecError
    only when a path given does not exist; everything wrong inside the files
    is a diagnostic. With a `cache`, unchanged files are not read again.
    """
    base = os.path.abspath(root if root is not None else Path.cwd())
    diagnostics: list[Diagnostic] = []
    walker = _Walker(base=base, diagnostics=diagnostics)
    for path in paths:
        walker.walk(path)
    results = cache.results(walker.files) if cache is not None else _check_files(walker.files)

    caches: list[CacheSpec] = []
    first_seen: dict[str, SourceLocation] = {}
    duplicates: set[tuple[str, SourceLocation]] = set()
    documents = 0
    read = 0
    for result in results:
        diagnostics.extend(result.diagnostics)
        documents += result.documents
        read += result.read
        for name, location, where in result.names:
            first = first_seen.setdefault(name, location)
            if first is not location:
                duplicates.add((name, location))
                diagnostics.append(
                    Diagnostic(
                        location=location,
                        severity=_ERROR,
                        rule="duplicate-name",
                        message=(
                            f"{where} {_short(name)} is already used at {first}; "
                            "names must be unique in the repository"
                        ),
                        field=where,
                    )
                )
        caches.extend(result.caches)
    kept = [c for c in caches if c.location is None or (c.name, c.location) not in duplicates]
    kept.sort(key=lambda c: c.name)
    diagnostics.sort(key=lambda d: (d.location.path, d.location.line, d.location.column))
    return LoadResult(
        caches=tuple(kept), diagnostics=tuple(diagnostics), files=read, documents=documents
    )

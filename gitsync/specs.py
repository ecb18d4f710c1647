"""Load a cache repository's YAML with line numbers, validate it, and say precisely what is wrong.

`gitsync validate` runs on every pull request and the reconciler runs it on
every revision, so this module has three jobs it must not trade against each
other: point at the exact line of every problem, never crash or hang on
hostile input (the repository is written by people, and CI runs on forks),
and stay fast on large repositories (10,000 documents well under two seconds
as a whole process).

How the YAML is read, and why:

* Not with `yaml.load`: that throws away positions and expands aliases into
  copies (the "billion laughs" attack needs only a few hundred bytes). Not
  with `yaml.compose_all` either: its composer recurses in C once per
  nesting level (a 100 KiB file of `[[[[…` kills the interpreter with a
  segmentation fault) and builds a node tree we would then walk again.
  Instead the libyaml *event* stream (`CSafeLoader.get_event`; pure-Python
  `SafeLoader` when libyaml is missing) is turned into plain Python values
  in one iterative pass with an explicit stack. That pass records the
  position of every key and value by JSON path, detects duplicate keys, caps
  nesting depth, and counts alias expansion against a budget while sharing
  (never copying) aliased values, so memory stays bounded and it stops at
  the offending line.
* Scalars resolve like YAML 1.1 (PyYAML, and kubectl's go-yaml v2): `yes` is a
  boolean, `012` octal. Timestamps stay strings, as they do for kubectl.
* Bytes are checked before parsing (size, UTF-8, NUL) so that those
  diagnostics can name the line of the first bad byte.

Validation has two layers. The JSON Schema in `gitsync/schemas/` is the single
statement of structure; a small compiled checker for the keywords that schema
uses answers "valid?" in microseconds, and `jsonschema`'s Draft202012Validator
(imported only then: it costs a fifth of a second to import) explains the
documents that fail. Semantic checks follow: image reference grammar
(`gitsync.imageref`), unique names across the repository, duplicate images
after normalisation, mutable tags, the prune annotation, the EIP annotation
(`eks.tke.cloud.tencent.com/eip-attributes`: "" or a JSON object of the fields
of CreateImageCache's `AutoCreateEipAttribute`, the SDK's `EipAttribute`), and
security group ids.

Files are independent until the cross-file name check, so a large tree is
split between the process and a forked worker when there are two cores and
the caller has no other threads (forking a threaded process is unsafe).

Rule ids (stable; CI filters and docs refer to them):

=================== ======== ===================================================
rule                severity meaning
=================== ======== ===================================================
file-unreadable     error    cannot be read: permissions, not a regular file,
                             a broken symlink
file-too-large      error    larger than 1 MiB; not read
file-encoding       error    not UTF-8, or contains a NUL byte
symlink-escape      error    a symlink whose target leaves the validated tree;
                             not followed
yaml-syntax         error    malformed YAML; the rest of the file is not read
yaml-depth          error    nesting deeper than 64 levels; rest not read
yaml-alias          error    aliases beyond the budget (alias bomb); rest not read
yaml-key            error    a mapping key that is not a scalar; rest not read
yaml-duplicate-key  error    the same key twice in one mapping
yaml-tag            error    a YAML tag other than the core ones (!!str, !!int…)
not-a-mapping       error    a document (or List item) that is not a mapping
other-kind          info     a document of another apiVersion/kind; skipped
schema              error    breaks the JSON Schema (type, range, pattern,
                             required field…)
unknown-field       error    a field the schema does not define
image-ref           error    an image reference that breaks the grammar
duplicate-image     error    the same image twice in one cache, after
                             normalisation (nginx == docker.io/library/nginx:latest)
duplicate-name      error    two ImageCache documents with the same metadata.name
mutable-tag         warning  an image with tag `latest` or no tag and no digest
pull-secret         error    an imagePullSecrets entry that is not namespace/name
prune-annotation    error    gitsync.io/prune with a value other than `disabled`
reserved-key        error    a label or annotation gitsync writes for itself
                             (app.kubernetes.io/managed-by, gitsync.io/owner,
                             gitsync.io/applied-metadata)
annotation          error    eks.tke.cloud.tencent.com/eip-attributes that is
                             not "" or a JSON object of DeletePolicy (string),
                             InternetServiceProvider (string) and
                             InternetMaxBandwidthOut (integer >= 1)
security-group      error    a securityGroupIds entry that is not a security
                             group id, sg- and lower-case letters or digits
=================== ======== ===================================================
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from gitsync import imageref
from gitsync.errors import ImageRefError, SpecError
from gitsync.model import (
    API_VERSION,
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    DEFAULT_RETENTION_DAYS,
    EIP_ATTRIBUTES_ANNOTATION,
    KIND,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    RESERVED_ANNOTATIONS,
    RESERVED_LABELS,
    CacheSpec,
    DesiredState,
    Diagnostic,
    EipAttributes,
    Pairs,
    Severity,
    SourceLocation,
)

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "MAX_ALIASES",
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "RULES",
    "SCHEMA_PATH",
    "YAML_SUFFIXES",
    "LoadResult",
    "is_schema_valid",
    "load_repository",
    "schema",
]

SCHEMA_PATH: Final = Path(__file__).parent / "schemas" / "imagecache.schema.json"

# A cache repository file is a few KiB; 1 MiB is a mistake or an attack.
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 64  # an ImageCache nests 4 deep; kubectl output with managedFields about 12
MAX_ALIASES: Final = 100  # aliases per document; kubectl output has none
MAX_ALIAS_EXPANSION: Final = 10_000  # nodes aliases may add per document (billion laughs: 10^9)
PARALLEL_MIN_FILES = 200  # below this, starting a worker costs more than it saves
YAML_SUFFIXES: Final = (".yaml", ".yml")

RULES: Final = (
    "file-unreadable",
    "file-too-large",
    "file-encoding",
    "symlink-escape",
    "yaml-syntax",
    "yaml-depth",
    "yaml-alias",
    "yaml-key",
    "yaml-duplicate-key",
    "yaml-tag",
    "not-a-mapping",
    "other-kind",
    "schema",
    "unknown-field",
    "image-ref",
    "duplicate-image",
    "duplicate-name",
    "mutable-tag",
    "pull-secret",
    "prune-annotation",
    "annotation",
    "security-group",
    "reserved-key",
)

_GROUP = API_VERSION.partition("/")[0]
_MAX_IMAGE_LENGTH = 512  # the schema's spec.images maxLength: longer ones are not parsed
_ERROR = Severity.ERROR
_WARNING = Severity.WARNING
_INFO = Severity.INFO

JsonPath = tuple[str | int, ...]


# ------------------------------------------------------------------- results


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


@dataclass(frozen=True, slots=True)
class _FileResult:
    """One file's findings; picklable so that worker processes can return it."""

    diagnostics: list[Diagnostic]
    caches: list[CacheSpec]
    names: list[tuple[str, SourceLocation, str]]  # every ImageCache name, where, its field
    documents: int
    read: bool  # False when the file was refused before parsing (size, encoding, symlink)


# ------------------------------------------------------------------ entry point


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


# ------------------------------------------------------------------ file walk


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


def _check_files(files: list[_File]) -> list[_FileResult]:
    """Check every file; for large trees, share the files with forked workers when that is safe.

    The parent checks every `workers`-th file itself while the workers check
    the rest, so no core idles and only the workers' share is sent back.
    """
    workers = _worker_count(len(files))
    if workers <= 1:
        return [_check_file(f) for f in files]
    import multiprocessing  # noqa: PLC0415  # only large trees pay for it

    _validator()  # compile the schema check once, before the fork, not in every process
    theirs = [f for i, f in enumerate(files) if i % workers]
    try:
        pool = multiprocessing.get_context("fork").Pool(
            workers - 1,  # Ctrl-C is the parent's to handle: it stops the worker
            initializer=signal.signal,
            initargs=(signal.SIGINT, signal.SIG_IGN),
        )
    except OSError:  # no more processes allowed: one process is only slower
        return [_check_file(f) for f in files]
    with pool:
        pending = pool.map_async(
            _check_file_packed, theirs, chunksize=max(1, len(theirs) // (4 * (workers - 1)))
        )
        mine = iter([_check_file(f) for f in files[::workers]])
        returned = iter(pending.get())
    return [
        next(mine) if i % workers == 0 else _unpack(file, next(returned))
        for i, file in enumerate(files)
    ]


# Worker results travel as plain tuples: pickling 10,000 slotted dataclasses
# costs ten times more than the tuples, and the parent unpickles serially.
_PackedEip = tuple[str | None, str | None, int | None] | None
_PackedCache = tuple[
    str,
    tuple[str, ...],
    int,
    int,
    tuple[str, ...],
    bool,
    int,
    int,
    tuple[str, ...],
    Pairs,
    Pairs,
    _PackedEip,
]
_Packed = tuple[
    list[tuple[int, int, str, str, str, str | None]],
    list[_PackedCache],
    list[tuple[str, int, int, str]],
    int,
    bool,
]


def _check_file_packed(file: _File) -> _Packed:
    result = _check_file(file)
    return (
        [
            (d.location.line, d.location.column, d.severity.value, d.rule, d.message, d.field)
            for d in result.diagnostics
        ],
        [
            (
                c.name,
                c.images,
                c.image_cache_size_gib,
                c.retention_days,
                c.image_pull_secrets,
                c.prune,
                c.location.line if c.location else 1,
                c.location.column if c.location else 1,
                c.security_group_ids,
                c.labels,
                c.annotations,
                None
                if c.eip is None
                else (
                    c.eip.delete_policy,
                    c.eip.internet_service_provider,
                    c.eip.internet_max_bandwidth_out,
                ),
            )
            for c in result.caches
        ],
        [(name, where.line, where.column, field) for name, where, field in result.names],
        result.documents,
        result.read,
    )


def _unpack(file: _File, packed: _Packed) -> _FileResult:
    diagnostics, caches, names, documents, read = packed
    display = file.display
    return _FileResult(
        diagnostics=[
            Diagnostic(
                location=SourceLocation(display, line, column),
                severity=Severity(severity),
                rule=rule,
                message=message,
                field=where,
            )
            for line, column, severity, rule, message, where in diagnostics
        ],
        caches=[
            CacheSpec(
                name=name,
                images=images,
                image_cache_size_gib=size,
                retention_days=retention,
                image_pull_secrets=secrets,
                prune=prune,
                location=SourceLocation(display, line, column),
                security_group_ids=groups,
                labels=labels,
                annotations=annotations,
                eip=None if eip is None else EipAttributes(*eip),
            )
            for (
                name,
                images,
                size,
                retention,
                secrets,
                prune,
                line,
                column,
                groups,
                labels,
                annotations,
                eip,
            ) in caches
        ],
        names=[
            (name, SourceLocation(display, line, column), field)
            for name, line, column, field in names
        ],
        documents=documents,
        read=read,
    )


def _worker_count(files: int) -> int:
    if files < PARALLEL_MIN_FILES or threading.active_count() > 1 or not hasattr(os, "fork"):
        return 1  # forking a process with other threads can deadlock in the child
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, 2)


# ------------------------------------------------------------------ one file


def _check_file(file: _File) -> _FileResult:
    data = _read(file)
    if isinstance(data, Diagnostic):
        return _FileResult([data], [], [], 0, read=False)
    return _check_data(data, file.display)


def _read(file: _File) -> bytes | Diagnostic:
    """The bytes of a file, or why it is refused: unreadable, too large, not UTF-8."""

    def refused(rule: str, message: str, line: int = 1, column: int = 1) -> Diagnostic:
        location = SourceLocation(file.display, line, column)
        return Diagnostic(location=location, severity=_ERROR, rule=rule, message=message)

    try:
        fd = os.open(file.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except OSError as exc:
        return refused("file-unreadable", f"cannot open: {exc.strerror}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return refused("file-unreadable", "not a regular file; specs are plain files")
        size = info.st_size
        if size <= MAX_FILE_BYTES:
            data = _read_at_most(fd, size_hint=size, limit=MAX_FILE_BYTES + 1)
            size = len(data)
    except OSError as exc:
        return refused("file-unreadable", f"cannot read: {exc.strerror}")
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        return refused(
            "file-too-large",
            f"file is {size} bytes; a spec file must be at most {MAX_FILE_BYTES} bytes (1 MiB): "
            "split it into several files",
        )
    bad = _encoding_problem(data)
    if bad is not None:
        message, line, column = bad
        return refused("file-encoding", message, line, column)
    return data


def _check_data(data: bytes, display: str) -> _FileResult:
    """Parse and check one file's bytes."""
    diagnostics: list[Diagnostic] = []
    caches: list[CacheSpec] = []
    names: list[tuple[str, SourceLocation, str]] = []
    documents = 0
    try:
        for document in _documents(data):
            if document.value is None:
                continue  # empty document: `---` with nothing after it
            documents += 1
            _check_document(document, display, diagnostics, caches, names)
    except _YamlProblem as problem:
        diagnostics.append(
            Diagnostic(
                location=SourceLocation(display, problem.line + 1, problem.column + 1),
                severity=_ERROR,
                rule=problem.rule,
                message=problem.message,
            )
        )
    except yaml.YAMLError as exc:
        line, column, message = _yaml_error(exc, data)
        diagnostics.append(
            Diagnostic(
                location=SourceLocation(display, line, column),
                severity=_ERROR,
                rule="yaml-syntax",
                message=message,
            )
        )
    return _FileResult(diagnostics, caches, names, documents, read=True)


def _read_at_most(fd: int, *, size_hint: int, limit: int) -> bytes:
    """Up to `limit` bytes of `fd`: the size fstat gave in one read, more if the file grew.

    Asking for `limit` at once would allocate a 1 MiB buffer per file, which
    costs more than reading 10,000 small files.
    """
    chunks: list[bytes] = []
    total = 0
    want = size_hint + 1
    while total < limit:
        chunk = os.read(fd, min(want, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = 65536
    return b"".join(chunks)


def _encoding_problem(data: bytes) -> tuple[str, int, int] | None:
    """A message and 1-based line and column for the first NUL or non-UTF-8 byte, if any."""
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start if nul == -1 else min(exc.start, nul)
    else:
        if nul == -1:
            return None
        start = nul
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
    if start == nul:
        return f"NUL byte at line {line}; spec files are UTF-8 text", line, column
    byte = data[start]
    return (
        f"byte 0x{byte:02x} at line {line} is not valid UTF-8; save the file as UTF-8",
        line,
        column,
    )


def _yaml_error(exc: yaml.YAMLError, data: bytes) -> tuple[int, int, str]:
    """1-based line and column of a PyYAML error, and a message without its source excerpt."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, 1, f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "malformed YAML"
    context = ""
    if exc.context:
        context = f" {exc.context}"
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            context += f" (line {exc.context_mark.line + 1})"
        context += ":"
    if mark is None:
        return 1, 1, f"invalid YAML:{context} {problem}"
    lines = data.split(b"\n", mark.line + 1)
    text = lines[mark.line].decode("utf-8", errors="replace") if mark.line < len(lines) else ""
    if text[mark.column : mark.column + 1] == "\t":
        problem += ": a tab (YAML indents with spaces only)"
    return mark.line + 1, mark.column + 1, f"invalid YAML:{context} {problem}"


# ------------------------------------------------------------------ YAML events → values


class _Mark(Protocol):
    line: int
    column: int


class _YamlProblem(Exception):  # internal control flow, never escapes this module
    """Stops reading a file: the YAML cannot be turned into values safely."""

    def __init__(self, rule: str, message: str, mark: _Mark) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.line = mark.line
        self.column = mark.column


Problem = tuple[str, str, _Mark, JsonPath]  # rule, message, where, JSON path


@dataclass(slots=True)
class _Document:
    value: Any
    start: _Mark
    marks: dict[JsonPath, _Mark]  # where each value starts
    key_marks: dict[JsonPath, _Mark]  # where each mapping key is written
    problems: list[Problem]


_NO_KEY: Final[Any] = object()
_MERGE: Final[Any] = object()
_MISSING: Final[Any] = object()


class _Frame:
    """An open mapping or sequence while its events stream in."""

    __slots__ = (
        "anchor",
        "is_map",
        "key",
        "key_mark",
        "merge_mark",
        "merges",
        "path",
        "start",
        "value",
    )

    def __init__(
        self, value: Any, path: JsonPath, anchor: str | None, start: int, *, is_map: bool
    ) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.start = start  # node counter when it opened, to size it for the alias budget
        self.is_map = is_map
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.merge_mark: Any = None
        self.merges: list[Any] | None = None


_CORE = "tag:yaml.org,2002:"
_CONTAINER_TAGS = frozenset({None, "!", _CORE + "map", _CORE + "seq"})
_BOOL_VALUES = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = (
    yaml.resolver.Resolver.yaml_implicit_resolvers
)
_PLAIN_CACHE: dict[str, Any] = {}  # plain scalar text -> value; values are immutable
_PLAIN_CACHE_SIZE: Final = 8192


def _to_int(text: str) -> int:
    """YAML 1.1 int, as PyYAML's SafeConstructor: 0b, 0x, leading-0 octal, sexagesimal."""
    value = text.replace("_", "")
    sign = 1
    if value[0] in "+-":
        sign = -1 if value[0] == "-" else 1
        value = value[1:]
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value[0] == "0":
        return sign * int(value, 8)
    if ":" in value:
        total = 0
        for part in value.split(":"):
            total = total * 60 + int(part)
        return sign * total
    return sign * int(value)


def _to_float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = 1.0
    if value[0] in "+-":
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == ".inf":
        return sign * float("inf")
    if value == ".nan":
        return float("nan")
    if ":" in value:
        total = 0.0
        for part in value.split(":"):
            total = total * 60 + float(part)
        return sign * total
    return sign * float(value)


def _convert(tag: str, text: str) -> Any:
    if tag == _CORE + "int":
        return _to_int(text)
    if tag == _CORE + "float":
        return _to_float(text)
    if tag == _CORE + "bool":
        return _BOOL_VALUES[text.lower()]
    if tag == _CORE + "null":
        return None
    return text  # str, timestamp (kept as text, as kubectl does), merge, value


def _resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar, by YAML 1.1 implicit resolution."""
    value = _PLAIN_CACHE.get(text, _MISSING)
    if value is not _MISSING:
        return value
    value = text
    if not text:
        value = None
    else:
        for tag, pattern in _RESOLVERS.get(text[0], ()):
            if pattern.match(text):
                value = _convert(tag, text)
                break
    if len(_PLAIN_CACHE) >= _PLAIN_CACHE_SIZE:
        _PLAIN_CACHE.clear()  # bounded: names are unique, images and sizes repeat
    _PLAIN_CACHE[text] = value
    return value


_EXPLICIT_SCALAR_TAGS = frozenset(
    _CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)


def _tagged(event: Any) -> tuple[Any, str | None]:  # a ScalarEvent; stubs type marks loosely
    """The value of a scalar with a tag, and the tag if gitsync does not understand it."""
    tag = event.tag
    if tag is None:
        return event.value, None  # quoted or block scalar: a string
    if tag in ("!", _CORE + "str"):
        return event.value, None
    if tag in _EXPLICIT_SCALAR_TAGS:
        try:
            return _convert(tag, event.value), None
        except (ValueError, KeyError, IndexError):
            raise _YamlProblem(
                "yaml-tag",
                f"{_short(event.value)} cannot be read as {tag.removeprefix(_CORE)}",
                event.start_mark,
            ) from None
    return event.value, tag


try:
    from yaml import _yaml

    # The bare libyaml parser: only events are needed, not CSafeLoader's constructor and resolver.
    _Loader: Any = _yaml.CParser  # Any: its events' marks are typed loosely in the stubs
except ImportError:  # PyYAML built without libyaml: slower, same results
    _Loader = yaml.SafeLoader

# libyaml 0.2.6 (bundled since PyYAML 6.0.4) has a nesting limit of its own, 1000 levels, and
# its scanner reads a line up to 1024 characters ahead of the events it has handed out; so on
# `[[[[…` it stops before gitsync has seen the 65th level, with a bare scanner error at column
# 1001. `_documents` then goes on with the pure-Python parser (no limit of its own, same events
# and marks), skipping the documents already yielded, so that MAX_DEPTH decides at the 65th
# level whatever libyaml is installed. Only files nested 1000 deep pay for the re-read: at
# worst one 1 MiB file parsed again at the pure-Python speed (about 2 s).
_LIBYAML_DEPTH: Final = "exceeded maximum nesting depth"


def _skip_documents(get_event: Callable[[], Any], documents: int) -> None:
    """Read past the first `documents` documents of a fresh parser's event stream."""
    while documents:
        event = get_event()
        if event is None:
            return
        if type(event) is DocumentEndEvent:
            documents -= 1


def _documents(data: bytes) -> Iterator[_Document]:  # noqa: PLR0912, PLR0915  # one hot loop, kept flat for speed
    """Each YAML document of `data` as plain values with positions, in one iterative pass.

    This loop runs once per YAML event (35 per ImageCache), so the common
    case, a plain scalar in a mapping, takes the fewest steps; anything rarer
    (anchors, aliases, tags, merge keys, duplicate keys) leaves it early.
    """
    loader = _Loader(data)
    get_event: Callable[[], Any] = loader.get_event
    finished = 0  # documents yielded: where a re-read with the pure-Python parser resumes
    plain_cache = _PLAIN_CACHE
    document: _Document | None = None
    stack: list[_Frame] = []
    top: Any = None  # the innermost open _Frame, or None at the document's root
    anchors: dict[str, tuple[Any, int]] = {}
    marks: dict[JsonPath, _Mark] = {}
    key_marks: dict[JsonPath, _Mark] = {}
    problems: list[Problem] = []
    aliases = 0
    nodes = 0  # events so far in this document, aliases counted as what they expand to
    expanded = 0  # nodes that aliases added
    try:
        while True:
            try:
                event = get_event()
            except yaml.MarkedYAMLError as exc:
                if exc.problem != _LIBYAML_DEPTH or isinstance(loader, yaml.SafeLoader):
                    raise
                loader.dispose()
                loader = yaml.SafeLoader(data)
                get_event = loader.get_event
                _skip_documents(get_event, finished)
                continue  # its next event starts the unfinished document again, fresh state
            if event is None:
                return
            cls = type(event)
            nodes += 1
            # 1. Make the event a finished value (scalar, alias, closed container), or open one.
            if cls is ScalarEvent:
                if top is not None and top.is_map and top.key is _NO_KEY:
                    # A mapping key, kept as written: `on:` stays "on" and `1:` stays "1".
                    key = event.value
                    if key in top.value or key == "<<":
                        if key == "<<" and event.tag is None and not event.style:
                            top.key = _MERGE
                            top.merge_mark = event.start_mark
                            continue
                        if key in top.value:
                            problems.append(_duplicate_key(top, key, event.start_mark, key_marks))
                    top.key = key
                    top.key_mark = event.start_mark
                    continue
                mark = event.start_mark
                if event.tag is None and event.implicit[0]:
                    text = event.value
                    value = plain_cache.get(text, _MISSING)
                    if value is _MISSING:
                        value = _resolve_plain(text)
                else:
                    value, odd_tag = _tagged(event)
                    if odd_tag is not None:
                        problems.append(
                            (
                                "yaml-tag",
                                f"unsupported YAML tag {_short(odd_tag)}; ImageCache fields are "
                                "plain strings, integers and lists",
                                mark,
                                _child_path(top),
                            )
                        )
                count = 1
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                is_map = cls is MappingStartEvent
                mark = event.start_mark
                if top is None:
                    path: JsonPath = ()
                elif not top.is_map:
                    path = (*top.path, len(top.value))
                elif top.key is _NO_KEY:
                    raise _YamlProblem(
                        "yaml-key",
                        "a mapping key must be a plain string, not a "
                        + ("mapping" if is_map else "list"),
                        mark,
                    )
                else:
                    path = _child_path(top)
                    key_marks[path] = top.key_mark if top.key is not _MERGE else top.merge_mark
                marks[path] = mark
                if event.tag is not None and event.tag not in _CONTAINER_TAGS:
                    problems.append(
                        ("yaml-tag", f"unsupported YAML tag {_short(event.tag)}", mark, path)
                    )
                top = _Frame({} if is_map else [], path, event.anchor, nodes, is_map=is_map)
                stack.append(top)
                if len(stack) > MAX_DEPTH:
                    raise _YamlProblem(
                        "yaml-depth",
                        f"nesting is deeper than {MAX_DEPTH} levels (an ImageCache needs 4); "
                        "gitsync refuses the file rather than risk exhausting memory",
                        mark,
                    )
                continue
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                frame = stack.pop()
                top = stack[-1] if stack else None
                if frame.merges is not None:
                    _apply_merges(frame, marks, key_marks, problems)
                if frame.anchor is not None:
                    anchors[frame.anchor] = (frame.value, nodes - frame.start)
                if top is None:
                    if document is not None:
                        document.value = frame.value
                elif not top.is_map:
                    top.value.append(frame.value)
                else:
                    if top.key is _MERGE:
                        top.merges = [*(top.merges or ()), frame.value]
                    else:
                        top.value[top.key] = frame.value
                    top.key = _NO_KEY
                continue
            elif cls is AliasEvent:
                mark = event.start_mark
                target = anchors.get(event.anchor)
                if target is None:
                    raise _YamlProblem(
                        "yaml-syntax",
                        f"alias *{event.anchor} refers to no earlier anchor &{event.anchor}",
                        mark,
                    )
                value, count = target
                aliases += 1
                nodes += count
                expanded += count  # shared, not copied, but everything downstream walks it whole
                if aliases > MAX_ALIASES or expanded > MAX_ALIAS_EXPANSION:
                    raise _YamlProblem(
                        "yaml-alias",
                        f"aliases expand to more than {MAX_ALIAS_EXPANSION} nodes or number more "
                        f"than {MAX_ALIASES} in one document (an alias bomb?); write the values "
                        "out instead",
                        mark,
                    )
                if top is not None and top.is_map and top.key is _NO_KEY:
                    if not isinstance(value, str):
                        raise _YamlProblem("yaml-key", "a mapping key must be a plain string", mark)
                    top.key = value
                    top.key_mark = mark
                    continue
            elif cls is DocumentStartEvent:
                marks, key_marks, problems = {}, {}, []
                document = _Document(None, event.start_mark, marks, key_marks, problems)
                stack, top, anchors, aliases, nodes, expanded = [], None, {}, 0, 0, 0
                continue
            elif cls is DocumentEndEvent:
                finished += 1
                if document is not None:
                    yield document
                document = None
                continue
            else:
                continue  # stream start and end
            # 2. Attach the finished scalar or alias to its parent.
            if top is None:
                if document is not None:
                    marks[()] = mark
                    document.value = value
            elif top.is_map:
                key = top.key
                top.key = _NO_KEY
                if key is _MERGE:
                    top.merges = [*(top.merges or ()), value]
                    continue
                top.value[key] = value
                path = (*top.path, key)
                marks[path] = mark
                key_marks[path] = top.key_mark
            else:
                marks[(*top.path, len(top.value))] = mark
                top.value.append(value)
    finally:
        loader.dispose()


def _duplicate_key(top: _Frame, key: str, mark: _Mark, key_marks: dict[JsonPath, _Mark]) -> Problem:
    path = (*top.path, key)
    first = key_marks.get(path)
    where = f" (first at line {first.line + 1})" if first is not None else ""
    return (
        "yaml-duplicate-key",
        f"duplicate key {_short(key)}{where}; YAML keeps only the last one, so the first would be "
        "silently lost: write each key once",
        mark,
        path,
    )


def _child_path(top: _Frame | None) -> JsonPath:
    """The JSON path of the next value inside `top`."""
    if top is None:
        return ()
    if not top.is_map:
        return (*top.path, len(top.value))
    if top.key is _MERGE:
        return (*top.path, "<<")
    return (*top.path, top.key)


def _apply_merges(
    frame: _Frame,
    marks: dict[JsonPath, _Mark],
    key_marks: dict[JsonPath, _Mark],
    problems: list[Problem],
) -> None:
    """YAML 1.1 merge keys (`<<: *base`): keys written in the mapping win over merged ones."""
    target: dict[str, Any] = frame.value
    merge_mark = frame.merge_mark
    for source in frame.merges or ():
        for item in source if isinstance(source, list) else [source]:
            if not isinstance(item, dict):
                problems.append(
                    (
                        "yaml-syntax",
                        "a merge key '<<' takes a mapping or a list of mappings",
                        merge_mark,
                        frame.path,
                    )
                )
                continue
            for key, value in item.items():
                if key not in target:
                    target[key] = value
                    path = (*frame.path, key)
                    marks[path] = merge_mark
                    key_marks[path] = merge_mark


# ------------------------------------------------------------------ documents


def _is_image_cache(doc: Mapping[str, Any]) -> bool:
    """Whether to validate `doc` as an ImageCache, including near misses worth an error.

    `kind: imagecache` or a missing or mistyped apiVersion is a broken ImageCache,
    not another kind: skipping it would hide the mistake. An ImageCache of
    another API group is somebody else's resource.
    """
    kind = doc.get("kind", _MISSING)
    api = doc.get("apiVersion", _MISSING)
    group = api.partition("/")[0] if isinstance(api, str) else None
    if isinstance(kind, str):
        return kind.lower() == KIND.lower() and (group is None or group == _GROUP)
    if group == _GROUP:
        return True  # kind forgotten or not a string
    spec = doc.get("spec")
    # No apiVersion and kind at all, but an ImageCache body: the header was forgotten.
    return kind is _MISSING and api is _MISSING and isinstance(spec, dict) and "images" in spec


def _check_document(
    document: _Document,
    display: str,
    diagnostics: list[Diagnostic],
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    value = document.value
    if isinstance(value, dict) and value.get("kind") == "List" and value.get("apiVersion") == "v1":
        items = value.get("items")
        if isinstance(items, list):  # `kubectl get -o yaml` of several objects
            for index, item in enumerate(items):
                _check_object(
                    item,
                    prefix=("items", index),
                    document=document,
                    display=display,
                    diagnostics=diagnostics,
                    caches=caches,
                    names=names,
                )
            return
    _check_object(
        value,
        prefix=(),
        document=document,
        display=display,
        diagnostics=diagnostics,
        caches=caches,
        names=names,
    )


@dataclass(slots=True)
class _Context:
    """Where one object sits, to turn JSON paths into file positions."""

    document: _Document
    prefix: JsonPath
    display: str
    diagnostics: list[Diagnostic]
    errors: int = 0

    def name(self, path: JsonPath) -> str:
        """The field as people write it, from the document's root: items[1].spec.images[0]."""
        return _field(self.prefix + path)

    def location(self, path: JsonPath, *, key: bool = False) -> SourceLocation:
        full = self.prefix + path
        marks = self.document.marks
        if key:
            mark = self.document.key_marks.get(full)
            if mark is not None:
                return SourceLocation(self.display, mark.line + 1, mark.column + 1)
        # Values inside an alias or a merge have no marks of their own: use the nearest parent's.
        while full and full not in marks:
            full = full[:-1]
        found = marks.get(full, self.document.start)
        return SourceLocation(self.display, found.line + 1, found.column + 1)

    def add(
        self,
        path: JsonPath,
        rule: str,
        message: str,
        *,
        severity: Severity = _ERROR,
        key: bool = False,
        location: SourceLocation | None = None,
    ) -> None:
        if severity is _ERROR:
            self.errors += 1
        self.diagnostics.append(
            Diagnostic(
                location=location or self.location(path, key=key),
                severity=severity,
                rule=rule,
                message=message,
                field=self.name(path) or None,
            )
        )


def _check_object(
    value: Any,
    *,
    prefix: JsonPath,
    document: _Document,
    display: str,
    diagnostics: list[Diagnostic],
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    ctx = _Context(document, prefix, display, diagnostics)
    where = "document" if not prefix else f"List item {prefix[-1]}"
    if not isinstance(value, dict):
        ctx.add(
            (),
            "not-a-mapping",
            f"{where} is {_describe(value)}, not a mapping; an ImageCache is a mapping with "
            "apiVersion, kind, metadata and spec",
        )
        return
    if not _is_image_cache(value):
        kind, api = value.get("kind"), value.get("apiVersion")
        if isinstance(kind, str):
            what = f"{_clip(kind)} ({_clip(api)})" if isinstance(api, str) else _clip(kind)
        else:
            what = "a document without kind"
        ctx.add(
            ("kind",) if "kind" in value else (),
            "other-kind",
            f"skipped {what}: gitsync reads only {API_VERSION} {KIND} documents",
            severity=_INFO,
        )
        return
    full_prefix_len = len(prefix)
    for rule, message, mark, path in document.problems:
        if path[:full_prefix_len] == prefix:
            ctx.diagnostics.append(
                Diagnostic(
                    location=SourceLocation(display, mark.line + 1, mark.column + 1),
                    severity=_ERROR,
                    rule=rule,
                    message=message,
                    field=_field(path) or None,
                )
            )
            ctx.errors += 1
    if not _validator().fast(value):
        _schema_diagnostics(value, ctx)
    _semantic_checks(value, ctx, caches, names)


_IMAGE_FACTS: dict[str, tuple[str, bool, str] | str] = {}


def _image_facts(image: str) -> tuple[str, bool, str] | str:
    """Normalised form, mutability and short name of an image, or why it is invalid.

    Repositories repeat a few images thousands of times: each is parsed once.
    """
    facts = _IMAGE_FACTS.get(image)
    if facts is None:
        try:
            ref = imageref.parse(image)
        except ImageRefError as exc:
            facts = exc.reason
        else:
            facts = (str(ref), ref.mutable, ref.name.rpartition("/")[2])
        if len(_IMAGE_FACTS) >= 16384:
            _IMAGE_FACTS.clear()  # bounded; a repository rarely has that many distinct images
        _IMAGE_FACTS[image] = facts
    return facts


def _semantic_checks(
    doc: dict[str, Any],
    ctx: _Context,
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    metadata = doc.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    spec = doc.get("spec")
    spec = spec if isinstance(spec, dict) else {}

    name = metadata.get("name")
    name_location = ctx.location(("metadata", "name"))
    if isinstance(name, str):
        names.append((name, name_location, ctx.name(("metadata", "name"))))

    annotations = metadata.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    prune, eip = _annotation_checks(annotations, ctx)
    labels_written = metadata.get("labels")
    _reserved_key_checks(
        labels_written if isinstance(labels_written, dict) else {}, annotations, ctx
    )
    groups = spec.get("securityGroupIds")
    groups = groups if isinstance(groups, list) else []
    _security_group_checks(groups, ctx)

    images = spec.get("images")
    images = images if isinstance(images, list) else []
    seen: dict[str, tuple[int, str]] = {}
    for index, image in enumerate(images):
        if not isinstance(image, str) or not image or len(image) > _MAX_IMAGE_LENGTH:
            continue  # the schema reports it
        path: JsonPath = ("spec", "images", index)
        facts = _image_facts(image)
        if isinstance(facts, str):
            ctx.add(
                path,
                "image-ref",
                f"{ctx.name(path)} {_short(image)} is not a valid image reference: {facts}",
            )
            continue
        normal, mutable, short_name = facts
        if normal in seen:
            first_index, first = seen[normal]
            first_line = ctx.location(("spec", "images", first_index)).line
            same = "" if first == image else f" {_short(first)}"
            ctx.add(
                path,
                "duplicate-image",
                f"{ctx.name(path)} {_short(image)} is the same image as "
                f"{ctx.name(('spec', 'images', first_index))}"
                f"{same} (line {first_line}): both mean {normal}; list it once",
            )
            continue
        seen[normal] = (index, image)
        if mutable:
            written = (
                "has no tag, so it means tag 'latest'"
                if ":" not in image.rpartition("/")[2]
                else "uses tag 'latest'"
            )
            ctx.add(
                path,
                "mutable-tag",
                f"{ctx.name(path)} {_short(image)} {written}, which moves: two caches of it built "
                "at different times can hold different content; pin a version tag "
                f"(e.g. {short_name}:1.2.3) or a digest (@sha256:…)",
                severity=_WARNING,
            )

    if ctx.errors or not isinstance(name, str):
        return
    size = spec.get("imageCacheSize", DEFAULT_IMAGE_CACHE_SIZE_GIB)
    retention = spec.get("retentionDays", DEFAULT_RETENTION_DAYS)
    secrets = spec.get("imagePullSecrets") or []
    labels = metadata.get("labels") or {}
    caches.append(
        CacheSpec(
            name=name,
            images=tuple(images),
            image_cache_size_gib=int(size),  # 20.0 is a valid JSON Schema integer
            retention_days=int(retention),
            image_pull_secrets=tuple(secrets),
            prune=prune,
            location=name_location,
            security_group_ids=tuple(groups),
            labels=tuple(sorted(labels.items())),
            annotations=tuple(sorted(i for i in annotations.items() if i[0] not in _NOT_KEPT)),
            eip=eip,
        )
    )


def _annotation_checks(
    annotations: dict[str, Any], ctx: _Context
) -> tuple[bool, EipAttributes | None]:
    """The prune setting and the EIP attributes the annotations ask for; reports bad values."""
    prune = True
    if PRUNE_ANNOTATION in annotations:
        setting = annotations[PRUNE_ANNOTATION]
        if setting == PRUNE_DISABLED:
            prune = False
        elif isinstance(setting, str):  # non-strings are schema errors already
            ctx.add(
                ("metadata", "annotations", PRUNE_ANNOTATION),
                "prune-annotation",
                f"annotation {PRUNE_ANNOTATION} must be {PRUNE_DISABLED!r} (keep the cache when "
                f"its spec is removed), or be left out to allow deleting it; got {_short(setting)}",
            )
    eip_text = annotations.get(EIP_ATTRIBUTES_ANNOTATION)
    if not isinstance(eip_text, str):  # absent; non-strings are schema errors already
        return prune, None
    parsed = _eip_attributes(eip_text)
    if isinstance(parsed, str):
        ctx.add(
            ("metadata", "annotations", EIP_ATTRIBUTES_ANNOTATION),
            "annotation",
            f"annotation {EIP_ATTRIBUTES_ANNOTATION} {parsed}",
        )
        return prune, None
    return prune, parsed


def _reserved_key_checks(
    labels: dict[str, Any], annotations: dict[str, Any], ctx: _Context
) -> None:
    """gitsync's own ownership marks: set from Git they would claim or disown a cache."""
    for where, keys, reserved in (
        ("labels", labels, RESERVED_LABELS),
        ("annotations", annotations, RESERVED_ANNOTATIONS),
    ):
        for key in sorted(reserved.intersection(keys)):
            ctx.add(
                ("metadata", where, key),
                "reserved-key",
                f"{where[:-1]} {key} is gitsync's own (it marks the caches gitsync manages)"
                f" and cannot be set in Git; remove it",
            )


def _security_group_checks(groups: list[Any], ctx: _Context) -> None:
    for index, group in enumerate(groups):
        if isinstance(group, str) and not _SECURITY_GROUP.fullmatch(group):
            path: JsonPath = ("spec", "securityGroupIds", index)
            ctx.add(
                path,
                "security-group",
                f"{ctx.name(path)} {_short(group)} is not a security group id: write it as the"
                " console and the API show it, sg- and lower-case letters or digits"
                " (e.g. sg-1cghhuuu)",
            )


# Annotations that are not the spec's to carry: the prune setting is `CacheSpec.prune`;
# kubectl records what it applied (`kubectl get -o yaml` output has it) and writes it itself.
_NOT_KEPT: Final = frozenset({PRUNE_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration"})

# A security group id as the console and the API show it: CreateImageCache's
# SecurityGroupIds.N has the example value sg-1cghhuuu (TKE API 457/70861).
_SECURITY_GROUP = re.compile(r"sg-[0-9a-z]+")

# CreateImageCache's AutoCreateEipAttribute is the SDK's EipAttribute: these fields only.
_EIP_FIELDS: Final = {
    "DeletePolicy": "a string (Never keeps the EIP after the build instance is gone)",
    "InternetServiceProvider": "a string naming the line (BGP, CMCC, CTCC, CUCC)",
    "InternetMaxBandwidthOut": "an integer of at least 1 (Mbps)",
}
# Keys pods take in this annotation (the EIP API's own parameters) that the image cache
# API does not: worth naming, since the pod annotation is documented far more often.
_POD_ONLY_EIP_KEYS: Final = frozenset(
    {"InternetChargeType", "AddressType", "AddressName", "Bandwidth", "BandwidthPackageId"}
)


class _DuplicateJsonKey(Exception):  # internal signal
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateJsonKey(key)
        found[key] = value
    return found


def _eip_attributes(text: str) -> EipAttributes | str:
    """The EIP annotation's value, or what is wrong with it (a phrase after the name).

    "" (or only spaces) asks for an EIP with the cloud's defaults, as the super
    node pod annotation of the same name documents; otherwise a JSON object of
    `EipAttribute` fields, e.g. {"InternetMaxBandwidthOut":2} from the cloud's sample.
    """
    if not text.strip():
        return EipAttributes()
    value = _eip_json(text)
    if isinstance(value, str):
        return value
    for key, item in value.items():
        problem = _eip_field_problem(key, item)
        if problem is not None:
            return problem
    return EipAttributes(
        delete_policy=value.get("DeletePolicy"),
        internet_service_provider=value.get("InternetServiceProvider"),
        internet_max_bandwidth_out=value.get("InternetMaxBandwidthOut"),
    )


def _eip_json(text: str) -> dict[str, Any] | str:
    example = "'{\"InternetMaxBandwidthOut\":2}'"
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateJsonKey as exc:
        return f"names {_short(exc.key)} twice; name each field once"
    except RecursionError:
        return "is nested too deeply to be an EIP attribute object"
    except ValueError as exc:
        return f'is not JSON ({exc}); write "" for the defaults or a JSON object such as {example}'
    if not isinstance(value, dict):
        fields = ", ".join(_EIP_FIELDS)
        return f"must be a JSON object of {fields}, got {_describe(value)}; e.g. {example}"
    return value


def _eip_field_problem(key: str, item: Any) -> str | None:
    if key not in _EIP_FIELDS:
        hint = (
            ", a key of the pod annotation (the EIP API's parameters) that the image"
            " cache API does not take"
            if key in _POD_ONLY_EIP_KEYS
            else _did_you_mean(key, list(_EIP_FIELDS))
        )
        return (
            f"has field {_short(key)}{hint}; CreateImageCache's AutoCreateEipAttribute"
            f" takes {', '.join(_EIP_FIELDS)}"
        )
    if key == "InternetMaxBandwidthOut":
        good = isinstance(item, int) and not isinstance(item, bool) and item >= 1
    elif key == "InternetServiceProvider":
        good = isinstance(item, str) and bool(item)
    else:
        good = isinstance(item, str)
    return None if good else f"field {key} must be {_EIP_FIELDS[key]}, got {_describe(item)}"


# ------------------------------------------------------------------ schema validation


class _Validator:
    """The schema, a fast compiled check, and jsonschema for explanations (built lazily, once)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        try:
            compiled: Callable[[Any], bool] | None = _Compiler(schema).build()
        except _Unsupported:
            compiled = None  # a keyword the fast path does not know: jsonschema decides alone
        self._compiled = compiled
        self._full: jsonschema.Draft202012Validator | None = None

    def fast(self, instance: Any) -> bool:
        if self._compiled is not None:
            return self._compiled(instance)
        return bool(self.full.is_valid(instance))

    @property
    def full(self) -> jsonschema.Draft202012Validator:
        if self._full is None:
            import jsonschema  # noqa: PLC0415  # 0.2 s to import; valid repositories never need it

            self._full = jsonschema.Draft202012Validator(self.schema)
        return self._full


_VALIDATOR: _Validator | None = None


def _validator() -> _Validator:
    global _VALIDATOR  # noqa: PLW0603  # built once per process, on first use
    if _VALIDATOR is None:
        with SCHEMA_PATH.open(encoding="utf-8") as stream:
            _VALIDATOR = _Validator(json.load(stream))
    return _VALIDATOR


def schema() -> dict[str, Any]:
    """The ImageCache JSON Schema (a fresh copy of the packaged file)."""
    with SCHEMA_PATH.open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = json.load(stream)
    return loaded


def is_schema_valid(instance: Any) -> bool:
    """The compiled fast check alone; tests compare it with jsonschema."""
    return _validator().fast(instance)


class _Unsupported(Exception):  # internal signal
    pass


_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}
)


class _Compiler:
    """Compiles the subset of JSON Schema 2020-12 that imagecache.schema.json uses to Python.

    The generated function is straight-line code (isinstance checks, set and
    string comparisons, precompiled regexes), about a hundred times faster
    than jsonschema's is_valid, which matters at 10,000 documents. Any keyword
    outside the subset raises _Unsupported, and validation falls back to
    jsonschema, so the schema file stays the only statement of structure. The
    semantics copy jsonschema's (re.search for patterns, len() in code
    points, bool is not an integer, 2.0 is); a property test checks they agree.
    """

    _KEYWORDS = _ANNOTATIONS | {
        "$ref", "type", "const", "enum", "pattern", "minLength", "maxLength", "minimum",
        "maximum", "minItems", "maxItems", "items", "properties", "required",
        "additionalProperties", "propertyNames",
    }  # fmt: skip

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.names = 0
        self.refs: list[str] = []

    def build(self) -> Callable[[Any], bool]:
        self.lines = ["def check(v0):"]
        self.emit(self.root, "v0", 1)
        self.lines.append("    return True")
        namespace: dict[str, Any] = dict(self.constants)
        code = compile("\n".join(self.lines), "<imagecache.schema.json>", "exec")
        exec(code, namespace)  # noqa: S102  # our own generated code from our own packaged schema
        check: Callable[[Any], bool] = namespace["check"]
        return check

    def _name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def _constant(self, value: Any) -> str:
        name = self._name("C")
        self.constants[name] = value
        return name

    def _line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def _block(self, indent: int, header: str, body: Callable[[], None]) -> None:
        """Emit `header:` and its body, or nothing when the body is empty."""
        start = len(self.lines)
        self._line(indent, header)
        body()
        if len(self.lines) == start + 1:
            del self.lines[start]

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/") or ref in self.refs:
            raise _Unsupported(ref)  # remote or recursive references: leave them to jsonschema
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    def emit(self, schema: Any, var: str, indent: int) -> None:  # noqa: PLR0912  # one branch per keyword reads best
        if schema is True:
            return
        if schema is False:
            self._line(indent, "return False")
            return
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        unknown = set(schema) - self._KEYWORDS
        if unknown:
            raise _Unsupported(", ".join(sorted(unknown)))
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            self.refs.append(schema["$ref"])
            self.emit(target, var, indent)
            self.refs.pop()
        if "type" in schema:
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            tests = " or ".join(_TYPE_TESTS[k].format(v=var) for k in kinds)
            self._line(indent, f"if not ({tests}): return False")
        for keyword in ("const", "enum"):
            if keyword in schema:
                allowed = schema[keyword] if keyword == "enum" else [schema[keyword]]
                if not all(isinstance(a, str) for a in allowed):
                    raise _Unsupported(keyword)  # jsonschema's equality of 1, 1.0, True is subtle
                options = self._constant(frozenset(allowed))
                self._line(
                    indent, f"if not (isinstance({var}, str) and {var} in {options}): return False"
                )
        declared = schema.get("type")
        known = declared if isinstance(declared, str) else None  # checked above: no guard below
        blocks: list[tuple[set[str], str, str, Callable[[dict[str, Any], str, int], None]]] = [
            ({"pattern", "minLength", "maxLength"}, "string", "isinstance({v}, str)", self._string),
            (
                {"minimum", "maximum"},
                "number",
                "isinstance({v}, (int, float)) and not isinstance({v}, bool)",
                self._number,
            ),
            ({"minItems", "maxItems", "items"}, "array", "isinstance({v}, list)", self._array),
            (
                {"properties", "required", "additionalProperties", "propertyNames"},
                "object",
                "isinstance({v}, dict)",
                self._object,
            ),
        ]
        for keywords, kind, guard, emit_body in blocks:
            if not keywords & schema.keys():
                continue
            if known == kind or (kind == "number" and known == "integer"):
                emit_body(schema, var, indent)
            else:
                body = functools.partial(emit_body, schema, var, indent + 1)
                self._block(indent, f"if {guard.format(v=var)}:", body)

    def _string(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minLength" in schema:
            self._line(indent, f"if len({var}) < {int(schema['minLength'])}: return False")
        if "maxLength" in schema:
            self._line(indent, f"if len({var}) > {int(schema['maxLength'])}: return False")
        if "pattern" in schema:
            pattern = self._constant(re.compile(schema["pattern"]))
            self._line(indent, f"if {pattern}.search({var}) is None: return False")

    def _number(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minimum" in schema:
            self._line(indent, f"if {var} < {self._constant(schema['minimum'])}: return False")
        if "maximum" in schema:
            self._line(indent, f"if {var} > {self._constant(schema['maximum'])}: return False")

    def _array(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minItems" in schema:
            self._line(indent, f"if len({var}) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            self._line(indent, f"if len({var}) > {int(schema['maxItems'])}: return False")
        if "items" in schema:
            item = self._name("v")
            self._block(
                indent,
                f"for {item} in {var}:",
                lambda: self.emit(schema["items"], item, indent + 1),
            )

    def _object(self, schema: dict[str, Any], var: str, indent: int) -> None:
        for name in schema.get("required", ()):
            self._line(indent, f"if {self._constant(name)} not in {var}: return False")
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not properties and extra is True and "propertyNames" not in schema:
            return
        key, value = self._name("k"), self._name("v")

        def loop() -> None:
            if "propertyNames" in schema:
                self.emit(schema["propertyNames"], key, indent + 1)
            branch = "if"
            for name, sub in properties.items():
                self._line(indent + 1, f"{branch} {key} == {self._constant(name)}:")
                start = len(self.lines)
                self.emit(sub, value, indent + 2)
                if len(self.lines) == start:
                    self._line(indent + 2, "pass")
                branch = "elif"
            if extra is not True:
                if branch == "if":
                    self.emit(extra, value, indent + 1)
                else:
                    self._line(indent + 1, "else:")
                    start = len(self.lines)
                    self.emit(extra, value, indent + 2)
                    if len(self.lines) == start:
                        self._line(indent + 2, "pass")

        self._block(indent, f"for {key}, {value} in {var}.items():", loop)


_TYPE_TESTS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    # jsonschema's rule: bool is not an integer; a float with no fraction is.
    "integer": "(isinstance({v}, int) and not isinstance({v}, bool)"
    " or isinstance({v}, float) and {v}.is_integer())",
    "number": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
}


def _schema_diagnostics(doc: dict[str, Any], ctx: _Context) -> None:
    """Explain every schema error with its position and what would be valid."""
    full = _validator().full
    reported: set[tuple[JsonPath, str]] = set()
    for error in full.iter_errors(doc):
        path: JsonPath = tuple(error.path)
        keyword = str(error.validator)
        sub: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
        instance = error.instance
        if "propertyNames" in error.schema_path:
            # jsonschema reports a bad key with the object's path and the key as instance.
            key_path = (*path, instance)
            if (key_path, "key") in reported:
                continue
            reported.add((key_path, "key"))
            ctx.add(
                key_path,
                "schema",
                f"{ctx.name(path)} key {_short(instance)} must be {_expected(sub)}",
                key=True,
            )
            continue
        if keyword == "required":
            for name in error.validator_value:
                if name in instance or ((*path, name), "required") in reported:
                    continue
                reported.add(((*path, name), "required"))
                wanted = _expected(_subschema(_validator().schema, sub, name))
                ctx.add(
                    (*path, name),
                    "schema",
                    f"{ctx.name((*path, name))} is required: {wanted}",
                    location=ctx.location(path, key=True) if path else ctx.location(()),
                )
            continue
        if keyword == "additionalProperties" and error.validator_value is False:
            allowed = list(sub.get("properties", {}))
            for name in instance:
                if name in allowed or ((*path, name), "unknown") in reported:
                    continue
                reported.add(((*path, name), "unknown"))
                ctx.add(
                    (*path, name),
                    "unknown-field",
                    f"unknown field {ctx.name((*path, name))}{_did_you_mean(str(name), allowed)}; "
                    f"{ctx.name(path) or 'the document'} takes {', '.join(allowed)}",
                    key=True,
                )
            continue
        if (path, "value") in reported:
            continue  # one message per value: a 300-character 'Bad_Name' breaks two rules
        reported.add((path, "value"))
        rule = "schema"
        if len(path) == 3 and path[:2] == ("spec", "imagePullSecrets") and keyword != "type":
            rule = "pull-secret"
        ctx.add(path, rule, _message(ctx.name(path), keyword, sub, instance, error.message))


def _subschema(root: dict[str, Any], schema: dict[str, Any], name: str) -> dict[str, Any]:
    found = schema.get("properties", {}).get(name, {})
    return _deref(root, found) if isinstance(found, dict) else {}


def _deref(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its local $ref merged in (the referring schema's keys win)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    merged = dict(_deref(root, target)) if isinstance(target, dict) else {}
    merged.update({k: v for k, v in schema.items() if k not in ("$ref", "description")})
    return merged


def _message(name: str, keyword: str, schema: dict[str, Any], instance: Any, fallback: str) -> str:
    name = name or "the document"
    resolved = _deref(_validator().schema, schema)
    expected = _expected(resolved)
    got = _describe(instance)
    if keyword in ("type", "const", "enum", "minimum", "maximum", "pattern", "minLength"):
        hint = ""
        kinds = _types(resolved)
        if keyword == "type" and "string" in kinds and isinstance(instance, bool | int | float):
            hint = "; quote it to make it a string"
        elif keyword == "type" and "integer" in kinds and isinstance(instance, str):
            hint = "; write the number without quotes" if instance.strip().isdigit() else ""
        return f"{name} must be {expected}, got {got}{hint}"
    if keyword == "maxLength":
        return f"{name} must be {expected}, got {len(instance)} characters"
    if keyword in ("minItems", "maxItems"):
        count = "an empty list" if not instance else f"{len(instance)} items"
        return f"{name} must be {expected}, got {count}"
    return f"{name}: {_clip(fallback, 200)}"  # jsonschema's words, for keywords not named above


def _types(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return kinds if isinstance(kinds, list) else [kinds]


def _expected(schema: dict[str, Any]) -> str:  # noqa: PLR0911  # one phrase per schema shape
    """What a schema accepts, as a phrase: "an integer from 20 to 32000"."""
    schema = _deref(_validator().schema, schema)
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kinds = _types(schema)
    if kinds == ["integer"]:
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        if low is not None:
            return f"an integer of at least {low}"
        return "an integer"
    if kinds == ["string"] and ("pattern" in schema or "maxLength" in schema):
        title = schema.get("title", "string")
        article = "an" if title[0].lower() in "aeiou" else "a"
        detail = schema.get("description")
        return f"{article} {title} ({detail})" if detail else f"{article} {title}"
    if kinds == ["array"]:
        items = _deref(_validator().schema, schema.get("items", {}))
        noun = items.get("title", "item")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if low and high is not None:
            return f"a list of {low} to {high} {noun}s"
        if low:
            return f"a list of at least {low} {noun}" + ("s" if low != 1 else "")
        return f"a list of {noun}s"
    if kinds == ["object"]:
        required = schema.get("required")
        return f"a mapping with {', '.join(required)}" if required else "a mapping"
    words = {"string": "a string", "null": "null", "boolean": "true or false", "number": "a number"}
    if kinds:
        return " or ".join(words.get(k, k) for k in kinds)
    return "valid"


def _clip(text: str, limit: int = 80) -> str:
    """Text from the file, cut short for a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: object, limit: int = 80) -> str:
    """repr() of a value from the file, cut short: a hostile file can hold a 1 MiB string."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def _describe(value: Any) -> str:
    """A value as a message shows it: 'text', 10, true, null, a list."""
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null (an empty value)"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _did_you_mean(name: str, allowed: Sequence[str]) -> str:
    lowered = {a.lower(): a for a in allowed}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[matches[0]]!r}?)" if matches else ""


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@functools.lru_cache(maxsize=1024)
def _field(path: JsonPath) -> str:
    """A JSON path as people write it: spec.images[0], metadata.annotations["gitsync.io/prune"]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif len(part) <= 80 and _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_short(part)}]"
    return text

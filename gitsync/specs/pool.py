"""Many files at once: a large tree is shared between this process and a forked worker.

Files are independent until the cross-file name check, so a large tree is
split between the process and a forked worker when there are two cores and
the caller has no other threads (forking a threaded process is unsafe). The
worker runs `_check_file_packed`, found by this module's name in the forked
copy of the parent, and sends plain tuples back.
"""

from __future__ import annotations

import os
import signal
import threading

from gitsync.model import CacheSpec, Diagnostic, EipAttributes, Pairs, Severity, SourceLocation
from gitsync.specs.documents import _check_file, _FileResult, _shared_pairs
from gitsync.specs.schema import _validator
from gitsync.specs.walk import _File

PARALLEL_MIN_FILES = 200  # below this, starting a worker costs more than it saves


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
                labels=_shared_pairs(labels),  # one tuple per distinct map, as in the worker
                annotations=_shared_pairs(annotations),
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

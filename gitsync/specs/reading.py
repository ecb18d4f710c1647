"""One file's bytes, or why they are refused before any parser sees them.

Size, regular-file, UTF-8 and NUL checks come first so that those
diagnostics can name the line of the first bad byte, and so that the YAML
parser only ever sees at most 1 MiB of valid UTF-8 text.
"""

from __future__ import annotations

import os
import stat
from typing import Final

from gitsync.model import Diagnostic, Severity, SourceLocation
from gitsync.specs.walk import _File

# A cache repository file is a few KiB; 1 MiB is a mistake or an attack.
MAX_FILE_BYTES: Final = 1024 * 1024
_ERROR = Severity.ERROR


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

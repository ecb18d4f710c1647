"""Serving the mirror's bytes verified: blob streams hashed as they go, manifests, byte ranges.

Nothing is served whose digest does not match (see `mirror`'s Integrity): a
blob's last chunk is held back until the whole blob hashed to its digest, and
a manifest is hashed before it is answered. Damage is reported to the
provider, which moves the blob aside and fails the caches that use it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final

from gitsync.providers.local.blobs import BlobNotFoundError, new_hasher, parse_digest
from gitsync.providers.local.provider import LocalProvider

# The mirror's logger: these messages are the mirror's, wherever the code lives.
log = logging.getLogger("gitsync.providers.local.mirror")

_RANGE_RE: Final = re.compile(r"bytes=(\d*)-(\d*)")


class _FileChunks:
    """A byte range of an open blob file, read in chunks and verified; closing closes the file.

    The file is opened before the answer starts, so a blob removed by `gc`
    meanwhile still streams whole (the open file keeps its inode alive). The
    whole blob is hashed (for a range, the bytes outside it are read too, not
    sent), and the last chunk is held back until the hash matches the digest:
    a damaged blob ends short of its Content-Length, never complete, and
    `on_damage(digest, detail)` is told.
    """

    def __init__(
        self,
        fh: BinaryIO,
        *,
        digest: str,
        offset: int,
        length: int,
        chunk: int,
        on_damage: Callable[[str, str], object],
    ) -> None:
        self._fh = fh
        self._digest = digest
        self._offset = offset
        self._length = length
        self._chunk = chunk
        self._on_damage = on_damage

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._verified()
        finally:
            self.close()

    def _verified(self) -> Iterator[bytes]:
        hasher = new_hasher(self._digest)
        self._fh.seek(0)
        self._hash_through(hasher, self._offset)
        left = self._length
        while left > 0:
            data = self._fh.read(min(self._chunk, left))
            if not data:
                self._matches(hasher)  # shorter than its size: cannot match
                return
            hasher.update(data)
            left -= len(data)
            if left > 0:
                yield data
                continue
            self._hash_through(hasher, None)  # the bytes after the range
            if self._matches(hasher):
                yield data
            return
        self._hash_through(hasher, None)  # an empty blob
        self._matches(hasher)

    def _hash_through(self, hasher: Any, count: int | None) -> None:
        """Hash `count` more bytes (None: to the end) without sending them."""
        while count is None or count > 0:
            data = self._fh.read(self._chunk if count is None else min(self._chunk, count))
            if not data:
                return
            hasher.update(data)
            if count is not None:
                count -= len(data)

    def _matches(self, hasher: Any) -> bool:
        algorithm, _ = parse_digest(self._digest)
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual == self._digest:
            return True
        log.error(
            "blob %s does not hash to its digest (%s): the answer was broken off, never complete",
            self._digest,
            actual,
        )
        self._on_damage(self._digest, f"does not match its digest (the mirror read {actual})")
        return False

    def close(self) -> None:
        self._fh.close()


def _verify_manifest(data: bytes, digest: str, provider: LocalProvider) -> None:
    """A stored manifest that does not hash to its digest is damaged: 404, and reported."""
    hasher = new_hasher(digest)
    hasher.update(data)
    algorithm, _ = parse_digest(digest)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != digest:
        log.error("manifest %s does not hash to its digest (%s): not served", digest, actual)
        provider.report_damage(digest, f"does not match its digest (the mirror read {actual})")
        raise BlobNotFoundError(digest, provider.blobs.root)


class _RangeError(ValueError):
    """A bytes range that is malformed or lies outside the blob: 416."""


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single byte range, or None to ignore the header and send it all.

    Several ranges, or a unit other than bytes, are ignored (RFC 9110 allows
    it); a malformed or unsatisfiable bytes range raises _RangeError (416), as
    Go's http.ServeContent, and so the reference registry, does.
    """
    text = header.replace(" ", "").lower()
    if not text.startswith("bytes=") or "," in text:
        return None
    match = _RANGE_RE.fullmatch(text)
    first, last = match.groups() if match else ("", "")
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    elif last and int(last) > 0:
        start, end = max(size - int(last), 0), size - 1  # the last N bytes
    else:
        start, end = 0, -1  # malformed: no start and no suffix length
    if start >= size or end < start:
        raise _RangeError(
            f"range {_echo(header)!r} is malformed or outside the blob's {size} bytes;"
            " use bytes=START-END within it"
        )
    return (start, end - start + 1)


def _gone(digest: str) -> str:
    return f"blob {digest} left the store (a cache changed meanwhile); pull it upstream"


def _echo(text: str) -> str:
    """A client-supplied value cut short for messages."""
    return text if len(text) <= 200 else text[:200] + "…"

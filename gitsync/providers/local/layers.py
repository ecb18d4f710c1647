"""Layer expansion and verification for pulls: decompress as the bytes stream, check diff_ids.

A layer is decompressed on the fly (gzip through zlib, zstd through the
optional `zstandard` module) in pieces of at most `_EXPAND_CHUNK` bytes, so
its uncompressed digest and expanded size are known without writing anything
expanded to disk, and a size budget can stop it after one piece. The image
config's `rootfs.diff_ids` say what each layer must expand to.
"""

from __future__ import annotations

import importlib
import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from gitsync.errors import PermanentError
from gitsync.providers.local.blobs import parse_digest
from gitsync.providers.local.oci import (
    LAYER_GZIP_SUFFIXES,
    LAYER_TAR_SUFFIXES,
    LAYER_ZSTD_SUFFIXES,
    Descriptor,
    ManifestError,
    ResolvedImage,
)

_EXPAND_CHUNK = 1024 * 1024  # bound on decompressed bytes produced per step
_READ_CHUNK = 1024 * 1024

_GZIP_WBITS = 16 + zlib.MAX_WBITS


class LayerVerificationError(PermanentError):
    """A layer does not decompress, or its content does not match the config's diff_id."""

    def __init__(self, message: str, *, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class UnsupportedLayerError(PermanentError):
    """A layer's media type (or its compression) cannot be pulled by this installation."""


# -- decompression -----------------------------------------------------------------


class _ExpandError(Exception):
    """Internal: the compressed stream is not valid for its declared compression."""


class _Source:
    """Compressed bytes from the network, passed to a sink as they are read."""

    def __init__(self, chunks: Iterator[bytes], sink: Callable[[bytes], None]) -> None:
        self._chunks = chunks
        self._sink = sink
        self._pending = b""

    def chunk(self) -> bytes:
        """The next chunk as it arrived; b"" at the end."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        for data in self._chunks:
            if data:
                self._sink(data)
                return data
        return b""

    def read(self, size: int = -1) -> bytes:
        """File-like read for decompressors that pull their input."""
        data = self.chunk()
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        return data

    def drain(self) -> None:
        while self.chunk():
            pass


def _compression(descriptor: Descriptor) -> str:
    media_type = descriptor.media_type
    if media_type.endswith(LAYER_GZIP_SUFFIXES):
        return "gzip"
    if media_type.endswith(LAYER_ZSTD_SUFFIXES):
        return "zstd"
    if media_type.endswith(LAYER_TAR_SUFFIXES):
        return "none"
    raise UnsupportedLayerError(
        f"layer {descriptor.digest} has media type {media_type!r}, which is not an image layer;"
        " expected application/vnd.oci.image.layer.v1.tar[+gzip|+zstd] or"
        " application/vnd.docker.image.rootfs.diff.tar.gzip"
    )


def _zstandard() -> Any:
    """The optional zstandard module, or None (imported lazily: most images use gzip)."""
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


def _expand(source: _Source, compression: str) -> Iterator[bytes]:
    """Decompressed pieces of at most ~1 MiB each; raises _ExpandError on bad data."""
    if compression == "none":
        while data := source.chunk():
            yield data
        return
    if compression == "gzip":
        yield from _expand_gzip(source)
        return
    zstd = _zstandard()
    if zstd is None:  # checked before fetching; kept for direct callers
        raise _ExpandError("zstd support needs the 'zstandard' module")
    reader = zstd.ZstdDecompressor().stream_reader(
        source, read_size=_READ_CHUNK, read_across_frames=True
    )
    try:
        while piece := reader.read(_EXPAND_CHUNK):
            yield piece
    except zstd.ZstdError as exc:
        raise _ExpandError(str(exc)) from exc


def _expand_gzip(source: _Source) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(_GZIP_WBITS)
    member_started = False
    while data := source.chunk():
        while data:
            if decompressor.eof:
                if not member_started and not data.strip(b"\0"):
                    break  # zero padding after the last member, which gzip tolerates
                decompressor = zlib.decompressobj(_GZIP_WBITS)
                member_started = False
            member_started = True
            try:
                out = decompressor.decompress(data, _EXPAND_CHUNK)
            except zlib.error as exc:
                raise _ExpandError(f"invalid gzip data: {exc}") from exc
            if out:
                yield out
            if decompressor.eof:
                data = decompressor.unused_data
                member_started = False
            else:
                data = decompressor.unconsumed_tail
    if member_started and not decompressor.eof:
        raise _ExpandError("gzip stream ends before its end marker (truncated)")
    if not member_started and not decompressor.eof:
        raise _ExpandError("empty gzip stream")


def _file_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while data := fh.read(_READ_CHUNK):
        yield data


def _diff_ids(config_bytes: bytes, resolved: ResolvedImage) -> tuple[str, ...]:
    ref = resolved.reference
    where = f"config {resolved.config.digest} of {ref}"
    try:
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"{where} has no rootfs.diff_ids; it is not a container image config",
            registry=ref.registry,
            repository=ref.repository,
        ) from exc
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ManifestError(
            f"{where}: rootfs.diff_ids must be a list of digests",
            registry=ref.registry,
            repository=ref.repository,
        )
    if len(diff_ids) != len(resolved.layers):
        raise ManifestError(
            f"{where} lists {len(diff_ids)} diff_ids but the manifest has"
            f" {len(resolved.layers)} layers",
            registry=ref.registry,
            repository=ref.repository,
        )
    for diff_id in diff_ids:
        try:
            parse_digest(diff_id)
        except PermanentError as exc:
            raise ManifestError(
                f"{where}: {exc}", registry=ref.registry, repository=ref.repository
            ) from exc
    return tuple(diff_ids)

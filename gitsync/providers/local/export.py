"""`gitsync export NAME --dest oci:DIR`: a cache's images as an OCI image layout.

Why an OCI image layout: it is the one on-disk format every tool reads
without a registry. `skopeo copy oci:DIR:REF …` pushes from it, `umoci
unpack` makes a runtime bundle, `ctr -n k8s.io images import` (and thus the
kubelet) takes it as a tar, and it is a plain folder to carry into an
air-gapped site.

What is written (image-spec, image-layout.md)::

    DIR/oci-layout          {"imageLayoutVersion": "1.0.0"}
    DIR/index.json          one descriptor per image of the cache's snapshot
    DIR/blobs/sha256/<hex>  the manifests, configs and layers those reference

Decisions, and why:

* **Original bytes.** Manifests are written exactly as the registry served
  them, so every digest (manifest, config, layers) is the upstream one and a
  pod pinned by digest still matches. Nothing is converted, as converting
  changes digests: a Docker schema 2 manifest stays one, with its Docker media
  type in `index.json`. containerd (`ctr images import`) reads those; the
  `oci:` readers of skopeo 1.9 and umoci 0.4 skip non-OCI descriptors ("no
  descriptor found for reference"), so with those tools use OCI images or pull
  Docker-format ones through the mirror.
* **One platform manifest per image, not the index.** A cache holds the
  manifest of one platform (the provider's `--platform`) of a multi-platform
  image, not the other platforms' manifests and layers. A layout pointing at
  the index would be incomplete, and `skopeo copy --all`, or a runtime on
  another platform, would fail half-way. So each descriptor is the platform
  manifest, with its `platform` field set. The upstream index digest is kept in
  the `io.gitsync.image.index.digest` annotation for provenance. The price: an
  imported image carries the platform manifest's digest, so a pod that pins
  the *index* digest does not find it; pin the platform digest, or pull through
  the mirror (`mirror`), which serves the index.
* **Ref names are the normalised reference** (`docker.io/library/nginx:1.27.2`,
  `registry.example.com/team/api@sha256:…`), in `org.opencontainers.image.ref.name`
  and, for containerd, `io.containerd.image.name`. The image-spec allows a fully
  qualified reference there; a bare tag would collide between `nginx:latest`
  and `redis:latest` in one cache, and `ctr images import` keeps a full
  reference as the image name, which is exactly what the kubelet looks up.
  `skopeo inspect oci:DIR:docker.io/library/nginx:1.27.2` and
  `umoci unpack --image DIR:docker.io/library/nginx:1.27.2` address it (both
  split `DIR:REF` at the first ':', so DIR itself must not contain one).
* **Copied and verified, or hard-linked on request.** By default each blob is
  copied and hashed on the way, so a bundle never carries content that
  does not match its name, even if the store's disk rotted. `link=True`
  hard-links instead when DEST is on the store's file system (a bundle in
  seconds, no extra space), falling back to copying across file systems.
  Hard links share the inode with the store: a tool that rewrote an exported
  blob in place would corrupt the store too (OCI tools never do; they write
  new blobs), and a blob `gc` removes from the store stays on disk as long as
  an export links it. That is why linking is asked for, not automatic.
* **Incremental and crash-safe.** A blob already in DEST with the right size is
  kept (a re-export or a second cache into the same bundle writes only what is
  new); every file is written to a temporary name and renamed, and `index.json`
  last, so an interrupted export leaves the previous layout valid. Exporting
  into an existing layout replaces entries with the same ref name and keeps the
  others, so several caches can share one bundle.

An export is a use of the cache: it sets the cache's last matched time. It
holds a lease on the snapshot's blobs while it copies, so `gc` keeps them even
if the cache is deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gitsync import imageref
from gitsync.errors import PermanentError
from gitsync.model import CacheStatus, ObservedCache
from gitsync.providers.local.blobs import BlobNotFoundError, parse_digest
from gitsync.providers.local.oci import OCI_INDEX
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.state import SnapshotRecord

__all__ = [
    "ANNOTATION_CONTAINERD_NAME",
    "ANNOTATION_INDEX_DIGEST",
    "ANNOTATION_REF_NAME",
    "ExportError",
    "ExportResult",
    "ExportedImage",
    "export_cache",
    "parse_dest",
]

ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME: Final = "io.containerd.image.name"
ANNOTATION_INDEX_DIGEST: Final = "io.gitsync.image.index.digest"
LAYOUT_VERSION: Final = "1.0.0"
DEST_SCHEME: Final = "oci:"
_CHUNK: Final = 1 << 20
_TMP_PREFIX: Final = ".tmp-"


class ExportError(PermanentError):
    """The cache cannot be exported as asked: unknown, not built, or DEST unusable."""


@dataclass(frozen=True, slots=True)
class ExportedImage:
    """One image as written: its ref name in the layout and the manifest it points at."""

    image: str  # as written in the spec
    ref_name: str
    manifest_digest: str
    media_type: str
    platform: str
    index_digest: str | None


@dataclass(frozen=True, slots=True)
class ExportResult:
    cache: str
    cache_id: str
    snapshot_id: str
    dest: Path
    images: tuple[ExportedImage, ...]
    blobs_copied: int
    blobs_linked: int
    blobs_present: int  # already in DEST with the right size
    bytes_copied: int
    seconds: float  # time to materialise the layout, for gitsync_startup_seconds


def parse_dest(text: str) -> Path:
    """The folder of `--dest oci:DIR`; raise ExportError saying what would be valid."""
    if not text.startswith(DEST_SCHEME):
        raise ExportError(
            f"--dest {text!r} is not supported; write oci:DIR (an OCI image layout folder)"
        )
    folder = text[len(DEST_SCHEME) :]
    if not folder:
        raise ExportError("--dest oci: needs a folder, e.g. oci:/srv/bundles/web-base")
    if ":" in folder:
        raise ExportError(
            f"--dest {text!r}: the folder must not contain ':' (skopeo and umoci read oci:DIR:REF"
            " and split at the first ':'), and ref names come from the images, so no :REF;"
            " write e.g. oci:/srv/bundles/web-base"
        )
    return Path(folder)


def export_cache(
    *,
    provider: LocalProvider,
    name: str,
    dest: Path,
    link: bool = False,
    fsync: bool = True,
    clock: Callable[[], float] = time.time,
) -> ExportResult:
    """Write the snapshot of cache `name` (or `imc-…` id) as an OCI image layout in `dest`."""
    started = time.monotonic()
    cache = _find(provider, name)
    if cache.snapshot_id is None:
        raise ExportError(
            f"cache {cache.name} ({cache.cache_id}) is {cache.status.value} and has no snapshot"
            " yet; export it once it is Ready"
        )
    vanished = ExportError(
        f"snapshot {cache.snapshot_id} of cache {cache.name} vanished while exporting"
        " (the cache was updated or deleted meanwhile); run the export again"
    )
    # A lease on the snapshot's blobs: a `gc` after the cache is deleted or updated
    # mid-export must not remove what is still being copied (see `leases`).
    with provider.leases.acquire(purpose=f"export {cache.cache_id} ({cache.name})") as lease:
        if not lease.hold_snapshot(cache.snapshot_id):
            raise vanished
        snapshot = provider.state.snapshot(cache.snapshot_id)
        if snapshot is None:
            raise vanished
        return _export(
            provider=provider,
            cache=cache,
            snapshot=snapshot,
            dest=dest,
            link=link,
            fsync=fsync,
            clock=clock,
            started=started,
        )


def _export(
    *,
    provider: LocalProvider,
    cache: ObservedCache,
    snapshot: SnapshotRecord,
    dest: Path,
    link: bool,
    fsync: bool,
    clock: Callable[[], float],
    started: float,
) -> ExportResult:
    existing = _prepare(dest)
    writer = _LayoutWriter(provider=provider, dest=dest, link=link, fsync=fsync, cache=cache.name)
    descriptors: list[dict[str, object]] = []
    exported: list[ExportedImage] = []
    blobs: dict[str, str] = {}  # digest -> the image that needs it (for messages)
    for record in snapshot.images:
        image = _image(record)
        manifest = writer.manifest(image.manifest_digest, image=image.image)
        for digest in _blobs(record, image.image):
            blobs.setdefault(digest, image.image)
        descriptors.append(_descriptor(image, size=len(manifest)))
        exported.append(image)
    # Copying is hashing and file I/O, which release the GIL: a few threads keep the
    # disk busy, as the pull does.
    with ThreadPoolExecutor(max_workers=EXPORT_WORKERS, thread_name_prefix="export") as pool:
        list(pool.map(lambda item: writer.blob(item[0], image=item[1]), blobs.items()))

    names = {image.ref_name for image in exported}
    kept = [d for d in existing if _ref_name(d) not in names]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": kept + descriptors}
    _write_atomic(dest / "oci-layout", _json({"imageLayoutVersion": LAYOUT_VERSION}), fsync=fsync)
    _write_atomic(dest / "index.json", _json(index), fsync=fsync)
    if fsync:
        _fsync_dir(dest)
    provider.state.touch_matched(cache.cache_id, datetime.fromtimestamp(clock(), UTC))
    return ExportResult(
        cache=cache.name,
        cache_id=cache.cache_id,
        snapshot_id=snapshot.snapshot_id,
        dest=dest,
        images=tuple(exported),
        blobs_copied=writer.copied,
        blobs_linked=writer.linked,
        blobs_present=writer.present,
        bytes_copied=writer.bytes_copied,
        seconds=time.monotonic() - started,
    )


# ------------------------------------------------------------------------ internals


def _find(provider: LocalProvider, name: str) -> ObservedCache:
    caches = provider.state.caches()
    found = [c for c in caches if c.cache_id == name] or [c for c in caches if c.name == name]
    if not found:
        known = ", ".join(sorted({c.name for c in caches})) or "none"
        raise ExportError(
            f"no cache is named or has id {name!r} in {provider.data_dir} (caches: {known})"
        )
    # Names can repeat across owners; a Ready one is what a pod would get.
    found.sort(key=lambda c: (c.status is not CacheStatus.READY, c.snapshot_id is None))
    return found[0]


def _text(record: dict[str, object], key: str, *, image: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ExportError(f"snapshot record of {image} has no {key!r}; rebuild the cache")
    return value


def _image(record: dict[str, object]) -> ExportedImage:
    written = str(record.get("image") or record.get("reference") or "?")
    reference = _text(record, "reference", image=written)
    index_digest = record.get("indexDigest")
    return ExportedImage(
        image=written,
        ref_name=str(imageref.parse(reference)),
        manifest_digest=_text(record, "manifestDigest", image=written),
        media_type=_text(record, "mediaType", image=written),
        platform=str(record.get("platform") or ""),
        index_digest=index_digest if isinstance(index_digest, str) else None,
    )


def _blobs(record: dict[str, object], image: str) -> list[str]:
    layers = record.get("layers")
    if not isinstance(layers, list) or not all(isinstance(d, str) for d in layers):
        raise ExportError(f"snapshot record of {image} has no list of layers; rebuild the cache")
    return [_text(record, "configDigest", image=image), *layers]


def _descriptor(image: ExportedImage, *, size: int) -> dict[str, object]:
    annotations = {
        ANNOTATION_REF_NAME: image.ref_name,
        ANNOTATION_CONTAINERD_NAME: image.ref_name,
    }
    if image.index_digest is not None:
        annotations[ANNOTATION_INDEX_DIGEST] = image.index_digest
    descriptor: dict[str, object] = {
        "mediaType": image.media_type,
        "digest": image.manifest_digest,
        "size": size,
    }
    platform = _platform(image.platform)
    if platform:
        descriptor["platform"] = platform
    descriptor["annotations"] = annotations
    return descriptor


def _platform(text: str) -> dict[str, str]:
    """`linux/arm64/v8` as an image-spec platform object; {} when unknown."""
    parts = text.split("/")
    if len(parts) < 2 or not all(parts):
        return {}
    platform = {"architecture": parts[1], "os": parts[0]}
    if len(parts) > 2:
        platform["variant"] = parts[2]
    return platform


def _ref_name(descriptor: object) -> str | None:
    if not isinstance(descriptor, dict):
        return None
    annotations = descriptor.get("annotations")
    if not isinstance(annotations, dict):
        return None
    name = annotations.get(ANNOTATION_REF_NAME)
    return name if isinstance(name, str) else None


def _prepare(dest: Path) -> list[dict[str, object]]:
    """Make DEST ready; return the descriptors of an existing layout there (kept on merge)."""
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"--dest {dest} exists and is not a folder; choose a folder for oci:DIR")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / "oci-layout").is_file():
            raise ExportError(
                f"--dest {dest} is not empty and holds no OCI layout (no oci-layout file);"
                " choose an empty or new folder, or an existing layout to add to"
            )
        try:
            index = json.loads((dest / "index.json").read_text(encoding="utf-8"))
            manifests = index["manifests"]
            if not isinstance(manifests, list):
                raise TypeError("'manifests' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(
                f"--dest {dest} has an oci-layout file but its index.json is unreadable ({exc});"
                " fix or remove it, or choose another folder"
            ) from exc
        return [d for d in manifests if isinstance(d, dict)]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create --dest {dest}: {exc.strerror or exc}") from exc
    return []


EXPORT_WORKERS = 4


class _LayoutWriter:
    """Puts blobs into DEST/blobs/<alg>/<hex>, once each, copied and verified or linked."""

    def __init__(
        self, *, provider: LocalProvider, dest: Path, link: bool, fsync: bool, cache: str
    ) -> None:
        self._provider = provider
        self._cache = cache
        self._store = provider.blobs
        self._dest = dest
        self._link = link
        self._fsync = fsync
        self._done: set[str] = set()
        self._lock = threading.Lock()  # blob() runs in a thread pool
        self.copied = self.linked = self.present = self.bytes_copied = 0

    def _target(self, digest: str) -> Path:
        algorithm, hexpart = parse_digest(digest)
        folder = self._dest / "blobs" / algorithm
        folder.mkdir(parents=True, exist_ok=True)
        return folder / hexpart

    def manifest(self, digest: str, *, image: str) -> bytes:
        """Write the manifest's original bytes, checked against its digest; return them."""
        try:
            data = self._store.read_bytes(digest)
        except BlobNotFoundError as exc:
            raise _missing(digest, image) from exc
        algorithm, hexpart = parse_digest(digest)
        if (actual := hashlib.new(algorithm, data).hexdigest()) != hexpart:
            raise self._damaged(f"manifest {digest}", digest, f"{algorithm}:{actual}", image)
        if digest not in self._done:
            self._done.add(digest)
            target = self._target(digest)
            if target.is_file() and target.stat().st_size == len(data):
                self.present += 1
            else:
                _write_atomic(target, data, fsync=self._fsync)
                self.copied += 1
                self.bytes_copied += len(data)
        return data

    def blob(self, digest: str, *, image: str) -> None:
        with self._lock:
            if digest in self._done:
                return
            self._done.add(digest)
        target = self._target(digest)
        source = self._store.path(digest)
        try:
            size = source.stat().st_size
        except FileNotFoundError as exc:
            raise _missing(digest, image) from exc
        if target.is_file() and target.stat().st_size == size:
            with self._lock:
                self.present += 1
            return
        if self._link and _try_link(source, target):
            with self._lock:
                self.linked += 1
            return
        self._copy(digest, source, target, image=image)
        with self._lock:
            self.copied += 1
            self.bytes_copied += size

    def _copy(self, digest: str, source: Path, target: Path, *, image: str) -> None:
        algorithm, hexpart = parse_digest(digest)
        hasher = hashlib.new(algorithm)
        tmp = target.with_name(f"{_TMP_PREFIX}{target.name}-{secrets.token_hex(4)}")
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        try:
            with open(source, "rb") as src, open(tmp, "xb") as out:
                while n := src.readinto(buffer):
                    hasher.update(view[:n])
                    out.write(view[:n])
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
            if hasher.hexdigest() != hexpart:
                actual = f"{algorithm}:{hasher.hexdigest()}"
                raise self._damaged(f"blob {digest}", digest, actual, image)
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            raise _missing(digest, image) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _damaged(self, what: str, digest: str, actual: str, image: str) -> ExportError:
        """Move the damaged blob aside (the next `observe` then finds it missing) and say so."""
        self._provider.report_damage(digest, f"does not match its digest (export read {actual})")
        return ExportError(
            f"{what} of {image} in the store does not match its digest (got {actual}); it was"
            f" moved aside, never exported: run `gitsync apply` to repair cache {self._cache},"
            " then export again"
        )


def _try_link(source: Path, target: Path) -> bool:
    """Hard-link, or False when the file systems differ or do not support links."""
    tmp = target.with_name(f"{_TMP_PREFIX}{target.name}-{secrets.token_hex(4)}")
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    os.replace(tmp, target)
    return True


def _missing(digest: str, image: str) -> ExportError:
    return ExportError(
        f"blob {digest} of {image} is missing from the store (removed by gc or by hand);"
        " run `gitsync apply` to repair the cache, then export again"
    )


def _json(document: object) -> bytes:
    return json.dumps(document, indent=2).encode() + b"\n"


def _write_atomic(path: Path, data: bytes, *, fsync: bool) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    for folder in _folders(path):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _folders(path: Path) -> Iterable[Path]:
    yield path
    blobs = path / "blobs"
    if blobs.is_dir():
        yield from (p for p in blobs.iterdir() if p.is_dir())

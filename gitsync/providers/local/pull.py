"""Pull a cache's images into the blob store: resolve, fetch, verify, dedupe, enforce the size.

Why one function for a whole list of images rather than one image at a time:
the size limit of a cache is about the expanded content of *all* its images,
and layers shared between them must be fetched once. So `pull_images`
resolves every reference, collects the unique config and layer blobs, and
fetches them on a bounded thread pool while one budget counts the expanded
bytes of every layer as it is decompressed.

Verification happens while the bytes stream, never afterwards:

* the compressed bytes are hashed and size-checked as they are written to a
  temporary file (`BlobWriter`), which is renamed under its digest only if
  both match;
* the same bytes are decompressed on the fly (gzip through zlib, zstd through
  the optional `zstandard` module) to compute the uncompressed digest, which
  must equal the config's `rootfs.diff_ids` entry, and the expanded size;
* the expanded bytes count against `limit_bytes` as they appear, so a layer
  that expands enormously (a gzip bomb, or just a big image) stops the pull
  after at most one decompression buffer past the limit. Nothing expanded is
  written to disk, so that costs memory of one buffer, not gigabytes.

The first failure anywhere cancels the rest: queued work is dropped, and
in-flight transfers stop at their next chunk, their temporary files removed.

Manifests and indexes are kept byte for byte in the store too, so that a later
export reproduces the same digests. A store bound to a lease (`BlobStore.with_lease`)
claims every digest for the lease before its file is written or reused, so a
concurrent `gc` keeps it (see `leases`). Progress is reported through a callback
called from worker threads (one call at a time); keep it quick.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from gitsync.errors import PermanentError
from gitsync.imageref import ImageRef
from gitsync.providers.local.blobs import BlobStore, LayerInfo, parse_digest
from gitsync.providers.local.layers import (
    LayerVerificationError,
    UnsupportedLayerError,
    _compression,
    _diff_ids,
    _expand,
    _ExpandError,
    _file_chunks,
    _Source,
    _zstandard,
)
from gitsync.providers.local.oci import (
    DEFAULT_PLATFORM,
    Descriptor,
    Manifest,
    Platform,
    ResolvedImage,
    load_manifest,
    resolve_manifest,
)
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryretry import OperationCancelledError

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "LayerVerificationError",
    "ProgressCallback",
    "ProgressKind",
    "PullProgress",
    "PullResult",
    "PulledImage",
    "SizeLimitExceededError",
    "UnsupportedLayerError",
    "pull_images",
]

DEFAULT_MAX_WORKERS = 4  # measured best on 2 cores (bench/pull.py); I/O waits overlap
_PROGRESS_STEP = 1024 * 1024  # report a blob's progress at most once per MiB

# -- errors --------------------------------------------------------------------


class SizeLimitExceededError(PermanentError):
    """The expanded content of the cache's images passed the cache's size."""

    def __init__(self, *, needed_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"the images need at least {needed_bytes} bytes ({_gib(needed_bytes)}) when"
            f" expanded, more than the cache's limit of {limit_bytes} bytes ({_gib(limit_bytes)});"
            " pulling stopped. Raise imageCacheSize or remove images"
        )
        self.needed_bytes = needed_bytes
        self.limit_bytes = limit_bytes


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


# -- results and progress -------------------------------------------------------


class ProgressKind(enum.StrEnum):
    RESOLVED = "resolved"  # an image's manifest (and config) is known: totals grew
    STARTED = "started"  # a blob download began
    ADVANCED = "advanced"  # a blob download moved on (at most once per MiB)
    FETCHED = "fetched"  # a blob was downloaded, verified and stored
    REUSED = "reused"  # a blob was already in the store


@dataclass(frozen=True, slots=True)
class PullProgress:
    """A snapshot of a pull's progress; totals grow while images resolve."""

    kind: ProgressKind
    image: str  # the reference that needs this blob (the first one, if several do)
    digest: str
    blob_bytes: int  # bytes of this blob done so far
    blob_size: int
    images_resolved: int
    images_total: int
    layers_done: int  # unique layers fetched or reused
    layers_total: int  # unique layers known so far
    bytes_done: int  # compressed bytes of unique configs and layers done (fetched or reused)
    bytes_total: int  # compressed bytes of unique configs and layers known so far
    expanded_bytes: int  # expanded bytes counted against the limit so far


@dataclass(frozen=True, slots=True)
class PulledImage:
    """One image as pulled: what a snapshot records and an export needs."""

    reference: ImageRef
    manifest_digest: str
    media_type: str
    index_digest: str | None
    index_media_type: str | None
    platform: Platform
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]
    compressed_bytes: int  # config + layers as stored
    expanded_bytes: int  # sum of the layers' expanded sizes

    @property
    def blob_digests(self) -> tuple[str, ...]:
        """Every blob of the store this image needs: index, manifest, config, layers."""
        head = (self.index_digest,) if self.index_digest else ()
        return (*head, self.manifest_digest, self.config_digest, *self.layer_digests)


@dataclass(frozen=True, slots=True)
class PullResult:
    """All images of one pull and the byte counts the cache and the operator care about."""

    images: tuple[PulledImage, ...]
    content_bytes: int  # expanded size of the unique layers of all images
    fetched_bytes: int  # config and layer bytes downloaded by this pull
    reused_bytes: int  # config and layer bytes that were already in the store
    blob_digests: tuple[str, ...]  # sorted, unique: what a snapshot references


ProgressCallback = Callable[[PullProgress], None]


# -- the pull ------------------------------------------------------------------------


class _Budget:
    """Expanded bytes counted across all layers, against the cache's limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n
            total = self.total
        if self.limit is not None and total > self.limit:
            raise SizeLimitExceededError(needed_bytes=total, limit_bytes=self.limit)

    def sub(self, n: int) -> None:
        with self._lock:
            self.total -= n


@dataclass(slots=True)
class _LayerJob:
    descriptor: Descriptor
    ref: ImageRef  # where to fetch it from: the first image that needs it
    expected_diff_id: str
    compression: str


@dataclass(frozen=True, slots=True)
class _ImagePlan:
    resolved: ResolvedImage
    diff_ids: tuple[str, ...]


class _Pull:
    """One `pull_images` call: resolving its images, the layer workers and their progress.

    One class, longer than the house's ~250 lines, because every method shares
    the same lock, size budget, cancel flag and progress bookkeeping; the
    stateless expansion and verification live in `layers`.
    """

    def __init__(
        self,
        *,
        client: RegistryClient,
        store: BlobStore,
        platform: Platform,
        limit_bytes: int | None,
        on_progress: ProgressCallback | None,
        images_total: int,
    ) -> None:
        self.client = client
        self.store = store
        self.platform = platform
        self.budget = _Budget(limit_bytes)
        self.on_progress = on_progress
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.plans: dict[ImageRef, _ImagePlan] = {}
        self.jobs: dict[str, _LayerJob] = {}
        self.infos: dict[str, LayerInfo] = {}
        self.accounted: set[str] = set()  # blobs counted as fetched or reused
        self.known: set[str] = set()  # blobs counted in bytes_total
        self.fetched_bytes = 0
        self.reused_bytes = 0
        self.images_total = images_total
        self.layers_done = 0
        self.bytes_done = 0
        self.bytes_total = 0

    # -- progress ---------------------------------------------------------------

    def _emit(
        self, kind: ProgressKind, image: ImageRef, digest: str, blob_bytes: int, blob_size: int
    ) -> None:
        if self.on_progress is None:
            return
        event = PullProgress(
            kind=kind,
            image=str(image),
            digest=digest,
            blob_bytes=blob_bytes,
            blob_size=blob_size,
            images_resolved=len(self.plans),
            images_total=self.images_total,
            layers_done=self.layers_done,
            layers_total=len(self.jobs),
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            expanded_bytes=self.budget.total,
        )
        self.on_progress(event)

    def _know(self, descriptor: Descriptor, *, locked: bool = False) -> None:
        """Add a blob to the progress total, once per digest."""
        with contextlib.nullcontext() if locked else self.lock:
            if descriptor.digest not in self.known:
                self.known.add(descriptor.digest)
                self.bytes_total += descriptor.size

    def _account(
        self, image: ImageRef, descriptor: Descriptor, *, fetched: bool, layer: bool
    ) -> None:
        """Count a finished blob once per pull, whichever image asked first."""
        with self.lock:
            if descriptor.digest in self.accounted:
                return
            self.accounted.add(descriptor.digest)
            if fetched:
                self.fetched_bytes += descriptor.size
            else:
                self.reused_bytes += descriptor.size
            if not (fetched and layer):  # fetched layers were counted chunk by chunk
                self.bytes_done += descriptor.size
            if layer:
                self.layers_done += 1
            kind = ProgressKind.FETCHED if fetched else ProgressKind.REUSED
            self._emit(kind, image, descriptor.digest, descriptor.size, descriptor.size)

    def _advance(self, image: ImageRef, descriptor: Descriptor, delta: int, done: int) -> None:
        with self.lock:
            self.bytes_done += delta
            if done == delta:
                self._emit(ProgressKind.STARTED, image, descriptor.digest, done, descriptor.size)
            elif done // _PROGRESS_STEP != (done - delta) // _PROGRESS_STEP:
                self._emit(ProgressKind.ADVANCED, image, descriptor.digest, done, descriptor.size)

    # -- resolving ---------------------------------------------------------------

    def _manifest(self, ref: ImageRef, digest: str) -> Manifest:
        """A manifest by digest, from the store if it is there (no network), else fetched."""
        if self.store.claim(digest):
            return load_manifest(
                self.store.read_bytes(digest), digest=digest, registry=ref.registry
            )
        return self.client.get_manifest(ref, digest, cancel=self.cancel)

    def resolve(self, ref: ImageRef) -> _ImagePlan:
        if ref.digest is not None:
            top = self._manifest(ref, ref.digest)
        else:
            top = self.client.get_manifest(ref, cancel=self.cancel)
        resolved = resolve_manifest(
            ref, top, platform=self.platform, fetch=lambda d: self._manifest(ref, d)
        )
        # The store's lease claims each digest before its file is touched anyway; claiming
        # the whole image here makes that one transaction instead of one per blob.
        self.store.hold(
            [
                *((resolved.index.digest,) if resolved.index is not None else ()),
                resolved.manifest.digest,
                resolved.config.digest,
                *(layer.digest for layer in resolved.layers),
            ]
        )
        if resolved.index is not None:
            self.store.put_bytes(resolved.index.data, digest=resolved.index.digest)
        self.store.put_bytes(resolved.manifest.data, digest=resolved.manifest.digest)
        for layer in resolved.layers:
            self._check_supported(ref, layer)
        config = resolved.config

        def fetch_config() -> None:
            data = self.client.fetch_blob_bytes(ref, config, cancel=self.cancel)
            self.store.put_bytes(data, digest=config.digest)

        self._know(config)
        fetched = self.store.ingest(config.digest, fetch_config)
        self._account(ref, config, fetched=fetched, layer=False)
        diff_ids = _diff_ids(self.store.read_bytes(config.digest), resolved)
        return _ImagePlan(resolved=resolved, diff_ids=diff_ids)

    def _check_supported(self, ref: ImageRef, layer: Descriptor) -> None:
        try:
            compression = _compression(layer)
        except UnsupportedLayerError as exc:
            raise UnsupportedLayerError(f"{ref}: {exc}") from exc
        if compression == "zstd" and _zstandard() is None:
            raise UnsupportedLayerError(
                f"{ref}: layer {layer.digest} is zstd-compressed ({layer.media_type}) and this"
                " installation cannot decompress zstd; install the 'zstandard' Python package"
                " to pull it"
            )

    def add_plan(self, ref: ImageRef, plan: _ImagePlan) -> list[str]:
        """Record a resolved image; returns the layer digests that are new to this pull."""
        new: list[str] = []
        with self.lock:
            self.plans[ref] = plan
            for layer, diff_id in zip(plan.resolved.layers, plan.diff_ids, strict=True):
                if layer.digest in self.jobs:
                    continue
                self.jobs[layer.digest] = _LayerJob(
                    descriptor=layer,
                    ref=ref,
                    expected_diff_id=diff_id,
                    compression=_compression(layer),
                )
                self._know(layer, locked=True)
                new.append(layer.digest)
            self._emit(
                ProgressKind.RESOLVED,
                ref,
                plan.resolved.manifest.digest,
                len(plan.resolved.manifest.data),
                len(plan.resolved.manifest.data),
            )
        return new

    # -- layers --------------------------------------------------------------------

    def pull_layer(self, digest: str) -> None:
        job = self.jobs[digest]
        holder: list[LayerInfo] = []

        def fill() -> None:
            holder.append(
                self.client.fetch_blob(
                    job.ref,
                    job.descriptor,
                    lambda chunks: self._receive(job, chunks),
                    cancel=self.cancel,
                )
            )

        fetched = self.store.ingest(digest, fill)
        if fetched:
            info = holder[0]
        else:
            stored = self.store.layer_info(digest)
            if stored is not None:
                self.budget.add(stored.expanded_size)
                info = stored
            else:
                info = self._inspect_stored(job)
            if info.diff_id != job.expected_diff_id:
                raise _diff_id_error(job, info.diff_id)
        with self.lock:
            self.infos[digest] = info
        self._account(job.ref, job.descriptor, fetched=fetched, layer=True)

    def _receive(self, job: _LayerJob, chunks: Iterator[bytes]) -> LayerInfo:
        """One download attempt: store, hash, expand and count, all while streaming."""
        descriptor = job.descriptor
        counted = 0
        received = 0
        try:
            with self.store.writer(descriptor.digest, size=descriptor.size) as writer:

                def sink(data: bytes) -> None:
                    nonlocal received
                    if self.cancel.is_set():
                        raise OperationCancelledError("cancelled")
                    writer.write(data)
                    received += len(data)
                    self._advance(job.ref, descriptor, len(data), received)

                source = _Source(chunks, sink)
                hasher = hashlib.new(parse_digest(job.expected_diff_id)[0])
                expand_error: _ExpandError | None = None
                try:
                    for piece in _expand(source, job.compression):
                        hasher.update(piece)
                        counted += len(piece)
                        self.budget.add(len(piece))
                except _ExpandError as exc:
                    expand_error = exc
                source.drain()  # the rest still has to be hashed: a digest error comes first
                where = f"layer {descriptor.digest} of {job.ref.name}"
                writer.verify(where=where)
                if expand_error is not None:
                    raise LayerVerificationError(
                        f"{where} does not decompress as {job.compression}: {expand_error}",
                        digest=descriptor.digest,
                    ) from expand_error
                diff_id = f"{hasher.name}:{hasher.hexdigest()}"
                if diff_id != job.expected_diff_id:
                    raise _diff_id_error(job, diff_id)
                info = LayerInfo(diff_id=diff_id, expanded_size=counted)
                self.store.put_layer_info(descriptor.digest, info)
        except BaseException:
            self.budget.sub(counted)
            with self.lock:
                self.bytes_done -= received
            raise
        return info

    def _inspect_stored(self, job: _LayerJob) -> LayerInfo:
        """Expand a stored layer whose facts were not recorded (counted against the limit)."""
        counted = 0
        hasher = hashlib.new(parse_digest(job.expected_diff_id)[0])
        try:
            with self.store.open(job.descriptor.digest) as fh:
                source = _Source(_file_chunks(fh), lambda _data: None)
                for piece in _expand(source, job.compression):
                    if self.cancel.is_set():
                        raise OperationCancelledError("cancelled")
                    hasher.update(piece)
                    counted += len(piece)
                    self.budget.add(len(piece))
        except _ExpandError as exc:
            raise LayerVerificationError(
                f"stored layer {job.descriptor.digest} does not decompress as"
                f" {job.compression}: {exc}",
                digest=job.descriptor.digest,
            ) from exc
        info = LayerInfo(diff_id=f"{hasher.name}:{hasher.hexdigest()}", expanded_size=counted)
        self.store.put_layer_info(job.descriptor.digest, info)
        return info

    # -- results -----------------------------------------------------------------------

    def result(self, refs: Sequence[ImageRef]) -> PullResult:
        images: list[PulledImage] = []
        for ref in refs:
            plan = self.plans[ref]
            resolved = plan.resolved
            for layer, diff_id in zip(resolved.layers, plan.diff_ids, strict=True):
                actual = self.infos[layer.digest].diff_id
                if actual != diff_id:  # same layer blob, another image's config disagrees
                    raise _diff_id_error(
                        _LayerJob(layer, ref, diff_id, _compression(layer)), actual
                    )
            images.append(
                PulledImage(
                    reference=ref,
                    manifest_digest=resolved.manifest.digest,
                    media_type=resolved.manifest.media_type,
                    index_digest=resolved.index.digest if resolved.index else None,
                    index_media_type=resolved.index.media_type if resolved.index else None,
                    platform=resolved.platform,
                    config_digest=resolved.config.digest,
                    layer_digests=tuple(layer.digest for layer in resolved.layers),
                    diff_ids=plan.diff_ids,
                    compressed_bytes=resolved.config.size
                    + sum(layer.size for layer in resolved.layers),
                    expanded_bytes=sum(
                        self.infos[layer.digest].expanded_size for layer in resolved.layers
                    ),
                )
            )
        return PullResult(
            images=tuple(images),
            content_bytes=sum(info.expanded_size for info in self.infos.values()),
            fetched_bytes=self.fetched_bytes,
            reused_bytes=self.reused_bytes,
            blob_digests=tuple(sorted({d for image in images for d in image.blob_digests})),
        )


def _diff_id_error(job: _LayerJob, actual: str) -> LayerVerificationError:
    return LayerVerificationError(
        f"layer {job.descriptor.digest} of {job.ref} expands to content {actual}, but the image"
        f" config's rootfs.diff_ids says {job.expected_diff_id}; the image is corrupt",
        digest=job.descriptor.digest,
    )


def pull_images(
    refs: Sequence[ImageRef],
    *,
    client: RegistryClient,
    store: BlobStore,
    platform: Platform = DEFAULT_PLATFORM,
    limit_bytes: int | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    on_progress: ProgressCallback | None = None,
) -> PullResult:
    """Pull `refs` into `store`; every blob verified, shared blobs fetched once.

    Raises SizeLimitExceededError when the expanded layers of all images pass
    `limit_bytes`; TemporaryError when the registry stayed unreachable or
    overloaded after retries; other PermanentError subclasses (NotFoundError,
    AuthenticationError, DigestMismatchError, LayerVerificationError, ...)
    when retrying cannot help. On any error nothing partial is left in the
    store: blobs are either complete and verified, or absent.
    """
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    unique = list(dict.fromkeys(refs))
    pull = _Pull(
        client=client,
        store=store,
        platform=platform,
        limit_bytes=limit_bytes,
        on_progress=on_progress,
        images_total=len(unique),
    )
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gitsync-pull") as pool:
        futures: dict[Future[Any], ImageRef | None] = {
            pool.submit(pull.resolve, ref): ref for ref in unique
        }
        pending_layers: list[str] = []
        resolving = len(futures)
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    ref = futures.pop(future)
                    value = future.result()  # re-raises the worker's error
                    if ref is not None:
                        pending_layers.extend(pull.add_plan(ref, value))
                        resolving -= 1
                if resolving == 0 and pending_layers:
                    # Largest first: the biggest layer bounds the pull's duration, so it
                    # must not start last (resolving is a few small requests per image).
                    pending_layers.sort(key=lambda d: pull.jobs[d].descriptor.size, reverse=True)
                    for digest in pending_layers:
                        futures[pool.submit(pull.pull_layer, digest)] = None
                    pending_layers = []
        except BaseException:
            pull.cancel.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise
    return pull.result(unique)

"""What the `/v2/` mirror may serve now: the images of serving caches' snapshots, by path.

Why apart from the routing in `mirror`: the view is state of its own, read
from the state store and kept until a serving cache or its snapshot changes
(its key), while routing answers one request at a time from it.

Serving caches are the Ready ones and the Updating ones, whose current
snapshot is still the previous one: a rebuild (a moved tag, a changed spec)
keeps serving the old content until the new snapshot commits, as the
provider promises. That is safe because a snapshot never changes once
committed (the new one is another row, swapped in by one transaction that
also makes the cache Ready, which changes this view's key), its blobs stay
referenced, so `gc` keeps them, until that swap, and the mirror still hashes
everything it serves: the old content is exactly what the cache held while it
was Ready. A cache Pending (nothing built), Failed or UpdateFailed, or one
whose snapshot was found damaged, serves nothing.

Each entry is one image of one serving cache's current snapshot, reachable under the paths
a client may use (`repository`, `registry/repository`, and the short name of
a Docker Hub official image), with what the mirror answers from (digests and
media types, the blobs a pull may fetch) and what observations record (the
canonical reference, and the image's bytes: its blobs' sizes as the snapshot
recorded them, else the stored files', summed once per view, not per request).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.model import CacheStatus, ObservedCache
from gitsync.providers.local.blobs import BlobNotFoundError
from gitsync.providers.local.provider import LocalProvider

__all__ = ["Entry", "MirrorView", "View", "serving"]

log = logging.getLogger("gitsync.providers.local.mirror")  # the mirror's: one name to grep

_DOCKER_HUB: Final = imageref.DEFAULT_REGISTRY
_OFFICIAL: Final = "library/"

ViewKey = tuple[tuple[str, str | None, str, int, str], ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One image of a serving cache's snapshot, as the mirror serves it."""

    cache: ObservedCache
    registry: str
    repository: str
    reference: str  # canonical, as observations name it: registry/repository:tag or @digest
    image_bytes: int | None  # its blobs' bytes (what a pull moves), None if one is unknown
    tag: str | None  # None when the image was pinned by digest (then served by digest only)
    top_digest: str  # what the image's reference resolves to: the index, else the manifest
    top_media_type: str
    manifest_digest: str
    manifest_media_type: str
    index_digest: str | None
    children: frozenset[str]  # every manifest digest the upstream index lists
    blobs: frozenset[str]


@dataclass(frozen=True, slots=True)
class View:
    """What is servable now, rebuilt when a serving cache or its snapshot changes."""

    key: ViewKey
    by_path: Mapping[str, tuple[Entry, ...]]


class MirrorView:
    """The current `View` over `provider`'s serving caches; thread-safe."""

    def __init__(self, provider: LocalProvider) -> None:
        self._provider = provider
        self._lock = threading.Lock()
        self._view: View | None = None

    def current(self) -> View:
        """What is servable now: the view of the serving caches, rebuilt if they changed."""
        caches = [c for c in self._provider.state.caches() if serving(c)]
        key = tuple(
            (
                c.cache_id,
                c.snapshot_id,
                c.name,
                c.image_cache_size_gib,
                c.created_at.isoformat() if c.created_at else "",
            )
            for c in caches
        )
        with self._lock:
            if self._view is not None and self._view.key == key:
                return self._view
        view = self._build(key, caches)
        with self._lock:
            self._view = view
        return view

    def _build(self, key: ViewKey, caches: list[ObservedCache]) -> View:
        by_path: dict[str, list[Entry]] = {}
        # Each image's bytes, once per view: recorded sizes, else the stored file's.
        recorded = self._provider.state.snapshot_blobs(
            [c.snapshot_id for c in caches if c.snapshot_id is not None]
        )
        sizes = {digest: size for blobs in recorded.values() for digest, size in blobs}
        for cache in caches:
            if cache.snapshot_id is None:
                continue
            snapshot = self._provider.state.snapshot(cache.snapshot_id)
            if snapshot is None:
                continue  # replaced since caches() was read; the next request rebuilds
            for record in snapshot.images:
                entry = self._entry(cache, record, sizes)
                if entry is None:
                    continue
                for path in paths(entry.registry, entry.repository):
                    by_path.setdefault(path, []).append(entry)
        return View(key=key, by_path={p: tuple(e) for p, e in by_path.items()})

    def _entry(
        self, cache: ObservedCache, record: Mapping[str, object], sizes: dict[str, int | None]
    ) -> Entry | None:
        try:
            ref = imageref.parse(str(record["reference"]))
            manifest_digest = str(record["manifestDigest"])
            manifest_type = str(record["mediaType"])
            config = str(record["configDigest"])
            listed = record["layers"]
            if not isinstance(listed, list):
                raise TypeError(f"'layers' is {type(listed).__name__}, not a list")
            layers = [str(digest) for digest in listed]
        except (KeyError, TypeError, ImageRefError) as exc:
            log.warning("cache %s: snapshot record not servable: %s", cache.name, exc)
            return None
        index_digest = record.get("indexDigest")
        index_type = record.get("indexMediaType")
        children: frozenset[str] = frozenset()
        if isinstance(index_digest, str) and isinstance(index_type, str):
            children = self._children(index_digest)
            top, top_type = index_digest, index_type
        else:
            index_digest = None
            top, top_type = manifest_digest, manifest_type
        blobs = {manifest_digest, config, *layers}
        if index_digest is not None:
            blobs.add(index_digest)
        return Entry(
            cache=cache,
            registry=ref.registry,
            repository=ref.repository,
            reference=str(ref),
            image_bytes=self._image_bytes(blobs, sizes),
            tag=ref.tag if ref.digest is None else None,
            top_digest=top,
            top_media_type=top_type,
            manifest_digest=manifest_digest,
            manifest_media_type=manifest_type,
            index_digest=index_digest,
            children=children,
            blobs=frozenset(blobs),
        )

    def _image_bytes(self, blobs: Iterable[str], sizes: dict[str, int | None]) -> int | None:
        total = 0
        for digest in blobs:
            size = sizes.get(digest)
            if size is None:
                try:
                    size = sizes[digest] = self._provider.blobs.size(digest)
                except BlobNotFoundError:
                    return None
            total += size
        return total

    def _children(self, index_digest: str) -> frozenset[str]:
        """The manifests an index lists, to tell another platform's manifest from a stranger."""
        try:
            document = json.loads(self._provider.blobs.read_bytes(index_digest))
            return frozenset(str(m["digest"]) for m in document["manifests"])
        except (BlobNotFoundError, ValueError, KeyError, TypeError):
            return frozenset()


def serving(cache: ObservedCache) -> bool:
    """Ready, or Updating with its previous snapshot intact (see the module docstring)."""
    if cache.status is CacheStatus.READY:
        return True
    return (
        cache.status is CacheStatus.UPDATING
        and cache.snapshot_id is not None
        and cache.snapshot_problem is None
    )


def paths(registry: str, repository: str) -> list[str]:
    """Where a client may ask for an image of `registry/repository` on the mirror."""
    found = [repository, f"{registry}/{repository}"]
    official = repository.startswith(_OFFICIAL) and repository.count("/") == 1
    if registry == _DOCKER_HUB and official:
        found.append(repository[len(_OFFICIAL) :])
    return found

"""Snapshots are checked, not assumed: the local backend's per-pass look at its blobs.

A Ready cache is only as good as the blobs its snapshot references, and
anything can happen to files on a disk: a byte flipped, a file truncated or
deleted by hand. Before this check, gitsync kept such a cache Ready and only
`export` noticed. Now every `observe` (each daemon pass, `gitsync apply`,
`gitsync status`) makes sure every blob a Ready snapshot references exists
with the size recorded when the snapshot committed: one `stat` per distinct
blob, no reading. A wrong byte with the right size is the scrub's to find
(`scrub`), and the mirror and `export` hash what they serve as they go.

What a problem leads to is `damage`'s business (`LocalProvider.report_damage`
for the others who find one): the damaged file is moved aside, the caches that
use it go Failed with a `SnapshotDamaged` Warning event, and the planner
rebuilds them, which fetches only what is no longer in the store.

This module only finds problems; it keeps, per snapshot (snapshots never
change), the blobs to look at, so a pass with nothing new costs the stats.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from gitsync.model import CacheStatus, ObservedCache, SnapshotCheck, SnapshotVerdict
from gitsync.providers.local.blobs import BlobStore

__all__ = ["BlobProblem", "SnapshotBlobCheck", "image_of", "verdict_for"]


@dataclass(frozen=True, slots=True)
class BlobProblem:
    """One blob of a snapshot that cannot serve: gone, or not the bytes recorded."""

    digest: str
    result: SnapshotCheck  # MISSING or DAMAGED
    detail: str  # "is missing from the store", "has 12 bytes, not the 456 recorded", ...
    present: bool  # a file is there (and must be moved aside)


@dataclass(frozen=True, slots=True)
class _Blob:
    digest: str
    path: str
    size: int | None  # None: recorded before sizes were (schema 2), presence only


class SnapshotBlobCheck:
    """Stats every blob the Ready caches' snapshots reference; see the module docstring."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        load: Callable[[Collection[str]], Mapping[str, Sequence[tuple[str, int | None]]]],
    ) -> None:
        self._blobs = blobs
        self._load = load
        self._by_snapshot: dict[str, tuple[_Blob, ...]] = {}
        self._seen: tuple[ObservedCache, ...] | None = None
        self._unique: tuple[_Blob, ...] = ()
        self._ready: tuple[str, ...] = ()

    def check(self, caches: tuple[ObservedCache, ...]) -> tuple[int, dict[str, list[BlobProblem]]]:
        """(snapshots checked, problems by snapshot id) for the Ready caches in `caches`."""
        if caches is not self._seen:
            self._prepare(caches)
            self._seen = caches
        bad: dict[str, BlobProblem] = {}
        for blob in self._unique:
            problem = _look(blob)
            if problem is not None:
                bad[blob.digest] = problem
        found: dict[str, list[BlobProblem]] = {}
        if bad:
            for snapshot_id in self._ready:
                hits = [bad[b.digest] for b in self._by_snapshot[snapshot_id] if b.digest in bad]
                if hits:
                    found[snapshot_id] = hits
        return len(self._ready), found

    def _prepare(self, caches: tuple[ObservedCache, ...]) -> None:
        ready = tuple(
            sorted(
                {c.snapshot_id for c in caches if c.status is CacheStatus.READY and c.snapshot_id}
            )
        )
        for gone in self._by_snapshot.keys() - set(ready):
            del self._by_snapshot[gone]
        new = [s for s in ready if s not in self._by_snapshot]
        if new:
            for snapshot_id, rows in self._load(new).items():
                self._by_snapshot[snapshot_id] = tuple(
                    _Blob(digest=d, path=str(self._blobs.path(d)), size=size) for d, size in rows
                )
        unique: dict[str, _Blob] = {}
        for snapshot_id in ready:
            for blob in self._by_snapshot.get(snapshot_id, ()):
                known = unique.get(blob.digest)
                if known is None or known.size is None:
                    unique[blob.digest] = blob
        self._ready = tuple(s for s in ready if s in self._by_snapshot)
        self._unique = tuple(unique.values())


def _look(blob: _Blob) -> BlobProblem | None:
    try:
        size = os.stat(blob.path).st_size
    except FileNotFoundError:
        return BlobProblem(
            digest=blob.digest,
            result=SnapshotCheck.MISSING,
            detail="is missing from the store",
            present=False,
        )
    if blob.size is not None and size != blob.size:
        return BlobProblem(
            digest=blob.digest,
            result=SnapshotCheck.DAMAGED,
            detail=f"has {size} bytes, not the {blob.size} recorded",
            present=True,
        )
    return None


def image_of(images: Sequence[Mapping[str, object]], digest: str) -> str:
    """The image (as written in the spec) of a snapshot that uses `digest`, for messages."""
    for record in images:
        used = {
            record.get("indexDigest"),
            record.get("manifestDigest"),
            record.get("configDigest"),
        }
        layers = record.get("layers")
        if digest in used or (isinstance(layers, list) and digest in layers):
            return str(record.get("image") or record.get("reference") or "?")
    return "?"


def verdict_for(
    snapshot_id: str, problems: Sequence[BlobProblem], *, image: str
) -> SnapshotVerdict:
    """The snapshot's verdict: missing if a blob is gone, else damaged; names the first blob."""
    first = sorted(problems, key=lambda p: (p.result is not SnapshotCheck.MISSING, p.digest))[0]
    more = f" (and {len(problems) - 1} more blobs)" if len(problems) > 1 else ""
    return SnapshotVerdict(
        snapshot_id=snapshot_id,
        result=first.result,
        detail=f"is damaged: blob {first.digest} of image {image} {first.detail}{more}",
    )

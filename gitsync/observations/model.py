"""The records of observed lookups, and the aggregate `gitsync suggest` reads.

Pure data, no I/O. A `Lookup` is one pull of one image, as a consumer made
it: the registry mirror saw a manifest request, or the pod observer saw a pod
start. `Evidence` is what a window of lookups says, aggregated per image and
per cache, plus the sets of images that started together (one pod, or one
client's burst of pulls through the mirror), because a pod uses one cache and
its images belong in the same one.

Per-image detail lives here and in the store, never in a metric label.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CacheUse",
    "Evidence",
    "ImageEvidence",
    "Lookup",
    "LookupResult",
    "LookupSource",
    "StartGroup",
]


class LookupResult(enum.StrEnum):
    HIT = "hit"  # served from a cache that holds this exact reference
    PARTIAL = "partial"  # a cache holds the repository under another tag (name-only match)
    MISS = "miss"  # no cache holds the repository


class LookupSource(enum.StrEnum):
    MIRROR = "mirror"  # a manifest request to the daemon's /v2/ mirror (local backend)
    POD = "pod"  # a pod start seen by the pod observer (kubernetes backend)


@dataclass(frozen=True, slots=True)
class Lookup:
    """One pull of one image by a consumer."""

    image: str  # canonical reference (`gitsync.imageref.normalize`), tag or digest
    result: LookupResult
    at: float  # Unix seconds
    source: LookupSource
    cache: str | None = None  # the cache that served it (hit, partial); None on a miss
    seconds: float | None = None  # pod start-up or mirror serve seconds, when known
    group: str | None = None  # images started together share it (pod uid, client burst)
    image_bytes: int | None = None  # the image's blob bytes (what a pull moves), when known


@dataclass(frozen=True, slots=True)
class ImageEvidence:
    """What the window says about one image reference."""

    image: str
    hits: int = 0
    partials: int = 0
    misses: int = 0
    pods: int = 0  # distinct start groups (pods, or mirror bursts) that pulled it
    miss_seconds: float = 0.0  # summed over the misses whose seconds are known
    timed_misses: int = 0  # how many misses had seconds
    hit_seconds: float = 0.0
    timed_hits: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    caches: tuple[str, ...] = ()  # caches that served it (hits and partials), sorted
    image_bytes: int | None = None  # the latest size a lookup reported, when any did

    @property
    def mean_miss_seconds(self) -> float | None:
        return self.miss_seconds / self.timed_misses if self.timed_misses else None

    @property
    def mean_hit_seconds(self) -> float | None:
        return self.hit_seconds / self.timed_hits if self.timed_hits else None


@dataclass(frozen=True, slots=True)
class CacheUse:
    """How one cache was used in the window."""

    cache: str
    hits: int = 0
    partials: int = 0
    last_hit_at: float | None = None


@dataclass(frozen=True, slots=True)
class StartGroup:
    """A set of images seen starting together, and how many times that set was seen."""

    images: frozenset[str]
    count: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """Lookups from `since` to `until` (Unix seconds), aggregated."""

    since: float
    until: float
    images: tuple[ImageEvidence, ...] = ()
    caches: Mapping[str, CacheUse] = field(default_factory=dict)
    groups: tuple[StartGroup, ...] = ()
    lookups: int = 0  # how many lookups the window holds
    first_at: float | None = None  # the oldest lookup kept at all (how far back the store sees)

"""How many pull seconds a cache hit saved: what a miss of the same image would have taken.

A hit's value is the pull it spared. The pull that did not happen cannot be
timed, so it is estimated from the pulls that did happen:

* the estimate for an image is the mean of its observed miss seconds (pod
  start-up seconds of pods that missed; seeded from an `Evidence` window,
  then updated as misses are observed);
* an image that never missed with a known time is estimated from its size:
  its bytes ÷ the pull throughput (`PriceTable.pull_bytes_per_second`), when
  a lookup reported its bytes (mirror hits do); else 0, so an unknown saving
  is never invented;
* a hit saved `estimate − the hit's own seconds`, never less than 0 (a hit
  whose seconds are unknown is taken as instantaneous). Partials and misses
  saved nothing.

The mirror cannot see how long an upstream pull took (it answered 404 in
microseconds), so its misses carry no seconds and never drag the mean to 0.

Pure (no I/O) and thread-safe: the request path and the API may call it.
Memory is bounded by `max_images` (the least recently seen beyond it are
forgotten).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from gitsync.observations.model import Evidence, Lookup, LookupResult

__all__ = ["DEFAULT_MAX_IMAGES", "SavingsEstimator"]

DEFAULT_MAX_IMAGES: Final = 100_000


@dataclass(slots=True)
class _Seen:
    """What is known of one image; mutable, under the estimator's lock."""

    miss_seconds: float = 0.0
    timed_misses: int = 0
    image_bytes: int | None = None


class SavingsEstimator:
    """Estimated miss seconds per image, and the seconds each hit saved."""

    def __init__(
        self,
        *,
        pull_bytes_per_second: float,
        evidence: Evidence | None = None,
        max_images: int = DEFAULT_MAX_IMAGES,
    ) -> None:
        if pull_bytes_per_second <= 0 or max_images < 1:
            raise ValueError("pull_bytes_per_second and max_images must be positive")
        self._throughput = pull_bytes_per_second
        self._max_images = max_images
        self._lock = threading.Lock()
        self._images: dict[str, _Seen] = {}  # insertion order = recency
        for image in evidence.images if evidence is not None else ():
            self._images[image.image] = _Seen(
                image.miss_seconds, image.timed_misses, image.image_bytes
            )
        self._trim()

    def observe(self, lookup: Lookup) -> None:
        """Learn from a lookup: a timed miss moves the mean, a reported size is kept."""
        timed_miss = lookup.result is LookupResult.MISS and lookup.seconds is not None
        if not timed_miss and lookup.image_bytes is None:
            return
        with self._lock:
            known = self._images.pop(lookup.image, None) or _Seen()
            if timed_miss and lookup.seconds is not None:
                known.miss_seconds += max(0.0, lookup.seconds)
                known.timed_misses += 1
            if lookup.image_bytes is not None:
                known.image_bytes = lookup.image_bytes
            self._images[lookup.image] = known  # most recent last
            self._trim()

    def miss_seconds(self, image: str, *, image_bytes: int | None = None) -> float:
        """The estimated seconds of a pull of `image` that missed every cache."""
        with self._lock:
            known = self._images.get(image) or _Seen()
            total, timed, size = known.miss_seconds, known.timed_misses, known.image_bytes
        if timed:
            return total / timed
        size = image_bytes if image_bytes is not None else size
        if size is None:
            return 0.0
        return max(0, size) / self._throughput

    def saved_seconds(self, lookup: Lookup) -> float:
        """Learn from `lookup` (as `observe`), then the seconds it saved: 0 unless a hit.

        One call per lookup as it is recorded, so the estimate follows the misses.
        """
        self.observe(lookup)
        if lookup.result is not LookupResult.HIT:
            return 0.0
        estimate = self.miss_seconds(lookup.image, image_bytes=lookup.image_bytes)
        return max(0.0, estimate - max(0.0, lookup.seconds or 0.0))

    def _trim(self) -> None:
        while len(self._images) > self._max_images:
            del self._images[next(iter(self._images))]

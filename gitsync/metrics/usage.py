"""How caches are used: lookups by result, time to start or serve, pull seconds saved.

Fed only by real consumers (the match API, the registry mirror, exports, the
pod observer), and never labelled per pod or per image. The two per-cache
counters render their own text (`gitsync.metrics.exposition`), since a cache
count in the thousands would make prometheus_client's rendering the scrape's
cost. The pods' disk use kept here is read by `StateExposition` for the cost
series.
"""

from __future__ import annotations

import math
import threading

from prometheus_client import CollectorRegistry, Histogram

from gitsync.metrics.exposition import TextCollector, family_header, label_set, sample_value

_STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
LOOKUP_RESULTS = ("hit", "partial", "miss")


class LookupCounter(TextCollector):
    """`gitsync_cache_lookups_total{cache,result}`: one series per cache and result."""

    FAMILIES = (
        ("gitsync_cache_lookups", "counter", 'Cache lookups by result; cache="" on a miss.'),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], tuple[str, int]] = {}  # key -> (prefix, count)

    def inc(self, *, cache: str, result: str) -> None:
        key = (cache, result)
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                prefix = "gitsync_cache_lookups_total" + label_set(cache=cache, result=result)
                entry = (prefix, 0)
            self._counts[key] = (entry[0], entry[1] + 1)

    def render(self) -> bytes:
        with self._lock:
            lines = [f"{prefix} {count}.0\n" for prefix, count in self._counts.values()]
        return (family_header(*self.FAMILIES[0]) + "".join(lines)).encode()


class SavedSecondsCounter(TextCollector):
    """`gitsync_cache_saved_seconds_total{cache}`: pull seconds a cache's hits saved."""

    FAMILIES = (
        (
            "gitsync_cache_saved_seconds",
            "counter",
            "Pull seconds the cache's hits saved: per hit, the image's estimated miss seconds"
            " minus the hit's own, never below 0 (docs/architecture.md says how misses are"
            " estimated).",
        ),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, tuple[str, float]] = {}  # cache -> (prefix, seconds)

    def add(self, *, cache: str, seconds: float) -> None:
        with self._lock:
            entry = self._sums.get(cache) or self._start(cache)
            self._sums[cache] = (entry[0], entry[1] + seconds)

    def touch(self, *, cache: str) -> None:
        """Expose `cache`'s series, at 0 if it saved nothing yet."""
        with self._lock:
            if cache not in self._sums:
                self._sums[cache] = self._start(cache)

    @staticmethod
    def _start(cache: str) -> tuple[str, float]:
        return ("gitsync_cache_saved_seconds_total" + label_set(cache=cache), 0.0)

    def render(self) -> bytes:
        with self._lock:
            lines = [f"{prefix} {sample_value(total)}\n" for prefix, total in self._sums.values()]
        return (family_header(*self.FAMILIES[0]) + "".join(lines)).encode()


class UsageMetrics:
    """How caches are used: lookups by result, time to start (pods) or serve (local), and
    the pull seconds hits saved.

    Fed only by real consumers: the match API, the registry mirror, exports,
    and the pod observer. Never a label per pod or per image.
    """

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.lookups = LookupCounter()
        registry.register(self.lookups)
        self.saved = SavedSecondsCounter()
        registry.register(self.saved)
        self.startup = Histogram(
            "gitsync_startup_seconds",
            "Pod start (kubernetes) or image materialisation (local), by lookup result.",
            ["result"],
            buckets=_STARTUP_BUCKETS,
            registry=registry,
        )
        for result in LOOKUP_RESULTS:
            self.startup.labels(result=result)
        # Disk use by pods (kubernetes observer): read by StateExposition for the cost series.
        self._lock = threading.Lock()
        self._pods_running: dict[str, int] = {}
        self._disk_gib_hours: dict[str, float] = {}

    def set_pods_running(self, cache: str, count: int) -> None:
        """How many running pods use `cache` now (each pays a disk of its size)."""
        with self._lock:
            if count > 0:
                self._pods_running[cache] = count
            else:
                self._pods_running.pop(cache, None)

    def add_disk_hours(self, cache: str, *, size_gib: int, hours: float) -> None:
        """A pod that used `cache` ran for `hours` with a disk of `size_gib`."""
        with self._lock:
            self._disk_gib_hours[cache] = self._disk_gib_hours.get(cache, 0.0) + size_gib * hours

    def disk_usage(self) -> tuple[dict[str, int], dict[str, float]]:
        with self._lock:
            return dict(self._pods_running), dict(self._disk_gib_hours)

    def record(self, *, cache: str | None, result: str, seconds: float | None = None) -> None:
        if result not in LOOKUP_RESULTS:
            raise ValueError(f"lookup result {result!r} is not one of {', '.join(LOOKUP_RESULTS)}")
        self.lookups.inc(cache=cache or "", result=result)
        if cache:
            # The cache's saved-seconds series starts at 0 with its first lookup, so that
            # increase() also counts the first seconds it saves, and a cache pods use but
            # that saves nothing shows 0 rather than no series.
            self.saved.touch(cache=cache)
        if seconds is not None:
            self.startup.labels(result=result).observe(seconds)

    def record_saved(self, *, cache: str, seconds: float) -> None:
        """Add the pull seconds a hit on `cache` saved; ≤ 0 (or NaN, infinite) adds nothing."""
        if not cache:
            raise ValueError("saved seconds need the cache that saved them")
        if math.isfinite(seconds) and seconds > 0:
            self.saved.add(cache=cache, seconds=seconds)

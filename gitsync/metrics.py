"""Prometheus metrics of the metric contract in DESIGN.md, on an injected registry.

Two kinds, as in prometheus/client_python's own advice:

- Event metrics (fetches, passes, durations) are ordinary counters, gauges and
  histograms, updated by the daemon as things happen.
- State that mirrors something external (the caches a provider holds, the
  revision in force) comes from `StateCollector`, computed at scrape time from
  the daemon's latest view. A cache that is gone simply is not yielded, so its
  series vanish instead of going stale.

The registry is always passed in, so tests use a fresh `CollectorRegistry()`.
Labels are `cache` and `provider` (plus the few enumerations the contract
names); never a label per image tag or per pod.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gitsync import pricing
from gitsync.model import CacheSpec, CacheStatus, ObservedCache

GIB = 1024**3

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class StateView:
    """The daemon's latest knowledge: revision in force, desired caches, provider's caches."""

    applied_revision: str | None
    desired: Sequence[CacheSpec]
    observed: Sequence[ObservedCache]
    controller_id: str


class DaemonMetrics:
    """Event metrics the daemon updates as fetches and passes happen."""

    def __init__(self, *, registry: CollectorRegistry, version: str) -> None:
        info = Gauge(
            "gitsync_build_info",
            "Always 1; the version label names the build.",
            ["version"],
            registry=registry,
        )
        info.labels(version=version).set(1)
        self.fetch_success = Gauge(
            "gitsync_source_last_fetch_success_timestamp_seconds",
            "Unix time of the last successful fetch of the source.",
            registry=registry,
        )
        self.source_interval = Gauge(
            "gitsync_source_interval_seconds",
            "The poll interval (--interval); GitSyncSourceStale fires after 3 of them.",
            registry=registry,
        )
        self.fetch_duration = Histogram(
            "gitsync_source_fetch_duration_seconds",
            "Time to fetch the source.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.fetch_errors = Counter(
            "gitsync_source_fetch_errors",
            "Fetches of the source that failed.",
            registry=registry,
        )
        self.spec_valid = Gauge(
            "gitsync_spec_valid",
            "1 if the newest fetched revision validates, else 0.",
            registry=registry,
        )
        self.spec_diagnostics = Gauge(
            "gitsync_spec_diagnostics",
            "Diagnostics in the newest fetched revision, by severity.",
            ["severity"],
            registry=registry,
        )
        for severity in ("error", "warning", "info"):
            self.spec_diagnostics.labels(severity=severity).set(0)
        self.reconcile_duration = Histogram(
            "gitsync_reconcile_duration_seconds",
            "Time of one reconcile pass.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.reconciles = Counter(
            "gitsync_reconciles",
            "Reconcile passes, by result.",
            ["result"],
            registry=registry,
        )
        for result in ("success", "error"):
            self.reconciles.labels(result=result)
        self.last_success = Gauge(
            "gitsync_last_reconcile_success_timestamp_seconds",
            "Unix time of the last pass that applied without error.",
            registry=registry,
        )

    def record_diagnostics(self, *, valid: bool, counts: dict[str, int]) -> None:
        self.spec_valid.set(1 if valid else 0)
        for severity in ("error", "warning", "info"):
            self.spec_diagnostics.labels(severity=severity).set(counts.get(severity, 0))


_STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
LOOKUP_RESULTS = ("hit", "partial", "miss")


class UsageMetrics:
    """How caches are used: lookups by result, and time to start (pods) or serve (local).

    Fed only by real consumers: the match API, the registry mirror, exports,
    and the pod observer. Never a label per pod or per image.
    """

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "gitsync_cache_lookups",
            'Cache lookups by result; cache="" on a miss.',
            ["cache", "result"],
            registry=registry,
        )
        self.startup = Histogram(
            "gitsync_startup_seconds",
            "Pod start (kubernetes) or image materialisation (local), by lookup result.",
            ["result"],
            buckets=_STARTUP_BUCKETS,
            registry=registry,
        )
        for result in LOOKUP_RESULTS:
            self.startup.labels(result=result)
        # Disk use by pods (kubernetes observer): read by StateCollector for the cost series.
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
        self.lookups.labels(cache=cache or "", result=result).inc()
        if seconds is not None:
            self.startup.labels(result=result).observe(seconds)


class StateCollector(Collector):
    """Per-cache series computed at scrape time from the daemon's latest `StateView`."""

    def __init__(
        self,
        *,
        provider: str,
        view: Callable[[], StateView],
        prices: pricing.PriceTable,
        usage: UsageMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._view = view
        self._prices = prices
        self._usage = usage
        self._clock = clock

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(())  # dynamic: registering must not call collect() on a half-built daemon

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        view = self._view()
        revision = GaugeMetricFamily(
            "gitsync_applied_revision_info", "1 for the revision in force.", labels=["revision"]
        )
        if view.applied_revision:
            revision.add_metric([view.applied_revision], 1)
        yield revision
        yield from self._cache_families(view)
        yield from self._desired_families(view)
        priced = GaugeMetricFamily(
            "gitsync_pricing_info",
            "1; the currency label names the price table's currency.",
            labels=["currency"],
        )
        priced.add_metric([self._prices.currency], 1)
        yield priced

    def _cache_families(self, view: StateView) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:

        info = GaugeMetricFamily(
            "gitsync_cache_info",
            "1 per cache the provider holds.",
            labels=["cache", "provider", "cache_id", "status"],
        )
        expiry = _cache_gauge("gitsync_cache_expiry_timestamp_seconds", "When the cache expires.")
        created = _cache_gauge("gitsync_cache_created_timestamp_seconds", "When it was created.")
        matched = _cache_gauge(
            "gitsync_cache_last_matched_timestamp_seconds", "When a pod last used the cache."
        )
        capacity = _cache_gauge("gitsync_cache_capacity_bytes", "imageCacheSize in bytes.")
        content = _cache_gauge("gitsync_cache_content_bytes", "Expanded size of its images.")
        images = _cache_gauge("gitsync_cache_images", "Number of images in the cache.")
        cost = GaugeMetricFamily(
            "gitsync_cache_cost_per_hour",
            "Standing cost per hour, by component, in gitsync_pricing_info's currency.",
            labels=["cache", "provider", "component"],
        )
        accrued = CounterMetricFamily(
            "gitsync_cost",
            "Money spent so far, by component (creation, snapshot, disk), estimated.",
            labels=["cache", "provider", "component"],
        )
        running, disk_gib_hours = self._usage.disk_usage() if self._usage else ({}, {})
        now = self._clock()
        owned = [c for c in view.observed if c.owner == view.controller_id]
        for cache in view.observed:
            info.add_metric([cache.name, self._provider, cache.cache_id, cache.status.value], 1)
        for cache in owned:
            labels = [cache.name, self._provider]
            if cache.expires_at is not None:
                expiry.add_metric(labels, _epoch(cache.expires_at))
            if cache.created_at is not None:
                created.add_metric(labels, _epoch(cache.created_at))
            if cache.last_matched_at is not None:
                matched.add_metric(labels, _epoch(cache.last_matched_at))
            capacity.add_metric(labels, cache.image_cache_size_gib * GIB)
            if cache.content_bytes is not None:
                content.add_metric(labels, cache.content_bytes)
            images.add_metric(labels, len(cache.images))
            hourly = pricing.snapshot_cost_per_hour(
                size_gib=cache.image_cache_size_gib,
                content_bytes=cache.content_bytes,
                prices=self._prices,
            )
            cost.add_metric([*labels, "snapshot"], hourly)
            pods = running.get(cache.name, 0)
            disk_hourly = pricing.pod_disk_cost(
                cache.image_cache_size_gib, 1.0, prices=self._prices
            )
            cost.add_metric([*labels, "disk"], pods * disk_hourly)
            if cache.created_at is not None and cache.snapshot_id is not None:
                hours = max(0.0, now - cache.created_at.timestamp()) / 3600
                accrued.add_metric([*labels, "snapshot"], hourly * hours)
                accrued.add_metric(
                    [*labels, "creation"],
                    pricing.creation_cost(
                        size_gib=cache.image_cache_size_gib,
                        content_bytes=cache.content_bytes,
                        prices=self._prices,
                    ),
                )
            accrued.add_metric(
                [*labels, "disk"],
                disk_gib_hours.get(cache.name, 0.0) * self._prices.disk_per_gib_hour,
            )
        yield from (info, expiry, created, matched, capacity, content, images, cost, accrued)

    def _desired_families(self, view: StateView) -> Iterator[GaugeMetricFamily]:
        owned = [c for c in view.observed if c.owner == view.controller_id]
        desired = _cache_gauge("gitsync_cache_desired", "1 per cache in the applied revision.")
        ready = _cache_gauge("gitsync_cache_ready", "1 if the desired cache is Ready, else 0.")
        by_name = {c.name: c for c in owned}
        for spec in view.desired:
            labels = [spec.name, self._provider]
            desired.add_metric(labels, 1)
            held = by_name.get(spec.name)
            ready.add_metric(labels, 1 if held and held.status is CacheStatus.READY else 0)
        yield desired
        yield ready


def _cache_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["cache", "provider"])


def _epoch(moment: datetime) -> float:
    return moment.timestamp()

"""Prometheus metrics of the metric contract in docs/architecture.md, on an injected registry.

Two kinds, as in prometheus/client_python's own advice:

- Event metrics (fetches, passes, durations) are ordinary counters, gauges and
  histograms, updated by the daemon as things happen.
- State that mirrors something external (the caches a provider holds, the
  revision in force) comes from `StateExposition`, computed at scrape time from
  the daemon's latest view. A cache that is gone simply is not rendered, so its
  series vanish instead of going stale.

The registry is always passed in, so tests use a fresh `CollectorRegistry()`.
Labels are `cache` and `provider` (plus the few enumerations the contract
names); never a label per image tag or per pod.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gitsync import pricing, webhooks
from gitsync.model import (
    CacheSpec,
    CacheStatus,
    ObservedCache,
    SnapshotCheck,
    SnapshotCheckCounts,
)
from gitsync.suggest.model import SuggestionKind
from gitsync.units import GIB

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
            "gitsync_source_fetch_errors_total",  # the exposed name; the client handles the suffix
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
            "gitsync_reconciles_total",
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
        self.snapshot_checks = Counter(
            "gitsync_snapshot_checks_total",
            "Snapshots behind Ready caches looked up, by result: ok, damaged (there but not"
            " usable), missing (gone).",
            ["result"],
            registry=registry,
        )
        for check in SnapshotCheck:
            self.snapshot_checks.labels(result=check.value)
        self._snapshot_totals = SnapshotCheckCounts()
        self.scrub_bytes = Counter(
            "gitsync_scrub_bytes",
            "Bytes of the local store the scrub re-hashed (local backend; --scrub-rate bounds"
            " its rate).",
            registry=registry,
        )
        self.suggestions = Gauge(
            "gitsync_suggestions",
            "Pending suggestions (gitsync suggest, /api/v1/suggestions), by kind.",
            ["kind"],
            registry=registry,
        )
        for kind in SuggestionKind:  # every kind from the start, so a panel never shows a gap
            self.suggestions.labels(kind=kind.value).set(0)

    def record_snapshot_checks(self, totals: SnapshotCheckCounts) -> None:
        """Count the checks a provider made since the last call, from its running totals."""
        seen = self._snapshot_totals
        if any(totals.get(check) < seen.get(check) for check in SnapshotCheck):
            seen = SnapshotCheckCounts()  # a provider opened anew: its totals start at 0
        for check in SnapshotCheck:
            added = totals.get(check) - seen.get(check)
            if added:
                self.snapshot_checks.labels(result=check.value).inc(added)
        self._snapshot_totals = totals

    def record_diagnostics(self, *, valid: bool, counts: dict[str, int]) -> None:
        self.spec_valid.set(1 if valid else 0)
        for severity in ("error", "warning", "info"):
            self.spec_diagnostics.labels(severity=severity).set(counts.get(severity, 0))

    def set_suggestions(self, counts: Mapping[str, int]) -> None:
        """The pending suggestions now, by kind; a kind missing from `counts` has none."""
        known = {kind.value for kind in SuggestionKind}
        unknown = sorted(set(counts) - known)
        if unknown:
            raise ValueError(
                f"suggestion kind {unknown[0]!r} is not one of {', '.join(sorted(known))}"
            )
        negative = sorted(kind for kind, count in counts.items() if count < 0)
        if negative:
            raise ValueError(f"suggestion count of {negative[0]!r} is negative")
        for kind in SuggestionKind:
            self.suggestions.labels(kind=kind.value).set(counts.get(kind.value, 0))


# Label values of gitsync_webhook_requests_total{hook,outcome}, as gitsync.server counts them.
# The label values of gitsync_webhook_requests_total: the webhooks module's own vocabulary.
WEBHOOK_HOOKS: tuple[str, ...] = tuple(webhooks.HOOKS)
WEBHOOK_OUTCOMES: tuple[str, ...] = webhooks.OUTCOMES


class RequestCounts(Collector):
    """Webhook requests by outcome and pass triggers by source, read at scrape time.

    The HTTP server and the trigger queue count these anyway (under their own
    locks, before they answer); this collector only reads their tallies, so
    a scrape shows every count whose request has been answered. Every known
    label combination is rendered, zeros included, so `increase()` sees the
    first request too.
    """

    def __init__(
        self,
        *,
        webhooks: Callable[[], Mapping[tuple[str, str], int]],
        triggers: Callable[[], Mapping[str, int]],
    ) -> None:
        self._webhooks = webhooks
        self._triggers = triggers

    def describe(self) -> Iterator[Metric]:
        yield from self._families({}, {})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._webhooks(), self._triggers())

    @staticmethod
    def _families(
        webhooks: Mapping[tuple[str, str], int], triggers: Mapping[str, int]
    ) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gitsync_webhook_requests_total",
            "Webhook requests by hook and outcome (triggered, ignored, ping, unauthorized,"
            " refused: size or framing, invalid: bad JSON or no ref).",
            labels=("hook", "outcome"),
        )
        known = {(hook, outcome) for hook in WEBHOOK_HOOKS for outcome in WEBHOOK_OUTCOMES}
        for hook, outcome in sorted(known | set(webhooks)):
            requests.add_metric((hook, outcome), webhooks.get((hook, outcome), 0))
        yield requests
        passes = CounterMetricFamily(
            "gitsync_triggers_total",
            "Requests for a reconcile pass, by source (start, interval, webhook, watch, leader,"
            " other); triggers that arrive while a pass is due coalesce into it.",
            labels=("source",),
        )
        for source, count in sorted(triggers.items()):
            passes.add_metric((source,), count)
        yield passes


_STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
LOOKUP_RESULTS = ("hit", "partial", "miss")


# --------------------------------------------------------------- fast exposition
#
# At 10,000 caches the per-cache families hold ~150,000 samples. prometheus_client
# renders each sample with name checks and label escaping (seconds per scrape), so
# these families render their own text, and keep each cache's lines until that
# cache's object changes (the local store hands back the same objects while
# nothing changed). `collect()` parses that same text, so registry reads
# (tests, `get_sample_value`) see exactly what a scrape sees.


class TextCollector(Collector, ABC):
    """A collector that can also render its exposition text directly."""

    FAMILIES: tuple[tuple[str, str, str], ...] = ()  # (name, type, help)

    @abstractmethod
    def render(self) -> bytes:
        """The exposition text of every family in FAMILIES."""

    def describe(self) -> Iterator[Metric]:
        for name, kind, documentation in self.FAMILIES:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, documentation)

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.render().decode())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _header(name: str, kind: str, documentation: str) -> str:
    sample = f"{name}_total" if kind == "counter" else name
    return f"# HELP {sample} {documentation}\n# TYPE {sample} {kind}\n"


def _number(value: float) -> str:
    return repr(float(value))


class ExpositionRegistry(CollectorRegistry):
    """A CollectorRegistry whose `exposition()` lets `TextCollector`s render themselves."""

    def exposition(self) -> bytes:
        with self._lock:
            collectors = list(self._collector_to_names)
        slow = [c for c in collectors if not isinstance(c, TextCollector)]
        fast = [c for c in collectors if isinstance(c, TextCollector)]

        class _Slow:
            @staticmethod
            def collect() -> Iterator[Metric]:
                for collector in slow:
                    yield from collector.collect()

        body = generate_latest(_Slow())  # generate_latest only calls collect()
        return b"".join([body, *(c.render() for c in fast)])


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
                prefix = "gitsync_cache_lookups_total" + _labels(cache=cache, result=result)
                entry = (prefix, 0)
            self._counts[key] = (entry[0], entry[1] + 1)

    def render(self) -> bytes:
        with self._lock:
            lines = [f"{prefix} {count}.0\n" for prefix, count in self._counts.values()]
        return (_header(*self.FAMILIES[0]) + "".join(lines)).encode()


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
        return ("gitsync_cache_saved_seconds_total" + _labels(cache=cache), 0.0)

    def render(self) -> bytes:
        with self._lock:
            lines = [f"{prefix} {_number(total)}\n" for prefix, total in self._sums.values()]
        return (_header(*self.FAMILIES[0]) + "".join(lines)).encode()


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


# Families of StateExposition, in exposition order; indexes name the slots of _Lines.
_STATE_FAMILIES = (
    ("gitsync_applied_revision_info", "gauge", "1 for the revision in force."),
    ("gitsync_cache_info", "gauge", "1 per cache the provider holds."),
    ("gitsync_cache_expiry_timestamp_seconds", "gauge", "When the cache expires."),
    ("gitsync_cache_created_timestamp_seconds", "gauge", "When it was created."),
    ("gitsync_cache_last_matched_timestamp_seconds", "gauge", "When a pod last used the cache."),
    ("gitsync_cache_capacity_bytes", "gauge", "imageCacheSize in bytes."),
    ("gitsync_cache_content_bytes", "gauge", "Expanded size of its images."),
    ("gitsync_cache_images", "gauge", "Number of images in the cache."),
    (
        "gitsync_cache_cost_per_hour",
        "gauge",
        "Standing cost per hour, by component, in gitsync_pricing_info's currency.",
    ),
    (
        "gitsync_cost",
        "counter",
        "Money spent so far, by component (creation, snapshot, disk), estimated.",
    ),
    ("gitsync_cache_desired", "gauge", "1 per cache in the applied revision."),
    ("gitsync_cache_ready", "gauge", "1 if the desired cache is Ready, else 0."),
    ("gitsync_pricing_info", "gauge", "1; the currency label names the price table's currency."),
)
(
    _REVISION,
    _INFO,
    _EXPIRY,
    _CREATED,
    _MATCHED,
    _CAPACITY,
    _CONTENT,
    _IMAGES,
    _COST_HOURLY,
    _COST_TOTAL,
    _DESIRED,
    _READY,
    _PRICING,
) = range(len(_STATE_FAMILIES))


@dataclass(frozen=True, slots=True)
class _CacheLines:
    """One cache's static lines per family, and what the dynamic lines need."""

    source: ObservedCache
    owned: bool
    lines: dict[int, str]
    label: str  # {cache="…",provider="…"} without the closing brace
    snapshot_hourly: float
    built_at: float | None  # when the snapshot cost started to accrue


class StateExposition(TextCollector):
    """Per-cache series of the metric contract, from the daemon's latest `StateView`."""

    FAMILIES = _STATE_FAMILIES

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
        self._lock = threading.Lock()
        self._caches: dict[str, _CacheLines] = {}  # by cache id
        self._desired: dict[str, tuple[CacheSpec, ObservedCache | None, tuple[str, str]]] = {}
        # The last view's joined static text, and the dynamic text of its last minute.
        self._static: tuple[tuple[object, ...], list[bytes], list[_CacheLines]] | None = None
        self._dynamic: tuple[object, dict[int, bytes]] | None = None

    def render(self) -> bytes:
        view = self._view()
        with self._lock:
            return self._render(view)

    def _render(self, view: StateView) -> bytes:
        key = (view.observed, view.desired, view.applied_revision, view.controller_id)
        cached = self._static
        # Identity for the collections (providers hand back the same tuple while nothing
        # changed), equality for the strings.
        if cached is None or not (
            cached[0][0] is key[0] and cached[0][1] is key[1] and cached[0][2:] == key[2:]
        ):
            cached = self._static = (key, *self._static_text(view))
        _, static, accruing = cached
        dynamic = self._dynamic_text(accruing)
        return b"".join(
            static[index] + dynamic[index] if index in dynamic else static[index]
            for index in range(len(_STATE_FAMILIES))
        )

    def _static_text(self, view: StateView) -> tuple[list[bytes], list[_CacheLines]]:
        """Each family's lines that only change when the view does, joined per family."""
        entries = [self._entry(cache, view.controller_id) for cache in view.observed]
        self._caches = {e.source.cache_id: e for e in entries}
        out: list[list[str]] = [[] for _ in _STATE_FAMILIES]
        if view.applied_revision:
            out[_REVISION].append(
                f"gitsync_applied_revision_info{_labels(revision=view.applied_revision)} 1.0\n"
            )
        for entry in entries:
            for family, line in entry.lines.items():
                out[family].append(line)
        self._desired_lines(view, entries, out)
        out[_PRICING].append(f"gitsync_pricing_info{_labels(currency=self._prices.currency)} 1.0\n")
        self._dynamic = None
        texts = [
            (_header(*family) + "".join(lines)).encode()
            for family, lines in zip(_STATE_FAMILIES, out, strict=True)
        ]
        return texts, [e for e in entries if e.owned]

    def _dynamic_text(self, owned: list[_CacheLines]) -> dict[int, bytes]:
        """Accrued snapshot cost (per minute) and pod disk cost (per observer report)."""
        running, disk_gib_hours = self._usage.disk_usage() if self._usage else ({}, {})
        minute = int(self._clock() // 60) * 60  # a counter of money needs no finer steps
        version = (minute, tuple(sorted(running.items())), tuple(sorted(disk_gib_hours.items())))
        if self._dynamic is not None and self._dynamic[0] == version:
            return self._dynamic[1]
        hourly_lines: list[str] = []
        total_lines: list[str] = []
        disk_price = self._prices.disk_per_gib_hour
        for entry in owned:
            if entry.built_at is not None:
                accrued = entry.snapshot_hourly * max(0.0, minute - entry.built_at) / 3600
                total_lines.append(
                    f'gitsync_cost_total{entry.label},component="snapshot"}} {_number(accrued)}\n'
                )
            name = entry.source.name
            if name in running or name in disk_gib_hours:  # only where a pod observer reports
                size = entry.source.image_cache_size_gib
                hourly = running.get(name, 0) * size * disk_price
                spent = disk_gib_hours.get(name, 0.0) * disk_price
                disk = f'{entry.label},component="disk"}}'
                hourly_lines.append(f"gitsync_cache_cost_per_hour{disk} {_number(hourly)}\n")
                total_lines.append(f"gitsync_cost_total{disk} {_number(spent)}\n")
        text = {
            _COST_HOURLY: "".join(hourly_lines).encode(),
            _COST_TOTAL: "".join(total_lines).encode(),
        }
        self._dynamic = (version, text)
        return text

    def _desired_lines(
        self, view: StateView, entries: Sequence[_CacheLines], out: list[list[str]]
    ) -> None:
        held = {e.source.name: e.source for e in entries if e.owned}
        fresh: dict[str, tuple[CacheSpec, ObservedCache | None, tuple[str, str]]] = {}
        for spec in view.desired:
            cache = held.get(spec.name)
            known = self._desired.get(spec.name)
            if known is not None and known[0] is spec and known[1] is cache:
                pair = known[2]
            else:
                label = _labels(cache=spec.name, provider=self._provider)
                ready = 1 if cache is not None and cache.status is CacheStatus.READY else 0
                pair = (
                    f"gitsync_cache_desired{label} 1.0\n",
                    f"gitsync_cache_ready{label} {ready}.0\n",
                )
            fresh[spec.name] = (spec, cache, pair)
            out[_DESIRED].append(pair[0])
            out[_READY].append(pair[1])
        self._desired = fresh

    def _entry(self, cache: ObservedCache, controller_id: str) -> _CacheLines:
        known = self._caches.get(cache.cache_id)
        if known is not None and known.source is cache:
            return known
        provider = self._provider
        info = _labels(cache=cache.name, provider=provider, cache_id=cache.cache_id)
        info = info[:-1] + f',status="{_escape(cache.status.value)}"}}'
        lines = {_INFO: f"gitsync_cache_info{info} 1.0\n"}
        owned = cache.owner == controller_id
        label = _labels(cache=cache.name, provider=provider)[:-1]
        hourly, built_at = 0.0, None
        if owned:
            closed = label + "}"
            if cache.expires_at is not None:
                lines[_EXPIRY] = (
                    f"gitsync_cache_expiry_timestamp_seconds{closed} "
                    f"{_number(cache.expires_at.timestamp())}\n"
                )
            if cache.created_at is not None:
                lines[_CREATED] = (
                    f"gitsync_cache_created_timestamp_seconds{closed} "
                    f"{_number(cache.created_at.timestamp())}\n"
                )
            if cache.last_matched_at is not None:
                lines[_MATCHED] = (
                    f"gitsync_cache_last_matched_timestamp_seconds{closed} "
                    f"{_number(cache.last_matched_at.timestamp())}\n"
                )
            lines[_CAPACITY] = (
                f"gitsync_cache_capacity_bytes{closed} "
                f"{_number(cache.image_cache_size_gib * GIB)}\n"
            )
            if cache.content_bytes is not None:
                lines[_CONTENT] = (
                    f"gitsync_cache_content_bytes{closed} {_number(cache.content_bytes)}\n"
                )
            lines[_IMAGES] = f"gitsync_cache_images{closed} {_number(len(cache.images))}\n"
            if cache.snapshot_id is not None:  # no snapshot, nothing billed
                hourly = pricing.snapshot_cost_per_hour(
                    size_gib=cache.image_cache_size_gib,
                    content_bytes=cache.content_bytes,
                    prices=self._prices,
                )
                built_at = cache.created_at.timestamp() if cache.created_at else None
                creation = pricing.creation_cost(
                    size_gib=cache.image_cache_size_gib,
                    content_bytes=cache.content_bytes,
                    prices=self._prices,
                )
                lines[_COST_TOTAL] = (
                    f'gitsync_cost_total{label},component="creation"}} {_number(creation)}\n'
                )
            lines[_COST_HOURLY] = (
                f'gitsync_cache_cost_per_hour{label},component="snapshot"}} {_number(hourly)}\n'
            )
        return _CacheLines(
            source=cache,
            owned=owned,
            lines=lines,
            label=label,
            snapshot_hourly=hourly,
            built_at=built_at,
        )

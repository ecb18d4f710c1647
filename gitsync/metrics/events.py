"""The daemon's event metrics: fetches, passes, diagnostics, webhook requests and triggers.

Ordinary counters, gauges and histograms the daemon updates as things happen
(`DaemonMetrics`), and the request and trigger tallies the HTTP server and the
trigger queue keep anyway, read at scrape time (`RequestCounts`). Nothing here
is per cache: those series are `usage` (fed by consumers) and `state`
(computed from the daemon's view).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gitsync import webhooks
from gitsync.model import SnapshotCheck, SnapshotCheckCounts
from gitsync.suggest.model import SuggestionKind

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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

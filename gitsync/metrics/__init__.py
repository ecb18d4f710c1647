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

One module per concern, each importing only those below it (an import-linter
contract in pyproject.toml keeps it so); every name is importable from here:

* `events`: the daemon's event metrics (`DaemonMetrics`) and the webhook and
  trigger tallies read at scrape time (`RequestCounts`).
* `state`: `StateView` and `StateExposition`, the per-cache series of the view.
* `cachetext`: one cache's lines in the state families, and their cost.
* `usage`: lookups, start times and saved seconds (`UsageMetrics`), fed by consumers.
* `refresh`: digest checks and moved tags (`RefreshMetrics`), fed by the refresher.
* `exposition`: collectors that render their own text (`TextCollector`) and the
  registry that lets them (`ExpositionRegistry`), for scrapes of 10,000 caches.
"""

from __future__ import annotations

from gitsync.metrics.events import WEBHOOK_HOOKS, WEBHOOK_OUTCOMES, DaemonMetrics, RequestCounts
from gitsync.metrics.exposition import ExpositionRegistry, TextCollector
from gitsync.metrics.refresh import DIGEST_CHECK_RESULTS, RefreshMetrics
from gitsync.metrics.state import StateExposition, StateView
from gitsync.metrics.usage import LOOKUP_RESULTS, LookupCounter, SavedSecondsCounter, UsageMetrics

__all__ = [
    "DIGEST_CHECK_RESULTS",
    "LOOKUP_RESULTS",
    "WEBHOOK_HOOKS",
    "WEBHOOK_OUTCOMES",
    "DaemonMetrics",
    "ExpositionRegistry",
    "LookupCounter",
    "RefreshMetrics",
    "RequestCounts",
    "SavedSecondsCounter",
    "StateExposition",
    "StateView",
    "TextCollector",
    "UsageMetrics",
]

"""Where every observed lookup goes: the usage metrics, the savings estimate, the store.

Why one sink: the registry mirror and the pod observer each see pulls, and
each pull feeds three things that must agree — the `gitsync_cache_lookups_total`
and `gitsync_startup_seconds` series, the seconds a hit saved
(`gitsync_cache_saved_seconds_total{cache}`), and the observation store that
`gitsync suggest` reads. The sources only report what they saw; this module
decides nothing about hits or misses, it routes.

Everything here runs on request threads (the mirror) or watch threads (the pod
observer), so it only appends: the store is written in batches by its own
thread (`gitsync.observations.recorder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gitsync.observations.model import Lookup, LookupResult

__all__ = ["LookupSink", "Recorder", "SavedCounter", "Savings"]


class Recorder(Protocol):
    """The batching writer of the observation store."""

    def record(self, lookup: Lookup) -> None: ...


class Savings(Protocol):
    """Learns what misses cost and says what a hit saved (`gitsync.observations.savings`)."""

    def saved_seconds(self, lookup: Lookup) -> float: ...


class SavedCounter(Protocol):
    """`gitsync.metrics.UsageMetrics`: the saved-seconds counter."""

    def record_saved(self, *, cache: str, seconds: float) -> None: ...


class LookupSink:
    """Takes the lookups the mirror and the pod observer report; thread-safe if its parts are."""

    def __init__(self, *, recorder: Recorder | None, savings: Savings, saved: SavedCounter) -> None:
        self._recorder = recorder
        self._savings = savings
        self._saved = saved

    def observe(self, lookup: Lookup) -> None:
        """One lookup, as the mirror reports it."""
        seconds = self._savings.saved_seconds(lookup)  # learns from misses; 0 for them
        if lookup.result is LookupResult.HIT and lookup.cache and seconds > 0:
            self._saved.record_saved(cache=lookup.cache, seconds=seconds)
        if self._recorder is not None:
            self._recorder.record(lookup)

    def observe_all(self, lookups: Sequence[Lookup]) -> None:
        """The lookups of one pod start, as the pod observer reports them."""
        for lookup in lookups:
            self.observe(lookup)

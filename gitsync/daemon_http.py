"""What `gitsync run`'s HTTP threads answer from: status, match, health, metrics, suggestions.

Why apart from the loop (`gitsync.daemon`): the listener's threads must keep
answering while a pass hangs in git or provider I/O, so everything here reads a
snapshot the loop publishes (`Latest`), the provider's own store, or a
counter, and never a lock the loop holds across I/O. Keeping it in its own
class makes that rule visible: nothing in this module fetches, plans or
applies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from gitsync import matching, reports
from gitsync.digests import ResolvedDigest
from gitsync.liveness import Heartbeat
from gitsync.metrics import ExpositionRegistry, StateView, UsageMetrics
from gitsync.model import CacheSpec, ObservedCache
from gitsync.providers.base import LocalView
from gitsync.reconciler import Reconciler

__all__ = ["DaemonHttp", "Latest", "Leadership", "SuggestionSource"]

log = logging.getLogger("gitsync.daemon")


class Leadership(Protocol):
    """What the daemon needs of a leader elector (gitsync.leader.LeaderElector)."""

    @property
    def is_leader(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, *, release: bool = True, timeout: float = 5.0) -> None: ...


class SuggestionSource(Protocol):
    """The daemon's suggestions (gitsync.suggester.SuggestionLoop)."""

    def latest(self) -> dict[str, object]: ...

    def poke(self) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


@dataclass(slots=True)
class Latest:
    """What the last pass learnt; read by scrapes and the APIs from other threads."""

    desired: tuple[CacheSpec, ...] = ()
    observed: tuple[ObservedCache, ...] = ()
    passes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def specs(self) -> tuple[CacheSpec, ...]:
        with self.lock:
            return self.desired


class DaemonHttp:
    """The answers of the daemon's endpoints; every method is safe from any thread."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        registry: ExpositionRegistry,
        usage: UsageMetrics,
        heartbeat: Heartbeat,
        latest: Latest,
        loop_alive: Callable[[], bool],
    ) -> None:
        self._reconciler = reconciler
        self._registry = registry
        self.usage = usage
        self._heartbeat = heartbeat
        self._latest = latest
        self._loop_alive = loop_alive
        self._reported_stuck = False
        self.leader: Leadership | None = None
        self.suggestions: SuggestionSource | None = None
        # What the tag refresher last resolved (gitsync.refresh), for the status' digests.
        self.resolved: Callable[[], Mapping[str, ResolvedDigest]] | None = None

    def match(self, body: Mapping[str, object]) -> tuple[int, Mapping[str, object]]:
        try:
            images, manual = matching.parse_match_request(body)
            decision = matching.match(images, self.caches(), manual=manual)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        hit = decision.result is not matching.MatchResult.MISS
        self.usage.record(cache=decision.cache if hit else None, result=decision.result.value)
        provider = self._reconciler.provider
        if hit and decision.cache_id and isinstance(provider, LocalView):
            provider.touch_matched(decision.cache_id)
        return 200, decision.to_json()

    def caches(self) -> tuple[ObservedCache, ...]:
        """Caches as of now where that is cheap (local), else as of the last pass."""
        provider = self._reconciler.provider
        if isinstance(provider, LocalView):
            return provider.current()
        with self._latest.lock:
            return self._latest.observed

    def metrics_body(self) -> tuple[bytes, str]:
        return self._registry.exposition(), CONTENT_TYPE_LATEST

    def healthy(self) -> tuple[bool, str]:
        verdict = self._heartbeat.check()
        stuck = not verdict.alive
        if stuck != self._reported_stuck:  # log changes, not every probe (races: a line twice)
            self._reported_stuck = stuck
            if stuck:
                log.error("liveness: %s", verdict.reason)
            else:
                log.info("liveness: the reconcile loop makes progress again")
        return verdict.alive, verdict.reason

    def ready(self) -> bool:
        if not self._loop_alive():
            return False
        if self.leader is not None and not self.leader.is_leader:
            return True  # a healthy follower: ready to take over, serving metrics
        return self._reconciler.records.load().applied_revision is not None

    def state_view(self) -> StateView:
        record = self._reconciler.records.load()
        observed = self.caches()
        return StateView(
            applied_revision=record.applied_revision,
            desired=self._latest.specs(),
            observed=observed,
            controller_id=self._reconciler.policy.controller_id,
        )

    def status(self) -> dict[str, object]:
        record = self._reconciler.records.load()
        return reports.status_dict(
            reports.StatusView(
                provider=self._reconciler.provider.name,
                controller_id=self._reconciler.policy.controller_id,
                applied_revision=record.applied_revision,
                newest_revision=record.newest_revision,
                spec_valid=record.spec_valid,
                last_error=record.last_error,
                diagnostics=record.diagnostics,
                caches=self.caches(),
                resolved=self.resolved() if self.resolved is not None else None,
            )
        )

    def suggestions_json(self) -> dict[str, object]:
        if self.suggestions is None:
            return {
                "suggestions": [],
                "missed": [],
                "note": "suggestions are off (--suggest-interval 0)",
            }
        return self.suggestions.latest()

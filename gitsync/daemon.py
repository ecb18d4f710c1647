"""`gitsync run`: the loop that keeps the provider equal to Git, and its HTTP face.

One reconcile thread consumes a deduplicating trigger queue (poll timer,
webhooks, folder watch), so a flood of triggers becomes at most one more pass.
Each pass: fetch → (skip loading when the revision did not move) → validate →
observe → plan → apply → record. Observing and planning still run when the
revision is unchanged, because drift (a cache deleted, changed or expired
behind our back) must be repaired on the next pass.

SIGTERM sets a flag and wakes the loop; the pass in progress finishes its
provider calls, the record is saved, and `run()` returns so the process exits 0.

`/healthz` reports the loop's heartbeat (see `gitsync.liveness`): it fails once
one pass has run longer than the liveness timeout. Everything the HTTP threads
read (metrics, status, readiness, the mirror) is a snapshot or the provider's
own store, never a lock the loop holds across provider or git I/O, so they keep
answering while a pass hangs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from gitsync import matching, reports
from gitsync.errors import GitSyncError
from gitsync.liveness import Heartbeat, default_timeout
from gitsync.metrics import (
    DaemonMetrics,
    ExpositionRegistry,
    RequestCounts,
    StateExposition,
    StateView,
    UsageMetrics,
)
from gitsync.model import CacheSpec, ObservedCache
from gitsync.providers.base import LocalView
from gitsync.reconciler import PassResult, Reconciler
from gitsync.server import ControlServer, ServerHooks
from gitsync.sources.base import Source, Watch
from gitsync.triggers import TriggerQueue, jittered_interval

log = logging.getLogger("gitsync.daemon")

# Told of each pull the mirror serves: (cache or None, hit/partial/miss, seconds).
LookupRecorder = Callable[[str | None, str, float], None]
# Builds the `/v2/` registry hook over a provider's images (see `gitsync.wiring.mirror_for`).
MirrorFactory = Callable[[LookupRecorder], Callable[..., Any]]


class Leadership(Protocol):
    """What the daemon needs of a leader elector (gitsync.leader.LeaderElector)."""

    @property
    def is_leader(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, *, release: bool = True, timeout: float = 5.0) -> None: ...


class Observer(Protocol):
    """A consumer watcher the daemon starts and stops (gitsync.observers.kubernetes)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


@dataclass(slots=True)
class _Latest:
    """What the last pass learnt; read by scrapes and the status API from other threads."""

    desired: tuple[CacheSpec, ...] = ()
    observed: tuple[ObservedCache, ...] = ()
    passes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Daemon:
    def __init__(
        self,
        *,
        source: Source,
        reconciler: Reconciler,
        registry: ExpositionRegistry,
        metrics: DaemonMetrics,
        interval_seconds: float,
        host: str,
        port: int,
        branch: str,
        webhook_secret: bytes | None,
        version: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        heartbeat: Heartbeat | None = None,
        mirror: MirrorFactory | None = None,
    ) -> None:
        """`heartbeat` None: one with the default timeout (the larger of 3 intervals and 5 min).

        The wiring passes its own when the provider reports progress into it, and
        `mirror` when the provider holds image content to serve under `/v2/`.
        """
        self.source = source
        self.reconciler = reconciler
        self.metrics = metrics
        self.queue = TriggerQueue()
        self.interval = interval_seconds
        metrics.source_interval.set(interval_seconds)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography
        self._stop = threading.Event()
        self._latest = _Latest()
        self._loop_alive = False
        self.heartbeat = heartbeat or Heartbeat(timeout_seconds=default_timeout(interval_seconds))
        self._reported_stuck = False
        self._watch: Watch | None = None
        self._watch_asked = False  # once, after the first good fetch: the folder exists then
        self.leader: Leadership | None = None
        self.observer: Observer | None = None
        self._registry = registry
        self.usage = UsageMetrics(registry=registry)
        provider = reconciler.provider.name
        registry.register(
            StateExposition(
                provider=provider,
                view=self._state_view,
                prices=reconciler.prices,
                usage=self.usage,
                clock=clock,
            )
        )
        self.server = ControlServer(
            host=host,
            port=port,
            hooks=ServerHooks(
                metrics=self._metrics_body,
                healthy=self._healthy,
                ready=self._ready,
                status=self.status,
                trigger=self.queue.put,
                match=self._match,
                registry=mirror(self._record_lookup) if mirror is not None else None,
            ),
            branch=branch,
            webhook_secret=webhook_secret,
        )
        registry.register(
            RequestCounts(webhooks=self.server.webhook_counts, triggers=self.queue.counts_by_source)
        )
        del version  # build_info is set by DaemonMetrics

    # ----------------------------------------------------------- HTTP hooks

    def _record_lookup(self, cache: str | None, result: str, seconds: float) -> None:
        """A pull the `/v2/` mirror served (or missed)."""
        self.usage.record(cache=cache, result=result, seconds=seconds)

    def _match(self, body: Mapping[str, object]) -> tuple[int, Mapping[str, object]]:
        try:
            images, manual = matching.parse_match_request(body)
            decision = matching.match(images, self._caches(), manual=manual)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        hit = decision.result is not matching.MatchResult.MISS
        self.usage.record(cache=decision.cache if hit else None, result=decision.result.value)
        provider = self.reconciler.provider
        if hit and decision.cache_id and isinstance(provider, LocalView):
            provider.touch_matched(decision.cache_id)
        return 200, decision.to_json()

    def current_caches(self) -> tuple[ObservedCache, ...]:
        """The caches as of now where that is cheap, else as of the last pass."""
        return self._caches()

    def _caches(self) -> tuple[ObservedCache, ...]:
        """Caches as of now where that is cheap (local), else as of the last pass."""
        provider = self.reconciler.provider
        if isinstance(provider, LocalView):
            return provider.current()
        with self._latest.lock:
            return self._latest.observed

    def _metrics_body(self) -> tuple[bytes, str]:
        return self._registry.exposition(), CONTENT_TYPE_LATEST

    def ready_to_serve(self) -> bool:
        """The loop runs and a first pass has finished (for tests and benchmarks)."""
        return self._loop_alive and self._latest.passes > 0

    def _healthy(self) -> tuple[bool, str]:
        verdict = self.heartbeat.check()
        stuck = not verdict.alive
        if stuck != self._reported_stuck:  # log changes, not every probe (races: a line twice)
            self._reported_stuck = stuck
            if stuck:
                log.error("liveness: %s", verdict.reason)
            else:
                log.info("liveness: the reconcile loop makes progress again")
        return verdict.alive, verdict.reason

    def _ready(self) -> bool:
        if not self._loop_alive:
            return False
        if self.leader is not None and not self.leader.is_leader:
            return True  # a healthy follower: ready to take over, serving metrics
        return self.reconciler.records.load().applied_revision is not None

    # -------------------------------------------------------- leader election

    def attach_observer(self, observer: Observer) -> None:
        """Watch consumers (pods) while this daemon reconciles; started and stopped with it."""
        self.observer = observer

    def attach_leader(self, leader: Leadership) -> None:
        """Reconcile only while `leader.is_leader`; build the elector with this daemon's
        `on_started_leading` and `on_stopped_leading` as its callbacks."""
        self.leader = leader
        self.reconciler.continue_while(lambda: leader.is_leader)

    def on_started_leading(self) -> None:
        log.info("became the leader")
        if self.observer is not None:
            self.observer.start()
        self.queue.put("leader")

    def on_stopped_leading(self) -> None:
        log.warning("lost the lease: reconciling stops")
        if self.observer is not None:
            self.observer.stop()

    def _state_view(self) -> StateView:
        record = self.reconciler.records.load()
        observed = self._caches()
        with self._latest.lock:
            desired = self._latest.desired
        return StateView(
            applied_revision=record.applied_revision,
            desired=desired,
            observed=observed,
            controller_id=self.reconciler.policy.controller_id,
        )

    def status(self) -> dict[str, object]:
        record = self.reconciler.records.load()
        caches = self._caches()
        return reports.status_dict(
            reports.StatusView(
                provider=self.reconciler.provider.name,
                controller_id=self.reconciler.policy.controller_id,
                applied_revision=record.applied_revision,
                newest_revision=record.newest_revision,
                spec_valid=record.spec_valid,
                last_error=record.last_error,
                diagnostics=record.diagnostics,
                caches=caches,
            )
        )

    # ----------------------------------------------------------------- loop

    def stop(self) -> None:
        """Ask the loop to finish the pass in progress and return (safe from signal handlers)."""
        self._stop.set()
        self.queue.close()

    def run(self) -> None:
        self.heartbeat.busy("starting")
        self.server.start()
        host, port = self.server.address
        log.info("listening on http://%s:%d", host, port)
        self._loop_alive = True
        if self.leader is not None:
            self.leader.start()  # its callbacks start the observer once we lead
        elif self.observer is not None:
            self.observer.start()
        try:
            self.queue.put("start")
            while not self._stop.is_set():
                self.heartbeat.idle()
                reasons = self.queue.wait(jittered_interval(self.interval, rng=self._rng))
                if self._stop.is_set():
                    break
                if self.leader is not None and not self.leader.is_leader:
                    continue  # followers serve metrics and health, and wait
                try:
                    self.run_pass(reason=",".join(reasons) or "interval")
                except Exception:  # a bug or a dead disk must not stop the daemon serving
                    log.exception("the pass failed unexpectedly; the next one retries")
                    self.metrics.reconciles.labels(result="error").inc()
        finally:
            self._loop_alive = False
            if self.observer is not None:
                self.observer.stop()
            if self.leader is not None:
                self.leader.stop(release=True)
            if self._watch is not None:
                self._watch.stop()
            self.server.stop()
            log.info("stopped")

    def run_pass(self, *, reason: str) -> PassResult | None:
        self.heartbeat.busy(f"a pass ({reason}): fetching {self.source.url}")
        try:
            return self._pass(reason=reason)
        finally:
            self.heartbeat.idle()  # a finished pass is progress, whatever its result

    def _pass(self, *, reason: str) -> PassResult | None:
        started = self._clock()
        try:
            with self.metrics.fetch_duration.time():
                fetched = self.source.fetch()
        except GitSyncError as exc:
            self.metrics.fetch_errors.inc()
            log.error("fetch failed: %s", exc, extra={"reason": reason})
            return None
        self.metrics.fetch_success.set(self._clock())
        if not self._watch_asked:
            # A plain folder (development) reacts to edits instead of waiting for the timer.
            self._watch_asked = True
            self._watch = self.source.watch(lambda: self.queue.put("watch"))
        self.heartbeat.doing(
            f"a pass ({reason}): reconciling revision {fetched.revision} "
            f"with the {self.reconciler.provider.name} provider"
        )
        with self.metrics.reconcile_duration.time():
            result = self.reconciler.reconcile(tree=fetched.tree, revision=fetched.revision)
        record = self.reconciler.records.load()
        self.metrics.record_diagnostics(
            valid=record.spec_valid, counts=record.diagnostics_by_severity
        )
        checked = result.observed_after.snapshot_checks if result.observed_after else None
        if checked is not None:  # running totals: they include the checks of every observe
            self.metrics.record_snapshot_checks(checked)
        if result.error is None:
            self.metrics.reconciles.labels(result="success").inc()
            self.metrics.last_success.set(self._clock())
        else:
            self.metrics.reconciles.labels(result="error").inc()
        with self._latest.lock:
            if result.valid:
                self._latest.desired = self.reconciler.desired_caches
            if result.observed_after is not None:
                self._latest.observed = result.observed_after.caches
            self._latest.passes += 1
        log.info(
            "pass done in %.2f s: %s",
            self._clock() - started,
            _summary(result),
            extra={"revision": fetched.revision, "reason": reason},
        )
        return result


def _summary(result: PassResult) -> str:
    if not result.valid:
        return "invalid revision, nothing applied"
    if result.plan is None:
        return result.error or "no plan"
    if result.plan.refused:
        return f"refused: {result.plan.refused}"
    done = sum(1 for o in result.outcomes if o.ok)
    failed = sum(1 for o in result.outcomes if o.error)
    held = sum(1 for o in result.outcomes if o.skipped_until)
    return f"{done} applied, {failed} failed, {held} backing off, " + (
        "converged" if result.converged else "not converged"
    )

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
from collections.abc import Callable
from typing import Any, Protocol

from gitsync.daemon_http import DaemonHttp, Latest, Leadership
from gitsync.errors import GitSyncError
from gitsync.liveness import Heartbeat, default_timeout
from gitsync.lookups import LookupSink, Recorder, Savings
from gitsync.metrics import (
    DaemonMetrics,
    ExpositionRegistry,
    RequestCounts,
    StateExposition,
    UsageMetrics,
)
from gitsync.model import CacheSpec, ObservedCache
from gitsync.observations.model import Lookup
from gitsync.reconciler import PassResult, Reconciler
from gitsync.server import ControlServer, ServerHooks
from gitsync.sources.base import Source, Watch
from gitsync.triggers import TriggerQueue, jittered_interval

__all__ = ["Daemon", "Leadership", "LookupRecorder", "MirrorFactory", "Observer"]

log = logging.getLogger("gitsync.daemon")

# Told of each pull the mirror serves: (cache or None, hit/partial/miss, seconds).
LookupRecorder = Callable[[str | None, str, float], None]
# Told of each lookup with its image, for the observation store (gitsync.lookups).
ObservationRecorder = Callable[[Lookup], None]
# Builds the `/v2/` registry hook over a provider's images (see `gitsync.wiring.mirror_for`).
MirrorFactory = Callable[[LookupRecorder, ObservationRecorder | None], Callable[..., Any]]


class Observer(Protocol):
    """A consumer watcher the daemon starts and stops (gitsync.observers.kubernetes)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class Helper(Protocol):
    """A thread beside the loop: started, stopped, and poked when specs arrive."""

    def start(self) -> None: ...

    def poke(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class StoreWriter(Recorder, Protocol):
    """The observation store's writer thread (gitsync.observations.recorder.BatchRecorder)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


class Daemon:
    """The reconcile loop, its triggers, and the lifetime of what runs beside it.

    The endpoints' answers are `DaemonHttp`'s (`self.http`), which reads only
    what the loop publishes in `Latest`.
    """

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
        recorder: StoreWriter | None = None,
        savings: Savings | None = None,
    ) -> None:
        """`heartbeat` None: one with the default timeout (the larger of 3 intervals and 5 min).

        The wiring passes its own when the provider reports progress into it;
        `mirror` when the provider holds image content to serve under `/v2/`;
        `recorder` (the observation store's writer, started and stopped with
        the loop) and `savings` when lookups are kept for `gitsync suggest`
        and the saved seconds are counted (see `gitsync.lookups`).
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
        self._latest = Latest()
        self._loop_alive = False
        self.heartbeat = heartbeat or Heartbeat(timeout_seconds=default_timeout(interval_seconds))
        self._watch: Watch | None = None
        self._watch_asked = False  # once, after the first good fetch: the folder exists then
        self.observer: Observer | None = None
        self.recorder = recorder
        self._helpers: list[Helper] = []
        self.usage = UsageMetrics(registry=registry)
        self.lookups = (
            LookupSink(recorder=recorder, savings=savings, saved=self.usage)
            if savings is not None
            else None
        )
        self.http = DaemonHttp(
            reconciler=reconciler,
            registry=registry,
            usage=self.usage,
            heartbeat=self.heartbeat,
            latest=self._latest,
            loop_alive=lambda: self._loop_alive,
        )
        registry.register(
            StateExposition(
                provider=reconciler.provider.name,
                view=self.http.state_view,
                prices=reconciler.prices,
                usage=self.usage,
                clock=clock,
            )
        )
        self.server = ControlServer(
            host=host,
            port=port,
            hooks=ServerHooks(
                metrics=self.http.metrics_body,
                healthy=self.http.healthy,
                ready=self.http.ready,
                status=self.http.status,
                trigger=self.queue.put,
                match=self.http.match,
                registry=(
                    mirror(self._record_lookup, self.lookups.observe if self.lookups else None)
                    if mirror is not None
                    else None
                ),
                suggestions=self.http.suggestions_json,
            ),
            branch=branch,
            webhook_secret=webhook_secret,
        )
        registry.register(
            RequestCounts(webhooks=self.server.webhook_counts, triggers=self.queue.counts_by_source)
        )
        del version  # build_info is set by DaemonMetrics

    # ------------------------------------------------------- what others read

    def _record_lookup(self, cache: str | None, result: str, seconds: float) -> None:
        """A pull the `/v2/` mirror served (or missed)."""
        self.usage.record(cache=cache, result=result, seconds=seconds)

    def current_caches(self) -> tuple[ObservedCache, ...]:
        """The caches as of now where that is cheap, else as of the last pass."""
        return self.http.caches()

    def desired_caches(self) -> tuple[CacheSpec, ...]:
        """The specs of the last valid revision."""
        return self._latest.specs()

    def status(self) -> dict[str, object]:
        return self.http.status()

    def ready_to_serve(self) -> bool:
        """The loop runs and a first pass has finished (for tests and benchmarks)."""
        return self._loop_alive and self._latest.passes > 0

    # ------------------------------------------------ what runs beside the loop

    def attach_observer(self, observer: Observer) -> None:
        """Watch consumers (pods) while this daemon reconciles; started and stopped with it."""
        self.observer = observer

    def attach_helper(self, helper: Helper) -> None:
        """A thread that lives as long as the loop (suggestions, tag refresh, automation
        branch), poked after every pass that loaded a valid revision."""
        self._helpers.append(helper)

    def attach_leader(self, leader: Leadership) -> None:
        """Reconcile only while `leader.is_leader`; build the elector with this daemon's
        `on_started_leading` and `on_stopped_leading` as its callbacks."""
        self.http.leader = leader
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
        self._start_helpers()
        if self.http.leader is not None:
            self.http.leader.start()  # its callbacks start the observer once we lead
        elif self.observer is not None:
            self.observer.start()
        try:
            self.queue.put("start")
            while not self._stop.is_set():
                self.heartbeat.idle()
                reasons = self.queue.wait(jittered_interval(self.interval, rng=self._rng))
                if self._stop.is_set():
                    break
                if self.http.leader is not None and not self.http.leader.is_leader:
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
            self._stop_helpers()
            if self.http.leader is not None:
                self.http.leader.stop(release=True)
            if self._watch is not None:
                self._watch.stop()
            self.server.stop()
            log.info("stopped")

    def _start_helpers(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        for helper in self._helpers:
            helper.start()

    def _stop_helpers(self) -> None:
        for helper in reversed(self._helpers):
            helper.stop()
        if self.recorder is not None:
            self.recorder.stop()  # writes what is queued

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
        _record_pass(self.metrics, self.reconciler, result, now=self._clock())
        with self._latest.lock:
            if result.valid:
                self._latest.desired = self.reconciler.desired_caches
            if result.observed_after is not None:
                self._latest.observed = result.observed_after.caches
            self._latest.passes += 1
        if result.valid:  # new specs: what the helpers derive from them is due again
            for helper in self._helpers:
                helper.poke()
        log.info(
            "pass done in %.2f s: %s",
            self._clock() - started,
            _summary(result),
            extra={"revision": fetched.revision, "reason": reason},
        )
        return result


def _record_pass(
    metrics: DaemonMetrics, reconciler: Reconciler, result: PassResult, *, now: float
) -> None:
    """What one pass tells the daemon's metrics: diagnostics, snapshot checks, its result."""
    record = reconciler.records.load()
    metrics.record_diagnostics(valid=record.spec_valid, counts=record.diagnostics_by_severity)
    checked = result.observed_after.snapshot_checks if result.observed_after else None
    if checked is not None:  # running totals: they include the checks of every observe
        metrics.record_snapshot_checks(checked)
    if result.error is None:
        metrics.reconciles.labels(result="success").inc()
        metrics.last_success.set(now)
    else:
        metrics.reconciles.labels(result="error").inc()


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

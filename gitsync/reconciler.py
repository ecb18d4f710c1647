"""One reconcile pass: load → validate → observe → plan → apply → record.

The safety rules of docs/architecture.md live here and in the planner:

- An invalid revision is never applied, in whole or in part: validation runs on
  the whole tree before the provider is even observed, and the last applied
  revision stays in force.
- A refused plan (the mass-delete guard) applies nothing.
- Actions run per cache in a bounded thread pool; one failing cache never
  blocks the others, and each failure backs off exponentially with jitter so a
  broken registry is not hammered every pass.

Moved tags: given the digests the daemon's refresher resolved (`follow_tags`),
the planner rebuilds a following cache whose tag now points elsewhere (see
`gitsync.digests`); a pass that found nothing to do is planned again when
they change.

On the asynchronous backends (Kubernetes, Tencent Cloud) a pass ends when the
provider has accepted the actions; the operator or the cloud builds the caches
later. `wait_until_ready` is what `gitsync apply --wait` does after the pass:
poll `observe()` until every desired cache is Ready, one is broken, time is up,
or the caller asks it to stop.

The reconciler owns no clock, randomness or logging configuration of its own:
they are injected, so tests drive time and jitter.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gitsync import planning, reports, specs
from gitsync.backoff import backoff_delay
from gitsync.controller_record import ControllerRecord, RecordFile, RecordSaveError
from gitsync.digests import TagDigests
from gitsync.errors import GitSyncError, TemporaryError
from gitsync.model import (
    Action,
    ActionKind,
    CacheSpec,
    CacheStatus,
    Diagnostic,
    ObservedCache,
    ObservedState,
    Plan,
)
from gitsync.pricing import PriceTable
from gitsync.providers.base import Provider

log = logging.getLogger("gitsync.reconciler")

# Providers rebuild in place for both: the old snapshot serves until the new one is Ready.
_REBUILDS = (ActionKind.UPDATE, ActionKind.RECREATE)


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    action: Action
    error: str | None = None
    temporary: bool = False
    skipped_until: float | None = None  # set when backoff held the action back

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped_until is None


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass saw and did."""

    revision: str | None
    diagnostics: tuple[Diagnostic, ...]
    plan: Plan | None
    outcomes: tuple[ActionOutcome, ...]
    observed_after: ObservedState | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return not any(d.severity.value == "error" for d in self.diagnostics)

    @property
    def converged(self) -> bool:
        """Valid, applied in full, and every desired cache Ready."""
        if not self.valid or self.error or self.plan is None or self.observed_after is None:
            return False
        if any(not o.ok for o in self.outcomes):
            return False
        ready = {c.name for c in self.observed_after.caches if c.status is CacheStatus.READY}
        desired = {a.name for a in self.plan.actions if a.kind is not ActionKind.DELETE}
        return desired <= ready


@dataclass(frozen=True, slots=True)
class _QuietMemo:
    """A pass that found nothing to do: the same inputs before `until` give the same plan."""

    revision: str | None
    observed: ObservedState
    keep: frozenset[str]
    tags: TagDigests | None
    plan: Plan
    until: float


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    controller_id: str = "gitsync"
    max_delete_ratio: float = 0.5
    allow_mass_delete: bool = False
    renew_before: timedelta | None = None
    max_workers: int = 4
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 600.0


class Backoff:
    """Per-cache exponential backoff with equal jitter: c/2 + U(0, c/2), c = min(max, base·2^n)."""

    def __init__(
        self, *, base: float, maximum: float, clock: Callable[[], float], rng: random.Random
    ) -> None:
        self._base = base
        self._max = maximum
        self._clock = clock
        self._rng = rng
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}

    def ready(self, name: str) -> float | None:
        """None when `name` may be tried now, else the time it may be tried again."""
        moment = self._not_before.get(name)
        return moment if moment is not None and moment > self._clock() else None

    def failed(self, name: str, *, retry_after: float | None = None) -> float:
        count = self._failures.get(name, 0) + 1
        self._failures[name] = count
        # Half fixed, half random: never a hot loop, and replicas do not retry in step.
        delay = backoff_delay(count, base=self._base, cap=self._max, rng=self._rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._not_before[name] = self._clock() + delay
        return delay

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
        self._not_before.pop(name, None)


class Reconciler:
    """Runs passes against one provider, remembering backoff and the controller record."""

    def __init__(
        self,
        *,
        provider: Provider,
        records: RecordFile,
        policy: ReconcilePolicy,
        prices: PriceTable,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        should_continue: Callable[[], bool] | None = None,
    ) -> None:
        """`should_continue` is asked before each action (see `continue_while`)."""
        self.provider = provider
        self.records = records
        self.policy = policy
        self.prices = prices
        self._clock = clock
        self._should_continue: Callable[[], bool] = should_continue or (lambda: True)
        self._tags: Callable[[], TagDigests] | None = None
        self.desired_caches: tuple[CacheSpec, ...] = ()  # of the revision in force
        self._loaded: tuple[Path, str, specs.LoadResult] | None = None
        self._files = specs.FileCache()  # a new commit re-reads only the files it changed
        self._quiet: _QuietMemo | None = None
        self._noops = planning.NoopMemo()
        self.backoff = Backoff(
            base=policy.backoff_base_seconds,
            maximum=policy.backoff_max_seconds,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311  # jitter, not cryptography
        )

    def reconcile(self, *, tree: Path, revision: str | None) -> PassResult:
        """Bring the provider to the caches under `tree` (the files of `revision`)."""
        started = self._clock()
        record = self.records.load()
        loaded = self._load(tree=tree, revision=revision)
        lines = tuple(reports.diagnostic_line(d) for d in loaded.diagnostics)
        record = replace(record, newest_revision=revision, spec_valid=loaded.ok)
        record = record.with_diagnostics(loaded.diagnostics, lines)
        if not loaded.ok:
            errors = sum(1 for d in loaded.diagnostics if d.severity.value == "error")
            message = (
                f"revision {revision or '(working tree)'} is invalid ({errors} errors); "
                f"{record.applied_revision or 'nothing'} stays in force"
            )
            log.warning(message, extra={"revision": revision})
            self._save(record, error=message, started=started, success=False)
            return PassResult(
                revision=revision,
                diagnostics=loaded.diagnostics,
                plan=None,
                outcomes=(),
                observed_after=None,
                error=message,
            )
        try:
            observed = self.provider.observe()
        except GitSyncError as exc:
            message = f"cannot observe the {self.provider.name} provider: {exc}"
            log.error(message, extra={"revision": revision})
            self._save(record, error=message, started=started, success=False)
            return PassResult(revision, loaded.diagnostics, None, (), None, error=message)

        keep = keep_names(record, observed)
        tags = self._tags() if self._tags is not None else None
        quiet = self._quiet
        if (
            quiet is not None
            and quiet.revision == revision
            and quiet.keep == keep
            and (quiet.tags is tags or quiet.tags == tags)
            and started < quiet.until
            and quiet.observed == observed  # identity first: providers reuse unchanged tuples
        ):
            # Nothing moved since a pass that had nothing to do: planning again would
            # give the same no-op plan, so skip it (the no-op pass must stay cheap).
            self._save(record, error=None, started=started, success=True)
            return PassResult(revision, loaded.diagnostics, quiet.plan, (), observed)
        plan_policy = planning.PlanPolicy(
            controller_id=self.policy.controller_id,
            now=datetime.fromtimestamp(self._clock(), UTC),
            max_delete_ratio=self.policy.max_delete_ratio,
            allow_mass_delete=self.policy.allow_mass_delete,
            renew_before=self.policy.renew_before,
            keep=keep,
        )
        the_plan = planning.plan(
            loaded.desired(revision),
            observed,
            policy=plan_policy,
            prices=self.prices,
            memo=self._noops,
            tags=tags,
        )
        for notice in the_plan.notices:
            log.warning(notice.message, extra={"revision": revision, "cache": notice.name})
        if the_plan.refused:
            log.error(the_plan.refused, extra={"revision": revision})
            self._save(record, error=the_plan.refused, started=started, success=False)
            return PassResult(
                revision, loaded.diagnostics, the_plan, (), observed, error=the_plan.refused
            )

        outcomes = self._apply(the_plan, revision=revision)
        after: ObservedState | None = observed
        if outcomes:
            try:
                after = self.provider.observe()
            except GitSyncError as exc:
                after = None
                log.error("cannot observe after applying: %s", exc, extra={"revision": revision})
        else:
            self._quiet = _QuietMemo(
                revision=revision,
                observed=observed,
                keep=keep,
                tags=tags,
                plan=the_plan,
                until=_next_deadline(observed, renew_before=self.policy.renew_before),
            )
        failures = [o for o in outcomes if o.error]
        error = "; ".join(f"{o.action.name}: {o.error}" for o in failures) or None
        self.desired_caches = loaded.caches
        record = replace(
            record,
            applied_revision=revision,
            kept_names=tuple(sorted(c.name for c in loaded.caches if not c.prune)),
        )
        self._save(record, error=error, started=started, success=error is None)
        return PassResult(revision, loaded.diagnostics, the_plan, outcomes, after, error=error)

    def _load(self, *, tree: Path, revision: str | None) -> specs.LoadResult:
        """Load and validate a revision's files, once per revision: commits are immutable."""
        if revision is not None and self._loaded is not None:
            last_tree, last_revision, last_result = self._loaded
            if (last_tree, last_revision) == (tree, revision):
                return last_result
        result = specs.load_repository([tree], root=tree, cache=self._files)
        if revision is not None:
            self._loaded = (tree, revision, result)
        return result

    def _apply(self, the_plan: Plan, *, revision: str | None) -> tuple[ActionOutcome, ...]:
        changes = the_plan.changes
        if not changes:
            return ()
        workers = max(1, min(self.policy.max_workers, len(changes)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gitsync-apply") as pool:
            futures = [pool.submit(self._run_action, a, revision) for a in changes]
            return tuple(f.result() for f in futures)

    def follow_tags(self, source: Callable[[], TagDigests]) -> None:
        """Plan with the digests `source()` gives at each pass (`DigestRefresher.tag_digests`),
        so a cache that follows its tags is rebuilt when one moves."""
        self._tags = source

    def continue_while(self, check: Callable[[], bool]) -> None:
        """Take actions only while `check()` holds; leader election passes "still the leader",
        so a replica that lost its lease stops between actions."""
        self._should_continue = check

    def _run_action(self, action: Action, revision: str | None) -> ActionOutcome:
        if not self._should_continue():
            return ActionOutcome(
                action=action, error="skipped: no longer the leader", temporary=True
            )
        held = self.backoff.ready(action.name)
        extra = {"revision": revision, "cache": action.name, "action": action.kind.value}
        if held is not None:
            log.info("backing off until %s", _iso(held), extra=extra)
            return ActionOutcome(action=action, skipped_until=held)
        log.info("%s: %s", action.kind.value, action.reason, extra=extra)
        try:
            self._dispatch(action)
        except Exception as exc:  # one cache's failure, even a bug, must not stop the others
            temporary = isinstance(exc, TemporaryError) or not isinstance(exc, GitSyncError)
            retry_after = exc.retry_after if isinstance(exc, TemporaryError) else None
            delay = self.backoff.failed(action.name, retry_after=retry_after)
            log.warning(
                "%s failed (%s; next try in %.0f s): %s",
                action.kind.value,
                "temporary" if temporary else "permanent",
                delay,
                exc,
                extra=extra,
            )
            return ActionOutcome(action=action, error=str(exc), temporary=temporary)
        self.backoff.succeeded(action.name)
        return ActionOutcome(action=action)

    def _dispatch(self, action: Action) -> None:
        desired, observed = action.desired, action.observed
        if action.kind is ActionKind.CREATE and desired is not None:
            self.provider.create(desired, owner=self.policy.controller_id)
        elif action.kind in _REBUILDS and desired is not None and observed is not None:
            self.provider.update(desired, observed)
        elif action.kind is ActionKind.DELETE and observed is not None:
            self.provider.delete(observed)
        else:  # the planner always fills the sides an action needs
            raise ValueError(f"malformed {action.kind.value} action for {action.name!r}")

    def _save(
        self, record: ControllerRecord, *, error: str | None, started: float, success: bool
    ) -> None:
        now = self._clock()
        record = replace(
            record,
            last_error=error,
            last_reconcile_at=now,
            last_success_at=now if success else record.last_success_at,
        )
        try:
            self.records.save(record)
        except RecordSaveError as exc:  # a full disk: kept in memory, saved by a later pass
            log.error("%s", exc)
        log.debug("pass took %.3f s", now - started)


def _next_deadline(observed: ObservedState, *, renew_before: timedelta | None) -> float:
    """The first moment the clock alone could change a plan: an expiry or a renewal."""
    margin = renew_before or timedelta(0)
    moments = [
        (c.expires_at - margin).timestamp() for c in observed.caches if c.expires_at is not None
    ]
    return min(moments, default=float("inf"))


def keep_names(record: ControllerRecord, observed: ObservedState) -> frozenset[str]:
    """Caches never to prune: protected in the revision in force, or marked so on the provider."""
    return frozenset(record.kept_names) | {c.name for c in observed.caches if not c.prune}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ waiting

BROKEN = frozenset({CacheStatus.FAILED, CacheStatus.UPDATE_FAILED})
# Of several owned copies of one name (a duplicate being deleted, say), the most advanced
# one says how the name is doing: a stale Failed copy must not fail a build in progress.
_PROGRESS = {
    CacheStatus.READY: 0,
    CacheStatus.UPDATING: 1,
    CacheStatus.PENDING: 2,
    CacheStatus.UPDATE_FAILED: 3,
    CacheStatus.FAILED: 4,
}


def desired_names(the_plan: Plan) -> tuple[str, ...]:
    """The caches a plan wants to exist (every action but a delete), sorted."""
    return tuple(sorted({a.name for a in the_plan.actions if a.kind is not ActionKind.DELETE}))


def cache_states(
    observed: ObservedState, names: Collection[str], *, owner: str
) -> dict[str, ObservedCache | None]:
    """Each name's owned cache, the most advanced copy; None when the provider lists none yet."""
    states: dict[str, ObservedCache | None] = dict.fromkeys(names)
    for cache in observed.caches:
        if cache.name not in states or cache.owner != owner:
            continue
        best = states[cache.name]
        if best is None or _PROGRESS[cache.status] < _PROGRESS[best.status]:
            states[cache.name] = cache
    return states


class WaitOutcome(enum.StrEnum):
    READY = "ready"  # every desired cache is Ready
    FAILED = "failed"  # at least one is Failed or UpdateFailed
    TIMED_OUT = "timed out"
    STOPPED = "stopped"  # the caller asked to stop (a signal)


@dataclass(frozen=True, slots=True)
class WaitResult:
    outcome: WaitOutcome
    caches: Mapping[str, ObservedCache | None]  # as last observed
    seconds: float
    error: str | None = None  # the last failed observation, if the last one failed

    @property
    def failed(self) -> tuple[ObservedCache, ...]:
        return tuple(c for c in self.caches.values() if c is not None and c.status in BROKEN)

    @property
    def building(self) -> tuple[str, ...]:
        """Names not Ready (and not broken): still Pending, Updating or not listed yet."""
        return tuple(
            name
            for name, c in self.caches.items()
            if c is None or c.status in (CacheStatus.PENDING, CacheStatus.UPDATING)
        )


def wait_until_ready(
    *,
    provider: Provider,
    names: Collection[str],
    owner: str,
    timeout_seconds: float,
    sleep: Callable[[float], bool],
    clock: Callable[[], float] = time.monotonic,
    poll_seconds: float = 0.5,
    max_poll_seconds: float = 5.0,
    on_progress: Callable[[Mapping[str, ObservedCache | None], float], None] | None = None,
) -> WaitResult:
    """Poll `provider.observe()` until every cache in `names` is Ready, or one is broken.

    Polls start every `poll_seconds` and double up to `max_poll_seconds`: a
    quick build is seen quickly, a slow one costs few API calls. `sleep(s)`
    waits up to `s` seconds and returns True when the caller wants to stop
    (a signal arrived); `clock` is monotonic. There is always one observation
    at or after the deadline before a timeout is declared. A TemporaryError
    from `observe` is retried at the next poll; a PermanentError propagates.
    """
    started = clock()
    deadline = started + timeout_seconds
    interval = poll_seconds
    states: dict[str, ObservedCache | None] = dict.fromkeys(names)
    error: str | None = None
    while True:
        try:
            observed = provider.observe()
        except TemporaryError as exc:
            error = str(exc)
            log.warning("cannot observe the %s provider (will retry): %s", provider.name, exc)
        else:
            error = None
            states = cache_states(observed, names, owner=owner)
            if on_progress is not None:
                on_progress(states, clock() - started)
            if all(c is not None and c.status is CacheStatus.READY for c in states.values()):
                return WaitResult(WaitOutcome.READY, states, clock() - started)
            if any(c is not None and c.status in BROKEN for c in states.values()):
                return WaitResult(WaitOutcome.FAILED, states, clock() - started)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(WaitOutcome.TIMED_OUT, states, clock() - started, error)
        if sleep(min(interval, remaining)):
            return WaitResult(WaitOutcome.STOPPED, states, clock() - started, error)
        interval = min(interval * 2, max_poll_seconds)

"""`SnapshotChecked`: the snapshot behind each Ready cache looked up, at most once per interval.

A scripted provider and lookup, and a clock moved by hand, drive every rule of
gitsync/providers/snapshots.py: what is checked and when, how a gone or damaged
snapshot turns its cache Failed (and what the planner makes of that), what a
failing lookup does, the running totals the daemon counts, and that the wrapper
is still the provider it wraps. The CBS lookup itself is tested against the TKE
emulator in tests/integration/test_tencent_snapshots.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gitsync import planning
from gitsync.errors import GitSyncError, TemporaryError
from gitsync.metrics import DaemonMetrics
from gitsync.model import (
    ActionKind,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    DesiredState,
    ObservedCache,
    ObservedState,
    ProviderFields,
    SnapshotCheck,
    SnapshotCheckCounts,
    SnapshotVerdict,
)
from gitsync.pricing import PriceTable
from gitsync.providers.base import LocalView, Provider
from gitsync.providers.snapshots import (
    DAMAGED_REASON,
    FIRST_RETRY_SECONDS,
    MISSING_REASON,
    SnapshotChecked,
)

OWNER = "gitsync"
HOUR = 3600.0
START = 1_800_000_000.0
FIELDS = ProviderFields()


def cache(
    name: str,
    *,
    status: CacheStatus = CacheStatus.READY,
    snapshot: str | None = "",
    owner: str | None = OWNER,
) -> ObservedCache:
    return ObservedCache(
        name=name,
        cache_id=f"imc-{name}",
        status=status,
        images=("nginx:1.27",),
        owner=owner,
        snapshot_id=f"snap-{name}" if snapshot == "" else snapshot,
        events=(CacheEvent(type="Normal", reason="Created", message="1 images cached"),),
    )


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProvider:
    """Observes what `caches` holds; records the actions it is given."""

    caches: list[ObservedCache]
    name: str = "fake"
    fields: ProviderFields = FIELDS
    actions: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    def observe(self) -> ObservedState:
        return ObservedState(caches=tuple(self.caches), fields=self.fields)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        self.actions.append(("create", spec.name))
        return cache(spec.name, status=CacheStatus.PENDING, snapshot=None)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        self.actions.append(("update", f"{current.cache_id} {current.status}"))
        return replace(current, status=CacheStatus.UPDATING)

    def delete(self, current: ObservedCache) -> None:
        self.actions.append(("delete", current.cache_id))

    def close(self) -> None:
        self.closed = True

    def most_suitable(self, images: Sequence[str]) -> tuple[str | None, str]:
        return None, f"asked about {len(images)}"


@dataclass
class FakeLookup:
    """Answers from `states` (a snapshot id → result; absent: missing); records each call."""

    states: dict[str, SnapshotCheck] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    failure: GitSyncError | None = None
    closed: bool = False

    def check(self, snapshot_ids: Sequence[str]) -> Mapping[str, SnapshotVerdict]:
        self.calls.append(tuple(snapshot_ids))
        if self.failure is not None:
            raise self.failure
        verdicts = {}
        for snapshot_id in snapshot_ids:
            result = self.states.get(snapshot_id, SnapshotCheck.MISSING)
            detail = {
                SnapshotCheck.OK: "is NORMAL (DescribeSnapshots)",
                SnapshotCheck.DAMAGED: "is TORECYCLE, due to be recycled (DescribeSnapshots)",
                SnapshotCheck.MISSING: "is gone (DescribeSnapshots)",
            }[result]
            verdicts[snapshot_id] = SnapshotVerdict(snapshot_id, result, detail)
        return verdicts

    def close(self) -> None:
        self.closed = True


@dataclass
class Rig:
    provider: FakeProvider
    lookup: FakeLookup
    clock: Clock
    checked: SnapshotChecked


@pytest.fixture
def rig() -> Rig:
    provider = FakeProvider([cache("web"), cache("api")])
    lookup = FakeLookup({"snap-web": SnapshotCheck.OK, "snap-api": SnapshotCheck.OK})
    clock = Clock()
    checked = SnapshotChecked(provider, lookup=lookup, interval_seconds=HOUR, clock=clock)
    return Rig(provider, lookup, clock, checked)


def by_name(state: ObservedState) -> dict[str, ObservedCache]:
    return {c.name: c for c in state.caches}


# ------------------------------------------------------------------ what is checked, when


def test_the_snapshots_of_ready_caches_are_looked_up_in_one_call(rig: Rig) -> None:
    state = rig.checked.observe()

    assert rig.lookup.calls == [("snap-api", "snap-web")]
    assert [c.status for c in state.caches] == [CacheStatus.READY, CacheStatus.READY]
    assert state.caches == tuple(rig.provider.caches)  # a good snapshot changes nothing
    assert state.snapshot_checks == SnapshotCheckCounts(ok=2)


def test_a_verdict_stands_for_the_interval_then_the_snapshot_is_looked_up_again(
    rig: Rig,
) -> None:
    rig.checked.observe()
    rig.clock.now += HOUR - 1
    rig.checked.observe()
    assert len(rig.lookup.calls) == 1  # no lookup inside the interval

    rig.clock.now += 1
    state = rig.checked.observe()

    assert rig.lookup.calls == [("snap-api", "snap-web")] * 2
    assert state.snapshot_checks == SnapshotCheckCounts(ok=4)


def test_only_snapshots_whose_verdict_is_due_are_looked_up(rig: Rig) -> None:
    rig.checked.observe()
    rig.clock.now += HOUR / 2
    rig.provider.caches.append(cache("db"))  # a cache turns Ready in between
    rig.lookup.states["snap-db"] = SnapshotCheck.OK
    rig.checked.observe()
    rig.clock.now += HOUR / 2

    rig.checked.observe()

    assert rig.lookup.calls == [("snap-api", "snap-web"), ("snap-db",), ("snap-api", "snap-web")]


@pytest.mark.parametrize(
    "unchecked",
    [
        cache("building", status=CacheStatus.PENDING, snapshot=None),
        cache("updating", status=CacheStatus.UPDATING),
        cache("failed", status=CacheStatus.FAILED),
        cache("update-failed", status=CacheStatus.UPDATE_FAILED),
        cache("no-snapshot", snapshot=None),
    ],
    ids=lambda c: c.name,
)
def test_caches_that_are_not_ready_or_have_no_snapshot_are_not_checked(
    unchecked: ObservedCache,
) -> None:
    provider = FakeProvider([unchecked])
    lookup = FakeLookup()
    checked = SnapshotChecked(provider, lookup=lookup, interval_seconds=HOUR, clock=Clock())

    state = checked.observe()

    assert lookup.calls == []
    assert state.caches == (unchecked,)
    assert state.snapshot_checks == SnapshotCheckCounts()


def test_a_snapshot_no_ready_cache_uses_any_more_is_forgotten(rig: Rig) -> None:
    rig.lookup.states.pop("snap-web")  # gone
    assert by_name(rig.checked.observe())["web"].status is CacheStatus.FAILED
    # The cache is rebuilt with a new snapshot; the old verdict must not stick to anything.
    rig.provider.caches[0] = cache("web", snapshot="snap-web2")
    rig.lookup.states["snap-web2"] = SnapshotCheck.OK

    state = rig.checked.observe()

    assert by_name(state)["web"].status is CacheStatus.READY
    assert rig.lookup.calls[-1] == ("snap-web2",)
    # Ready again with the old id (say, a stale answer): looked up afresh, not remembered.
    rig.provider.caches[0] = cache("web")
    rig.lookup.states["snap-web"] = SnapshotCheck.OK
    assert by_name(rig.checked.observe())["web"].status is CacheStatus.READY
    assert rig.lookup.calls[-1] == ("snap-web",)


def test_caches_sharing_a_snapshot_cost_one_lookup_of_it() -> None:
    provider = FakeProvider([cache("a", snapshot="snap-same"), cache("b", snapshot="snap-same")])
    lookup = FakeLookup()
    checked = SnapshotChecked(provider, lookup=lookup, interval_seconds=HOUR, clock=Clock())

    state = checked.observe()

    assert lookup.calls == [("snap-same",)]
    assert {c.status for c in state.caches} == {CacheStatus.FAILED}
    assert state.snapshot_checks == SnapshotCheckCounts(missing=1)


# ---------------------------------------------------------------- a gone or damaged snapshot


def test_a_gone_snapshot_makes_its_cache_failed_with_an_event(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.lookup.states.pop("snap-web")

    with caplog.at_level(logging.WARNING, logger="gitsync.providers.snapshots"):
        state = rig.checked.observe()

    web, api = by_name(state)["web"], by_name(state)["api"]
    assert api.status is CacheStatus.READY
    assert web.status is CacheStatus.FAILED
    assert web.snapshot_problem == "snapshot snap-web is gone (DescribeSnapshots)"
    assert web.snapshot_id == "snap-web"  # still named: it says which one is gone
    assert web.events[:-1] == rig.provider.caches[0].events
    event = web.events[-1]
    assert (event.type, event.reason) == ("Warning", MISSING_REASON)
    assert "snapshot snap-web is gone (DescribeSnapshots)" in event.message
    assert event.last_timestamp == datetime.fromtimestamp(START, UTC)
    assert state.snapshot_checks == SnapshotCheckCounts(ok=1, missing=1)
    assert "snapshot snap-web is gone (DescribeSnapshots)" in caplog.text


def test_a_damaged_snapshot_makes_its_cache_failed_with_its_own_reason(rig: Rig) -> None:
    rig.lookup.states["snap-web"] = SnapshotCheck.DAMAGED

    web = by_name(rig.checked.observe())["web"]

    assert web.status is CacheStatus.FAILED
    assert web.events[-1].reason == DAMAGED_REASON
    assert web.snapshot_problem == (
        "snapshot snap-web is TORECYCLE, due to be recycled (DescribeSnapshots)"
    )


def test_the_verdict_stands_on_every_observation_of_the_interval(rig: Rig) -> None:
    rig.lookup.states.pop("snap-web")
    first = rig.checked.observe()
    rig.clock.now += 60

    again = rig.checked.observe()

    assert len(rig.lookup.calls) == 1
    assert by_name(again)["web"] == by_name(first)["web"]
    assert again.snapshot_checks == SnapshotCheckCounts(ok=1, missing=1)  # nothing new


def test_the_planner_recreates_the_cache_naming_the_snapshot_and_its_one_off_cost(
    rig: Rig,
) -> None:
    rig.lookup.states.pop("snap-web")
    observed = rig.checked.observe()
    desired = DesiredState(
        caches=(CacheSpec(name="api", images=("nginx:1.27",)), CacheSpec("web", ("nginx:1.27",)))
    )
    policy = planning.PlanPolicy(controller_id=OWNER, now=datetime.fromtimestamp(START, UTC))

    plan = planning.plan(desired, observed, policy=policy, prices=PriceTable())

    actions = {a.name: a for a in plan.actions}
    assert actions["api"].kind is ActionKind.NOOP
    web = actions["web"]
    assert web.kind is ActionKind.RECREATE
    assert web.reason == "snapshot snap-web is gone (DescribeSnapshots)"
    assert web.cost is not None
    assert web.cost.one_off > 0
    assert plan.cost.one_off == web.cost.one_off


def test_update_hands_the_failed_cache_to_the_wrapped_provider(rig: Rig) -> None:
    rig.lookup.states.pop("snap-web")
    web = by_name(rig.checked.observe())["web"]

    rig.checked.update(CacheSpec("web", ("nginx:1.27",)), web)

    assert rig.provider.actions == [("update", "imc-web Failed")]


# ------------------------------------------------------------------------ failing lookups


def test_a_failing_lookup_changes_no_cache_and_waits_before_trying_again(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.lookup.failure = TemporaryError("CBS DescribeSnapshots failed: RequestLimitExceeded")

    with caplog.at_level(logging.WARNING, logger="gitsync.providers.snapshots"):
        state = rig.checked.observe()

    assert state.caches == tuple(rig.provider.caches)
    assert state.snapshot_checks == SnapshotCheckCounts()
    assert "cannot check the snapshots of 2 Ready caches" in caplog.text
    assert "RequestLimitExceeded" in caplog.text
    # Not on every pass: the next try waits, doubling up to the interval.
    waits = []
    for _ in range(8):
        before = len(rig.lookup.calls)
        start = rig.clock.now
        while len(rig.lookup.calls) == before:
            rig.clock.now += 1
            rig.checked.observe()
        waits.append(rig.clock.now - start)
    assert waits == [FIRST_RETRY_SECONDS * 2**n for n in range(6)] + [HOUR, HOUR]


def test_after_a_failure_a_good_lookup_resets_the_wait(rig: Rig) -> None:
    rig.lookup.failure = TemporaryError("throttled")
    rig.checked.observe()
    rig.lookup.failure = None
    rig.clock.now += FIRST_RETRY_SECONDS

    state = rig.checked.observe()

    assert state.snapshot_checks == SnapshotCheckCounts(ok=2)
    rig.provider.caches.append(cache("db"))  # a new Ready cache is checked at once
    rig.lookup.states["snap-db"] = SnapshotCheck.OK
    rig.checked.observe()
    assert rig.lookup.calls[-1] == ("snap-db",)


def test_an_id_the_lookup_leaves_out_is_not_checked() -> None:
    class Partial(FakeLookup):
        def check(self, snapshot_ids: Sequence[str]) -> Mapping[str, SnapshotVerdict]:
            answered = super().check(snapshot_ids)
            return {k: v for k, v in answered.items() if k != "snap-odd"}

    provider = FakeProvider([cache("odd"), cache("web")])
    lookup = Partial({"snap-web": SnapshotCheck.OK})
    checked = SnapshotChecked(provider, lookup=lookup, interval_seconds=HOUR, clock=Clock())

    state = checked.observe()

    assert by_name(state)["odd"].status is CacheStatus.READY
    assert state.snapshot_checks == SnapshotCheckCounts(ok=1)


# --------------------------------------------------------------------- still the provider


def test_the_wrapper_is_the_provider_it_wraps(rig: Rig) -> None:
    checked = rig.checked
    assert isinstance(checked, Provider)
    assert not isinstance(checked, LocalView)  # the wrapped one is not either
    assert checked.name == "fake"
    assert checked.fields is FIELDS
    assert checked.most_suitable(["nginx"]) == (None, "asked about 1")
    assert checked.provider is rig.provider
    with pytest.raises(AttributeError):
        checked._private  # noqa: B018  # never delegated

    spec = CacheSpec("db", ("redis:7",))
    checked.create(spec, owner=OWNER)
    checked.delete(cache("db"))
    checked.close()

    assert rig.provider.actions == [("create", "db"), ("delete", "imc-db")]
    assert rig.provider.closed
    assert rig.lookup.closed


def test_the_observed_fields_pass_through(rig: Rig) -> None:
    rig.provider.fields = ProviderFields(kept=FIELDS.kept)
    assert rig.checked.observe().fields is rig.provider.fields


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_seconds must be positive"):
        SnapshotChecked(FakeProvider([]), lookup=FakeLookup(), interval_seconds=0)


# ---------------------------------------------------------------------------- the model


def test_states_that_differ_only_in_their_check_totals_are_equal() -> None:
    caches = (cache("web"),)
    assert ObservedState(caches=caches, snapshot_checks=SnapshotCheckCounts(ok=1)) == (
        ObservedState(caches=caches, snapshot_checks=SnapshotCheckCounts(ok=5))
    )


def test_check_counts_add_up_by_result() -> None:
    verdicts = [
        SnapshotVerdict("snap-a", SnapshotCheck.OK),
        SnapshotVerdict("snap-b", SnapshotCheck.MISSING),
        SnapshotVerdict("snap-c", SnapshotCheck.MISSING),
        SnapshotVerdict("snap-d", SnapshotCheck.DAMAGED),
    ]

    totals = SnapshotCheckCounts(ok=1).plus(verdicts)

    assert totals == SnapshotCheckCounts(ok=2, damaged=1, missing=2)
    assert [totals.get(r) for r in SnapshotCheck] == [2, 1, 2]


def test_a_verdict_says_what_is_wrong_only_when_something_is() -> None:
    assert SnapshotVerdict("snap-a", SnapshotCheck.OK, "is NORMAL").problem is None
    assert SnapshotVerdict("snap-a", SnapshotCheck.MISSING).problem == "snapshot snap-a missing"


# ------------------------------------------------------------------------------ metrics


def samples(registry: CollectorRegistry) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == "gitsync_snapshot_checks_total":
                found[sample.labels["result"]] = sample.value
    return found


def test_the_counter_shows_every_result_from_the_start_and_counts_what_totals_add() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry=registry, version="test")
    assert samples(registry) == {"ok": 0, "damaged": 0, "missing": 0}

    metrics.record_snapshot_checks(SnapshotCheckCounts(ok=3, missing=1))
    metrics.record_snapshot_checks(SnapshotCheckCounts(ok=3, missing=1))  # nothing new
    metrics.record_snapshot_checks(SnapshotCheckCounts(ok=5, damaged=1, missing=1))
    assert samples(registry) == {"ok": 5, "damaged": 1, "missing": 1}

    # Totals from a provider opened anew start at 0: never a decrease, its checks count.
    metrics.record_snapshot_checks(SnapshotCheckCounts(ok=1))
    metrics.record_snapshot_checks(SnapshotCheckCounts(ok=2, missing=1))
    assert samples(registry) == {"ok": 7, "damaged": 1, "missing": 2}

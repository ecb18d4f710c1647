"""The no-op memo never changes a plan: with or without it, the same actions come out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gitsync import planning
from gitsync.model import CacheSpec, CacheStatus, DesiredState, ObservedCache, ObservedState
from gitsync.pricing import PriceTable

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
POLICY = planning.PlanPolicy(controller_id="g", now=NOW)


def world(n: int) -> tuple[list[CacheSpec], list[ObservedCache]]:
    specs = [CacheSpec(name=f"c{i:03d}", images=(f"app-{i}:1",)) for i in range(n)]
    caches = [
        ObservedCache(
            name=s.name,
            cache_id=f"imc-{i:08d}",
            status=CacheStatus.READY,
            images=s.images,
            owner="g",
            created_at=NOW - timedelta(days=1),
            expires_at=NOW + timedelta(hours=1) if i % 7 == 0 else None,
        )
        for i, s in enumerate(specs)
    ]
    return specs, caches


def both(specs: list[CacheSpec], caches: list[ObservedCache], memo: planning.NoopMemo) -> None:
    desired, observed = DesiredState(tuple(specs), "r"), ObservedState(tuple(caches))
    with_memo = planning.plan(desired, observed, policy=POLICY, prices=PriceTable(), memo=memo)
    plain = planning.plan(desired, observed, policy=POLICY, prices=PriceTable())
    assert with_memo == plain


def test_memo_gives_the_same_plans_through_a_sequence_of_changes() -> None:
    specs, caches = world(60)
    memo = planning.NoopMemo()
    both(specs, caches, memo)
    both(specs, caches, memo)  # every no-op now comes from the memo
    specs[5] = replace(specs[5], images=("app-5:2",))  # a changed spec: a new object
    both(specs, caches, memo)
    caches[9] = replace(caches[9], status=CacheStatus.FAILED)  # a changed cache
    both(specs, caches, memo)
    del specs[20]  # a cache Git dropped
    both(specs, caches, memo)
    later = planning.PlanPolicy(controller_id="g", now=NOW + timedelta(hours=2))
    desired, observed = DesiredState(tuple(specs), "r"), ObservedState(tuple(caches))
    expired = planning.plan(desired, observed, policy=later, prices=PriceTable(), memo=memo)
    # Caches that can expire are never remembered: the clock alone changed their action.
    assert {a.name for a in expired.actions if a.kind.value == "recreate"} >= {"c000", "c007"}


def test_memo_is_used_for_unchanged_objects() -> None:
    specs, caches = world(10)
    memo = planning.NoopMemo()
    desired, observed = DesiredState(tuple(specs), "r"), ObservedState(tuple(caches))
    first = planning.plan(desired, observed, policy=POLICY, prices=PriceTable(), memo=memo)
    second = planning.plan(desired, observed, policy=POLICY, prices=PriceTable(), memo=memo)
    reused = [a for a, b in zip(first.actions, second.actions, strict=True) if a is b]
    assert len(reused) == sum(1 for c in caches if c.expires_at is None)


def test_a_prune_annotation_change_alone_is_an_update() -> None:
    spec = CacheSpec(name="base", images=("alpine:3.20.3",), prune=False)
    cache = ObservedCache(
        name="base", cache_id="imc-1", status=CacheStatus.READY, images=spec.images, owner="g"
    )
    result = planning.plan(
        DesiredState((spec,), "r"), ObservedState((cache,)), policy=POLICY, prices=PriceTable()
    )
    (action,) = result.actions
    assert action.kind.value == "update"
    assert [c.field for c in action.changes] == [planning.PRUNE_FIELD]
    assert "enabled → disabled" in action.reason

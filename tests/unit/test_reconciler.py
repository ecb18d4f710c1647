"""The reconcile pass's safety rules, against an in-memory provider double.

The double records every call; the real providers are tested against real
servers in tests/integration. What is under test here is the pass itself:
validation gates everything, a refused plan applies nothing, one failing cache
does not block the others, failures back off, and the record survives.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gitsync.controller_record import RecordFile
from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import CacheSpec, CacheStatus, ObservedCache, ObservedState
from gitsync.pricing import PriceTable
from gitsync.reconciler import Backoff, ReconcilePolicy, Reconciler, keep_names

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


class MemoryProvider:
    name = "memory"

    def __init__(self) -> None:
        self.caches: dict[str, ObservedCache] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        self._next = 0

    def observe(self) -> ObservedState:
        return ObservedState(caches=tuple(self.caches.values()))

    def _check(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        if name in self.fail:
            raise self.fail[name]

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        self._check("create", spec.name)
        self._next += 1
        cache = ObservedCache(
            name=spec.name,
            cache_id=f"imc-{self._next:08d}",
            status=CacheStatus.READY,
            images=spec.images,
            image_cache_size_gib=spec.image_cache_size_gib,
            retention_days=spec.retention_days,
            image_pull_secrets=spec.image_pull_secrets,
            owner=owner,
            created_at=NOW,
            prune=spec.prune,
        )
        self.caches[spec.name] = cache
        return cache

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        self._check("update", spec.name)
        cache = replace(
            current,
            images=spec.images,
            image_cache_size_gib=spec.image_cache_size_gib,
            retention_days=spec.retention_days,
            image_pull_secrets=spec.image_pull_secrets,
            status=CacheStatus.READY,
            prune=spec.prune,
        )
        self.caches[spec.name] = cache
        return cache

    def delete(self, current: ObservedCache) -> None:
        self._check("delete", current.name)
        self.caches.pop(current.name, None)

    def close(self) -> None:
        pass


def write_cache(tree: Path, name: str, *images: str, extra: str = "") -> None:
    lines = "".join(f"    - {image}\n" for image in images)
    (tree / f"{name}.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\n{extra}spec:\n  images:\n{lines}",
        encoding="utf-8",
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> tuple[Reconciler, MemoryProvider, Path, FakeClock]:
    tree = tmp_path / "repo"
    tree.mkdir()
    provider = MemoryProvider()
    clock = FakeClock()
    reconciler = Reconciler(
        provider=provider,
        records=RecordFile(tmp_path / "data"),
        policy=ReconcilePolicy(controller_id="gitsync", backoff_base_seconds=10.0),
        prices=PriceTable(),
        clock=clock,
        rng=random.Random(7),
    )
    return reconciler, provider, tree, clock


def test_a_valid_revision_is_applied_and_recorded(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(tree, "web", "nginx:1.27.2")
    write_cache(tree, "tools", "busybox:1.36.1")
    result = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert result.converged
    assert sorted(provider.calls) == [("create", "tools"), ("create", "web")]
    record = reconciler.records.load()
    assert record.applied_revision == "a" * 40
    assert record.spec_valid
    assert record.last_error is None


def test_an_invalid_revision_changes_and_deletes_nothing(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(tree, "web", "nginx:1.27.2")
    write_cache(tree, "tools", "busybox:1.36.1")
    reconciler.reconcile(tree=tree, revision="a" * 40)
    provider.calls.clear()
    (tree / "tools.yaml").unlink()  # would delete "tools"...
    write_cache(tree, "web", "NGINX:bad")  # ...but the revision is invalid
    result = reconciler.reconcile(tree=tree, revision="b" * 40)
    assert not result.valid
    assert provider.calls == []
    assert set(provider.caches) == {"web", "tools"}
    record = reconciler.records.load()
    assert record.applied_revision == "a" * 40
    assert record.newest_revision == "b" * 40
    assert not record.spec_valid
    assert record.diagnostics_by_severity.get("error", 0) >= 1
    assert "stays in force" in (record.last_error or "")


def test_deleting_every_cache_is_refused_by_the_guard(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(tree, "web", "nginx:1.27.2")
    write_cache(tree, "tools", "busybox:1.36.1")
    reconciler.reconcile(tree=tree, revision="a" * 40)
    provider.calls.clear()
    for path in tree.iterdir():
        path.unlink()
    result = reconciler.reconcile(tree=tree, revision="c" * 40)
    assert result.plan is not None
    assert result.plan.refused
    assert provider.calls == []
    assert set(provider.caches) == {"web", "tools"}
    assert reconciler.records.load().applied_revision == "a" * 40


def test_one_failing_cache_does_not_block_the_others_and_backs_off(world) -> None:
    reconciler, provider, tree, clock = world
    write_cache(tree, "web", "nginx:1.27.2")
    write_cache(tree, "tools", "busybox:1.36.1")
    provider.fail["web"] = TemporaryError("registry unreachable")
    result = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert "tools" in provider.caches
    assert not result.converged
    assert [o.action.name for o in result.outcomes if o.error] == ["web"]
    assert "web: registry unreachable" in (reconciler.records.load().last_error or "")

    provider.calls.clear()
    reconciler.reconcile(tree=tree, revision="a" * 40)
    assert provider.calls == []  # inside the backoff window: not tried again

    clock.now += 3600
    del provider.fail["web"]
    result = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert provider.calls == [("create", "web")]
    assert result.converged


def test_prune_disabled_cache_is_kept_after_its_spec_leaves_git(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(
        tree,
        "base",
        "alpine:3.20.3",
        extra="  annotations:\n    gitsync.io/prune: disabled\n",
    )
    write_cache(tree, "web", "nginx:1.27.2")
    write_cache(tree, "tools", "busybox:1.36.1")
    reconciler.reconcile(tree=tree, revision="a" * 40)
    (tree / "base.yaml").unlink()
    result = reconciler.reconcile(tree=tree, revision="b" * 40)
    assert "base" in provider.caches
    assert result.plan is not None
    assert any(n.name == "base" for n in result.plan.notices)


def test_drift_is_repaired_on_the_next_pass_of_the_same_revision(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(tree, "web", "nginx:1.27.2")
    reconciler.reconcile(tree=tree, revision="a" * 40)
    del provider.caches["web"]  # deleted behind gitsync's back
    provider.calls.clear()
    result = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert provider.calls == [("create", "web")]
    assert result.converged


def test_permanent_errors_are_reported_with_the_cache_name(world) -> None:
    reconciler, provider, tree, _ = world
    write_cache(tree, "web", "nginx:1.27.2")
    provider.fail["web"] = PermanentError("manifest unknown")
    result = reconciler.reconcile(tree=tree, revision="a" * 40)
    (outcome,) = result.outcomes
    assert outcome.error == "manifest unknown"
    assert not outcome.temporary


def test_backoff_grows_and_honours_retry_after() -> None:
    clock = FakeClock()
    backoff = Backoff(base=10, maximum=100, clock=clock, rng=random.Random(1))
    delays = [backoff.failed("x") for _ in range(6)]
    assert 5 <= delays[0] <= 10
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(delays))
    assert max(delays) <= 100
    assert backoff.failed("y", retry_after=500) == 500
    assert backoff.ready("x") is not None
    backoff.succeeded("x")
    assert backoff.ready("x") is None


def test_keep_names_joins_record_and_provider_marks(tmp_path: Path) -> None:
    record = replace(RecordFile(tmp_path).load(), kept_names=("a",))
    observed = ObservedState(
        caches=(
            ObservedCache(
                name="b", cache_id="imc-1", status=CacheStatus.READY, images=(), prune=False
            ),
            ObservedCache(name="c", cache_id="imc-2", status=CacheStatus.READY, images=()),
        )
    )
    assert keep_names(record, observed) == {"a", "b"}

"""The metric contract on a fresh registry: names, labels, and series that vanish with caches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from gitsync.metrics import (
    WEBHOOK_HOOKS,
    WEBHOOK_OUTCOMES,
    DaemonMetrics,
    ExpositionRegistry,
    RequestCounts,
    StateExposition,
    StateView,
    UsageMetrics,
)
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.pricing import PriceTable
from gitsync.suggest.model import SuggestionKind
from gitsync.triggers import TRIGGER_SOURCES, TriggerQueue

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def cache(name: str, *, status: CacheStatus = CacheStatus.READY, owner: str = "g") -> ObservedCache:
    return ObservedCache(
        name=name,
        cache_id=f"imc-{name}",
        status=status,
        images=("nginx:1.27.2", "busybox:1.36.1"),
        image_cache_size_gib=30,
        owner=owner,
        created_at=NOW - timedelta(hours=10),
        expires_at=NOW + timedelta(days=2),
        snapshot_id="snap-1",
        content_bytes=5 * 2**30,
    )


class World:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.usage = UsageMetrics(registry=self.registry)
        self.view = StateView(applied_revision="abc", desired=(), observed=(), controller_id="g")
        self.registry.register(
            StateExposition(
                provider="local",
                view=lambda: self.view,
                prices=PriceTable(),
                usage=self.usage,
                clock=NOW.timestamp,
            )
        )

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def world() -> World:
    return World()


def test_per_cache_series_follow_the_provider_and_vanish(world: World) -> None:
    world.view = StateView(
        applied_revision="abc",
        desired=(
            CacheSpec(name="web", images=("nginx:1.27.2",)),
            CacheSpec(name="gone", images=("a:1",)),
        ),
        observed=(cache("web"), cache("foreign", owner="someone-else")),
        controller_id="g",
    )
    assert world.value("gitsync_applied_revision_info", revision="abc") == 1
    info = {"cache": "web", "provider": "local", "cache_id": "imc-web", "status": "Ready"}
    assert world.value("gitsync_cache_info", **info) == 1
    web = {"cache": "web", "provider": "local"}
    assert world.value("gitsync_cache_ready", **web) == 1
    assert world.value("gitsync_cache_ready", cache="gone", provider="local") == 0
    assert world.value("gitsync_cache_desired", cache="gone", provider="local") == 1
    assert world.value("gitsync_cache_capacity_bytes", **web) == 30 * 2**30
    assert world.value("gitsync_cache_content_bytes", **web) == 5 * 2**30
    assert world.value("gitsync_cache_images", **web) == 2
    assert (
        world.value("gitsync_cache_expiry_timestamp_seconds", **web)
        == (NOW + timedelta(days=2)).timestamp()
    )
    # Foreign caches are listed but never priced or alerted on as ours.
    assert world.value("gitsync_cache_capacity_bytes", cache="foreign", provider="local") is None

    world.view = StateView(applied_revision="def", desired=(), observed=(), controller_id="g")
    assert world.value("gitsync_cache_info", **info) is None
    assert world.value("gitsync_applied_revision_info", revision="abc") is None
    assert world.value("gitsync_cache_ready", **web) is None


def test_costs_per_hour_and_accrued(world: World) -> None:
    world.view = StateView("abc", (), (cache("web"),), "g")
    prices = PriceTable()
    snapshot = world.value(
        "gitsync_cache_cost_per_hour", cache="web", provider="local", component="snapshot"
    )
    assert snapshot == pytest.approx(5 * prices.snapshot_per_gib_hour)
    assert world.value(
        "gitsync_cost_total", cache="web", provider="local", component="snapshot"
    ) == (pytest.approx(snapshot * 10))
    world.usage.set_pods_running("web", 3)
    world.usage.add_disk_hours("web", size_gib=30, hours=2)
    disk = world.value(
        "gitsync_cache_cost_per_hour", cache="web", provider="local", component="disk"
    )
    assert disk == pytest.approx(3 * 30 * prices.disk_per_gib_hour)
    assert world.value("gitsync_cost_total", cache="web", provider="local", component="disk") == (
        pytest.approx(60 * prices.disk_per_gib_hour)
    )
    assert world.value("gitsync_pricing_info", currency=prices.currency) == 1


def test_lookups_and_startup(world: World) -> None:
    world.usage.record(cache="web", result="hit", seconds=0.5)
    world.usage.record(cache=None, result="miss")
    assert world.value("gitsync_cache_lookups_total", cache="web", result="hit") == 1
    assert world.value("gitsync_cache_lookups_total", cache="", result="miss") == 1
    assert world.value("gitsync_startup_seconds_count", result="hit") == 1
    with pytest.raises(ValueError, match="not one of"):
        world.usage.record(cache="web", result="maybe")


def test_saved_seconds_add_up_per_cache_and_start_at_zero(world: World) -> None:
    saved = "gitsync_cache_saved_seconds_total"
    world.usage.record(cache=None, result="miss", seconds=9.0)
    assert world.value(saved, cache="") is None  # a miss names no cache, saves nothing
    world.usage.record(cache="web", result="partial", seconds=4.0)
    assert world.value(saved, cache="web") == 0  # used, saved nothing yet: 0, not absent
    world.usage.record(cache="web", result="hit", seconds=0.5)
    world.usage.record_saved(cache="web", seconds=8.5)
    world.usage.record_saved(cache="web", seconds=1.25)
    world.usage.record_saved(cache="api", seconds=3.0)
    assert world.value(saved, cache="web") == pytest.approx(9.75)
    assert world.value(saved, cache="api") == pytest.approx(3.0)


@pytest.mark.parametrize("seconds", [0.0, -2.0, float("nan"), float("inf"), float("-inf")])
def test_saved_seconds_ignore_nothing_saved(world: World, seconds: float) -> None:
    world.usage.record_saved(cache="web", seconds=2.0)
    world.usage.record_saved(cache="web", seconds=seconds)
    assert world.value("gitsync_cache_saved_seconds_total", cache="web") == 2.0
    world.usage.record_saved(cache="new", seconds=seconds)  # and makes no series of its own
    assert world.value("gitsync_cache_saved_seconds_total", cache="new") is None


def test_saved_seconds_need_a_cache(world: World) -> None:
    with pytest.raises(ValueError, match="need the cache"):
        world.usage.record_saved(cache="", seconds=1.0)


def test_saved_seconds_exposition_is_a_counter_with_one_label() -> None:
    registry = ExpositionRegistry()
    usage = UsageMetrics(registry=registry)
    usage.record_saved(cache='we"b', seconds=2.5)
    text = registry.exposition().decode()
    assert "# TYPE gitsync_cache_saved_seconds_total counter\n" in text
    assert 'gitsync_cache_saved_seconds_total{cache="we\\"b"} 2.5\n' in text
    assert registry.get_sample_value("gitsync_cache_saved_seconds_total", {"cache": 'we"b'}) == 2.5


def test_suggestions_by_kind_are_all_exposed_and_replaced_as_a_whole() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry=registry, version="1.2.3")

    def pending() -> dict[str, float | None]:
        return {
            kind.value: registry.get_sample_value("gitsync_suggestions", {"kind": kind.value})
            for kind in SuggestionKind
        }

    assert set(pending()) == {"add-image", "new-cache", "bump-tag", "remove-cache", "resize"}
    assert set(pending().values()) == {0}
    metrics.set_suggestions({"bump-tag": 2, SuggestionKind.NEW_CACHE: 1})
    assert pending() == {
        "add-image": 0,
        "new-cache": 1,
        "bump-tag": 2,
        "remove-cache": 0,
        "resize": 0,
    }
    metrics.set_suggestions({"remove-cache": 3})  # a kind left out has none pending now
    assert pending() == {
        "add-image": 0,
        "new-cache": 0,
        "bump-tag": 0,
        "remove-cache": 3,
        "resize": 0,
    }
    with pytest.raises(ValueError, match="'grow' is not one of"):
        metrics.set_suggestions({"grow": 1})
    with pytest.raises(ValueError, match="negative"):
        metrics.set_suggestions({"resize": -1})
    assert pending()["remove-cache"] == 3  # a refused call changes nothing


def test_daemon_metrics_names() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry=registry, version="1.2.3")
    metrics.record_diagnostics(valid=False, counts={"error": 2})
    metrics.reconciles.labels(result="success").inc()
    metrics.fetch_errors.inc()
    assert registry.get_sample_value("gitsync_build_info", {"version": "1.2.3"}) == 1
    assert registry.get_sample_value("gitsync_spec_valid") == 0
    assert registry.get_sample_value("gitsync_spec_diagnostics", {"severity": "error"}) == 2
    assert registry.get_sample_value("gitsync_reconciles_total", {"result": "success"}) == 1
    assert registry.get_sample_value("gitsync_reconciles_total", {"result": "error"}) == 0
    assert registry.get_sample_value("gitsync_source_fetch_errors_total") == 1


def test_webhook_and_trigger_counts_are_read_at_scrape_time() -> None:
    registry = ExpositionRegistry()
    webhooks: dict[tuple[str, str], int] = {}
    queue = TriggerQueue()
    registry.register(RequestCounts(webhooks=lambda: webhooks, triggers=queue.counts_by_source))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # Every known series exists from the start, at zero.
    for hook in WEBHOOK_HOOKS:
        for outcome in WEBHOOK_OUTCOMES:
            assert value("gitsync_webhook_requests_total", hook=hook, outcome=outcome) == 0
    for source in TRIGGER_SOURCES:
        assert value("gitsync_triggers_total", source=source) == 0

    webhooks[("github", "triggered")] = 2
    webhooks[("gitlab", "unauthorized")] = 1
    queue.put("start")
    queue.put("webhook:github")
    queue.put("webhook:gitlab")
    queue.put("watch")
    queue.put("poll")  # not a known source: counted as "other", never as a label of its own
    assert queue.wait(0) == ("start", "webhook:github", "webhook:gitlab", "watch", "poll")
    assert queue.wait(0) == ()  # timed out: the poll timer's turn
    queue.close()
    queue.put("webhook:generic")  # a stopping daemon takes no more triggers
    assert queue.wait(0) == ()  # closed, not timed out

    assert value("gitsync_webhook_requests_total", hook="github", outcome="triggered") == 2
    assert value("gitsync_webhook_requests_total", hook="gitlab", outcome="unauthorized") == 1
    assert value("gitsync_webhook_requests_total", hook="generic", outcome="refused") == 0
    counts = {source: value("gitsync_triggers_total", source=source) for source in TRIGGER_SOURCES}
    assert counts == {
        "start": 1,
        "interval": 1,
        "webhook": 2,
        "watch": 1,
        "leader": 0,
        "refresh": 0,
        "other": 1,
    }
    text = registry.exposition().decode()
    assert "# TYPE gitsync_webhook_requests_total counter" in text
    assert 'gitsync_triggers_total{source="webhook"} 2.0' in text

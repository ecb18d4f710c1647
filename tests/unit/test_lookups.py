"""`gitsync.lookups.LookupSink`: each lookup reaches the savings, the counter and the store."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gitsync.lookups import LookupSink
from gitsync.metrics import UsageMetrics
from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.observations.savings import SavingsEstimator

IMAGE = "registry.example.com/team/app:1"


def lookup(result: LookupResult, *, seconds: float | None, cache: str | None = "web") -> Lookup:
    return Lookup(
        image=IMAGE,
        result=result,
        at=1_000.0,
        source=LookupSource.POD,
        cache=cache,
        seconds=seconds,
    )


class Kept:
    def __init__(self) -> None:
        self.lookups: list[Lookup] = []

    def record(self, lookup: Lookup) -> None:
        self.lookups.append(lookup)


def saved(registry: CollectorRegistry, cache: str) -> float | None:
    return registry.get_sample_value("gitsync_cache_saved_seconds_total", {"cache": cache})


def test_a_hit_is_credited_what_the_misses_of_its_image_took() -> None:
    registry = CollectorRegistry()
    kept = Kept()
    sink = LookupSink(
        recorder=kept,
        savings=SavingsEstimator(pull_bytes_per_second=50e6),
        saved=UsageMetrics(registry=registry),
    )
    sink.observe_all([lookup(LookupResult.MISS, seconds=30.0, cache=None)])
    sink.observe(lookup(LookupResult.MISS, seconds=50.0, cache=None))
    sink.observe(lookup(LookupResult.HIT, seconds=4.0))
    sink.observe(lookup(LookupResult.PARTIAL, seconds=20.0))

    assert saved(registry, "web") == 36.0  # the misses' mean, 40 s, less the hit's 4 s
    assert [k.result for k in kept.lookups] == ["miss", "miss", "hit", "partial"]


def test_without_a_store_lookups_still_count_and_nothing_is_invented() -> None:
    registry = CollectorRegistry()
    sink = LookupSink(
        recorder=None,
        savings=SavingsEstimator(pull_bytes_per_second=50e6),
        saved=UsageMetrics(registry=registry),
    )
    sink.observe(lookup(LookupResult.HIT, seconds=1.0))  # no miss seen, no size: 0 saved
    assert not saved(registry, "web")

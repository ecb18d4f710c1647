"""The refresher's scheduling, backoff and counting, with a fake clock and a fake registry.

The registry side (one real HEAD per image, credentials, a real failing
registry) is tests/integration/test_refresh_local.py; here every decision is driven
by time the test sets, so each assertion can fail and none waits.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from gitsync.backoff import backoff_delay
from gitsync.errors import PermanentError, TemporaryError
from gitsync.imageref import ImageRef
from gitsync.metrics import RefreshMetrics
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.providers.local.mirrorview import serving
from gitsync.refresh import DigestRefresher

START = datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp()
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
APP = "reg.example.com/team/app:1"
WEB = "reg.example.com/team/web:2"
OTHER = "other.example.com/x/y:3"


def wait_until(probe: Callable[[], object], *, what: str) -> None:
    """Poll `probe`; fail (never fall through) after 30 s."""
    deadline = time.monotonic() + 30
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Registry:
    """Answers from `digests` (canonical ref → digest); `fail` by registry host or ref."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {APP: D1, WEB: D1, OTHER: D1}
        self.fail: dict[str, Exception] = {}
        self.calls: list[tuple[str, tuple[tuple[str, ...], ...]]] = []
        self._lock = threading.Lock()

    def __call__(self, ref: ImageRef, secret_sets: Sequence[Sequence[str]]) -> str:
        with self._lock:
            self.calls.append((str(ref), tuple(tuple(s) for s in secret_sets)))
        failure = self.fail.get(str(ref)) or self.fail.get(ref.registry)
        if failure is not None:
            raise failure
        return self.digests[str(ref)]

    def asked(self) -> list[str]:
        with self._lock:
            return sorted(ref for ref, _ in self.calls)


class World:
    def __init__(self, *specs: CacheSpec, default: float | None = None) -> None:
        self.clock = Clock()
        self.registry = Registry()
        self.specs = list(specs)
        self.caches: list[ObservedCache] = []
        self.changes = 0
        self.metrics_registry = CollectorRegistry()
        self.refresher = DigestRefresher(
            resolve=self.registry,
            desired=lambda: self.specs,
            default_interval_seconds=default,
            observed=lambda: self.caches,
            owner="gitsync",
            metrics=RefreshMetrics(registry=self.metrics_registry),
            on_change=self._changed,
            clock=self.clock,
            rng=random.Random(3),
            backoff_base_seconds=30.0,
            backoff_max_seconds=600.0,
            max_workers=1,  # images asked in order: which one is held back is known
        )

    def _changed(self) -> None:
        self.changes += 1

    def at(self, seconds: float) -> World:
        self.clock.now = START + seconds
        return self

    def checks(self, result: str) -> float:
        value = self.metrics_registry.get_sample_value(
            "gitsync_image_digest_checks_total", {"result": result}
        )
        return value or 0.0

    def moved(self, cache: str) -> float:
        value = self.metrics_registry.get_sample_value(
            "gitsync_image_digest_changes_total", {"cache": cache}
        )
        return value or 0.0


def spec(name: str, *images: str, refresh: float | None = 10.0, secrets: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return CacheSpec(name=name, images=images, refresh_seconds=refresh, image_pull_secrets=secrets)


def holding(name: str, image: str, digest: str, *, built: float = START - 60) -> ObservedCache:
    return ObservedCache(
        name=name,
        cache_id=f"imc-{name}",
        status=CacheStatus.READY,
        images=(image,),
        owner="gitsync",
        image_digests=((image, digest),),
        image_digests_at=datetime.fromtimestamp(built, UTC),
        snapshot_id="snap-1",
    )


# ------------------------------------------------------------------- scheduling


def test_a_cache_that_does_not_follow_its_tags_is_never_asked() -> None:
    world = World(spec("web", APP, refresh=None), spec("off", WEB, refresh=0.0), default=None)
    assert world.refresher.due(world.specs, now=START) == ()
    assert world.refresher.check().asked == ()
    assert world.registry.calls == []
    assert world.refresher.next_due(world.specs, now=START) is None


def test_the_default_interval_makes_every_cache_follow_but_zero_still_turns_one_off() -> None:
    world = World(spec("web", APP, refresh=None), spec("off", WEB, refresh=0.0), default=60.0)
    assert world.refresher.check().asked == (APP,)
    assert world.refresher.tag_digests().every_cache is True


def test_each_tag_image_is_asked_once_and_an_image_given_by_digest_never() -> None:
    pinned = f"reg.example.com/team/db@{D1}"
    world = World(
        spec("a", APP, pinned, secrets=("s1",)),
        spec("b", APP, WEB, secrets=("s2",)),
    )
    done = world.refresher.check()
    assert sorted(done.asked) == [APP, WEB]
    assert world.registry.asked() == [APP, WEB]
    # One HEAD for the image both caches name, with both caches' credentials in order.
    assert (APP, (("s1",), ("s2",))) in world.registry.calls
    resolved = world.refresher.resolved()
    assert resolved[APP].digest == D1
    assert resolved[APP].at == datetime.fromtimestamp(START, UTC)
    assert not any("@" in key for key in resolved)


def test_an_image_is_asked_again_once_its_interval_has_passed() -> None:
    world = World(spec("web", APP, refresh=10.0))
    world.refresher.check()
    assert world.at(9.999).refresher.check().asked == ()
    assert world.refresher.next_due(world.specs, now=START + 9.999) == START + 10.0
    assert world.at(10.0).refresher.check().asked == (APP,)
    assert len(world.registry.calls) == 2


def test_the_shortest_interval_of_the_caches_naming_an_image_wins() -> None:
    world = World(spec("slow", APP, refresh=3600.0), spec("fast", APP, refresh=10.0))
    world.refresher.check()
    assert world.at(10.0).refresher.check().asked == (APP,)


def test_images_no_cache_follows_any_more_are_forgotten() -> None:
    world = World(spec("web", APP, WEB))
    world.refresher.check()
    assert set(world.refresher.resolved()) == {APP, WEB}
    world.specs = [spec("web", APP)]
    world.at(1.0).refresher.check()
    assert set(world.refresher.resolved()) == {APP}


def test_the_planner_view_is_the_same_object_until_something_changes() -> None:
    world = World(spec("web", APP))
    empty = world.refresher.tag_digests()
    world.refresher.check()
    first = world.refresher.tag_digests()
    assert first is not empty
    assert first.resolved[APP].digest == D1
    world.at(1.0).refresher.check()  # nothing due: nothing asked, nothing new
    assert world.refresher.tag_digests() is first


# ---------------------------------------------------------------------- failures


def test_a_failing_registry_backs_off_and_is_retried_when_the_backoff_ends() -> None:
    world = World(spec("web", APP, WEB, OTHER, refresh=3600.0))
    world.registry.fail["reg.example.com"] = TemporaryError("503 Service Unavailable")
    first = world.refresher.check()
    # The first failure backs reg.example.com off: its next image is not asked at all.
    assert (first.asked, first.failed, first.held_back) == ((APP, OTHER), (APP,), (WEB,))
    assert world.registry.asked() == sorted([APP, OTHER])
    assert world.refresher.resolved()[APP].error == "503 Service Unavailable"
    assert world.refresher.resolved()[OTHER].digest == D1
    expected = backoff_delay(1, base=30.0, cap=600.0, rng=random.Random(3))
    until = world.refresher.next_due(world.specs, now=START + 1)
    assert until == pytest.approx(START + expected)
    held = world.at(until - START - 0.001).refresher.check()
    assert (held.asked, held.held_back) == ((), (APP,))  # WEB was counted already
    assert world.registry.asked() == sorted([APP, OTHER])  # not one request during the backoff
    assert (world.checks("ok"), world.checks("error"), world.checks("backoff")) == (1, 1, 2)
    del world.registry.fail["reg.example.com"]
    # Retried once the backoff ends, long before the hour's interval.
    retried = world.at(until - START).refresher.check()
    assert retried.asked == (APP, WEB)
    assert world.refresher.resolved()[APP].error is None
    assert world.checks("ok") == 3.0


def test_images_failing_together_back_their_registry_off_once() -> None:
    world = World(spec("web", APP, WEB, refresh=3600.0))
    world.refresher._workers = 2  # both in flight when the registry fails
    gate = threading.Barrier(2, timeout=30)
    registry = world.registry

    def both_fail(ref: ImageRef, secret_sets: Sequence[Sequence[str]]) -> str:
        gate.wait()
        raise TemporaryError("503")

    world.refresher._resolve = both_fail
    done = world.refresher.check()
    assert sorted(done.failed) == [APP, WEB]
    expected = backoff_delay(1, base=30.0, cap=600.0, rng=random.Random(3))
    assert world.refresher.next_due(world.specs, now=START) == pytest.approx(START + expected)
    assert registry.calls == []


def test_an_answer_to_a_request_sent_before_a_failure_does_not_end_its_backoff() -> None:
    ticks = iter(range(10_000))
    world = World(spec("web", APP, WEB, refresh=3600.0))
    world.refresher._workers = 2
    world.refresher._clock = lambda: START + next(ticks)  # every reading one second later
    both_sent = threading.Barrier(2, timeout=30)
    registries = world.refresher._registries

    def resolve(ref: ImageRef, _sets: Sequence[Sequence[str]]) -> str:
        both_sent.wait()
        if str(ref) == WEB:
            raise TemporaryError("503")
        # Answer only once the sibling's failure has started the registry's backoff.
        wait_until(lambda: registries.not_before.get("reg.example.com"), what="the backoff")
        return D1

    world.refresher._resolve = resolve
    done = world.refresher.check()
    assert (done.asked, done.failed) == ((APP, WEB), (WEB,))
    assert registries.not_before.get("reg.example.com") is not None  # still backing off
    assert world.refresher.resolved()[APP].digest == D1


def test_backoff_grows_with_each_failure_of_the_registry() -> None:
    world = World(spec("web", APP, refresh=3600.0))
    world.registry.fail["reg.example.com"] = TemporaryError("connection refused")
    rng = random.Random(3)
    moment = 0.0
    for attempt in (1, 2, 3):
        assert world.at(moment).refresher.check().failed == (APP,)
        delay = backoff_delay(attempt, base=30.0, cap=600.0, rng=rng)
        until = world.refresher.next_due(world.specs, now=START + moment)
        assert until == pytest.approx(START + moment + delay)
        moment = until - START
    assert world.checks("error") == 3.0


def test_a_refused_image_keeps_its_digest_and_waits_for_its_interval() -> None:
    world = World(spec("web", APP, WEB, refresh=60.0))
    world.refresher.check()
    world.registry.fail[APP] = PermanentError("404 MANIFEST_UNKNOWN")
    done = world.at(60.0).refresher.check()
    assert done.failed == (APP,)
    assert WEB in done.asked  # the registry itself is fine: no backoff
    record = world.refresher.resolved()[APP]
    assert (record.digest, record.error) == (D1, "404 MANIFEST_UNKNOWN")
    assert record.at == datetime.fromtimestamp(START, UTC)
    assert world.at(61.0).refresher.check().asked == ()
    assert world.refresher.next_due(world.specs, now=START + 61.0) == START + 120.0


def test_a_bug_in_the_resolver_is_recorded_not_raised() -> None:
    world = World(spec("web", APP))
    world.registry.fail[APP] = KeyError("boom")
    assert world.refresher.check().failed == (APP,)
    assert world.refresher.resolved()[APP].error == "'boom'"


# ------------------------------------------------------------------------- moves


def test_a_move_is_counted_once_per_cache_and_asks_for_a_pass() -> None:
    world = World(spec("web", APP), spec("api", APP))
    world.caches = [holding("web", APP, D1), holding("api", APP, D1)]
    world.refresher.check()
    assert (world.moved("web"), world.changes) == (0.0, 0)
    world.registry.digests[APP] = D2
    done = world.at(10.0).refresher.check()
    assert sorted(cache for cache, _ in done.moves) == ["api", "web"]
    (web_move,) = [move for cache, move in done.moves if cache == "web"]
    assert (web_move.image, web_move.held, web_move.resolved) == (APP, D1, D2)
    assert (world.moved("web"), world.moved("api"), world.changes) == (1.0, 1.0, 1)
    # Still moved at the next interval (the rebuild has not happened): not counted again.
    assert world.at(20.0).refresher.check().moves == ()
    # Rebuilding, then Ready with the new digest: nothing more.
    world.caches = [
        ObservedCache(
            name="web",
            cache_id="imc-web",
            status=CacheStatus.UPDATING,
            images=(APP,),
            owner="gitsync",
        ),
        holding("api", APP, D2, built=START + 25),
    ]
    assert world.at(30.0).refresher.check().moves == ()
    world.caches = [holding("web", APP, D2, built=START + 35), holding("api", APP, D2)]
    assert world.at(40.0).refresher.check().moves == ()
    # The tag moves again: a new move.
    world.registry.digests[APP] = D3
    assert sorted(c for c, _ in world.at(50.0).refresher.check().moves) == ["api", "web"]
    assert (world.moved("web"), world.changes) == (2.0, 2)


def test_moves_of_caches_of_another_controller_are_not_counted() -> None:
    world = World(spec("web", APP))
    foreign = holding("web", APP, D1)
    world.caches = [ObservedCache(**{**_fields(foreign), "owner": "someone-else"})]
    world.registry.digests[APP] = D2
    assert world.refresher.check().moves == ()


def test_without_the_caches_a_changed_digest_still_asks_for_a_pass() -> None:
    calls: list[int] = []
    digests = {APP: D1}
    refresher = DigestRefresher(
        resolve=lambda ref, _sets: digests[str(ref)],
        desired=lambda: [spec("web", APP)],
        default_interval_seconds=None,
        on_change=lambda: calls.append(1),
        clock=lambda: START,
    )
    refresher.check()
    assert calls == [1]  # a first answer may already differ from what a cache holds


def _fields(cache: ObservedCache) -> dict[str, object]:
    return {name: getattr(cache, name) for name in ObservedCache.__slots__}


# ------------------------------------------------------------------------ thread


def test_the_thread_runs_a_round_when_poked_and_stops() -> None:
    asked = threading.Event()
    specs: list[CacheSpec] = []

    def resolve(ref: ImageRef, _sets: Sequence[Sequence[str]]) -> str:
        asked.set()
        return D1

    refresher = DigestRefresher(
        resolve=resolve,
        desired=lambda: specs,
        default_interval_seconds=None,
        idle_seconds=3600.0,
    )
    refresher.start()
    try:
        specs.append(spec("web", APP))
        refresher.poke()
        assert asked.wait(30), "the poked thread never asked the registry"
    finally:
        refresher.stop(timeout=30)
    assert refresher.resolved()[APP].digest == D1


# ------------------------------------------------------------------ what serves


def test_the_mirror_serves_ready_caches_and_updating_ones_on_their_previous_snapshot() -> None:
    base = holding("web", APP, D1)
    assert serving(base)
    updating = ObservedCache(**{**_fields(base), "status": CacheStatus.UPDATING})
    assert serving(updating)
    for status in (CacheStatus.PENDING, CacheStatus.FAILED, CacheStatus.UPDATE_FAILED):
        assert not serving(ObservedCache(**{**_fields(base), "status": status}))
    nothing_yet = ObservedCache(**{**_fields(updating), "snapshot_id": None})
    assert not serving(nothing_yet)
    damaged = ObservedCache(
        **{**_fields(updating), "snapshot_id": "snap-1", "snapshot_problem": "x"}
    )
    assert not serving(damaged)

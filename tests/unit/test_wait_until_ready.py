"""`wait_until_ready`, the loop of `gitsync apply --wait`, with a scripted provider and clock.

The process tests (tests/integration/test_apply_wait.py) show it against the
Kubernetes and TKE stand-ins; here every branch is driven exactly: the poll
schedule, the deadline, broken caches, duplicates, failing observations and a
stop request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import CacheSpec, CacheStatus, ObservedCache, ObservedState
from gitsync.reconciler import WaitOutcome, WaitResult, cache_states, wait_until_ready

OWNER = "ci"
Script = Sequence[ObservedState | Exception]


def cache(
    name: str, status: CacheStatus, *, owner: str | None = OWNER, cid: str = ""
) -> ObservedCache:
    return ObservedCache(
        name=name, cache_id=cid or f"imc-{name}", status=status, images=("nginx",), owner=owner
    )


def state(*caches: ObservedCache) -> ObservedState:
    return ObservedState(caches=caches)


@dataclass
class Clock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    stop_after: int | None = None  # the sleep call at which a stop is requested

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return self.stop_after is not None and len(self.sleeps) >= self.stop_after


class ScriptedProvider:
    """Answers `observe()` from a script; the last entry repeats."""

    name = "scripted"

    def __init__(self, script: Script, clock: Callable[[], float]) -> None:
        self.script = list(script)
        self.clock = clock
        self.observed_at: list[float] = []

    def observe(self) -> ObservedState:
        self.observed_at.append(self.clock())
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(entry, Exception):
            raise entry
        return entry

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        raise AssertionError("waiting never creates")

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        raise AssertionError("waiting never updates")

    def delete(self, current: ObservedCache) -> None:
        raise AssertionError("waiting never deletes")

    def close(self) -> None:
        pass


def run(
    script: Script,
    *,
    names: Sequence[str] = ("web", "api"),
    timeout: float = 30.0,
    clock: Clock | None = None,
    progress: list[tuple[Mapping[str, ObservedCache | None], float]] | None = None,
) -> tuple[ScriptedProvider, Clock, WaitResult]:
    clock = clock or Clock()
    provider = ScriptedProvider(script, clock)
    result = wait_until_ready(
        provider=provider,
        names=names,
        owner=OWNER,
        timeout_seconds=timeout,
        sleep=clock.sleep,
        clock=clock,
        on_progress=None if progress is None else lambda s, t: progress.append((s, t)),
    )
    return provider, clock, result


PENDING = state(cache("web", CacheStatus.PENDING), cache("api", CacheStatus.PENDING))
HALF = state(cache("web", CacheStatus.READY), cache("api", CacheStatus.UPDATING))
READY = state(cache("web", CacheStatus.READY), cache("api", CacheStatus.READY))


def test_ready_when_every_cache_is_ready_polling_ever_less_often() -> None:
    progress: list[tuple[Mapping[str, ObservedCache | None], float]] = []
    provider, clock, result = run([PENDING, HALF, PENDING, READY], progress=progress)

    assert result.outcome is WaitOutcome.READY
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(provider.observed_at) == 4
    assert [round(t, 3) for _, t in progress] == [0.0, 0.5, 1.5, 3.5]
    assert {n: c.status for n, c in progress[1][0].items() if c} == {
        "web": CacheStatus.READY,
        "api": CacheStatus.UPDATING,
    }


def test_timeout_observes_once_at_the_deadline_and_names_what_is_left() -> None:
    provider, clock, result = run([HALF], timeout=30.0)

    assert result.outcome is WaitOutcome.TIMED_OUT
    # Doubling up to 5 s, and the last sleep ends exactly at the deadline.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 2.5]
    assert provider.observed_at[-1] == 1030.0
    assert result.building == ("api",)
    assert result.seconds == 30.0


@pytest.mark.parametrize("broken", [CacheStatus.FAILED, CacheStatus.UPDATE_FAILED])
def test_a_broken_cache_ends_the_wait_at_once(broken: CacheStatus) -> None:
    script = [PENDING, state(cache("web", broken), cache("api", CacheStatus.PENDING))]
    _, clock, result = run(script)

    assert result.outcome is WaitOutcome.FAILED
    assert [c.name for c in result.failed] == ["web"]
    assert clock.sleeps == [0.5]


def test_a_cache_not_listed_yet_is_still_building() -> None:
    _, _, result = run([state(cache("web", CacheStatus.READY))], timeout=1.0)

    assert result.outcome is WaitOutcome.TIMED_OUT
    assert result.caches["api"] is None
    assert result.building == ("api",)


def test_the_most_advanced_owned_copy_speaks_for_a_name() -> None:
    # An old Failed copy on its way out must not fail the new build; a Ready cache of
    # another owner is not ours to count.
    observed = state(
        cache("web", CacheStatus.FAILED, cid="imc-old"),
        cache("web", CacheStatus.PENDING, cid="imc-new"),
        cache("api", CacheStatus.READY, owner="someone-else"),
        cache("api", CacheStatus.PENDING),
    )
    states = cache_states(observed, ["web", "api"], owner=OWNER)
    assert {n: (c.cache_id, c.status) for n, c in states.items() if c} == {
        "web": ("imc-new", CacheStatus.PENDING),
        "api": ("imc-api", CacheStatus.PENDING),
    }
    _, _, result = run([observed], timeout=2.0)
    assert result.outcome is WaitOutcome.TIMED_OUT


def test_temporary_observe_errors_are_retried_and_reported_at_the_deadline() -> None:
    flaky = TemporaryError("HTTP 503 from the API")
    _, _, result = run([PENDING, flaky, READY])
    assert result.outcome is WaitOutcome.READY

    _, _, result = run([PENDING, flaky], timeout=3.0)
    assert result.outcome is WaitOutcome.TIMED_OUT
    assert result.error == "HTTP 503 from the API"
    # What was last seen is still known, for the message.
    assert result.building == ("web", "api")


def test_a_permanent_observe_error_propagates() -> None:
    with pytest.raises(PermanentError, match="forbidden"):
        run([PENDING, PermanentError("forbidden")])


def test_a_stop_request_ends_the_wait_between_polls() -> None:
    _, clock, result = run([PENDING], clock=Clock(stop_after=2))

    assert result.outcome is WaitOutcome.STOPPED
    assert clock.sleeps == [0.5, 1.0]
    assert result.building == ("web", "api")


def test_no_names_is_ready_at_once() -> None:
    provider, clock, result = run([state()], names=())
    assert result.outcome is WaitOutcome.READY
    assert clock.sleeps == []
    assert len(provider.observed_at) == 1


def test_an_event_set_from_another_thread_stops_a_real_wait() -> None:
    """With the real clock and `Event.wait`, as the CLI runs it: a signal handler sets it."""
    stop = threading.Event()
    polled = threading.Event()

    class Provider(ScriptedProvider):
        def observe(self) -> ObservedState:
            polled.set()
            return super().observe()

    def stopper() -> None:
        polled.wait(timeout=60)
        stop.set()

    thread = threading.Thread(target=stopper)
    thread.start()
    result = wait_until_ready(
        provider=Provider([PENDING], clock=lambda: 0.0),
        names=["web", "api"],
        owner=OWNER,
        timeout_seconds=3600.0,
        sleep=stop.wait,
        poll_seconds=60.0,  # far longer than the test may take: only the event ends it
        max_poll_seconds=60.0,
    )
    thread.join(timeout=60)

    assert result.outcome is WaitOutcome.STOPPED

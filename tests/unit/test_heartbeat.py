"""The heartbeat behind /healthz, on a clock the test moves: no sleeping."""

from __future__ import annotations

import pytest

from gitsync.liveness import Heartbeat, default_timeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_idle_loop_is_alive_however_long_it_waits(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.idle()
    clock.advance(86400)
    verdict = beat.check()
    assert verdict.alive
    assert "waiting for the next trigger" in verdict.reason


def test_a_pass_is_alive_up_to_the_timeout_and_dead_after_it(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.idle()
    clock.advance(500)  # idle time before the pass does not count against it
    beat.busy("a pass (webhook:github): fetching https://git.example/repo")
    clock.advance(60)
    assert beat.check().alive  # exactly the timeout is still in time

    clock.advance(0.5)
    verdict = beat.check()
    assert not verdict.alive
    assert "no progress for 60.5 s" in verdict.reason
    assert "liveness timeout of 60 s" in verdict.reason
    assert "a pass (webhook:github): fetching https://git.example/repo" in verdict.reason


def test_finishing_the_pass_is_progress_and_the_next_pass_starts_a_new_timer(
    clock: FakeClock,
) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.busy("a pass (start)")
    clock.advance(3600)
    assert not beat.check().alive

    beat.idle()  # the hung call returned and the pass ended
    assert beat.check().alive
    beat.busy("a pass (interval)")
    clock.advance(59)
    assert beat.check().alive


def test_progress_inside_a_pass_restarts_its_timer_and_keeps_its_words(
    clock: FakeClock,
) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.busy("a pass (start): reconciling revision abc with the local provider")
    for _ in range(10):  # a pull ten minutes long that reports bytes every 50 s
        clock.advance(50)
        beat.progress()
        assert beat.check().alive
    clock.advance(61)  # then nothing more arrives
    verdict = beat.check()
    assert not verdict.alive
    assert "no progress for 61.0 s" in verdict.reason
    assert "reconciling revision abc with the local provider" in verdict.reason


def test_progress_while_idle_does_not_start_a_timer(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.idle()
    beat.progress()  # a late report from a provider thread after the pass ended
    clock.advance(3600)
    assert beat.check().alive


def test_doing_changes_what_is_reported_but_not_the_timer(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.busy("a pass (start): fetching the source")
    clock.advance(40)
    beat.doing("a pass (start): reconciling revision 0123456789ab with the local provider")
    clock.advance(40)  # 80 s into the pass: a phase change is not progress
    verdict = beat.check()
    assert not verdict.alive
    assert "reconciling revision 0123456789ab with the local provider" in verdict.reason
    assert "fetching" not in verdict.reason


def test_doing_while_idle_does_not_start_a_timer(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.idle()
    beat.doing("a stray report after the pass ended")
    clock.advance(3600)
    assert beat.check().alive


def test_starting_up_counts_as_work_that_must_end_in_time(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    clock.advance(30)
    assert beat.check().alive
    clock.advance(31)
    verdict = beat.check()
    assert not verdict.alive
    assert "it is still in: starting" in verdict.reason


def test_a_clock_that_steps_back_does_not_make_a_pass_look_older(clock: FakeClock) -> None:
    beat = Heartbeat(timeout_seconds=60, clock=clock)
    beat.busy("a pass (start)")
    clock.advance(-1000)
    verdict = beat.check()
    assert verdict.alive
    assert "(0.0 s so far)" in verdict.reason


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_the_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="more than 0 seconds"):
        Heartbeat(timeout_seconds=timeout)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(1.0, 300.0), (60.0, 300.0), (100.0, 300.0), (101.0, 303.0), (3600.0, 10800.0)],
)
def test_the_default_timeout_is_the_larger_of_3_intervals_and_5_minutes(
    interval: float, expected: float
) -> None:
    assert default_timeout(interval) == expected

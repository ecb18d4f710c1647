"""TriggerQueue coalesces any number of triggers during a pass into one more pass."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitsync.triggers import TRIGGER_SOURCES, TriggerQueue, jittered_interval, trigger_source

# Generous bound for a thread to react; only a hang would exceed it.
SANITY_SECONDS = 10.0


def test_wait_returns_reasons_in_arrival_order_without_duplicates() -> None:
    queue = TriggerQueue()
    for reason in ("webhook:github", "poll", "webhook:github", "watch", "poll"):
        queue.put(reason)

    assert queue.wait(0) == ("webhook:github", "poll", "watch")
    assert queue.wait(0) == ()
    assert queue.received == 5
    assert queue.passes == 1
    assert queue.coalesced == 4


def test_wait_times_out_with_an_empty_tuple() -> None:
    queue = TriggerQueue()

    assert queue.wait(0.01) == ()
    assert queue.passes == 0
    assert not queue.pending


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        TriggerQueue().wait(-1)


def test_a_flood_from_many_threads_during_a_pass_makes_exactly_one_more_pass() -> None:
    queue = TriggerQueue()
    queue.put("poll")
    first = queue.wait(0)  # the loop starts a pass...
    assert first == ("poll",)

    # ...and while it runs, 20 threads deliver 1,000 webhooks between them.
    start = threading.Barrier(20)

    def flood(worker: int) -> None:
        start.wait()
        for i in range(50):
            queue.put("webhook:github" if i % 2 else f"webhook:generic-{worker % 3}")

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SANITY_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    assert queue.pending

    # The pass ends: exactly one further result, carrying each distinct reason once.
    second = queue.wait(0)
    assert sorted(second) == [
        "webhook:generic-0",
        "webhook:generic-1",
        "webhook:generic-2",
        "webhook:github",
    ]
    assert queue.wait(0) == ()
    assert queue.received == 1001
    assert queue.passes == 2
    assert queue.coalesced == 999


def test_a_waiting_loop_wakes_for_a_put_from_another_thread() -> None:
    queue = TriggerQueue()
    results: list[tuple[str, ...]] = []
    waiter = threading.Thread(target=lambda: results.append(queue.wait(SANITY_SECONDS)))
    waiter.start()

    queue.put("webhook:gitlab")
    waiter.join(SANITY_SECONDS)

    assert results == [("webhook:gitlab",)]


def test_close_wakes_a_waiter_and_later_waits_return_at_once() -> None:
    queue = TriggerQueue()
    results: list[tuple[str, ...]] = []
    waiter = threading.Thread(target=lambda: results.append(queue.wait(None)))
    waiter.start()

    queue.close()
    waiter.join(SANITY_SECONDS)

    assert not waiter.is_alive()
    assert results == [()]
    assert queue.closed
    # A stopping daemon starts no further pass: puts are dropped, waits do not block.
    queue.put("webhook:github")
    assert queue.wait(None) == ()
    assert queue.received == 0


def test_close_drops_reasons_that_were_pending() -> None:
    queue = TriggerQueue()
    queue.put("poll")
    queue.close()

    assert queue.wait(0) == ()
    assert queue.passes == 0


def test_distinct_reasons_are_capped_but_the_pass_stays_due() -> None:
    queue = TriggerQueue(max_reasons=3)
    for n in range(100):
        queue.put(f"delivery-{n}")

    assert queue.wait(0) == ("delivery-0", "delivery-1", "delivery-2")
    assert queue.received == 100

    queue.put("delivery-3")  # the cap applies per pass, not for ever
    assert queue.wait(0) == ("delivery-3",)


def test_triggers_are_counted_by_a_bounded_source() -> None:
    queue = TriggerQueue(max_reasons=2)
    reasons = ("start", "webhook:github", "webhook:github", "leader", "refresh", "poll", "x" * 1000)
    for reason in reasons:
        queue.put(reason)  # past the cap of reasons kept, triggers are still counted
    assert queue.wait(SANITY_SECONDS) == ("start", "webhook:github")
    assert queue.wait(0) == ()

    assert queue.counts_by_source() == {
        "start": 1,
        "interval": 1,
        "webhook": 2,
        "watch": 0,
        "leader": 1,
        "refresh": 1,
        "other": 2,
    }
    assert set(queue.counts_by_source()) == set(TRIGGER_SOURCES)
    assert [trigger_source(r) for r in ("webhook:gitlab", "watch", "webhook", "")] == [
        "webhook",
        "watch",
        "webhook",
        "other",
    ]


def test_max_reasons_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_reasons"):
        TriggerQueue(max_reasons=0)


def test_jittered_interval_spreads_within_ten_percent() -> None:
    rng = random.Random(7)
    samples = [jittered_interval(60.0, rng=rng) for _ in range(2000)]

    assert all(54.0 <= s <= 66.0 for s in samples)
    # Spread over the whole band, not clustered (2,000 uniform draws reach near both ends).
    assert min(samples) < 55.0
    assert max(samples) > 65.0


def test_jittered_interval_is_reproducible_with_a_seed() -> None:
    first = [jittered_interval(30.0, rng=random.Random(1)) for _ in range(3)]
    again = [jittered_interval(30.0, rng=random.Random(1)) for _ in range(3)]

    assert first == again


@given(
    base=st.floats(min_value=0.0, max_value=1e6),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_interval_stays_in_its_band(base: float, jitter: float, seed: int) -> None:
    value = jittered_interval(base, rng=random.Random(seed), jitter=jitter)

    assert base * (1 - jitter) - 1e-9 <= value <= base * (1 + jitter) + 1e-9


def test_jitter_zero_gives_the_base() -> None:
    assert jittered_interval(60.0, rng=random.Random(3), jitter=0.0) == 60.0


@pytest.mark.parametrize(
    ("base", "jitter", "message"),
    [(-1.0, 0.1, "poll interval"), (60.0, 1.0, "jitter"), (60.0, -0.1, "jitter")],
)
def test_jittered_interval_refuses_nonsense(base: float, jitter: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jittered_interval(base, rng=random.Random(0), jitter=jitter)

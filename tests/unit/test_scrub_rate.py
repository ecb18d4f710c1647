"""The scrub's token bucket holds its rate on an injected clock, and --scrub-rate parses."""

from __future__ import annotations

import pytest

from gitsync.config.values import parse_rate
from gitsync.errors import ConfigError
from gitsync.providers.local.scrub import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def test_the_bucket_lets_through_its_rate_and_no_more() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=1000.0, burst=1000.0, clock=lambda: time.now, wait=time.wait)
    for _ in range(50):
        assert bucket.take(200)
    # 10,000 bytes at 1,000/s, the first 1,000 from the full bucket: 9 s of waiting.
    assert time.now == pytest.approx(9.0)


def test_a_request_above_the_burst_passes_and_leaves_the_bucket_in_debt() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=100.0, burst=100.0, clock=lambda: time.now, wait=time.wait)
    assert bucket.take(500)
    assert bucket.take(100)
    assert time.now == pytest.approx(5.0)


def test_a_stop_while_waiting_ends_the_take() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=lambda: 0.0, wait=lambda _s: True)
    assert bucket.take(1)
    assert not bucket.take(1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50M", 50 * 2**20), ("1G", 2**30), ("4096", 4096), ("64k", 64 * 1024)],
)
def test_scrub_rate_accepts_bytes_with_a_binary_suffix(text: str, expected: int) -> None:
    assert parse_rate(text, what="--scrub-rate") == expected


@pytest.mark.parametrize("text", ["0", "fast", "5T", "1.5M", "-3"])
def test_scrub_rate_refuses_anything_else_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--scrub-rate"):
        parse_rate(text, what="--scrub-rate")

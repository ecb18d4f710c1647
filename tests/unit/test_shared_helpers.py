"""The small shared helpers: backoff, the RFC 3339 reader, the loopback test, GIB.

Each was once copied into several modules; these tables pin what every copy
did, so a caller that now uses the shared one behaves as before.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitsync.backoff import backoff_ceiling, backoff_delay, equal_jitter
from gitsync.netaddr import is_loopback_host
from gitsync.timeparse import parse_rfc3339
from gitsync.units import GIB

# -- GIB ---------------------------------------------------------------------------


def test_gib_is_two_to_the_thirtieth() -> None:
    assert GIB == 2**30 == 1_073_741_824


# -- backoff -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected"),
    [
        (1, 10.0, 600.0, 10.0),
        (2, 10.0, 600.0, 20.0),
        (3, 10.0, 600.0, 40.0),
        (6, 10.0, 600.0, 320.0),
        (7, 10.0, 600.0, 600.0),
        (50, 10.0, 600.0, 600.0),
        (1, 0.5, 8.0, 0.5),
        (5, 0.5, 8.0, 8.0),
        (31, 1.0, 1e12, float(2**30)),
    ],
)
def test_the_ceiling_doubles_from_base_up_to_cap(
    attempt: int, base: float, cap: float, expected: float
) -> None:
    assert backoff_ceiling(attempt, base=base, cap=cap) == expected


def test_equal_jitter_is_the_half_plus_one_uniform_draw() -> None:
    # The same draws as the expression each caller used to write out,
    # so seeded tests keep their numbers.
    ours, theirs = random.Random(7), random.Random(7)
    for ceiling in (0.0, 1.0, 10.0, 600.0):
        assert equal_jitter(ceiling, rng=ours) == ceiling / 2 + theirs.uniform(0, ceiling / 2)


def test_backoff_delay_is_jitter_over_the_ceiling() -> None:
    ours, theirs = random.Random(3), random.Random(3)
    for attempt in range(1, 10):
        ceiling = min(600.0, 10.0 * 2.0 ** (attempt - 1))
        expected = ceiling / 2 + theirs.uniform(0, ceiling / 2)
        assert backoff_delay(attempt, base=10.0, cap=600.0, rng=ours) == expected


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.001, max_value=100.0),
    cap=st.floats(min_value=0.001, max_value=10_000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_the_delay_stays_between_half_the_ceiling_and_the_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    assert ceiling <= cap
    assert ceiling >= min(base, cap)
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling


@given(
    attempt=st.integers(min_value=1, max_value=100),
    base=st.floats(min_value=0.001, max_value=100.0),
    cap=st.floats(min_value=0.001, max_value=10_000.0),
)
def test_the_ceiling_never_shrinks_as_attempts_grow(attempt: int, base: float, cap: float) -> None:
    assert backoff_ceiling(attempt + 1, base=base, cap=cap) >= backoff_ceiling(
        attempt, base=base, cap=cap
    )


# -- RFC 3339 ----------------------------------------------------------------------

CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T03:00:00Z", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),
        ("2026-11-22T03:00:00+00:00", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),
        ("2026-11-22T03:00:00.5Z", datetime(2026, 11, 22, 3, 0, 0, 500000, tzinfo=UTC)),
        (
            "2026-11-22T03:00:00.123456789Z",
            datetime(2026, 11, 22, 3, 0, 0, 123456, tzinfo=UTC),
        ),
        (
            "2026-11-22T11:00:00+08:00",
            datetime(2026, 11, 22, 11, 0, tzinfo=CST),
        ),
        ("2026-11-22T03:00:00", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),
        ("2026-11-22 03:00:00", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        ("2026-13-01T00:00:00Z", None),
        (" 2026-11-22T03:00:00Z", None),  # callers that tolerate blanks strip first
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | None) -> None:
    moment = parse_rfc3339(text)
    assert moment == expected
    if moment is not None:
        assert moment.tzinfo is not None


def test_an_offset_less_time_is_read_in_the_zone_given() -> None:
    assert parse_rfc3339("2026-11-22 11:00:00", naive_zone=CST) == datetime(
        2026, 11, 22, 3, 0, tzinfo=UTC
    )
    # An explicit offset wins over the zone for offset-less times.
    assert parse_rfc3339("2026-11-22T03:00:00Z", naive_zone=CST) == datetime(
        2026, 11, 22, 3, 0, tzinfo=UTC
    )


def test_no_zone_leaves_an_offset_less_time_naive() -> None:
    moment = parse_rfc3339("2026-11-22T03:00:00", naive_zone=None)
    assert moment == datetime(2026, 11, 22, 3, 0)
    assert moment is not None
    assert moment.tzinfo is None


# -- loopback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("[::1]", True),
        ("", False),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("[2001:db8::1]", False),
        ("registry.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_long_run_of_failures_stays_at_the_cap_and_never_overflows() -> None:

    assert backoff_ceiling(1025, base=5.0, cap=600.0) == 600.0
    assert backoff_ceiling(10**6, base=5.0, cap=600.0) == 600.0
    assert 300.0 <= backoff_delay(10**6, base=5.0, cap=600.0, rng=random.Random(1)) <= 600.0

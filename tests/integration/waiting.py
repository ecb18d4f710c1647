"""`wait_until`: poll a condition, and fail at the deadline instead of falling through.

A wait loop that simply ends at its deadline lets the test go on as if the
condition had held, so a broken feature can pass. Every wait in the
integration and reliability suites that has no helper of its own uses this
one: it returns the first truthy value of the probe, or raises
AssertionError naming what it waited for (and, if given, what it saw last).
The timeout is a bound on a hang, never a timing target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy, and return that; fail after `timeout` s.

    `detail` is called once on failure, for context (a log tail, the last status).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            context = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{context}")
        time.sleep(interval)

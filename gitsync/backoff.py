"""Exponential backoff with equal jitter, shared by every retry loop.

Why equal jitter (c/2 + U(0, c/2)): the fixed half means a failing call is
never retried in a hot loop, and the random half keeps replicas and threads
that failed together from retrying in step. The reconciler, the TKE transport,
the registry client and the pod observer all use it; the callers keep their
own bases, caps, attempt counts and Retry-After handling.
"""

from __future__ import annotations

import random

__all__ = ["backoff_ceiling", "backoff_delay", "equal_jitter"]


# 2.0 ** 1024 overflows a float: a cache failing for a week (1,024 tries at a 600 s cap)
# must not crash its retry loop. Any cap is reached long before 2^62 times the base.
_MAX_DOUBLINGS = 62


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """min(cap, base·2^(attempt−1)): `base` after the first failure, doubling up to `cap`."""
    return min(cap, base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))


def equal_jitter(ceiling: float, *, rng: random.Random) -> float:
    """A delay in [ceiling/2, ceiling]: half fixed, half uniform random."""
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """The jittered delay before retry number `attempt` (1 after the first failure)."""
    return equal_jitter(backoff_ceiling(attempt, base=base, cap=cap), rng=rng)

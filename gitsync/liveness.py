"""Whether the reconcile loop still makes progress: the truth behind `/healthz`.

Why: a pass stuck in a provider or git call (a connection that never answers,
an API that never returns) leaves the HTTP server answering, so a `/healthz`
that only says "the process runs" never gets it restarted. Python cannot
interrupt a thread blocked in I/O; a restart by Kubernetes (a failing liveness
probe) is the cure, and this module decides when to ask for one.

What counts as progress: the loop waiting for its next trigger (however long
the interval, an idle loop is not stuck), a pass finishing, or the work of a
pass moving forward (a provider reporting bytes pulled: a first pull of many
GiB is slow, not stuck). A pass that reports nothing for longer than the
timeout is not alive, whatever it waits on.

Why a monotonic clock, injected: a wall-clock step (NTP, a resumed VM) must
not kill a healthy process, and tests move the clock instead of sleeping.

Why no lock: the HTTP threads read the heartbeat precisely while the loop is
stuck, so they must never wait for anything the loop holds. The state is one
immutable object, replaced by a single assignment (atomic in CPython).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# A pass may legitimately take minutes (a first clone, large pulls); shorter
# timeouts get a slow but working controller killed in the middle of its work.
MIN_DEFAULT_TIMEOUT_SECONDS: Final = 300.0
DEFAULT_TIMEOUT_INTERVALS: Final = 3


def default_timeout(interval_seconds: float) -> float:
    """The default `--liveness-timeout`: the larger of 3 poll intervals and 5 minutes."""
    return max(DEFAULT_TIMEOUT_INTERVALS * interval_seconds, MIN_DEFAULT_TIMEOUT_SECONDS)


@dataclass(frozen=True, slots=True)
class Liveness:
    """The verdict: alive or not, and in words what the loop is doing (or why it is stuck)."""

    alive: bool
    reason: str


@dataclass(frozen=True, slots=True)
class _State:
    busy_since: float | None  # monotonic time the current pass started; None while idle
    activity: str


class Heartbeat:
    """The reconcile loop reports `busy`/`doing`/`idle`; probes ask `check()`."""

    def __init__(
        self, *, timeout_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not timeout_seconds > 0:
            raise ValueError(f"liveness timeout must be more than 0 seconds, got {timeout_seconds}")
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        # Until the loop first waits, starting up counts as work that must finish in time.
        self._state = _State(busy_since=clock(), activity="starting")

    def busy(self, activity: str) -> None:
        """Work that must end within the timeout has started (a pass); the timer restarts."""
        self._state = _State(busy_since=self._clock(), activity=activity)

    def doing(self, activity: str) -> None:
        """Say what the current work is now doing, without restarting its timer."""
        since = self._state.busy_since
        if since is not None:
            self._state = _State(busy_since=since, activity=activity)

    def progress(self) -> None:
        """The current work moved forward (bytes arrived): its timer restarts, its words stay."""
        state = self._state
        if state.busy_since is not None:
            self._state = _State(busy_since=self._clock(), activity=state.activity)

    def idle(self) -> None:
        """The work finished, or the loop waits for a trigger: alive however long it waits."""
        self._state = _State(busy_since=None, activity="waiting for the next trigger")

    def check(self) -> Liveness:
        state = self._state  # one read: a consistent pair even while the loop moves on
        if state.busy_since is None:
            return Liveness(alive=True, reason=state.activity)
        elapsed = max(0.0, self._clock() - state.busy_since)
        if elapsed <= self.timeout_seconds:
            return Liveness(alive=True, reason=f"{state.activity} ({elapsed:.1f} s so far)")
        return Liveness(
            alive=False,
            reason=(
                f"the reconcile loop has made no progress for {elapsed:.1f} s, over the "
                f"liveness timeout of {self.timeout_seconds:g} s; it is still in: "
                f"{state.activity}. A provider or git call is probably hung; "
                "a restart recovers (raise --liveness-timeout if passes are this slow)"
            ),
        )

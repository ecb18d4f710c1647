"""The automation branch's metrics: what each round did, and how many bumps wait.

Apart from the daemon's event metrics (`events`) because the automation
branch is optional and has its own thread: `gitsync.automation` updates
these and nothing else does. Every result is exposed from the start at 0, so
`increase()` sees the first failure too. No label names a branch, an image or
a remote: those are in the logs and the status, and a remote's URL could
carry userinfo.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["AUTOMATION_RESULTS", "AutomationMetrics"]

# What a round did: a new commit pushed, the branch deleted (nothing pending), nothing
# written (the remote already held it, or the inputs and the tracked tip had not moved),
# or a failure (fetch, edit check or push), retried with backoff.
AUTOMATION_RESULTS: tuple[str, ...] = ("pushed", "deleted", "unchanged", "failed")


class AutomationMetrics:
    """`gitsync_automation_pushes_total{result}` and `gitsync_automation_pending_bumps`."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.rounds = Counter(
            "gitsync_automation_pushes",  # exposed as gitsync_automation_pushes_total
            "Rounds of the automation branch, by result: pushed (a new commit), deleted"
            " (nothing pending), unchanged (no write), failed (retried with backoff).",
            ["result"],
            registry=registry,
        )
        for result in AUTOMATION_RESULTS:
            self.rounds.labels(result=result)
        self.pending = Gauge(
            "gitsync_automation_pending_bumps",
            "Image-policy bumps pending for the automation branch, as of its last round.",
            registry=registry,
        )

    def record(self, result: str) -> None:
        if result not in AUTOMATION_RESULTS:
            raise ValueError(
                f"automation result {result!r} is not one of {', '.join(AUTOMATION_RESULTS)}"
            )
        self.rounds.labels(result=result).inc()

    def set_pending(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"pending bumps must not be negative, got {count}")
        self.pending.set(count)

"""A named daemon thread that sleeps until it is poked, stopped, or its wait runs out.

Why one: the daemon's helpers (the suggestions, the tag refresher, the policy
listing, the automation branch) each run rounds on a thread of their own,
started with the loop, poked after a pass that loaded new specs, and stopped
with it. They differ only in what a round does and how long to wait between
rounds; the start, the wake-up and the orderly stop are this class, once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

__all__ = ["WakeableThread"]


class WakeableThread(ABC):
    """Subclasses write `_run`, looping `while self.sleep(seconds): ...` or the like."""

    def __init__(self, *, name: str) -> None:
        self._name = name
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """End the current wait now (new specs, new bumps): the next round comes sooner."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread: its wait ends at once, a round in progress finishes first."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` or until poked or stopped; False once the thread should end."""
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()
        return not self._stopping.is_set()

    @abstractmethod
    def _run(self) -> None: ...

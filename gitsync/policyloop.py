"""The daemon's image-policy bumps: each policy image's tags listed on a timer.

Why a thread of its own: listing tags is registry I/O (pages of `tags/list`
per repository, with pull secrets), so neither the reconcile loop nor an API
answer may wait for it. Every `interval` (the shortest `gitsync.io/refresh`
of a cache with a `# gitsync:` policy, else `--refresh-interval`, else an
hour) it asks the resolver (`gitsync.providers.local.tags.PolicyResolver`)
for the bump-tag suggestions of the latest valid specs, keeps them, and tells
its listeners when they changed: the suggestions (`/api/v1/suggestions`) and
the automation branch read `latest()`.

`latest()` is None until the first listing has finished, so a restarting
daemon never mistakes "not listed yet" for "nothing pending" (the automation
branch would be deleted).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from gitsync.model import CacheSpec
from gitsync.suggest.model import Suggestion
from gitsync.wakeable import WakeableThread

__all__ = ["DEFAULT_POLICY_INTERVAL_SECONDS", "PolicyLoop", "policy_interval"]

log = logging.getLogger("gitsync.policies")

DEFAULT_POLICY_INTERVAL_SECONDS = 3600.0

Resolve = Callable[[Sequence[CacheSpec]], tuple[Suggestion, ...]]


def policy_interval(specs: Sequence[CacheSpec], *, default_seconds: float | None) -> float:
    """How often the policy images of `specs` are listed (see the module docstring)."""
    own = [
        s.refresh_seconds
        for s in specs
        if s.image_policies and s.refresh_seconds is not None and s.refresh_seconds > 0
    ]
    if own:
        return min(own)
    return default_seconds or DEFAULT_POLICY_INTERVAL_SECONDS


class PolicyLoop(WakeableThread):
    """Lists policy images' tags every interval; `latest()` holds the pending bumps."""

    def __init__(
        self,
        *,
        resolve: Resolve,
        desired: Callable[[], Sequence[CacheSpec]],
        default_interval_seconds: float | None,
        on_change: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._resolve = resolve
        self._desired = desired
        self._default = default_interval_seconds
        self._on_change = tuple(on_change)
        self._lock = threading.Lock()
        self._latest: tuple[Suggestion, ...] | None = None
        super().__init__(name="gitsync-policies")

    def latest(self) -> tuple[Suggestion, ...] | None:
        with self._lock:
            return self._latest

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from this loop's thread) whenever the bumps change."""
        self._on_change = (*self._on_change, callback)

    def check(self) -> tuple[Suggestion, ...]:
        """One listing, on the caller's thread; returns the bumps it found."""
        specs = self._desired()
        found = self._resolve([s for s in specs if s.image_policies]) if specs else ()
        with self._lock:
            changed = found != self._latest
            self._latest = found
        if changed:
            for callback in self._on_change:
                callback()
        return found

    def _run(self) -> None:
        while not self.stopping:
            if self._desired():
                try:
                    self.check()
                except Exception:  # a bug here must not stop the daemon; the next round retries
                    log.exception("listing the policy images' tags failed")
            self.sleep(policy_interval(self._desired(), default_seconds=self._default))

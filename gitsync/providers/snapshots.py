"""Snapshots are checked, not assumed: a provider wrapper that looks up what serves each cache.

A Ready cache is only as good as the snapshot behind it, and on a cloud that
snapshot is an object of its own that anyone with the rights can delete (a CBS
snapshot on TKE). Without a check, gitsync would keep reporting the cache
Ready and never rebuild it. `SnapshotChecked` wraps any `Provider`:

* After the wrapped provider's `observe()`, the snapshot of every Ready cache
  with a `snapshot_id` is looked up through a `SnapshotLookup` (for Tencent
  Cloud, `tencentcloud.snapshots.CbsSnapshotLookup`), at most once per
  `interval` per snapshot: the verdicts are remembered in memory (a one-shot
  command checks once per run). The lookup batches as its API allows.
* A snapshot found MISSING or DAMAGED turns its cache into a Failed one with a
  Warning event (`SnapshotMissing` / `SnapshotDamaged`, naming the snapshot)
  and `snapshot_problem` set, for as long as that verdict stands. The planner
  then RECREATEs an owned cache, giving the check's words as the reason
  ("snapshot snap-… is gone (DescribeSnapshots)"), and `update` hands the
  Failed cache to the wrapped provider, which rebuilds it (TKE: a new cache;
  Kubernetes: the object deleted and applied again). Failed is also what the
  GitSyncCacheFailed and GitSyncCacheMissing alerts watch.
* Every check made is added to `ObservedState.snapshot_checks` (running
  totals), from which the daemon counts `gitsync_snapshot_checks_total{result}`.
* A lookup that fails (throttled after its retries, no permission, an
  unreadable answer) changes no cache: an unchecked snapshot is reported as
  the provider reports it, with a warning in the log. The next try waits a
  while (doubling up to the interval), so a lookup that keeps failing is not
  repeated on every pass.

Only Ready caches are checked: a cache being built has no snapshot to serve
yet, and a Failed one is rebuilt anyway. Everything else (create, update,
delete, extras such as `most_suitable`) passes through to the wrapped provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from gitsync.errors import GitSyncError
from gitsync.model import (
    CacheEvent,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    ObservedState,
    SnapshotCheck,
    SnapshotCheckCounts,
    SnapshotVerdict,
)
from gitsync.providers.base import Provider

__all__ = [
    "DAMAGED_REASON",
    "MISSING_REASON",
    "SnapshotChecked",
    "SnapshotLookup",
]

log = logging.getLogger("gitsync.providers.snapshots")

MISSING_REASON = "SnapshotMissing"
DAMAGED_REASON = "SnapshotDamaged"
FIRST_RETRY_SECONDS = 60.0  # after a failed lookup; doubles up to the interval


class SnapshotLookup(Protocol):
    """Looks snapshots up where they live, in batches its API allows."""

    def check(self, snapshot_ids: Sequence[str]) -> Mapping[str, SnapshotVerdict]:
        """A verdict for each id it could check; raises a GitSyncError when the lookup fails.

        An id left out of the answer (one the API could not be asked about, say a
        malformed one) is not checked: its cache stays as the provider reports it.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Checked:
    verdict: SnapshotVerdict
    at: float  # clock time of the check


class SnapshotChecked:
    """`provider`, with the snapshot behind each Ready cache looked up (see the module docstring).

    `interval_seconds` is how long a verdict stands before the snapshot is
    looked up again; `clock` is wall-clock seconds (it also dates the events).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        lookup: SnapshotLookup,
        interval_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds}")
        self._provider = provider
        self.name = provider.name  # the Provider protocol's attribute
        self._lookup = lookup
        self._interval = interval_seconds
        self._clock = clock
        self._checked: dict[str, _Checked] = {}
        self._totals = SnapshotCheckCounts()
        self._retry_at = float("-inf")
        self._retry_delay = min(FIRST_RETRY_SECONDS, interval_seconds)
        # One lookup at a time: two observes at once must not both check a snapshot.
        self._lock = threading.Lock()

    @property
    def provider(self) -> Provider:
        """The wrapped provider."""
        return self._provider

    def __getattr__(self, attribute: str) -> Any:
        # `fields`, `most_suitable`, `describe`, ...: whatever the wrapped provider offers.
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._provider, attribute)

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        state = self._provider.observe()
        with self._lock:
            self._check(state.caches)
            checked = dict(self._checked)
            totals = self._totals
        caches = tuple(_marked(cache, checked) for cache in state.caches)
        return replace(state, caches=caches, snapshot_checks=totals)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        return self._provider.create(spec, owner=owner)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        return self._provider.update(spec, current)

    def delete(self, current: ObservedCache) -> None:
        self._provider.delete(current)

    def close(self) -> None:
        try:
            self._lookup.close()
        finally:
            self._provider.close()

    # ---------------------------------------------------------------- checks

    def _check(self, caches: Sequence[ObservedCache]) -> None:
        """Look up the snapshots of Ready caches whose verdict is older than the interval."""
        now = self._clock()
        serving = {c.snapshot_id for c in caches if c.status is CacheStatus.READY and c.snapshot_id}
        for gone in self._checked.keys() - serving:
            del self._checked[gone]  # no Ready cache uses it any more
        due = sorted(
            snapshot_id
            for snapshot_id in serving
            if (known := self._checked.get(snapshot_id)) is None or now - known.at >= self._interval
        )
        if not due or now < self._retry_at:
            return
        try:
            verdicts = self._lookup.check(due)
        except GitSyncError as exc:
            self._retry_at = now + self._retry_delay
            log.warning(
                "cannot check the snapshots of %d Ready caches (next try in %.0f s;"
                " until then they are taken as the provider reports them): %s",
                len(due),
                self._retry_delay,
                exc,
            )
            self._retry_delay = min(self._retry_delay * 2, self._interval)
            return
        self._retry_at = float("-inf")
        self._retry_delay = min(FIRST_RETRY_SECONDS, self._interval)
        wanted = set(due)
        found = [v for snapshot_id, v in verdicts.items() if snapshot_id in wanted]
        for verdict in found:
            self._checked[verdict.snapshot_id] = _Checked(verdict=verdict, at=now)
            if verdict.result is not SnapshotCheck.OK:
                users = sorted(c.name for c in caches if c.snapshot_id == verdict.snapshot_id)
                log.warning(
                    "%s: the cache is reported Failed and rebuilt",
                    verdict.problem,
                    extra={"cache": ", ".join(users)},
                )
        self._totals = self._totals.plus(found)


def _marked(cache: ObservedCache, checked: Mapping[str, _Checked]) -> ObservedCache:
    """The cache as it can serve: Failed, with an event, when its snapshot is gone or damaged."""
    if cache.status is not CacheStatus.READY or not cache.snapshot_id:
        return cache
    known = checked.get(cache.snapshot_id)
    if known is None or known.verdict.result is SnapshotCheck.OK:
        return cache
    verdict = known.verdict
    missing = verdict.result is SnapshotCheck.MISSING
    when = datetime.fromtimestamp(known.at, UTC)
    event = CacheEvent(
        type="Warning",
        reason=MISSING_REASON if missing else DAMAGED_REASON,
        message=(
            f"{verdict.problem}; the cache cannot serve from it, so gitsync reports it Failed"
            " and rebuilds it"
        ),
        first_timestamp=when,
        last_timestamp=when,
    )
    return replace(
        cache,
        status=CacheStatus.FAILED,
        snapshot_problem=verdict.problem,
        events=(*cache.events, event),
    )

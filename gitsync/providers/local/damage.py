"""What a damaged snapshot leads to: the blob moved aside, its caches Failed and rebuilt.

Why apart from the checks: `checks` only finds problems, the scrub, the mirror
and `export` find others as they hash what they read; all of them end here, so
a blob found missing or damaged is handled one way whoever found it:

- the file is moved to `store/quarantine/` (see `blobs`), so nothing serves or
  reuses it and the next pull fetches it again;
- every Ready cache whose snapshot uses it goes Failed with `snapshot_problem`
  and a Warning event `SnapshotDamaged` naming the image and the blob, and the
  planner's RECREATE rebuilds it, fetching only what is no longer in the store;
- the counts of checked snapshots by verdict grow, for the metrics.

A read-only instance (`gitsync status`, `gitsync export`) moves the file aside
at most and reports the verdict in memory; the next writable `observe` (a
daemon pass, `gitsync apply`) finds the blob missing and records it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from gitsync.model import (
    CacheEvent,
    CacheStatus,
    ObservedCache,
    SnapshotCheck,
    SnapshotCheckCounts,
    SnapshotVerdict,
)
from gitsync.providers.local.blobs import BlobStore
from gitsync.providers.local.checks import BlobProblem, SnapshotBlobCheck, image_of, verdict_for
from gitsync.providers.local.state import StateStore

# The provider's logger: these lines have always been the provider's.
log = logging.getLogger("gitsync.providers.local")


class SnapshotDamage:
    """Checks the caches' snapshots and acts on damage; thread-safe.

    `observe`, the scrub thread and the mirror's threads all report damage, so the
    running counts are kept under one lock.
    """

    def __init__(
        self,
        *,
        state: StateStore,
        blobs: BlobStore,
        writable: bool,
        clock: Callable[[], float],
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._writable = writable
        self._clock = clock
        self._check = SnapshotBlobCheck(blobs=blobs, load=state.snapshot_blobs)
        self._totals = SnapshotCheckCounts()
        self._lock = threading.Lock()

    def totals(self) -> SnapshotCheckCounts:
        """Snapshots checked so far, by verdict."""
        with self._lock:
            return self._totals

    def checked(self, caches: tuple[ObservedCache, ...]) -> tuple[ObservedCache, ...]:
        """`caches`, with those whose snapshot lost or damaged a blob reported as such."""
        count, found = self._check.check(caches)
        verdicts: dict[str, SnapshotVerdict] = {}
        for snapshot_id, problems in found.items():
            record = self._state.snapshot(snapshot_id)
            image = image_of(record.images if record else (), problems[0].digest)
            verdicts[snapshot_id] = verdict_for(snapshot_id, problems, image=image)
        with self._lock:
            before = self._totals
            self._totals = replace(before, ok=before.ok + count - len(verdicts)).plus(
                verdicts.values()
            )
        if not found:
            return caches
        if not self._writable:
            return tuple(_marked_in_memory(c, verdicts, self._clock()) for c in caches)
        for problems in found.values():
            for problem in problems:
                self._move_aside(problem)
        for cache in caches:
            if cache.status is CacheStatus.READY and cache.snapshot_id in verdicts:
                self._mark(cache.cache_id, cache.name, verdicts[cache.snapshot_id])
        return self._state.caches()

    def report(self, digest: str, detail: str) -> int:
        """A blob served, exported or scrubbed does not hash to its digest: act on it.

        `detail` completes "blob <digest> of image <image> …" ("does not match its
        digest (sha256:…)"). Moves the file aside and marks every Ready cache whose
        snapshot uses it Failed, with the event; returns how many caches. A read-only
        instance only moves the file aside.
        """
        self._move_aside(
            BlobProblem(digest=digest, result=SnapshotCheck.DAMAGED, detail=detail, present=True)
        )
        if not self._writable:
            return 0
        marked = 0
        verdicts: list[SnapshotVerdict] = []
        for cache_id, snapshot_id in self._state.ready_users(digest):
            record = self._state.snapshot(snapshot_id)
            image = image_of(record.images if record else (), digest)
            verdict = SnapshotVerdict(
                snapshot_id=snapshot_id,
                result=SnapshotCheck.DAMAGED,
                detail=f"is damaged: blob {digest} of image {image} {detail}",
            )
            cache = self._state.cache(cache_id)
            if self._mark(cache_id, cache.name if cache else cache_id, verdict):
                marked += 1
                verdicts.append(verdict)
        with self._lock:
            self._totals = self._totals.plus(verdicts)
        return marked

    def _move_aside(self, problem: BlobProblem) -> None:
        if not problem.present:
            return
        moved = self._blobs.quarantine(problem.digest, now=self._clock())
        if moved is not None:
            log.warning("blob %s %s; moved aside to %s", problem.digest, problem.detail, moved)

    def _mark(self, cache_id: str, name: str, verdict: SnapshotVerdict) -> bool:
        problem = verdict.problem or ""
        marked = self._state.mark_damaged(
            cache_id,
            snapshot_id=verdict.snapshot_id,
            problem=problem,
            message=f"{problem}; the cache cannot serve from it, so gitsync reports it Failed"
            " and rebuilds it, fetching only what is missing",
        )
        if marked:
            log.warning(
                "%s: the cache is reported Failed and rebuilt", problem, extra={"cache": name}
            )
        return marked


def _marked_in_memory(
    cache: ObservedCache, verdicts: dict[str, SnapshotVerdict], now: float
) -> ObservedCache:
    """A read-only view of a damaged cache: what a writable pass would record."""
    if cache.status is not CacheStatus.READY or cache.snapshot_id not in verdicts:
        return cache
    problem = verdicts[cache.snapshot_id].problem
    when = datetime.fromtimestamp(now, UTC)
    event = CacheEvent(
        type="Warning",
        reason="SnapshotDamaged",
        message=f"{problem}; the next `gitsync apply` or daemon pass rebuilds it",
        first_timestamp=when,
        last_timestamp=when,
    )
    return replace(
        cache,
        status=CacheStatus.FAILED,
        snapshot_problem=problem,
        events=(*cache.events, event),
    )

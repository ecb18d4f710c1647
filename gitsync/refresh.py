"""The daemon's refresh of moving tags: what each followed tag points to, on its interval.

Why: a cache of `app:1` holds what `app:1` meant when it was built; when the
tag is pushed again upstream the cache goes stale without anyone touching
Git. A cache follows its tags when annotated `gitsync.io/refresh: 6h`
(`CacheSpec.refresh_seconds`; 0 is off), or every cache does when `gitsync run
--refresh-interval` sets a default. This module asks the registries, apart
from the reconcile loop so that a slow registry never holds a pass up; what
to do about a moved tag is the planner's (`gitsync.digests`).

Scheduling: per image, not per cache. A tag image is due when it was never
asked, or when the shortest interval of the following caches that name it has
passed since it was last asked; one manifest HEAD answers it for all of them
(`Resolve`: the local backend's `TagDigestResolver`, with the pull secrets of
those caches). An image given by digest cannot move and is never asked.

Failures: a registry that fails (a `TemporaryError`: down, overloaded,
refusing connections) backs off as a whole, with exponential backoff and
equal jitter (`gitsync.backoff`), and its images are retried as soon as the
backoff ends rather than a whole interval later; an image it refuses (401,
403, 404: a `PermanentError`) keeps its last digest, says why, and is asked
again at its next interval.

What it records per image (`resolved()`, for the status): the last digest
and when it was asked, and the last failure. `tag_digests()` is the same for
the planner, the same object until something changes, so the reconciler's
no-op memo holds between rounds. With the caches the provider holds
(`observed`), a round also finds the moves, counts each once in
`gitsync_image_digest_changes_total{cache}` and calls `on_change` (the daemon
queues a pass), which rebuilds those caches.

Run it on its own thread (`start`/`stop`/`poke`) or call `check()` from a
loop; the clock, the jitter and the registry are injected, so tests drive time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from gitsync import digests, imageref
from gitsync.backoff import backoff_delay
from gitsync.digests import DigestMove, ResolvedDigest, TagDigests
from gitsync.errors import GitSyncError, ImageRefError, TemporaryError
from gitsync.imageref import ImageRef
from gitsync.metrics.refresh import RefreshMetrics
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.wakeable import WakeableThread

__all__ = ["DigestRefresher", "RefreshRound", "Resolve"]

log = logging.getLogger("gitsync.refresh")

# (image, the credential sets of the caches naming it, first tried first) -> its digest now.
Resolve = Callable[[ImageRef, Sequence[Sequence[str]]], str]

DEFAULT_BACKOFF_BASE_SECONDS = 30.0
DEFAULT_BACKOFF_MAX_SECONDS = 3600.0
DEFAULT_IDLE_SECONDS = 30.0  # the thread looks at new specs at least this often
_MIN_WAIT_SECONDS = 0.5  # never a hot loop, whatever the clock does


@dataclass(frozen=True, slots=True)
class RefreshRound:
    """What one `check` did; images are canonical references."""

    asked: tuple[str, ...] = ()  # one HEAD each (more only when credentials were refused)
    failed: tuple[str, ...] = ()  # of those, the ones that failed
    held_back: tuple[str, ...] = ()  # due, not asked: their registry backs off
    changed: tuple[str, ...] = ()  # answered another digest than last time (or a first one)
    moves: tuple[tuple[str, DigestMove], ...] = ()  # (cache, move) found for the first time


@dataclass(frozen=True, slots=True)
class _Wanted:
    ref: ImageRef
    interval: float  # the shortest of the following caches that name it
    secret_sets: tuple[tuple[str, ...], ...]


@dataclass(slots=True)
class _Registries:
    """Per-registry backoff: c/2 + U(0, c/2), c = min(max, base·2^(n−1)) after n failures."""

    base: float
    cap: float
    rng: random.Random
    failures: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def until(self, registry: str, now: float) -> float | None:
        """None when `registry` may be asked now, else when it may be asked again."""
        with self.lock:
            moment = self.not_before.get(registry)
        return moment if moment is not None and moment > now else None

    def failed(self, registry: str, now: float, retry_after: float | None) -> float:
        """Back `registry` off (once per backoff: images failing together count once)."""
        with self.lock:
            current = self.not_before.get(registry)
            if current is not None and current > now:
                return current - now
            count = self.failures.get(registry, 0) + 1
            self.failures[registry] = count
            delay = backoff_delay(count, base=self.base, cap=self.cap, rng=self.rng)
            if retry_after is not None:
                delay = max(delay, retry_after)
            self.not_before[registry] = now + delay
            self.failed_at[registry] = now
        return delay

    def succeeded(self, registry: str, *, asked_at: float) -> None:
        """An answer to a request sent at `asked_at` ends a backoff that began before it."""
        with self.lock:
            if self.failed_at.get(registry, asked_at) <= asked_at:
                self.failures.pop(registry, None)
                self.not_before.pop(registry, None)
                self.failed_at.pop(registry, None)


class _Ledger:
    """What is known of each image: its last answer, when it was asked, what failed.

    Apart from the refresher so that the rules of one image's record (what a
    failure keeps, when it is due again) read in one place; thread-safe.
    """

    def __init__(self, *, registries: _Registries, every_cache: bool) -> None:
        self._registries = registries
        self._every_cache = every_cache
        self._lock = threading.Lock()
        self._records: dict[str, ResolvedDigest] = {}
        self.view: Mapping[str, ResolvedDigest] = MappingProxyType({})
        self.tags = TagDigests(resolved=self.view, every_cache=every_cache)
        self._last_try: dict[str, float] = {}
        self._retry: set[str] = set()  # last try failed for the registry: ask once it may be
        self._held: set[str] = set()  # counted as held back by a backoff, not asked since

    def due(self, key: str, interval: float, *, now: float) -> bool:
        with self._lock:
            last = self._last_try.get(key)
            return last is None or key in self._retry or now - last >= interval

    def next_moment(self, key: str, interval: float, *, now: float) -> float:
        """When `key` is next due: now if never asked or to retry, else a whole interval on."""
        with self._lock:
            last = self._last_try.get(key)
            return now if last is None or key in self._retry else last + interval

    def forget(self, wanted: Collection[str]) -> None:
        """Drop what is kept of images no following cache names any more."""
        keep = set(wanted)
        with self._lock:
            self._retry &= keep
            self._held &= keep
            self._last_try = {k: t for k, t in self._last_try.items() if k in keep}
            if set(self._records) - keep:
                self._records = {k: v for k, v in self._records.items() if k in keep}
                self._publish()

    def record(self, answers: Sequence[tuple[str, float, object]], *, held: list[str]) -> _Done:
        """Take a round's answers (digest, or the exception) and the images held back."""
        asked: list[str] = []
        failed: list[str] = []
        changed: list[str] = []
        with self._lock:
            records = dict(self._records)
            for key, started, answer in answers:
                if isinstance(answer, _HeldBack):
                    held.append(key)
                    continue
                asked.append(key)
                self._last_try[key] = started
                self._held.discard(key)
                before = records.get(key)
                when = datetime.fromtimestamp(started, UTC)
                registry = imageref.parse(key).registry
                if isinstance(answer, str):
                    self._retry.discard(key)
                    records[key] = ResolvedDigest(digest=answer, at=when)
                    if before is None or before.digest != answer:
                        changed.append(key)
                    continue
                failed.append(key)
                records[key] = ResolvedDigest(
                    digest=before.digest if before else None,
                    at=before.at if before else None,
                    error=_one_line(answer),
                    failed_at=when,
                )
                if self._failed(key, registry, answer, started):
                    self._retry.add(key)
            if records != self._records:
                self._records = records
                self._publish()
            fresh = tuple(dict.fromkeys(key for key in held if key not in self._held))
            self._held.update(held)
        return _Done(
            asked=tuple(asked), failed=tuple(failed), held_back=fresh, changed=tuple(changed)
        )

    def _failed(self, key: str, registry: str, error: object, started: float) -> bool:
        """Log a failure; True when it was the registry's (backed off: retry when it ends)."""
        if not _registry_failed(error):
            log.warning("cannot resolve %s: %s; asked again at its next interval", key, error)
            return False
        until = self._registries.until(registry, started) or started
        log.warning(
            "cannot resolve %s (%s backs off for %.0f s): %s", key, registry, until - started, error
        )
        return True

    def _publish(self) -> None:
        """New read-only views of the records (under the lock)."""
        self.view = MappingProxyType(dict(self._records))
        self.tags = TagDigests(resolved=self.view, every_cache=self._every_cache)


class DigestRefresher(WakeableThread):
    """Resolves the followed tags on their interval; see the module docstring."""

    def __init__(
        self,
        *,
        resolve: Resolve,
        desired: Callable[[], Sequence[CacheSpec]],
        default_interval_seconds: float | None,
        observed: Callable[[], Sequence[ObservedCache]] | None = None,
        owner: str | None = None,
        metrics: RefreshMetrics | None = None,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base_seconds: float = DEFAULT_BACKOFF_BASE_SECONDS,
        backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS,
        max_workers: int = 4,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        """`desired`: the specs in force; `observed` and `owner`: the caches the provider
        holds and this controller's id, to find and count moves (without them, `on_change`
        is called when a digest changes); `clock` is Unix seconds."""
        self._resolve = resolve
        self._desired = desired
        self._default = default_interval_seconds if default_interval_seconds else None
        self._observed = observed
        self._owner = owner
        self._metrics = metrics
        self._on_change = on_change
        self._clock = clock
        self._workers = max(1, max_workers)
        self._idle = idle_seconds
        self._registries = _Registries(
            base=backoff_base_seconds,
            cap=backoff_max_seconds,
            rng=rng or random.Random(),  # noqa: S311  # jitter, not cryptography
        )
        self._ledger = _Ledger(registries=self._registries, every_cache=self._default is not None)
        self._round = threading.Lock()  # one round at a time, whoever calls
        self._counted: set[tuple[str, str, str]] = set()  # moves counted: (cache, image, digest)
        super().__init__(name="gitsync-refresh")

    # ------------------------------------------------------------ what others read

    def resolved(self) -> Mapping[str, ResolvedDigest]:
        """Canonical image → what its registry last said (for `gitsync status`); read-only."""
        return self._ledger.view

    def tag_digests(self) -> TagDigests:
        """What the planner takes (`planning.plan(tags=…)`): the same object until a change."""
        return self._ledger.tags

    def interval(self, spec: CacheSpec) -> float | None:
        """How often `spec`'s tags are resolved: its annotation, else the default; None: never."""
        if spec.refresh_seconds is not None:
            return spec.refresh_seconds if spec.refresh_seconds > 0 else None
        return self._default

    def due(self, specs: Sequence[CacheSpec], *, now: float) -> tuple[str, ...]:
        """The images (canonical) a round at `now` would ask, their registries permitting."""
        return tuple(
            key
            for key, item in self._wanted(specs).items()
            if self._ledger.due(key, item.interval, now=now)
        )

    def next_due(self, specs: Sequence[CacheSpec], *, now: float) -> float | None:
        """When an image of `specs` is next due (a registry's backoff included); None: never."""
        moments = []
        for key, item in self._wanted(specs).items():
            moment = self._ledger.next_moment(key, item.interval, now=now)
            waiting = self._registries.until(item.ref.registry, now)
            moments.append(max(moment, waiting or moment))
        return min(moments, default=None)

    # ------------------------------------------------------------------ rounds

    def check(self) -> RefreshRound:
        """One round on the caller's thread: ask every due image once, record, count."""
        with self._round:
            now = self._clock()
            specs = tuple(self._desired())
            wanted = self._wanted(specs)
            self._ledger.forget(wanted)
            asked: list[tuple[str, _Wanted]] = []
            held: list[str] = []
            for key, item in wanted.items():
                if not self._ledger.due(key, item.interval, now=now):
                    continue
                if self._registries.until(item.ref.registry, now) is not None:
                    held.append(key)
                else:
                    asked.append((key, item))
            done = self._ledger.record(self._ask(asked), held=held)
            moves = self._moves(specs)
        if self._metrics is not None:
            self._metrics.checked("ok", len(done.asked) - len(done.failed))
            self._metrics.checked("error", len(done.failed))
            self._metrics.checked("backoff", len(done.held_back))
            for cache, _ in moves:
                self._metrics.changed(cache)
        for cache, move in moves:
            log.info("tag moved: %s; the cache is rebuilt", move, extra={"cache": cache})
        if self._on_change is not None and (moves or (self._observed is None and done.changed)):
            self._on_change()
        return RefreshRound(
            asked=done.asked,
            failed=done.failed,
            held_back=done.held_back,
            changed=done.changed,
            moves=moves,
        )

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        while not self.stopping:
            try:
                self.check()
            except Exception:  # a bug here must not stop the daemon serving
                log.exception("refreshing the tags failed; the next round retries")
            now = self._clock()
            try:
                upcoming = self.next_due(tuple(self._desired()), now=now)
            except Exception:  # the same: wait the idle time and look again
                log.exception("scheduling the next refresh failed")
                upcoming = None
            wait = self._idle if upcoming is None else min(self._idle, upcoming - now)
            self.sleep(max(wait, _MIN_WAIT_SECONDS))

    # ----------------------------------------------------------------- helpers

    def _wanted(self, specs: Sequence[CacheSpec]) -> dict[str, _Wanted]:
        """Every tag image of a following cache, with its interval and credential sets."""
        wanted: dict[str, _Wanted] = {}
        for spec in sorted(specs, key=lambda s: s.name):
            interval = self.interval(spec)
            if interval is None:
                continue
            secrets = tuple(sorted(set(spec.image_pull_secrets)))
            for image in spec.images:
                try:
                    ref = imageref.parse(image)
                except ImageRefError:
                    continue  # validation reports it; nothing to ask
                if ref.digest is not None:
                    continue  # content-addressed: it cannot move
                key = str(ref)
                known = wanted.get(key)
                if known is None:
                    wanted[key] = _Wanted(ref=ref, interval=interval, secret_sets=(secrets,))
                else:
                    sets = known.secret_sets
                    wanted[key] = _Wanted(
                        ref=ref,
                        interval=min(known.interval, interval),
                        secret_sets=sets if secrets in sets else (*sets, secrets),
                    )
        return wanted

    def _ask(self, asked: Sequence[tuple[str, _Wanted]]) -> list[tuple[str, float, object]]:
        """(image, when asked, digest or the exception) for each; a failing registry holds the
        rest of its images back (they come back as `_HeldBack`)."""
        if not asked:
            return []
        workers = min(self._workers, len(asked))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gitsync-head") as pool:
            return list(pool.map(lambda pair: self._ask_one(*pair), asked))

    def _ask_one(self, key: str, item: _Wanted) -> tuple[str, float, object]:
        started = self._clock()
        if self._registries.until(item.ref.registry, started) is not None:
            return key, started, _HeldBack()  # a sibling just failed on that registry
        try:
            digest = self._resolve(item.ref, item.secret_sets)
        except Exception as exc:  # recorded per image; a bug must not end the round
            if _registry_failed(exc):  # at once, so the registry's next images wait
                retry_after = exc.retry_after if isinstance(exc, TemporaryError) else None
                self._registries.failed(item.ref.registry, self._clock(), retry_after)
            return key, started, exc
        self._registries.succeeded(item.ref.registry, asked_at=started)
        return key, started, digest

    def _moves(self, specs: Sequence[CacheSpec]) -> tuple[tuple[str, DigestMove], ...]:
        """The moves of the owned Ready caches not counted yet; forgets those now gone."""
        if self._observed is None:
            return ()
        resolved = self.resolved()
        owned = [c for c in self._observed() if self._owner is None or c.owner == self._owner]
        ready = {c.name: c for c in owned if c.status is CacheStatus.READY}
        building = {c.name for c in owned} - set(ready)
        # Moves of a cache that is rebuilding stay counted: once Ready it is not counted again.
        current = {mark for mark in self._counted if mark[0] in building}
        found: list[tuple[str, DigestMove]] = []
        for spec in specs:
            cache = ready.get(spec.name)
            if cache is None or self.interval(spec) is None:
                continue
            for move in digests.moves(spec, cache, resolved):
                mark = (spec.name, move.image, move.resolved)
                current.add(mark)
                if mark not in self._counted:
                    found.append((spec.name, move))
        self._counted = current
        return tuple(found)


@dataclass(frozen=True, slots=True)
class _Done:
    asked: tuple[str, ...]
    failed: tuple[str, ...]
    held_back: tuple[str, ...]
    changed: tuple[str, ...]


class _HeldBack:
    """The answer of an image not asked because its registry began to back off this round."""


def _registry_failed(error: object) -> bool:
    """The registry's failure (down, overloaded), not the image's (401, 403, 404); a bug too."""
    return isinstance(error, TemporaryError) or not isinstance(error, GitSyncError)


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

"""Pod observation, the bookkeeping: pods and events in, one record per observed pod start out.

A cache only earns its snapshot cost if pods use it, so gitsync measures use
where it happens: a pod asking for a cache carries the annotation
`eks.tke.cloud.tencent.com/use-image-cache` (`auto`, or a cache id `imc-…`
for a manual match), and the platform writes Events on that pod saying
whether a cache was used. For every such pod this module records, once, on
the injected recorder (`UsageMetrics` in the daemon):

- `gitsync_cache_lookups_total{cache,result}`: result `hit`, `partial` or
  `miss`; `cache` is the cache's name (its id when gitsync does not know it,
  `""` on a miss). Never a label per pod.
- `gitsync_startup_seconds{result}`: from the pod's `creationTimestamp` to the
  `lastTransitionTime` of its `Ready` condition, both written by the API
  server, so the controller's own clock and watch lag do not matter.

Classifying hit, partial and miss
---------------------------------
The reasons differ by platform, so they are settings (`LookupReasons`). The
defaults, and why:

- `hit`: `ImageCacheHit`, `ImageCacheUsed`. Tencent's documentation shows
  the match as an event on the pod, but only as a screenshot: the reason
  string is not published in text, so check `kubectl describe pod` on your
  cluster and set the reasons you see. A cache id (`imc-…`) in the message
  names the cache.
- `partial`: `ImageCachePartialHit`. Also partial: a hit *plus* a kubelet
  `Pulling` event whose message is `Pulling image "…"`, the one signal every
  runtime emits when it really downloads an image, i.e. the runtime pulled the
  difference (docs/architecture.md's definition of partial).
- `miss`: `ImageCacheMiss`, `ImageCacheNotMatched`; and a pod that became
  Ready with none of the above, because Tencent documents that "if this event
  is not displayed, no appropriate image cache has been matched".
- `pulling`: `Pulling` (the kubelet's reason).

Per image (`observe`, for `gitsync suggest`): a recorded pod is also one
`Lookup` per distinct image of its spec (init containers and containers,
normalised; an unparsable reference is skipped), grouped by the pod's uid
(its images started together, and a pod uses one cache), with the pod's
start-up seconds, its cache, and the Ready time. Each image takes the pod's
result, except that in a hit or partial pod an image named by a kubelet
`Pulling image "…"` event was not in the cache: partial; and once such
events name the pulled images, the other images of a hit pod were served:
hit (a platform's partial event without names leaves them partial).

A pod is classified a few seconds (`settle_seconds`) after it is seen Ready,
because Pods and Events arrive on separate watches and the events of a start
can trail the Ready transition. Until the Events watch has listed once, no
pod is classified as a miss for want of events: such pods are dropped and
counted in `unclassified`.

Which pods are counted
----------------------
Only pods whose start we watched: those first seen in the Pending phase, or
ADDED by a watch (created after our list). Pods already running when the
observer starts, or when a relist follows `410 Gone`, started unobserved and
are skipped, so a relist never counts a pod twice. A pod deleted or finished
before Ready counts only if an event already said hit, partial or miss (its
lookup happened; it has no start-up time).

Memory stays flat: a tracked pod is a few fields (its images only when
observing, the pulled ones at most `_MAX_PULLED`), dropped once recorded or
when the pod goes; events that arrive before their pod wait in a bounded
LRU (`max_orphans`); the tracked set itself is capped (`max_tracked`).

Pure (no I/O): `gitsync.observers.kubernetes` feeds it from the API server's
watches.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.timeparse import parse_rfc3339

__all__ = [
    "DEFAULT_HIT_REASONS",
    "DEFAULT_MAX_ORPHANS",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_MISS_REASONS",
    "DEFAULT_PARTIAL_REASONS",
    "DEFAULT_PULLING_REASONS",
    "DEFAULT_SETTLE_SECONDS",
    "USE_IMAGE_CACHE_ANNOTATION",
    "LookupReasons",
    "LookupRecorder",
    "PodLookupTracker",
    "parse_time",
]

USE_IMAGE_CACHE_ANNOTATION = "eks.tke.cloud.tencent.com/use-image-cache"
DEFAULT_HIT_REASONS = ("ImageCacheHit", "ImageCacheUsed")
DEFAULT_PARTIAL_REASONS = ("ImageCachePartialHit",)
DEFAULT_MISS_REASONS = ("ImageCacheMiss", "ImageCacheNotMatched")
DEFAULT_PULLING_REASONS = ("Pulling",)
DEFAULT_SETTLE_SECONDS = 5.0
DEFAULT_MAX_TRACKED = 50_000
DEFAULT_MAX_ORPHANS = 10_000
_CACHE_ID = re.compile(r"\bimc-[a-z0-9]+\b")
_PULLING_IMAGE = re.compile(r'^\s*Pulling image\s+"?(?P<image>[^"\s]+)')
_MAX_PULLED = 32  # image names kept per pod from Pulling events; a pod has fewer images


class LookupRecorder(Protocol):
    """Where results go; `gitsync.metrics.UsageMetrics` is one."""

    def record(self, *, cache: str | None, result: str, seconds: float | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class LookupReasons:
    """Event reasons that say hit, partial or miss; see the module docstring for the defaults."""

    hit: tuple[str, ...] = DEFAULT_HIT_REASONS
    partial: tuple[str, ...] = DEFAULT_PARTIAL_REASONS
    miss: tuple[str, ...] = DEFAULT_MISS_REASONS
    pulling: tuple[str, ...] = DEFAULT_PULLING_REASONS

    def __post_init__(self) -> None:
        groups = {"hit": self.hit, "partial": self.partial, "miss": self.miss}
        groups["pulling"] = self.pulling
        seen: dict[str, str] = {}
        for group, reasons in groups.items():
            for reason in reasons:
                if reason in seen:
                    raise ValueError(
                        f"event reason {reason!r} is configured as both {seen[reason]} and"
                        f" {group}; give each reason one meaning"
                    )
                seen[reason] = group


def parse_time(value: object) -> float | None:
    """An RFC 3339 timestamp from the API server as Unix seconds."""
    if not isinstance(value, str) or not value:
        return None
    # An offset-less time stays naive, so `timestamp()` reads it as local time.
    moment = parse_rfc3339(value, naive_zone=None)
    return None if moment is None else moment.timestamp()


@dataclass(slots=True)
class _Evidence:
    """What the events of one pod said so far; mutable, updated as events arrive."""

    hit: bool = False
    partial: bool = False
    miss: bool = False
    pulled: bool = False
    cache_id: str | None = None
    pulled_images: tuple[str, ...] = ()  # canonical, from 'Pulling image "…"' (observing only)
    pulled_overflow: bool = False  # a pull named more than kept, or an unreadable name

    def said_something(self) -> bool:
        return self.hit or self.partial or self.miss


@dataclass(slots=True)
class _Pod:
    uid: str
    namespace: str
    requested: str
    created: float | None
    evidence: _Evidence
    images: tuple[str, ...] = ()  # canonical, distinct, in spec order (observing only)
    ready_at: float | None = None  # API server time of the Ready transition
    ready_seen: float | None = None  # our monotonic clock when we saw it Ready


class PodLookupTracker:
    """Pure bookkeeping (no I/O): pods and events in, one record per observed pod start out.

    Thread-safe: the pod and event watch threads and the sweeper call it.
    """

    def __init__(
        self,
        *,
        recorder: LookupRecorder,
        reasons: LookupReasons | None = None,
        resolve_cache: Callable[[str], str | None] | None = None,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        max_orphans: int = DEFAULT_MAX_ORPHANS,
        observe: Callable[[Sequence[Lookup]], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`resolve_cache` maps a cache id (`imc-…`) to the cache's name, None if unknown.

        `observe` gets each recorded pod's per-image lookups (module docstring);
        `wall_clock` dates those of pods that never became Ready.
        """
        self._recorder = recorder
        self._observe = observe
        self._wall_clock = wall_clock
        self._reasons = reasons or LookupReasons()
        self._resolve = resolve_cache or (lambda _id: None)
        self._settle = settle_seconds
        self._clock = clock
        self._max_tracked = max_tracked
        self._max_orphans = max_orphans
        self._pods: OrderedDict[str, _Pod] = OrderedDict()
        self._orphans: OrderedDict[str, _Evidence] = OrderedDict()
        self._lock = threading.Lock()
        self.events_live = False  # set once the Events watch has listed
        self.recorded = 0
        self.unclassified = 0
        self.dropped = 0  # evicted by max_tracked

    @property
    def tracked(self) -> int:
        return len(self._pods)

    @property
    def orphans(self) -> int:
        return len(self._orphans)

    # ------------------------------------------------------------------- pods

    def pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        """A pod from a watch (`ADDED`, `MODIFIED`, `DELETED`) or a list (`SYNC`)."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        requested = (meta.get("annotations") or {}).get(USE_IMAGE_CACHE_ANNOTATION)
        status = pod.get("status") or {}
        phase = status.get("phase") or "Pending"
        with self._lock:
            tracked = self._pods.get(uid)
            if kind == "DELETED":
                if tracked is not None:
                    del self._pods[uid]
                    self._finish(tracked)
                return
            if not requested:
                if tracked is not None:  # annotation removed: no longer a lookup we can judge
                    del self._pods[uid]
                return
            if tracked is None:
                if kind != "ADDED" and phase != "Pending":
                    return  # started before we watched: its start was not observed
                tracked = self._adopt(uid, meta, str(requested), pod.get("spec") or {})
            if tracked.ready_at is None:
                ready = _ready_time(status)
                if ready is not None:
                    tracked.ready_at = ready
                    tracked.ready_seen = self._clock()
            if phase in ("Succeeded", "Failed"):
                del self._pods[uid]
                self._finish(tracked)

    def resync(self, live_uids: set[str], *, namespace: str | None) -> None:
        """After a fresh list: forget tracked pods (of `namespace`, or all) that are gone."""
        with self._lock:
            for uid in [
                u
                for u, p in self._pods.items()
                if u not in live_uids and (namespace is None or p.namespace == namespace)
            ]:
                self._finish(self._pods.pop(uid))

    def _adopt(
        self, uid: str, meta: Mapping[str, Any], requested: str, spec: Mapping[str, Any]
    ) -> _Pod:
        evidence = self._orphans.pop(uid, _Evidence())
        tracked = _Pod(
            uid=uid,
            namespace=str(meta.get("namespace") or ""),
            requested=requested,
            created=parse_time(meta.get("creationTimestamp")),
            evidence=evidence,
            images=_spec_images(spec) if self._observe is not None else (),
        )
        self._pods[uid] = tracked
        while len(self._pods) > self._max_tracked:
            self._pods.popitem(last=False)
            self.dropped += 1
        return tracked

    # ----------------------------------------------------------------- events

    def event(self, event: Mapping[str, Any]) -> None:
        """A core/v1 Event; only those about Pods with a configured reason matter."""
        involved = event.get("involvedObject") or event.get("regarding") or {}
        if involved.get("kind") != "Pod" or not involved.get("uid"):
            return
        message = str(event.get("message") or event.get("note") or "")
        says = self._says(str(event.get("reason") or ""), message)
        if says is None:
            return
        observing = says == "pulled" and self._observe is not None
        pulled = _pulled_image(message) if observing else None
        uid = str(involved["uid"])
        with self._lock:
            tracked = self._pods.get(uid)
            if tracked is not None:
                evidence = tracked.evidence
            else:
                evidence = self._orphans.pop(uid, _Evidence())
                self._orphans[uid] = evidence  # most recent last
                while len(self._orphans) > self._max_orphans:
                    self._orphans.popitem(last=False)
            if says == "pulled":
                evidence.pulled = True
                if not observing or pulled in evidence.pulled_images:
                    return
                if pulled is not None and len(evidence.pulled_images) < _MAX_PULLED:
                    evidence.pulled_images = (*evidence.pulled_images, pulled)
                else:
                    evidence.pulled_overflow = True  # which images were pulled is not all known
                return
            setattr(evidence, says, True)
            found = _CACHE_ID.search(message)
            if found and says in ("hit", "partial"):
                evidence.cache_id = found.group(0)

    def _says(self, reason: str, message: str) -> str | None:
        """Which evidence an event is: hit, partial, miss, pulled, or None (irrelevant)."""
        reasons = self._reasons
        if reason in reasons.hit:
            return "hit"
        if reason in reasons.partial:
            return "partial"
        if reason in reasons.miss:
            return "miss"
        # A platform's "Pulling ... from image cache" is not a download: only the kubelet's
        # 'Pulling image "ref"' is.
        if reason in reasons.pulling and _PULLING_IMAGE.match(message):
            return "pulled"
        return None

    # ------------------------------------------------------------------ sweep

    def sweep(self) -> int:
        """Record every pod Ready for at least `settle_seconds`; returns how many were recorded."""
        now = self._clock()
        with self._lock:
            done = [
                self._pods.pop(uid)
                for uid in [
                    u
                    for u, p in self._pods.items()
                    if p.ready_seen is not None and now - p.ready_seen >= self._settle
                ]
            ]
        before = self.recorded
        for pod in done:
            self._finish(pod)
        return self.recorded - before

    def _finish(self, pod: _Pod) -> None:
        """Record a pod that is done starting: Ready (settled, or gone early) or gone unready."""
        if pod.ready_at is None:
            # It never started: its lookup counts only if an event already told the result.
            if pod.evidence.said_something():
                self._record(pod, seconds=None)
            return
        if not self.events_live and not pod.evidence.said_something():
            self.unclassified += 1  # without the Events watch, "no event" proves nothing
            return
        seconds = None if pod.created is None else max(0.0, pod.ready_at - pod.created)
        self._record(pod, seconds=seconds)

    def _record(self, pod: _Pod, *, seconds: float | None) -> None:
        result, cache = self._classify(pod)
        self._recorder.record(cache=cache, result=result, seconds=seconds)
        self.recorded += 1
        if self._observe is not None and pod.images:
            self._observe(self._lookups(pod, result, cache, seconds))

    def _lookups(self, pod: _Pod, result: str, cache: str, seconds: float | None) -> list[Lookup]:
        """One lookup per image of the pod (see the module docstring for each one's result)."""
        evidence = pod.evidence
        served = LookupResult(result)
        named = evidence.pulled_images and not evidence.pulled_overflow
        if served is not LookupResult.MISS and evidence.hit and named:
            served = LookupResult.HIT  # the pulled ones are named: the rest came from the cache
        at = pod.ready_at if pod.ready_at is not None else self._wall_clock()
        return [
            Lookup(
                image=image,
                result=(
                    LookupResult.PARTIAL
                    if served is not LookupResult.MISS and image in evidence.pulled_images
                    else served
                ),
                at=at,
                source=LookupSource.POD,
                cache=cache or None,
                seconds=seconds,
                group=pod.uid,
            )
            for image in pod.images
        ]

    def _classify(self, pod: _Pod) -> tuple[str, str]:
        evidence = pod.evidence
        if evidence.partial or (evidence.hit and evidence.pulled):
            result = "partial"
        elif evidence.hit:
            result = "hit"
        else:
            return "miss", ""
        cache_id = evidence.cache_id
        if cache_id is None and pod.requested.startswith("imc-"):
            cache_id = pod.requested  # a manual match names its cache
        if cache_id is None:
            return result, ""
        return result, self._resolve(cache_id) or cache_id


def _spec_images(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The distinct canonical images of a pod spec's init containers and containers."""
    found: dict[str, None] = {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            written = container.get("image") if isinstance(container, Mapping) else None
            if not isinstance(written, str) or not written:
                continue
            try:
                found.setdefault(imageref.normalize(written))
            except ImageRefError:
                continue  # not a reference a cache could hold
    return tuple(found)


def _pulled_image(message: str) -> str | None:
    """The canonical image a kubelet 'Pulling image "…"' message names, if it parses."""
    named = _PULLING_IMAGE.match(message)
    if named is None:
        return None
    try:
        return imageref.normalize(named.group("image"))
    except ImageRefError:
        return None


def _ready_time(status: Mapping[str, Any]) -> float | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime"))
    return None

"""The pod observer: classification rules on the pure tracker, then real watches against kmock.

The tracker tests drive a fake clock and record into a list. The watch tests
run `PodObserver` against the emulator with the real `kubernetes` client and
the real `UsageMetrics`, and read the Prometheus registry, as a scrape would.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import pytest
from kube_fixtures import FakeOperator, KubeServer
from prometheus_client import CollectorRegistry

from gitsync import wiring
from gitsync.config import CommandSettings
from gitsync.metrics import UsageMetrics
from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.observations.store import ObservationStore
from gitsync.observers import kubernetes as observer_module
from gitsync.observers.kubernetes import (
    USE_IMAGE_CACHE_ANNOTATION,
    LookupReasons,
    PodLookupTracker,
    PodObserver,
)

CREATED = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    uid: str,
    *,
    annotation: str | None = "auto",
    phase: str = "Pending",
    ready_after: float | None = None,
    namespace: str = "apps",
    init: Sequence[str] = (),
    containers: Sequence[str] = (),
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ready_after is not None:
        status["phase"] = "Running"
        ready = CREATED + timedelta(seconds=ready_after)
        status["conditions"] = [
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready)}
        ]
    meta: dict[str, Any] = {
        "name": f"pod-{uid}",
        "namespace": namespace,
        "uid": uid,
        "creationTimestamp": stamp(CREATED),
    }
    if annotation is not None:
        meta["annotations"] = {USE_IMAGE_CACHE_ANNOTATION: annotation}
    spec = {
        "initContainers": [{"name": f"i{n}", "image": image} for n, image in enumerate(init)],
        "containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(containers)],
    }
    return {"metadata": meta, "spec": spec, "status": status}


def event(uid: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "Pod", "uid": uid, "name": f"pod-{uid}"},
        "reason": reason,
        "message": message,
    }


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str, float | None]] = []

    def record(self, *, cache: str | None, result: str, seconds: float | None = None) -> None:
        self.calls.append((cache, result, seconds))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def recorder() -> Recorded:
    return Recorded()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tracker_for(recorder: Any, clock: FakeClock, **options: Any) -> PodLookupTracker:
    tracker = PodLookupTracker(
        recorder=recorder,
        resolve_cache={"imc-web01": "web"}.get,
        settle_seconds=5.0,
        clock=clock,
        **options,
    )
    tracker.events_live = True
    return tracker


# --------------------------------------------------------------- the tracker


def test_a_hit_is_recorded_once_the_pod_has_been_ready_for_the_settle_time(
    recorder: Recorded, clock: FakeClock
) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.pod("ADDED", pod("a"))
    tracker.event(event("a", "ImageCacheHit", "matched image cache imc-web01 for 2 images"))
    tracker.pod("MODIFIED", pod("a", ready_after=12))
    assert tracker.sweep() == 0  # events may still trail the Ready transition
    clock.now += 5
    assert tracker.sweep() == 1
    assert recorder.calls == [("web", "hit", 12.0)]
    assert tracker.tracked == 0
    tracker.pod("MODIFIED", pod("a", ready_after=12))  # later updates of a counted pod
    clock.now += 10
    assert tracker.sweep() == 0
    assert recorder.calls == [("web", "hit", 12.0)]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [("ImageCacheHit", "cache imc-web01"), ("Pulling", 'Pulling image "redis:7"')],
            ("web", "partial"),
            id="hit-and-a-real-pull",
        ),
        pytest.param(
            [("ImageCacheHit", "cache imc-web01"), ("Pulling", "Pulling from image cache")],
            ("web", "hit"),
            id="a-pulling-event-that-is-no-download",
        ),
        pytest.param(
            [("ImageCachePartialHit", "cache imc-zz9")],
            ("imc-zz9", "partial"),
            id="explicit-partial-unknown-cache",
        ),
        pytest.param([("ImageCacheMiss", "none matched")], ("", "miss"), id="explicit-miss"),
        pytest.param([], ("", "miss"), id="no-event-means-no-cache-matched"),
        pytest.param([("Pulling", 'Pulling image "nginx:1"')], ("", "miss"), id="pulled-only"),
    ],
)
def test_events_classify_hit_partial_and_miss(
    recorder: Recorded,
    clock: FakeClock,
    events: list[tuple[str, str]],
    expected: tuple[str, str],
) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.pod("ADDED", pod("a"))
    for reason, message in events:
        tracker.event(event("a", reason, message))
    tracker.pod("MODIFIED", pod("a", ready_after=3))
    clock.now += 5
    tracker.sweep()
    assert [(c, r) for c, r, _ in recorder.calls] == [expected]


def test_a_manual_match_names_its_cache_from_the_annotation(
    recorder: Recorded, clock: FakeClock
) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.pod("ADDED", pod("a", annotation="imc-web01"))
    tracker.event(event("a", "ImageCacheHit", "image cache used"))
    tracker.pod("MODIFIED", pod("a", ready_after=2))
    clock.now += 5
    tracker.sweep()
    assert recorder.calls == [("web", "hit", 2.0)]


def test_reasons_are_configurable(recorder: Recorded, clock: FakeClock) -> None:
    reasons = LookupReasons(hit=("CacheMounted",), partial=(), miss=("CacheSkipped",))
    tracker = tracker_for(recorder, clock, reasons=reasons)
    tracker.pod("ADDED", pod("a"))
    tracker.pod("ADDED", pod("b"))
    tracker.event(event("a", "CacheMounted", "imc-web01"))
    tracker.event(event("b", "ImageCacheHit", "imc-web01"))  # a default reason, not configured
    tracker.pod("MODIFIED", pod("a", ready_after=1))
    tracker.pod("MODIFIED", pod("b", ready_after=1))
    clock.now += 5
    tracker.sweep()
    assert sorted((c, r) for c, r, _ in recorder.calls) == [("", "miss"), ("web", "hit")]
    with pytest.raises(ValueError, match="both hit and miss"):
        LookupReasons(hit=("X",), miss=("X",))


def test_only_pods_whose_start_was_watched_are_counted(
    recorder: Recorded, clock: FakeClock
) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.pod("SYNC", pod("running", ready_after=30))  # already up when we listed
    tracker.pod("MODIFIED", pod("unseen", phase="Running"))  # first seen after it started
    tracker.pod("ADDED", pod("plain", annotation=None))  # asks for no cache
    tracker.pod("SYNC", pod("listed-pending"))  # listed while still starting: counted
    tracker.pod("MODIFIED", pod("listed-pending", ready_after=4))
    clock.now += 5
    tracker.sweep()
    assert recorder.calls == [("", "miss", 4.0)]


def test_finished_or_deleted_pods_are_forgotten(recorder: Recorded, clock: FakeClock) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.pod("ADDED", pod("quiet"))
    tracker.pod("ADDED", pod("missed"))
    tracker.pod("ADDED", pod("failed"))
    tracker.event(event("missed", "ImageCacheMiss"))
    tracker.pod("DELETED", pod("quiet"))  # no evidence: its lookup is unknown, nothing recorded
    tracker.pod("DELETED", pod("missed"))  # the lookup happened; it never started
    tracker.pod("MODIFIED", pod("failed", phase="Failed"))
    assert recorder.calls == [("", "miss", None)]
    assert tracker.tracked == 0


def test_events_that_arrive_before_their_pod_are_kept_in_a_bounded_buffer(
    recorder: Recorded, clock: FakeClock
) -> None:
    tracker = tracker_for(recorder, clock, max_orphans=3)
    tracker.event(event("early", "ImageCacheHit", "imc-web01"))
    tracker.pod("ADDED", pod("early"))
    assert tracker.orphans == 0
    for index in range(10):
        tracker.event(event(f"stray{index}", "Pulling", 'Pulling image "x:1"'))
    assert tracker.orphans == 3
    tracker.pod("MODIFIED", pod("early", ready_after=1))
    clock.now += 5
    tracker.sweep()
    assert recorder.calls == [("web", "hit", 1.0)]


def test_without_a_live_event_watch_no_pod_is_called_a_miss(
    recorder: Recorded, clock: FakeClock
) -> None:
    tracker = tracker_for(recorder, clock)
    tracker.events_live = False
    tracker.pod("ADDED", pod("a"))
    tracker.pod("MODIFIED", pod("a", ready_after=1))
    clock.now += 5
    tracker.sweep()
    assert recorder.calls == []
    assert tracker.unclassified == 1


HIT, PARTIAL, MISS = LookupResult.HIT, LookupResult.PARTIAL, LookupResult.MISS
NGINX = "docker.io/library/nginx:1.27"
BUSYBOX = "docker.io/library/busybox:1"
APP = "registry.example.com/team/app:1.5"


def started(
    tracker: PodLookupTracker, clock: FakeClock, uid: str, events: list[tuple[str, str]]
) -> None:
    """Pod `uid` (busybox as init container; nginx, the app, nginx again and a bad reference)
    starts with `events`, is Ready after 12 s, and is recorded."""
    tracker.pod(
        "ADDED",
        pod(uid, init=["busybox:1"], containers=["nginx:1.27", APP, "nginx:1.27", "Not/A:Ref!"]),
    )
    for reason, message in events:
        tracker.event(event(uid, reason, message))
    tracker.pod("MODIFIED", pod(uid, ready_after=12))
    clock.now += 5
    assert tracker.sweep() == 1


READY = (CREATED + timedelta(seconds=12)).timestamp()


def test_a_recorded_pod_is_one_lookup_per_distinct_image_grouped_by_its_uid(
    recorder: Recorded, clock: FakeClock
) -> None:
    seen: list[Lookup] = []
    tracker = tracker_for(recorder, clock, observe=seen.extend)
    started(tracker, clock, "a", [("ImageCacheHit", "matched image cache imc-web01")])

    assert recorder.calls == [("web", "hit", 12.0)]
    assert seen == [
        Lookup(
            image=image,
            result=HIT,
            at=READY,
            source=LookupSource.POD,
            cache="web",
            seconds=12.0,
            group="a",
        )
        for image in (BUSYBOX, NGINX, APP)  # init containers first; each image once
    ]


@pytest.mark.parametrize(
    ("events", "pod_result", "results"),
    [
        pytest.param(
            [("ImageCacheHit", "imc-web01"), ("Pulling", f'Pulling image "{APP}"')],
            "partial",
            [HIT, HIT, PARTIAL],
            id="hit-and-the-app-pulled",
        ),
        pytest.param(
            [("ImageCachePartialHit", "imc-web01")],
            "partial",
            [PARTIAL, PARTIAL, PARTIAL],
            id="partial-without-names",
        ),
        pytest.param(
            [("ImageCacheHit", "imc-web01"), ("Pulling", 'Pulling image "Not/A:Ref!"')],
            "partial",
            [PARTIAL, PARTIAL, PARTIAL],
            id="a-pulled-name-that-does-not-parse",
        ),
        pytest.param(
            [("ImageCacheMiss", ""), ("Pulling", 'Pulling image "nginx:1.27"')],
            "miss",
            [MISS, MISS, MISS],
            id="miss",
        ),
    ],
)
def test_an_image_named_by_a_pulling_event_was_not_in_the_cache(
    recorder: Recorded,
    clock: FakeClock,
    events: list[tuple[str, str]],
    pod_result: str,
    results: list[LookupResult],
) -> None:
    seen: list[Lookup] = []
    tracker = tracker_for(recorder, clock, observe=seen.extend)
    started(tracker, clock, "a", events)
    assert [r for _, r, _ in recorder.calls] == [pod_result]
    expected = list(zip([BUSYBOX, NGINX, APP], results, strict=True))
    assert [(o.image, o.result) for o in seen] == expected
    assert {o.cache for o in seen} == {None if pod_result == "miss" else "web"}


def test_a_pod_gone_before_ready_is_dated_by_the_wall_clock(
    recorder: Recorded, clock: FakeClock
) -> None:
    seen: list[Lookup] = []
    tracker = tracker_for(recorder, clock, observe=seen.extend, wall_clock=lambda: 1_234.5)
    tracker.pod("ADDED", pod("gone", containers=["nginx:1.27"]))
    tracker.event(event("gone", "ImageCacheMiss"))
    tracker.pod("DELETED", pod("gone"))
    assert [(o.image, o.result, o.at, o.seconds, o.group) for o in seen] == [
        (NGINX, MISS, 1_234.5, None, "gone")
    ]


class Counted:
    """A recorder that keeps counts only, so that what stays allocated is the tracker's."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str | None, str], int] = {}

    def record(self, *, cache: str | None, result: str, seconds: float | None = None) -> None:
        self.counts[(cache, result)] = self.counts.get((cache, result), 0) + 1


@pytest.mark.parametrize("observing", [False, True], ids=["counting", "observing"])
def test_memory_stays_flat_over_many_pod_starts(clock: FakeClock, observing: bool) -> None:
    recorder = Counted()
    observed = [0]

    def observe(lookups: Sequence[Lookup]) -> None:
        observed[0] += len(lookups)

    tracker = tracker_for(recorder, clock, max_orphans=500, observe=observe if observing else None)

    def one_round(start: int, count: int) -> None:
        for index in range(start, start + count):
            uid = f"u{index}"
            tracker.pod("ADDED", pod(uid, init=["busybox:1"], containers=[f"app:{index}"]))
            tracker.event(event(uid, "ImageCacheHit", "imc-web01"))
            tracker.event(event(uid, "Pulling", f'Pulling image "app:{index}"'))
            tracker.event(event(f"other{index}", "Pulling", 'Pulling image "x:1"'))
            tracker.pod("MODIFIED", pod(uid, ready_after=2))
            tracker.pod("DELETED", pod(uid, ready_after=2))
        clock.now += 10
        tracker.sweep()

    tracemalloc.start()
    one_round(0, 1_000)  # the buffers reach their caps
    baseline = tracemalloc.take_snapshot()
    one_round(1_000, 3_000)
    grown = tracemalloc.take_snapshot().compare_to(baseline, "filename")
    tracemalloc.stop()
    assert tracker.tracked == 0
    assert tracker.orphans <= 500
    assert recorder.counts == {("web", "partial"): 4_000}
    assert observed[0] == (8_000 if observing else 0)
    growth = sum(stat.size_diff for stat in grown if "observers" in stat.traceback[0].filename)
    assert growth < 16 * 1024, f"the tracker kept {growth} bytes after 3,000 more pods"


# ------------------------------------------------------------- real watches


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server
        declared = {
            (group, resource, verb)
            for group, resource, verbs in observer_module.RBAC_RULES
            for verb in verbs
        }
        undeclared = set(server.verbs()) - declared
        assert not undeclared, f"requests outside the declared RBAC rules: {undeclared}"


@pytest.fixture
def operator(kube: KubeServer) -> Iterator[FakeOperator]:
    stand_in = FakeOperator(kube)
    yield stand_in
    stand_in.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def watching(kube: KubeServer, registry: CollectorRegistry) -> Iterator[Callable[..., PodObserver]]:
    started: list[PodObserver] = []
    clients = []

    def start(
        observe: Callable[[Sequence[Lookup]], None] | None = None, **options: Any
    ) -> PodObserver:
        tracker = PodLookupTracker(
            recorder=UsageMetrics(registry=registry),
            resolve_cache={"imc-web01": "web"}.get,
            settle_seconds=0.2,
            observe=observe,
        )
        client = kube.client()
        clients.append(client)
        observer = PodObserver(
            api_client=client,
            tracker=tracker,
            backoff_initial=0.05,
            backoff_max=0.2,
            sweep_interval=0.05,
            **options,
        )
        observer.start()
        started.append(observer)
        return observer

    yield start
    for observer in started:
        observer.stop()
    for client in clients:
        client.close()


def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        time.sleep(0.02)


def create_pod(
    operator: FakeOperator,
    name: str,
    *,
    namespace: str = "apps",
    annotation: str = "auto",
    spec: dict[str, Any] | None = None,
) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {USE_IMAGE_CACHE_ANNOTATION: annotation}},
        "spec": spec or {"containers": [{"name": "app", "image": "nginx:1.27.2"}]},
        "status": {"phase": "Pending"},
    }
    operator.core.create_namespaced_pod(namespace, body, _preload_content=False).release_conn()
    return str(operator.server.api.get("", "pods", namespace, name)["metadata"]["uid"])


def become_ready(
    operator: FakeOperator, name: str, *, after: float, namespace: str = "apps"
) -> None:
    created = operator.server.api.get("", "pods", namespace, name)["metadata"]["creationTimestamp"]
    ready = datetime.fromisoformat(created.replace("Z", "+00:00")) + timedelta(seconds=after)
    status = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready)}],
        }
    }
    operator.core.patch_namespaced_pod_status(
        name,
        namespace,
        status,
        _content_type="application/merge-patch+json",
        _preload_content=False,
    ).release_conn()


def pod_event(
    operator: FakeOperator,
    name: str,
    uid: str,
    reason: str,
    message: str,
    *,
    namespace: str = "apps",
) -> None:
    operator.event(
        involved={
            "apiVersion": "v1",
            "kind": "Pod",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        reason=reason,
        message=message,
        namespace=namespace,
    )


def lookups(registry: CollectorRegistry, cache: str, result: str) -> float:
    value = registry.get_sample_value(
        "gitsync_cache_lookups_total", {"cache": cache, "result": result}
    )
    return value or 0.0


def test_a_pod_watch_feeds_the_lookup_and_startup_metrics(
    kube: KubeServer,
    operator: FakeOperator,
    registry: CollectorRegistry,
    watching: Callable[..., PodObserver],
) -> None:
    observer = watching()
    eventually(lambda: observer.tracker.events_live)
    hit = create_pod(operator, "web-1")
    partial = create_pod(operator, "web-2")
    create_pod(operator, "web-3")
    pod_event(operator, "web-1", hit, "ImageCacheHit", "matched image cache imc-web01")
    pod_event(operator, "web-2", partial, "ImageCacheHit", "matched image cache imc-web01")
    pod_event(operator, "web-2", partial, "Pulling", 'Pulling image "redis:7.4"')
    become_ready(operator, "web-1", after=4)
    become_ready(operator, "web-2", after=40)
    become_ready(operator, "web-3", after=90)

    eventually(lambda: observer.tracker.recorded == 3)

    assert lookups(registry, "web", "hit") == 1
    assert lookups(registry, "web", "partial") == 1
    assert lookups(registry, "", "miss") == 1
    for result, seconds in (("hit", 4.0), ("partial", 40.0), ("miss", 90.0)):
        labels = {"result": result}
        assert registry.get_sample_value("gitsync_startup_seconds_count", labels) == 1
        assert registry.get_sample_value("gitsync_startup_seconds_sum", labels) == seconds
    label_values = {
        value
        for metric in registry.collect()
        for sample in metric.samples
        for value in sample.labels.values()
    }
    assert not any(value.startswith("web-") for value in label_values), "a label per pod"
    assert observer.tracker.tracked == 0


def test_a_pod_watch_emits_one_lookup_per_image_of_each_pod_with_its_uid(
    kube: KubeServer, operator: FakeOperator, watching: Callable[..., PodObserver]
) -> None:
    seen: list[Lookup] = []
    lock = threading.Lock()

    def observe(lookups: Sequence[Lookup]) -> None:
        with lock:
            seen.extend(lookups)

    observer = watching(observe=observe)
    eventually(lambda: observer.tracker.events_live)
    spec = {
        "initContainers": [{"name": "setup", "image": "busybox:1"}],
        "containers": [
            {"name": "web", "image": "nginx:1.27"},
            {"name": "app", "image": APP},
        ],
    }
    hit = create_pod(operator, "web-1", spec=spec)
    missed = create_pod(operator, "web-2", spec=spec)
    pod_event(operator, "web-1", hit, "ImageCacheHit", "matched image cache imc-web01")
    pod_event(operator, "web-1", hit, "Pulling", f'Pulling image "{APP}"')
    become_ready(operator, "web-1", after=8)
    become_ready(operator, "web-2", after=30)

    eventually(lambda: observer.tracker.recorded == 2)

    with lock:
        observed = sorted((o.group, o.image, o.result, o.cache, o.seconds) for o in seen)
    assert observed == sorted(
        [
            (hit, BUSYBOX, HIT, "web", 8.0),
            (hit, NGINX, HIT, "web", 8.0),
            (hit, APP, PARTIAL, "web", 8.0),
            (missed, BUSYBOX, MISS, None, 30.0),
            (missed, NGINX, MISS, None, 30.0),
            (missed, APP, MISS, None, 30.0),
        ]
    )
    assert {o.source for o in seen} == {LookupSource.POD}


def test_only_the_given_namespaces_are_watched(
    kube: KubeServer,
    operator: FakeOperator,
    registry: CollectorRegistry,
    watching: Callable[..., PodObserver],
) -> None:
    observer = watching(namespaces=("team-a",))
    eventually(lambda: observer.tracker.events_live)
    create_pod(operator, "outside", namespace="team-b")
    become_ready(operator, "outside", after=1, namespace="team-b")
    create_pod(operator, "inside", namespace="team-a")
    become_ready(operator, "inside", after=2, namespace="team-a")

    eventually(lambda: observer.tracker.recorded == 1)
    time.sleep(0.3)  # the other pod would need no longer than this one

    assert lookups(registry, "", "miss") == 1
    watches = [r for r in kube.requests() if r.params.get("watch") == "true"]
    assert watches
    assert {r.namespace for r in watches} == {"team-a"}


def test_a_watch_that_expires_with_410_lists_afresh_and_counts_no_pod_twice(
    kube: KubeServer,
    operator: FakeOperator,
    registry: CollectorRegistry,
    watching: Callable[..., PodObserver],
) -> None:
    observer = watching()
    eventually(lambda: observer.tracker.events_live)
    first = create_pod(operator, "before")
    pod_event(operator, "before", first, "ImageCacheHit", "imc-web01")
    become_ready(operator, "before", after=3)
    eventually(lambda: observer.tracker.recorded == 1)
    waiting = create_pod(operator, "waiting")  # still starting when the watch breaks
    relists = observer.relists

    kube.api.compact()  # the versions the observer holds are gone …
    kube.api.disconnect_watches()  # … and its streams end: resuming answers 410 Gone

    eventually(lambda: observer.relists >= relists + 2)  # pods and events listed again
    pod_event(operator, "waiting", waiting, "ImageCacheHit", "imc-web01")
    become_ready(operator, "waiting", after=5)
    eventually(lambda: observer.tracker.recorded == 2)
    time.sleep(0.3)
    assert lookups(registry, "web", "hit") == 2  # "before" was relisted Ready: not counted again
    gone = [
        r
        for r in kube.requests()
        if r.params.get("watch") == "true" and r.params.get("resourceVersion") not in (None, "")
    ]
    assert gone, "the observer resumed its watches from a resourceVersion"


def test_failing_watches_reconnect_with_backoff(
    kube: KubeServer,
    operator: FakeOperator,
    registry: CollectorRegistry,
    watching: Callable[..., PodObserver],
) -> None:
    failures: list[str] = []

    def fail_three_watches(request: kmock.Request) -> None:
        if request.params.get("watch") == "true" and len(failures) < 3:
            failures.append(request.url.path)
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="etcd is down", details={}
            )

    kube.api.before.append(fail_three_watches)
    observer = watching()
    eventually(lambda: len(failures) == 3 and observer.tracker.events_live)
    uid = create_pod(operator, "late")
    pod_event(operator, "late", uid, "ImageCacheHit", "imc-web01")
    become_ready(operator, "late", after=2)

    eventually(lambda: observer.tracker.recorded == 1)
    assert observer.reconnects >= 3
    assert lookups(registry, "web", "hit") == 1


def test_an_observer_stopped_on_losing_the_lease_starts_again_on_winning_it(
    kube: KubeServer,
    operator: FakeOperator,
    registry: CollectorRegistry,
    watching: Callable[..., PodObserver],
) -> None:
    observer = watching()
    eventually(lambda: observer.tracker.events_live)
    observer.stop()
    observer.start()
    eventually(lambda: observer.relists >= 4)  # pods and events, listed afresh
    uid = create_pod(operator, "after-restart")
    pod_event(operator, "after-restart", uid, "ImageCacheHit", "imc-web01")
    become_ready(operator, "after-restart", after=6)
    eventually(lambda: observer.tracker.recorded == 1)
    assert lookups(registry, "web", "hit") == 1


def test_the_daemon_the_wiring_builds_records_observed_pods_for_suggest(
    kube: KubeServer, operator: FakeOperator, tmp_path: Path
) -> None:
    """`gitsync run --provider kubernetes`'s own parts: the pod observer feeds observations.db."""
    (tmp_path / "repo").mkdir()
    settings = CommandSettings(
        flags={
            "provider": "kubernetes",
            "kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
            "repo": str(tmp_path / "repo"),
            "data_dir": str(tmp_path / "data"),
            "listen": "127.0.0.1:0",
        },
        env={},
        config_path=None,
    )
    provider = wiring.open_provider(settings, writable=True)
    daemon = wiring.daemon(settings, provider=provider)
    observer, recorder = daemon.observer, daemon.lookups
    assert isinstance(observer, PodObserver)
    assert recorder is not None
    observer.tracker._settle = 0.2  # the default waits 5 s for trailing events
    writer = daemon.recorder
    assert writer is not None
    writer.start()
    observer.start()
    try:
        eventually(lambda: observer.tracker.events_live)
        spec = {"containers": [{"name": "app", "image": "nginx:1.27.2"}]}
        uid = create_pod(operator, "web-9", spec=spec)
        pod_event(operator, "web-9", uid, "ImageCacheMiss", "no image cache matched")
        become_ready(operator, "web-9", after=12)
        eventually(lambda: observer.tracker.recorded == 1)
    finally:
        observer.stop()
        writer.stop()
        provider.close()
    with ObservationStore.open_readonly(tmp_path / "data" / wiring.OBSERVATIONS_FILE) as store:
        evidence = store.evidence(since=0, until=4_000_000_000)
    (image,) = evidence.images
    assert (image.image, image.misses, image.pods) == ("docker.io/library/nginx:1.27.2", 1, 1)
    assert image.mean_miss_seconds == 12.0

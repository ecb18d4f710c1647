"""Leader election between two controller instances, over a real Lease on kmock's emulator.

Most tests drive `step()` by hand with one fake clock shared by both
candidates, so "15 s later" takes no time and every moment can be checked:
at no step do both candidates consider themselves leader. One test runs the
real threads with shortened durations to cover the loop, callbacks and
release on stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import kmock
import pytest
from kube_fixtures import KubeServer

from gitsync import leader as leader_module
from gitsync.errors import ConfigError
from gitsync.leader import LeaderElector

NAMESPACE = "gitsync-system"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server
        declared = {
            (group, resource, verb)
            for group, resource, verbs in leader_module.RBAC_RULES
            for verb in verbs
        }
        undeclared = set(server.verbs(user_agent=None)) - declared
        assert not undeclared, f"requests outside the declared RBAC rules: {undeclared}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def candidates(kube: KubeServer, clock: FakeClock) -> Iterator[Callable[[str], LeaderElector]]:
    clients = []

    def make(identity: str) -> LeaderElector:
        client = kube.client(user_agent=f"gitsync-{identity}")
        clients.append(client)
        return LeaderElector(
            api_client=client,
            namespace=NAMESPACE,
            identity=identity,
            clock=clock,
            monotonic=clock,
        )

    yield make
    for client in clients:
        client.close()


def lease(kube: KubeServer) -> dict[str, object]:
    return dict(kube.api.get("coordination.k8s.io", "leases", NAMESPACE, "gitsync-leader")["spec"])


def never_both(*electors: LeaderElector) -> None:
    leading = [e.identity for e in electors if e.is_leader]
    assert len(leading) <= 1, f"{leading} reconcile together"


def test_the_first_candidate_leads_and_the_second_waits(
    kube: KubeServer, clock: FakeClock, candidates: Callable[[str], LeaderElector]
) -> None:
    a, b = candidates("a"), candidates("b")
    assert a.step() is True
    assert b.step() is False
    never_both(a, b)
    for _ in range(20):  # a minute of renewals: the follower never gets in
        clock.advance(a.retry_period)
        assert a.step() is True
        assert b.step() is False
        never_both(a, b)
    spec = lease(kube)
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert b.observed_holder == "a"


def test_when_the_leader_stops_the_other_takes_over_within_the_lease_time(
    kube: KubeServer, clock: FakeClock, candidates: Callable[[str], LeaderElector]
) -> None:
    a, b = candidates("a"), candidates("b")
    a.step()
    b.step()
    clock.advance(2)
    a.step()  # a's last renewal; then it hangs or dies without releasing
    last_renewal = clock.now
    b.step()
    a_stopped_at = b_started_at = None
    while b_started_at is None:
        clock.advance(0.5)
        if not a.is_leader and a_stopped_at is None:
            a_stopped_at = clock.now
        if b.step():
            b_started_at = clock.now
        never_both(a, b)
        assert clock.now - last_renewal <= 30, "b never took over"
    assert a_stopped_at is not None
    assert a_stopped_at - last_renewal == pytest.approx(a.renew_deadline)
    # b waited a full lease duration after it last saw the lease change, and no more.
    assert b_started_at - last_renewal == pytest.approx(b.lease_duration, abs=0.5)
    assert a_stopped_at < b_started_at
    assert lease(kube)["holderIdentity"] == "b"
    assert lease(kube)["leaseTransitions"] == 1
    # The old leader comes back: it finds the lease taken and stays a follower.
    assert a.step() is False
    never_both(a, b)


def test_a_released_lease_is_taken_at_the_next_retry(
    kube: KubeServer, clock: FakeClock, candidates: Callable[[str], LeaderElector]
) -> None:
    stopped: list[str] = []
    a, b = candidates("a"), candidates("b")
    a._on_stopped = lambda: stopped.append("a")  # as the daemon would pass it
    a.step()
    b.step()
    assert a.release() is True
    assert not a.is_leader
    assert stopped == ["a"]
    assert lease(kube)["holderIdentity"] == ""
    clock.advance(b.retry_period)
    assert b.step() is True
    never_both(a, b)


def test_losing_contact_with_the_api_stops_leading_before_anyone_else_can_start(
    kube: KubeServer, clock: FakeClock, candidates: Callable[[str], LeaderElector]
) -> None:
    a, b = candidates("a"), candidates("b")
    a.step()
    b.step()
    cut_off = True

    def partition_a(request: kmock.Request) -> None:
        agent = next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")
        if cut_off and agent == "gitsync-a":
            raise kmock.KubernetesError(
                status=503, reason="Unavailable", message="partitioned", details={}
            )

    kube.api.before.append(partition_a)
    renewed = clock.now
    while clock.now - renewed < a.renew_deadline - 0.5:
        clock.advance(0.5)
        assert a.step() is True  # keeps leading, retrying, inside the renew deadline
        b.step()
        never_both(a, b)
    clock.advance(0.5)
    # Nobody called step(): the deadline alone ends leadership, at once.
    assert a.is_leader is False
    assert b.step() is False  # and b must still wait out the lease
    while not b.step():
        clock.advance(0.5)
        never_both(a, b)
    cut_off = False
    assert a.step() is False


def test_of_two_candidates_racing_for_an_expired_lease_one_wins(
    kube: KubeServer, clock: FakeClock, candidates: Callable[[str], LeaderElector]
) -> None:
    a, b, c = candidates("a"), candidates("b"), candidates("c")
    a.step()
    b.step()
    c.step()
    clock.advance(16)  # a is gone; b and c both see the lease expired
    raced: list[str] = []

    def b_writes_first(request: kmock.Request) -> None:
        agent = next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")
        if agent == "gitsync-c" and str(request.method.value) == "PUT" and not raced:
            raced.append("b")  # b's PUT lands between c's read and c's write
            with kube.api.lock:
                stored = kube.api.objects[
                    ("coordination.k8s.io", "leases", NAMESPACE, "gitsync-leader")
                ]
                stored.obj["spec"]["holderIdentity"] = "b"
                stored.obj["metadata"]["resourceVersion"] = str(kube.api._next_rv())

    kube.api.before.append(b_writes_first)
    assert c.step() is False  # 409 Conflict: its read is stale
    assert raced == ["b"]
    assert lease(kube)["holderIdentity"] == "b"
    never_both(a, c)


def test_settings_that_cannot_work_are_refused(kube: KubeServer) -> None:
    client = kube.client()
    with pytest.raises(ConfigError, match="lease duration > renew deadline"):
        LeaderElector(
            api_client=client,
            namespace=NAMESPACE,
            identity="a",
            lease_duration=10,
            renew_deadline=10,
        )
    with pytest.raises(ConfigError, match="non-empty identity"):
        LeaderElector(api_client=client, namespace=NAMESPACE, identity="")
    client.close()


def test_two_running_instances_hand_over_without_overlap(kube: KubeServer) -> None:
    clients = [kube.client(user_agent=f"gitsync-{n}") for n in ("a", "b")]
    events: list[str] = []
    electors = [
        LeaderElector(
            api_client=client,
            namespace=NAMESPACE,
            identity=name,
            lease_duration=1.5,
            renew_deadline=1.0,
            retry_period=0.1,
            on_started_leading=lambda n=name: events.append(f"{n} started"),  # type: ignore[misc]
            on_stopped_leading=lambda n=name: events.append(f"{n} stopped"),  # type: ignore[misc]
        )
        for client, name in zip(clients, ("a", "b"), strict=True)
    ]
    overlap: list[float] = []
    watching = threading.Event()

    def monitor() -> None:
        while not watching.is_set():
            if all(e.is_leader for e in electors):
                overlap.append(time.monotonic())
            time.sleep(0.002)

    sampler = threading.Thread(target=monitor)
    sampler.start()
    try:
        for elector in electors:
            elector.start()
        deadline = time.monotonic() + 5
        while not any(e.is_leader for e in electors):
            assert time.monotonic() < deadline, "nobody became leader"
            time.sleep(0.01)
        first = next(e for e in electors if e.is_leader)
        other = electors[1] if first is electors[0] else electors[0]
        first.stop()  # releases the lease on the way out
        assert other.wait_until_leading(timeout=5), "the other instance did not take over"
    finally:
        watching.set()
        sampler.join()
        for elector in electors:
            elector.stop()
        for client in clients:
            client.close()
    assert overlap == []
    assert events[:3] == [
        f"{first.identity} started",
        f"{first.identity} stopped",
        f"{other.identity} started",
    ]

"""Leader election between two controller instances, over a real Lease on kmock's emulator.

Most tests drive `step()` by hand with one fake clock shared by both
candidates, so "15 s later" takes no time and every moment can be checked:
at no step do both candidates consider themselves leader. One test runs the
real threads with shortened durations to cover the loop, callbacks and
release on stop.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator

import kmock
import pytest
from kube_fixtures import KubeServer
from waiting import wait_until

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


def lease_writes(kube: KubeServer) -> list[tuple[float, str]]:
    """Every write of the Lease the stand-in committed, in order: (when, holderIdentity)."""
    with kube.api.lock:
        return [
            (entry.at, str(entry.obj.get("spec", {}).get("holderIdentity") or ""))
            for entry in kube.api.history
            if entry.resource == ("coordination.k8s.io", "leases")
        ]


def leadership(
    events: list[tuple[float, str, str]], writes: list[tuple[float, str]]
) -> list[tuple[str, float, float]]:
    """Each elector's terms as leader, (identity, start, end), widened to be sure of them.

    A term starts no later than the Lease write that named the elector holder
    (it cannot lead before that write is committed) and ends no earlier than its
    `on_stopped_leading` callback (called once it has stopped). Two terms that
    overlap here may or may not have overlapped in truth; two that overlapped
    in truth always overlap here, however briefly, whatever the scheduling.
    """
    acquired = [
        (at, holder)
        for (at, holder), previous in zip(writes, ["", *(h for _, h in writes)], strict=False)
        if holder and holder != previous
    ]
    terms: list[tuple[str, float, float]] = []
    open_terms: dict[str, float] = {}
    for at, who, what in sorted(events):
        if what == "started":
            claims = [t for t, holder in acquired if holder == who and t <= at]
            assert claims, f"{who} started leading without a Lease write naming it"
            open_terms[who] = claims[-1]
        else:
            terms.append((who, open_terms.pop(who), at))
    terms += [(who, start, math.inf) for who, start in open_terms.items()]
    return terms


def test_two_running_instances_hand_over_without_overlap(kube: KubeServer) -> None:
    """Real threads: one leads, stops and releases, the other takes over; never both.

    Overlap is judged from records, not by sampling `is_leader`: the stand-in
    keeps every Lease write with its time and the electors' callbacks log when
    each term ended, so a term of one that overlaps a term of the other is
    found however short it was.
    """
    clients = [kube.client(user_agent=f"gitsync-{n}") for n in ("a", "b")]
    events: list[tuple[float, str, str]] = []  # (time.monotonic(), identity, started|stopped)

    def log(identity: str, what: str) -> Callable[[], None]:
        return lambda: events.append((time.monotonic(), identity, what))

    electors = [
        LeaderElector(
            api_client=client,
            namespace=NAMESPACE,
            identity=name,
            # Short enough to hand over quickly, long enough that a busy machine does not
            # make a lease expire between two renewals (the handover here is a release).
            lease_duration=4.0,
            renew_deadline=3.0,
            retry_period=0.2,
            on_started_leading=log(name, "started"),
            on_stopped_leading=log(name, "stopped"),
        )
        for client, name in zip(clients, ("a", "b"), strict=True)
    ]
    try:
        for elector in electors:
            elector.start()
        first = wait_until(
            lambda: next((e for e in electors if e.is_leader), None),
            timeout=10,
            what="one of the two to become leader",
        )
        other = electors[1] if first is electors[0] else electors[0]
        first.stop()  # releases the lease on the way out
        assert other.wait_until_leading(timeout=10), "the other instance did not take over"
    finally:
        for elector in electors:
            elector.stop()
        for client in clients:
            client.close()

    assert [(who, what) for _, who, what in events] == [
        (first.identity, "started"),
        (first.identity, "stopped"),
        (other.identity, "started"),
        (other.identity, "stopped"),
    ]
    writes = lease_writes(kube)
    # The holder changed hands only through a release (an empty holder), never by a
    # write over a live holder: neither lease expired.
    for (_, before), (_, after) in itertools.pairwise(writes):
        assert not (before and after and before != after), f"{after} took the lease from {before}"
    terms = leadership(events, writes)
    assert [who for who, _, _ in terms] == [first.identity, other.identity]
    for (a, a_start, a_end), (b, b_start, b_end) in itertools.combinations(terms, 2):
        assert not (a_start < b_end and b_start < a_end), f"{a} and {b} led at the same time"

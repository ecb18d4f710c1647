"""Leader election through a `coordination.k8s.io/v1` Lease, the way client-go does it.

gitsync runs with two replicas so that a node failure does not stop caches
from being kept. Both replicas serve metrics and health; only the leader
reconciles, because two controllers applying the same objects at once would
fight over every rebuild and double the cloud bill of a recreate.

The protocol is client-go's `leaderelection` with a `LeaseLock`:

- A candidate reads the Lease. Absent: it creates it, naming itself
  `holderIdentity`. Held by someone else: it waits until `lease_duration`
  (15 s) has passed since it *observed* the record last change, measured on
  its own monotonic clock, so clock skew between nodes cannot matter. Then it
  replaces the Lease (PUT with the `resourceVersion` it read, so of two
  candidates exactly one wins; the other gets 409 Conflict).
- The leader renews every `retry_period` (2 s). If it cannot renew for
  `renew_deadline` (10 s), it stops leading, at once and by itself: the
  `is_leader` property turns False when the deadline passes even if the
  renewing thread is stuck in a request. Since others take over only after
  15 s, there are 5 s in which nobody reconciles, and never a moment in which
  two do.
- On a clean shutdown the leader releases the Lease (empty holder, duration
  1 s), so the other replica takes over at its next retry instead of after
  15 s.

`LeaderElector` never reconciles itself. The daemon asks `is_leader` before a
pass and before each action of a pass (so losing the lease stops writes at
once), and may use `on_started_leading` / `on_stopped_leading` to wake up or
log. `step()` is one attempt and is what tests drive with a fake clock;
`start()` runs it every `retry_period` in a thread.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from gitsync.errors import ConfigError
from gitsync.timeparse import parse_rfc3339

log = logging.getLogger("gitsync.leader")

DEFAULT_LEASE_NAME = "gitsync-leader"
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2  # client-go's: candidates retry at retry_period × U(1, 1.2)

# What the code calls, for the RBAC test: (apiGroup, resource, verbs), in the lease's namespace.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("coordination.k8s.io", "leases", ("get", "create", "update")),
)


def default_identity() -> str:
    """The host name (a pod's name, in a cluster) plus a random suffix, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_datetime(value: str | None) -> datetime | None:
    """A Lease time for the client's model.

    The client writes datetimes with `isoformat()`, which drops the fraction
    when it is zero; the API server parses MicroTime strictly with six digits,
    so a zero fraction is sent as one microsecond.
    """
    if not value:
        return None
    moment = parse_rfc3339(value)
    if moment is None:
        return None
    return moment.replace(microsecond=1) if moment.microsecond == 0 else moment


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease's spec as the election reads it."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


class LeaderElector:
    """One candidate in the election for Lease `namespace/name`; see the module docstring."""

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        identity: str,
        name: str = DEFAULT_LEASE_NAME,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """`clock` stamps the Lease's times (read by humans); `monotonic` decides expiry."""
        if not lease_duration > renew_deadline > JITTER_FACTOR * retry_period > 0:
            raise ConfigError(
                "leader election needs lease duration > renew deadline > 1.2 × retry period > 0;"
                f" got {lease_duration} s, {renew_deadline} s, {retry_period} s"
            )
        if not identity:
            raise ConfigError("leader election needs a non-empty identity (e.g. the pod name)")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._lease_api = _LeaseApi(
            api_client,
            namespace=namespace,
            name=name,
            retry_period=retry_period,
            renew_deadline=renew_deadline,
        )
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography
        self._lock = threading.Lock()
        self._leading = False
        self._renewed_at = 0.0  # monotonic time of our last successful acquire or renew
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic time the observed record last changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------ state

    @property
    def is_leader(self) -> bool:
        """True only while we hold the Lease and renewed it within the renew deadline."""
        with self._lock:
            return self._valid_locked()

    def _valid_locked(self) -> bool:
        return self._leading and self._monotonic() - self._renewed_at < self.renew_deadline

    @property
    def observed_holder(self) -> str | None:
        with self._lock:
            return self._observed.holder if self._observed is not None else None

    def wait_until_leading(self, timeout: float | None = None) -> bool:
        """Block until this candidate leads (True) or `timeout` passes or it stops (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._valid_locked():
                if self._stop.is_set():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(min(remaining or self.retry_period, self.retry_period))
            return True

    # ------------------------------------------------------------------- loop

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gitsync-leader", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True, timeout: float = 5.0) -> None:
        """Stop campaigning; a leader releases the Lease so a peer takes over at once."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        if release:
            self.release()
        self._set_leading(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            leading = self.step()
            # The leader renews on a fixed period; candidates spread their tries (jitter).
            factor = 1.0 if leading else self._rng.uniform(1.0, JITTER_FACTOR)
            self._stop.wait(self.retry_period * factor)

    def step(self) -> bool:
        """One attempt to acquire or renew; returns whether we lead afterwards."""
        try:
            acquired = self._try_acquire_or_renew()
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.warning("leader election: cannot reach Lease %s/%s: %s", *self._where(), exc)
            acquired = False
        lost = False
        with self._lock:
            if acquired:
                self._renewed_at = self._monotonic()
            elif self._leading:
                taken = self._observed is not None and self._observed.holder != self.identity
                late = self._monotonic() - self._renewed_at >= self.renew_deadline
                lost = taken or late
            holder = self._observed.holder if self._observed is not None else None
        if lost:
            log.error(
                "leader election: lost Lease %s/%s (holder now %r); reconciling stops",
                *self._where(),
                holder or None,
            )
        self._set_leading(acquired or (not lost and self.is_leader))
        return self.is_leader

    def release(self) -> bool:
        """Give the Lease up if we hold it (clean shutdown); True when released."""
        with self._lock:
            held = self._leading
        if not held:
            return False
        try:
            lease = self._lease_api.read()
            if lease is None or LeaseRecord.from_lease(lease).holder != self.identity:
                return False
            now = _micro_time(self._clock())
            record = LeaseRecord(
                holder="",
                duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                transitions=LeaseRecord.from_lease(lease).transitions,
            )
            self._lease_api.replace(lease, record)
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.warning("leader election: cannot release Lease %s/%s: %s", *self._where(), exc)
            return False
        finally:
            self._set_leading(False)
        log.info("leader election: released Lease %s/%s", *self._where())
        return True

    # -------------------------------------------------------------- protocol

    def _try_acquire_or_renew(self) -> bool:
        now = _micro_time(self._clock())
        lease = self._lease_api.read()
        if lease is None:
            record = LeaseRecord(
                holder=self.identity,
                duration_seconds=round(self.lease_duration),
                acquire_time=now,
                renew_time=now,
                transitions=0,
            )
            try:
                self._lease_api.create(record)
            except ApiException as exc:
                if exc.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(record)
            log.info(
                "leader election: %s created and holds Lease %s/%s", self.identity, *self._where()
            )
            return True

        current = LeaseRecord.from_lease(lease)
        self._observe(current)
        held_by_other = current.holder not in ("", self.identity)
        if held_by_other and not self._expired(current):
            return False
        ours = current.holder == self.identity
        record = LeaseRecord(
            holder=self.identity,
            duration_seconds=round(self.lease_duration),
            acquire_time=current.acquire_time if ours else now,
            renew_time=now,
            transitions=current.transitions if ours else current.transitions + 1,
        )
        try:
            self._lease_api.replace(lease, record)
        except ApiException as exc:
            if exc.status == 409:  # someone wrote the Lease since we read it
                return False
            raise
        self._observe(record)
        if not ours:
            log.info(
                "leader election: %s acquired Lease %s/%s (was %r)",
                self.identity,
                *self._where(),
                current.holder or None,
            )
        return True

    def _observe(self, record: LeaseRecord) -> None:
        with self._lock:
            if record != self._observed:
                self._observed = record
                self._observed_at = self._monotonic()

    def _expired(self, record: LeaseRecord) -> bool:
        with self._lock:
            duration = record.duration_seconds or self.lease_duration
            return self._monotonic() - self._observed_at >= duration

    def _where(self) -> tuple[str, str]:
        return self.namespace, self.name

    def _set_leading(self, leading: bool) -> None:
        with self._changed:
            was = self._leading
            self._leading = leading
            self._changed.notify_all()
        if leading and not was:
            log.info("leader election: %s leads; reconciling", self.identity)
            if self._on_started is not None:
                self._on_started()
        elif was and not leading and self._on_stopped is not None:
            self._on_stopped()


class _LeaseApi:
    """The Lease's reads and writes: the only part of the election that talks to the API server.

    Every request is bounded by the renew deadline, or a hung call would hide a lost lease.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        name: str,
        retry_period: float,
        renew_deadline: float,
    ) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        # (connect, read): a request must not outlive the renew deadline.
        self._timeout = (min(5.0, retry_period), renew_deadline / 2)

    def read(self) -> dict[str, Any] | None:
        try:
            response = self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _decode(response)

    def create(self, record: LeaseRecord) -> None:
        body = self._lease(record, resource_version=None)
        response = self._api.create_namespaced_lease(
            self.namespace, body, _preload_content=False, _request_timeout=self._timeout
        )
        _decode(response)

    def replace(self, lease: dict[str, Any], record: LeaseRecord) -> None:
        # The resourceVersion read makes the PUT conditional: of two writers one gets 409.
        version = (lease.get("metadata") or {}).get("resourceVersion")
        response = self._api.replace_namespaced_lease(
            self.name,
            self.namespace,
            self._lease(record, resource_version=version),
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        _decode(response)

    def _lease(
        self, record: LeaseRecord, *, resource_version: str | None
    ) -> kubernetes.client.V1Lease:
        return kubernetes.client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=kubernetes.client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=resource_version
            ),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.duration_seconds,
                acquire_time=_as_datetime(record.acquire_time),
                renew_time=_as_datetime(record.renew_time),
                lease_transitions=record.transitions,
            ),
        )


def _decode(response: Any) -> dict[str, Any]:
    try:
        data = json.loads(response.data or b"{}")
    finally:
        response.release_conn()
    return data if isinstance(data, dict) else {}

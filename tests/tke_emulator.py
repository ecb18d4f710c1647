"""A local stand-in for the TKE image-cache API, for tests and benchmarks.

No cloud account is reachable from CI, so gitsync's Tencent Cloud backend is
tested against this server, through the real SDK. It is strict where a lenient
fake would hide bugs:

* It speaks the wire protocol the SDK speaks: POST with a JSON body and the
  X-TC-Action / X-TC-Version / X-TC-Region / X-TC-Timestamp headers, and it
  VERIFIES the TC3-HMAC-SHA256 signature as Tencent documents it (canonical
  request → string to sign → key derived from "TC3"+secret key, the date,
  the service "tke" and "tc3_request"). A wrong secret id answers
  AuthFailure.SecretIdNotFound, a wrong key AuthFailure.SignatureFailure.
* Answers are the API's envelope, `{"Response": {..., "RequestId"}}` or
  `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`, with HTTP 200
  and `Content-Type` exactly `application/json`, as the real API sends them.
* Request fields are checked against the SDK's own request models: a field the
  SDK does not know is UnknownParameter, so a typo cannot pass unnoticed, and
  an EIP field sent to UpdateImageCache (which has none) fails. The EIP and
  security group parameters of CreateImageCache are checked as the API
  reference (457/70861) states them: `AutoCreateEip` a boolean,
  `AutoCreateEipAttribute` an `EipAttribute` (DeletePolicy and
  InternetServiceProvider strings, InternetMaxBandwidthOut an integer), and
  `ExistedEipId` mutually exclusive with both; `SecurityGroupIds` a list of
  `sg-` ids, which must exist when the emulator is given `security_groups`.
  What a cache was built with (its EIP, its security groups) is kept and shown
  by `stored()`, not by DescribeImageCaches: the real `ImageCache` has neither.
* State persists across calls: caches move Pending → Ready (or Failed, for
  images marked as failing) `ready_after` seconds after a create, and
  Updating → Ready (or UpdateFailed) after an update; ExpireDateTime is
  CreationTime + RetentionDays and an expired cache is cleaned up, as the
  cloud does.
* On demand it throttles (RequestLimitExceeded) a fraction of calls, injects
  any error code, answers a raw body with any status and content type, and
  answers slowly (before or after doing the work). It records every call.

It also answers CBS `DescribeSnapshots` (cbs 2017-03-12), because the
snapshot behind a Ready cache is a CBS snapshot that gitsync checks:

* A request is dispatched on the service its signature's credential scope
  names (`tke` or `cbs`), and `X-TC-Version` must be that service's version;
  an action of the other service is InvalidAction. `endpoint` answers both
  (a gateway or test endpoint that serves both APIs, which is what gitsync
  assumes for a custom `--tencentcloud-endpoint` that is not `tke.…`);
  `cbs_endpoint` is a second listener that, like the real
  cbs.tencentcloudapi.com, serves CBS only and only for requests signed for
  its own Host.
* Every cache that turns Ready gets a CBS snapshot (NORMAL); an update that
  turns Ready again replaces it, and deleting or expiring a cache deletes its
  snapshot, as the cloud does. Tests delete a snapshot behind the API's back
  (`delete_snapshot`), set its state (`set_snapshot_state`) or plant others.
* `DescribeSnapshots` is checked as the API reference (362/15647) states it:
  `SnapshotIds` or `Filters` (snapshot-id, snapshot-name, snapshot-state;
  not both: InvalidParameter), `Limit` 1 to 100 (default 20), `Offset`,
  `TotalCount`, ids of another form InvalidParameterValue, an unknown filter
  InvalidFilter. A snapshot that does not exist is simply not listed: the
  API documents no not-found error for it.
* CBS calls are recorded apart from TKE calls (`cbs_calls`, `count(action)`),
  so counts of TKE calls stay what TKE was asked; injected errors, slow
  answers and throttling without an `action` apply to TKE calls only.

Choices where the real API's behaviour is not documented (so the provider must
not depend on them): `DeleteImageCaches` with an unknown id fails as a whole
with ResourceNotFound and deletes nothing; `UpdateImageCache` merges `Tags` by
key; names need not be unique; caches are listed oldest first;
`AutoCreateEipAttribute` with `AutoCreateEip: false` is InvalidParameterValue
(the reference says the attribute alone creates an EIP, so the two contradict);
InternetMaxBandwidthOut below 1 is InvalidParameterValue; an unknown security
group is InvalidParameterValue; DescribeSnapshots lists snapshots oldest first
unless `Order` says DESC; a request signed for another service or Host at
`cbs_endpoint` is AuthFailure.SignatureFailure.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tencentcloud.cbs.v20170312 import models as cbs_models
from tencentcloud.tke.v20180525 import models

SERVICE = "tke"
VERSION = "2018-05-25"
CBS_SERVICE = "cbs"
CBS_VERSION = "2017-03-12"
CBS_MAX_LIMIT = 100  # DescribeSnapshots: Limit "最大值为100"
CBS_ACTIONS = ("DescribeSnapshots",)
SNAPSHOT_STATES = (
    "NORMAL",
    "CREATING",
    "ROLLBACKING",
    "COPYING_FROM_REMOTE",
    "CHECKING_COPIED",
    "TORECYCLE",
)
SNAPSHOT_FILTERS = ("snapshot-id", "snapshot-name", "snapshot-state")
ALGORITHM = "TC3-HMAC-SHA256"
MAX_SKEW_SECONDS = 300  # Tencent rejects a timestamp more than 5 minutes off
MAX_LIMIT = 50
DAY = 86400.0
ACTIONS = (
    "CreateImageCache",
    "DescribeImageCaches",
    "UpdateImageCache",
    "DeleteImageCaches",
    "GetMostSuitableImageCache",
)
_AUTHORIZATION = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]+)"
    r"/tc3_request, SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-z]+")
_SNAPSHOT_ID = re.compile(r"snap-[0-9a-z]{8}")


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request that reached the emulator (signed correctly or not)."""

    action: str
    params: dict[str, Any]
    request_id: str
    error: str | None  # the error Code answered, None for a success, "raw" for a raw body
    service: str = SERVICE  # tke or cbs: the action's service
    host: str = ""  # the Host header it was sent with (which endpoint the client used)


@dataclass(slots=True)
class _Cache:
    cache_id: str
    name: str
    images: list[str]
    size: int
    retention: int
    created_at: float
    tags: dict[str, str]
    credentials: list[dict[str, str]] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)  # the create's params, as sent
    status: str = "Pending"
    build_started: float = 0.0
    snapshot_id: str | None = None
    last_matched: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    raw_status: str | None = None  # forced by a test: reported as is
    security_groups: list[str] = field(default_factory=list)
    eip: dict[str, Any] | None = None  # {"auto": attributes} or {"existing": id}; None: no EIP

    @property
    def expires_at(self) -> float | None:
        return self.created_at + self.retention * DAY if self.retention > 0 else None


@dataclass(slots=True)
class _Snapshot:
    snapshot_id: str
    size: int
    created_at: float
    name: str = ""
    state: str = "NORMAL"


@dataclass(slots=True)
class _Raw:
    status: int
    content_type: str
    body: bytes


@dataclass(slots=True)
class _Injection:
    action: str | None
    times: int
    service: str = SERVICE
    error: tuple[str, str] | None = None
    raw: _Raw | None = None
    delay: float = 0.0
    delay_after: bool = True  # slow answer after doing the work (the ambiguous case)


def _fields(model: type[Any]) -> frozenset[str]:
    """Field names an SDK model knows (its attributes are `_Name`)."""
    return frozenset(k[1:] for k in vars(model()) if k.startswith("_") and k != "_headers")


_REQUEST_FIELDS = {
    **{action: _fields(getattr(models, f"{action}Request")) for action in ACTIONS},
    **{action: _fields(getattr(cbs_models, f"{action}Request")) for action in CBS_ACTIONS},
}
_NESTED_FIELDS = {
    SERVICE: {
        "Tags": _fields(models.Tag),
        "ImageRegistryCredentials": _fields(models.ImageRegistryCredential),
        "Filters": _fields(models.Filter),
    },
    CBS_SERVICE: {"Filters": _fields(cbs_models.Filter)},
}
SNAPSHOT_FIELDS = _fields(cbs_models.Snapshot)  # what a Snapshot of DescribeSnapshots may hold
_NESTED_OBJECTS = {"AutoCreateEipAttribute": _fields(models.EipAttribute)}
# EipAttribute's fields and their types, as the SDK documents them (:type ...: str / int).
_EIP_TYPES: dict[str, type] = {
    "DeletePolicy": str,
    "InternetServiceProvider": str,
    "InternetMaxBandwidthOut": int,
}


def service_of(action: str) -> str:
    """The service an action belongs to: cbs for DescribeSnapshots, tke for the rest."""
    return CBS_SERVICE if action in CBS_ACTIONS else SERVICE


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tc3_signature(
    *,
    secret_key: str,
    method: str,
    host: str,
    content_type: str,
    body: bytes,
    timestamp: int,
    service: str = SERVICE,
    signed_headers: str = "content-type;host",
    headers: Mapping[str, str] | None = None,
) -> str:
    """The TC3-HMAC-SHA256 signature of a POST, as Tencent's documentation defines it."""
    values = {"content-type": content_type, "host": host, **(headers or {})}
    canonical_headers = "".join(
        f"{name}:{values.get(name, '').strip().lower()}\n" for name in signed_headers.split(";")
    )
    canonical_request = "\n".join(
        [method, "/", "", canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            str(timestamp),
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )

    def sign(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode(), hashlib.sha256).digest()

    key = sign(sign(sign(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class TkeEmulator:
    """The server; use as a context manager, or `start()` and `stop()`."""

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        region: str = "ap-guangzhou",
        ready_after: float = 0.2,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        vpcs: Mapping[str, Collection[str]] | None = None,
        signature_clock: Callable[[], float] = time.time,
        security_groups: Collection[str] | None = None,
    ) -> None:
        """`clock` drives cache lifecycles (tests may move it); `signature_clock` checks
        X-TC-Timestamp (real time: bound here, so patching `time.time` moves only the
        client). `vpcs` maps each known VpcId to its SubnetIds; None accepts any.
        `security_groups` are the ids that exist; None accepts any well-formed one."""
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.region = region
        self.ready_after = ready_after
        self.clock = clock
        self.signature_clock = signature_clock
        self.vpcs = {k: frozenset(v) for k, v in vpcs.items()} if vpcs is not None else None
        self.security_groups = frozenset(security_groups) if security_groups is not None else None
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._caches: dict[str, _Cache] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._ids = itertools.count(1)
        self._calls: list[RecordedCall] = []
        self._injections: list[_Injection] = []
        self._throttle_ratio = 0.0
        self._throttle_actions: frozenset[str] | None = None
        self._failing_images: set[str] = set()
        # Called (under the state lock) before each authenticated action: tests change state
        # between two calls of a sequence, e.g. delete a cache between two describe pages.
        self.before_action: Callable[[str, dict[str, Any]], None] | None = None
        self._servers: dict[str, ThreadingHTTPServer] = {}  # listener -> server
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------- lifecycle

    def start(self) -> TkeEmulator:
        for listener in ("main", CBS_SERVICE):
            handler = type("Handler", (_Handler,), {"emulator": self, "listener": listener})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},  # stop() returns within one interval
                name=f"tke-emulator-{listener}",
                daemon=True,
            )
            self._servers[listener] = server
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = {}, []

    def __enter__(self) -> TkeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """HOST:PORT, what `--tencentcloud-endpoint` takes (with `--tencentcloud-scheme http`).

        It serves TKE and CBS alike, dispatching on the signature's credential scope.
        """
        return self._address("main")

    @property
    def cbs_endpoint(self) -> str:
        """HOST:PORT of the CBS-only listener, what `--tencentcloud-cbs-endpoint` takes."""
        return self._address(CBS_SERVICE)

    def _address(self, listener: str) -> str:
        server = self._servers.get(listener)
        if server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return f"127.0.0.1:{server.server_address[1]}"

    # --------------------------------------------------------------- control

    @property
    def calls(self) -> list[RecordedCall]:
        """The TKE calls (CBS calls are `cbs_calls`)."""
        with self._lock:
            return [c for c in self._calls if c.service == SERVICE]

    @property
    def cbs_calls(self) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self._calls if c.service == CBS_SERVICE]

    def counts(self, *, service: str = SERVICE) -> Counter[str]:
        with self._lock:
            return Counter(call.action for call in self._calls if call.service == service)

    def count(self, action: str | None = None) -> int:
        """Calls of `action`; without one, every TKE call."""
        service = service_of(action) if action is not None else SERVICE
        with self._lock:
            return sum(
                1
                for c in self._calls
                if c.service == service and (action is None or c.action == action)
            )

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def throttle(self, ratio: float, *, actions: Iterable[str] | None = None) -> None:
        """Answer RequestLimitExceeded to this fraction of calls (seeded, reproducible).

        Without `actions`, TKE calls only; name DescribeSnapshots to throttle CBS.
        """
        with self._lock:
            self._throttle_ratio = ratio
            self._throttle_actions = frozenset(actions) if actions is not None else None

    def inject_error(
        self, code: str, message: str, *, action: str | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` calls (of `action`, or any TKE call) with this error."""
        with self._lock:
            self._injections.append(_injection(action, times, error=(code, message)))

    def inject_raw(
        self,
        *,
        body: bytes,
        content_type: str,
        status: int = 200,
        action: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls with exactly this status, content type and body."""
        with self._lock:
            self._injections.append(_injection(action, times, raw=_Raw(status, content_type, body)))

    def slow(
        self, seconds: float, *, action: str | None = None, times: int = 1, after: bool = True
    ) -> None:
        """Delay the next answers; `after=True` does the work first (a timeout is ambiguous)."""
        with self._lock:
            self._injections.append(_injection(action, times, delay=seconds, delay_after=after))

    def fail_images(self, *images: str) -> None:
        """Builds that include any of these images end Failed / UpdateFailed."""
        with self._lock:
            self._failing_images.update(images)

    def add_cache(
        self,
        name: str,
        images: Iterable[str],
        *,
        tags: Mapping[str, str] | None = None,
        size: int = 20,
        retention: int = 0,
        status: str = "Ready",
        created_at: float | None = None,
    ) -> str:
        """Plant a cache as if someone else made it (no signature, not counted)."""
        with self._lock:
            now = self.clock()
            cache = self._new_cache(
                name=name,
                images=list(images),
                size=size,
                retention=retention,
                tags=dict(tags or {}),
                credentials=[],
                created_at=now if created_at is None else created_at,
            )
            if status == "Ready":
                cache.status = "Ready"
                cache.snapshot_id = self._new_snapshot(cache, f"snap-{cache.cache_id[4:]}")
            elif status in ("Pending", "Failed"):
                cache.status = status
            else:
                cache.raw_status = status
            return cache.cache_id

    def remove_cache(self, cache_id: str) -> None:
        """Delete a cache behind the API's back (another tool, or expiry), and its snapshot."""
        with self._lock:
            self._drop(cache_id)

    # ------------------------------------------------------------- snapshots

    def snapshots(self) -> list[dict[str, Any]]:
        """Every CBS snapshot as DescribeSnapshots would show it now, oldest first."""
        with self._lock:
            self._advance()
            return [self._api_snapshot(s) for s in self._snapshots.values()]

    def snapshot_of(self, cache_id: str) -> str | None:
        """The SnapshotId a cache reports (whether or not the snapshot still exists)."""
        with self._lock:
            self._advance()
            return self._caches[cache_id].snapshot_id

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a CBS snapshot behind TKE's back: its cache still reports it, Ready."""
        with self._lock:
            del self._snapshots[snapshot_id]

    def set_snapshot_state(self, snapshot_id: str, state: str) -> None:
        """Report `state` (one of SNAPSHOT_STATES, or any other text) for a snapshot."""
        with self._lock:
            self._snapshots[snapshot_id].state = state

    def add_snapshot(self, *, state: str = "NORMAL", size: int = 20) -> str:
        """Plant a snapshot no cache uses (another team's), e.g. to page past it."""
        with self._lock:
            snapshot_id = f"snap-{uuid.uuid4().hex[:8]}"
            self._snapshots[snapshot_id] = _Snapshot(
                snapshot_id, size=size, created_at=self.clock(), name="planted", state=state
            )
            return snapshot_id

    def set_status(self, cache_id: str, raw: str) -> None:
        """Report `raw` as the Status of a cache from now on (an unknown value, say)."""
        with self._lock:
            self._caches[cache_id].raw_status = raw

    def mark_matched(self, cache_id: str) -> None:
        with self._lock:
            self._caches[cache_id].last_matched = self.clock()

    def caches(self) -> list[dict[str, Any]]:
        """Every cache as DescribeImageCaches would show it now."""
        with self._lock:
            self._advance()
            return [self._api_cache(c) for c in self._caches.values()]

    def stored(self, cache_id: str) -> dict[str, Any]:
        """What the emulator keeps of a cache beyond the API view (the create's request)."""
        with self._lock:
            cache = self._caches[cache_id]
            return {
                "request": dict(cache.request),
                "credentials": list(cache.credentials),
                "security_groups": list(cache.security_groups),
                "eip": None if cache.eip is None else dict(cache.eip),
            }

    # -------------------------------------------------------------- handling

    def handle(
        self, *, method: str, headers: Mapping[str, str], body: bytes, listener: str = "main"
    ) -> tuple[int, str, bytes, float]:
        """One HTTP request → (status, content type, body, seconds to wait before answering).

        `listener` is "main" (`endpoint`: TKE and CBS) or "cbs" (`cbs_endpoint`: CBS only).
        """
        request_id = str(uuid.uuid4())
        action = headers.get("x-tc-action", "")
        host = headers.get("host", "")
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = None
        with self._lock:
            injection = self._take_injection(action)
        delay_before = injection.delay if injection and not injection.delay_after else 0.0
        delay_after = injection.delay if injection and injection.delay_after else 0.0
        if delay_before:
            time.sleep(delay_before)
        error: str | None = None
        try:
            if injection is not None and injection.raw is not None:
                raw = injection.raw
                self._record(action, params, request_id, "raw", host)
                return raw.status, raw.content_type, raw.body, delay_after
            service = self._authenticate(
                method=method, headers=headers, body=body, listener=listener
            )
            if not isinstance(params, dict):
                raise ApiError("InvalidParameter", "the request body must be a JSON object")
            if injection is not None and injection.error is not None:
                raise ApiError(*injection.error)
            with self._lock:
                if self._throttled(action):
                    raise ApiError(
                        "RequestLimitExceeded", "Your current request times exceeds the limit."
                    )
            result = self._dispatch(service, action, params)
            envelope: dict[str, Any] = {"Response": {**result, "RequestId": request_id}}
        except ApiError as exc:
            error = exc.code
            envelope = {
                "Response": {
                    "Error": {"Code": exc.code, "Message": exc.message},
                    "RequestId": request_id,
                }
            }
        self._record(action, params, request_id, error, host)
        return 200, "application/json", json.dumps(envelope).encode(), delay_after

    def _record(
        self, action: str, params: object, request_id: str, error: str | None, host: str
    ) -> None:
        with self._lock:
            self._calls.append(
                RecordedCall(
                    action=action or "(none)",
                    params=params if isinstance(params, dict) else {},
                    request_id=request_id,
                    error=error,
                    service=service_of(action),
                    host=host,
                )
            )

    def _take_injection(self, action: str) -> _Injection | None:
        service = service_of(action)
        for injection in self._injections:
            if injection.service != service:
                continue
            if injection.action is None or injection.action == action:
                injection.times -= 1
                if injection.times <= 0:
                    self._injections.remove(injection)
                return injection
        return None

    def _throttled(self, action: str) -> bool:
        if self._throttle_ratio <= 0:
            return False
        if self._throttle_actions is None and service_of(action) != SERVICE:
            return False  # without named actions, TKE only: CBS draws nothing from the rng
        if self._throttle_actions is not None and action not in self._throttle_actions:
            return False
        return self._rng.random() < self._throttle_ratio

    def _authenticate(
        self, *, method: str, headers: Mapping[str, str], body: bytes, listener: str
    ) -> str:
        """The service the request is signed for, once its signature checks out."""
        if method != "POST":
            raise ApiError("UnsupportedProtocol", f"the emulator takes POST only, got {method}")
        authorization = headers.get("authorization", "")
        match = _AUTHORIZATION.fullmatch(authorization)
        if match is None:
            raise ApiError("AuthFailure.InvalidAuthorization", "Authorization is invalid.")
        if match["id"] != self.secret_id:
            raise ApiError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        try:
            timestamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            raise ApiError("MissingParameter", "X-TC-Timestamp is missing.") from None
        if abs(self.signature_clock() - timestamp) > MAX_SKEW_SECONDS:
            raise ApiError("AuthFailure.SignatureExpire", "Signature expired.")
        service = self._scope(match, timestamp=timestamp, headers=headers, listener=listener)
        signed = match["headers"].split(";")
        if "content-type" not in signed or "host" not in signed:
            raise ApiError("AuthFailure.SignatureFailure", "content-type and host must be signed.")
        payload = body
        if headers.get("x-tc-content-sha256") == "UNSIGNED-PAYLOAD":
            payload = b"UNSIGNED-PAYLOAD"
        expected = tc3_signature(
            secret_key=self.secret_key,
            method=method,
            host=headers.get("host", ""),
            content_type=headers.get("content-type", ""),
            body=payload,
            timestamp=timestamp,
            signed_headers=match["headers"],
            headers={name: headers.get(name, "") for name in signed},
            service=service,
        )
        if not hmac.compare_digest(expected, match["signature"]):
            raise ApiError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature"
                " is correct.",
            )
        if headers.get("x-tc-version") != (CBS_VERSION if service == CBS_SERVICE else VERSION):
            raise ApiError(
                "NoSuchVersion", f"The API version {headers.get('x-tc-version')} is wrong."
            )
        if headers.get("x-tc-region") != self.region:
            raise ApiError(
                "UnsupportedRegion", f"The region {headers.get('x-tc-region')} is wrong."
            )
        if headers.get("content-type") != "application/json":
            raise ApiError("InvalidParameter", "Content-Type must be application/json.")
        return service

    def _scope(
        self, match: re.Match[str], *, timestamp: int, headers: Mapping[str, str], listener: str
    ) -> str:
        """The service of the credential scope, if this listener serves it for this Host."""
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        service = match["service"]
        served = (CBS_SERVICE,) if listener == CBS_SERVICE else (SERVICE, CBS_SERVICE)
        if match["date"] != date or service not in served:
            raise ApiError("AuthFailure.SignatureFailure", "The credential scope is invalid.")
        if listener == CBS_SERVICE and headers.get("host", "") != self.cbs_endpoint:
            # The real cbs host verifies the signature against its own name.
            raise ApiError(
                "AuthFailure.SignatureFailure",
                f"The request is signed for host {headers.get('host', '')!r}, not this one.",
            )
        return service

    # ------------------------------------------------------------------- API

    def _dispatch(self, service: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action not in (CBS_ACTIONS if service == CBS_SERVICE else ACTIONS):
            raise ApiError("InvalidAction", f"The action {action} does not exist.")
        _check_fields(action, params)
        with self._lock:
            if self.before_action is not None:
                self.before_action(action, params)
            self._advance()
            handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_api_{action}")
            return handler(params)

    def _api_CreateImageCache(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        for key in ("Images", "SubnetId", "VpcId", "ImageCacheName"):
            if params.get(key) in (None, "", []):
                raise ApiError("MissingParameter", f"The parameter {key} is missing.")
        images = _strings(params["Images"], "Images")
        vpc, subnet = params["VpcId"], params["SubnetId"]
        if self.vpcs is not None:
            if vpc not in self.vpcs:
                raise ApiError("InvalidParameter", f"VpcId {vpc} does not exist in {self.region}.")
            if subnet not in self.vpcs[vpc]:
                raise ApiError("InvalidParameter", f"SubnetId {subnet} is not in VPC {vpc}.")
        size = _size(params.get("ImageCacheSize", 20))
        retention = _retention(params.get("RetentionDays", 0))
        for key in ("RegistrySkipVerifyList", "RegistryHttpEndPointList"):
            if key in params:
                _strings(params[key], key)
        groups = self._security_groups(params)
        eip = _eip(params)
        cache = self._new_cache(
            name=str(params["ImageCacheName"]),
            images=images,
            size=size,
            retention=retention,
            tags=_tags(params.get("Tags")),
            credentials=_credentials(params.get("ImageRegistryCredentials")),
            created_at=self.clock(),
        )
        cache.request = json.loads(json.dumps(params))
        cache.security_groups, cache.eip = groups, eip
        cache.events.append(self._event(cache, "Normal", "Creating", "creating the image cache"))
        return {"ImageCacheId": cache.cache_id}

    def _api_DescribeImageCaches(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        limit = params.get("Limit", 20)
        offset = params.get("Offset", 0)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ApiError("InvalidParameterValue", f"Limit must be 1 to {MAX_LIMIT}, got {limit}.")
        if not isinstance(offset, int) or offset < 0:
            raise ApiError("InvalidParameterValue", f"Offset must be 0 or more, got {offset}.")
        selected = list(self._caches.values())
        if "ImageCacheIds" in params:
            ids = set(_strings(params["ImageCacheIds"], "ImageCacheIds"))
            selected = [c for c in selected if c.cache_id in ids]
        if "ImageCacheNames" in params:
            names = set(_strings(params["ImageCacheNames"], "ImageCacheNames"))
            selected = [c for c in selected if c.name in names]
        for item in params.get("Filters") or []:
            if item.get("Name") != "image-cache-name":
                raise ApiError("InvalidParameterValue", f"Unknown filter {item.get('Name')}.")
            values = set(_strings(item.get("Values"), "Filters.Values"))
            selected = [c for c in selected if c.name in values]
        page = selected[offset : offset + limit]
        return {"TotalCount": len(selected), "ImageCaches": [self._api_cache(c) for c in page]}

    def _api_UpdateImageCache(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        cache = self._get(params.get("ImageCacheId"))
        groups = self._security_groups(params) if "SecurityGroupIds" in params else None
        if "Images" in params:
            cache.images = _strings(params["Images"], "Images")
            if not cache.images:
                raise ApiError("InvalidParameterValue", "Images must not be empty.")
        if "ImageCacheSize" in params:
            size = _size(params["ImageCacheSize"])
            if size < cache.size:
                raise ApiError(
                    "InvalidParameterValue", f"ImageCacheSize cannot shrink from {cache.size}."
                )
            cache.size = size
        if "RetentionDays" in params:
            cache.retention = _retention(params["RetentionDays"])
        if "ImageCacheName" in params:
            cache.name = str(params["ImageCacheName"])
        if "ImageRegistryCredentials" in params:
            cache.credentials = _credentials(params["ImageRegistryCredentials"])
        if groups is not None:
            cache.security_groups = groups
        if "Tags" in params:
            cache.tags.update(_tags(params["Tags"]))  # merged by key
        cache.status = "Updating" if cache.snapshot_id else "Pending"
        cache.build_started = self.clock()
        cache.raw_status = None
        cache.events.append(self._event(cache, "Normal", "Updating", "updating the image cache"))
        return {}

    def _api_DeleteImageCaches(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        ids = _strings(params.get("ImageCacheIds"), "ImageCacheIds")
        if not ids:
            raise ApiError("MissingParameter", "The parameter ImageCacheIds is missing.")
        missing = [i for i in ids if i not in self._caches]
        if missing:
            raise ApiError("ResourceNotFound", f"Image caches {', '.join(missing)} do not exist.")
        for cache_id in ids:
            self._drop(cache_id)
        return {}

    def _api_GetMostSuitableImageCache(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        images = _strings(params.get("Images"), "Images")
        best: tuple[int, int, float] | None = None
        chosen: _Cache | None = None
        for cache in self._caches.values():
            if self._status(cache) != "Ready":
                continue
            hits = sum(1 for image in images if image in cache.images)
            key = (hits, -cache.size, cache.created_at)
            if hits and (best is None or key > best):
                best, chosen = key, cache
        if chosen is None:
            return {"Found": False, "ImageCache": None}
        return {"Found": True, "ImageCache": self._api_cache(chosen)}

    def _api_DescribeSnapshots(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:  # the API's action name: _api_<Action>
        limit, offset = params.get("Limit", 20), params.get("Offset", 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= CBS_MAX_LIMIT:
            raise ApiError(
                "InvalidParameterValue", f"Limit must be 1 to {CBS_MAX_LIMIT}, got {limit}."
            )
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ApiError("InvalidParameterValue", f"Offset must be 0 or more, got {offset}.")
        if "SnapshotIds" in params and "Filters" in params:
            raise ApiError(
                "InvalidParameter", "SnapshotIds and Filters cannot be specified at the same time."
            )
        selected = list(self._snapshots.values())
        if "SnapshotIds" in params:
            ids = _strings(params["SnapshotIds"], "SnapshotIds")
            for snapshot_id in ids:
                _snapshot_id(snapshot_id)
            wanted = set(ids)
            selected = [s for s in selected if s.snapshot_id in wanted]
        for item in params.get("Filters") or []:
            name = item.get("Name")
            if name not in SNAPSHOT_FILTERS:
                raise ApiError("InvalidFilter", f"The filter {name} is not supported.")
            values = set(_strings(item.get("Values"), "Filters.Values"))
            if name == "snapshot-id":
                for value in values:
                    _snapshot_id(value)
            field_of = {"snapshot-id": "snapshot_id", "snapshot-name": "name"}
            attribute = field_of.get(name, "state")
            selected = [s for s in selected if getattr(s, attribute) in values]
        if params.get("OrderField", "CREATE_TIME") != "CREATE_TIME":
            raise ApiError("InvalidParameterValue", "OrderField must be CREATE_TIME.")
        order = params.get("Order", "ASC")
        if order not in ("ASC", "DESC"):
            raise ApiError("InvalidParameterValue", f"Order must be ASC or DESC, got {order}.")
        selected.sort(key=lambda s: (s.created_at, s.snapshot_id), reverse=order == "DESC")
        page = selected[offset : offset + limit]
        return {"TotalCount": len(selected), "SnapshotSet": [self._api_snapshot(s) for s in page]}

    def _api_snapshot(self, snapshot: _Snapshot) -> dict[str, Any]:
        created = _iso(snapshot.created_at)
        return {
            "SnapshotId": snapshot.snapshot_id,
            "SnapshotName": snapshot.name,
            "SnapshotState": snapshot.state,
            "Percent": 50 if snapshot.state == "CREATING" else 100,
            "DiskId": f"disk-{snapshot.snapshot_id[5:]}",
            "DiskSize": snapshot.size,
            "DiskUsage": "DATA_DISK",
            "Placement": {"Zone": f"{self.region}-3"},
            "CreateTime": created,
            "LatestModifyTime": created,
            "IsPermanent": True,
            "DeadlineTime": None,
            "Encrypt": False,
            "CopyFromRemote": False,
            "SnapshotType": "PRIVATE_SNAPSHOT",
            "ShareReference": 0,
            "TimeStartShare": None,
            "Images": [],
            "ImageCount": 0,
            "CopyingToRegions": [],
            "Tags": [],
            "IsLocked": False,
        }

    # ----------------------------------------------------------------- state

    def _new_cache(
        self,
        *,
        name: str,
        images: list[str],
        size: int,
        retention: int,
        tags: dict[str, str],
        credentials: list[dict[str, str]],
        created_at: float,
    ) -> _Cache:
        cache_id = f"imc-{next(self._ids):08x}"
        cache = _Cache(
            cache_id=cache_id,
            name=name,
            images=images,
            size=size,
            retention=retention,
            created_at=created_at,
            tags=tags,
            credentials=credentials,
            build_started=created_at,
        )
        self._caches[cache_id] = cache
        return cache

    def _security_groups(self, params: Mapping[str, Any]) -> list[str]:
        if "SecurityGroupIds" not in params:
            return []
        groups = _strings(params["SecurityGroupIds"], "SecurityGroupIds")
        for group in groups:
            if not _SECURITY_GROUP.fullmatch(group):
                raise ApiError(
                    "InvalidParameterValue", f"SecurityGroupIds: {group!r} is not a security group."
                )
            if self.security_groups is not None and group not in self.security_groups:
                raise ApiError(
                    "InvalidParameterValue", f"The security group {group} does not exist."
                )
        return groups

    def _get(self, cache_id: object) -> _Cache:
        if not isinstance(cache_id, str) or not cache_id:
            raise ApiError("MissingParameter", "The parameter ImageCacheId is missing.")
        cache = self._caches.get(cache_id)
        if cache is None:
            raise ApiError("ResourceNotFound", f"Image cache {cache_id} does not exist.")
        return cache

    def _advance(self) -> None:
        """Finish builds whose time has come and clean up expired caches."""
        now = self.clock()
        for cache in list(self._caches.values()):
            if (
                cache.status in ("Pending", "Updating")
                and now >= cache.build_started + self.ready_after
            ):
                updating = cache.status == "Updating"
                bad = sorted(set(cache.images) & self._failing_images)
                if bad:
                    cache.status = "UpdateFailed" if updating else "Failed"
                    cache.events.append(
                        self._event(cache, "Warning", "PullImageFailed", f"failed to pull {bad[0]}")
                    )
                else:
                    cache.status = "Ready"
                    if cache.snapshot_id is not None:
                        self._snapshots.pop(cache.snapshot_id, None)  # replaced by the new one
                    cache.snapshot_id = self._new_snapshot(cache, f"snap-{uuid.uuid4().hex[:8]}")
                    verb = "Updated" if updating else "Created"
                    cache.events.append(
                        self._event(cache, "Normal", verb, f"{len(cache.images)} images cached")
                    )
            expires = cache.expires_at
            if expires is not None and now >= expires:
                self._drop(cache.cache_id)

    def _new_snapshot(self, cache: _Cache, snapshot_id: str) -> str:
        self._snapshots[snapshot_id] = _Snapshot(
            snapshot_id,
            size=cache.size,
            created_at=self.clock(),
            name=f"imagecache-{cache.cache_id}",
        )
        return snapshot_id

    def _drop(self, cache_id: str) -> None:
        """Delete a cache and the snapshot it made, as the cloud does."""
        cache = self._caches.pop(cache_id)
        if cache.snapshot_id is not None:
            self._snapshots.pop(cache.snapshot_id, None)

    def _status(self, cache: _Cache) -> str:
        return cache.raw_status if cache.raw_status is not None else cache.status

    def _event(self, cache: _Cache, type_: str, reason: str, message: str) -> dict[str, Any]:
        stamp = _iso(self.clock())
        return {
            "ImageCacheId": cache.cache_id,
            "Type": type_,
            "Reason": reason,
            "Message": message,
            "FirstTimestamp": stamp,
            "LastTimestamp": stamp,
        }

    def _api_cache(self, cache: _Cache) -> dict[str, Any]:
        return {
            "ImageCacheId": cache.cache_id,
            "ImageCacheName": cache.name,
            "ImageCacheSize": cache.size,
            "Images": list(cache.images),
            "CreationTime": _iso(cache.created_at),
            "ExpireDateTime": _iso(cache.expires_at),
            "Events": [dict(e) for e in cache.events],
            "LastMatchedTime": _iso(cache.last_matched),
            "SnapshotId": cache.snapshot_id,
            "Status": self._status(cache),
            "RetentionDays": cache.retention,
            # The API does not give passwords back.
            "ImageRegistryCredentials": [
                {"Server": c.get("Server"), "Username": c.get("Username"), "Name": c.get("Name")}
                for c in cache.credentials
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in cache.tags.items()],
        }


# --------------------------------------------------------------- validation


def _check_fields(action: str, params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - _REQUEST_FIELDS[action])
    if unknown:
        raise ApiError("UnknownParameter", f"The parameter {unknown[0]} is not recognized.")
    for key, allowed in _NESTED_OBJECTS.items():
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ApiError("InvalidParameter", f"{key} must be an object.")
        extra = sorted(set(value) - allowed)
        if extra:
            raise ApiError("UnknownParameter", f"The parameter {key}.{extra[0]} is not recognized.")
    for key, allowed in _NESTED_FIELDS[service_of(action)].items():
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ApiError("InvalidParameter", f"{key} must be a list of objects.")
        for item in value:
            extra = sorted(set(item) - allowed)
            if extra:
                raise ApiError(
                    "UnknownParameter", f"The parameter {key}.{extra[0]} is not recognized."
                )


def _eip(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The EIP a create asks for, checked: {"auto": attributes}, {"existing": id} or None."""
    auto, attributes, existing = (
        params.get("AutoCreateEip"),
        params.get("AutoCreateEipAttribute"),
        params.get("ExistedEipId"),
    )
    if auto is not None and not isinstance(auto, bool):
        raise ApiError("InvalidParameter", "AutoCreateEip must be a boolean.")
    if existing is not None and (not isinstance(existing, str) or not existing):
        raise ApiError("InvalidParameter", "ExistedEipId must be a non-empty string.")
    if existing is not None and (auto or attributes is not None):
        raise ApiError(
            "InvalidParameter",
            "ExistedEipId is mutually exclusive with AutoCreateEip and AutoCreateEipAttribute.",
        )
    if attributes is not None:
        if auto is False:
            raise ApiError(
                "InvalidParameterValue",
                "AutoCreateEipAttribute creates an EIP; it contradicts AutoCreateEip false.",
            )
        for key, value in attributes.items():  # keys checked by _check_fields
            kind = _EIP_TYPES[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ApiError(
                    "InvalidParameter", f"AutoCreateEipAttribute.{key} must be {kind.__name__}."
                )
        bandwidth = attributes.get("InternetMaxBandwidthOut")
        if bandwidth is not None and bandwidth < 1:
            raise ApiError(
                "InvalidParameterValue",
                "AutoCreateEipAttribute.InternetMaxBandwidthOut must be 1 or more,"
                f" got {bandwidth}.",
            )
    if existing is not None:
        return {"existing": existing}
    if auto or attributes is not None:
        return {"auto": dict(attributes or {})}
    return None


def _injection(action: str | None, times: int, **fields: Any) -> _Injection:
    """An injection for `action`'s service; without an action, for TKE calls."""
    service = service_of(action) if action is not None else SERVICE
    return _Injection(action, times, service=service, **fields)


def _snapshot_id(value: str) -> str:
    if not _SNAPSHOT_ID.fullmatch(value):
        raise ApiError("InvalidParameterValue", f"{value!r} is not a snapshot id (snap-xxxxxxxx).")
    return value


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError("InvalidParameter", f"{key} must be a list of strings.")
    return list(value)


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 20 <= value <= 32000:
        raise ApiError("InvalidParameterValue", f"ImageCacheSize must be 20 to 32000, got {value}.")
    return value


def _retention(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError("InvalidParameterValue", f"RetentionDays must be 0 or more, got {value}.")
    return value


def _tags(value: object) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in value or []:  # type: ignore[attr-defined]  # checked by _check_fields
        key, val = tag.get("Key"), tag.get("Value")
        if not isinstance(key, str) or not key or not isinstance(val, str):
            raise ApiError("InvalidParameter", "a tag needs a string Key and Value.")
        if key.lower().startswith(("qcloud", "tencent", "project")):
            raise ApiError("InvalidParameterValue.ReservedTagKey", f"tag key {key} is reserved.")
        if not _TAG_TEXT.fullmatch(key) or not _TAG_TEXT.fullmatch(val) or len(val) > 255:
            raise ApiError("InvalidParameterValue.TagKeyCharacterIllegal", f"tag {key} is invalid.")
        tags[key] = val
    return tags


def _credentials(value: object) -> list[dict[str, str]]:
    credentials = []
    for item in value or []:  # type: ignore[attr-defined]  # checked by _check_fields
        if not all(isinstance(item.get(k), str) for k in ("Server", "Username", "Password")):
            raise ApiError("InvalidParameter", "a credential needs Server, Username and Password.")
        credentials.append(dict(item))
    return credentials


# ---------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    emulator: TkeEmulator
    listener: str  # "main" (TKE and CBS) or "cbs" (CBS only)
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_POST(self) -> None:  # http.server's naming
        self._serve("POST")

    def do_GET(self) -> None:  # http.server's naming
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, content_type, payload, delay = self.emulator.handle(
            method=method, headers=headers, body=body, listener=self.listener
        )
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        pass  # quiet: tests read calls from the emulator, not stderr

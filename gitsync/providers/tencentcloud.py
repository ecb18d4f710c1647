"""The Tencent Cloud backend: image caches managed directly through the TKE API.

This is the path for teams that do not run the in-cluster operator. It speaks
the `tke.v20180525` image-cache actions through `tencentcloud-sdk-python-tke`
(extra `tencent`) and translates them into the `Provider` protocol. It is
tested against a local emulator of the API (`tests/tke_emulator.py`), which
checks TC3-HMAC-SHA256 signatures, not against a cloud account.

Why it is built the way it is
-----------------------------
* **Errors are read from the body, never from the SDK alone.** The SDK looks
  for an error only when `Content-Type` is exactly `application/json` (or
  `text/plain`); any other type, say `application/json; charset=utf-8` from a
  gateway, makes it deserialise the error envelope into an empty response
  model, and an empty `DescribeImageCaches` would look like "no caches" and
  plan a create for every spec. So every call goes through `client.call` (the
  SDK's generic signed POST) and the raw body is checked here: a JSON object
  with `Response.RequestId`, no `Response.Error`, and the fields the action
  must return. Anything else is an error.
* **Calls per pass are bounded.** `observe` is `DescribeImageCaches` pages of
  50 and nothing else (1,000 caches: 20 calls). A create, an update and a
  delete are one call each; concurrent deletes are coalesced into one
  `DeleteImageCaches` call. Transient failures are retried inside the call a
  few times with exponential backoff and jitter, so a 30% throttled API still
  converges; the reconciler's own per-cache backoff takes over after that.
* **A create is retried only when it certainly did not happen.** Throttling
  (`RequestLimitExceeded`) rejects a request before it runs, so it is retried.
  After a timeout, an `InternalError` or an unreadable answer the cache may
  exist; the provider then looks it up by name (one filtered describe) and
  returns it if it is there, instead of creating a second one.
* **Ownership is a tag.** `CreateImageCache` takes `Tags`; gitsync writes
  `gitsync.io/owner` (the controller id), `gitsync.io/prune` (`enabled` or
  `disabled`), `gitsync.io/pull-secrets` (the spec's `imagePullSecrets`,
  space-separated, `-` for none), `gitsync.io/security-groups` (the spec's
  `securityGroupIds`, in order, `-` for none) and `gitsync.io/eip` (`none`,
  or `auto` and the EIP attributes as `Key=value`). The API returns none of
  credentials' origin, security groups or EIP settings, so without the tags
  every pass would see a difference. All are written on every create and
  update, so they are right whether `UpdateImageCache` replaces the tag set
  or merges into it; a cache made before a tag existed reads as "none". A
  cache without the owner tag gets `owner=None` and is never changed;
  `update` and `delete` refuse one too.
* **What the spec maps to.** `securityGroupIds` is `SecurityGroupIds` on
  create and update; without it, `--security-group-id` is sent (the flag is a
  default, like `--vpc-id`, so changing it changes no existing cache). The
  annotation `eks.tke.cloud.tencent.com/eip-attributes` is `AutoCreateEip:
  true` plus `AutoCreateEipAttribute` with the fields it sets; the cloud's
  ImageCache documentation names no annotation for an existing EIP, so
  `ExistedEipId` is never sent. Labels and other annotations have no place in
  the API and are not kept (`TENCENTCLOUD_FIELDS`).
* **Rebuilds.** The reconciler calls `update` for UPDATE and RECREATE alike.
  In place (`UpdateImageCache`) keeps the old snapshot serving while the new
  one builds, so that is the default, also for UpdateFailed. A cache is
  replaced instead (create the new one, then delete the old) when in-place
  cannot be trusted to help: it is Failed (or in a status gitsync does not
  know), it is expired or within half its retention period of expiring (the
  cloud counts retention from creation, and gitsync does not rely on an update
  renewing it; the planner's renewal window is at most half the retention),
  or the spec shrinks `imageCacheSize` (cloud disks grow, never shrink), or
  the EIP settings change (`UpdateImageCache` has no EIP fields; the planner
  plans those as RECREATE, since `TENCENTCLOUD_FIELDS` says so), or a
  snapshot check found its CBS snapshot gone or damaged. If
  the delete of the old cache fails after the new one exists, the next pass
  sees two owned caches of one name and the planner deletes the older.
* **Snapshots are checked.** The CBS snapshot behind each Ready cache is
  looked up with DescribeSnapshots by `tencent_snapshots.CbsSnapshotLookup`,
  wrapped around this provider by `snapshots.SnapshotChecked`; both APIs are
  called through `TencentCloudAPI`, so CBS calls get the same credentials,
  retries, strict reading and secret hygiene as the TKE ones.
* **Credentials never leak.** The secret id and key live only in the SDK's
  credential object; messages built from API text are scrubbed of them; the
  SDK's own logger, which dumps whole requests (the `Authorization` header,
  request bodies with registry passwords) at DEBUG, is filtered to WARNING and
  above. Registry passwords come from pull secrets and go only into request
  bodies.

Times from the API are ISO 8601 (`2026-11-22T03:00:00Z`, `…+08:00`); a time
without an offset (`2026-11-22 11:00:00`, the format of older Tencent APIs) is
read as China Standard Time (UTC+8), the zone Tencent's console and APIs use,
unless `naive_time_offset_hours` says otherwise.
"""

from __future__ import annotations

import configparser
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tencentcloud.common import credential as tc_credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.tke.v20180525 import tke_client

from gitsync import imageref
from gitsync.errors import ConfigError, GitSyncError, PermanentError, TemporaryError
from gitsync.model import (
    CLASSIC_FIELDS,
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    DEFAULT_RETENTION_DAYS,
    EIP_ATTRIBUTES_ANNOTATION,
    EIP_FIELD,
    SECURITY_GROUPS_FIELD,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    EipAttributes,
    ObservedCache,
    ObservedState,
    ProviderFields,
)
from gitsync.providers.local.auth import (
    Credential,
    CredentialStore,
    PullSecretNotFoundError,
    load_pull_secret,
)

__all__ = [
    "EIP_TAG",
    "OWNER_TAG",
    "PAGE_SIZE",
    "PRUNE_TAG",
    "PULL_SECRETS_TAG",
    "SECURITY_GROUPS_TAG",
    "TENCENTCLOUD_FIELDS",
    "TencentCloudAPIError",
    "TencentCloudAuthError",
    "TencentCloudCredentials",
    "TencentCloudInvalidParameterError",
    "TencentCloudNotFoundError",
    "TencentCloudProvider",
    "TencentCloudResponseError",
    "TencentCloudSettings",
    "TencentCloudTransientError",
    "classify_error",
    "eip_params",
    "load_credentials_file",
    "observed_from_api",
    "ownership_tags",
    "parse_api_time",
    "registry_credentials",
]

log = logging.getLogger("gitsync.providers.tencentcloud")

API_VERSION = "2018-05-25"
SERVICE = "tke"
DEFAULT_ENDPOINT = "tke.tencentcloudapi.com"
DEFAULT_CBS_ENDPOINT = "cbs.tencentcloudapi.com"  # the snapshot checks' DescribeSnapshots
PAGE_SIZE = 50  # DescribeImageCaches: "最大不能超过50"
DELETE_BATCH_SIZE = 50
OWNER_TAG = "gitsync.io/owner"
PRUNE_TAG = "gitsync.io/prune"
PULL_SECRETS_TAG = "gitsync.io/pull-secrets"
SECURITY_GROUPS_TAG = "gitsync.io/security-groups"
EIP_TAG = "gitsync.io/eip"
NO_PULL_SECRETS = "-"  # a tag value may not be empty; "-" is no valid secret reference
NO_SECURITY_GROUPS = "-"
NO_EIP, AUTO_EIP = "none", "auto"
TAG_VALUE_MAX = 255
CHINA_STANDARD_TIME_HOURS = 8.0
SDK_LOGGER = "tencentcloud_sdk_common"
_SNIPPET = 200  # characters of an unreadable body quoted in an error
# Tencent tags: letters, digits, spaces and + - = . _ : / @
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
_ENDPOINT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?")
_KNOWN_STATUSES = {status.value: status for status in CacheStatus}
_EIP_TAG_VALUE = re.compile(r"[\w+\-.:/@]+")  # one attribute value in the eip tag: no space, no =

# What the API can hold of a spec: the classic fields, SecurityGroupIds (also on
# update) and the EIP (on create only). No labels, no other annotations.
TENCENTCLOUD_FIELDS = ProviderFields(
    kept=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, EIP_FIELD},
    updatable=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD},
    why_not=((EIP_FIELD, "UpdateImageCache cannot change the EIP settings"),),
)

# Codes that say "not now" rather than "never". Throttling rejects before running;
# the others may or may not have run (see `_AMBIGUOUS`). Other InternalError.*
# sub-codes of TKE name configuration problems (CIDR conflicts, quotas, balance,
# CAM) that retrying cannot fix, so they are permanent.
_THROTTLE_PREFIX = "RequestLimitExceeded"
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalError.UnexpectedInternal",
        "InternalError.UnexceptedInternal",  # sic: TKE documents both spellings
        "InternalError.Db",
        "InternalError.DbAffectivedRows",
        "InternalError.CmdTimeout",
        "InternalError.ComponentClientHttp",
        "InternalError.ComponentClinetHttp",  # sic
        "InternalError.KubeClientConnection",
        "InternalError.KubernetesInternal",
        "InternalError.MarketInternalServerError",
        "InternalError.TaskAlreadyRunning",
        "InternalError.VPCUnexpectedError",
        "InternalError.VstationError",
        "InternalError.WhitelistUnexpectedError",
        "FailedOperation.TaskAlreadyRunning",
        "FailedOperation.KubeClientConnection",
        "ResourceUnavailable",
        "ResourceInsufficient",
        "ResourcesSoldOut",
        "ClientNetworkError",  # the SDK's code for connection errors and timeouts
        "ServerNetworkError",  # the SDK's code for a non-200 HTTP answer
    }
)
_TRANSIENT_PREFIXES = ("ResourceUnavailable.", "ResourceInsufficient.")
_AUTH_CODES = frozenset(
    {
        "InvalidCredential",  # the SDK's code for an empty or malformed secret
        "InternalError.CamNoAuth",
        "FailedOperation.CamNoAuth",
        "InternalError.AccountUserNotAuthenticated",
        "FailedOperation.AccountUserNotAuthenticated",
    }
)
_AUTH_PREFIXES = ("AuthFailure", "UnauthorizedOperation")
_PARAMETER_PREFIXES = ("InvalidParameter", "MissingParameter", "UnknownParameter")
_NOT_FOUND_PREFIX = "ResourceNotFound"


# --------------------------------------------------------------------------- errors


class TencentCloudAPIError(PermanentError):
    """A Tencent Cloud API (TKE, or CBS for snapshot checks) refused a call for good.

    The message carries the API's Code, Message and RequestId (what Tencent
    support asks for), never the caller's credentials; `api` names the service
    ("TKE", "CBS").
    """

    def __init__(
        self,
        *,
        action: str,
        code: str,
        message: str,
        request_id: str | None,
        hint: str = "",
        api: str = "TKE",
    ) -> None:
        super().__init__(_api_message(action, code, message, request_id, hint, api=api))
        self.api = api
        self.action = action
        self.code = code
        self.api_message = message
        self.request_id = request_id


class TencentCloudAuthError(TencentCloudAPIError):
    """Wrong, expired or unauthorised credentials (AuthFailure*, UnauthorizedOperation*)."""


class TencentCloudInvalidParameterError(TencentCloudAPIError):
    """The request itself is wrong (InvalidParameter*, MissingParameter, UnknownParameter)."""


class TencentCloudNotFoundError(TencentCloudAPIError):
    """A named resource does not exist (ResourceNotFound*)."""


class TencentCloudTransientError(TemporaryError):
    """Throttling, an internal error of the cloud, or a network failure: try again later."""

    def __init__(
        self,
        *,
        action: str,
        code: str,
        message: str,
        request_id: str | None,
        retry_after: float | None = None,
        api: str = "TKE",
    ) -> None:
        super().__init__(
            _api_message(action, code, message, request_id, "", api=api), retry_after=retry_after
        )
        self.api = api
        self.action = action
        self.code = code
        self.api_message = message
        self.request_id = request_id

    @property
    def throttled(self) -> bool:
        """True when the API rejected the call before running it (safe to repeat any call)."""
        return self.code.startswith(_THROTTLE_PREFIX)


class TencentCloudResponseError(TemporaryError):
    """The answer could not be read as a Tencent Cloud API response: never taken for a success.

    Temporary, because a proxy or gateway in the way (an HTML error page, a
    truncated body) is the usual cause; a wrong `--tencentcloud-endpoint` (or
    `--tencentcloud-cbs-endpoint`) shows up here too, so the message names the
    endpoint.
    """


def _api_message(
    action: str, code: str, message: str, request_id: str | None, hint: str, *, api: str = "TKE"
) -> str:
    text = f"{api} {action} failed: {code}: {message or '(no message)'}"
    text += f" (RequestId {request_id})" if request_id else " (no RequestId)"
    return text + (f"; {hint}" if hint else "")


_HINTS = {
    "AuthFailure.SecretIdNotFound": "check TENCENTCLOUD_SECRET_ID or the credentials file",
    "AuthFailure.SignatureFailure": "check TENCENTCLOUD_SECRET_KEY or the credentials file",
    "AuthFailure.SignatureExpire": (
        "the local clock differs from the API's by more than 5 minutes; sync it with NTP"
    ),
    "AuthFailure.InvalidAuthorization": "the Authorization header is malformed (a proxy?)",
    "UnsupportedRegion": "check --region",
}


def _hint(code: str, action: str, api: str = "TKE") -> str:
    if code in _HINTS:
        return _HINTS[code]
    if code.startswith("AuthFailure.Token"):
        return "the temporary token is missing, malformed or expired"
    if code.startswith("UnauthorizedOperation") or code.endswith("CamNoAuth"):
        return f"grant the CAM user or role permission for {api.lower()}:{action}"
    return ""


def classify_error(
    *,
    action: str,
    code: str,
    message: str,
    request_id: str | None,
    throttle_retry_after: float | None = 1.0,
    api: str = "TKE",
) -> GitSyncError:
    """The gitsync error for an API error `code`: transient ones back off, the rest are reported.

    The codes are Tencent Cloud's common ones (AuthFailure*, RequestLimitExceeded,
    InternalError, ...) plus TKE's own; `api` only names the service in messages.
    """
    if code.startswith(_THROTTLE_PREFIX):
        # The documented limits are per second (20/s for DescribeImageCaches and DescribeSnapshots).
        return TencentCloudTransientError(
            action=action,
            code=code,
            message=message,
            request_id=request_id,
            retry_after=throttle_retry_after,
            api=api,
        )
    if code in _TRANSIENT_CODES or code.startswith(_TRANSIENT_PREFIXES):
        return TencentCloudTransientError(
            action=action, code=code, message=message, request_id=request_id, api=api
        )
    kind: type[TencentCloudAPIError] = TencentCloudAPIError
    if code in _AUTH_CODES or code.startswith(_AUTH_PREFIXES):
        kind = TencentCloudAuthError
    elif code.startswith(_PARAMETER_PREFIXES):
        kind = TencentCloudInvalidParameterError
    elif code.startswith(_NOT_FOUND_PREFIX):
        kind = TencentCloudNotFoundError
    return kind(
        action=action,
        code=code,
        message=message,
        request_id=request_id,
        hint=_hint(code, action, api),
        api=api,
    )


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class TencentCloudCredentials:
    """A CAM secret id and key (and a session token for temporary credentials).

    The values never appear in a repr or a message; `source` says where they
    came from ("environment", "credentials file …") so errors can point there.
    """

    secret_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "explicit credentials"

    def __post_init__(self) -> None:
        for label, value in (("secret id", self.secret_id), ("secret key", self.secret_key)):
            if not value or not value.strip():
                raise ConfigError(
                    f"Tencent Cloud {label} from {self.source} is empty; set"
                    " TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY or use a credentials file"
                )
            if value.strip() != value or any(c.isspace() for c in value):
                raise ConfigError(
                    f"Tencent Cloud {label} from {self.source} contains whitespace;"
                    " copy it again without spaces or line breaks"
                )

    def secrets(self) -> tuple[str, ...]:
        """The values to scrub from any text that leaves the provider."""
        return tuple(v for v in (self.secret_id, self.secret_key, self.token) if v)


def load_credentials_file(path: Path, *, profile: str = "default") -> TencentCloudCredentials:
    """Read the SDK's INI credentials file (`~/.tencentcloud/credentials`).

    Format, as the SDK's `ProfileCredential` reads it::

        [default]
        secret_id = AKID...
        secret_key = ...
        token = ...        # optional, for temporary credentials
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with Path(path).open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"Tencent Cloud credentials file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Tencent Cloud credentials file {path}: {exc}") from exc
    except configparser.Error:
        # configparser quotes the offending line, which may hold the key: say where only.
        raise ConfigError(
            f"Tencent Cloud credentials file {path} is not an INI file with a [{profile}]"
            " section holding secret_id and secret_key"
        ) from None
    if not parser.has_section(profile):
        sections = ", ".join(parser.sections()) or "none"
        raise ConfigError(
            f"Tencent Cloud credentials file {path} has no [{profile}] section"
            f" (sections: {sections})"
        )
    section = parser[profile]
    secret_id = section.get("secret_id", "").strip().strip('"')
    secret_key = section.get("secret_key", "").strip().strip('"')
    token = section.get("token", "").strip().strip('"') or None
    if not secret_id or not secret_key:
        raise ConfigError(
            f"Tencent Cloud credentials file {path}: [{profile}] needs secret_id and secret_key"
        )
    return TencentCloudCredentials(
        secret_id=secret_id,
        secret_key=secret_key,
        token=token,
        source=f"credentials file {path} [{profile}]",
    )


@dataclass(frozen=True, slots=True)
class TencentCloudSettings:
    """Where and how to reach the TKE API, and what every new cache gets.

    `vpc_id` and `subnet_id` are required to create caches (the API builds
    them on a container instance in that subnet); reading (`plan`, `status`,
    `match`) works without them. `endpoint` is HOST[:PORT] without a scheme,
    for a private endpoint or a test server; `scheme` is `https` unless told.
    `cbs_endpoint` is where the snapshot checks call CBS (see `cbs_host`).
    Retry figures apply inside one call; the reconciler backs off across passes.
    """

    region: str
    vpc_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    registry_http_endpoints: tuple[str, ...] = ()
    registry_skip_verify: tuple[str, ...] = ()
    endpoint: str | None = None
    scheme: str = "https"
    cbs_endpoint: str | None = None
    request_timeout_seconds: float = 30.0
    secrets_dir: Path | None = None
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 10.0
    throttle_retry_after_seconds: float = 1.0
    delete_batch_window_seconds: float = 0.05
    naive_time_offset_hours: float = CHINA_STANDARD_TIME_HOURS

    def __post_init__(self) -> None:
        if not _REGION.fullmatch(self.region or ""):
            raise ConfigError(
                f"--region: {self.region!r} is not a Tencent Cloud region; use e.g. ap-guangzhou"
            )
        if self.scheme not in ("http", "https"):
            raise ConfigError(f"--tencentcloud-scheme: {self.scheme!r} must be http or https")
        for flag, endpoint, example in (
            ("--tencentcloud-endpoint", self.endpoint, "tke.internal.tencentcloudapi.com"),
            ("--tencentcloud-cbs-endpoint", self.cbs_endpoint, "cbs.internal.tencentcloudapi.com"),
        ):
            if endpoint is not None and not _ENDPOINT.fullmatch(endpoint):
                raise ConfigError(
                    f"{flag}: {endpoint!r} must be HOST[:PORT] without a scheme or path,"
                    f" e.g. {example} or 127.0.0.1:8080"
                )
        positive = {
            "request timeout": self.request_timeout_seconds,
            "retry base": self.retry_base_seconds,
            "retry maximum": self.retry_max_seconds,
        }
        for label, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"Tencent Cloud {label}: {value} must be a positive number")
        if self.max_attempts < 1:
            raise ConfigError(f"Tencent Cloud max attempts: {self.max_attempts} must be at least 1")
        if self.throttle_retry_after_seconds < 0 or self.delete_batch_window_seconds < 0:
            raise ConfigError(
                "Tencent Cloud retry-after and delete batch window must not be negative"
            )
        for flag, text in (("--vpc-id", self.vpc_id), ("--subnet-id", self.subnet_id)):
            if text is not None and not text.strip():
                raise ConfigError(f"{flag}: must not be empty; omit it to only read caches")

    @property
    def host(self) -> str:
        return self.endpoint or DEFAULT_ENDPOINT

    @property
    def cbs_host(self) -> str:
        """Where DescribeSnapshots goes: `cbs_endpoint`; else `cbs.X` beside a `tke.X` endpoint
        (`tke.internal.tencentcloudapi.com` → `cbs.internal.tencentcloudapi.com`); else the
        same custom endpoint (a gateway or test server that serves both APIs); else
        cbs.tencentcloudapi.com."""
        if self.cbs_endpoint:
            return self.cbs_endpoint
        if self.endpoint is None:
            return DEFAULT_CBS_ENDPOINT
        if self.endpoint.startswith(f"{SERVICE}."):
            return "cbs." + self.endpoint.removeprefix(f"{SERVICE}.")
        return self.endpoint


# ----------------------------------------------------------------- pure mapping


def parse_api_time(
    value: object, *, naive_offset_hours: float = CHINA_STANDARD_TIME_HOURS
) -> datetime | None:
    """An API time as an aware UTC datetime; None for null, empty, zero or unreadable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.startswith(("0000-", "0001-01-01")):
        return None  # how Go and MySQL back ends spell "never"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        log.debug("unreadable time %r from the TKE API; treated as unknown", text)
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone(timedelta(hours=naive_offset_hours)))
    return moment.astimezone(UTC)


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    raw = item.get("Tags")
    if isinstance(raw, list):
        for tag in raw:
            if isinstance(tag, Mapping) and isinstance(tag.get("Key"), str):
                value = tag.get("Value")
                tags[tag["Key"]] = value if isinstance(value, str) else ""
    return tags


def _int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _events(item: Mapping[str, Any], *, naive_offset_hours: float) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    raw = item.get("Events")
    if not isinstance(raw, list):
        return events
    for event in raw:
        if not isinstance(event, Mapping):
            continue
        events.append(
            CacheEvent(
                type=str(event.get("Type") or "Normal"),
                reason=str(event.get("Reason") or ""),
                message=str(event.get("Message") or ""),
                count=1,  # ImageCacheEvent has no count: each event is one occurrence
                first_timestamp=parse_api_time(
                    event.get("FirstTimestamp"), naive_offset_hours=naive_offset_hours
                ),
                last_timestamp=parse_api_time(
                    event.get("LastTimestamp"), naive_offset_hours=naive_offset_hours
                ),
            )
        )
    return events


def observed_from_api(
    item: Mapping[str, Any], *, naive_offset_hours: float = CHINA_STANDARD_TIME_HOURS
) -> ObservedCache:
    """One `ImageCache` of DescribeImageCaches as an `ObservedCache`.

    An unknown or missing Status is reported as Failed with a Warning event
    naming the raw value, never silently as Ready: Failed makes the planner
    rebuild an owned cache and makes the GitSyncCacheFailed alert fire.
    """
    cache_id, name = item.get("ImageCacheId"), item.get("ImageCacheName")
    if not isinstance(cache_id, str) or not cache_id or not isinstance(name, str):
        raise TencentCloudResponseError(
            "TKE DescribeImageCaches returned an image cache without ImageCacheId or"
            f" ImageCacheName (fields: {', '.join(sorted(map(str, item))) or 'none'})"
        )
    events = _events(item, naive_offset_hours=naive_offset_hours)
    raw_status = item.get("Status")
    status = _KNOWN_STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        status = CacheStatus.FAILED
        known = ", ".join(_KNOWN_STATUSES)
        events.append(
            CacheEvent(
                type="Warning",
                reason="UnknownStatus",
                message=(
                    f"the TKE API reported status {raw_status!r}, which gitsync does not know"
                    f" (known: {known}); treated as Failed"
                ),
            )
        )
    tags = _tags(item)
    owner = tags.get(OWNER_TAG) or None
    if not owner:  # gitsync's tags on a cache it does not own mean nothing
        tags = {}
    secrets_value = tags.get(PULL_SECRETS_TAG, NO_PULL_SECRETS)
    images = item.get("Images")

    def when(key: str) -> datetime | None:
        return parse_api_time(item.get(key), naive_offset_hours=naive_offset_hours)

    return ObservedCache(
        name=name,
        cache_id=cache_id,
        status=status,
        images=tuple(i for i in images if isinstance(i, str)) if isinstance(images, list) else (),
        image_cache_size_gib=_int(item.get("ImageCacheSize"), DEFAULT_IMAGE_CACHE_SIZE_GIB),
        retention_days=_int(item.get("RetentionDays"), DEFAULT_RETENTION_DAYS),
        image_pull_secrets=_decode_words(secrets_value),
        owner=owner,
        created_at=when("CreationTime"),
        expires_at=when("ExpireDateTime"),
        last_matched_at=when("LastMatchedTime"),
        snapshot_id=_optional_str(item.get("SnapshotId")),
        content_bytes=None,  # the API reports the disk size only, not what the images expand to
        events=tuple(events),
        prune=tags.get(PRUNE_TAG) != "disabled",
        security_group_ids=_decode_words(tags.get(SECURITY_GROUPS_TAG, NO_SECURITY_GROUPS)),
        eip=_decode_eip(tags.get(EIP_TAG, NO_EIP), cache=name),
    )


def _decode_words(value: str) -> tuple[str, ...]:
    """A tag of space-separated names, "-" for none (pull secrets, security groups)."""
    return (
        () if value.strip() in ("", NO_PULL_SECRETS, NO_SECURITY_GROUPS) else tuple(value.split())
    )


_EIP_KEYS = {
    "DeletePolicy": "delete_policy",
    "InternetServiceProvider": "internet_service_provider",
    "InternetMaxBandwidthOut": "internet_max_bandwidth_out",
}


def _encode_eip(spec: CacheSpec) -> str:
    """The gitsync.io/eip tag: `none`, or `auto` and `Key=value` per attribute set."""
    if spec.eip is None:
        return NO_EIP
    parts = [AUTO_EIP]
    for key, value in spec.eip.api().items():
        text = str(value)
        if not _EIP_TAG_VALUE.fullmatch(text):
            raise PermanentError(
                f"cache {spec.name}: annotation {EIP_ATTRIBUTES_ANNOTATION} field {key}"
                f" {text!r} cannot be kept in a Tencent Cloud tag; use letters, digits and"
                " + - . _ : / @ only"
            )
        parts.append(f"{key}={text}")
    value = " ".join(parts)
    if len(value) > TAG_VALUE_MAX:
        raise PermanentError(
            f"cache {spec.name}: annotation {EIP_ATTRIBUTES_ANNOTATION} takes {len(value)}"
            f" characters as a tag, more than the {TAG_VALUE_MAX} a Tencent Cloud tag value holds"
        )
    return value


def _decode_eip(value: str, *, cache: str) -> EipAttributes | None:
    """The EIP settings an owned cache was built with; None for none (or an older gitsync)."""
    words = value.split()
    if not words or words[0] != AUTO_EIP:
        return None
    found: dict[str, str] = {}
    for word in words[1:]:
        key, sep, text = word.partition("=")
        if not sep or key not in _EIP_KEYS:
            # Edited by hand: read what can be read; a difference from Git rebuilds the cache.
            log.debug("ignoring %r in the %s tag", word, EIP_TAG, extra={"cache": cache})
            continue
        found[_EIP_KEYS[key]] = text
    bandwidth = found.get("internet_max_bandwidth_out", "")
    return EipAttributes(
        delete_policy=found.get("delete_policy"),
        internet_service_provider=found.get("internet_service_provider"),
        internet_max_bandwidth_out=int(bandwidth) if bandwidth.isdigit() else None,
    )


def eip_params(spec: CacheSpec) -> dict[str, Any]:
    """CreateImageCache's EIP parameters for `spec`: none, or AutoCreateEip and its attributes."""
    if spec.eip is None:
        return {}
    params: dict[str, Any] = {"AutoCreateEip": True}
    attributes = spec.eip.api()
    if attributes:
        params["AutoCreateEipAttribute"] = attributes
    return params


def ownership_tags(spec: CacheSpec, *, owner: str) -> list[dict[str, str]]:
    """The `Tags` gitsync writes on every create and update (see the module docstring)."""
    secrets = " ".join(spec.image_pull_secrets) or NO_PULL_SECRETS
    if not owner.strip() or len(owner) > TAG_VALUE_MAX or not _TAG_TEXT.fullmatch(owner):
        raise ConfigError(
            f"--controller-id {owner!r} cannot be a Tencent Cloud tag value: use at most"
            f" {TAG_VALUE_MAX} letters, digits, spaces and + - = . _ : / @"
        )
    groups = " ".join(spec.security_group_ids) or NO_SECURITY_GROUPS
    for field_name, value in (("imagePullSecrets", secrets), ("securityGroupIds", groups)):
        if len(value) > TAG_VALUE_MAX:
            raise PermanentError(
                f"cache {spec.name}: {field_name} {value!r} take {len(value)} characters, more"
                f" than the {TAG_VALUE_MAX} a Tencent Cloud tag value holds; use fewer or"
                " shorter names"
            )
    return [
        {"Key": OWNER_TAG, "Value": owner},
        {"Key": PRUNE_TAG, "Value": "enabled" if spec.prune else "disabled"},
        {"Key": PULL_SECRETS_TAG, "Value": secrets},
        {"Key": SECURITY_GROUPS_TAG, "Value": groups},
        {"Key": EIP_TAG, "Value": _encode_eip(spec)},
    ]


def registry_credentials(
    spec: CacheSpec, *, secrets_dir: Path | None
) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """`ImageRegistryCredentials` for `spec`, and the pull secrets that were not found.

    Secrets are read by gitsync.providers.local.auth, as the local backend
    reads them (`<secrets-dir>/<namespace>/<name>.json|yaml`). The API takes
    one Server/Username/Password per registry, so each image's registry gets
    the credential the kubelet's rules pick for it, and only registries the
    cache's images use are sent. A missing secret is not an error (public
    images still build, like the kubelet does); a malformed one is.
    """
    store = CredentialStore()
    missing: list[str] = []
    for name in spec.image_pull_secrets:
        if secrets_dir is None:
            missing.append(name)
            continue
        try:
            store = store.merged(load_pull_secret(secrets_dir, name))
        except PullSecretNotFoundError:
            missing.append(name)
    chosen: dict[str, Credential] = {}
    if len(store):
        for image in spec.images:
            ref = imageref.parse(image)
            found = store.lookup(ref.registry, ref.repository)
            if found is None:
                continue
            earlier = chosen.setdefault(ref.registry, found)
            if (earlier.username, earlier.password) != (found.username, found.password):
                raise PermanentError(
                    f"cache {spec.name}: images on {ref.registry} need different credentials"
                    f" ({earlier.source}; {found.source}), but the TKE API takes one credential"
                    f" per registry; use one pull secret for {ref.registry}"
                )
    credentials = [
        {
            "Server": server,
            "Username": credential.username,
            "Password": credential.password,
            "Name": _credential_name(server),
        }
        for server, credential in sorted(chosen.items())
    ]
    return credentials, tuple(missing)


def _credential_name(server: str) -> str:
    """A DNS-1123 label naming a registry's credential, e.g. gitsync-registry-example-com-5000."""
    label = re.sub(r"[^a-z0-9]+", "-", server.lower()).strip("-")
    return f"gitsync-{label}"[:63].rstrip("-")


# ------------------------------------------------------------------- log hygiene


class _SdkLogGuard(logging.Filter):
    """Keeps the SDK's request dumps out of logs and scrubs secrets from what remains.

    The SDK logs every request at DEBUG with its headers (the Authorization
    header names the secret id) and body (registry passwords): those records
    are dropped; anything at WARNING or above passes with known secrets masked.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Sequence[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        with self._lock:
            secrets = tuple(self._secrets)
        message = record.getMessage()
        scrubbed = _scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SDK_LOG_GUARD = _SdkLogGuard()
logging.getLogger(SDK_LOGGER).addFilter(_SDK_LOG_GUARD)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------- provider


class _ClientPool:
    """SDK clients handed out one per concurrent call.

    An SDK client wraps one `requests.Session`, which is not documented as
    thread-safe; the reconciler's workers are short-lived threads, so clients
    are pooled rather than kept per thread (that would leak one per pass).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def client(self) -> Iterator[Any]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._factory()
            with self._lock:
                self._all.append(client)
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            clients, self._all, self._idle = self._all, [], []
        for client in clients:
            # The SDK has no close(); its session sits at client.request.conn._session.
            session = getattr(
                getattr(getattr(client, "request", None), "conn", None), "_session", None
            )
            if session is not None:
                session.close()


@dataclass(slots=True)
class _Ticket:
    cache_id: str
    done: threading.Event = field(default_factory=threading.Event)
    error: GitSyncError | None = None


class _DeleteBatcher:
    """Coalesces deletes that arrive within a short window into one DeleteImageCaches call.

    The reconciler deletes one cache per worker thread; the first delete of a
    wave waits `window` seconds for the others, then sends them all.
    """

    def __init__(
        self,
        send: Callable[[list[str]], dict[str, GitSyncError | None]],
        *,
        window: float,
        sleep: Callable[[float], None],
    ) -> None:
        self._send = send
        self._window = window
        self._sleep = sleep
        self._queue: list[_Ticket] = []
        self._flushing = False
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def delete(self, cache_id: str) -> None:
        ticket = _Ticket(cache_id)
        with self._lock:
            self._queue.append(ticket)
            leader = not self._flushing
            self._flushing = True
        if leader:
            if self._window > 0:
                self._sleep(self._window)
            self._flush()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    def _flush(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = (
                    self._queue[:DELETE_BATCH_SIZE],
                    self._queue[DELETE_BATCH_SIZE:],
                )
                if not batch:
                    self._flushing = False
                    return
            try:
                results = self._send(sorted({t.cache_id for t in batch}))
            except GitSyncError as exc:
                results = {t.cache_id: exc for t in batch}
            except BaseException as exc:  # never leave a waiter hanging, whatever happened
                wrapped = TemporaryError(f"TKE DeleteImageCaches failed unexpectedly: {exc!r}")
                results = {t.cache_id: wrapped for t in batch}
            for ticket in batch:
                ticket.error = results.get(ticket.cache_id)
                ticket.done.set()


class TencentCloudProvider:
    """`Provider` over the TKE image-cache API; see the module docstring for the rules."""

    name = "tencentcloud"
    fields = TENCENTCLOUD_FIELDS

    def __init__(
        self,
        *,
        settings: TencentCloudSettings,
        credentials: TencentCloudCredentials,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._api = TencentCloudAPI(
            api="TKE",
            client_class=tke_client.TkeClient,
            host=settings.host,
            settings=settings,
            credentials=credentials,
            sleep=sleep,
            rng=rng,
        )
        self._deletes = _DeleteBatcher(
            self._delete_batch, window=settings.delete_batch_window_seconds, sleep=sleep
        )

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        """Every image cache in the region: DescribeImageCaches pages, nothing else."""
        caches = tuple(self._to_observed(i) for i in self._describe())
        return ObservedState(caches=caches, fields=self.fields)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        return self._create(spec, owner=owner, replacing=None)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        owner = self._owner_of(current, verb="update")
        reason = self._replacement_reason(spec, current)
        if reason is not None:
            return self._replace(spec, current, owner=owner, reason=reason)
        credentials = self._credentials_for(spec)
        params: dict[str, Any] = {
            "ImageCacheId": current.cache_id,
            "ImageCacheName": spec.name,
            "Images": list(spec.images),
            "ImageCacheSize": spec.image_cache_size_gib,
            "RetentionDays": spec.retention_days,
            "ImageRegistryCredentials": credentials,
            "Tags": ownership_tags(spec, owner=owner),
        }
        groups = self._security_groups(spec)
        if groups:
            params["SecurityGroupIds"] = groups
        self._call("UpdateImageCache", params, idempotent=True)
        serving = current.snapshot_id is not None or current.status in (
            CacheStatus.READY,
            CacheStatus.UPDATING,
            CacheStatus.UPDATE_FAILED,
        )
        log.info(
            "updating image cache %s in place (%s)",
            current.cache_id,
            "the current snapshot serves meanwhile" if serving else "nothing served yet",
            extra={"cache": spec.name},
        )
        return ObservedCache(
            name=spec.name,
            cache_id=current.cache_id,
            status=CacheStatus.UPDATING if serving else CacheStatus.PENDING,
            images=spec.images,
            image_cache_size_gib=spec.image_cache_size_gib,
            retention_days=spec.retention_days,
            image_pull_secrets=spec.image_pull_secrets,
            owner=owner,
            created_at=current.created_at,
            expires_at=_expiry(current.created_at, spec.retention_days),
            last_matched_at=current.last_matched_at,
            snapshot_id=current.snapshot_id,
            content_bytes=None,
            events=current.events,
            prune=spec.prune,
            security_group_ids=spec.security_group_ids,
            eip=spec.eip,  # the same as current.eip: a different one replaces the cache
        )

    def delete(self, current: ObservedCache) -> None:
        self._owner_of(current, verb="delete")
        self._deletes.delete(current.cache_id)
        log.info("deleted image cache %s", current.cache_id, extra={"cache": current.name})

    def close(self) -> None:
        self._api.close()

    # ---------------------------------------------------------------- extras

    def delete_many(self, caches: Sequence[ObservedCache]) -> dict[str, GitSyncError | None]:
        """Delete owned caches in DeleteImageCaches calls of up to 50 ids; per-id outcome.

        For an executor that knows all its deletes up front; `delete` coalesces
        concurrent calls into batches on its own.
        """
        for cache in caches:
            self._owner_of(cache, verb="delete")
        ids = sorted({c.cache_id for c in caches})
        outcome: dict[str, GitSyncError | None] = {}
        for start in range(0, len(ids), DELETE_BATCH_SIZE):
            outcome.update(self._delete_batch(ids[start : start + DELETE_BATCH_SIZE]))
        return outcome

    @property
    def queued_deletes(self) -> int:
        """Deletes waiting for the current batch window (for tests and debugging)."""
        return self._deletes.queued

    def describe(self, names: Sequence[str]) -> tuple[ObservedCache, ...]:
        """The caches named `names` only (a name-filtered describe), e.g. for `status NAME`."""
        if not names:
            return ()
        return tuple(self._to_observed(i) for i in self._describe(names=names))

    def most_suitable(self, images: Sequence[str]) -> tuple[str | None, str]:
        """The cache TKE itself would pick for a pod with `images` (GetMostSuitableImageCache).

        Returns (cache id or None, a reason a human reads).
        """
        if not images:
            raise ConfigError("gitsync match: name at least one image")
        response = self._call(
            "GetMostSuitableImageCache", {"Images": list(images)}, idempotent=True
        )
        found = response.get("Found")
        if not isinstance(found, bool):
            raise self._malformed("GetMostSuitableImageCache", "no boolean Found", response)
        cache = response.get("ImageCache")
        if not found or not isinstance(cache, Mapping):
            return None, f"TKE has no image cache for {_count(len(images), 'image')}"
        observed = self._to_observed(cache)
        present = sum(1 for image in images if image in observed.images)
        return observed.cache_id, (
            f"TKE picked {observed.name} ({observed.cache_id}, {observed.status}):"
            f" {present} of {_count(len(images), 'image')} listed in it as written,"
            f" {observed.image_cache_size_gib} GiB"
        )

    # -------------------------------------------------------------- changes

    def _create(
        self, spec: CacheSpec, *, owner: str, replacing: ObservedCache | None
    ) -> ObservedCache:
        settings = self.settings
        if not settings.vpc_id or not settings.subnet_id:
            raise ConfigError(
                "creating an image cache needs --vpc-id and --subnet-id (the VPC and subnet"
                " the TKE API builds caches in); set both, or only plan"
            )
        tags = ownership_tags(spec, owner=owner)
        params: dict[str, Any] = {
            "ImageCacheName": spec.name,
            "Images": list(spec.images),
            "VpcId": settings.vpc_id,
            "SubnetId": settings.subnet_id,
            "ImageCacheSize": spec.image_cache_size_gib,
            "RetentionDays": spec.retention_days,
            "Tags": tags,
            **eip_params(spec),
        }
        groups = self._security_groups(spec)
        if groups:
            params["SecurityGroupIds"] = groups
        credentials = self._credentials_for(spec)
        if credentials:
            params["ImageRegistryCredentials"] = credentials
        if settings.registry_http_endpoints:
            params["RegistryHttpEndPointList"] = list(settings.registry_http_endpoints)
        if settings.registry_skip_verify:
            params["RegistrySkipVerifyList"] = list(settings.registry_skip_verify)
        try:
            response = self._call("CreateImageCache", params, idempotent=False)
        except (TencentCloudTransientError, TencentCloudResponseError) as exc:
            if isinstance(exc, TencentCloudTransientError) and exc.throttled:
                raise  # rejected before it ran: nothing to look for
            existing = self._find_created(spec.name, owner=owner, replacing=replacing)
            if existing is None:
                raise
            log.warning(
                "CreateImageCache for %s failed ambiguously (%s) but created %s; using it",
                spec.name,
                exc,
                existing.cache_id,
                extra={"cache": spec.name},
            )
            return existing
        cache_id = response.get("ImageCacheId")
        if not isinstance(cache_id, str) or not cache_id:
            # Ambiguous like a timeout: the cache may exist; the next observe shows it.
            existing = self._find_created(spec.name, owner=owner, replacing=replacing)
            if existing is not None:
                return existing
            raise self._malformed("CreateImageCache", "no ImageCacheId", response)
        now = datetime.fromtimestamp(self._clock(), UTC)
        log.info(
            "created image cache %s (%s)",
            cache_id,
            f"replaces {replacing.cache_id}" if replacing else "new",
            extra={"cache": spec.name},
        )
        return ObservedCache(
            name=spec.name,
            cache_id=cache_id,
            status=CacheStatus.PENDING,
            images=spec.images,
            image_cache_size_gib=spec.image_cache_size_gib,
            retention_days=spec.retention_days,
            image_pull_secrets=spec.image_pull_secrets,
            owner=owner,
            created_at=now,
            expires_at=_expiry(now, spec.retention_days),
            prune=spec.prune,
            security_group_ids=spec.security_group_ids,
            eip=spec.eip,
        )

    def _security_groups(self, spec: CacheSpec) -> list[str]:
        """The spec's security groups; without them, --security-group-id (the default)."""
        return list(spec.security_group_ids or self.settings.security_group_ids)

    def _find_created(
        self, name: str, *, owner: str, replacing: ObservedCache | None
    ) -> ObservedCache | None:
        """After an ambiguous create: the owned cache of that name it may have made, if any."""
        try:
            found = self.describe([name])
        except GitSyncError as exc:
            log.warning("cannot check whether %s was created: %s", name, exc, extra={"cache": name})
            return None
        skip = replacing.cache_id if replacing is not None else None
        candidates = [
            c for c in found if c.name == name and c.owner == owner and c.cache_id != skip
        ]
        if not candidates:
            return None
        epoch = datetime.min.replace(tzinfo=UTC)
        return max(candidates, key=lambda c: (c.created_at or epoch, c.cache_id))

    def _replacement_reason(self, spec: CacheSpec, current: ObservedCache) -> str | None:
        if spec.eip != current.eip:
            return "UpdateImageCache cannot change the EIP settings (it has no EIP fields)"
        if current.snapshot_problem:
            return f"{current.snapshot_problem}: only a new cache gets a new snapshot"
        if current.status is CacheStatus.FAILED:
            return "it is Failed: an in-place update of a failed build is not documented to rebuild"
        if current.expires_at is not None:
            now = datetime.fromtimestamp(self._clock(), UTC)
            window = timedelta(days=current.retention_days / 2)
            if current.expires_at <= now + window:
                return (
                    f"it expires at {current.expires_at.isoformat(timespec='seconds')}: only a new"
                    " cache gets a new retention period"
                )
        if spec.image_cache_size_gib < current.image_cache_size_gib:
            return (
                f"imageCacheSize shrinks from {current.image_cache_size_gib} to"
                f" {spec.image_cache_size_gib} GiB and a cloud disk cannot shrink"
            )
        return None

    def _replace(
        self, spec: CacheSpec, current: ObservedCache, *, owner: str, reason: str
    ) -> ObservedCache:
        log.info(
            "replacing image cache %s: %s", current.cache_id, reason, extra={"cache": spec.name}
        )
        new = self._create(spec, owner=owner, replacing=current)
        try:
            self._deletes.delete(current.cache_id)
        except GitSyncError as exc:
            # The new cache exists; the next pass sees two owned caches of this name and
            # the planner deletes the older, so report and carry on.
            log.warning(
                "replaced %s by %s but could not delete the old cache yet: %s",
                current.cache_id,
                new.cache_id,
                exc,
                extra={"cache": spec.name},
            )
        return new

    def _delete_batch(self, cache_ids: list[str]) -> dict[str, GitSyncError | None]:
        try:
            self._call("DeleteImageCaches", {"ImageCacheIds": cache_ids}, idempotent=True)
        except TencentCloudNotFoundError:
            if len(cache_ids) == 1:
                return {cache_ids[0]: None}  # already gone: the goal is reached
            # One id of the batch is gone and the API refused the whole batch: one by one.
            return {cache_id: self._delete_batch([cache_id])[cache_id] for cache_id in cache_ids}
        except GitSyncError as exc:
            return dict.fromkeys(cache_ids, exc)
        return dict.fromkeys(cache_ids)

    def _credentials_for(self, spec: CacheSpec) -> list[dict[str, str]]:
        credentials, missing = registry_credentials(spec, secrets_dir=self.settings.secrets_dir)
        if missing:
            where = (
                f"in {self.settings.secrets_dir}"
                if self.settings.secrets_dir
                else "(no --secrets-dir is set)"
            )
            log.warning(
                "imagePullSecrets %s not found %s; the cache is built without them",
                ", ".join(missing),
                where,
                extra={"cache": spec.name},
            )
        return credentials

    @staticmethod
    def _owner_of(current: ObservedCache, *, verb: str) -> str:
        if current.owner is None:
            raise PermanentError(
                f"refusing to {verb} image cache {current.cache_id} ({current.name}): it has no"
                f" {OWNER_TAG} tag, so gitsync did not create it"
            )
        return current.owner

    # ------------------------------------------------------------------ reads

    def _describe(self, *, names: Sequence[str] = ()) -> list[Mapping[str, Any]]:
        """All pages of DescribeImageCaches; once more if the total moved while paging.

        Offset paging skips an item when another one is deleted between two
        pages; a skipped owned cache would be planned as a create. A changed
        TotalCount shows that happened, and one more pass reads a settled list.
        """
        items: dict[str, Mapping[str, Any]] = {}
        for attempt in (1, 2):
            items, moved = self._describe_once(names)
            if not moved:
                break
            if attempt == 1:
                log.info("the list of image caches changed while paging; reading it again")
        return list(items.values())

    def _describe_once(self, names: Sequence[str]) -> tuple[dict[str, Mapping[str, Any]], bool]:
        items: dict[str, Mapping[str, Any]] = {}
        offset, first_total, moved, pages = 0, None, False, 0
        while True:
            params: dict[str, Any] = {"Limit": PAGE_SIZE, "Offset": offset}
            if names:
                params["ImageCacheNames"] = list(names)
            response = self._call("DescribeImageCaches", params, idempotent=True)
            total, page = self._page(response)
            pages += 1
            if first_total is None:
                first_total = total
            elif total != first_total:
                moved = True
            for item in page:
                items.setdefault(str(item["ImageCacheId"]), item)
            offset += len(page)
            # Stop at the end; also stop a server that keeps answering (never loop forever).
            if not page or offset >= total or pages > first_total // PAGE_SIZE + 2:
                return items, moved

    def _page(self, response: Mapping[str, Any]) -> tuple[int, list[Mapping[str, Any]]]:
        total = response.get("TotalCount")
        caches = response.get("ImageCaches")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise self._malformed("DescribeImageCaches", "no TotalCount", response)
        if caches is None and total == 0:
            caches = []
        if not isinstance(caches, list) or not all(isinstance(c, Mapping) for c in caches):
            raise self._malformed("DescribeImageCaches", "no ImageCaches list", response)
        for cache in caches:
            if not isinstance(cache.get("ImageCacheId"), str) or not cache["ImageCacheId"]:
                raise self._malformed("DescribeImageCaches", "an ImageCache without id", response)
        return total, caches

    def _to_observed(self, item: Mapping[str, Any]) -> ObservedCache:
        return observed_from_api(item, naive_offset_hours=self.settings.naive_time_offset_hours)

    # ------------------------------------------------------------------ calls

    def _call(self, action: str, params: Mapping[str, Any], *, idempotent: bool) -> dict[str, Any]:
        return self._api.call(action, params, idempotent=idempotent)

    def _malformed(self, action: str, what: str, response: Mapping[str, Any]) -> GitSyncError:
        return self._api.malformed(action, what, response)


class TencentCloudAPI:
    """Signed calls to one Tencent Cloud service (TKE, CBS), read strictly and retried.

    The TKE provider and the CBS snapshot check both call through this, so both
    follow the module docstring's rules: every call is the SDK's generic signed
    POST (`client.call`, TC3-HMAC-SHA256, the service in the credential scope),
    the raw body is checked here (a `Response` with a `RequestId`, no `Error`),
    throttling and transient errors are retried inside the call with exponential
    backoff and jitter, and the caller's secrets are scrubbed from every message.
    `api` names the service in messages ("TKE", "CBS"); `host` is its endpoint.
    """

    def __init__(
        self,
        *,
        api: str,
        client_class: Callable[[Any, str, Any], Any],
        host: str,
        settings: TencentCloudSettings,
        credentials: TencentCloudCredentials,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.host = host
        self.settings = settings
        self._secrets = credentials.secrets()
        _SDK_LOG_GUARD.add(self._secrets)
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311  # retry jitter, not cryptography
        self._rng_lock = threading.Lock()
        sdk_credential = tc_credential.Credential(
            credentials.secret_id, credentials.secret_key, credentials.token
        )
        http = HttpProfile(
            protocol=settings.scheme,
            endpoint=host,
            reqMethod="POST",
            reqTimeout=settings.request_timeout_seconds,
        )
        profile = ClientProfile(signMethod="TC3-HMAC-SHA256", httpProfile=http, language="en-US")
        self._pool = _ClientPool(lambda: client_class(sdk_credential, settings.region, profile))

    def close(self) -> None:
        self._pool.close()

    def scrub(self, text: str) -> str:
        """`text` with the caller's secret id, key and token masked."""
        return _scrub(text, self._secrets)

    def call(self, action: str, params: Mapping[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """One action, retried a few times: when throttled, or transient and idempotent."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._call_once(action, params)
            except TencentCloudTransientError as exc:
                if attempt == attempts or not (idempotent or exc.throttled):
                    raise
                delay = self._retry_delay(attempt, exc.retry_after)
                log.info(
                    "%s %s: %s (RequestId %s); attempt %d of %d in %.2f s",
                    self.api,
                    action,
                    exc.code,
                    exc.request_id or "none",
                    attempt + 1,
                    attempts,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(
            self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2.0 ** (attempt - 1)
        )
        with self._rng_lock:
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_max_seconds))
        return delay

    def _call_once(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._pool.client() as client:
            try:
                body = client.call(action, dict(params))
            except TencentCloudSDKException as exc:
                raise self._sdk_error(action, exc) from exc
            except (ValueError, KeyError, TypeError) as exc:
                # The SDK parsed an application/json body that is not an API envelope.
                raise TencentCloudResponseError(
                    f"{self.api} {action}: {self.host} answered with a body that is not a"
                    f" {self.api} API response ({type(exc).__name__})"
                ) from exc
            except OSError as exc:
                # requests' errors are OSErrors: a body cut off mid-way (ChunkedEncodingError),
                # a reset. Temporary, like the SDK's own ClientNetworkError.
                raise TencentCloudResponseError(
                    f"{self.api} {action}: the connection to {self.host} failed mid-answer"
                    f" ({type(exc).__name__}); retrying later"
                ) from exc
        return self._envelope(action, body)

    def _envelope(self, action: str, body: object) -> dict[str, Any]:
        """The `Response` object of a success, or the error the body describes."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
        try:
            data = json.loads(text)
        except ValueError:
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered with a body that is not JSON"
                f' (starts {self._snippet(text)!r}); expected {{"Response": {{…}}}}'
            ) from None
        response = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(response, dict):
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered JSON without a Response object"
                f" (starts {self._snippet(text)!r})"
            )
        request_id = response.get("RequestId")
        request_id = request_id if isinstance(request_id, str) and request_id else None
        error = response.get("Error")
        if error is not None:
            code = error.get("Code") if isinstance(error, dict) else None
            message = error.get("Message") if isinstance(error, dict) else None
            raise classify_error(
                action=action,
                code=code if isinstance(code, str) and code else "UnknownError",
                message=self.scrub(message if isinstance(message, str) else ""),
                request_id=request_id,
                throttle_retry_after=self.settings.throttle_retry_after_seconds,
                api=self.api,
            )
        if request_id is None:
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered without a RequestId, which every"
                " Tencent Cloud API response carries; refusing to take it for a success"
            )
        return response

    def _sdk_error(self, action: str, exc: TencentCloudSDKException) -> GitSyncError:
        code = str(exc.code or "ClientError")
        raw = exc.message
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
        if code == "ServerNetworkError":
            # A non-200 answer: a gateway's page, or an envelope that names the real code.
            try:
                return self._envelope_error(action, message)
            except TencentCloudResponseError:
                message = f"HTTP status other than 200, body starts {self._snippet(message)!r}"
        return classify_error(
            action=action,
            code=code,
            message=self.scrub(message)[: _SNIPPET * 2],
            request_id=exc.requestId if isinstance(exc.requestId, str) else None,
            throttle_retry_after=self.settings.throttle_retry_after_seconds,
            api=self.api,
        )

    def _envelope_error(self, action: str, text: str) -> GitSyncError:
        try:
            self._envelope(action, text)
        except GitSyncError as exc:
            if isinstance(exc, TencentCloudResponseError):
                raise
            return exc
        raise TencentCloudResponseError(
            f"{self.api} {action}: a non-200 answer held a success envelope"
        )

    def malformed(self, action: str, what: str, response: Mapping[str, Any]) -> GitSyncError:
        request_id = response.get("RequestId")
        return TencentCloudResponseError(
            f"{self.api} {action}: the answer has {what} (RequestId {request_id}); refusing to"
            " take it for a success"
        )

    def _snippet(self, text: str) -> str:
        return self.scrub(text[:_SNIPPET])


def _expiry(created_at: datetime | None, retention_days: int) -> datetime | None:
    if created_at is None or retention_days <= 0:
        return None
    return created_at + timedelta(days=retention_days)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")

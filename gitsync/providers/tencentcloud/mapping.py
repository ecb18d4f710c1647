"""Pure translation between gitsync's model and the TKE image-cache API's dicts.

No calls and no SDK here: a `CacheSpec` in, a request's parameters out; an
`ImageCache` of DescribeImageCaches in, an `ObservedCache` out. That keeps
every rule of the mapping testable without a server
(tests/unit/test_tencentcloud_mapping.py) and keeps the provider about order
of calls and what to do when one fails.

What the mapping holds (the package docstring says why):

* Ownership and what the API does not return live in tags: `OWNER_TAG`,
  `PRUNE_TAG`, `PULL_SECRETS_TAG`, `SECURITY_GROUPS_TAG`, `EIP_TAG`, all
  written on every create and update (`ownership_tags`). A cache without the
  owner tag reads as `owner=None` and its other gitsync tags are ignored.
* The EIP annotation is `AutoCreateEip` plus `AutoCreateEipAttribute` on
  create (`eip_params`), and `auto Key=value …` in `EIP_TAG`.
* Registry credentials: one per registry the cache's images use, chosen by
  the kubelet's rules from the spec's pull secrets (`registry_credentials`).
* Status: an unknown or missing Status reads as Failed with a Warning event,
  never as Ready. Times are ISO 8601; a time without an offset is read as
  China Standard Time unless told otherwise (`parse_api_time`).
* Rebuilds: `replacement_reason` says when an update must replace the cache
  (new cache, then delete the old) instead of updating it in place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gitsync import imageref
from gitsync.errors import ConfigError, PermanentError
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
    ProviderFields,
)
from gitsync.providers.credentials import (
    Credential,
    CredentialStore,
    PullSecretNotFoundError,
    load_pull_secret,
)
from gitsync.providers.tencentcloud.errors import TencentCloudResponseError, malformed
from gitsync.providers.tencentcloud.settings import (
    CHINA_STANDARD_TIME_HOURS,
    TencentCloudSettings,
)
from gitsync.timeparse import parse_rfc3339

__all__ = [
    "EIP_TAG",
    "OWNER_TAG",
    "PRUNE_TAG",
    "PULL_SECRETS_TAG",
    "SECURITY_GROUPS_TAG",
    "TENCENTCLOUD_FIELDS",
    "create_params",
    "describe_page",
    "eip_params",
    "observed_after_create",
    "observed_after_update",
    "observed_from_api",
    "ownership_tags",
    "parse_api_time",
    "registry_credentials",
    "replacement_reason",
    "security_groups",
    "still_serving",
    "update_params",
]

# One logger for the whole backend, as before the package was split.
log = logging.getLogger("gitsync.providers.tencentcloud")

OWNER_TAG = "gitsync.io/owner"
PRUNE_TAG = "gitsync.io/prune"
PULL_SECRETS_TAG = "gitsync.io/pull-secrets"
SECURITY_GROUPS_TAG = "gitsync.io/security-groups"
EIP_TAG = "gitsync.io/eip"
NO_PULL_SECRETS = "-"  # a tag value may not be empty; "-" is no valid secret reference
NO_SECURITY_GROUPS = "-"
NO_EIP, AUTO_EIP = "none", "auto"
TAG_VALUE_MAX = 255
# Tencent tags: letters, digits, spaces and + - = . _ : / @
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")
_KNOWN_STATUSES = {status.value: status for status in CacheStatus}
_EIP_TAG_VALUE = re.compile(r"[\w+\-.:/@]+")  # one attribute value in the eip tag: no space, no =

# What the API can hold of a spec: the classic fields, SecurityGroupIds (also on
# update) and the EIP (on create only). No labels, no other annotations. DescribeImageCaches
# reports no digests: a moved tag is followed by pinning it (UpdateImageCache's Images).
TENCENTCLOUD_FIELDS = ProviderFields(
    kept=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, EIP_FIELD},
    updatable=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD},
    why_not=((EIP_FIELD, "UpdateImageCache cannot change the EIP settings"),),
    pins_digests=True,
)


def parse_api_time(
    value: object, *, naive_offset_hours: float = CHINA_STANDARD_TIME_HOURS
) -> datetime | None:
    """An API time as an aware UTC datetime; None for null, empty, zero or unreadable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.startswith(("0000-", "0001-01-01")):
        return None  # how Go and MySQL back ends spell "never"
    moment = parse_rfc3339(text, naive_zone=timezone(timedelta(hours=naive_offset_hours)))
    if moment is None:
        log.debug("unreadable time %r from the TKE API; treated as unknown", text)
        return None
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
    """The `Tags` gitsync writes on every create and update (see the package docstring)."""
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

    Secrets are read by gitsync.providers.credentials, as the local backend
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


# ------------------------------------------------------------- requests and answers


def security_groups(spec: CacheSpec, *, settings: TencentCloudSettings) -> list[str]:
    """The spec's security groups; without them, --security-group-id (the default)."""
    return list(spec.security_group_ids or settings.security_group_ids)


def create_params(
    spec: CacheSpec,
    *,
    tags: list[dict[str, str]],
    credentials: list[dict[str, str]],
    settings: TencentCloudSettings,
) -> dict[str, Any]:
    """CreateImageCache's parameters: `tags` from `ownership_tags`, `credentials` from
    `registry_credentials` (the caller makes both, in its order, for its messages)."""
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
    groups = security_groups(spec, settings=settings)
    if groups:
        params["SecurityGroupIds"] = groups
    if credentials:
        params["ImageRegistryCredentials"] = credentials
    if settings.registry_http_endpoints:
        params["RegistryHttpEndPointList"] = list(settings.registry_http_endpoints)
    if settings.registry_skip_verify:
        params["RegistrySkipVerifyList"] = list(settings.registry_skip_verify)
    return params


def update_params(
    spec: CacheSpec,
    current: ObservedCache,
    *,
    tags: list[dict[str, str]],
    credentials: list[dict[str, str]],
    settings: TencentCloudSettings,
) -> dict[str, Any]:
    """UpdateImageCache's parameters; credentials are always sent, so removed ones go away."""
    params: dict[str, Any] = {
        "ImageCacheId": current.cache_id,
        "ImageCacheName": spec.name,
        "Images": list(spec.images),
        "ImageCacheSize": spec.image_cache_size_gib,
        "RetentionDays": spec.retention_days,
        "ImageRegistryCredentials": credentials,
        "Tags": tags,
    }
    groups = security_groups(spec, settings=settings)
    if groups:
        params["SecurityGroupIds"] = groups
    return params


def describe_page(response: Mapping[str, Any]) -> tuple[int, list[Mapping[str, Any]]]:
    """TotalCount and ImageCaches of one DescribeImageCaches page, checked before use."""
    action = "DescribeImageCaches"
    total = response.get("TotalCount")
    caches = response.get("ImageCaches")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise malformed("TKE", action, "no TotalCount", response)
    if caches is None and total == 0:
        caches = []
    if not isinstance(caches, list) or not all(isinstance(c, Mapping) for c in caches):
        raise malformed("TKE", action, "no ImageCaches list", response)
    for cache in caches:
        if not isinstance(cache.get("ImageCacheId"), str) or not cache["ImageCacheId"]:
            raise malformed("TKE", action, "an ImageCache without id", response)
    return total, caches


def still_serving(current: ObservedCache) -> bool:
    """Whether `current` has a snapshot that keeps serving while an in-place update builds."""
    return current.snapshot_id is not None or current.status in (
        CacheStatus.READY,
        CacheStatus.UPDATING,
        CacheStatus.UPDATE_FAILED,
    )


def observed_after_create(
    spec: CacheSpec, *, cache_id: str, owner: str, now: datetime
) -> ObservedCache:
    """What a cache just created for `spec` looks like until the next describe."""
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


def observed_after_update(spec: CacheSpec, current: ObservedCache, *, owner: str) -> ObservedCache:
    """What `current` looks like once UpdateImageCache accepted `spec`."""
    return ObservedCache(
        name=spec.name,
        cache_id=current.cache_id,
        status=CacheStatus.UPDATING if still_serving(current) else CacheStatus.PENDING,
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


def replacement_reason(spec: CacheSpec, current: ObservedCache, *, now: datetime) -> str | None:
    """Why `update` must replace `current` rather than update it in place; None if it need not.

    In place keeps the old snapshot serving while the new one builds, so it is
    the default; the reasons are the package docstring's "Rebuilds".
    """
    if spec.eip != current.eip:
        return "UpdateImageCache cannot change the EIP settings (it has no EIP fields)"
    if current.snapshot_problem:
        return f"{current.snapshot_problem}: only a new cache gets a new snapshot"
    if current.status is CacheStatus.FAILED:
        return "it is Failed: an in-place update of a failed build is not documented to rebuild"
    if current.expires_at is not None:
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


def _expiry(created_at: datetime | None, retention_days: int) -> datetime | None:
    if created_at is None or retention_days <= 0:
        return None
    return created_at + timedelta(days=retention_days)

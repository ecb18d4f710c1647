"""An ImageCache object, as the API returns it, read into the model: pure, no API calls.

Status
------
The operator's status mirrors the cloud's DescribeImageCaches fields in
camelCase. Read, in order of preference:

==================  ==========================================================
model               object
==================  ==========================================================
status              `status.phase`, else `status.imcPhase`: Pending, Ready,
                    Failed, Updating, UpdateFailed (case-insensitive). No
                    status yet: Pending. Any other value is *not* guessed:
                    it is reported as Pending (the one status on which the
                    planner neither rebuilds nor deletes) with a Warning
                    event `UnknownPhase` that names the value.
                    `status.observedGeneration` older than
                    `metadata.generation` means the phase describes an older
                    spec: Updating if something serves, else Pending.
cache_id            `status.imcId`, else `status.imageCacheId`, else the
                    object's `metadata.uid` until the cloud assigns an id
snapshot_id         `status.snapshotId`
created_at          `status.creationTime`, else `metadata.creationTimestamp`
expires_at          `status.expireDateTime` (also `expireTime`), else
                    creation + `spec.retentionDays` when that is > 0
last_matched_at     `status.lastMatchedTime`
events              core/v1 Events whose involvedObject is the ImageCache
                    (matched by uid), newest last, at most 20
==================  ==========================================================

The labels and annotations reported are only those gitsync wrote
(`ownership.Written`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gitsync.model import (
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    DEFAULT_RETENTION_DAYS,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    CacheEvent,
    CacheStatus,
    ObservedCache,
)
from gitsync.providers.kubernetes.ownership import Written, owner_of, written_of
from gitsync.timeparse import parse_rfc3339

MAX_EVENTS_PER_CACHE = 20

_PHASES = {status.value.lower(): status for status in CacheStatus}
_SERVING = (CacheStatus.READY, CacheStatus.UPDATING, CacheStatus.UPDATE_FAILED)


def parse_time(value: object) -> datetime | None:
    """RFC 3339 as Kubernetes writes it (`2026-11-22T03:00:00Z`, with or without fractions)."""
    if not isinstance(value, str) or not value:
        return None
    return parse_rfc3339(value.strip())


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value if isinstance(v, str | int))


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def map_status(obj: Mapping[str, Any]) -> tuple[CacheStatus, CacheEvent | None]:
    """The operator's phase as a `CacheStatus`; an unknown phase comes with a Warning event."""
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    raw = status.get("phase") or status.get("imcPhase")
    if meta.get("deletionTimestamp"):
        return CacheStatus.PENDING, CacheEvent(
            type="Normal",
            reason="Terminating",
            message=(
                f"the object is being deleted (since {meta['deletionTimestamp']}); gitsync"
                " creates it again, if Git still names it, once the operator has removed it"
            ),
        )
    if raw is None or raw == "":
        return CacheStatus.PENDING, None
    known = _PHASES.get(str(raw).lower())
    if known is None:
        field = "status.phase" if status.get("phase") else "status.imcPhase"
        return CacheStatus.PENDING, CacheEvent(
            type="Warning",
            reason="UnknownPhase",
            message=(
                f"{field} is {raw!r}, which gitsync does not know (known: "
                f"{', '.join(s.value for s in CacheStatus)}); reported as Pending so that"
                " nothing is rebuilt or deleted on a guess"
            ),
        )
    observed, generation = status.get("observedGeneration"), meta.get("generation")
    if isinstance(observed, int) and isinstance(generation, int) and observed < generation:
        # The phase describes an older spec: the operator has not acted on the new one yet.
        return (CacheStatus.UPDATING if known in _SERVING else CacheStatus.PENDING), None
    return known, None


def event_from(item: Mapping[str, Any]) -> CacheEvent:
    """A core/v1 Event (old `count`/timestamps or new `series`/`eventTime`) in the model's shape."""
    series = item.get("series") or {}
    first = parse_time(item.get("firstTimestamp")) or parse_time(item.get("eventTime"))
    last = (
        parse_time(series.get("lastObservedTime")) or parse_time(item.get("lastTimestamp")) or first
    )
    count = _int(series.get("count"), 0) or _int(item.get("count"), 0) or 1
    return CacheEvent(
        type=str(item.get("type") or "Normal"),
        reason=str(item.get("reason") or ""),
        message=str(item.get("message") or item.get("note") or ""),
        count=count,
        first_timestamp=first,
        last_timestamp=last,
    )


def observed_from(
    obj: Mapping[str, Any],
    *,
    events: Iterable[CacheEvent] = (),
    written: Written | None = None,
) -> ObservedCache:
    """One ImageCache object as the model's `ObservedCache`.

    Its labels and annotations are only those gitsync wrote from Git
    (`Written`, worked out from the object when not given): not its own
    bookkeeping, and not what other controllers or people added.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status_block = obj.get("status") or {}
    status, note = map_status(obj)
    created = parse_time(status_block.get("creationTime")) or parse_time(
        meta.get("creationTimestamp")
    )
    retention = _int(spec.get("retentionDays"), DEFAULT_RETENTION_DAYS)
    expires = parse_time(status_block.get("expireDateTime")) or parse_time(
        status_block.get("expireTime")
    )
    if expires is None and created is not None and retention > 0:
        expires = created + timedelta(days=retention)
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    written = written if written is not None else written_of(obj)
    listed = sorted(
        events,
        key=lambda e: e.last_timestamp or datetime.min.replace(tzinfo=UTC),
    )[-MAX_EVENTS_PER_CACHE:]
    if note is not None:
        listed.append(note)
    return ObservedCache(
        name=str(meta.get("name", "")),
        cache_id=str(
            status_block.get("imcId") or status_block.get("imageCacheId") or meta.get("uid", "")
        ),
        status=status,
        images=_strings(spec.get("images")),
        image_cache_size_gib=_int(spec.get("imageCacheSize"), DEFAULT_IMAGE_CACHE_SIZE_GIB),
        retention_days=retention,
        image_pull_secrets=_strings(spec.get("imagePullSecrets")),
        owner=owner_of(obj),
        created_at=created,
        expires_at=expires,
        last_matched_at=parse_time(status_block.get("lastMatchedTime")),
        snapshot_id=str(status_block["snapshotId"]) if status_block.get("snapshotId") else None,
        events=tuple(listed),
        prune=annotations.get(PRUNE_ANNOTATION) != PRUNE_DISABLED,
        security_group_ids=_strings(spec.get("securityGroupIds")),
        labels=tuple(sorted((key, str(labels[key])) for key in written.labels)),
        annotations=tuple(sorted((key, str(annotations[key])) for key in written.annotations)),
    )

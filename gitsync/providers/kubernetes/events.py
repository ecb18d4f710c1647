"""The Events gitsync itself records on ImageCaches: a pinned digest that moved (pure).

Why: when a followed tag moves, the update writes the image pinned to the new
digest (`repo:tag@sha256:<new>`, see `gitsync.digests`) and the operator
rebuilds the cache. Nothing in the object says why it was rebuilt, so gitsync
records a Normal Event `DigestChanged` on it, as the local backend does on its
snapshots, naming the image, the old and the new digest. The operator's own
Events sit beside it, and `gitsync status` lists them all.

The Event is a core/v1 Event made the way client-go's event recorder makes
one (`tools/record`): `involvedObject` is a full reference to the ImageCache
(apiVersion, kind, name, uid, resourceVersion), the name is
`<object name>.<nanoseconds in hex>`, `firstTimestamp` = `lastTimestamp`,
`count` 1, `source.component` and `reportingComponent` are `gitsync`, and
`reportingInstance` is the controller id that owns the object. ImageCache is
cluster-scoped and an Event is namespaced: like client-go, gitsync writes the
Events of a cluster-scoped object to the namespace `default`, the one the API
server accepts for an involvedObject without a namespace (and where
`kubectl describe imagecache` looks for them).

Which changes are moves (`digest_changes`): an image of the new spec pinned
to a digest, whose `repo:tag` the object held pinned to another digest, or
held bare (the unpinned tag: the digest it held is not known). An image the
object did not hold at all is new to the cache, not a move; one given by
digest alone has no tag to move.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.model import API_VERSION, KIND
from gitsync.providers.kubernetes.ownership import FIELD_MANAGER, Json, owner_of

# What client-go's recorder does for an object without a namespace (metav1.NamespaceDefault).
EVENT_NAMESPACE = "default"
EVENT_COMPONENT = FIELD_MANAGER  # "gitsync": the same name in managedFields and in Events
DIGEST_CHANGED = "DigestChanged"
UNPINNED = "the unpinned tag"


@dataclass(frozen=True, slots=True)
class DigestChange:
    """One image whose pin moved: `image` as written without its digest, `old` None if bare."""

    image: str
    old: str | None
    new: str

    @property
    def message(self) -> str:
        return (
            f"{self.image} moved upstream from {self.old or UNPINNED} to {self.new};"
            " the cache is rebuilt"
        )


def _tag_and_digest(image: str) -> tuple[str, str | None] | None:
    """(canonical `registry/repo:tag`, the pinned digest or None); None without a tag."""
    try:
        ref = imageref.parse(image)
    except ImageRefError:
        return None
    if ref.tag is None:
        return None  # given by digest alone: no tag that could move
    return f"{ref.registry}/{ref.repository}:{ref.tag}", ref.digest


def digest_changes(before: Iterable[str], after: Iterable[str]) -> tuple[DigestChange, ...]:
    """The images of `after` pinned to another digest than `before` held for the same tag."""
    held: dict[str, str | None] = {}
    for image in before:
        parsed = _tag_and_digest(image)
        if parsed is not None:
            held.setdefault(parsed[0], parsed[1])
    changes: list[DigestChange] = []
    seen: set[str] = set()
    for image in after:
        parsed = _tag_and_digest(image)
        if parsed is None:
            continue
        key, new = parsed
        if new is None or key in seen or key not in held:
            continue
        seen.add(key)
        if held[key] != new:
            changes.append(DigestChange(image=image.partition("@")[0], old=held[key], new=new))
    return tuple(changes)


def _timestamp(moment: datetime) -> str:
    """metav1.Time as the API server writes it: RFC 3339 in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_changed_event(obj: Mapping[str, Any], change: DigestChange, *, nanos: int) -> Json:
    """The core/v1 Event recording `change` on the ImageCache `obj` (as written), at `nanos`.

    `nanos` is the time in nanoseconds since the epoch; as in client-go it also
    names the Event, so two Events of one object need two different values.
    """
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    at = _timestamp(datetime.fromtimestamp(nanos / 1e9, tz=UTC))
    involved: Json = {"apiVersion": API_VERSION, "kind": KIND, "name": name}
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            involved[key] = str(meta[key])
    event: Json = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{nanos:x}", "namespace": EVENT_NAMESPACE},
        "involvedObject": involved,
        "type": "Normal",
        "reason": DIGEST_CHANGED,
        "message": change.message,
        "source": {"component": EVENT_COMPONENT},
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
        "reportingComponent": EVENT_COMPONENT,
    }
    owner = owner_of(obj)
    if owner:
        event["reportingInstance"] = owner
    return event

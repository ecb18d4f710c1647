"""`KubernetesProvider`: the `Provider` over ImageCache objects.

`observe` lists with the label selector `app.kubernetes.io/managed-by=gitsync`
(paginated), so one pass costs one paged list of ImageCaches and one paged
list of Events however many other objects the cluster holds. An object made by
hand or by another tool is therefore not listed; `create` still refuses to
touch it: it reads the name first and raises `PermanentError` when an object
of that name exists without our owner label. Objects of another gitsync
controller (same `managed-by`, another owner) are listed, with that owner, so
the planner reports them as in the way.

The provider keeps every field of a spec and changes each in place
(`KUBERNETES_FIELDS`): a change of a label or an annotation alone is an
update, applied to the same object.

A rebuild (the planner's RECREATE: failed, expired or due for renewal) cannot
be asked of the operator by changing nothing, so `update` deletes the object
(with a `uid` precondition, so a newer object of the same name is never
deleted) and applies it again. `update` tells the two apart with the
planner's own comparison (`planning.spec_changes`): an update whose spec
the object already holds is a rebuild. While the operator's finalizer keeps
the old object, `update` raises `TemporaryError`; `observe` reports the
terminating object as Pending, the planner waits, and creates it once it is
gone.

An update that moves an image's pin (the object held `repo:tag@sha256:<old>`
or the bare tag, and the spec now pins `repo:tag@sha256:<new>`: a followed
tag moved upstream) records a Normal Event `DigestChanged` on the object as
written (`events`), in the namespace `default`, as Kubernetes does for the
Events of cluster-scoped objects. `observe` lists Events of ImageCaches in
every namespace, so these are among the cache's events. A failure to record
one is logged, never raised: the update has happened.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client

from gitsync import planning
from gitsync.errors import GitSyncError, PermanentError, TemporaryError
from gitsync.model import (
    API_VERSION,
    KIND,
    OWNER_LABEL,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    ObservedState,
)
from gitsync.providers.base import KUBERNETES_FIELDS
from gitsync.providers.kubernetes.client import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    GROUP,
    PLURAL,
    VERSION,
    ImageCacheApi,
    load_api_client,
)
from gitsync.providers.kubernetes.events import (
    DIGEST_CHANGED,
    EVENT_NAMESPACE,
    DigestChange,
    digest_changed_event,
    digest_changes,
)
from gitsync.providers.kubernetes.mapping import event_from, observed_from
from gitsync.providers.kubernetes.ownership import (
    MANAGED_SELECTOR,
    Json,
    Written,
    check_ours,
    check_owner_id,
    written_of,
)
from gitsync.providers.kubernetes.writes import ImageCacheWriter

log = logging.getLogger("gitsync.providers.kubernetes")

_BROKEN = (CacheStatus.FAILED, CacheStatus.UPDATE_FAILED)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the last `observe` saw of one object, for preconditions."""

    uid: str
    owner: str | None
    written: Written


class KubernetesProvider:
    """`Provider` over ImageCache objects; see the module docstring for the rules."""

    name = "kubernetes"
    fields = KUBERNETES_FIELDS

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        label_selector: str = MANAGED_SELECTOR,
        page_size: int = DEFAULT_PAGE_SIZE,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
        owns_client: bool = False,
    ) -> None:
        """`owns_client`: close the client in `close()` (set when built by `from_config`)."""
        self._api = ImageCacheApi(
            api_client=api_client, page_size=page_size, request_timeout=request_timeout
        )
        self._writer = ImageCacheWriter(self._api)
        self._client = api_client
        self._selector = label_selector
        self._owns_client = owns_client
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()  # actions run in the reconciler's thread pool
        self._warned: set[str] = set()
        self._last_event_nanos = 0

    @classmethod
    def from_config(
        cls, *, kubeconfig: Path | None = None, context: str | None = None, **options: Any
    ) -> KubernetesProvider:
        client = load_api_client(kubeconfig=kubeconfig, context=context)
        return cls(api_client=client, owns_client=True, **options)

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        items = self._api.list_all(
            self._api.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            what="list ImageCaches",
            label_selector=self._selector,
        )
        events = self._events_by_object()
        caches: list[ObservedCache] = []
        seen: dict[str, _Seen] = {}
        for item in items:
            meta = item.get("metadata") or {}
            uid = str(meta.get("uid", ""))
            written = written_of(item)
            cache = observed_from(item, events=events.get(uid, ()), written=written)
            caches.append(cache)
            seen[cache.name] = _Seen(uid=uid, owner=cache.owner, written=written)
            self._warn_once(cache)
        with self._lock:
            self._seen = seen
        return ObservedState(caches=tuple(sorted(caches, key=lambda c: c.name)), fields=self.fields)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        check_owner_id(owner)
        existing = self._api.get(spec.name)
        if existing is not None:
            check_ours(existing, spec.name, owner=owner)
            if (existing.get("metadata") or {}).get("deletionTimestamp"):
                raise TemporaryError(
                    f"ImageCache {spec.name!r} is still being deleted by the operator;"
                    " it is created again on a later pass",
                    retry_after=5.0,
                )
        return observed_from(self._writer.write(spec, owner=owner, current=existing))

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        if spec.name != current.name:
            raise ValueError(f"update of {current.name!r} was given the spec of {spec.name!r}")
        owner = current.owner
        if owner is None:
            raise PermanentError(
                f"ImageCache {current.name!r} has no {OWNER_LABEL} label; gitsync changes only"
                " the objects it created"
            )
        check_owner_id(owner)
        moved = digest_changes(current.images, spec.images)
        if current.status in _BROKEN or not planning.spec_changes(
            spec, current, fields=self.fields
        ):
            # Nothing to change means the planner wants a rebuild (failed, expired, renewal).
            written = self._rebuild(spec, current, owner=owner)
        else:
            written = self._writer.write(spec, owner=owner, current=self._current(current.name))
        self._record_moves(written, moved)
        return observed_from(written)

    def delete(self, current: ObservedCache) -> None:
        if current.owner is None:
            raise PermanentError(
                f"ImageCache {current.name!r} has no {OWNER_LABEL} label; gitsync deletes only"
                " the objects it created"
            )
        self._api.delete(current.name, uid=self._uid(current.name))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]  # untyped upstream

    # ---------------------------------------------------------------- helpers

    def _rebuild(self, spec: CacheSpec, current: ObservedCache, *, owner: str) -> Json:
        uid = self._uid(current.name)
        self._api.delete(current.name, uid=uid)
        again = self._api.get(current.name)
        if again is not None:
            if str((again.get("metadata") or {}).get("uid")) == uid:
                raise TemporaryError(
                    f"rebuilding ImageCache {current.name!r}: the old object is still being"
                    " deleted by the operator; it is created again on a later pass",
                    retry_after=5.0,
                )
            check_ours(again, current.name, owner=owner)
        log.info(
            "rebuilding ImageCache %s (%s)",
            current.name,
            current.status,
            extra={"cache": spec.name},
        )
        return self._writer.write(spec, owner=owner, current=again)

    def _record_moves(self, written: Json, moved: tuple[DigestChange, ...]) -> None:
        """A `DigestChanged` Event per moved pin on the object as written; failures only logged.

        The update itself has happened: an Event that cannot be written (RBAC
        without `create` on events, the API server busy) must not undo or fail it.
        """
        if not moved:
            return
        with self._lock:
            # Event names carry the time in nanoseconds; never the same twice in this process.
            nanos = max(time.time_ns(), self._last_event_nanos + 1)
            self._last_event_nanos = nanos + len(moved) - 1
        name = str((written.get("metadata") or {}).get("name", ""))
        for index, change in enumerate(moved):
            try:
                self._api.create_event(
                    EVENT_NAMESPACE, digest_changed_event(written, change, nanos=nanos + index)
                )
            except GitSyncError as exc:
                log.warning(
                    "ImageCache %s: cannot record the %s event (%s): %s",
                    name,
                    DIGEST_CHANGED,
                    change.message,
                    exc,
                    extra={"cache": name},
                )
            else:
                log.info("ImageCache %s: %s", name, change.message, extra={"cache": name})

    def _current(self, name: str) -> Written | Json | None:
        """What gitsync wrote to `name`, as the last observe saw it (else read now)."""
        with self._lock:
            seen = self._seen.get(name)
        return seen.written if seen is not None else self._api.get(name)

    def _uid(self, name: str) -> str | None:
        with self._lock:
            seen = self._seen.get(name)
        if seen is not None:
            return seen.uid
        current = self._api.get(name)
        return str((current.get("metadata") or {}).get("uid")) if current is not None else None

    def _events_by_object(self) -> dict[str, list[CacheEvent]]:
        """Events of every ImageCache, by involvedObject.uid, from one paged list."""
        try:
            items = self._api.list_all(
                self._api.core.list_event_for_all_namespaces,
                what="list ImageCache Events",
                field_selector=f"involvedObject.kind={KIND}",
            )
        except GitSyncError as exc:
            # Events explain a status; the status itself still holds without them.
            self._warn(f"events: {exc}", "cannot read ImageCache events: %s", exc)
            return {}
        by_uid: dict[str, list[CacheEvent]] = {}
        for item in items:
            involved = item.get("involvedObject") or item.get("regarding") or {}
            if involved.get("apiVersion") not in (None, API_VERSION):
                continue
            by_uid.setdefault(str(involved.get("uid", "")), []).append(event_from(item))
        return by_uid

    def _warn_once(self, cache: ObservedCache) -> None:
        for event in cache.events:
            if event.reason == "UnknownPhase":
                self._warn(
                    f"phase:{cache.name}:{event.message}",
                    "ImageCache %s: %s",
                    cache.name,
                    event.message,
                )

    def _warn(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

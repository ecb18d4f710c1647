"""The `kubernetes` backend: caches are `ImageCache` objects the in-cluster operator builds.

gitsync does not build anything here. The TKE image-cache operator (the
`imc-operator` add-on) watches `ImageCache` objects (`eks.cloud.tencent.com/v1`,
cluster-scoped, plural `imagecaches`, short name `imc`) and turns each into a
cloud image cache; gitsync keeps those objects equal to Git and reads back the
status the operator writes.

Ownership
---------
Every object gitsync writes carries two labels::

    app.kubernetes.io/managed-by: gitsync
    gitsync.io/owner: <controller id>

`observe` lists with the label selector `app.kubernetes.io/managed-by=gitsync`
(paginated), so one pass costs one paged list of ImageCaches and one paged
list of Events however many other objects the cluster holds. An object made by
hand or by another tool is therefore not listed; `create` still refuses to
touch it: it reads the name first and raises `PermanentError` when an object
of that name exists without our owner label. Objects of another gitsync
controller (same `managed-by`, another owner) are listed, with that owner, so
the planner reports them as in the way.

`gitsync.io/prune: disabled` travels as an annotation on the object, so
`ObservedCache.prune` reflects it after the spec has left Git.

The provider keeps every field of a spec and changes each in place
(`KUBERNETES_FIELDS`): a change of a label or an annotation alone is an
update, applied to the same object.

Writes
------
The object gitsync writes is the one in Git: `spec.images`,
`imageCacheSize`, `retentionDays`, `imagePullSecrets`, `securityGroupIds`,
and Git's labels and annotations (the EIP annotation
`eks.tke.cloud.tencent.com/eip-attributes` among them, as written) beside
gitsync's own two labels and `gitsync.io/prune`; `kubectl`'s
last-applied-configuration in Git is not copied. A spec that sets one of
gitsync's own labels, or `gitsync.io/applied-metadata` (below), is refused
with a `PermanentError` naming the key: such a key could never equal Git.

Server-side apply (`application/apply-patch+yaml`, field manager `gitsync`,
`force=true`: Git wins over `kubectl edit` and `kubectl label --overwrite`).
Apply owns exactly the fields gitsync sends, so a field that Git drops (a
label, an annotation, the prune annotation, the pull secrets) is removed by
the API server unless another manager owns it too, and fields other
managers set (a label added by `kubectl label`, an operator's annotation)
are kept.

Which labels and annotations are gitsync's is read from the object's
`metadata.managedFields`: the keys under `f:metadata/f:labels` and
`f:metadata/f:annotations` of the entries of manager `gitsync`. Only those
are reported as the cache's labels and annotations (`Written`), so a key
someone else added is never a difference from Git and never removed; a key
of Git's that someone else overwrote belongs to them until gitsync's next
apply takes it back, and is reported missing until then.

An API server that cannot apply (415, or 400/404/405 naming the patch type:
very old servers, some proxies) is remembered, and writes fall back to POST
create and JSON merge patch. A merge patch owns nothing, so the fallback
keeps its own record, `gitsync.io/applied-metadata: {"annotations":[...],
"labels":[...]}` (the user keys it wrote, as kubectl's
last-applied-configuration does), and sends explicit nulls for the keys
recorded (or owned by gitsync in managedFields) that Git dropped, for the
prune annotation and the optional spec lists. Back on server-side apply, a
write that finds fields gitsync holds only through such merge patches, or
the record, removes those Git no longer has, and the record, with one merge
patch after the apply.

A rebuild (the planner's RECREATE: failed, expired or due for renewal) cannot
be asked of the operator by changing nothing, so `update` deletes the object
(with a `uid` precondition, so a newer object of the same name is never
deleted) and applies it again. While the operator's finalizer keeps the old
object, `update` raises `TemporaryError`; `observe` reports the terminating
object as Pending, the planner waits, and creates it once it is gone.

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

Pull secrets for the local backend
----------------------------------
`ClusterPullSecrets` reads `kubernetes.io/dockerconfigjson` (and the legacy
`dockercfg`) Secrets named `namespace/name` from the API and returns the same
`CredentialStore` as `--secrets-dir`, parsed by `providers.local.auth`.

Configuration comes from a kubeconfig file (`--kubeconfig`, `--context`) or,
without one, from the ServiceAccount the pod runs as (in-cluster config).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from gitsync import imageref
from gitsync.errors import ConfigError, GitSyncError, ImageRefError, PermanentError, TemporaryError
from gitsync.model import (
    API_VERSION,
    APPLIED_METADATA_ANNOTATION,
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    DEFAULT_RETENTION_DAYS,
    KIND,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    ObservedState,
)
from gitsync.providers.base import KUBERNETES_FIELDS
from gitsync.providers.local.auth import (
    CredentialError,
    CredentialStore,
    PullSecretNotFoundError,
    credentials_from_secret,
    split_secret_name,
)

log = logging.getLogger("gitsync.providers.kubernetes")

GROUP = "eks.cloud.tencent.com"
VERSION = "v1"
PLURAL = "imagecaches"
FIELD_MANAGER = "gitsync"
MANAGED_BY_VALUE = "gitsync"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
DEFAULT_PAGE_SIZE = 500  # 1,000 caches: two pages; the API server's own default cap is 500
DEFAULT_REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a stuck API server must not stall a pass
MAX_EVENTS_PER_CACHE = 20
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
# The merge-patch fallback's record of the user label and annotation keys it wrote from Git
# (JSON: {"annotations": [...], "labels": [...]}), so that it can remove one Git drops, as
# kubectl's last-applied-configuration does. Server-side apply keeps that record itself.
APPLIED_ANNOTATION = APPLIED_METADATA_ANNOTATION
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Metadata gitsync keeps for itself: never reported as a label or annotation from Git.
OWN_LABELS = frozenset({MANAGED_BY_LABEL, OWNER_LABEL})
OWN_ANNOTATIONS = frozenset({PRUNE_ANNOTATION, APPLIED_ANNOTATION, LAST_APPLIED_ANNOTATION})

# What the code calls, for the RBAC test: (apiGroup, resource, verbs). Keep in step with
# manifests/clusterrole.yaml (tests/unit/test_manifests.py checks the manifests cover it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (GROUP, PLURAL, ("get", "list", "create", "patch", "delete")),
    ("", "events", ("list",)),
)
PULL_SECRET_RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (("", "secrets", ("get",)),)

_PHASES = {status.value.lower(): status for status in CacheStatus}
_SERVING = (CacheStatus.READY, CacheStatus.UPDATING, CacheStatus.UPDATE_FAILED)
_BROKEN = (CacheStatus.FAILED, CacheStatus.UPDATE_FAILED)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# Status codes with which an API server says it does not know the apply patch type.
_NO_APPLY_STATUSES = (400, 404, 405, 415)

Json = dict[str, Any]
FieldPath = tuple[str, ...]  # ("metadata", "labels", "team"), ("spec", "imagePullSecrets")
_LABELS: FieldPath = ("metadata", "labels")
_ANNOTATIONS: FieldPath = ("metadata", "annotations")


# --------------------------------------------------------------- client config


def load_api_client(
    *, kubeconfig: Path | None = None, context: str | None = None
) -> kubernetes.client.ApiClient:
    """An API client from a kubeconfig (and context), or in-cluster without one.

    The in-cluster loader reads the ServiceAccount token and CA that the
    kubelet mounts, and the `KUBERNETES_SERVICE_HOST`/`_PORT` variables it
    sets: that is the platform's contract, not gitsync configuration.
    """
    try:
        if kubeconfig is not None or context is not None:
            # The config loaders are untyped in the kubernetes package.
            client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                persist_config=False,
            )
            return client
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped upstream
        return kubernetes.client.ApiClient(configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = (
            f"kubeconfig {kubeconfig or '(default)'}"
            + (f", context {context!r}" if context else "")
            if kubeconfig is not None or context is not None
            else "in-cluster config (ServiceAccount token)"
        )
        hint = (
            "check the file and that the context exists (`kubectl config get-contexts`)"
            if kubeconfig is not None or context is not None
            else "not running in a pod? pass --kubeconfig FILE (and --context NAME)"
        )
        raise ConfigError(f"cannot load the Kubernetes {where}: {exc}; {hint}") from exc


# ------------------------------------------------------------ error handling


def api_error_message(exc: ApiException) -> str:
    """The API server's Status message, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    return f"{exc.reason or 'error'}"


def retry_after_seconds(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def translate(exc: BaseException, *, what: str) -> GitSyncError:
    """An API or transport failure as gitsync's transient/permanent error."""
    if isinstance(exc, GitSyncError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: HTTP {status}: {api_error_message(exc)}"
        if status in (401, 403):
            return PermanentError(
                f"{message}; the ServiceAccount needs the rules in manifests/clusterrole.yaml"
            )
        if status in {0, 409, 429} or status >= 500:
            return TemporaryError(message, retry_after=retry_after_seconds(exc))
        return PermanentError(message)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TemporaryError(f"{what}: cannot reach the Kubernetes API server: {exc}")
    return PermanentError(f"{what}: {exc}")


def _is_status(exc: BaseException, *statuses: int) -> bool:
    return isinstance(exc, ApiException) and exc.status in statuses


# ----------------------------------------------------------------- conversions


def parse_time(value: object) -> datetime | None:
    """RFC 3339 as Kubernetes writes it (`2026-11-22T03:00:00Z`, with or without fractions)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Go writes up to nine fractional digits; Python reads six.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def owner_of(obj: Mapping[str, Any]) -> str | None:
    labels = obj.get("metadata", {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    owner = labels.get(OWNER_LABEL)
    return str(owner) if owner else None


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


# ------------------------------------------------------------------ ownership


def fields_v1_paths(fields: object, prefix: FieldPath = ()) -> set[FieldPath]:
    """The fields a `managedFields` entry's FieldsV1 names (`f:` steps), without `.` entries.

    `{"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}` is
    `{("metadata", "labels", "team")}`. List items (`k:`, `v:`, `i:`) do not
    occur in ImageCache, whose lists are atomic, and are skipped.
    """
    paths: set[FieldPath] = set()
    if not isinstance(fields, Mapping):
        return paths
    for key, child in fields.items():
        if not isinstance(key, str) or not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if isinstance(child, Mapping) and any(str(k).startswith("f:") for k in child):
            paths |= fields_v1_paths(child, path)
        else:
            paths.add(path)
    return paths


def _recorded(annotations: Mapping[str, Any]) -> set[FieldPath]:
    """The keys the fallback's `APPLIED_ANNOTATION` lists; unreadable is none."""
    try:
        record = json.loads(str(annotations.get(APPLIED_ANNOTATION) or "{}"))
    except ValueError:
        return set()
    if not isinstance(record, Mapping):
        return set()
    paths: set[FieldPath] = set()
    for where, name in ((_LABELS, "labels"), (_ANNOTATIONS, "annotations")):
        keys = record.get(name)
        if isinstance(keys, list):
            paths |= {(*where, key) for key in keys if isinstance(key, str)}
    return paths


@dataclass(frozen=True, slots=True)
class Written:
    """What gitsync wrote to one object, told apart from what others wrote.

    The API server keeps the record: each `metadata.managedFields` entry
    names a manager, how it wrote (`Apply` for server-side apply, `Update`
    for every other write) and the fields it owns. gitsync's fields are those
    of its entries (manager `gitsync`) plus the keys its merge-patch fallback
    recorded in `APPLIED_ANNOTATION` (servers without managed fields). Only
    paths the object holds now, under `metadata.labels`,
    `metadata.annotations` and `spec`, are kept.
    """

    applied: frozenset[FieldPath] = frozenset()  # gitsync's, by server-side apply
    updated: frozenset[FieldPath] = frozenset()  # gitsync's, by other writes or its record
    others: frozenset[FieldPath] = frozenset()  # owned by another manager (maybe also gitsync)
    recorded: bool = False  # the object carries APPLIED_ANNOTATION

    @property
    def labels(self) -> frozenset[str]:
        """The user label keys gitsync wrote: not its own two."""
        return self._keys(_LABELS, OWN_LABELS)

    @property
    def annotations(self) -> frozenset[str]:
        """The user annotation keys gitsync wrote: not the prune annotation or the record."""
        return self._keys(_ANNOTATIONS, OWN_ANNOTATIONS)

    def _keys(self, where: FieldPath, own: frozenset[str]) -> frozenset[str]:
        return frozenset(
            path[2]
            for path in self.applied | self.updated
            if len(path) == 3 and path[:2] == where and path[2] not in own
        )

    def removals(self, manifest_body: Mapping[str, Any], *, applying: bool) -> Json | None:
        """A merge patch removing what gitsync wrote before and `manifest_body` no longer has.

        `applying`: the manifest was just applied, so the server removed what gitsync
        applied before; what is left is what gitsync wrote otherwise (a merge patch, by
        an older gitsync or the fallback) and its record. Without `applying`, everything
        gitsync wrote counts. A field another manager also owns stays, as with apply.
        None when there is nothing to remove.
        """
        sent = _leaves(manifest_body)
        candidates = self.updated if applying else self.applied | self.updated
        gone = sorted(p for p in candidates - sent - self.others if _removable(p))
        if applying and self.recorded:
            gone.append((*_ANNOTATIONS, APPLIED_ANNOTATION))
        if not gone:
            return None
        body: Json = {}
        for path in gone:
            node = body
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = None
        return body


def _removable(path: FieldPath) -> bool:
    """Only user keys and optional spec fields are ever removed; never gitsync's labels."""
    if len(path) == 3 and path[:2] == _LABELS:
        return path[2] not in OWN_LABELS
    if len(path) == 3 and path[:2] == _ANNOTATIONS:
        return path[2] not in (APPLIED_ANNOTATION, LAST_APPLIED_ANNOTATION)
    return len(path) == 2 and path[0] == "spec" and path[1] not in _REQUIRED_SPEC


_REQUIRED_SPEC = frozenset({"images", "imageCacheSize", "retentionDays"})  # always sent


def _leaves(obj: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The fields an object sets, as server-side apply counts them (lists are one field)."""
    paths: set[FieldPath] = set()
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            paths |= _leaves(value, (*prefix, str(key)))
        elif value is not None:
            paths.add((*prefix, str(key)))
    return paths


def _within(path: FieldPath) -> bool:
    if path[:2] in (_LABELS, _ANNOTATIONS):
        return len(path) == 3
    return len(path) == 2 and path[0] == "spec"


def written_of(obj: Mapping[str, Any]) -> Written:
    """Who wrote which labels, annotations and spec fields of `obj` (see `Written`)."""
    meta = obj.get("metadata") or {}
    present = {p for p in _leaves(obj) if _within(p)}
    applied: set[FieldPath] = set()
    updated: set[FieldPath] = set()
    others: set[FieldPath] = set()
    entries = meta.get("managedFields")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue  # the status subresource is the operator's, never gitsync's
        paths = fields_v1_paths(entry.get("fieldsV1"))
        if entry.get("manager") != FIELD_MANAGER:
            others |= paths
        elif entry.get("operation") == "Apply":
            applied |= paths
        else:
            updated |= paths
    annotations = meta.get("annotations") or {}
    updated |= _recorded(annotations)
    return Written(
        applied=frozenset(applied & present),
        updated=frozenset(updated & present),
        others=frozenset(others & present),
        recorded=APPLIED_ANNOTATION in annotations,
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


def manifest(spec: CacheSpec, *, owner: str, record: bool = False) -> Json:
    """The whole object gitsync applies for `spec`: exactly the fields it owns.

    Git's labels and annotations, then gitsync's own (its two labels win over
    Git's). `record`: with the fallback's record of the user keys written (see
    `APPLIED_ANNOTATION`), for writes that are not server-side apply.
    """
    labels = {**dict(spec.labels), MANAGED_BY_LABEL: MANAGED_BY_VALUE, OWNER_LABEL: owner}
    annotations = dict(spec.annotations)
    if not spec.prune:
        annotations[PRUNE_ANNOTATION] = PRUNE_DISABLED
    if record and (spec.labels or spec.annotations):
        annotations[APPLIED_ANNOTATION] = _record_value(spec)
    metadata: Json = {"name": spec.name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    body: Json = {
        "images": list(spec.images),
        "imageCacheSize": spec.image_cache_size_gib,
        "retentionDays": spec.retention_days,
    }
    if spec.image_pull_secrets:
        body["imagePullSecrets"] = list(spec.image_pull_secrets)
    if spec.security_group_ids:
        body["securityGroupIds"] = list(spec.security_group_ids)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": body}


def _record_value(spec: CacheSpec) -> str:
    keys = {"annotations": [k for k, _ in spec.annotations], "labels": [k for k, _ in spec.labels]}
    return json.dumps(keys, separators=(",", ":"), sort_keys=True)


def _merge_patch_body(spec: CacheSpec, *, owner: str, before: Written) -> Json:
    """The merge-patch fallback: the manifest, its record, and nulls for what Git dropped.

    Dropped are the user keys gitsync wrote before (`before`) that Git no
    longer has and no other manager owns, and, always, whichever of the
    prune annotation, the record and the optional spec lists `spec` lacks.
    """
    body = manifest(spec, owner=owner, record=True)
    _add_nulls(body, before.removals(body, applying=False) or {})
    _add_nulls(
        body,
        {
            "metadata": {"annotations": {PRUNE_ANNOTATION: None, APPLIED_ANNOTATION: None}},
            "spec": {"imagePullSecrets": None, "securityGroupIds": None},
        },
    )
    return body


def _add_nulls(body: Json, nulls: Mapping[str, Any]) -> None:
    """Set each null of `nulls` where `body` has no value of its own."""
    for key, value in nulls.items():
        if isinstance(value, Mapping):
            _add_nulls(body.setdefault(key, {}), value)
        else:
            body.setdefault(key, None)


def _image_set(images: Iterable[str]) -> frozenset[str]:
    keys = set()
    for image in images:
        try:
            keys.add(imageref.normalize(image))
        except ImageRefError:
            keys.add(image)  # compared as written, as the planner does
    return frozenset(keys)


def same_spec(spec: CacheSpec, cache: ObservedCache) -> bool:
    """True when the object already holds `spec` (the fields the planner compares)."""
    return (
        _image_set(spec.images) == _image_set(cache.images)
        and spec.image_cache_size_gib == cache.image_cache_size_gib
        and spec.retention_days == cache.retention_days
        and set(spec.image_pull_secrets) == set(cache.image_pull_secrets)
        and spec.security_group_ids == cache.security_group_ids
        and dict(spec.labels) == dict(cache.labels)
        and dict(spec.annotations) == dict(cache.annotations)
    )


def _check_reserved(spec: CacheSpec) -> None:
    """Git cannot set gitsync's own labels or its record: they would never equal Git."""
    taken = sorted(
        [f"label {k}" for k, _ in spec.labels if k in OWN_LABELS]
        + [f"annotation {k}" for k, _ in spec.annotations if k == APPLIED_ANNOTATION]
    )
    if taken:
        where = f" ({spec.location})" if spec.location is not None else ""
        raise PermanentError(
            f"ImageCache {spec.name!r}{where}: {', '.join(taken)} is gitsync's own on the"
            " kubernetes backend; remove it from the spec in Git"
        )


def check_owner_id(owner: str) -> None:
    if not owner or not _LABEL_VALUE.fullmatch(owner):
        raise ConfigError(
            f"controller id {owner!r} cannot be the value of label {OWNER_LABEL}: use at most"
            " 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )


# --------------------------------------------------------------------- provider


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
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self._client = api_client
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._selector = label_selector
        self._page_size = page_size
        self._timeout = request_timeout
        self._owns_client = owns_client
        self._can_apply = True
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()  # actions run in the reconciler's thread pool
        self._warned: set[str] = set()

    @classmethod
    def from_config(
        cls, *, kubeconfig: Path | None = None, context: str | None = None, **options: Any
    ) -> KubernetesProvider:
        client = load_api_client(kubeconfig=kubeconfig, context=context)
        return cls(api_client=client, owns_client=True, **options)

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        items = self._list_all(
            self._custom.list_cluster_custom_object,
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
        existing = self._get(spec.name)
        if existing is not None:
            self._check_ours(existing, spec.name, owner=owner)
            if (existing.get("metadata") or {}).get("deletionTimestamp"):
                raise TemporaryError(
                    f"ImageCache {spec.name!r} is still being deleted by the operator;"
                    " it is created again on a later pass",
                    retry_after=5.0,
                )
        return observed_from(self._write(spec, owner=owner, current=existing))

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
        if current.status in _BROKEN or (same_spec(spec, current) and spec.prune == current.prune):
            # Nothing to change means the planner wants a rebuild (failed, expired, renewal).
            return self._rebuild(spec, current, owner=owner)
        return observed_from(self._write(spec, owner=owner, current=self._current(current.name)))

    def delete(self, current: ObservedCache) -> None:
        if current.owner is None:
            raise PermanentError(
                f"ImageCache {current.name!r} has no {OWNER_LABEL} label; gitsync deletes only"
                " the objects it created"
            )
        self._delete(current.name, uid=self._uid(current.name))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]  # untyped upstream

    # ---------------------------------------------------------------- writes

    def _write(self, spec: CacheSpec, *, owner: str, current: Json | Written | None) -> Json:
        """Make the object hold `spec`; `current` is it as last read (None: absent).

        Server-side apply, then, only if the object still holds fields gitsync
        wrote by merge patch (the fallback, or an older gitsync) that Git no
        longer has, one merge patch removing them.
        """
        _check_reserved(spec)
        if self._can_apply:
            body = manifest(spec, owner=owner)
            try:
                applied = self._call(
                    self._custom.patch_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    spec.name,
                    body,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY_PATCH,
                )
            except ApiException as exc:
                if not (exc.status in _NO_APPLY_STATUSES and _names_apply(exc)):
                    raise translate(exc, what=f"apply ImageCache {spec.name!r}") from exc
                self._can_apply = False
                log.warning(
                    "the API server cannot apply (HTTP %s: %s); using create and merge patch",
                    exc.status,
                    api_error_message(exc),
                )
            else:
                leftovers = written_of(applied).removals(body, applying=True)
                if leftovers is None:
                    return applied
                return self._merge_patch(spec.name, leftovers)
        return self._create_or_patch(spec, owner=owner, current=current)

    def _create_or_patch(
        self, spec: CacheSpec, *, owner: str, current: Json | Written | None
    ) -> Json:
        what = f"write ImageCache {spec.name!r}"
        if current is None:
            try:
                return self._call(
                    self._custom.create_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    manifest(spec, owner=owner, record=True),
                    field_manager=FIELD_MANAGER,
                    # This generated method ignores _content_type; the server would default to
                    # JSON, but say so.
                    _headers={"Content-Type": "application/json"},
                )
            except ApiException as exc:
                if not _is_status(exc, 409):
                    raise translate(exc, what=what) from exc
            # Created meanwhile: patch it only if it is ours.
            current = self._get(spec.name)
            if current is not None:
                self._check_ours(current, spec.name, owner=owner)
        before = current if isinstance(current, Written) else written_of(current or {})
        return self._merge_patch(spec.name, _merge_patch_body(spec, owner=owner, before=before))

    def _merge_patch(self, name: str, body: Json) -> Json:
        try:
            return self._call(
                self._custom.patch_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            raise translate(exc, what=f"write ImageCache {name!r}") from exc

    def _rebuild(self, spec: CacheSpec, current: ObservedCache, *, owner: str) -> ObservedCache:
        uid = self._uid(current.name)
        self._delete(current.name, uid=uid)
        again = self._get(current.name)
        if again is not None:
            if str((again.get("metadata") or {}).get("uid")) == uid:
                raise TemporaryError(
                    f"rebuilding ImageCache {current.name!r}: the old object is still being"
                    " deleted by the operator; it is created again on a later pass",
                    retry_after=5.0,
                )
            self._check_ours(again, current.name, owner=owner)
        log.info(
            "rebuilding ImageCache %s (%s)",
            current.name,
            current.status,
            extra={"cache": spec.name},
        )
        return observed_from(self._write(spec, owner=owner, current=again))

    def _delete(self, name: str, *, uid: str | None) -> None:
        body: Json = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call(
                self._custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name, body=body
            )
        except ApiException as exc:
            if _is_status(exc, 404):
                return  # already gone: deleting is idempotent
            if _is_status(exc, 409) and uid:
                # The name now belongs to a newer object: the one we meant is gone already.
                log.info("ImageCache %s was replaced since it was observed; left alone", name)
                return
            raise translate(exc, what=f"delete ImageCache {name!r}") from exc

    # ----------------------------------------------------------------- reads

    def _get(self, name: str) -> Json | None:
        try:
            return self._call(self._custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if _is_status(exc, 404):
                return None
            raise translate(exc, what=f"read ImageCache {name!r}") from exc

    def _current(self, name: str) -> Written | Json | None:
        """What gitsync wrote to `name`, as the last observe saw it (else read now)."""
        with self._lock:
            seen = self._seen.get(name)
        return seen.written if seen is not None else self._get(name)

    def _uid(self, name: str) -> str | None:
        with self._lock:
            seen = self._seen.get(name)
        if seen is not None:
            return seen.uid
        current = self._get(name)
        return str((current.get("metadata") or {}).get("uid")) if current is not None else None

    def _check_ours(self, obj: Json, name: str, *, owner: str) -> None:
        found = owner_of(obj)
        if found != owner:
            holder = "no gitsync owner label" if found is None else f"owner {found!r}"
            raise PermanentError(
                f"an ImageCache named {name!r} already exists with {holder}; controller"
                f" {owner!r} will not create, change or delete it. Delete that object"
                " (kubectl delete imc " + name + ") or rename the spec in Git"
            )

    def _events_by_object(self) -> dict[str, list[CacheEvent]]:
        """Events of every ImageCache, by involvedObject.uid, from one paged list."""
        try:
            items = self._list_all(
                self._core.list_event_for_all_namespaces,
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

    def _list_all(
        self, method: Callable[..., Any], *args: Any, what: str, **kwargs: Any
    ) -> list[Json]:
        """Every item of a paginated list; an expired continue token restarts the list once."""
        restarted = False
        while True:
            items: list[Json] = []
            token: str | None = None
            try:
                while True:
                    page_args = dict(kwargs, limit=self._page_size)
                    if token:
                        page_args["_continue"] = token
                    page = self._call(method, *args, **page_args)
                    items.extend(page.get("items") or [])
                    token = (page.get("metadata") or {}).get("continue") or None
                    if not token:
                        return items
            except ApiException as exc:
                if _is_status(exc, 410) and token and not restarted:
                    restarted = True  # the list was too slow for the server's snapshot
                    continue
                if _is_status(exc, 404) and method == self._custom.list_cluster_custom_object:
                    raise PermanentError(
                        f"{what}: the API server does not serve {PLURAL}.{GROUP}/{VERSION};"
                        " install the imc-operator add-on (or manifests/crd-imagecache.yaml)"
                    ) from exc
                raise translate(exc, what=what) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise translate(exc, what=what) from exc

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        """One API call, decoded as JSON without building the client's model objects."""
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self._timeout, **kwargs
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what=getattr(method, "__name__", "Kubernetes API call")) from exc
        try:
            data = json.loads(response.data or b"{}")
        finally:
            response.release_conn()
        return data if isinstance(data, dict) else {}

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


def _names_apply(exc: ApiException) -> bool:
    """A 400/404/405 only means 'cannot apply' when it names the patch type; 415 always does."""
    if exc.status == 415:
        return True
    text = f"{exc.reason} {exc.body}".lower()
    return "apply" in text or "patch type" in text or "media type" in text


# ---------------------------------------------------------------- pull secrets


class ClusterPullSecrets:
    """Pull secrets (`namespace/name`) read from the API, for the local backend.

    The same rules as files in `--secrets-dir` (see `providers.local.auth`):
    type `kubernetes.io/dockerconfigjson` (or the legacy `dockercfg`); a
    missing secret raises `PullSecretNotFoundError`, which the local backend
    reports as a Warning and pulls without it, as the kubelet does.
    """

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._timeout = request_timeout

    def load(self, name: str) -> CredentialStore:
        namespace, secret = split_secret_name(name)
        where = f"pull secret {name} (Secret {namespace}/{secret} in the cluster)"
        try:
            # Raw JSON: the model's type says V1Secret, but _preload_content=False returns
            # the HTTP response.
            response: Any = self._core.read_namespaced_secret(
                secret, namespace, _preload_content=False, _request_timeout=self._timeout
            )
            try:
                document = json.loads(response.data or b"{}")
            finally:
                response.release_conn()
        except ApiException as exc:
            if _is_status(exc, 404):
                raise PullSecretNotFoundError(
                    f"pull secret {name!r} not found: no Secret {secret} in namespace {namespace}"
                ) from exc
            if _is_status(exc, 401, 403):
                raise CredentialError(
                    f"{where}: the API server refused to read it (HTTP {exc.status}); grant"
                    f" 'get' on secrets in namespace {namespace}"
                    " (manifests/components/pull-secrets)"
                ) from exc
            raise translate(exc, what=f"read {where}") from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise translate(exc, what=f"read {where}") from exc
        return credentials_from_secret(document, where=where)

    def load_all(self, names: Iterable[str]) -> CredentialStore:
        """Several secrets, the first named winning on equal matches."""
        return CredentialStore().merged(*(self.load(n) for n in names))

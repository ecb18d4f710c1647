"""Which parts of an ImageCache are gitsync's, and the bodies it writes: pure, no API calls.

Kept apart from the client so that the rules can be read, and tested, as
data in and data out.

Ownership
---------
Every object gitsync writes carries two labels::

    app.kubernetes.io/managed-by: gitsync
    gitsync.io/owner: <controller id>

`gitsync.io/prune: disabled` travels as an annotation on the object, so
`ObservedCache.prune` reflects it after the spec has left Git. A spec that
sets one of gitsync's own labels, or `gitsync.io/applied-metadata` (below),
is refused with a `PermanentError` naming the key: such a key could never
equal Git.

Which labels and annotations are gitsync's is read from the object's
`metadata.managedFields`: the keys under `f:metadata/f:labels` and
`f:metadata/f:annotations` of the entries of manager `gitsync`. Only those
are reported as the cache's labels and annotations (`Written`), so a key
someone else added is never a difference from Git and never removed; a key
of Git's that someone else overwrote belongs to them until gitsync's next
apply takes it back, and is reported missing until then.

A merge patch owns nothing, so the merge-patch fallback (see `writes`)
keeps its own record, `gitsync.io/applied-metadata: {"annotations":[...],
"labels":[...]}` (the user keys it wrote, as kubectl's
last-applied-configuration does), and sends explicit nulls for the keys
recorded (or owned by gitsync in managedFields) that Git dropped, for the
prune annotation and the optional spec lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitsync.errors import ConfigError, PermanentError
from gitsync.model import (
    API_VERSION,
    APPLIED_METADATA_ANNOTATION,
    KIND,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    CacheSpec,
)

FIELD_MANAGER = "gitsync"
MANAGED_BY_VALUE = "gitsync"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# The merge-patch fallback's record of the user label and annotation keys it wrote from Git
# (JSON: {"annotations": [...], "labels": [...]}), so that it can remove one Git drops, as
# kubectl's last-applied-configuration does. Server-side apply keeps that record itself.
APPLIED_ANNOTATION = APPLIED_METADATA_ANNOTATION
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Metadata gitsync keeps for itself: never reported as a label or annotation from Git.
OWN_LABELS = frozenset({MANAGED_BY_LABEL, OWNER_LABEL})
OWN_ANNOTATIONS = frozenset({PRUNE_ANNOTATION, APPLIED_ANNOTATION, LAST_APPLIED_ANNOTATION})

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")

Json = dict[str, Any]
FieldPath = tuple[str, ...]  # ("metadata", "labels", "team"), ("spec", "imagePullSecrets")
_LABELS: FieldPath = ("metadata", "labels")
_ANNOTATIONS: FieldPath = ("metadata", "annotations")
_REQUIRED_SPEC = frozenset({"images", "imageCacheSize", "retentionDays"})  # always sent


def owner_of(obj: Mapping[str, Any]) -> str | None:
    labels = obj.get("metadata", {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    owner = labels.get(OWNER_LABEL)
    return str(owner) if owner else None


def check_ours(obj: Json, name: str, *, owner: str) -> None:
    """Refuse to touch an object of that name that controller `owner` did not write."""
    found = owner_of(obj)
    if found != owner:
        holder = "no gitsync owner label" if found is None else f"owner {found!r}"
        raise PermanentError(
            f"an ImageCache named {name!r} already exists with {holder}; controller"
            f" {owner!r} will not create, change or delete it. Delete that object"
            " (kubectl delete imc " + name + ") or rename the spec in Git"
        )


def check_owner_id(owner: str) -> None:
    if not owner or not _LABEL_VALUE.fullmatch(owner):
        raise ConfigError(
            f"controller id {owner!r} cannot be the value of label {OWNER_LABEL}: use at most"
            " 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )


def check_reserved(spec: CacheSpec) -> None:
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


# ------------------------------------------------------------- managedFields


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


# ------------------------------------------------------------------ bodies


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


def merge_patch_body(spec: CacheSpec, *, owner: str, before: Written) -> Json:
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

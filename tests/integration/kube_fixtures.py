"""A Kubernetes API server for tests: kmock's HTTP scaffold plus the stateful parts it lacks.

No API server can run on these machines, so the Kubernetes tests talk, with
the real `kubernetes` client over real HTTP, to kmock (by nolar, the kopf
author). kmock 0.8 gives the server, request parsing, Status error bodies,
API discovery, the request log (`api.requests`) and the reaction DSL used to
inject faults (`api[kmock.method.PATCH] << 415`). Its `KubernetesEmulator`
stores objects, but as plain merged dicts: lists ignore `labelSelector`,
`limit` and `continue`; objects get no `resourceVersion`, `uid` or
`creationTimestamp`; a watch replays every object as ADDED instead of
resuming from a `resourceVersion`, and never answers 410 Gone; PATCH is a
dict merge whatever the content type (no server-side apply, no field
managers); PUT is not routed at all.

So `KubeAPI` keeps kmock's scaffold (`KubernetesScaffold`) and replaces the
emulator's store with the smallest faithful subset the gitsync code uses:

- one resourceVersion counter for the cluster, `uid`, `creationTimestamp`,
  `generation` (bumped when `.spec` changes);
- lists with `labelSelector` (=, ==, !=, exists, !exists, in, notin),
  `fieldSelector` (=, ==, != over dotted paths), `limit`/`continue`, and 410
  Expired for a continue token older than the compacted history;
- watches from `resourceVersion` (replaying history after it), synthetic ADDED
  events for a watch without one, `timeoutSeconds`, and an ERROR event with
  410 Gone when the version was compacted away (`compact()`);
- POST create (409 AlreadyExists; `generateName`; 422 without a name, 400
  when the body names another namespace than the URL), PUT replace with the optimistic
  `metadata.resourceVersion` check (409 Conflict), DELETE with `preconditions`
  and finalizers;
- PATCH as JSON merge patch (merge-patch and strategic-merge-patch, which for
  the maps gitsync sends are the same), and server-side apply
  (`application/apply-patch+yaml`, `fieldManager`, `force`);
- field ownership as the API server's field manager (structured-merge-diff)
  keeps it, per manager, operation (Apply or Update) and subresource, and
  renders it as `metadata.managedFields` (FieldsV1, with `time`,
  `subresource`, and the `.` of a map an Update added). Every write but an
  apply is an Update: the writer takes the fields whose value it changed or
  added, from every other manager, and a removed field leaves every set. An
  apply owns exactly the fields it sends (sharing those another manager owns
  with the same value); a field the applier sent before and omits now is
  removed from the object unless another manager owns it too; changing a
  field another manager owns is a 409 Conflict naming each field (`Apply
  failed with 1 conflict: conflict with "kubectl-label" using …:
  .metadata.labels.team`) unless `force=true`, which takes it over. Without
  `fieldManager` a write's manager is its User-Agent up to the first `/`, as
  the real server names it (`managed_fields = False` hides them all, as
  servers before Kubernetes 1.18 did; `apply_supported = False` answers an
  apply 415, as servers without server-side apply or some proxies do);
- the `status` subresource for resources declared with one: writes to the
  main resource leave `.status` alone, writes to `/status` change only it;
- admission (`kube_validation`): every object is pruned, defaulted and
  validated before it is stored, ImageCaches against the CRD users install
  (`manifests/crd-imagecache.yaml`), which also gives their names, scope and
  subresource here, core/v1 Events against the server's Event rules (decoding
  400s, the namespace of their involvedObject, the fields an `eventTime`
  Event needs); invalid objects get the real server's 422 `Invalid`.

Everything runs on kmock's asyncio loop in one background thread
(`KubeServer`), so the synchronous code under test sees an ordinary server on
127.0.0.1 with a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import kubernetes.client
import yaml
from kube_validation import Admission, Cause, invalid, load_crd

Resource = tuple[str, str]  # (group, plural); one version per resource here
ObjKey = tuple[str, str, str | None, str]  # group, plural, namespace, name
FieldPath = tuple[str, ...]
Owner = tuple[str, str, str]  # (manager, operation, subresource or "")

IMAGECACHE = load_crd()  # the CRD users install: names, scope, subresource and schema
KINDS: dict[Resource, tuple[str, str, bool, bool]] = {
    # (group, plural): (apiVersion, kind, namespaced, has status subresource)
    (IMAGECACHE.group, IMAGECACHE.plural): (
        IMAGECACHE.api_version,
        IMAGECACHE.kind,
        IMAGECACHE.namespaced,
        IMAGECACHE.has_status,
    ),
    ("", "pods"): ("v1", "Pod", True, True),
    ("", "events"): ("v1", "Event", True, False),
    ("", "secrets"): ("v1", "Secret", True, False),
    ("", "namespaces"): ("v1", "Namespace", False, True),
    ("coordination.k8s.io", "leases"): ("coordination.k8s.io/v1", "Lease", True, False),
}
IDENTITY_PATHS = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
)
UNTRACKED_META = {(f,) for f in (*SERVER_METADATA, "selfLink")}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _err(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


# ----------------------------------------------------------------- selectors


_REQUIREMENT = re.compile(
    r"\s*(?:(?P<notexists>!)\s*(?P<nkey>[^\s,!=()]+)"
    r"|(?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """The label selector grammar of the API server (equality- and set-based)."""
    position = 0
    selector = selector.strip()
    while position < len(selector):
        match = _REQUIREMENT.match(selector, position)
        if match is None or match.end() == position:
            raise _err(400, "BadRequest", f"unable to parse requirement in {selector!r}")
        position = match.end()
        if match["notexists"]:
            if match["nkey"] in labels:
                return False
        elif match["op"]:
            equal = labels.get(match["key"]) == match["value"]
            if equal != (match["op"] != "!="):
                return False
        elif match["setop"]:
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            inside = labels.get(match["key"]) in values
            if match["setop"] == "in" and not inside:
                return False
            if match["setop"] == "notin" and match["key"] in labels and inside:
                return False
        elif match["key"] not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """`a.b=v,c!=w` over dotted paths, as the API server supports for the common fields."""
    for requirement in filter(None, (r.strip() for r in selector.split(","))):
        negate = "!=" in requirement
        path, _, value = re.split(r"(!=|==|=)", requirement, maxsplit=1)
        current: Any = obj
        for part in path.strip().split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        equal = ("" if current is None else str(current)) == value.strip()
        if equal == negate:
            return False
    return True


# --------------------------------------------------------- field ownership


def _leaf_paths(obj: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """Maps are descended into; scalars, lists (atomic) and empty maps are leaves."""
    paths: set[FieldPath] = set()
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            paths |= _leaf_paths(value, (*prefix, key))
        else:
            paths.add((*prefix, key))
    return paths


def _map_paths(obj: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """Non-empty maps below the top-level fields (`metadata.labels`): what an Update owns as `.`."""
    paths: set[FieldPath] = set()
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            if prefix:
                paths.add((*prefix, key))
            paths |= _map_paths(value, (*prefix, key))
    return paths


_MISSING = object()


def _get(obj: Mapping[str, Any], path: FieldPath, default: Any = None) -> Any:
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return default
        current = current[part]
    return current


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    current = obj
    for part in path[:-1]:
        child = current.get(part)
        if not isinstance(child, dict):
            child = current[part] = {}
        current = child
    current[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: FieldPath) -> None:
    parents: list[tuple[dict[str, Any], str]] = []
    current: Any = obj
    for part in path[:-1]:
        if not isinstance(current, dict) or part not in current:
            return
        parents.append((current, part))
        current = current[part]
    if isinstance(current, dict):
        current.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps the removal emptied
        if parent[key] == {}:
            del parent[key]


def _tracked(paths: set[FieldPath]) -> set[FieldPath]:
    """Without the fields the field manager never records: identity and server-set metadata."""
    return {
        p
        for p in paths
        if p not in IDENTITY_PATHS and not (p[:1] == ("metadata",) and p[1:2] in UNTRACKED_META)
    }


def _changes(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[set[FieldPath], set[FieldPath]]:
    """(modified or added, removed) fields between two versions of an object.

    structured-merge-diff's comparison: leaves whose value differs or that are
    new, maps that are new (the `.` an Update owns), and what is gone.
    """
    changed = {
        p
        for p in _leaf_paths(new)
        if _get(old, p, _MISSING) is _MISSING
        or (
            _get(old, p) != _get(new, p)
            and not (_get(new, p) == {} and isinstance(_get(old, p), Mapping))  # still a map
        )
    }
    changed |= {p for p in _map_paths(new) if not isinstance(_get(old, p), Mapping)}
    removed = {p for p in _leaf_paths(old) | _map_paths(old) if _get(new, p, _MISSING) is _MISSING}
    return _tracked(changed), _tracked(removed)


def _fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    """A set of paths as FieldsV1: `f:name` per step, `.` for a map owned beside its members."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    owned_maps = {p for p in paths if any(q[: len(p)] == p and q != p for q in paths)}
    for path in owned_maps:
        node = tree
        for part in path:
            node = node[f"f:{part}"]
        node["."] = {}
    return tree


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ------------------------------------------------------------------- store


@dataclass
class Stored:
    obj: dict[str, Any]
    owners: dict[Owner, set[FieldPath]] = field(default_factory=dict)
    times: dict[Owner, str] = field(default_factory=dict)  # each manager's last write

    def update_owners(self, me: Owner, *, changed: set[FieldPath], removed: set[FieldPath]) -> None:
        """An Update by `me`: it takes what it changed, from everyone; removed fields leave."""
        for owner in list(self.owners):
            if owner != me:
                self.owners[owner] = self.owners[owner] - changed - removed
        self.owners[me] = (self.owners.get(me, set()) | changed) - removed
        self.times[me] = _now()
        self.drop_empty()

    def drop_empty(self) -> None:
        for owner in [o for o, paths in self.owners.items() if not paths]:
            del self.owners[owner]
            self.times.pop(owner, None)


@dataclass(frozen=True)
class HistoryEntry:
    """One committed write, as watches replay it; `at` is when (time.monotonic, this process)."""

    rv: int
    resource: Resource
    type: str
    obj: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class KubeAPI(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold with a faithful in-memory store (see the module docstring)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.objects: dict[ObjKey, Stored] = {}
        self.history: list[HistoryEntry] = []
        self.rv = 100
        self.compacted_rv = 100  # versions at or below this are gone (410)
        self.apply_supported = True
        # False: a server older than managed fields (Kubernetes < 1.18), which never shows them.
        self.managed_fields = True
        self.lock = threading.RLock()  # tests read the store from their own thread
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._disconnect_generation = 0
        # Called with each request before the store serves it (to compact history at a chosen
        # moment, say); kmock's own reactions answer instead of the store, these run alongside.
        self.before: list[Callable[[kmock.Request], None]] = []
        self.admission = {
            resource: Admission(
                kind=kind,
                group=resource[0],
                schema=IMAGECACHE.schema
                if resource == (IMAGECACHE.group, IMAGECACHE.plural)
                else None,
            )
            for resource, (_, kind, _, _) in KINDS.items()
        }
        for group, plural in KINDS:
            self.resources[f"{group}/v1/{plural}" if group else f"v1/{plural}"] = {
                "namespaced": KINDS[(group, plural)][2],
                "kind": KINDS[(group, plural)][1],
                "singular": plural.rstrip("s"),
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                "shortnames": list(IMAGECACHE.short_names) if plural == IMAGECACHE.plural else [],
                "categories": [],
                "subresources": ["status"] if KINDS[(group, plural)][3] else [],
            }
        self.fallback[kmock.action.LIST] << self._serve_list
        self.fallback[kmock.action.WATCH] << self._serve_watch
        self.fallback[kmock.action.FETCH] << self._serve_fetch
        self.fallback[kmock.action.CREATE] << self._serve_create
        self.fallback[kmock.action.UPDATE] << self._serve_patch
        self.fallback[kmock.action.DELETE] << self._serve_delete
        self.fallback[kmock.method.PUT] << self._serve_put

    # ------------------------------------------------------------ test API

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            stored = self.objects.get((group, plural, namespace, name))
            if stored is None:
                raise KeyError(f"{group}/{plural} {namespace}/{name}")
            return self._render(stored)

    def names(self, group: str, plural: str) -> set[str]:
        with self.lock:
            return {k[3] for k in self.objects if k[:2] == (group, plural)}

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: every version handed out so far answers
        410 Gone (the revision moves on by one, as it would with the next write)."""
        with self.lock:
            self.compacted_rv = self._next_rv()
            self.history.clear()

    def disconnect_watches(self) -> None:
        """End every open watch stream (a server restart or a load balancer timeout)."""
        with self.lock:
            self._disconnect_generation += 1
        self._notify_threadsafe()

    def _notify_threadsafe(self) -> None:
        if self.loop is not None and self._changed is not None:
            asyncio.run_coroutine_threadsafe(self._notify(), self.loop).result(timeout=5)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # -------------------------------------------------------------- helpers

    def _resource(self, request: kmock.Request) -> Resource:
        for hook in list(self.before):
            hook(request)
        assert request.resource is not None
        resource = (request.resource.group or "", request.resource.plural or "")
        if resource not in KINDS:
            raise _err(404, "NotFound", f"the server could not find the resource {resource}")
        return resource

    @staticmethod
    def _header(request: kmock.Request, name: str) -> str:
        for key, value in request.headers.items():
            if key.lower() == name.lower():
                return str(value)
        return ""

    def _writer(self, request: kmock.Request, operation: str) -> Owner:
        """Who writes: `fieldManager`, else the User-Agent up to its first `/` (as servers do)."""
        manager = request.params.get("fieldManager") or (
            self._header(request, "User-Agent").split("/")[0] or "unknown"
        )
        return (manager, operation, request.subresource or "")

    def _body(self, request: kmock.Request) -> dict[str, Any]:
        content_type = self._header(request, "Content-Type").split(";")[0].strip()
        try:
            if content_type.endswith("yaml"):
                data = yaml.safe_load(request.text)
            else:
                data = json.loads(request.text) if request.text else None
        except (ValueError, yaml.YAMLError) as exc:
            raise _err(400, "BadRequest", f"cannot decode the body: {exc}") from exc
        if not isinstance(data, dict):
            raise _err(400, "BadRequest", "the body must be an object")
        return data

    def _admit(
        self, request: kmock.Request, resource: Resource, obj: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The object as the API server would store it: pruned, defaulted, or a 400/422."""
        strict = request.params.get("fieldValidation") == "Strict"
        return self.admission[resource].admit(obj, strict=strict)

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, resource: Resource, type_: str, obj: dict[str, Any]) -> None:
        self.history.append(HistoryEntry(self.rv, resource, type_, copy.deepcopy(obj)))

    def _render(self, stored: Stored) -> dict[str, Any]:
        obj = copy.deepcopy(stored.obj)
        managed = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": obj.get("apiVersion", ""),
                "time": stored.times.get((manager, operation, subresource), ""),
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(paths),
                **({"subresource": subresource} if subresource else {}),
            }
            for (manager, operation, subresource), paths in sorted(stored.owners.items())
            if paths
        ]
        if managed and self.managed_fields:
            obj.setdefault("metadata", {})["managedFields"] = managed
        return obj

    def _key(self, request: kmock.Request, name: str | None = None) -> ObjKey:
        group, plural = self._resource(request)
        namespaced = KINDS[(group, plural)][2]
        object_name = name or request.name
        if not object_name:
            raise _err(400, "BadRequest", "the object has no metadata.name")
        return (group, plural, request.namespace if namespaced else None, object_name)

    def _touch(self, stored: Stored, *, before: Mapping[str, Any] | None) -> None:
        meta = stored.obj.setdefault("metadata", {})
        if before is not None and before.get("spec") != stored.obj.get("spec"):
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["resourceVersion"] = str(self._next_rv())

    async def _changed_now(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ handlers

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        key = self._key(request)
        with self.lock:
            stored = self.objects.get(key)
            if stored is None:
                raise _err(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            return self._render(stored)

    def _select(self, request: kmock.Request) -> list[tuple[ObjKey, Stored]]:
        group, plural = self._resource(request)
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        chosen = []
        for key, stored in sorted(self.objects.items(), key=lambda kv: (kv[0][2] or "", kv[0][3])):
            if key[:2] != (group, plural):
                continue
            if request.namespace is not None and key[2] != request.namespace:
                continue
            if labels and not label_selector_matches(
                labels, stored.obj.get("metadata", {}).get("labels") or {}
            ):
                continue
            if fields and not field_selector_matches(fields, stored.obj):
                continue
            chosen.append((key, stored))
        return chosen

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        group, plural = self._resource(request)
        with self.lock:
            items = self._select(request)
            list_rv = self.rv
            token = request.params.get("continue")
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token.encode()))
                    list_rv, after = int(state["rv"]), tuple(state["after"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise _err(400, "BadRequest", "invalid continue token") from exc
                if list_rv < self.compacted_rv:
                    raise _err(
                        410, "Expired", "The provided continue parameter is too old to display"
                    )
                items = [(k, s) for k, s in items if ((k[2] or ""), k[3]) > after]
            limit = int(request.params.get("limit") or 0)
            metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
            if limit and len(items) > limit:
                last = items[limit - 1][0]
                items = items[:limit]
                metadata["continue"] = base64.urlsafe_b64encode(
                    json.dumps({"rv": list_rv, "after": [last[2] or "", last[3]]}).encode()
                ).decode()
            api_version, kind, _, _ = KINDS[(group, plural)]
            return {
                "apiVersion": api_version,
                "kind": f"{kind}List",
                "metadata": metadata,
                "items": [self._render(s) for _, s in items],
            }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        if self._changed is None:
            self._changed = asyncio.Condition()
        self.loop = asyncio.get_running_loop()
        resource = self._resource(request)
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        deadline = asyncio.get_running_loop().time() + timeout
        since = request.params.get("resourceVersion") or ""
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        with self.lock:
            generation = self._disconnect_generation
        yield b""  # send the headers now: a real watch starts streaming at once

        def wanted(entry: HistoryEntry) -> bool:
            meta = entry.obj.get("metadata", {})
            if entry.resource != resource:
                return False
            if KINDS[resource][2] and request.namespace not in (None, meta.get("namespace")):
                return False
            if labels and not label_selector_matches(labels, meta.get("labels") or {}):
                return False
            return not fields or field_selector_matches(fields, entry.obj)

        with self.lock:
            if since in ("", "0"):
                start = self.rv
                initial = [
                    {"type": "ADDED", "object": self._render(s)} for _, s in self._select(request)
                ]
            elif int(since) < self.compacted_rv:
                initial = [
                    {
                        "type": "ERROR",
                        "object": {
                            "apiVersion": "v1",
                            "kind": "Status",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({self.compacted_rv})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                ]
                start = -1
            else:
                start = int(since)
                initial = []
        for event in initial:
            yield event
        if start < 0:
            return
        position = start
        while True:
            with self.lock:
                pending = [e for e in self.history if e.rv > position and wanted(e)]
                if self.history:
                    position = max(position, self.history[-1].rv)
                stop = self._disconnect_generation != generation
            for entry in pending:
                yield {"type": entry.type, "object": entry.obj}
            if stop:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))

    async def _serve_create(self, request: kmock.Request) -> dict[str, Any]:
        resource = self._resource(request)
        body = self._body(request)
        api_version, kind, namespaced, _ = KINDS[resource]
        meta_in = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if namespaced and meta_in.get("namespace") not in (None, "", request.namespace):
            raise _err(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the"
                " request",
            )
        name = meta_in.get("name") or ""
        if not name and meta_in.get("generateName"):
            # The server's name generator: the prefix and five random characters.
            name = meta_in["generateName"] + "".join(
                random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
            body = {**body, "metadata": {**meta_in, "name": name}}
        if not name:
            raise invalid(
                kind=kind,
                group=resource[0],
                name="",
                causes=[
                    Cause(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        key = self._key(request, name=name)
        with self.lock:
            if key in self.objects:
                raise _err(409, "AlreadyExists", f'{resource[1]} "{key[3]}" already exists')
            obj = copy.deepcopy(body)
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            meta = obj.setdefault("metadata", {})
            for server_field in SERVER_METADATA:
                meta.pop(server_field, None)
            if namespaced:
                meta["namespace"] = key[2]
            obj = self._admit(request, resource, obj)
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            stored = Stored(obj)
            changed, _ = _changes({}, obj)
            stored.update_owners(self._writer(request, "Update"), changed=changed, removed=set())
            self._touch(stored, before=None)
            self.objects[key] = stored
            self._record(resource, "ADDED", self._render(stored))
            rendered = self._render(stored)
        await self._changed_now()
        return rendered

    async def _serve_put(self, request: kmock.Request) -> dict[str, Any]:
        resource = self._resource(request)
        body = self._body(request)
        key = self._key(request)
        with self.lock:
            stored = self.objects.get(key)
            if stored is None:
                raise _err(404, "NotFound", f'{resource[1]} "{key[3]}" not found')
            current_rv = stored.obj["metadata"]["resourceVersion"]
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if sent_rv is not None and sent_rv != current_rv:
                raise _err(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource[1]} "{key[3]}": the object has'
                    " been modified; please apply your changes to the latest version and try again",
                )
            before = copy.deepcopy(stored.obj)
            new = copy.deepcopy(body)
            meta = new.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "generation", "namespace", "name"):
                if kept in before["metadata"]:
                    meta[kept] = before["metadata"][kept]
            meta.pop("managedFields", None)
            if KINDS[resource][3]:
                new.pop("status", None)
                if "status" in before:
                    new["status"] = before["status"]
            stored.obj = self._admit(request, resource, new)
            changed, removed = _changes(before, stored.obj)
            stored.update_owners(self._writer(request, "Update"), changed=changed, removed=removed)
            self._touch(stored, before=before)
            self._record(resource, "MODIFIED", self._render(stored))
            rendered = self._render(stored)
        await self._changed_now()
        return rendered

    async def _serve_patch(self, request: kmock.Request) -> dict[str, Any]:
        resource = self._resource(request)
        content_type = self._header(request, "Content-Type").split(";")[0].strip()
        key = self._key(request)
        body = self._body(request)
        with self.lock:
            if content_type == "application/apply-patch+yaml":
                if not self.apply_supported:
                    raise _err(
                        415,
                        "UnsupportedMediaType",
                        f"the media type {content_type!r} is not supported",
                    )
                rendered = self._apply(request, resource, key, body)
            elif content_type in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                rendered = self._merge(request, resource, key, body)
            else:
                raise _err(
                    415, "UnsupportedMediaType", f"the media type {content_type!r} is not supported"
                )
        await self._changed_now()
        return rendered

    def _merge(
        self, request: kmock.Request, resource: Resource, key: ObjKey, body: dict[str, Any]
    ) -> dict[str, Any]:
        stored = self.objects.get(key)
        if stored is None:
            raise _err(404, "NotFound", f'{resource[1]} "{key[3]}" not found')
        before = copy.deepcopy(stored.obj)
        if request.subresource == "status":
            body = {"status": body.get("status")}
        elif KINDS[resource][3]:
            body = {k: v for k, v in body.items() if k != "status"}
        body.get("metadata", {}).pop("managedFields", None)
        stored.obj = self._admit(request, resource, merge_patch(stored.obj, body))
        changed, removed = _changes(before, stored.obj)
        stored.update_owners(self._writer(request, "Update"), changed=changed, removed=removed)
        self._touch(stored, before=before)
        self._record(resource, "MODIFIED", self._render(stored))
        return self._render(stored)

    def _apply(
        self, request: kmock.Request, resource: Resource, key: ObjKey, config: dict[str, Any]
    ) -> dict[str, Any]:
        manager = request.params.get("fieldManager")
        if not manager:
            raise _err(400, "BadRequest", "PATCH requests with apply-patch require a fieldManager")
        force = request.params.get("force") == "true"
        if KINDS[resource][3] and request.subresource != "status":
            config = {k: v for k, v in config.items() if k != "status"}
        meta = config.get("metadata", {})
        if meta.get("name") not in (None, key[3]):
            raise _err(400, "BadRequest", "metadata.name does not match the URL")
        # Fields the schema does not declare are dropped before ownership is worked out.
        strict = request.params.get("fieldValidation") == "Strict"
        config = self.admission[resource].prune(config, strict=strict)
        applied = _tracked(_leaf_paths(config))
        me: Owner = (manager, "Apply", request.subresource or "")
        stored = self.objects.get(key)
        if stored is None:
            return self._apply_create(
                request, resource, key=key, config=config, applied=applied, me=me
            )
        sent_rv = meta.get("resourceVersion")
        if sent_rv is not None and sent_rv != stored.obj["metadata"]["resourceVersion"]:
            raise _err(409, "Conflict", "the object has been modified")
        # structured-merge-diff's Apply: merge the configuration in, remove what this manager
        # applied before and no longer sends unless someone else owns it too, then compare.
        before = copy.deepcopy(stored.obj)
        new = copy.deepcopy(stored.obj)  # changed and admitted before anything is stored
        others = [(o, paths) for o, paths in stored.owners.items() if o != me]
        still_owned = set().union(*(paths for _, paths in others)) | applied
        for path in stored.owners.get(me, set()) - still_owned:
            _remove(new, path)
        for path in applied:
            value = _get(config, path)
            if value == {} and isinstance(_get(new, path), Mapping):
                continue  # an empty map merges into the one there: it does not empty it
            _set(new, path, value)
        new = self._admit(request, resource, new)
        changed, removed = _changes(before, new)
        conflicts = sorted(
            (self._manager_text(owner, stored), path)
            for owner, paths in others
            for path in paths & changed
        )
        if conflicts and not force:
            raise self._conflict(conflicts)
        for owner, paths in others:  # forced: the applier takes them; removed fields leave
            stored.owners[owner] = paths - changed - removed
        stored.owners[me] = set(applied)  # exactly what it sent, shared where values are equal
        stored.times[me] = _now()
        stored.drop_empty()
        stored.obj = new
        self._touch(stored, before=before)
        self._record(resource, "MODIFIED", self._render(stored))
        return self._render(stored)

    @staticmethod
    def _manager_text(owner: Owner, stored: Stored) -> str:
        """A manager as the server's conflict messages print it."""
        manager, operation, subresource = owner
        text = json.dumps(manager)
        if subresource:
            text += f" with subresource {json.dumps(subresource)}"
        if operation == "Update":
            text += f" using {stored.obj.get('apiVersion', '')}"
            if stored.times.get(owner):
                text += f" at {stored.times[owner]}"
        return text

    @staticmethod
    def _conflict(conflicts: list[tuple[str, FieldPath]]) -> kmock.KubernetesError:
        """The 409 of an apply that would change others' fields: one cause per field."""
        causes = [
            {
                "type": "FieldManagerConflict",
                "message": f"conflict with {manager}",
                "field": "".join(f".{part}" for part in path),
            }
            for manager, path in conflicts
        ]
        if len(conflicts) == 1:
            message = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
        else:
            lines: list[str] = []
            for manager in sorted({m for m, _ in conflicts}):
                lines.append(f"conflicts with {manager}:")
                lines += [
                    f"- {cause['field']}"
                    for (owner, _), cause in zip(conflicts, causes, strict=True)
                    if owner == manager
                ]
            message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
        return kmock.KubernetesError(
            status=409, reason="Conflict", message=message, details={"causes": causes}
        )

    def _apply_create(
        self,
        request: kmock.Request,
        resource: Resource,
        *,
        key: ObjKey,
        config: dict[str, Any],
        applied: set[FieldPath],
        me: Owner,
    ) -> dict[str, Any]:
        """Apply to an absent object creates it, owned by the applier."""
        api_version, kind, namespaced, _ = KINDS[resource]
        obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
        for path in applied:
            _set(obj, path, _get(config, path))
        obj["metadata"].update(
            name=key[3], uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1
        )
        if namespaced:
            obj["metadata"]["namespace"] = key[2]
        obj = self._admit(request, resource, obj)
        stored = Stored(obj, {me: set(applied)}, {me: _now()})
        stored.drop_empty()
        self._touch(stored, before=None)
        self.objects[key] = stored
        self._record(resource, "ADDED", self._render(stored))
        return self._render(stored)

    async def _serve_delete(self, request: kmock.Request) -> dict[str, Any]:
        resource = self._resource(request)
        key = self._key(request)
        try:
            body = self._body(request) if request.text else {}
        except kmock.KubernetesError:
            body = {}
        with self.lock:
            stored = self.objects.get(key)
            if stored is None:
                raise _err(404, "NotFound", f'{resource[1]} "{key[3]}" not found')
            preconditions = body.get("preconditions") or {}
            meta = stored.obj["metadata"]
            if preconditions.get("uid") not in (None, meta["uid"]):
                raise _err(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {preconditions['uid']},"
                    f" UID in object meta: {meta['uid']}",
                )
            if preconditions.get("resourceVersion") not in (None, meta["resourceVersion"]):
                raise _err(409, "Conflict", "Precondition failed: resourceVersion")
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = _now()
                    self._touch(stored, before=None)
                    self._record(resource, "MODIFIED", self._render(stored))
                rendered = self._render(stored)
            else:
                del self.objects[key]
                meta["resourceVersion"] = str(self._next_rv())
                self._record(resource, "DELETED", self._render(stored))
                rendered = self._render(stored)
        await self._changed_now()
        return rendered

    def remove_finalizers(self, group: str, plural: str, namespace: str | None, name: str) -> None:
        """What the operator does when it has cleaned up: the object goes."""
        with self.lock:
            stored = self.objects[(group, plural, namespace, name)]
            stored.obj["metadata"].pop("finalizers", None)
            if stored.obj["metadata"].get("deletionTimestamp"):
                del self.objects[(group, plural, namespace, name)]
                stored.obj["metadata"]["resourceVersion"] = str(self._next_rv())
                self._record((group, plural), "DELETED", self._render(stored))
        self._notify_threadsafe()


# ------------------------------------------------------------------ server


class KubeServer:
    """Runs a `KubeAPI` on 127.0.0.1 (free port) in a background thread with its own loop."""

    def __init__(self, api: KubeAPI | None = None) -> None:
        self.api = api or KubeAPI()
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> KubeServer:
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the kmock server did not start within 10 s")
        if self._error is not None:
            raise RuntimeError("the kmock server failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.api.loop = self._loop
        self.api._changed = asyncio.Condition()  # created on the server's loop
        async with self.api, kmock.Server(self.api, host="127.0.0.1") as server:
            self.url = f"http://{server.host}:{server.port}"
            self._ready.set()
            await self._stop.wait()

    def client(self, *, user_agent: str = "gitsync-under-test") -> kubernetes.client.ApiClient:
        """A real `kubernetes` ApiClient pointed at this server.

        Tests give the code under test and their own stand-in for the operator
        different user agents, so `verbs()` can tell whose requests were whose.
        """
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        client = kubernetes.client.ApiClient(configuration)
        client.user_agent = user_agent
        return client

    def write_kubeconfig(self, path: Path, *, contexts: Mapping[str, str] | None = None) -> Path:
        """A kubeconfig whose context `emulator` points here (plus any `name: url` extras)."""
        clusters = {"emulator": self.url, **dict(contexts or {})}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": u}} for n, u in clusters.items()],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": n, "context": {"cluster": n, "user": "tester"}} for n in clusters
            ],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # ------------------------------------------------------ request counting

    def requests(self, *, user_agent: str | None = "gitsync-under-test") -> list[kmock.Request]:
        """Requests so far, in order; by default only those of the code under test."""
        return [
            r
            for r in self.api
            if user_agent is None or KubeAPI._header(r, "User-Agent") == user_agent
        ]

    def verbs(self, *, user_agent: str | None = "gitsync-under-test") -> list[tuple[str, str, str]]:
        """Requests so far as (apiGroup, resource, RBAC verb), in order."""
        return [
            v for v in (rbac_verb(r) for r in self.requests(user_agent=user_agent)) if v is not None
        ]

    def mark(self) -> int:
        """A position in the request log, to count the requests made after it."""
        return len(list(self.api))

    def requests_since(self, mark: int) -> list[kmock.Request]:
        return [
            r
            for r in list(self.api)[mark:]
            if KubeAPI._header(r, "User-Agent") == "gitsync-under-test"
        ]


def rbac_verb(request: kmock.Request) -> tuple[str, str, str] | None:
    """The (apiGroup, resource[/subresource], verb) RBAC authorises for one request."""
    if request.resource is None or request.resource.plural is None:
        return None
    group = request.resource.group or ""
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    method = str(request.method.value).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return (group, resource, verb)


def iter_stream_lines(response: Any) -> Iterator[dict[str, Any]]:
    """JSON lines of a streamed urllib3 response (a watch), for tests that read one raw."""
    buffer = b""
    for chunk in response.stream(4096, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


# ------------------------------------------------------------- the operator


class FakeOperator:
    """What the imc-operator and the kubelet write, through the API, as another client.

    Its requests carry the user agent `test-operator`, so the RBAC checks only
    look at what gitsync itself asked for.
    """

    GROUP = "eks.cloud.tencent.com"

    def __init__(self, server: KubeServer) -> None:
        self.server = server
        self.client = server.client(user_agent="test-operator")
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def close(self) -> None:
        self.client.close()

    def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            self.GROUP,
            "v1",
            "imagecaches",
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ).release_conn()

    def create_cache(self, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.custom.create_cluster_custom_object(
            self.GROUP, "v1", "imagecaches", dict(body), _preload_content=False
        )
        return dict(json.loads(response.data))

    def uid(self, name: str) -> str:
        return str(self.server.api.get(self.GROUP, "imagecaches", None, name)["metadata"]["uid"])

    def event(
        self,
        *,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        type_: str = "Normal",
        namespace: str = "default",
        count: int = 1,
        last: str = "2026-11-22T03:00:00Z",
    ) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved.get('name')}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message,
            "type": type_,
            "count": count,
            "firstTimestamp": last,
            "lastTimestamp": last,
            "source": {"component": "test-operator"},
        }
        self.core.create_namespaced_event(namespace, body, _preload_content=False).release_conn()

    def add_finalizer(self, name: str) -> None:
        self.custom.patch_cluster_custom_object(
            self.GROUP,
            "v1",
            "imagecaches",
            name,
            {"metadata": {"finalizers": ["eks.cloud.tencent.com/imagecache"]}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ).release_conn()

"""What the Kubernetes API server does to an object before storing it, for the test stand-in.

A stand-in that stores whatever it is sent lets a typo in an object the
provider writes (`imageCacheSzie`, a label value with a space, a name with a
capital) pass every test, and fail only on a real cluster. So the stand-in
(`kube_fixtures.KubeAPI`) passes each object it would store through
`Admission`, which does what the real server does, in the same order:

1. Pruning. Custom resources are pruned against the CRD's structural schema,
   loaded from `manifests/crd-imagecache.yaml` (the file users install):
   fields the schema does not declare are dropped, except under
   `x-kubernetes-preserve-unknown-fields: true`. `apiVersion`, `kind` and
   `metadata` are always kept, and `metadata` of every kind keeps only
   ObjectMeta's fields. With `?fieldValidation=Strict` a dropped field is a
   400 instead (`strict decoding error: unknown field "spec.x"`).
2. Defaulting: a property with a `default` that the object lacks is set,
   where its parent object exists.
3. Validation, answered with 422 and a Status of reason `Invalid` whose
   `details.causes` name each field, as the real server words them:
   `metadata.name` must be a DNS-1123 subdomain (kmock cannot route a
   Namespace create, whose stricter DNS-1123 label rule is therefore left
   out); label keys are qualified names (an optional DNS subdomain
   prefix and "/", then at most 63 characters, alphanumeric at both ends,
   `-_.` inside), label values at most 63 such characters or empty;
   annotation keys are qualified names and all annotations together at most
   256 KiB. A custom resource's values are checked against its
   openAPIV3Schema (types, enums, minimum/maximum, lengths, item counts,
   patterns, required) with `jsonschema`, after converting the OpenAPI
   subset to JSON Schema draft 4 (whose `exclusiveMinimum` is the same
   boolean). core/v1 Events get the server's Event rules instead of a schema
   (`event_causes`), after a decoding check of their typed fields that
   answers 400 as the server's JSON decoding does (`event_decode_problem`),
   and their names need only be valid path segments.

Not modelled: validation ratcheting, CEL rules, `x-kubernetes-embedded-resource`,
`x-kubernetes-int-or-string`, formats, and the deeper validation of built-in
kinds (a Pod's containers, say), which gitsync never writes.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import yaml

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd-imagecache.yaml"

OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
ALWAYS_KEPT = frozenset({"apiVersion", "kind", "metadata"})
ANNOTATIONS_MAX_BYTES = 256 * 1024

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + ")*"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex"
    f" used for validation is '{_DNS1123_SUBDOMAIN}')"
)
_NAME_PART_HELP = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
    " with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used"
    f" for validation is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_HELP = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or"
    " '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or"
    f" 'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
)


@dataclass(frozen=True)
class Cause:
    """One entry of a 422 Status's `details.causes`."""

    reason: str  # FieldValueInvalid, FieldValueRequired, ...
    field: str  # metadata.name, spec.images[0]
    message: str  # without the field: "Invalid value: ...", "Required value"

    def as_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


# ------------------------------------------------------------------ the CRD


@dataclass(frozen=True)
class CustomResource:
    """What the stand-in needs of one CRD: its names, scope, status subresource and schema."""

    group: str
    plural: str
    kind: str
    version: str
    namespaced: bool
    has_status: bool
    short_names: tuple[str, ...]
    schema: StructuralSchema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def load_crd(path: Path = CRD_PATH) -> CustomResource:
    """The CRD's storage version, as the API server would serve it once installed."""
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = crd["spec"]
    versions = [v for v in spec["versions"] if v.get("served") and v.get("storage")]
    if len(versions) != 1:
        raise ValueError(f"{path}: expected one served storage version, found {len(versions)}")
    version = versions[0]
    return CustomResource(
        group=spec["group"],
        plural=spec["names"]["plural"],
        kind=spec["names"]["kind"],
        version=version["name"],
        namespaced=spec["scope"] == "Namespaced",
        has_status="status" in (version.get("subresources") or {}),
        short_names=tuple(spec["names"].get("shortNames") or ()),
        schema=StructuralSchema(version["schema"]["openAPIV3Schema"]),
    )


class StructuralSchema:
    """An openAPIV3Schema: prunes, defaults and validates objects as the API server does."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        converted = _to_json_schema(schema)
        jsonschema.Draft4Validator.check_schema(converted)
        self._validator = jsonschema.Draft4Validator(converted)

    def prune(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A copy without the undeclared fields, and those fields' paths (`spec.x`)."""
        dropped: list[str] = []
        root = dict(self.schema)
        # apiVersion, kind and metadata are never pruned at the root (metadata separately).
        properties = dict(root.get("properties") or {})
        for name in ALWAYS_KEPT:
            properties.setdefault(name, {"x-kubernetes-preserve-unknown-fields": True})
        properties["metadata"] = {"x-kubernetes-preserve-unknown-fields": True}
        root["properties"] = properties
        pruned = _prune(obj, root, "", dropped)
        return pruned, dropped

    def default(self, obj: dict[str, Any]) -> None:
        _default(obj, self.schema)

    def causes(self, obj: Mapping[str, Any]) -> list[Cause]:
        found: list[Cause] = []
        for error in sorted(
            self._validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path]
        ):
            found.extend(_causes(error))
        return list(dict.fromkeys(found))  # the same cause once, in order


def _to_json_schema(schema: Any) -> Any:
    """The OpenAPI v3 subset a CRD uses, as JSON Schema draft 4."""
    if isinstance(schema, list):
        return [_to_json_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in (
            "default",
            "description",
            "example",
            "externalDocs",
            "nullable",
            "format",
        ):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            converted[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        else:
            converted[key] = _to_json_schema(value)
    if schema.get("nullable") and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def _prune(value: Any, schema: Mapping[str, Any] | None, path: str, dropped: list[str]) -> Any:
    if schema is None:
        return copy.deepcopy(value)
    if isinstance(value, list):
        items = schema.get("items")
        return [
            _prune(item, items if isinstance(items, Mapping) else None, f"{path}[{i}]", dropped)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, Mapping):
        return copy.deepcopy(value)
    properties: Mapping[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    kept: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in properties:
            kept[key] = _prune(item, properties[key], where, dropped)
        elif isinstance(additional, Mapping):
            kept[key] = _prune(item, additional, where, dropped)
        elif preserve or additional is True:
            kept[key] = copy.deepcopy(item)
        else:
            dropped.append(where)
    return kept


def _default(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default(item, schema["items"])
    if not isinstance(value, dict):
        return
    for key, sub in (schema.get("properties") or {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _default(value[key], sub)


def _field(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _quote(value: Any) -> str:
    """A value as the API server prints it in a message (Go's %q for strings)."""
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, bool) else str(value)


def _causes(error: jsonschema.ValidationError) -> Iterator[Cause]:
    field = _field(error.absolute_path)
    value, rule, limit = error.instance, error.validator, error.validator_value
    where = field or "<root>"
    if rule == "required":
        for name in limit:
            if isinstance(value, Mapping) and name not in value:
                yield Cause(
                    "FieldValueRequired", f"{field}.{name}" if field else name, "Required value"
                )
    elif rule == "type":
        got = _quote(_type_name(value))
        wanted = _type(limit)
        yield Cause(
            "FieldValueTypeInvalid",
            field,
            f"Invalid value: {got}: {where} in body must be of type {wanted}: {got}",
        )
    elif rule == "enum":
        supported = ", ".join(_quote(v) for v in limit)
        yield Cause(
            "FieldValueNotSupported",
            field,
            f"Unsupported value: {_quote(value)}: supported values: {supported}",
        )
    elif rule == "maxItems":
        yield Cause(
            "FieldValueTooMany", field, f"Too many: {len(value)}: must have at most {limit} items"
        )
    elif rule == "maxLength":
        yield Cause("FieldValueTooLong", field, f"Too long: may not be longer than {limit}")
    else:
        wording = {
            "minimum": f"should be greater than or equal to {limit}",
            "maximum": f"should be less than or equal to {limit}",
            "minItems": f"should have at least {limit} items",
            "minLength": f"should be at least {limit} chars long",
            "pattern": f"should match '{limit}'",
        }.get(str(rule), error.message)
        shown = len(value) if rule == "minItems" else value
        yield Cause(
            "FieldValueInvalid", field, f"Invalid value: {_quote(shown)}: {where} in body {wording}"
        )


def _type(limit: Any) -> str:
    return limit if isinstance(limit, str) else "/".join(t for t in limit if t != "null")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else "null"


# --------------------------------------------------------------- ObjectMeta


def _dns_subdomain(value: str) -> list[str]:
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not re.fullmatch(_DNS1123_SUBDOMAIN, value):
        problems.append(_SUBDOMAIN_HELP)
    return problems


def qualified_name_problems(key: str) -> list[str]:
    """Why `key` is not a qualified name (`prefix/name`, the prefix optional); [] if it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return ["prefix part must be non-empty"]
    if "/" in prefix:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must"
            " start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or"
            " '123-abc', regex used for validation is '" + _QUALIFIED_NAME + "') with an optional"
            " DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    problems = [f"prefix part {p}" for p in _dns_subdomain(prefix)] if slash else []
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if name and not re.fullmatch(_QUALIFIED_NAME, name):
        problems.append(_NAME_PART_HELP)
    return problems


def label_value_problems(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL_VALUE, value):
        problems.append(_LABEL_VALUE_HELP)
    return problems


def path_segment_problems(name: str) -> list[str]:
    """The only rule for the names of kinds without a stricter one (Events): a URL segment."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in name]


def metadata_causes(metadata: Mapping[str, Any], *, name_rule: str = "subdomain") -> list[Cause]:
    """ObjectMeta validation: the name, the labels and the annotations.

    `name_rule` is the kind's: a DNS-1123 subdomain for most kinds, a valid
    path segment for Events (`path.ValidatePathSegmentName`).
    """
    causes: list[Cause] = []
    name = metadata.get("name")
    if isinstance(name, str):
        problems = path_segment_problems(name) if name_rule == "segment" else _dns_subdomain(name)
        causes += [
            Cause("FieldValueInvalid", "metadata.name", f"Invalid value: {_quote(name)}: {p}")
            for p in problems
        ]
    labels = metadata.get("labels") or {}
    for key, value in labels.items():
        causes += [
            Cause("FieldValueInvalid", "metadata.labels", f"Invalid value: {_quote(key)}: {p}")
            for p in qualified_name_problems(str(key))
        ]
        if not isinstance(value, str):
            causes.append(
                Cause(
                    "FieldValueTypeInvalid",
                    f"metadata.labels.{key}",
                    f"Invalid value: {_quote(value)}: must be a string",
                )
            )
            continue
        causes += [
            Cause("FieldValueInvalid", "metadata.labels", f"Invalid value: {_quote(value)}: {p}")
            for p in label_value_problems(value)
        ]
    annotations = metadata.get("annotations") or {}
    for key in annotations:
        causes += [
            Cause("FieldValueInvalid", "metadata.annotations", f"Invalid value: {_quote(key)}: {p}")
            for p in qualified_name_problems(str(key))
        ]
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        causes.append(
            Cause(
                "FieldValueTooLong",
                "metadata.annotations",
                f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes",
            )
        )
    return causes


# ------------------------------------------------------------------ Events

# pkg/apis/core/validation/events.go
REPORTING_INSTANCE_LENGTH_LIMIT = 128
ACTION_LENGTH_LIMIT = 128
REASON_LENGTH_LIMIT = 128
NOTE_LENGTH_LIMIT = 1024
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_REFERENCE = dict.fromkeys(  # corev1.ObjectReference
    ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"), "string"
)
# The typed fields of a core/v1 Event, as the server's JSON decoding checks them.
EVENT_FIELDS: dict[str, Any] = {
    "involvedObject": _REFERENCE,
    "related": _REFERENCE,
    "reason": "string",
    "message": "string",
    "type": "string",
    "action": "string",
    "reportingComponent": "string",
    "reportingInstance": "string",
    "source": {"component": "string", "host": "string"},
    "firstTimestamp": "Time",
    "lastTimestamp": "Time",
    "eventTime": "MicroTime",
    "count": "int32",
    "series": {"count": "int32", "lastObservedTime": "MicroTime"},
}
_STRUCTS = {
    "involvedObject": "v1.ObjectReference",
    "related": "v1.ObjectReference",
    "source": "v1.EventSource",
    "series": "v1.EventSeries",
}


def _json_kind(value: Any) -> str:
    """A JSON value's kind as Go's decoder names it in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _decode_problem(value: Any, expected: Any, path: str) -> str | None:
    """Why the server's JSON decoding of one Event field fails, or None (null always decodes)."""
    if value is None:
        return None
    if isinstance(expected, dict):
        return _struct_problem(value, expected, path)
    if expected == "int32":
        return _int32_problem(value, path)
    if expected == "string":
        return None if isinstance(value, str) else _mismatch(value, path, "string")
    return _time_problem(value)


def _time_problem(value: Any) -> str | None:
    """metav1.Time and MicroTime decode a JSON string, then parse it as RFC 3339."""
    if not isinstance(value, str):
        return f"json: cannot unmarshal {_json_kind(value)} into Go value of type string"
    if not _RFC3339.fullmatch(value):
        # Go's wording ends with the layout element it failed on; the stand-in stops here.
        return f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00"'
    return None


def _mismatch(value: Any, path: str, go_type: str, *, shown: str | None = None) -> str:
    kind = shown or _json_kind(value)
    return f"json: cannot unmarshal {kind} into Go struct field {path} of type {go_type}"


def _struct_problem(value: Any, fields: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, Mapping):
        return _mismatch(value, path, _STRUCTS[path.rpartition(".")[2]])
    for key, sub in fields.items():
        problem = _decode_problem(value.get(key), sub, f"{path}.{key}")
        if problem:
            return problem
    return None


def _int32_problem(value: Any, path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _mismatch(value, path, "int32")
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return None
    return _mismatch(value, path, "int32", shown=f"number {value}")  # a fraction or an overflow


def event_decode_problem(event: Mapping[str, Any]) -> str | None:
    """The 400 the server answers to an Event it cannot decode into its struct, or None."""
    for key, expected in EVENT_FIELDS.items():
        problem = _decode_problem(event.get(key), expected, f"Event.{key}")
        if problem:
            return f'Event in version "v1" cannot be handled as a Event: {problem}'
    return None


def event_causes(event: Mapping[str, Any]) -> list[Cause]:
    """core/v1 Event validation as the API server applies it to a create through /api/v1.

    `legacyValidateEvent`: an Event without `eventTime` (the kind client-go's
    recorder writes) must be in its involvedObject's namespace, or, for a
    cluster-scoped object (no namespace), in `default` (or none); one with
    `eventTime` must name its reportingComponent, reportingInstance, action
    and reason, within their lengths. The stricter rules (type Normal or
    Warning, series) apply only through events.k8s.io, which gitsync does not use.
    """
    causes: list[Cause] = []
    namespace = str((event.get("metadata") or {}).get("namespace") or "")
    involved = event.get("involvedObject") or {}
    involved_ns = str(involved.get("namespace") or "")
    mismatch = Cause(
        "FieldValueInvalid",
        "involvedObject.namespace",
        f"Invalid value: {_quote(involved_ns)}: does not match event.namespace",
    )
    if not event.get("eventTime"):
        # Without a namespace (cluster-scoped): none or "default", for old clients.
        allowed = (involved_ns,) if involved_ns else ("", "default")
        if namespace not in allowed:
            causes.append(mismatch)
    else:
        if involved_ns == "" and namespace not in ("default", "kube-system"):
            causes.append(mismatch)
        component = str(event.get("reportingComponent") or "")
        if not component:
            causes.append(Cause("FieldValueRequired", "reportingComponent", "Required value"))
        causes += [
            Cause(
                "FieldValueInvalid",
                "reportingComponent",
                f"Invalid value: {_quote(component)}: {problem}",
            )
            for problem in qualified_name_problems(component)
        ]
        for name, limit in (
            ("reportingInstance", REPORTING_INSTANCE_LENGTH_LIMIT),
            ("action", ACTION_LENGTH_LIMIT),
            ("reason", REASON_LENGTH_LIMIT),
        ):
            value = str(event.get(name) or "")
            if not value:
                causes.append(Cause("FieldValueRequired", name, "Required value"))
            if len(value) > limit:
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        name,
                        f'Invalid value: "": can have at most {limit} characters',
                    )
                )
        if len(str(event.get("message") or "")) > NOTE_LENGTH_LIMIT:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    "message",
                    f'Invalid value: "": can have at most {NOTE_LENGTH_LIMIT} characters',
                )
            )
    causes += [
        Cause("FieldValueInvalid", "namespace", f"Invalid value: {_quote(namespace)}: {problem}")
        for problem in _dns_subdomain(namespace)
    ]
    return causes


# --------------------------------------------------------------- admission


def invalid(*, kind: str, group: str, name: str, causes: list[Cause]) -> kmock.KubernetesError:
    """The 422 the API server answers, Status reason Invalid with one cause per field problem."""
    qualified = f"{kind}.{group}" if group else kind
    listed = [f"{c.field}: {c.message}" for c in causes]
    text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": [c.as_json() for c in causes]}
    if group:
        details["group"] = group
    return kmock.KubernetesError(
        status=422,
        reason="Invalid",
        message=f'{qualified} "{name}" is invalid: {text}',
        details=details,
    )


@dataclass(frozen=True)
class Admission:
    """Prune, default and validate one object of `kind` (`schema` for custom resources)."""

    kind: str
    group: str
    schema: StructuralSchema | None

    def prune(self, obj: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
        """Pruned copy; with `strict` (`fieldValidation=Strict`), a dropped field is a 400."""
        dropped: list[str] = []
        if self.schema is not None:
            pruned, dropped = self.schema.prune(obj)
        else:
            pruned = copy.deepcopy(dict(obj))
        metadata = pruned.get("metadata")
        if isinstance(metadata, dict):
            for key in [k for k in metadata if k not in OBJECT_META_FIELDS]:
                dropped.append(f"metadata.{key}")
                del metadata[key]
        if strict and dropped:
            unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
            raise kmock.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f"strict decoding error: {unknown}",
                details={"kind": self.kind, "group": self.group},
            )
        return pruned

    def admit(self, obj: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
        """The object as it would be stored, or raise the API server's 400/422."""
        event = self.kind == "Event" and self.group == ""
        if event and (problem := event_decode_problem(obj)):
            raise kmock.KubernetesError(
                status=400, reason="BadRequest", message=problem, details={}
            )
        admitted = self.prune(obj, strict=strict)
        if self.schema is not None:
            self.schema.default(admitted)
        metadata = admitted.get("metadata") or {}
        causes = event_causes(admitted) if event else []
        causes += metadata_causes(metadata, name_rule="segment" if event else "subdomain")
        if self.schema is not None:
            causes += self.schema.causes(admitted)
        if causes:
            raise invalid(
                kind=self.kind, group=self.group, name=str(metadata.get("name", "")), causes=causes
            )
        return admitted

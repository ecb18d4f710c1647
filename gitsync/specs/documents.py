"""What one file's documents say: ImageCache documents checked against the schema and the rules.

A file's bytes (`reading`) become documents (`yaml_events`); here each
document, or each item of a `kind: List`, is recognised as an ImageCache or
skipped as another kind, checked against the schema (`schema`), then by the
semantic checks the schema cannot state: image reference grammar
(`gitsync.imageref`), duplicate images after normalisation, mutable tags
(`latest` here; tags without a refresh annotation, the refresh annotation
itself and the `# gitsync:` image policies in `drift`), the
prune annotation, the EIP annotation (`eks.tke.cloud.tencent.com/eip-attributes`:
"" or a JSON object of the fields of CreateImageCache's `AutoCreateEipAttribute`,
the SDK's `EipAttribute`), gitsync's reserved labels and annotations, and
security group ids. A document without errors becomes a `CacheSpec`.

Names are only collected here: whether they are unique is a question about the
whole repository, answered in `loading`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.model import (
    API_VERSION,
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    DEFAULT_RETENTION_DAYS,
    EIP_ATTRIBUTES_ANNOTATION,
    KIND,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    RESERVED_ANNOTATIONS,
    RESERVED_LABELS,
    CacheSpec,
    Diagnostic,
    EipAttributes,
    Pairs,
    Severity,
    SourceLocation,
)
from gitsync.specs.context import _Context
from gitsync.specs.drift import (
    REFRESH_ANNOTATION,
    _image_policies,
    _refresh_seconds,
    _Source,
    _stray_markers,
    _tagged_warning,
)
from gitsync.specs.reading import _read
from gitsync.specs.schema import _schema_diagnostics, _validator
from gitsync.specs.text import JsonPath, _clip, _describe, _did_you_mean, _field, _short
from gitsync.specs.walk import _File
from gitsync.specs.yaml_events import _MISSING, _Document, _documents, _yaml_error, _YamlProblem

_GROUP = API_VERSION.partition("/")[0]
_MAX_IMAGE_LENGTH = 512  # the schema's spec.images maxLength: longer ones are not parsed
_ERROR = Severity.ERROR
_WARNING = Severity.WARNING
_INFO = Severity.INFO


@dataclass(frozen=True, slots=True)
class _FileResult:
    """One file's findings; picklable so that worker processes can return it."""

    diagnostics: list[Diagnostic]
    caches: list[CacheSpec]
    names: list[tuple[str, SourceLocation, str]]  # every ImageCache name, where, its field
    documents: int
    read: bool  # False when the file was refused before parsing (size, encoding, symlink)


def _check_file(file: _File) -> _FileResult:
    data = _read(file)
    if isinstance(data, Diagnostic):
        return _FileResult([data], [], [], 0, read=False)
    return _check_data(data, file.display)


def _check_data(data: bytes, display: str) -> _FileResult:
    """Parse and check one file's bytes."""
    diagnostics: list[Diagnostic] = []
    caches: list[CacheSpec] = []
    names: list[tuple[str, SourceLocation, str]] = []
    documents = 0
    source = _Source(data)
    try:
        for document in _documents(data):
            if document.value is None:
                continue  # empty document: `---` with nothing after it
            documents += 1
            _check_document(
                document,
                display=display,
                source=source,
                diagnostics=diagnostics,
                caches=caches,
                names=names,
            )
        diagnostics.extend(_stray_markers(source, display))  # only once the whole file was read
    except _YamlProblem as problem:
        diagnostics.append(
            Diagnostic(
                location=SourceLocation(display, problem.line + 1, problem.column + 1),
                severity=_ERROR,
                rule=problem.rule,
                message=problem.message,
            )
        )
    except yaml.YAMLError as exc:
        line, column, message = _yaml_error(exc, data)
        diagnostics.append(
            Diagnostic(
                location=SourceLocation(display, line, column),
                severity=_ERROR,
                rule="yaml-syntax",
                message=message,
            )
        )
    return _FileResult(diagnostics, caches, names, documents, read=True)


def _is_image_cache(doc: Mapping[str, Any]) -> bool:
    """Whether to validate `doc` as an ImageCache, including near misses worth an error.

    `kind: imagecache` or a missing or mistyped apiVersion is a broken ImageCache,
    not another kind: skipping it would hide the mistake. An ImageCache of
    another API group is somebody else's resource.
    """
    kind = doc.get("kind", _MISSING)
    api = doc.get("apiVersion", _MISSING)
    group = api.partition("/")[0] if isinstance(api, str) else None
    if isinstance(kind, str):
        return kind.lower() == KIND.lower() and (group is None or group == _GROUP)
    if group == _GROUP:
        return True  # kind forgotten or not a string
    spec = doc.get("spec")
    # No apiVersion and kind at all, but an ImageCache body: the header was forgotten.
    return kind is _MISSING and api is _MISSING and isinstance(spec, dict) and "images" in spec


def _check_document(
    document: _Document,
    *,
    display: str,
    source: _Source,
    diagnostics: list[Diagnostic],
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    value = document.value
    if isinstance(value, dict) and value.get("kind") == "List" and value.get("apiVersion") == "v1":
        items = value.get("items")
        if isinstance(items, list):  # `kubectl get -o yaml` of several objects
            for index, item in enumerate(items):
                _check_object(
                    item,
                    prefix=("items", index),
                    document=document,
                    display=display,
                    source=source,
                    diagnostics=diagnostics,
                    caches=caches,
                    names=names,
                )
            return
    _check_object(
        value,
        prefix=(),
        document=document,
        display=display,
        source=source,
        diagnostics=diagnostics,
        caches=caches,
        names=names,
    )


def _check_object(
    value: Any,
    *,
    prefix: JsonPath,
    document: _Document,
    display: str,
    source: _Source,
    diagnostics: list[Diagnostic],
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    ctx = _Context(document, prefix, display, diagnostics)
    where = "document" if not prefix else f"List item {prefix[-1]}"
    if not isinstance(value, dict):
        ctx.add(
            (),
            "not-a-mapping",
            f"{where} is {_describe(value)}, not a mapping; an ImageCache is a mapping with "
            "apiVersion, kind, metadata and spec",
        )
        return
    if not _is_image_cache(value):
        kind, api = value.get("kind"), value.get("apiVersion")
        if isinstance(kind, str):
            what = f"{_clip(kind)} ({_clip(api)})" if isinstance(api, str) else _clip(kind)
        else:
            what = "a document without kind"
        ctx.add(
            ("kind",) if "kind" in value else (),
            "other-kind",
            f"skipped {what}: gitsync reads only {API_VERSION} {KIND} documents",
            severity=_INFO,
        )
        return
    full_prefix_len = len(prefix)
    for rule, message, mark, path in document.problems:
        if path[:full_prefix_len] == prefix:
            ctx.diagnostics.append(
                Diagnostic(
                    location=SourceLocation(display, mark.line + 1, mark.column + 1),
                    severity=_ERROR,
                    rule=rule,
                    message=message,
                    field=_field(path) or None,
                )
            )
            ctx.errors += 1
    if not _validator().fast(value):
        _schema_diagnostics(value, ctx)
    _semantic_checks(value, ctx, source, caches, names)


_IMAGE_FACTS: dict[str, tuple[str, bool, str, bool] | str] = {}


def _image_facts(image: str) -> tuple[str, bool, str, bool] | str:
    """Normalised form, mutability, short name and being held by tag of an image, or why not valid.

    Repositories repeat a few images thousands of times: each is parsed once.
    """
    facts = _IMAGE_FACTS.get(image)
    if facts is None:
        try:
            ref = imageref.parse(image)
        except ImageRefError as exc:
            facts = exc.reason
        else:
            by_tag = ref.digest is None and not ref.mutable  # `latest` has its own warning
            facts = (str(ref), ref.mutable, ref.name.rpartition("/")[2], by_tag)
        if len(_IMAGE_FACTS) >= 16384:
            _IMAGE_FACTS.clear()  # bounded; a repository rarely has that many distinct images
        _IMAGE_FACTS[image] = facts
    return facts


_SHARED_PAIRS: dict[Pairs, Pairs] = {}
_SHARED_PAIRS_SIZE: Final = 4096


def _shared_pairs(pairs: Pairs) -> Pairs:
    """`pairs` (sorted by key), or the equal tuple already kept: one tuple per distinct map.

    Every cache holds its labels and annotations until the plan is made, and
    repositories repeat the same few maps (a team's labels on all its caches):
    one tuple each, with its keys interned, instead of a tuple per map and a
    tuple and a key string per label in every document (3 MiB at 10,000).
    """
    if not pairs:
        return ()
    shared = _SHARED_PAIRS.get(pairs)
    if shared is None:
        shared = tuple((sys.intern(key), value) for key, value in pairs)
        if len(_SHARED_PAIRS) >= _SHARED_PAIRS_SIZE:
            _SHARED_PAIRS.clear()  # bounded: distinct maps beyond it are kept, just not shared
        _SHARED_PAIRS[shared] = shared
    return shared


def _semantic_checks(
    doc: dict[str, Any],
    ctx: _Context,
    source: _Source,
    caches: list[CacheSpec],
    names: list[tuple[str, SourceLocation, str]],
) -> None:
    metadata = doc.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    spec = doc.get("spec")
    spec = spec if isinstance(spec, dict) else {}

    name = metadata.get("name")
    name_location = ctx.location(("metadata", "name"))
    if isinstance(name, str):
        names.append((name, name_location, ctx.name(("metadata", "name"))))

    annotations = metadata.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    prune, eip = _annotation_checks(annotations, ctx)
    refresh = _refresh_seconds(annotations, ctx)
    labels_written = metadata.get("labels")
    _reserved_key_checks(
        labels_written if isinstance(labels_written, dict) else {}, annotations, ctx
    )
    groups = spec.get("securityGroupIds")
    groups = groups if isinstance(groups, list) else []
    _security_group_checks(groups, ctx)

    images = spec.get("images")
    images = images if isinstance(images, list) else []
    seen: dict[str, tuple[int, str]] = {}
    tagged: list[tuple[int, str]] = []  # (index, image) of images held by a tag but `latest`
    for index, image in enumerate(images):
        if not isinstance(image, str) or not image or len(image) > _MAX_IMAGE_LENGTH:
            continue  # the schema reports it
        path: JsonPath = ("spec", "images", index)
        facts = _image_facts(image)
        if isinstance(facts, str):
            ctx.add(
                path,
                "image-ref",
                f"{ctx.name(path)} {_short(image)} is not a valid image reference: {facts}",
            )
            continue
        normal, mutable, short_name, by_tag = facts
        if normal in seen:
            first_index, first = seen[normal]
            first_line = ctx.location(("spec", "images", first_index)).line
            same = "" if first == image else f" {_short(first)}"
            ctx.add(
                path,
                "duplicate-image",
                f"{ctx.name(path)} {_short(image)} is the same image as "
                f"{ctx.name(('spec', 'images', first_index))}"
                f"{same} (line {first_line}): both mean {normal}; list it once",
            )
            continue
        seen[normal] = (index, image)
        if by_tag:
            tagged.append((index, image))
        if mutable:
            written = (
                "has no tag, so it means tag 'latest'"
                if ":" not in image.rpartition("/")[2]
                else "uses tag 'latest'"
            )
            ctx.add(
                path,
                "mutable-tag",
                f"{ctx.name(path)} {_short(image)} {written}, which moves: two caches of it built "
                "at different times can hold different content; pin a version tag "
                f"(e.g. {short_name}:1.2.3) or a digest (@sha256:…)",
                severity=_WARNING,
            )
    image_policies = _image_policies(images, ctx, source)
    if tagged and REFRESH_ANNOTATION not in annotations:
        _tagged_warning(tagged, ctx, policies=bool(image_policies))

    if ctx.errors or not isinstance(name, str):
        return
    size = spec.get("imageCacheSize", DEFAULT_IMAGE_CACHE_SIZE_GIB)
    retention = spec.get("retentionDays", DEFAULT_RETENTION_DAYS)
    secrets = spec.get("imagePullSecrets") or []
    labels = metadata.get("labels") or {}
    caches.append(
        CacheSpec(
            name=name,
            images=tuple(images),
            image_cache_size_gib=int(size),  # 20.0 is a valid JSON Schema integer
            retention_days=int(retention),
            image_pull_secrets=tuple(secrets),
            prune=prune,
            location=name_location,
            security_group_ids=tuple(groups),
            labels=_shared_pairs(tuple(sorted(labels.items()))),
            annotations=_shared_pairs(
                tuple(sorted(i for i in annotations.items() if i[0] not in _NOT_KEPT))
            ),
            eip=eip,
            refresh_seconds=refresh,
            image_policies=image_policies,
        )
    )


def _annotation_checks(
    annotations: dict[str, Any], ctx: _Context
) -> tuple[bool, EipAttributes | None]:
    """The prune setting and the EIP attributes the annotations ask for; reports bad values."""
    prune = True
    if PRUNE_ANNOTATION in annotations:
        setting = annotations[PRUNE_ANNOTATION]
        if setting == PRUNE_DISABLED:
            prune = False
        elif isinstance(setting, str):  # non-strings are schema errors already
            ctx.add(
                ("metadata", "annotations", PRUNE_ANNOTATION),
                "prune-annotation",
                f"annotation {PRUNE_ANNOTATION} must be {PRUNE_DISABLED!r} (keep the cache when "
                f"its spec is removed), or be left out to allow deleting it; got {_short(setting)}",
            )
    eip_text = annotations.get(EIP_ATTRIBUTES_ANNOTATION)
    if not isinstance(eip_text, str):  # absent; non-strings are schema errors already
        return prune, None
    parsed = _eip_attributes(eip_text)
    if isinstance(parsed, str):
        ctx.add(
            ("metadata", "annotations", EIP_ATTRIBUTES_ANNOTATION),
            "annotation",
            f"annotation {EIP_ATTRIBUTES_ANNOTATION} {parsed}",
        )
        return prune, None
    return prune, parsed


def _reserved_key_checks(
    labels: dict[str, Any], annotations: dict[str, Any], ctx: _Context
) -> None:
    """gitsync's own ownership marks: set from Git they would claim or disown a cache."""
    for where, keys, reserved in (
        ("labels", labels, RESERVED_LABELS),
        ("annotations", annotations, RESERVED_ANNOTATIONS),
    ):
        for key in sorted(reserved.intersection(keys)):
            ctx.add(
                ("metadata", where, key),
                "reserved-key",
                f"{where[:-1]} {key} is gitsync's own (it marks the caches gitsync manages)"
                f" and cannot be set in Git; remove it",
            )


def _security_group_checks(groups: list[Any], ctx: _Context) -> None:
    for index, group in enumerate(groups):
        if isinstance(group, str) and not _SECURITY_GROUP.fullmatch(group):
            path: JsonPath = ("spec", "securityGroupIds", index)
            ctx.add(
                path,
                "security-group",
                f"{ctx.name(path)} {_short(group)} is not a security group id: write it as the"
                " console and the API show it, sg- and lower-case letters or digits"
                " (e.g. sg-1cghhuuu)",
            )


# Annotations that are not the spec's to carry: the prune setting is `CacheSpec.prune`;
# kubectl records what it applied (`kubectl get -o yaml` output has it) and writes it itself.
_NOT_KEPT: Final = frozenset({PRUNE_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration"})

# A security group id as the console and the API show it: CreateImageCache's
# SecurityGroupIds.N has the example value sg-1cghhuuu (TKE API 457/70861).
_SECURITY_GROUP = re.compile(r"sg-[0-9a-z]+")

# CreateImageCache's AutoCreateEipAttribute is the SDK's EipAttribute: these fields only.
_EIP_FIELDS: Final = {
    "DeletePolicy": "a string (Never keeps the EIP after the build instance is gone)",
    "InternetServiceProvider": "a string naming the line (BGP, CMCC, CTCC, CUCC)",
    "InternetMaxBandwidthOut": "an integer of at least 1 (Mbps)",
}
# Keys pods take in this annotation (the EIP API's own parameters) that the image cache
# API does not: worth naming, since the pod annotation is documented far more often.
_POD_ONLY_EIP_KEYS: Final = frozenset(
    {"InternetChargeType", "AddressType", "AddressName", "Bandwidth", "BandwidthPackageId"}
)


class _DuplicateJsonKey(Exception):  # internal signal
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateJsonKey(key)
        found[key] = value
    return found


def _eip_attributes(text: str) -> EipAttributes | str:
    """The EIP annotation's value, or what is wrong with it (a phrase after the name).

    "" (or only spaces) asks for an EIP with the cloud's defaults, as the super
    node pod annotation of the same name documents; otherwise a JSON object of
    `EipAttribute` fields, e.g. {"InternetMaxBandwidthOut":2} from the cloud's sample.
    """
    if not text.strip():
        return EipAttributes()
    value = _eip_json(text)
    if isinstance(value, str):
        return value
    for key, item in value.items():
        problem = _eip_field_problem(key, item)
        if problem is not None:
            return problem
    return EipAttributes(
        delete_policy=value.get("DeletePolicy"),
        internet_service_provider=value.get("InternetServiceProvider"),
        internet_max_bandwidth_out=value.get("InternetMaxBandwidthOut"),
    )


def _eip_json(text: str) -> dict[str, Any] | str:
    example = "'{\"InternetMaxBandwidthOut\":2}'"
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateJsonKey as exc:
        return f"names {_short(exc.key)} twice; name each field once"
    except RecursionError:
        return "is nested too deeply to be an EIP attribute object"
    except ValueError as exc:
        return f'is not JSON ({exc}); write "" for the defaults or a JSON object such as {example}'
    if not isinstance(value, dict):
        fields = ", ".join(_EIP_FIELDS)
        return f"must be a JSON object of {fields}, got {_describe(value)}; e.g. {example}"
    return value


def _eip_field_problem(key: str, item: Any) -> str | None:
    if key not in _EIP_FIELDS:
        hint = (
            ", a key of the pod annotation (the EIP API's parameters) that the image"
            " cache API does not take"
            if key in _POD_ONLY_EIP_KEYS
            else _did_you_mean(key, list(_EIP_FIELDS))
        )
        return (
            f"has field {_short(key)}{hint}; CreateImageCache's AutoCreateEipAttribute"
            f" takes {', '.join(_EIP_FIELDS)}"
        )
    if key == "InternetMaxBandwidthOut":
        good = isinstance(item, int) and not isinstance(item, bool) and item >= 1
    elif key == "InternetServiceProvider":
        good = isinstance(item, str) and bool(item)
    else:
        good = isinstance(item, str)
    return None if good else f"field {key} must be {_EIP_FIELDS[key]}, got {_describe(item)}"

"""References and scalars spelled as the file spells them.

A changed or added image must read like its neighbours, or the diff shows
more than the change: a tag bump keeps the name as written (`nginx:1.27`
becomes `nginx:1.28`, not `docker.io/library/nginx:1.28`), new images leave
out `docker.io/` where the file does, and a scalar keeps its quotes, or is
written plain only where it reads back as the same value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml
from yaml.nodes import SequenceNode

from gitsync.errors import ImageRefError
from gitsync.imageref import DEFAULT_REGISTRY, ImageRef, parse, same_repository
from gitsync.suggest.locate import _NotApplied
from gitsync.suggest.model import Suggestion

_PLAIN_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]*")


def _parsed(reference: str, suggestion: Suggestion) -> ImageRef:
    try:
        return parse(reference)
    except ImageRefError as exc:
        raise _NotApplied(f"cache {suggestion.cache}: {exc}") from exc


def _items_by_ref(images: SequenceNode) -> dict[ImageRef, int]:
    found: dict[ImageRef, int] = {}
    for position, node in enumerate(images.value):
        try:
            found.setdefault(parse(node.value), position)
        except ImageRefError:
            continue  # an invalid image matches nothing; validation reports it
    return found


def _writes_registry(written: str) -> bool:
    first, slash, _ = written.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def _writes_familiar(values: Iterable[str]) -> bool:
    """Whether the file leaves Docker Hub's `docker.io/` out (so new images do too)."""
    familiar = canonical = 0
    for value in values:
        try:
            ref = parse(value)
        except ImageRefError:
            continue
        if ref.registry == DEFAULT_REGISTRY:
            if _writes_registry(value):
                canonical += 1
            else:
                familiar += 1
    return familiar >= canonical


def _rewritten(written: str, new: ImageRef) -> str:
    """`written` moved to `new`'s tag or digest, its name spelled as it was."""
    try:
        old = parse(written)
    except ImageRefError:
        old = None
    if old is None or not same_repository(old, new):
        return new.familiar() if not _writes_registry(written) else str(new)
    name_and_tag = written.partition("@")[0]
    colon = name_and_tag.rfind(":")
    name = name_and_tag[:colon] if colon > name_and_tag.rfind("/") else name_and_tag
    result = name + (f":{new.tag}" if new.tag is not None else "")
    result += f"@{new.digest}" if new.digest is not None else ""
    return result if parse(result) == new else str(new)


def _render(value: str, style: str | None, *, plain_type: type = str) -> str:
    """`value` as a YAML scalar in `style`; plain only where it reads back as `plain_type`."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if _PLAIN_SAFE.fullmatch(value) and type(yaml.safe_load(value)) is plain_type:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

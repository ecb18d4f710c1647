"""The edit of each kind to a cache that exists: bump-tag, add-image, resize, remove-cache.

Each builds an `_Edit` (replacements of character spans, and the change they
mean) from the nodes `locate` found, in the layout the file already uses:
the same quoting, the same dash spacing, a flow list kept a flow list, the
document's attached comments removed with it. What each kind changes is in
`gitsync.suggest.edits`' docstring.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode, SequenceNode

from gitsync.imageref import ImageRef
from gitsync.suggest.locate import (
    _DASH_PREFIX,
    _child,
    _Found,
    _name_of,
    _NotApplied,
    _Source,
)
from gitsync.suggest.model import Suggestion
from gitsync.suggest.recheck import _Edit
from gitsync.suggest.spelling import (
    _items_by_ref,
    _parsed,
    _render,
    _rewritten,
    _writes_familiar,
)

_NULL_TAG = "tag:yaml.org,2002:null"
_FLOW_SEPARATOR = re.compile(r"\s*,\s*")


def _bump_tag(source: _Source, found: _Found, suggestion: Suggestion) -> _Edit:
    if not suggestion.from_images or len(suggestion.from_images) != len(suggestion.to_images):
        raise _NotApplied(
            f"cache {suggestion.cache}: a bump-tag needs as many to_images as from_images"
        )
    key, images = source.images(found)
    by_ref = _items_by_ref(images)
    replacements: list[tuple[int, int, str]] = []
    changed: dict[int, str] = {}
    first: ScalarNode | None = None
    for old, new in zip(suggestion.from_images, suggestion.to_images, strict=True):
        old_ref, new_ref = _parsed(old, suggestion), _parsed(new, suggestion)
        position = by_ref.get(old_ref)
        if position is None:
            raise _NotApplied(
                f"{source.where(key)}: cache {suggestion.cache} no longer holds {old}"
            )
        if new_ref in by_ref and by_ref[new_ref] != position:
            raise _NotApplied(f"{source.where(key)}: cache {suggestion.cache} already holds {new}")
        node = images.value[position]
        written = _rewritten(node.value, new_ref)
        start, end = source.scalar_span(node)
        replacements.append((start, end, _render(written, node.style)))
        changed[position] = written
        first = first if first is not None else node

    def expect(cache: dict[str, Any]) -> None:
        for position, written in changed.items():
            cache["spec"]["images"][position] = written

    pairs = ", ".join(
        f"{a} → {b}" for a, b in zip(suggestion.from_images, suggestion.to_images, strict=True)
    )
    return _Edit(replacements, expect, f"{source.where(first or key)}: {pairs}")


def _add_images(source: _Source, found: _Found, suggestion: Suggestion) -> _Edit:
    key, images = source.images(found)
    present = _items_by_ref(images)
    new_refs: list[ImageRef] = []
    for image in suggestion.images:
        ref = _parsed(image, suggestion)
        if ref not in present and ref not in new_refs:
            new_refs.append(ref)
    if not new_refs:
        raise _NotApplied(
            f"{source.where(key)}: cache {suggestion.cache} already holds "
            f"{', '.join(suggestion.images) or 'nothing to add'}"
        )
    familiar = _writes_familiar(node.value for node in images.value)
    written = [ref.familiar() if familiar else str(ref) for ref in new_refs]
    styles = {node.style for node in images.value}
    style = styles.pop() if len(styles) == 1 else None
    rendered = [_render(value, style) for value in written]
    if images.flow_style:
        replacement = _flow_append(source, images, rendered)
    else:
        replacement = _block_append(source, images, rendered)

    def expect(cache: dict[str, Any]) -> None:
        cache["spec"]["images"].extend(written)

    return _Edit([replacement], expect, f"{source.where(key)}: + {', '.join(written)}")


def _flow_append(
    source: _Source, images: SequenceNode, rendered: list[str]
) -> tuple[int, int, str]:
    items = images.value
    if not items:
        closing = images.end_mark.index - 1
        if source.text[closing] != "]":
            raise _NotApplied(f"{source.where(images)}: cannot find the end of the image list")
        return closing, closing, ", ".join(rendered)
    separator = ", "
    if len(items) >= 2:
        between = source.text[items[-2].end_mark.index : items[-1].start_mark.index]
        if _FLOW_SEPARATOR.fullmatch(between):
            separator = between
        elif "\n" in between:  # a comment sits between them: keep one item per line
            column = items[-1].start_mark.index - source.line_start(
                source.line_of(items[-1].start_mark.index)
            )
            separator = (
                "," + source.newline(source.line_of(items[-2].end_mark.index)) + " " * column
            )
    end = items[-1].end_mark.index
    return end, end, "".join(separator + value for value in rendered)


def _block_append(
    source: _Source, images: SequenceNode, rendered: list[str]
) -> tuple[int, int, str]:
    prefix: re.Match[str] | None = None
    for node in reversed(images.value):  # the last item that sits on its own dash line
        start = node.start_mark.index
        prefix = _DASH_PREFIX.fullmatch(
            source.text[source.line_start(source.line_of(start)) : start]
        )
        if prefix is not None:
            break
    if prefix is None:
        raise _NotApplied(f"{source.where(images)}: cannot tell how the image list is indented")
    last_line = source.line_of(images.value[-1].end_mark.index)
    newline = source.newline(last_line)
    lines = [f"{prefix[1]}-{prefix[2]}{value}" for value in rendered]
    at = source.line_start(last_line + 1)
    if at >= len(source.text) and not source.text.endswith("\n"):
        return at, at, "".join(newline + line for line in lines)  # the list ends the file
    return at, at, "".join(line + newline for line in lines)


def _resize(source: _Source, found: _Found, suggestion: Suggestion) -> _Edit:
    size = suggestion.to_size_gib
    if size is None:
        raise _NotApplied(
            f"cache {suggestion.cache}: no size proposed ({suggestion.size_note or 'unknown'})"
        )
    spec = source.spec(found)

    def expect(cache: dict[str, Any]) -> None:
        cache["spec"]["imageCacheSize"] = size

    current = _child(spec, "imageCacheSize")
    if current is not None:
        if not isinstance(current, ScalarNode) or id(current) in found.shared:
            raise _NotApplied(f"{source.where(current)}: imageCacheSize is not a plain scalar")
        start, end = source.scalar_span(current)
        written = current.value
        now = yaml.safe_load(source.text[start:end])  # as the loader reads it: 0x20 is 32
        if suggestion.from_size_gib is not None and now != suggestion.from_size_gib:
            raise _NotApplied(
                f"{source.where(current)}: imageCacheSize of cache {suggestion.cache} is now "
                f"{written}, not {suggestion.from_size_gib} as the suggestion assumed"
            )
        return _Edit(
            [(start, end, _render(str(size), current.style, plain_type=int))],
            expect,
            f"{source.where(current)}: imageCacheSize {written} → {size}",
        )
    key, images = source.images(found)
    if spec.flow_style:  # `spec: {images: [a], …}`: one more pair after the list
        at = images.end_mark.index
        return _Edit(
            [(at, at, f", imageCacheSize: {size}")],
            expect,
            f"{source.where(key)}: imageCacheSize {size} added",
        )
    line = source.line_of(key.start_mark.index)
    indent = source.text[source.line_start(line) : key.start_mark.index]
    if indent.strip(" "):
        raise _NotApplied(f"{source.where(key)}: spec is not laid out one key per line")
    last = images.value[-1].end_mark.index if images.value and not images.flow_style else None
    end_line = source.line_of(last if last is not None else images.end_mark.index - 1)
    newline = source.newline(end_line)
    at = source.line_start(end_line + 1)
    entry = f"{indent}imageCacheSize: {size}"
    text = (
        newline + entry
        if at >= len(source.text) and not source.text.endswith("\n")
        else entry + newline
    )
    return _Edit([(at, at, text)], expect, f"{source.where(key)}: imageCacheSize {size} added")


def _remove(source: _Source, found: _Found) -> _Edit:
    name = _name_of(found.cache)
    if found.item is not None:
        raise _NotApplied(
            f"{source.where(found.cache)}: cache {name!r} is an item of a List document; "
            "remove it by hand"
        )
    documents = source.documents
    others = [i for i, d in enumerate(documents) if i != found.index and not _is_empty(d.root)]
    if not others:
        return _Edit([], None, f"{source.path}: deleted (cache {name} was its only document)", True)
    index = found.index
    start = _region_start(source, index)
    if index + 1 < len(documents):
        end = source.line_start(_region_start(source, index + 1))
    else:
        end = len(source.text)
        while start > 0 and not source.line_text(start - 1).strip():
            start -= 1  # no blank lines left at the end of the file
    where = source.where(documents[index].first_index)
    return _Edit(
        [(source.line_start(start), end, "")],
        None,
        f"{where}: cache {name} removed",
    )


def _region_start(source: _Source, index: int) -> int:
    """First line of document `index` with its attached comment block (see the docstring)."""
    document = source.documents[index]
    first = source.line_of(document.first_index)
    above = first
    while above > 0 and source.line_text(above - 1).startswith("#"):
        above -= 1
    if above == first:
        return first
    before = above - 1  # the line above the comment block
    if before < 0:
        return first  # the file's leading comments: its header, not this document's
    text = source.line_text(before).rstrip()
    if not text or text in ("---", "..."):
        return above
    return first  # glued to the previous document: not known to be this one's


def _is_empty(root: Node) -> bool:
    return isinstance(root, ScalarNode) and root.tag == _NULL_TAG

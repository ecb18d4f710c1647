"""A new cache's file, written in the style of the repository's other cache files.

A new file has no layout of its own to keep, so it borrows the one most of
the repository's ImageCache documents use (indentation, dash layout, quoting,
familiar or canonical references, line ends, retentionDays), so that it reads
like its neighbours in review. It never takes an existing path or a name
another cache has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from gitsync.model import API_VERSION, KIND
from gitsync.suggest.locate import (
    _DASH_PREFIX,
    _child,
    _Document,
    _names,
    _NotApplied,
    _scalar,
    _Source,
)
from gitsync.suggest.model import Suggestion
from gitsync.suggest.spelling import _parsed, _render, _writes_familiar

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Style:
    indent: str = "  "
    dash_indent: str = "  "  # between `images:`'s column and the dash
    dash_gap: str = " "
    quote: str | None = None
    familiar: bool = True
    newline: str = "\n"
    retention_days: str | None = None


def _new_cache(
    suggestion: Suggestion,
    current: Mapping[str, str | None],
    others: Mapping[str, str],
    taken: set[str],
) -> tuple[str, str, str]:
    if suggestion.file is None:
        raise _NotApplied(f"new cache {suggestion.cache}: the suggestion names no file")
    if not suggestion.images:
        raise _NotApplied(f"new cache {suggestion.cache}: no images")
    refs = [_parsed(image, suggestion) for image in dict.fromkeys(suggestion.images)]
    texts = {**others, **{p: t for p, t in current.items() if t is not None}}
    sources = []
    for path, text in texts.items():
        try:
            sources.append(_Source(path, text))
        except _NotApplied:
            continue  # a file that does not parse teaches no style and holds no name
    for existing in sources:
        for document in existing.documents:
            if isinstance(document.root, MappingNode) and _names(document.root, suggestion.cache):
                raise _NotApplied(
                    f"{existing.where(document.root)}: a cache named {suggestion.cache} exists"
                )
    style = _style_of(sources)
    path = _free_path(suggestion.file, taken)
    nl, indent = style.newline, style.indent
    lines = [
        f"apiVersion: {API_VERSION}",
        f"kind: {KIND}",
        "metadata:",
        f"{indent}name: {_render(suggestion.cache, None)}",
        "spec:",
        f"{indent}images:",
        *(
            f"{indent}{style.dash_indent}-{style.dash_gap}"
            + _render(ref.familiar() if style.familiar else str(ref), style.quote)
            for ref in refs
        ),
    ]
    if suggestion.to_size_gib is not None:
        lines.append(f"{indent}imageCacheSize: {suggestion.to_size_gib}")
    if style.retention_days is not None:
        lines.append(f"{indent}retentionDays: {style.retention_days}")
    text = nl.join(lines) + nl
    expected: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": suggestion.cache},
        "spec": {"images": [ref.familiar() if style.familiar else str(ref) for ref in refs]},
    }
    if suggestion.to_size_gib is not None:
        expected["spec"]["imageCacheSize"] = suggestion.to_size_gib
    if style.retention_days is not None:
        expected["spec"]["retentionDays"] = yaml.safe_load(style.retention_days)
    if list(yaml.safe_load_all(text)) != [expected]:
        raise _NotApplied(f"new cache {suggestion.cache}: cannot write it safely")
    moved = "" if path == suggestion.file else f" ({suggestion.file} exists)"
    return path, text, f"{path}: new cache {suggestion.cache}{moved}"


def _free_path(wanted: str, taken: Collection[str]) -> str:
    pure = PurePosixPath(wanted)
    if pure.is_absolute() or ".." in pure.parts or not pure.name:
        raise _NotApplied(f"{wanted}: a new cache file must be a path inside the repository")
    suffix = pure.suffix if pure.suffix in (".yaml", ".yml") else ".yaml"
    stem = pure.name[: -len(pure.suffix)] if pure.suffix in (".yaml", ".yml") else pure.name
    candidate, number = str(pure.with_name(stem + suffix)), 2
    while candidate in taken:
        candidate, number = str(pure.with_name(f"{stem}-{number}{suffix}")), number + 1
    return candidate


def _style_of(sources: Sequence[_Source]) -> _Style:
    """The most common layout among the ImageCache documents of `sources`."""
    votes = _StyleVotes()
    for source in sources:
        for document in source.documents:
            root = document.root
            if isinstance(root, MappingNode) and _scalar(root, "kind") == KIND:
                votes.count(source, document, root)
    default = _Style()
    return _Style(
        indent=_most_common(votes.indents, default.indent),
        dash_indent=_most_common(votes.dash_indents, default.dash_indent),
        dash_gap=_most_common(votes.gaps, default.dash_gap),
        quote=_most_common(votes.quotes, default.quote),
        familiar=_writes_familiar(votes.written),
        newline=_most_common(votes.newlines, default.newline),
        retention_days=_most_common(votes.retention, default.retention_days),
    )


@dataclass(slots=True)
class _StyleVotes:
    """How often each layout choice appears among the repository's caches."""

    indents: Counter[str] = field(default_factory=Counter)
    dash_indents: Counter[str] = field(default_factory=Counter)
    gaps: Counter[str] = field(default_factory=Counter)
    quotes: Counter[str | None] = field(default_factory=Counter)
    newlines: Counter[str] = field(default_factory=Counter)
    retention: Counter[str | None] = field(default_factory=Counter)
    written: list[str] = field(default_factory=list)

    def count(self, source: _Source, document: _Document, root: MappingNode) -> None:
        self.newlines[source.newline(source.line_of(document.first_index))] += 1
        for key, value in root.value:
            nested = isinstance(value, MappingNode) and value.value and not value.flow_style
            if isinstance(key, ScalarNode) and key.value in ("metadata", "spec") and nested:
                inner = value.value[0][0].start_mark.column - key.start_mark.column
                if inner > 0:
                    self.indents[" " * inner] += 1
        spec = _child(root, "spec")
        if not isinstance(spec, MappingNode):
            return
        days = _child(spec, "retentionDays")
        self.retention[days.value if isinstance(days, ScalarNode) else None] += 1
        for key, value in spec.value:
            images = isinstance(key, ScalarNode) and key.value == "images"
            if images and isinstance(value, SequenceNode):
                self.count_images(source, key, value)

    def count_images(self, source: _Source, key: ScalarNode, images: SequenceNode) -> None:
        for item in images.value:
            if not isinstance(item, ScalarNode):
                continue
            self.written.append(item.value)
            self.quotes[item.style if item.style in ("'", '"') else None] += 1
            start = item.start_mark.index
            dash = _DASH_PREFIX.fullmatch(
                source.text[source.line_start(source.line_of(start)) : start]
            )
            if dash is not None and not images.flow_style:
                offset = len(dash[1]) - key.start_mark.column
                if offset >= 0:
                    self.dash_indents[" " * offset] += 1
                self.gaps[dash[2]] += 1


def _most_common(counter: Counter[_T], default: _T) -> _T:
    """The most frequent choice; the default wins a tie, so the result never hangs on file order."""
    if not counter:
        return default
    top = max(counter.values())
    winners = [choice for choice, count in counter.items() if count == top]
    return default if default in winners else min(winners, key=repr)

"""Where a cache is in a YAML file's text: its documents, nodes and their character spans.

Every edit of `gitsync.suggest.edits` replaces a span of the text and copies
every other byte through, so it must know exactly where each node starts and
ends. PyYAML's composer gives those marks; `_Source` keeps them with a line
table, finds the one cache a suggestion names (in a document or a `kind: List`
item), and refuses what it cannot edit safely (an alias, a multi-line or block
scalar, a line break other than LF or CRLF) with the file and line.
`_NotApplied`, the refusal every edit module raises, is defined here, at the
bottom of them.

Positions come from the pure-Python composer: its offsets count characters of
the Python string (libyaml's count bytes of the UTF-8 encoding), and on deep
nesting it raises RecursionError where the C composer can crash the process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gitsync.model import KIND

# Line breaks PyYAML counts that a "\n"-based line table would not: refused rather than guessed.
_ODD_BREAKS = re.compile("\r(?!\n)|[\x85\u2028\u2029]")
_DASH_PREFIX = re.compile(r"( *)-( +)")


class _NotApplied(Exception):  # control flow inside the edit modules only
    """The suggestion cannot be applied; the message says why, with file and line."""


@dataclass(slots=True)
class _Document:
    root: Node
    first_index: int  # its `---`, or its first node when the start is implicit
    end_marker: bool  # it ends with an explicit `...`


@dataclass(slots=True)
class _Found:
    index: int  # which document
    item: int | None  # which item of a `kind: List` document, or None for the document itself
    cache: MappingNode
    shared: set[int]  # ids of nodes written once and used more than once (anchors and aliases)


class _Source:
    """One file's text, its line table and its composed documents."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        odd = _ODD_BREAKS.search(text)
        if odd is not None:
            raise _NotApplied(
                f"{path}:{self.line_of(odd.start()) + 1}: a line break other than LF or CRLF; "
                "edit this file by hand"
            )
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.documents = self._compose()

    def _compose(self) -> list[_Document]:
        loader = yaml.SafeLoader(self.text)  # pure Python: see the module docstring
        get_event: Callable[[], Any] = loader.get_event
        compose: Callable[..., Node | None] = loader.compose_node  # (parent, index)
        documents: list[_Document] = []
        try:
            get_event()  # the stream's start
            while not loader.check_event(StreamEndEvent):
                start = get_event()
                root = compose(None, None)
                end = get_event()
                loader.anchors = {}
                if root is None:  # pragma: no cover - the composer gives every document a node
                    continue
                first = start.start_mark.index if start.explicit else root.start_mark.index
                documents.append(_Document(root, first, end_marker=bool(end.explicit)))
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 1
            raise _NotApplied(f"{self.path}:{line}: not valid YAML ({exc.problem})") from exc
        except (yaml.YAMLError, RecursionError) as exc:
            raise _NotApplied(f"{self.path}: cannot be read as YAML") from exc
        finally:
            dispose: Callable[[], None] = loader.dispose
            dispose()
        return documents

    # -- lines (0-based)

    def line_of(self, index: int) -> int:
        return self.text.count("\n", 0, index)

    def line_start(self, line: int) -> int:
        return self.starts[line] if line < len(self.starts) else len(self.text)

    def line_text(self, line: int) -> str:
        start = self.line_start(line)
        end = self.text.find("\n", start)
        return self.text[start : end if end >= 0 else len(self.text)].removesuffix("\r")

    def newline(self, line: int) -> str:
        end = self.text.find("\n", self.line_start(line))
        if end > 0 and self.text[end - 1] == "\r":
            return "\r\n"
        if end >= 0:
            return "\n"
        return "\r\n" if "\r\n" in self.text else "\n"

    def where(self, node: Node | int) -> str:
        index = node if isinstance(node, int) else node.start_mark.index
        return f"{self.path}:{self.line_of(index) + 1}"

    # -- finding a cache

    def find_cache(self, name: str) -> _Found:
        matches: list[_Found] = []
        for index, document in enumerate(self.documents):
            root = document.root
            if not isinstance(root, MappingNode):
                continue
            items = _child(root, "items")
            if _scalar(root, "kind") == "List" and isinstance(items, SequenceNode):
                for number, item in enumerate(items.value):
                    if isinstance(item, MappingNode) and _names(item, name):
                        matches.append(_Found(index, number, item, _shared_nodes(root)))
            elif _names(root, name):
                matches.append(_Found(index, None, root, _shared_nodes(root)))
        if not matches:
            raise _NotApplied(
                f"{self.path}: no {KIND} named {name!r} (renamed, moved or removed since the "
                "suggestion was made?)"
            )
        if len(matches) > 1:
            raise _NotApplied(
                f"{self.where(matches[1].cache)}: a second {KIND} named {name!r}; "
                "fix the duplicate name first"
            )
        found = matches[0]
        if id(found.cache) in found.shared:
            raise _NotApplied(f"{self.where(found.cache)}: cache {name!r} is written as an alias")
        return found

    def spec(self, found: _Found) -> MappingNode:
        spec = _child(found.cache, "spec")
        if not isinstance(spec, MappingNode) or id(spec) in found.shared:
            raise _NotApplied(
                f"{self.where(found.cache)}: cache {_name_of(found.cache)!r} has no plain "
                "spec mapping to edit"
            )
        return spec

    def images(self, found: _Found) -> tuple[ScalarNode, SequenceNode]:
        spec = self.spec(found)
        for key, value in spec.value:
            if isinstance(key, ScalarNode) and key.value == "images":
                if not isinstance(value, SequenceNode) or id(value) in found.shared:
                    break
                for item in value.value:
                    if not isinstance(item, ScalarNode) or id(item) in found.shared:
                        raise _NotApplied(
                            f"{self.where(item)}: an image of cache {_name_of(found.cache)!r} "
                            "is not a plain scalar (an alias, or a nested value)"
                        )
                return key, value
        raise _NotApplied(
            f"{self.where(spec)}: cache {_name_of(found.cache)!r} has no plain spec.images list"
        )

    def scalar_span(self, node: ScalarNode) -> tuple[int, int]:
        """Start and end of a one-line scalar's own characters, quotes included, anchor and
        tag excluded; refuses block scalars and scalars written over several lines."""
        start, end = node.start_mark.index, node.end_mark.index
        if "\n" in self.text[start:end]:
            raise _NotApplied(f"{self.where(node)}: {node.value!r} is written over several lines")
        if node.style in ("'", '"'):
            opening = self.text.find(node.style, start, end)
            if opening < 0 or not self.text[start:end].endswith(node.style):
                raise _NotApplied(f"{self.where(node)}: cannot tell where {node.value!r} starts")
            return opening, end
        if node.style is not None:
            raise _NotApplied(f"{self.where(node)}: {node.value!r} is a block scalar")
        if self.text[end - len(node.value) : end] != node.value:
            raise _NotApplied(f"{self.where(node)}: cannot tell where {node.value!r} starts")
        return end - len(node.value), end


def _child(mapping: MappingNode, key: str) -> Node | None:
    for key_node, value in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return value if isinstance(value, Node) else None
    return None


def _scalar(mapping: MappingNode, key: str) -> str | None:
    value = _child(mapping, key)
    return value.value if isinstance(value, ScalarNode) else None


def _names(mapping: MappingNode, name: str) -> bool:
    return _scalar(mapping, "kind") == KIND and _name_of(mapping) == name


def _name_of(mapping: MappingNode) -> str | None:
    metadata = _child(mapping, "metadata")
    return _scalar(metadata, "name") if isinstance(metadata, MappingNode) else None


def _shared_nodes(root: Node) -> set[int]:
    """Nodes reached more than once: an anchor and its aliases are one node object."""
    seen: set[int] = set()
    shared: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                pending += [key, value]
        elif isinstance(node, SequenceNode):
            pending += node.value
    return shared

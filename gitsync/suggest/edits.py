"""Suggestions applied to YAML text: the bytes that must change change, and no others.

`apply_suggestions` takes the texts of the files the suggestions name and
returns their new texts (None deletes a file; a path not given creates one),
and, per suggestion, whether it applied or why not. It reads and writes no
file: the caller reads the tree, validates the result with gitsync's own
loader (`gitsync.suggest.validation.validate_edited`) and writes it or commits
it (`gitsync.sources.gitwrite`).

Why surgical edits rather than a round-trip library such as ruamel.yaml: a
round-trip library re-emits every document it touches from its own model, and
that model does not hold everything a person wrote (indentation of sequences
against their keys, spaces after a dash or before a comment, a flow list's
spacing, the quoting of a scalar nobody changed, CRLF line ends, a `...` end
marker), so a one-tag bump can come back as a diff of a dozen lines, and a
reviewer can no longer see the change for the noise. Here PyYAML's composer
gives each node's start and end offset in the text, the edit replaces exactly
that span (or inserts one line, or deletes a document's lines), and every other
byte is copied through: comments, key order, quoting, blank lines, other
documents, and a `# gitsync: semver=~1.4` marker after an image.

What each kind changes:

* bump-tag: the image whose normalised reference is a `from_images` entry gets
  the matching `to_images` tag or digest; its name is kept as the file spelled
  it (`nginx:1.27` becomes `nginx:1.28`), and so is its quoting.
* add-image: new items at the end of `spec.images`, in the list's own layout
  (block: a line with the siblings' indentation, dash spacing and quoting; flow:
  `, c` after the last item), spelled as the file spells its references
  (familiar `nginx:1.28` where the file writes familiar names).
* resize: the `spec.imageCacheSize` scalar, or a new key line after the
  `images` block, at the indentation of `images`.
* remove-cache: the document's lines, with its `---` line and the comment block
  attached above it (column-0 comment lines directly above, set off by a blank
  line or a document marker from what precedes; comments glued to the previous
  document, and the file's leading comment block, stay). A file left with no
  other document is deleted.
* new-cache: a new file in the style of the repository's other cache files
  (indentation, dash layout, quoting, line ends, retentionDays), never over an
  existing path: `<stem>-2.yaml` and so on instead.

Every edit is checked before it is accepted: both texts are loaded, and the
new documents must equal the old ones with exactly the intended change. A
document that cannot be found (renamed or removed since the suggestion was
made), or is written in a way this module will not edit safely (an alias, a
multi-line or block scalar, a flow `spec`), leaves that file as it was and the
suggestion reported as not applied, with the file and line.

Positions come from the pure-Python composer: its offsets count characters of
the Python string (libyaml's count bytes of the UTF-8 encoding), and on deep
nesting it raises RecursionError where the C composer can crash the process.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

import yaml
from yaml.events import StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gitsync.errors import ImageRefError
from gitsync.imageref import DEFAULT_REGISTRY, ImageRef, parse, same_repository
from gitsync.model import API_VERSION, KIND
from gitsync.suggest.model import Suggestion, SuggestionKind

__all__ = ["EditOutcome", "EditResult", "apply_suggestions"]

_NULL_TAG = "tag:yaml.org,2002:null"
# Line breaks PyYAML counts that a "\n"-based line table would not: refused rather than guessed.
_ODD_BREAKS = re.compile("\r(?!\n)|[\x85\u2028\u2029]")
_DASH_PREFIX = re.compile(r"( *)-( +)")
_FLOW_SEPARATOR = re.compile(r"\s*,\s*")
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]*")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class EditOutcome:
    """What became of one suggestion."""

    suggestion: Suggestion
    applied: bool
    path: str | None  # the file changed, created or deleted (a new cache's actual path)
    detail: str  # what was done, or why not, naming file and line


@dataclass(frozen=True, slots=True)
class EditResult:
    """New texts of the changed files (None: delete the file), and each suggestion's outcome."""

    changes: Mapping[str, str | None]
    outcomes: tuple[EditOutcome, ...]

    @property
    def applied(self) -> tuple[EditOutcome, ...]:
        return tuple(o for o in self.outcomes if o.applied)

    @property
    def skipped(self) -> tuple[EditOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.applied)


class _NotApplied(Exception):  # control flow inside this module only
    """The suggestion cannot be applied; the message says why, with file and line."""


def apply_suggestions(
    files: Mapping[str, str],
    suggestions: Sequence[Suggestion],
    *,
    style_from: Mapping[str, str] | None = None,
    existing_paths: Collection[str] = (),
) -> EditResult:
    """Apply each suggestion in turn to `files` (repository-relative path → text).

    `style_from` holds the texts of the repository's other cache files: a new
    cache mirrors their layout, and its name and path must not clash with theirs
    (default: `files`). `existing_paths` names every other file of the tree, so
    that a new file never takes an existing path. Suggestions apply in order, each
    to the texts the previous ones left; one that fails changes nothing.
    """
    current: dict[str, str | None] = dict(files)
    others = dict(style_from) if style_from is not None else {}
    taken = set(existing_paths) | set(files) | set(others)
    outcomes: list[EditOutcome] = []
    for suggestion in suggestions:
        try:
            path, text, detail = _apply_one(suggestion, current, others, taken)
        except _NotApplied as exc:
            named = suggestion.file or (suggestion.location.path if suggestion.location else None)
            outcomes.append(EditOutcome(suggestion, applied=False, path=named, detail=str(exc)))
            continue
        current[path] = text
        taken.add(path)
        outcomes.append(EditOutcome(suggestion, applied=True, path=path, detail=detail))
    changes = {
        path: text
        for path, text in current.items()
        if (files[path] != text if path in files else text is not None)
    }
    return EditResult(changes=changes, outcomes=tuple(outcomes))


def _apply_one(
    suggestion: Suggestion,
    current: Mapping[str, str | None],
    others: Mapping[str, str],
    taken: set[str],
) -> tuple[str, str | None, str]:
    if suggestion.kind is SuggestionKind.NEW_CACHE:
        return _new_cache(suggestion, current, others, taken)
    path = suggestion.file or (suggestion.location.path if suggestion.location else None)
    if path is None:
        raise _NotApplied(f"cache {suggestion.cache}: the suggestion names no file")
    if path not in current:
        raise _NotApplied(f"{path}: not read, so cache {suggestion.cache} cannot be edited there")
    text = current[path]
    if text is None:
        raise _NotApplied(f"{path}: deleted by an earlier suggestion")
    source = _Source(path, text)
    found = source.find_cache(suggestion.cache)
    edit: _Edit
    if suggestion.kind is SuggestionKind.BUMP_TAG:
        edit = _bump_tag(source, found, suggestion)
    elif suggestion.kind is SuggestionKind.ADD_IMAGE:
        edit = _add_images(source, found, suggestion)
    elif suggestion.kind is SuggestionKind.RESIZE:
        edit = _resize(source, found, suggestion)
    else:
        edit = _remove(source, found)
    new_text = edit.apply(text)
    if new_text is not None:
        _check_result(source, found, edit, new_text)
    return path, new_text, edit.detail


# ---------------------------------------------------------------- reading the text


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


# ---------------------------------------------------------------- the edits


@dataclass(slots=True)
class _Edit:
    """Replacements (start, end, text) on the old text; `expect` changes the loaded cache."""

    replacements: list[tuple[int, int, str]]
    expect: Callable[[dict[str, Any]], None] | None  # None: the document goes
    detail: str
    delete_file: bool = False

    def apply(self, text: str) -> str | None:
        if self.delete_file:
            return None
        for start, end, new in sorted(self.replacements, reverse=True):
            text = text[:start] + new + text[end:]
        return text


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


def _check_result(source: _Source, found: _Found, edit: _Edit, new_text: str) -> None:
    """The new text must load as the old one with exactly the intended change."""
    try:
        before = list(yaml.load_all(source.text, Loader=yaml.SafeLoader))
        after = list(yaml.load_all(new_text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError) as exc:
        raise _NotApplied(
            f"{source.path}: the edit would not load ({exc}); left as it was"
        ) from exc
    expected = copy.deepcopy(before)
    if edit.expect is None:
        del expected[found.index]
    else:
        cache = expected[found.index]
        if found.item is not None:
            cache = cache["items"][found.item]
        edit.expect(cache)
    if after != expected:
        raise _NotApplied(
            f"{source.where(found.cache)}: the edit of cache {_name_of(found.cache)!r} would "
            "change more than intended (an unusual layout); left as it was, change it by hand"
        )


# ---------------------------------------------------------------- new caches


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


# ---------------------------------------------------------------- references and scalars


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

"""YAML bytes to plain Python values with the position of every key and value, safely.

How the YAML is read, and why:

* Not with `yaml.load`: that throws away positions and expands aliases into
  copies (the "billion laughs" attack needs only a few hundred bytes). Not
  with `yaml.compose_all` either: its composer recurses in C once per
  nesting level (a 100 KiB file of `[[[[…` kills the interpreter with a
  segmentation fault) and builds a node tree we would then walk again.
  Instead the libyaml *event* stream (`CSafeLoader.get_event`; pure-Python
  `SafeLoader` when libyaml is missing) is turned into plain Python values
  in one iterative pass with an explicit stack. That pass records the
  position of every key and value by JSON path, detects duplicate keys, caps
  nesting depth, and counts alias expansion against a budget while sharing
  (never copying) aliased values, so memory stays bounded and it stops at
  the offending line.
* Scalars resolve like YAML 1.1 (PyYAML, and kubectl's go-yaml v2): `yes` is a
  boolean, `012` octal. Timestamps stay strings, as they do for kubectl.

This module knows YAML and nothing of ImageCache: what the values mean is
`documents`'s business.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from gitsync.specs.text import JsonPath, _short

MAX_DEPTH: Final = 64  # an ImageCache nests 4 deep; kubectl output with managedFields about 12
MAX_ALIASES: Final = 100  # aliases per document; kubectl output has none
MAX_ALIAS_EXPANSION: Final = 10_000  # nodes aliases may add per document (billion laughs: 10^9)


class _Mark(Protocol):
    line: int
    column: int


class _YamlProblem(Exception):  # internal control flow, caught by documents._check_data
    """Stops reading a file: the YAML cannot be turned into values safely."""

    def __init__(self, rule: str, message: str, mark: _Mark) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.line = mark.line
        self.column = mark.column


Problem = tuple[str, str, _Mark, JsonPath]  # rule, message, where, JSON path


@dataclass(slots=True)
class _Document:
    value: Any
    start: _Mark
    marks: dict[JsonPath, _Mark]  # where each value starts
    key_marks: dict[JsonPath, _Mark]  # where each mapping key is written
    problems: list[Problem]
    # Where each scalar (or alias) in a sequence ends: what follows an image on its
    # line, a `# gitsync:` marker, is read from the file text there (`markers`).
    item_ends: dict[JsonPath, _Mark]


_NO_KEY: Final[Any] = object()
_MERGE: Final[Any] = object()
_MISSING: Final[Any] = object()


class _Frame:
    """An open mapping or sequence while its events stream in."""

    __slots__ = (
        "anchor",
        "is_map",
        "key",
        "key_mark",
        "merge_mark",
        "merges",
        "path",
        "start",
        "value",
    )

    def __init__(
        self, value: Any, path: JsonPath, anchor: str | None, start: int, *, is_map: bool
    ) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.start = start  # node counter when it opened, to size it for the alias budget
        self.is_map = is_map
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.merge_mark: Any = None
        self.merges: list[Any] | None = None


_CORE = "tag:yaml.org,2002:"
_CONTAINER_TAGS = frozenset({None, "!", _CORE + "map", _CORE + "seq"})
_BOOL_VALUES = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = (
    yaml.resolver.Resolver.yaml_implicit_resolvers
)
_PLAIN_CACHE: dict[str, Any] = {}  # plain scalar text -> value; values are immutable
_PLAIN_CACHE_SIZE: Final = 8192


def _to_int(text: str) -> int:
    """YAML 1.1 int, as PyYAML's SafeConstructor: 0b, 0x, leading-0 octal, sexagesimal."""
    value = text.replace("_", "")
    sign = 1
    if value[0] in "+-":
        sign = -1 if value[0] == "-" else 1
        value = value[1:]
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value[0] == "0":
        return sign * int(value, 8)
    if ":" in value:
        total = 0
        for part in value.split(":"):
            total = total * 60 + int(part)
        return sign * total
    return sign * int(value)


def _to_float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = 1.0
    if value[0] in "+-":
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == ".inf":
        return sign * float("inf")
    if value == ".nan":
        return float("nan")
    if ":" in value:
        total = 0.0
        for part in value.split(":"):
            total = total * 60 + float(part)
        return sign * total
    return sign * float(value)


def _convert(tag: str, text: str) -> Any:
    if tag == _CORE + "int":
        return _to_int(text)
    if tag == _CORE + "float":
        return _to_float(text)
    if tag == _CORE + "bool":
        return _BOOL_VALUES[text.lower()]
    if tag == _CORE + "null":
        return None
    return text  # str, timestamp (kept as text, as kubectl does), merge, value


def _resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar, by YAML 1.1 implicit resolution."""
    value = _PLAIN_CACHE.get(text, _MISSING)
    if value is not _MISSING:
        return value
    value = text
    if not text:
        value = None
    else:
        for tag, pattern in _RESOLVERS.get(text[0], ()):
            if pattern.match(text):
                value = _convert(tag, text)
                break
    if len(_PLAIN_CACHE) >= _PLAIN_CACHE_SIZE:
        _PLAIN_CACHE.clear()  # bounded: names are unique, images and sizes repeat
    _PLAIN_CACHE[text] = value
    return value


_EXPLICIT_SCALAR_TAGS = frozenset(
    _CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)


def _tagged(event: Any) -> tuple[Any, str | None]:  # a ScalarEvent; stubs type marks loosely
    """The value of a scalar with a tag, and the tag if gitsync does not understand it."""
    tag = event.tag
    if tag is None:
        return event.value, None  # quoted or block scalar: a string
    if tag in ("!", _CORE + "str"):
        return event.value, None
    if tag in _EXPLICIT_SCALAR_TAGS:
        try:
            return _convert(tag, event.value), None
        except (ValueError, KeyError, IndexError):
            raise _YamlProblem(
                "yaml-tag",
                f"{_short(event.value)} cannot be read as {tag.removeprefix(_CORE)}",
                event.start_mark,
            ) from None
    return event.value, tag


try:
    from yaml import _yaml

    # The bare libyaml parser: only events are needed, not CSafeLoader's constructor and resolver.
    _Loader: Any = _yaml.CParser  # Any: its events' marks are typed loosely in the stubs
except ImportError:  # PyYAML built without libyaml: slower, same results
    _Loader = yaml.SafeLoader

# libyaml 0.2.6 (bundled since PyYAML 6.0.4) has a nesting limit of its own, 1000 levels, and
# its scanner reads a line up to 1024 characters ahead of the events it has handed out; so on
# `[[[[…` it stops before gitsync has seen the 65th level, with a bare scanner error at column
# 1001. `_documents` then goes on with the pure-Python parser (no limit of its own, same events
# and marks), skipping the documents already yielded, so that MAX_DEPTH decides at the 65th
# level whatever libyaml is installed. Only files nested 1000 deep pay for the re-read: at
# worst one 1 MiB file parsed again at the pure-Python speed (about 2 s).
_LIBYAML_DEPTH: Final = "exceeded maximum nesting depth"


def _skip_documents(get_event: Callable[[], Any], documents: int) -> None:
    """Read past the first `documents` documents of a fresh parser's event stream."""
    while documents:
        event = get_event()
        if event is None:
            return
        if type(event) is DocumentEndEvent:
            documents -= 1


def _documents(data: bytes) -> Iterator[_Document]:  # noqa: PLR0912, PLR0915  # one hot loop, kept flat for speed
    """Each YAML document of `data` as plain values with positions, in one iterative pass.

    This loop runs once per YAML event (35 per ImageCache), so the common
    case, a plain scalar in a mapping, takes the fewest steps; anything rarer
    (anchors, aliases, tags, merge keys, duplicate keys) leaves it early.
    """
    loader = _Loader(data)
    get_event: Callable[[], Any] = loader.get_event
    finished = 0  # documents yielded: where a re-read with the pure-Python parser resumes
    plain_cache = _PLAIN_CACHE
    document: _Document | None = None
    stack: list[_Frame] = []
    top: Any = None  # the innermost open _Frame, or None at the document's root
    anchors: dict[str, tuple[Any, int]] = {}
    marks: dict[JsonPath, _Mark] = {}
    key_marks: dict[JsonPath, _Mark] = {}
    problems: list[Problem] = []
    item_ends: dict[JsonPath, _Mark] = {}
    aliases = 0
    nodes = 0  # events so far in this document, aliases counted as what they expand to
    expanded = 0  # nodes that aliases added
    try:
        while True:
            try:
                event = get_event()
            except yaml.MarkedYAMLError as exc:
                if exc.problem != _LIBYAML_DEPTH or isinstance(loader, yaml.SafeLoader):
                    raise
                loader.dispose()
                loader = yaml.SafeLoader(data)
                get_event = loader.get_event
                _skip_documents(get_event, finished)
                continue  # its next event starts the unfinished document again, fresh state
            if event is None:
                return
            cls = type(event)
            nodes += 1
            # 1. Make the event a finished value (scalar, alias, closed container), or open one.
            if cls is ScalarEvent:
                if top is not None and top.is_map and top.key is _NO_KEY:
                    # A mapping key, kept as written: `on:` stays "on" and `1:` stays "1".
                    key = event.value
                    if key in top.value or key == "<<":
                        if key == "<<" and event.tag is None and not event.style:
                            top.key = _MERGE
                            top.merge_mark = event.start_mark
                            continue
                        if key in top.value:
                            problems.append(_duplicate_key(top, key, event.start_mark, key_marks))
                    top.key = key
                    top.key_mark = event.start_mark
                    continue
                mark = event.start_mark
                if event.tag is None and event.implicit[0]:
                    text = event.value
                    value = plain_cache.get(text, _MISSING)
                    if value is _MISSING:
                        value = _resolve_plain(text)
                else:
                    value, odd_tag = _tagged(event)
                    if odd_tag is not None:
                        problems.append(
                            (
                                "yaml-tag",
                                f"unsupported YAML tag {_short(odd_tag)}; ImageCache fields are "
                                "plain strings, integers and lists",
                                mark,
                                _child_path(top),
                            )
                        )
                count = 1
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                is_map = cls is MappingStartEvent
                mark = event.start_mark
                if top is None:
                    path: JsonPath = ()
                elif not top.is_map:
                    path = (*top.path, len(top.value))
                elif top.key is _NO_KEY:
                    raise _YamlProblem(
                        "yaml-key",
                        "a mapping key must be a plain string, not a "
                        + ("mapping" if is_map else "list"),
                        mark,
                    )
                else:
                    path = _child_path(top)
                    key_marks[path] = top.key_mark if top.key is not _MERGE else top.merge_mark
                marks[path] = mark
                if event.tag is not None and event.tag not in _CONTAINER_TAGS:
                    problems.append(
                        ("yaml-tag", f"unsupported YAML tag {_short(event.tag)}", mark, path)
                    )
                top = _Frame({} if is_map else [], path, event.anchor, nodes, is_map=is_map)
                stack.append(top)
                if len(stack) > MAX_DEPTH:
                    raise _YamlProblem(
                        "yaml-depth",
                        f"nesting is deeper than {MAX_DEPTH} levels (an ImageCache needs 4); "
                        "gitsync refuses the file rather than risk exhausting memory",
                        mark,
                    )
                continue
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                frame = stack.pop()
                top = stack[-1] if stack else None
                if frame.merges is not None:
                    _apply_merges(frame, marks, key_marks, problems)
                if frame.anchor is not None:
                    anchors[frame.anchor] = (frame.value, nodes - frame.start)
                if top is None:
                    if document is not None:
                        document.value = frame.value
                elif not top.is_map:
                    top.value.append(frame.value)
                else:
                    if top.key is _MERGE:
                        top.merges = [*(top.merges or ()), frame.value]
                    else:
                        top.value[top.key] = frame.value
                    top.key = _NO_KEY
                continue
            elif cls is AliasEvent:
                mark = event.start_mark
                target = anchors.get(event.anchor)
                if target is None:
                    raise _YamlProblem(
                        "yaml-syntax",
                        f"alias *{event.anchor} refers to no earlier anchor &{event.anchor}",
                        mark,
                    )
                value, count = target
                aliases += 1
                nodes += count
                expanded += count  # shared, not copied, but everything downstream walks it whole
                if aliases > MAX_ALIASES or expanded > MAX_ALIAS_EXPANSION:
                    raise _YamlProblem(
                        "yaml-alias",
                        f"aliases expand to more than {MAX_ALIAS_EXPANSION} nodes or number more "
                        f"than {MAX_ALIASES} in one document (an alias bomb?); write the values "
                        "out instead",
                        mark,
                    )
                if top is not None and top.is_map and top.key is _NO_KEY:
                    if not isinstance(value, str):
                        raise _YamlProblem("yaml-key", "a mapping key must be a plain string", mark)
                    top.key = value
                    top.key_mark = mark
                    continue
            elif cls is DocumentStartEvent:
                marks, key_marks, problems, item_ends = {}, {}, [], {}
                document = _Document(None, event.start_mark, marks, key_marks, problems, item_ends)
                stack, top, anchors, aliases, nodes, expanded = [], None, {}, 0, 0, 0
                continue
            elif cls is DocumentEndEvent:
                finished += 1
                if document is not None:
                    yield document
                document = None
                continue
            else:
                continue  # stream start and end
            # 2. Attach the finished scalar or alias to its parent.
            if top is None:
                if document is not None:
                    marks[()] = mark
                    document.value = value
            elif top.is_map:
                key = top.key
                top.key = _NO_KEY
                if key is _MERGE:
                    top.merges = [*(top.merges or ()), value]
                    continue
                top.value[key] = value
                path = (*top.path, key)
                marks[path] = mark
                key_marks[path] = top.key_mark
            else:
                path = (*top.path, len(top.value))
                marks[path] = mark
                item_ends[path] = event.end_mark
                top.value.append(value)
    finally:
        loader.dispose()


def _duplicate_key(top: _Frame, key: str, mark: _Mark, key_marks: dict[JsonPath, _Mark]) -> Problem:
    path = (*top.path, key)
    first = key_marks.get(path)
    where = f" (first at line {first.line + 1})" if first is not None else ""
    return (
        "yaml-duplicate-key",
        f"duplicate key {_short(key)}{where}; YAML keeps only the last one, so the first would be "
        "silently lost: write each key once",
        mark,
        path,
    )


def _child_path(top: _Frame | None) -> JsonPath:
    """The JSON path of the next value inside `top`."""
    if top is None:
        return ()
    if not top.is_map:
        return (*top.path, len(top.value))
    if top.key is _MERGE:
        return (*top.path, "<<")
    return (*top.path, top.key)


def _apply_merges(
    frame: _Frame,
    marks: dict[JsonPath, _Mark],
    key_marks: dict[JsonPath, _Mark],
    problems: list[Problem],
) -> None:
    """YAML 1.1 merge keys (`<<: *base`): keys written in the mapping win over merged ones."""
    target: dict[str, Any] = frame.value
    merge_mark = frame.merge_mark
    for source in frame.merges or ():
        for item in source if isinstance(source, list) else [source]:
            if not isinstance(item, dict):
                problems.append(
                    (
                        "yaml-syntax",
                        "a merge key '<<' takes a mapping or a list of mappings",
                        merge_mark,
                        frame.path,
                    )
                )
                continue
            for key, value in item.items():
                if key not in target:
                    target[key] = value
                    path = (*frame.path, key)
                    marks[path] = merge_mark
                    key_marks[path] = merge_mark


def _yaml_error(exc: yaml.YAMLError, data: bytes) -> tuple[int, int, str]:
    """1-based line and column of a PyYAML error, and a message without its source excerpt."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, 1, f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "malformed YAML"
    context = ""
    if exc.context:
        context = f" {exc.context}"
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            context += f" (line {exc.context_mark.line + 1})"
        context += ":"
    if mark is None:
        return 1, 1, f"invalid YAML:{context} {problem}"
    lines = data.split(b"\n", mark.line + 1)
    text = lines[mark.line].decode("utf-8", errors="replace") if mark.line < len(lines) else ""
    if text[mark.column : mark.column + 1] == "\t":
        problem += ": a tab (YAML indents with spaces only)"
    return mark.line + 1, mark.column + 1, f"invalid YAML:{context} {problem}"

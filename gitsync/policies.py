"""Image policies: which of a repository's tags is the newest one a `# gitsync:` marker allows.

Why: a cache of `api:1.4.2` goes stale the day `1.4.3` ships. A marker at the
end of the image line, as Flux's `$imagepolicy` markers and Renovate's
comments do, names the policy; the daemon lists the repository's tags and
proposes a `bump-tag` when the newest allowed tag is newer than the line's.
This module is the pure half: a marker's text becomes an `ImagePolicy`, and
tags are compared under it. Reading markers out of YAML is `gitsync.specs`'s
job, listing tags the registry client's.

A marker's text is what follows `gitsync:` in the comment:

* `semver=RANGE`: an npm-style range (`~1.4`, `^1`, `>=1.2 <2`, `1.x`,
  `~1.4 || ^2`, `1.2 - 1.4`), read by `semantic_version.NpmSpec`. The range is
  the rest of the marker. Tags are full versions `MAJOR.MINOR.PATCH` with an
  optional pre-release (`1.4.3`, `2.0.0-rc.1`), optionally written with a
  leading `v`; a pre-release is allowed only when the range names one of the
  same `MAJOR.MINOR.PATCH`, as npm does, so `~1.4` never picks `1.4.4-rc.1`.
* `numerical [filter=REGEX]`: tags ordered by the first capture group of
  REGEX read as a non-negative integer (`numerical filter=^(\\d{8})-` for
  `20261201-ab12`); `alphabetical [filter=REGEX]` orders by that group as a
  string. Without a capture group the whole tag is the key, and without a
  filter every tag is a candidate. REGEX is searched (not anchored: write `^`
  and `$`), as Flux's `filterTags.pattern` and `extract`, and is one word:
  tags hold no spaces, so neither does a filter.

The newest tag is the one with the greatest key; equal keys (`v1.4.3` and
`1.4.3`, or `20261201-ab12` and `20261201-cd34`) are broken by the greater
tag string, so the answer never depends on the order the registry lists tags
in. A tag that does not parse under the policy, or is not a valid tag at all,
is no candidate.
"""

from __future__ import annotations

import difflib
import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from gitsync.errors import PermanentError

if TYPE_CHECKING:
    # Imported where a range is read or a version compared: it loads importlib.metadata,
    # and `gitsync validate` of a repository without semver markers should not pay for it.
    import semantic_version

__all__ = [
    "ImagePolicy",
    "PolicyError",
    "PolicyKind",
    "is_newer",
    "newest",
    "parse_marker",
]

# The distribution spec's tag grammar: what a registry may list, and all a policy compares.
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGITS: Final = re.compile(r"[0-9]{1,128}")
_WORD: Final = re.compile(r"\S+")
# A range's parts: `||`, a run without spaces or bars (`>=1.2`, `-`), or a stray `|`.
_RANGE_PART: Final = re.compile(r"\|\||[^\s|]+|\|")
_RANGE_EXAMPLES: Final = "write ranges such as ~1.4, ^1, >=1.2 <2, 1.x or ~1.4 || ^2"
_MAX_MARKER: Final = 1024  # a marker longer than this is not one someone wrote by hand
_EXAMPLES: Final = "semver=~1.4, numerical filter=^(\\d{8})- or alphabetical filter=^main-(.*)"


class PolicyError(PermanentError, ValueError):
    """A `# gitsync:` marker, range or regex that cannot be read.

    `column` is 1-based within `text` (the marker after `gitsync:`), at the
    offending part, so that validation can point at the exact file column.
    """

    def __init__(self, text: str, column: int, reason: str) -> None:
        super().__init__(f"image policy {text!r}: {reason} (column {column})")
        self.text = text
        self.column = column
        self.reason = reason


class PolicyKind(enum.StrEnum):
    SEMVER = "semver"
    NUMERICAL = "numerical"
    ALPHABETICAL = "alphabetical"


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """One parsed marker: its kind, its range or filter, and the text as written.

    Two policies are equal when their text is; the compiled range and regex
    ride along uncompared.
    """

    text: str
    kind: PolicyKind
    range: str | None = None  # semver: the npm range, whitespace as written collapsed
    filter: str | None = None  # numerical, alphabetical: the regex, if any
    _spec: semantic_version.NpmSpec | None = field(default=None, compare=False, repr=False)
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@functools.lru_cache(maxsize=1024)
def parse_marker(text: str) -> ImagePolicy:
    """The policy a marker's text names, or `PolicyError` with the column of the bad part.

    `text` is what follows `gitsync:` (leading and trailing spaces allowed):
    `semver=~1.4`, `numerical filter=^(\\d+)$`, `alphabetical`.
    """
    if len(text) > _MAX_MARKER:
        raise PolicyError(text, _MAX_MARKER + 1, f"is longer than {_MAX_MARKER} characters")
    first = _WORD.search(text)
    if first is None:
        raise PolicyError(text, len(text) + 1, f"names no policy; write {_EXAMPLES}")
    word = first.group()
    name, equals, _ = word.partition("=")
    if name == PolicyKind.SEMVER:
        if not equals:
            raise PolicyError(
                text, first.end() + 1, "semver needs a range: semver=RANGE, e.g. semver=~1.4"
            )
        start = first.start() + len("semver=")
        return _semver(text, start)
    if name in (PolicyKind.NUMERICAL, PolicyKind.ALPHABETICAL):
        if equals:
            raise PolicyError(
                text,
                first.start() + len(name) + 1,
                f"{name} takes no value; write {name} or {name} filter=REGEX",
            )
        return _ordered(text, PolicyKind(name), first.end())
    close = difflib.get_close_matches(name, list(PolicyKind), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise PolicyError(
        text, first.start() + 1, f"unknown policy {_quoted(name)}{hint}; write {_EXAMPLES}"
    )


def _semver(text: str, start: int) -> ImagePolicy:
    """`semver=` and the npm range that fills the rest of the marker, from `start`."""
    import semantic_version  # noqa: PLC0415  # see TYPE_CHECKING above

    tokens = [(m.group(), m.start()) for m in _RANGE_PART.finditer(text, start)]
    if not tokens:
        raise PolicyError(
            text, start + 1, "semver needs a range after '=', e.g. semver=~1.4 or semver=^1"
        )
    alternatives: list[list[tuple[str, int]]] = [[]]
    for part, column in tokens:
        if part == "||":
            alternatives.append([])
        else:
            alternatives[-1].append((part, column))
    for index, alternative in enumerate(alternatives):
        _check_alternative(text, alternative, tokens, index)
    expression = " ".join(part for part, _ in tokens)
    try:
        spec = semantic_version.NpmSpec(expression)
    except (ValueError, TypeError):
        raise PolicyError(
            text, start + 1, f"{_quoted(expression)} is not an npm-style range; {_RANGE_EXAMPLES}"
        ) from None
    return ImagePolicy(text=text.strip(), kind=PolicyKind.SEMVER, range=expression, _spec=spec)


def _check_alternative(
    text: str, alternative: list[tuple[str, int]], tokens: list[tuple[str, int]], index: int
) -> None:
    """One alternative between `||`s: not empty, a well-formed hyphen range, known blocks."""
    import semantic_version  # noqa: PLC0415  # see TYPE_CHECKING above

    if not alternative:
        bars = [column for part, column in tokens if part == "||"]
        column = bars[index] if index < len(bars) else bars[-1]
        raise PolicyError(
            text, column + 1, "an empty alternative around '||' would allow any version"
        )
    hyphens = [column for part, column in alternative if part == "-"]
    if hyphens and (len(alternative) != 3 or alternative[1][0] != "-"):
        raise PolicyError(
            text,
            hyphens[0] + 1,
            "a hyphen range is LOW - HIGH, alone between '||'s (e.g. semver=1.2 - 1.4)",
        )
    for block, column in alternative:
        if block == "-":
            continue
        try:
            semantic_version.NpmSpec(block)
        except (ValueError, TypeError):
            raise PolicyError(
                text,
                column + 1,
                f"{_quoted(block)} is not part of an npm-style range; {_RANGE_EXAMPLES}",
            ) from None


def _ordered(text: str, kind: PolicyKind, position: int) -> ImagePolicy:
    """`numerical` or `alphabetical`, and an optional `filter=REGEX`, from `position`."""
    pattern: str | None = None
    regex: re.Pattern[str] | None = None
    for option in _WORD.finditer(text, position):
        key, equals, value = option.group().partition("=")
        if key != "filter" or not equals:
            raise PolicyError(
                text,
                option.start() + 1,
                f"unexpected {_quoted(option.group())}; {kind} takes filter=REGEX",
            )
        value_start = option.start() + len("filter=")
        if pattern is not None:
            raise PolicyError(text, option.start() + 1, "filter is given twice; give it once")
        if not value:
            raise PolicyError(
                text, value_start + 1, "filter needs a regular expression, e.g. filter=^(\\d+)$"
            )
        try:
            regex = re.compile(value)
        except (re.error, RecursionError, OverflowError) as exc:
            offset = getattr(exc, "pos", None)
            where = value_start + (offset if isinstance(offset, int) else 0)
            raise PolicyError(
                text,
                where + 1,
                f"filter {_quoted(value)} is not a regular expression: {_reason(exc)}",
            ) from None
        pattern = value
    return ImagePolicy(text=text.strip(), kind=kind, filter=pattern, _regex=regex)


def _quoted(part: str, limit: int = 60) -> str:
    """Part of a marker as written (backslashes and all), cut short: markers can be long."""
    return f"'{part if len(part) <= limit else part[: limit - 1] + '…'}'"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, re.error):
        return str(exc.msg)
    return "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)


# -- comparing tags -------------------------------------------------------------------


def _key(policy: ImagePolicy, tag: str) -> semantic_version.Version | int | str | None:
    """What `tag` sorts by under `policy`, or None when the policy does not read it."""
    if not _TAG.fullmatch(tag):
        return None
    if policy.kind is PolicyKind.SEMVER:
        import semantic_version  # noqa: PLC0415  # see TYPE_CHECKING above

        try:
            return semantic_version.Version(tag[1:] if tag.startswith("v") else tag)
        except ValueError:
            return None
    value = _extracted(policy._regex, tag)
    if value is None or policy.kind is PolicyKind.ALPHABETICAL:
        return value
    return int(value) if _DIGITS.fullmatch(value) else None


def _extracted(regex: re.Pattern[str] | None, tag: str) -> str | None:
    """The filter's first capture group in `tag` (the tag when it has none), None if no match."""
    if regex is None:
        return tag
    found = regex.search(tag)
    if found is None:
        return None
    return found.group(1) if regex.groups else tag  # None when the group took no part


def _allowed(policy: ImagePolicy, tag: str) -> semantic_version.Version | int | str | None:
    """`_key`, for tags the policy allows (a semver range narrows what parses)."""
    key = _key(policy, tag)
    if key is None or policy._spec is None:
        return key
    return key if not isinstance(key, int | str) and policy._spec.match(key) else None


def newest(policy: ImagePolicy, tags: Iterable[str]) -> str | None:
    """The newest tag `policy` allows among `tags`; None when it allows none."""
    best: tuple[semantic_version.Version | int | str, str] | None = None
    for tag in tags:
        key = _allowed(policy, tag)
        if key is not None and (best is None or _greater((key, tag), best)):
            best = (key, tag)
    return best[1] if best is not None else None


def is_newer(policy: ImagePolicy, candidate: str, current: str) -> bool:
    """Whether moving from tag `current` to `candidate` goes forward under `policy`.

    `candidate` must be a tag the policy allows. `current` need not be (a line
    may hold `2.0.0` under `semver=~1.4`, or `latest`): one that parses is
    compared by its key, so `~1.4` never proposes `1.4.3` over `2.0.0`; one
    that does not parse under the policy is older than any allowed tag. Equal
    keys (`v1.4.3` after `1.4.3`) are not newer.
    """
    new = _allowed(policy, candidate)
    if new is None:
        return False
    old = _key(policy, current)
    if old is None:
        return True
    return bool(new > old)  # type: ignore[operator]  # keys of one policy share a type


def _greater(
    a: tuple[semantic_version.Version | int | str, str],
    b: tuple[semantic_version.Version | int | str, str],
) -> bool:
    if a[0] != b[0]:
        return bool(a[0] > b[0])  # type: ignore[operator]  # keys of one policy share a type
    return a[1] > b[1]

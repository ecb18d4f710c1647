"""How a cache follows its images after it is built: the refresh annotation and image policies.

A cache built from `api:1.4.2` goes stale two ways without anyone touching
Git: the tag is re-pushed upstream, or `1.4.3` ships. The spec says how the
daemon follows them, and this module checks what it says:

* `gitsync.io/refresh: 6h` (a duration as Go and Flux write it, at least 1s):
  how often the daemon resolves the cache's tags to digests, rebuilding it
  when one moved, and checks its image policies; `CacheSpec.refresh_seconds`.
  A bad value is an `annotation` error.
* The `mutable-tag` warning for a cache holding images by tag (no digest)
  without that annotation, one per cache, at its first such image; it says
  what the annotation does. `latest` and untagged images keep a warning of
  their own (`documents`).
* `# gitsync: …` markers (`gitsync.policies` reads their text). The YAML
  event stream carries no comments, so a marker is read from the file's
  text: the rest of the line after an image scalar's end (`yaml_events`
  records where each sequence item ends). Only a comment ending an image's
  line counts; between the image and the `#` only spaces and a flow
  sequence's `,`, `]` or `}` may stand::

      images:
        - ccr.ccs.tencentyun.com/team/api:1.4.2   # gitsync: semver=~1.4
      images: [web:20261201-ab12,   # gitsync: numerical filter=^(\\d{8})-
               nginx:1.27.2]

  A malformed marker, range or regex, a marker on a line holding several
  images, or one on an image pinned by digest alone (no tag to move) is an
  `image-policy` error at the column of the offending part; a `# gitsync:`
  comment anywhere else is an `image-policy` warning that it is ignored.
  `CacheSpec.image_policies` pairs each image (as written) with its marker.

Files without the text `gitsync:` (almost all) never have their lines split.
"""

from __future__ import annotations

import re
from typing import Any, Final

from gitsync import imageref, policies
from gitsync.errors import ImageRefError
from gitsync.model import Diagnostic, Pairs, Severity, SourceLocation
from gitsync.specs.context import _Context
from gitsync.specs.text import JsonPath, _clip, _short
from gitsync.specs.yaml_events import _Mark
from gitsync.timeparse import DURATION_HINT, go_duration_ns

REFRESH_ANNOTATION: Final = "gitsync.io/refresh"
_NS: Final = 10**9
_MIN_REFRESH_NS: Final = _NS  # as the --refresh-interval flag: at least a second
_MAX_REFRESH_NS: Final = 36500 * 86400 * _NS  # a century, as every duration gitsync reads
_MARKER: Final = b"gitsync:"
_MARKER_TEXT: Final = _MARKER.decode()
# What may follow an image on its line for the comment to be its marker.
_AFTER_IMAGE: Final = re.compile(r"[ \t,\]}]*#[ \t]*gitsync:")
# A marker-like comment anywhere on a line, to warn about those no image claimed.
_ANY_MARKER: Final = re.compile(r"(?:^|[ \t])#[ \t]*gitsync:")
# YAML's line breaks (libyaml's and PyYAML's marks count lines by these), not str.splitlines'.
_LINE_BREAK: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_SHOWN_TAGGED: Final = 2  # images named in the mutable-tag warning besides the first


class _Source:
    """One file's text, split into lines only when it holds a marker."""

    def __init__(self, data: bytes) -> None:
        self.has_markers = _MARKER in data
        self._data = data
        self._lines: list[str] | None = None
        self.claimed: set[int] = set()  # 0-based lines whose marker an image took

    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = _LINE_BREAK.split(self._data.decode("utf-8", errors="replace"))
        return self._lines

    def marker_after(self, end: _Mark) -> tuple[str, int] | None:
        """The marker ending the line where a scalar ends: its text and 0-based column."""
        if not self.has_markers:
            return None
        lines = self.lines()
        if end.line >= len(lines):
            return None
        line = lines[end.line]
        found = _AFTER_IMAGE.match(line, end.column)
        if found is None:
            return None
        text = line[found.end() :]
        start = found.end() + len(text) - len(text.lstrip())
        return text.strip(), start


def _refresh_seconds(annotations: dict[str, Any], ctx: _Context) -> float | None:
    """`gitsync.io/refresh` in seconds; None when absent or wrong (reported)."""
    value = annotations.get(REFRESH_ANNOTATION)
    if not isinstance(value, str):  # absent; non-strings are schema errors already
        return None
    seconds = _REFRESH_VALUES.get(value)
    if seconds is None:
        seconds = _refresh_value(value)
        if len(_REFRESH_VALUES) >= 1024:
            _REFRESH_VALUES.clear()  # bounded; a repository writes a handful of intervals
        _REFRESH_VALUES[value] = seconds
    if isinstance(seconds, str):
        ctx.add(
            ("metadata", "annotations", REFRESH_ANNOTATION),
            "annotation",
            f"annotation {REFRESH_ANNOTATION} {_short(value)} {seconds}; leave it out to"
            " refresh on the daemon's --refresh-interval",
        )
        return None
    return seconds


_REFRESH_VALUES: dict[str, float | str] = {}  # every cache of a repository says "6h"


def _refresh_value(value: str) -> float | str:
    """An annotation's seconds, or what is wrong with it (a phrase after the value)."""
    text = value.strip()
    body = text[1:] if text[:1] in ("+", "-") else text  # signs as Go's ParseDuration reads them
    nanoseconds = go_duration_ns(body, limit=_MAX_REFRESH_NS)
    if text.startswith("-") and nanoseconds:
        return "is negative; write how often to refresh, e.g. 6h"
    if nanoseconds is None:
        return f"is not a duration; {DURATION_HINT}"
    if nanoseconds < _MIN_REFRESH_NS:
        return "is shorter than 1s; refresh at most once a second (e.g. 30s, 6h)"
    if nanoseconds > _MAX_REFRESH_NS:
        return "is longer than 36500d (100 years); write e.g. 6h or 7d"
    return nanoseconds / _NS


def _tagged_warning(tagged: list[tuple[int, str]], ctx: _Context, *, policies: bool) -> None:
    """The mutable-tag warning for a cache holding `tagged` (index, image) without refresh."""
    index, first = tagged[0]
    path: JsonPath = ("spec", "images", index)
    more = ""
    if len(tagged) > 1:
        shown = ", ".join(_short(image) for _, image in tagged[1 : 1 + _SHOWN_TAGGED])
        rest = ", …" if len(tagged) > 1 + _SHOWN_TAGGED else ""
        count = len(tagged) - 1
        more = f" and {count} more image{'s' if count > 1 else ''} ({shown}{rest})"
    checked = " and check its image policies" if policies else ""
    ctx.add(
        path,
        "mutable-tag",
        f"{ctx.name(path)} {_short(first)}{more} {'are' if more else 'is'} held by tag, and a tag"
        " can be re-pushed upstream while the cache keeps what it was built with: annotate the"
        f" cache {REFRESH_ANNOTATION} (e.g. 6h) to"
        f" resolve its tags to digests on that interval, rebuild it when one moves{checked},"
        " or pin digests (@sha256:…)",
        severity=Severity.WARNING,
    )


def _image_policies(images: list[Any], ctx: _Context, source: _Source) -> Pairs:
    """(image as written, marker text) for each image whose line ends with a good marker."""
    if not source.has_markers:
        return ()
    base = (*ctx.prefix, "spec", "images")
    ends = ctx.document.item_ends
    found: list[tuple[int, str, str, int, int]] = []  # index, image, text, line, column
    for index, image in enumerate(images):
        end = ends.get((*base, index))
        if not isinstance(image, str) or end is None:
            continue
        marker = source.marker_after(end)
        if marker is not None:
            source.claimed.add(end.line)
            found.append((index, image, marker[0], end.line, marker[1]))
    if not found:
        return ()
    # Which images each line holds: a marker names an image only on a line of its own.
    holders: dict[int, set[int]] = {}
    for index in range(len(images)):
        for mark in (ctx.document.marks.get((*base, index)), ends.get((*base, index))):
            if mark is not None:
                holders.setdefault(mark.line, set()).add(index)
    kept: list[tuple[str, str]] = []
    for index, image, text, line, column in found:
        path: JsonPath = ("spec", "images", index)
        problem = _marker_problem(image, text, alone=holders.get(line, set()) <= {index})
        if problem is not None:
            offset, reason = problem
            location = SourceLocation(ctx.display, line + 1, column + offset)
            ctx.add(
                path,
                "image-policy",
                f"marker '# gitsync: {_clip(text)}' on {ctx.name(path)} {_short(image)}: {reason}",
                location=location,
            )
        else:
            kept.append((image, text))
    return tuple(kept)


def _marker_problem(image: str, text: str, *, alone: bool) -> tuple[int, str] | None:
    """What is wrong with one image's marker: 1-based column in `text`, and why; or None."""
    if not alone:
        return 1, (
            "the line holds more than one image, so the marker names none of them;"
            " write each image with a policy on a line of its own"
        )
    try:
        ref = imageref.parse(image)
    except ImageRefError:
        ref = None  # the image-ref rule reports it; the marker is still read
    if ref is not None and ref.digest is not None and not ref.explicit_tag:
        return 1, (
            "the image is pinned by digest alone, and a policy moves a tag; write its tag"
            " too (name:1.2.3@sha256:…) or remove the marker"
        )
    try:
        policies.parse_marker(text)
    except policies.PolicyError as exc:
        return exc.column, exc.reason
    return None


def _stray_markers(source: _Source, display: str) -> list[Diagnostic]:
    """Warnings for `# gitsync:` comments that no image line claimed: they do nothing."""
    if not source.has_markers:
        return []
    found: list[Diagnostic] = []
    for number, line in enumerate(source.lines()):
        if number in source.claimed or _MARKER_TEXT not in line:
            continue
        match = _ANY_MARKER.search(line)
        if match is None:
            continue
        column = line.index("#", match.start()) + 1
        found.append(
            Diagnostic(
                location=SourceLocation(display, number + 1, column),
                severity=Severity.WARNING,
                rule="image-policy",
                message=(
                    "this '# gitsync:' marker is ignored: a marker counts only at the end of an"
                    " image's line in spec.images, after the image (- name:1.2.3  # gitsync:"
                    " semver=~1.2)"
                ),
            )
        )
    return found

"""Rendering of `gitsync suggest`: JSON for tools and the API, text for people, markdown for a PR.

Pure text out, like `gitsync.reports` for plans, whose money formatting it
shares so a cost reads the same in a plan and in a suggestion. The JSON shape
is a contract (docs/architecture.md; add fields, never rename): it is what
`gitsync suggest --format json` prints and what `GET /api/v1/suggestions`
answers::

    {"window": {"since", "until", "seconds", "text"}, "currency",
     "total": {"suggestions", "savedSecondsPerDay", "monthlyCost"},
     "suggestions": [{"kind", "cache", "file", "images", "from", "to",
                      "evidence": {"hits", "partials", "misses", "pods", "observedSeconds"},
                      "savedSecondsPerDay", "monthlyCost", "reason",
                      "size", "sizeNote", "policy"}]}

`from`/`to` are the old and new references (lists, position by position) for
a bump-tag, the old and new imageCacheSize (GiB) for a resize, null
otherwise; `size` is a new cache's proposed imageCacheSize (null when the
registry could not say, `sizeNote` says why) and null for other kinds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from gitsync.errors import ImageRefError
from gitsync.imageref import parse
from gitsync.reports import _md_cell, _money
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.wording import seconds_text, window_text

__all__ = [
    "SUGGEST_FORMATS",
    "format_suggestions",
    "render_markdown",
    "render_text",
    "suggestion_dict",
    "suggestions_json",
]

SUGGEST_FORMATS = ("text", "json", "markdown")

_SYMBOL = {
    SuggestionKind.ADD_IMAGE: "+",
    SuggestionKind.NEW_CACHE: "+",
    SuggestionKind.BUMP_TAG: "~",
    SuggestionKind.RESIZE: "~",
    SuggestionKind.REMOVE_CACHE: "-",
}
_ARROW = "\N{RIGHTWARDS ARROW}"


# ------------------------------------------------------------------------ JSON


def suggestion_dict(suggestion: Suggestion) -> dict[str, object]:
    """One suggestion in the JSON shape of the module docstring."""
    s = suggestion
    before: object = None
    after: object = None
    if s.kind is SuggestionKind.BUMP_TAG:
        before, after = list(s.from_images), list(s.to_images)
    elif s.kind is SuggestionKind.RESIZE:
        before, after = s.from_size_gib, s.to_size_gib
    evidence = s.evidence
    return {
        "kind": s.kind.value,
        "cache": s.cache,
        "file": s.file,
        "images": list(s.images),
        "from": before,
        "to": after,
        "evidence": {
            "hits": evidence.hits,
            "partials": evidence.partials,
            "misses": evidence.misses,
            "pods": evidence.pods,
            "observedSeconds": _rounded(evidence.observed_seconds, 3),
        },
        "savedSecondsPerDay": round(s.saved_seconds_per_day, 3),
        "monthlyCost": round(s.monthly_cost, 6),
        "reason": s.reason,
        "size": s.to_size_gib if s.kind is SuggestionKind.NEW_CACHE else None,
        "sizeNote": s.size_note or None,
        "policy": s.policy,
    }


def suggestions_json(
    suggestions: Sequence[Suggestion],
    *,
    window_seconds: float,
    since: float,
    until: float,
    currency: str,
) -> dict[str, object]:
    """The whole `--format json` document; `since`/`until` are Unix seconds."""
    return {
        "window": {
            "since": _iso(since),
            "until": _iso(until),
            "seconds": window_seconds,
            "text": window_text(window_seconds),
        },
        "currency": currency,
        "total": {
            "suggestions": len(suggestions),
            "savedSecondsPerDay": round(_saved(suggestions), 3),
            "monthlyCost": round(_cost(suggestions), 6),
        },
        "suggestions": [suggestion_dict(s) for s in suggestions],
    }


# ------------------------------------------------------------------------ text


def render_text(
    suggestions: Sequence[Suggestion],
    *,
    window_seconds: float,
    since: float,
    until: float,
    currency: str,
) -> str:
    """Aligned rows, each followed by its evidence and reason; a total line last."""
    lines = [f"Suggestions from {_window_sentence(window_seconds, since, until)}:"]
    if not suggestions:
        lines.append("")
        lines.append("Total: nothing to suggest.")
        return "\n".join(lines)
    rows = [
        (
            str(index),
            f"{_SYMBOL[s.kind]} {s.kind.value}",
            s.cache,
            seconds_text(s.saved_seconds_per_day) + "/day",
            _money(s.monthly_cost, currency) + "/month",
            _change(s, code=False),
        )
        for index, s in enumerate(suggestions, start=1)
    ]
    header = ("#", "KIND", "CACHE", "SAVES", "COSTS", "CHANGE")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    right = {0, 3, 4}  # numbers align right

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        return "  " + "  ".join([*cells, row[-1]]).rstrip()

    indent = " " * (2 + widths[0] + 2)
    lines += ["", line(header)]
    for s, row in zip(suggestions, rows, strict=True):
        lines.append(line(row))
        lines.append(f"{indent}evidence: {_evidence_text(s)}")
        if s.size_note:
            lines.append(f"{indent}size: {s.size_note}")
        lines.append(f"{indent}why: {s.reason}")
    lines.append("")
    lines.append(f"Total: {_total_sentence(suggestions, currency)}.")
    return "\n".join(lines)


# -------------------------------------------------------------------- markdown


def render_markdown(
    suggestions: Sequence[Suggestion],
    *,
    window_seconds: float,
    since: float,
    until: float,
    currency: str,
) -> str:
    """A pull-request body: a summary table, then each suggestion with its evidence and reason."""
    count = len(suggestions)
    title = f"{count} suggestion{'s' if count != 1 else ''}" if count else "nothing to suggest"
    lines = [
        f"### gitsync suggest: {title}",
        "",
        f"From {_window_sentence(window_seconds, since, until, code=True)}.",
        "",
    ]
    if not suggestions:
        return "\n".join([*lines, "No cache change is supported by the evidence."])
    lines += [
        f"**Total:** {_total_sentence(suggestions, currency)}.",
        "",
        "| # | kind | cache | change | saves/day | monthly |",
        "|---:|---|---|---|---:|---:|",
    ]
    for index, s in enumerate(suggestions, start=1):
        cells = (
            str(index),
            s.kind.value,
            f"`{_md_cell(s.cache)}`",
            _md_cell(_change(s, code=True)),
            seconds_text(s.saved_seconds_per_day),
            _money(s.monthly_cost, currency),
        )
        lines.append("| " + " | ".join(cells) + " |")
    for index, s in enumerate(suggestions, start=1):
        lines += ["", f"#### {index}. {s.kind.value} `{_md_cell(s.cache)}`", ""]
        lines.append(f"- **Change:** {_md_cell(_change(s, code=True))}")
        if s.file:
            lines.append(f"- **File:** `{_md_cell(s.file)}`")
        lines.append(f"- **Evidence:** {_md_cell(_evidence_text(s))}")
        lines.append(
            f"- **Saves:** about {seconds_text(s.saved_seconds_per_day)} of pulls a day;"
            f" **costs:** {_money(s.monthly_cost, currency)} a month"
        )
        if s.size_note:
            lines.append(f"- **Size:** {_md_cell(s.size_note)}")
        if s.policy:
            lines.append(f"- **Policy:** `{_md_cell(s.policy)}`")
        lines.append(f"- **Why:** {_md_cell(s.reason)}")
    return "\n".join(lines)


def format_suggestions(
    suggestions: Sequence[Suggestion],
    *,
    output_format: str,
    window_seconds: float,
    since: float,
    until: float,
    currency: str,
) -> str:
    """The output of `gitsync suggest` in one of SUGGEST_FORMATS."""
    if output_format not in SUGGEST_FORMATS:
        raise ValueError(f"unknown format {output_format!r}; one of {', '.join(SUGGEST_FORMATS)}")
    if output_format == "json":
        document = suggestions_json(
            suggestions,
            window_seconds=window_seconds,
            since=since,
            until=until,
            currency=currency,
        )
        return json.dumps(document, indent=2)
    render = render_markdown if output_format == "markdown" else render_text
    return render(
        suggestions, window_seconds=window_seconds, since=since, until=until, currency=currency
    )


# ------------------------------------------------------------------- internals


def _change(s: Suggestion, *, code: bool) -> str:
    """What the suggestion changes, in a few words: `+ redis:7`, `nginx:1.26 → nginx:1.27`."""

    def name(image: str) -> str:
        short = _short(image)
        return f"`{short}`" if code else short

    policy = f" (policy {s.policy})" if s.policy else ""
    if s.kind is SuggestionKind.ADD_IMAGE:
        return "+ " + ", ".join(name(i) for i in s.images)
    if s.kind is SuggestionKind.NEW_CACHE:
        size = f"{s.to_size_gib} GiB" if s.to_size_gib is not None else "size unknown"
        file = f" in {s.file}" if s.file else ""
        return f"new cache{file} ({size}): " + ", ".join(name(i) for i in s.images)
    if s.kind is SuggestionKind.BUMP_TAG:
        pairs = zip(s.from_images, s.to_images, strict=False)
        return ", ".join(f"{name(a)} {_ARROW} {name(b)}" for a, b in pairs) + policy
    if s.kind is SuggestionKind.RESIZE:
        return f"imageCacheSize {s.from_size_gib} {_ARROW} {s.to_size_gib} GiB"
    held = f"{len(s.images)} image{'s' if len(s.images) != 1 else ''}"
    return f"remove cache{f' {s.file}' if s.file else ''} ({held})"


def _evidence_text(s: Suggestion) -> str:
    e = s.evidence
    text = (
        f"{_count(e.hits, 'hit')}, {_count(e.partials, 'partial')}, "
        f"{_count(e.misses, 'miss', 'misses')}, {_count(e.pods, 'pod')}"
    )
    if e.observed_seconds is not None:
        text += f"; misses took {seconds_text(e.observed_seconds)} on average"
    return text


def _total_sentence(suggestions: Sequence[Suggestion], currency: str) -> str:
    return (
        f"{_count(len(suggestions), 'suggestion')}, about"
        f" {seconds_text(_saved(suggestions))} of pulls saved a day,"
        f" {_money(_cost(suggestions), currency)} a month"
    )


def _window_sentence(
    window_seconds: float, since: float, until: float, *, code: bool = False
) -> str:
    q = "`" if code else ""
    return f"{window_text(window_seconds)} of lookups, {q}{_iso(since)}{q} to {q}{_iso(until)}{q}"


def _saved(suggestions: Sequence[Suggestion]) -> float:
    return sum(s.saved_seconds_per_day for s in suggestions)


def _cost(suggestions: Sequence[Suggestion]) -> float:
    return sum(s.monthly_cost for s in suggestions)


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else (many or one + 's')}"


def _short(image: str) -> str:
    try:
        return parse(image).familiar()
    except ImageRefError:
        return image


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

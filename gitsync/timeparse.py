"""Times and durations as other systems write them: RFC 3339, and Go's durations.

Why: the API server writes `2026-11-22T03:00:00Z` with up to nine fractional
digits (Go), the Lease writes MicroTime, and the TKE API writes
`2026-11-22 03:00:00` without an offset. Each caller keeps its own policy for
what surrounds the parse (stripping, "never" sentinels, the zone of an
offset-less time); the parse itself lives here.

Durations are written as Go's `time.ParseDuration` (and so Flux) writes them,
plus days: `90s`, `1h30m`, `1.5h`, `500ms`, `2d`. Both the flags
(`gitsync.config`) and the specs (the `gitsync.io/refresh` annotation) read
them, and the specs sit below the configuration, so the reading lives here.
It is exact integer arithmetic, without `fractions` (which loads `decimal`:
`gitsync validate` stays lean).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

__all__ = ["DURATION_HINT", "go_duration_ns", "parse_rfc3339"]

_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(text: str, *, naive_zone: tzinfo | None = UTC) -> datetime | None:
    """`text` as a datetime, or None when it is not an ISO 8601 / RFC 3339 time.

    A trailing `Z` means UTC; fractions past six digits are cut (Go writes
    nine, Python keeps microseconds). A time without an offset is read in
    `naive_zone`; None leaves it naive.
    """
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    text = _EXTRA_FRACTION.sub(r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None and naive_zone is not None:
        return moment.replace(tzinfo=naive_zone)
    return moment


_NS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "\N{MICRO SIGN}s": 10**3,
    "\N{GREEK SMALL LETTER MU}s": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}
# Longest units first, so `ms` is not read as `m` followed by a stray `s`.
_DURATION_PART = re.compile(
    r"(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?P<unit>"
    + "|".join(sorted(_NS_PER_UNIT, key=len, reverse=True))
    + ")"
)
_BARE_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_FRACTION_DIGITS = 18  # digits past the 18th are below a nanosecond in any unit
_SCALE: int = 10**_FRACTION_DIGITS
_MAX_WHOLE_DIGITS = 24  # larger than any duration anyone accepts, in any unit
DURATION_HINT = "use a number and a unit (ns, us, ms, s, m, h, d), e.g. 90s, 1h30m, 500ms, 2d"


def go_duration_ns(text: str, *, limit: int) -> int | None:
    """Nanoseconds in an unsigned duration, rounded up; None when `text` is not one.

    `90s`, `1h30m`, `1.5h`, `500ms`, `2d`, `1d12h`; a bare number is seconds.
    Signs and spaces are the caller's to handle. Once the sum passes `limit`
    nanoseconds the rest is not read and a value above `limit` comes back, so
    a pathological input costs nothing; the caller refuses it as too long.
    """
    if _BARE_SECONDS.fullmatch(text):
        return _ceil_ns(_scaled(text) * _NS_PER_UNIT["s"])
    total, position = 0, 0
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if part is None or not (part["whole"] or part["fraction"]):
            return None  # also refuses a lone "." and a unit without a number
        number = part.group(0)[: part.start("unit") - part.start()]
        total += _scaled(number) * _NS_PER_UNIT[part["unit"]]
        if total > limit * _SCALE:
            return _ceil_ns(total)
        position = part.end()
    return _ceil_ns(total) if position > 0 else None


def _scaled(number: str) -> int:
    """`12.5` times 10**18, exactly (digits past the 18th of the fraction dropped)."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > _MAX_WHOLE_DIGITS:
        whole = "1" + "0" * _MAX_WHOLE_DIGITS
    return int(whole or "0") * _SCALE + int(
        fraction[:_FRACTION_DIGITS].ljust(_FRACTION_DIGITS, "0")
    )


def _ceil_ns(scaled: int) -> int:
    return -(-scaled // _SCALE)

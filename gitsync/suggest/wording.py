"""The phrases every reason of `gitsync suggest` shares: references, counts, seconds, windows.

A reviewer reads the reasons side by side, so an image, a count or a window
must read the same in each; the reports (`gitsync.suggest.reports`) use the
same `seconds_text` and `window_text`, so a figure reads the same in a reason
and in the table beside it.
"""

from __future__ import annotations

from gitsync.observations.model import ImageEvidence
from gitsync.suggest.context import DAY_SECONDS, _Context, _parse


def _short(image: str) -> str:
    ref = _parse(image)
    return ref.familiar() if ref is not None else image


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _pulled(evidence: ImageEvidence) -> str:
    """`5 times (3 misses, 2 partials)`."""
    parts = [_plural(evidence.misses, "miss", "misses")]
    if evidence.partials:
        parts.append(_plural(evidence.partials, "partial"))
    return f"{_plural(evidence.partials + evidence.misses, 'time')} ({', '.join(parts)})"


def seconds_text(value: float) -> str:
    """`4.2 s`, `1,234 s`: a tenth where it matters, whole seconds beyond."""
    return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"


def _window(ctx: _Context) -> str:
    return window_text(ctx.window_seconds)


def window_text(seconds: float) -> str:
    """`7 days`, `36 hours`, `90 minutes`: the window as a reason says it."""
    for unit, size in (("day", DAY_SECONDS), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            return _plural(int(seconds // size), unit)
    return _plural(round(seconds), "second")

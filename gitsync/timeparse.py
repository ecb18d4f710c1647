"""One RFC 3339 reader for the times the Kubernetes and TKE APIs write.

Why: the API server writes `2026-11-22T03:00:00Z` with up to nine fractional
digits (Go), the Lease writes MicroTime, and the TKE API writes
`2026-11-22 03:00:00` without an offset. Each caller keeps its own policy for
what surrounds the parse (stripping, "never" sentinels, the zone of an
offset-less time); the parse itself lives here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

__all__ = ["parse_rfc3339"]

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

"""How values from a file and JSON paths appear in messages: cut short, named as people write them.

Every other module of the package words its diagnostics with these, and a
hostile file can hold a 1 MiB string, so nothing from a file reaches a message
without going through `_short` or `_clip`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from typing import Any

JsonPath = tuple[str | int, ...]


def _clip(text: str, limit: int = 80) -> str:
    """Text from the file, cut short for a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: object, limit: int = 80) -> str:
    """repr() of a value from the file, cut short: a hostile file can hold a 1 MiB string."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def _describe(value: Any) -> str:
    """A value as a message shows it: 'text', 10, true, null, a list."""
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null (an empty value)"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _did_you_mean(name: str, allowed: Sequence[str]) -> str:
    lowered = {a.lower(): a for a in allowed}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[matches[0]]!r}?)" if matches else ""


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@functools.lru_cache(maxsize=1024)
def _field(path: JsonPath) -> str:
    """A JSON path as people write it: spec.images[0], metadata.annotations["gitsync.io/prune"]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif len(part) <= 80 and _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_short(part)}]"
    return text

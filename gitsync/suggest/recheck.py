"""An edit, and the re-read check it must pass before it is accepted.

Text edits are exact about bytes but blind to meaning: a span off by one, an
unusual layout or an indentation the parser reads differently can turn a
one-line change into a different document. So every edit carries what it
means to change (`_Edit.expect`, applied to the loaded cache), and
`_check_result` loads both texts and requires the new documents to equal the
old ones with exactly that change; otherwise the file is left as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from gitsync.suggest.locate import _Found, _name_of, _NotApplied, _Source


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

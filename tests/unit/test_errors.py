"""The exception tree drawn in `gitsync.errors` is the one the code has.

The drawing is how a reader learns which errors are retried; a class left out,
or drawn under the wrong branch, would tell them the wrong retry policy.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import gitsync
from gitsync import errors


def _all_error_classes() -> set[type[errors.GitSyncError]]:
    for module in pkgutil.walk_packages(gitsync.__path__, prefix="gitsync."):
        if not module.name.endswith("__main__"):  # importing it runs the command
            importlib.import_module(module.name)
    found: set[type[errors.GitSyncError]] = set()
    pending: list[type[errors.GitSyncError]] = [errors.GitSyncError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("gitsync.") and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def _drawn(branch: str) -> set[str]:
    """Class names drawn under one branch of the tree in the module docstring."""
    doc = errors.__doc__ or ""
    temporary = doc.index("├── TemporaryError")
    permanent = doc.index("└── PermanentError")
    end = doc.index("\n\n", permanent)
    part = doc[temporary:permanent] if branch == "temporary" else doc[permanent:end]
    return set(re.findall(r"\b([A-Z][A-Za-z]*(?:Error|Unavailable))\b", part))


def test_every_error_class_is_drawn_under_its_retry_policy() -> None:
    classes = _all_error_classes()
    temporary = {c.__name__ for c in classes if issubclass(c, errors.TemporaryError)}
    permanent = {c.__name__ for c in classes if issubclass(c, errors.PermanentError)}
    assert temporary - _drawn("temporary") == set(), "temporary errors missing from the tree"
    assert permanent - _drawn("permanent") == set(), "permanent errors missing from the tree"
    assert _drawn("temporary") - {"TemporaryError"} <= temporary, "drawn as temporary, but not"
    assert _drawn("permanent") - {"PermanentError"} <= permanent, "drawn as permanent, but not"


def test_every_error_says_whether_a_retry_helps() -> None:
    undecided = [
        f"{c.__module__}.{c.__name__}"
        for c in _all_error_classes()
        if not issubclass(c, errors.TemporaryError | errors.PermanentError)
    ]
    assert undecided == []

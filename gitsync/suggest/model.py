"""What a suggestion is: a change to the repository, with its evidence, value and cost.

Pure data, no I/O. The engine (`gitsync.suggest.engine`) makes these from
`gitsync.observations.model.Evidence` and the repository's specs; the
reports render them (text, JSON, markdown); the edits apply them to YAML
text; the daemon serves them at `/api/v1/suggestions`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gitsync.model import SourceLocation

__all__ = [
    "DEFAULT_MIN_MISSES",
    "DEFAULT_WINDOW_SECONDS",
    "SuggestOptions",
    "Suggestion",
    "SuggestionEvidence",
    "SuggestionKind",
]

DEFAULT_WINDOW_SECONDS = 7 * 86400.0  # --since 7d
DEFAULT_MIN_MISSES = 3


class SuggestionKind(enum.StrEnum):
    ADD_IMAGE = "add-image"  # an existing cache gains images
    NEW_CACHE = "new-cache"  # a new cache file with these images
    BUMP_TAG = "bump-tag"  # a cache's image moves to the tag pods run now
    REMOVE_CACHE = "remove-cache"  # a cache Ready for the whole window with no hit
    RESIZE = "resize"  # imageCacheSize too small for the images, or far too large


@dataclass(frozen=True, slots=True)
class SuggestionEvidence:
    """The lookups behind a suggestion, summed over its images (or its cache)."""

    hits: int = 0
    partials: int = 0
    misses: int = 0
    pods: int = 0  # distinct start groups
    observed_seconds: float | None = None  # mean seconds of the misses/partials, where timed


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One proposed change.

    `images` are the references the change adds (add-image, new-cache) or the
    cache's images after it (remove-cache: the images it held). For bump-tag,
    `from_images[i]` becomes `to_images[i]`. For resize, `from_size_gib` becomes
    `to_size_gib`; a new cache carries its proposed size in `to_size_gib`,
    None when the registry could not say (`size_note` says why).
    """

    kind: SuggestionKind
    cache: str
    reason: str  # one sentence a reviewer can judge the change by
    evidence: SuggestionEvidence
    saved_seconds_per_day: float  # expected pull seconds saved per day (0 for removals)
    monthly_cost: float  # the monthly cost delta from the pricing table (negative saves)
    images: tuple[str, ...] = ()
    from_images: tuple[str, ...] = ()
    to_images: tuple[str, ...] = ()
    from_size_gib: int | None = None
    to_size_gib: int | None = None
    size_note: str = ""
    location: SourceLocation | None = None  # the cache's document; None for a new cache
    file: str | None = None  # repository-relative file the change edits or creates
    policy: str | None = None  # set when an image policy (not observed pulls) proposed it
    # bump-tag by a policy: the digests the old and new tags resolve to, when known
    from_digests: tuple[str, ...] = ()
    to_digests: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SuggestOptions:
    """How `gitsync suggest` reads the evidence."""

    now: float  # Unix seconds; the window ends here
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    min_misses: int = DEFAULT_MIN_MISSES

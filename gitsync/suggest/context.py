"""The input of `gitsync suggest`'s decision, checked and indexed once for every rule.

Every rule asks the same questions of the evidence and the repository's caches
(which cache has this name, which start groups pulled this image, which
directory holds which cache files and which repositories they hold, which
observed copy stands for a name), so `_context` answers them once, after
checking that the options are in range and the evidence lies inside the window.
Reference parsing lives here too, because every rule compares references the
same way: canonically, a reference that does not parse matching nothing, and
"held" meaning the match policy's "exact".
The rules themselves are in `gitsync.suggest.engine`'s docstring.
"""

from __future__ import annotations

import math
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gitsync import imageref, matching
from gitsync.errors import ImageRefError
from gitsync.imageref import ImageRef
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.observations.model import Evidence, ImageEvidence, StartGroup
from gitsync.pricing import PriceTable
from gitsync.sizing import ImageOutcome, SizeModel
from gitsync.suggest.model import SuggestOptions

DAY_SECONDS = 86400.0
# The store and the engine compute the window from the same `now`; allow float noise only.
WINDOW_SLACK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Cache:
    """A desired cache with its references parsed (those that parse), canonical text first."""

    spec: CacheSpec
    refs: tuple[tuple[str, ImageRef], ...]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class _Context:
    since: float
    until: float
    window_seconds: float
    min_misses: int
    images: Mapping[str, ImageEvidence]
    evidence: Evidence
    caches: tuple[_Cache, ...]  # desired, by name
    by_name: Mapping[str, _Cache]
    observed: Mapping[str, ObservedCache]  # the one per name that stands for it (`_stand_ins`)
    copies: Mapping[str, tuple[ObservedCache, ...]]  # every observed cache, by name
    prices: PriceTable
    sizes: Mapping[str, ImageOutcome] | None
    size_model: SizeModel
    groups_of: Mapping[str, tuple[StartGroup, ...]]
    files_in: Mapping[str, frozenset[str]]  # directory -> the desired caches' files in it
    # Every leading run of registry/repository components a desired cache holds -> directories.
    prefix_dirs: Mapping[tuple[str, ...], frozenset[str]]

    @property
    def days(self) -> float:
        return self.window_seconds / DAY_SECONDS

    def image(self, image: str) -> ImageEvidence:
        return self.images.get(image) or ImageEvidence(image=image)

    def cache(self, name: str) -> _Cache:
        return self.by_name[name]


def _context(
    *,
    evidence: Evidence,
    desired: Sequence[CacheSpec],
    observed: Sequence[ObservedCache],
    prices: PriceTable,
    options: SuggestOptions,
    sizes: Mapping[str, ImageOutcome] | None,
    size_model: SizeModel,
) -> _Context:
    if not (math.isfinite(options.window_seconds) and options.window_seconds > 0):
        raise ValueError(f"window_seconds must be positive, got {options.window_seconds!r}")
    if options.min_misses < 1:
        raise ValueError(f"min_misses must be at least 1, got {options.min_misses!r}")
    since = options.now - options.window_seconds
    if evidence.since < since - WINDOW_SLACK_SECONDS or evidence.until > (
        options.now + WINDOW_SLACK_SECONDS
    ):
        raise ValueError(
            f"evidence covers {evidence.since}..{evidence.until}, outside the window"
            f" {since}..{options.now}: query the store with the same window"
        )
    caches = tuple(
        _Cache(spec=spec, refs=_parsed(spec.images))
        for spec in sorted(desired, key=lambda s: s.name)
    )
    groups_of: defaultdict[str, list[StartGroup]] = defaultdict(list)
    for group in evidence.groups:
        for image in group.images:
            groups_of[image].append(group)
    copies: defaultdict[str, list[ObservedCache]] = defaultdict(list)
    for cache in observed:
        copies[cache.name].append(cache)
    files_in: defaultdict[str, set[str]] = defaultdict(set)
    prefix_dirs: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
    for held in caches:
        if held.spec.location is None:
            continue
        directory = posixpath.dirname(held.spec.location.path)
        files_in[directory].add(held.spec.location.path)
        for _, ref in held.refs:
            parts = tuple(ref.name.split("/"))
            for length in range(1, len(parts) + 1):
                prefix_dirs[parts[:length]].add(directory)
    return _Context(
        since=since,
        until=options.now,
        window_seconds=options.window_seconds,
        min_misses=options.min_misses,
        images={e.image: e for e in evidence.images},
        evidence=evidence,
        caches=caches,
        by_name={cache.name: cache for cache in caches},
        observed=_stand_ins(observed),
        copies={name: tuple(found) for name, found in copies.items()},
        prices=prices,
        sizes=sizes,
        size_model=size_model,
        groups_of={image: tuple(groups) for image, groups in groups_of.items()},
        files_in={directory: frozenset(files) for directory, files in files_in.items()},
        prefix_dirs={prefix: frozenset(dirs) for prefix, dirs in prefix_dirs.items()},
    )


def _parsed(images: Iterable[str]) -> tuple[tuple[str, ImageRef], ...]:
    refs: list[tuple[str, ImageRef]] = []
    for image in images:
        ref = _parse(image)
        if ref is not None:
            refs.append((str(ref), ref))
    return tuple(refs)


def _parse(image: str) -> ImageRef | None:
    try:
        return imageref.parse(image)
    except ImageRefError:
        return None  # validation reports it; a reference no one can pull matches nothing


def _canonical_or_written(image: str) -> str:
    ref = _parse(image)
    return str(ref) if ref is not None else image


def _stand_ins(observed: Sequence[ObservedCache]) -> dict[str, ObservedCache]:
    """Per name, the observed cache that stands for it: Ready first, then the newest."""
    best: dict[str, ObservedCache] = {}
    for cache in sorted(observed, key=_stand_in_key):
        best.setdefault(cache.name, cache)
    return best


def _stand_in_key(cache: ObservedCache) -> tuple[bool, float, str]:
    created = cache.created_at.timestamp() if cache.created_at is not None else -math.inf
    return (cache.status is not CacheStatus.READY, -created, cache.cache_id)


def _holds(refs: Iterable[ImageRef], want: ImageRef) -> bool:
    return any(matching.same_image(want, held) for held in refs)

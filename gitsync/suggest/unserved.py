"""Which pulled images no desired cache serves, and which caches hold their repository.

The first step of every adding rule: an image counts once its misses and
partials reach `min_misses` and no desired cache holds it. Those of a
repository some cache holds (under another tag) go to the bump rule of
`pending`; the rest to its start-group votes, and what those leave to new
caches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from gitsync.imageref import ImageRef
from gitsync.observations.model import ImageEvidence
from gitsync.suggest.context import _Context, _holds, _parse


@dataclass(frozen=True, slots=True)
class _Unserved:
    image: str  # canonical
    ref: ImageRef
    evidence: ImageEvidence

    @property
    def count(self) -> int:
        return self.evidence.partials + self.evidence.misses

    @property
    def pulls(self) -> int:
        return self.evidence.hits + self.count


def _unserved(ctx: _Context) -> list[_Unserved]:
    """Images pulled at least min_misses times (misses + partials) that no desired cache holds."""
    held_repos: defaultdict[str, list[ImageRef]] = defaultdict(list)
    for cache in ctx.caches:
        for _, ref in cache.refs:
            held_repos[ref.name].append(ref)
    found: list[_Unserved] = []
    for image in sorted(ctx.images):
        evidence = ctx.images[image]
        if evidence.partials + evidence.misses < ctx.min_misses:
            continue
        parsed = _parse(image)
        if parsed is None or _holds(held_repos.get(parsed.name, ()), parsed):
            continue
        found.append(_Unserved(image=str(parsed), ref=parsed, evidence=evidence))
    return found


def _split_by_repository(
    ctx: _Context, unserved: list[_Unserved]
) -> tuple[dict[tuple[str, str], list[_Unserved]], list[_Unserved]]:
    """(cache, repository) -> unserved tags of a repository it holds; and the rest."""
    holders: defaultdict[str, list[str]] = defaultdict(list)
    for cache in ctx.caches:
        for repository in sorted({ref.name for _, ref in cache.refs}):
            holders[repository].append(cache.name)
    bound: defaultdict[tuple[str, str], list[_Unserved]] = defaultdict(list)
    missed: list[_Unserved] = []
    for item in unserved:
        names = holders.get(item.ref.name)
        if not names:
            missed.append(item)
            continue
        # A pod uses one cache: where the partials name the caches that served them, those.
        served = [name for name in names if name in item.evidence.caches]
        for name in served or names:
            bound[(name, item.ref.name)].append(item)
    return dict(bound), missed

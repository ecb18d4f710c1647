"""Changes to the caches the repository has: the bump-tag and add-image rules.

Both rules change an existing cache, and what one decides feeds the other: an
image added to a cache draws its start partners after it (the group votes,
counted in rounds), and a cache's images after its bumps and adds are what
the resize rule (`sizes`) checks. `_Pending` holds those decisions per cache
and turns them into one suggestion per bump and one per cache gaining images.
The rules' wording is the engine's docstring.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gitsync.suggest.context import _Cache, _canonical_or_written, _Context, _parse
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.unserved import _Unserved
from gitsync.suggest.value import _evidence, _file, _update_cost, _value
from gitsync.suggest.wording import _plural, _pulled, _short, _window


@dataclass(frozen=True, slots=True)
class _Add:
    image: str
    clause: str  # why, as a clause of the suggestion's reason


@dataclass(frozen=True, slots=True)
class _Bump:
    cache: str
    old: str  # the reference as the cache holds it, canonical
    new: _Unserved
    others: tuple[_Unserved, ...]  # other unserved tags of the repository, not chosen


class _Pending:
    """What the bump and add rules decided so far, per cache; builds their suggestions."""

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.adds: defaultdict[str, list[_Add]] = defaultdict(list)
        self.bumps: list[_Bump] = []
        self.moves: defaultdict[str, dict[str, str]] = defaultdict(dict)  # cache -> old -> new
        # Repository -> caches holding it after the changes so far (for the group votes).
        self.repositories: defaultdict[str, set[str]] = defaultdict(set)
        for cache in ctx.caches:
            for _, ref in cache.refs:
                self.repositories[ref.name].add(cache.name)

    def bump(self, bump: _Bump) -> None:
        self.bumps.append(bump)
        self.moves[bump.cache][bump.old] = bump.new.image

    def add(self, cache: str, item: _Unserved, clause: str) -> None:
        self.adds[cache].append(_Add(image=item.image, clause=clause))
        self.repositories[item.ref.name].add(cache)

    def changed(self) -> set[str]:
        return set(self.adds) | {bump.cache for bump in self.bumps}

    def images_after(self, cache: _Cache) -> tuple[str, ...]:
        """The cache's images, as written, after its bumps and adds."""
        moves = self.moves.get(cache.name, {})
        after: list[str] = []
        for written in cache.spec.images:
            ref = _parse(written)
            after.append(moves.get(str(ref), written) if ref is not None else written)
        after += [add.image for add in self.adds.get(cache.name, ())]
        return tuple(after)

    def bump_suggestions(self) -> list[Suggestion]:
        ctx = self._ctx
        result: list[Suggestion] = []
        for bump in self.bumps:
            cache = ctx.cache(bump.cache)
            new = bump.new
            after = _replaced(cache.spec.images, old=bump.old, new=new.image)
            saved, timing = _value(ctx, (new.image,))
            others = ""
            if bump.others:
                listed = ", ".join(f"{_short(o.image)} ×{o.count}" for o in bump.others)
                others = f"; other tags pulled less: {listed}"
            reason = (
                f"In the last {_window(ctx)} pods pulled {_short(new.image)}"
                f" {_pulled(new.evidence)} while cache {cache.name} holds"
                f" {_short(bump.old)}, which got no hit, so moving it to the tag pods run now"
                f" saves {timing(saved)}{others}."
            )
            result.append(
                Suggestion(
                    kind=SuggestionKind.BUMP_TAG,
                    cache=cache.name,
                    reason=reason,
                    evidence=_evidence(ctx, (new.image,)),
                    saved_seconds_per_day=saved,
                    monthly_cost=_update_cost(ctx, cache.spec, images=after),
                    images=tuple(_canonical_or_written(image) for image in after),
                    from_images=(bump.old,),
                    to_images=(new.image,),
                    location=cache.spec.location,
                    file=_file(cache.spec),
                )
            )
        return result

    def add_suggestions(self) -> list[Suggestion]:
        ctx = self._ctx
        result: list[Suggestion] = []
        for name in sorted(self.adds):
            cache = ctx.cache(name)
            adds = sorted(self.adds[name], key=lambda add: add.image)
            images = tuple(add.image for add in adds)
            saved, timing = _value(ctx, images)
            them = "it" if len(images) == 1 else "them"
            reason = (
                f"In the last {_window(ctx)} "
                + "; ".join(add.clause for add in adds)
                + f"; adding {them} to {name} saves {timing(saved)}."
            )
            result.append(
                Suggestion(
                    kind=SuggestionKind.ADD_IMAGE,
                    cache=name,
                    reason=reason,
                    evidence=_evidence(ctx, images),
                    saved_seconds_per_day=saved,
                    monthly_cost=_update_cost(
                        ctx, cache.spec, images=(*cache.spec.images, *images)
                    ),
                    images=images,
                    location=cache.spec.location,
                    file=_file(cache.spec),
                )
            )
        return result


def _replaced(images: Sequence[str], *, old: str, new: str) -> tuple[str, ...]:
    result: list[str] = []
    for written in images:
        ref = _parse(written)
        result.append(new if ref is not None and str(ref) == old else written)
    return tuple(result)


def _bumps(
    ctx: _Context, pending: _Pending, bound: Mapping[tuple[str, str], list[_Unserved]]
) -> None:
    """Per (cache, repository): bump the stale tag, or add beside one that still hits."""
    for cache_name, repository in sorted(bound):
        cache = ctx.cache(cache_name)
        tags = sorted(
            bound[(cache_name, repository)],
            key=lambda u: (-u.pulls, -u.evidence.last_at, u.image),
        )
        new, others = tags[0], tuple(tags[1:])
        olds = sorted(
            (text for text, ref in cache.refs if ref.name == repository),
            key=lambda text: (ctx.image(text).hits, text),
        )
        old = olds[0]
        seen = ctx.image(old)
        if seen.hits and seen.last_at >= new.evidence.first_at:
            pending.add(
                cache_name,
                new,
                f"pods pulled {_short(new.image)} {_pulled(new.evidence)} under another tag"
                f" than {_short(old)}, which still got {_plural(seen.hits, 'hit')} after"
                f" that, so {_short(new.image)} goes beside it rather than replacing it",
            )
        else:
            pending.bump(_Bump(cache=cache_name, old=old, new=new, others=others))


def _group_adds(ctx: _Context, pending: _Pending, missed: list[_Unserved]) -> list[_Unserved]:
    """Give each missed image to the cache its start partners use; return those left over.

    In rounds: every image votes against the holdings at the round's start, so
    the outcome does not depend on the order images are visited in.
    """
    remaining = {item.image: item for item in missed}
    while remaining:
        picks: list[tuple[_Unserved, str, int]] = []
        for image in sorted(remaining):
            votes = _votes(ctx, pending, image)
            if votes:
                cache, count = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))
                picks.append((remaining[image], cache, count))
        if not picks:
            break
        for item, cache, count in picks:
            pending.add(
                cache,
                item,
                f"{_short(item.image)} was pulled {_pulled(item.evidence)} and started"
                f" together with images cache {cache} holds {_plural(count, 'time')}",
            )
            del remaining[item.image]
    return [remaining[image] for image in sorted(remaining)]


def _votes(ctx: _Context, pending: _Pending, image: str) -> Counter[str]:
    """Per cache, the starts of `image` together with an image that cache holds."""
    votes: Counter[str] = Counter()
    for group in ctx.groups_of.get(image, ()):
        caches: set[str] = set()
        for other in group.images:
            ref = _parse(other) if other != image else None
            if ref is not None:
                caches.update(pending.repositories.get(ref.name, ()))
        for cache in caches:
            votes[cache] += group.count
    return votes

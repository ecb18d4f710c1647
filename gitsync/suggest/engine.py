"""The decision of `gitsync suggest`: a window of lookups + the repository's caches -> changes.

Pure (no I/O, no clock: `SuggestOptions.now` is passed in), like the planner,
so the command, the daemon's `/api/v1/suggestions` and the tests get the same
answer from the same input. The caller queries the observation store for
`[now - window, now]`; evidence reaching outside that window is a wiring bug
and raises ValueError. Image references are compared canonically
(`imageref`), a cache's references that do not parse are left out of every
comparison, and an image *held* by a cache means the same repository with the
same digest, or the same tag where at most one side pins a digest (the match
policy's "exact", `gitsync.matching`).

An image is *unserved* when it was pulled (a miss, or a partial: the cloud's
name-only match) and no desired cache holds it; it counts when its misses plus
partials reach `min_misses`. The rules:

* **bump-tag.** An unserved image of a repository a desired cache holds under
  another tag moves that cache's image to it. The caches considered are those
  holding the repository, narrowed to the ones that served the partials when
  the evidence names any. Per cache and repository, the new tag is the most
  pulled (ties: the most recently pulled, then by name), and the old one is
  the cache's reference of that repository with the fewest hits (ties: by
  name). When the old tag still got hits after the new tag was first pulled,
  both are in use and moving it would turn those hits into misses, so the new
  tag is added beside it (add-image). Hits that all came before the new tag
  appeared are the workload moving on: the cache follows it (bump-tag).
* **add-image.** A pod uses one cache, so an unserved image of a repository
  no desired cache holds goes into the cache that holds the images it starts
  with (`Evidence.groups`): each group containing it gives every cache that
  holds another of the group's images (by repository, since the pod used that
  cache even on a partial) one vote per start. The most voted cache wins
  (ties: by name). Votes are counted in rounds, so an image assigned in one
  round pulls its group partners after it in the next, and the result does
  not depend on the order of the input. All images added to one cache, by
  this rule or by the bump rule above, are one suggestion.
* **new-cache.** Unserved images left over that start together (connected
  through the groups) become one new cache; an image with no group, or whose
  partners are all served or below `min_misses`, gets a cache of its own, and
  the reason says which. The name is a DNS-1123 label (at most 63 characters)
  made from the last component of the main image's repository (the most
  pulled one), with `-2`, `-3`... until neither the name nor its file clashes
  with a desired or observed cache or another new one. The file is
  `<dir>/<name>.yaml`, `<dir>` being the directory of the desired cache whose
  images share the longest registry/repository prefix (in path components)
  with the new images, else the directory holding most cache files (ties: the
  one with more cache files, then by name). The size is what `gitsync plan`'s
  size check asks for (`sizing.check_cache` over the unique layers, then
  `SizeModel.size_for` of the high estimate); with an image whose size is
  unknown, or no sizes at all, there is no size and `size_note` says why; the
  cost is then priced at the default imageCacheSize.
* **remove-cache.** A desired cache whose observed copy was Ready and created
  no later than the window's start, that got no hit and no partial in the
  window, and that no other suggestion changes. Only when the store reaches
  back to the window's start (`Evidence.first_at <= since`): otherwise "no
  hit" may only mean "not recorded yet". Never for a cache annotated
  `gitsync.io/prune: disabled` (in Git or on the provider's copy): a person
  pinned it, and the planner would keep it even when its spec goes.
* **resize.** With sizes known, over the images the cache holds after the
  other suggestions for it (so that applying them all passes the size check):
  too small (`check_cache` says too-small) grows to `size_for` of the high
  estimate; more than `SHRINK_FACTOR` times that size and at least
  `SHRINK_MIN_GIB` GiB above it shrinks to it (only when every image's size
  is known). A cache that would need more than the largest imageCacheSize gets
  no resize (`gitsync plan` already says to split it), nor does a cache
  proposed for removal. With `SizeModel.size_for`'s floor of 20 GiB, "more
  than twice" already implies "at least 20 GiB more"; `SHRINK_MIN_GIB` keeps
  the rule right should the floor change.

Value: saved seconds per day = the misses and partials in the window of the
images the change serves ÷ window days × what a miss of that image costs: the
mean of its timed misses, else its compressed bytes ÷
`PriceTable.pull_bytes_per_second` when its size is known, else 0 ("no timing
observed"). A removal, a shrink, saves none. Cost: `pricing.action_cost(...)
.monthly` (standing snapshot cost for a month plus the one-off build;
negative for a removal), against the observed cache of that name, or against
the desired spec where none is observed. Ranking: saved seconds per day,
descending; removals after every other kind, the most money saved first; ties
by kind, cache and images, so the order never depends on the input's.
`policy_bumps` (from image policies) pass through; one naming the same cache
and old image as an observed bump is merged into it, and the observed target
(what pods run now) wins.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from gitsync import imageref, pricing, sizing
from gitsync.errors import ImageRefError
from gitsync.imageref import ImageRef
from gitsync.model import (
    DEFAULT_IMAGE_CACHE_SIZE_GIB,
    MAX_IMAGE_CACHE_SIZE_GIB,
    ActionKind,
    CacheSpec,
    CacheStatus,
    ObservedCache,
)
from gitsync.observations.model import Evidence, ImageEvidence, StartGroup
from gitsync.pricing import PriceTable
from gitsync.reports import _money
from gitsync.sizing import ImageFacts, ImageOutcome, SizeModel, Unresolved
from gitsync.suggest.model import (
    Suggestion,
    SuggestionEvidence,
    SuggestionKind,
    SuggestOptions,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "SHRINK_FACTOR",
    "SHRINK_MIN_GIB",
    "rank_key",
    "seconds_text",
    "suggest",
    "window_text",
]

DAY_SECONDS = 86400.0
SHRINK_FACTOR = 2.0  # shrink only a cache more than twice the size its images need...
SHRINK_MIN_GIB = 10  # ...and at least this much larger: a rebuild for less is not worth it
MAX_NAME_LENGTH = 63  # a DNS-1123 label, which is also a valid subdomain (metadata.name)
FALLBACK_NAME = "cache"
# The store and the engine compute the window from the same `now`; allow float noise only.
WINDOW_SLACK_SECONDS = 1.0

_NAME_RUN = re.compile(r"[^a-z0-9]+")
_KIND_ORDER = {kind: index for index, kind in enumerate(SuggestionKind)}


def suggest(
    *,
    evidence: Evidence,
    desired: Sequence[CacheSpec],
    observed: Sequence[ObservedCache],
    prices: PriceTable,
    options: SuggestOptions,
    sizes: Mapping[str, ImageOutcome] | None = None,
    size_model: SizeModel = SizeModel(),  # noqa: B008  # frozen: one shared default is safe
    policy_bumps: Sequence[Suggestion] = (),
) -> tuple[Suggestion, ...]:
    """The suggestions the evidence supports, ranked; see the module docstring for the rules.

    `sizes` maps a canonical image reference to what the registry said about
    it (None: sizes not looked up). Raises ValueError for options out of range,
    evidence outside the window, or a policy suggestion that is not a bump.
    """
    ctx = _context(
        evidence=evidence,
        desired=desired,
        observed=observed,
        prices=prices,
        options=options,
        sizes=sizes,
        size_model=size_model,
    )
    for policy in policy_bumps:
        if policy.kind is not SuggestionKind.BUMP_TAG:
            raise ValueError(
                f"policy_bumps takes bump-tag suggestions only, got {policy.kind.value}"
                f" for cache {policy.cache!r}"
            )
    unserved = _unserved(ctx)
    plan = _Pending(ctx)
    repo_bound, missed = _split_by_repository(ctx, unserved)
    _bumps(ctx, plan, repo_bound)
    leftover = _group_adds(ctx, plan, missed)
    new_caches = _new_caches(ctx, leftover)
    suggestions: list[Suggestion] = []
    suggestions += plan.bump_suggestions()
    suggestions += plan.add_suggestions()
    suggestions += new_caches
    removals = _removals(ctx, changed=plan.changed())
    suggestions += removals
    # A cache proposed for removal is not resized too: the two edits would contradict.
    suggestions += _resizes(ctx, plan, removed={s.cache for s in removals})
    merged = _merge_policy(suggestions, policy_bumps)
    return tuple(sorted(merged, key=rank_key))


def rank_key(
    suggestion: Suggestion,
) -> tuple[int, float, float, int, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Most saved seconds first; removals last, most money saved first; then kind, cache, images."""
    removal = suggestion.kind is SuggestionKind.REMOVE_CACHE
    return (
        1 if removal else 0,
        0.0 if removal else -suggestion.saved_seconds_per_day,
        suggestion.monthly_cost if removal else 0.0,
        _KIND_ORDER[suggestion.kind],
        suggestion.cache,
        suggestion.images,
        suggestion.from_images,
        suggestion.to_images,
    )


# --------------------------------------------------------------------- context


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


def _stand_ins(observed: Sequence[ObservedCache]) -> dict[str, ObservedCache]:
    """Per name, the observed cache that stands for it: Ready first, then the newest."""
    best: dict[str, ObservedCache] = {}
    for cache in sorted(observed, key=_stand_in_key):
        best.setdefault(cache.name, cache)
    return best


def _stand_in_key(cache: ObservedCache) -> tuple[bool, float, str]:
    created = cache.created_at.timestamp() if cache.created_at is not None else -math.inf
    return (cache.status is not CacheStatus.READY, -created, cache.cache_id)


def _same_image(want: ImageRef, held: ImageRef) -> bool:
    """The match policy's "exact" (`gitsync.matching`): one digest, or one tag."""
    if not imageref.same_repository(want, held):
        return False
    if want.digest is not None and want.digest == held.digest:
        return True
    return (
        want.tag is not None
        and want.tag == held.tag
        and (want.digest is None or held.digest is None)
    )


def _holds(refs: Iterable[ImageRef], want: ImageRef) -> bool:
    return any(_same_image(want, held) for held in refs)


# -------------------------------------------------------------------- unserved


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


# --------------------------------------------------------------- changes to caches


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


def _canonical_or_written(image: str) -> str:
    ref = _parse(image)
    return str(ref) if ref is not None else image


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


# ------------------------------------------------------------------ new caches


def _new_caches(ctx: _Context, leftover: list[_Unserved]) -> list[Suggestion]:
    by_image = {item.image: item for item in leftover}
    parent = {image: image for image in by_image}

    def find(image: str) -> str:
        while parent[image] != image:
            parent[image] = parent[parent[image]]
            image = parent[image]
        return image

    for group in ctx.evidence.groups:
        members = sorted(image for image in group.images if image in by_image)
        for other in members[1:]:
            a, b = find(members[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: defaultdict[str, list[_Unserved]] = defaultdict(list)
    for image in sorted(by_image):
        components[find(image)].append(by_image[image])

    names = {cache.name for cache in ctx.caches} | set(ctx.copies)
    files = {cache.spec.location.path for cache in ctx.caches if cache.spec.location}
    result: list[Suggestion] = []
    for root in sorted(components):
        items = sorted(components[root], key=lambda u: (-u.count, u.image))
        name, file = _name_and_file(ctx, items, taken_names=names, taken_files=files)
        names.add(name)
        files.add(file)
        result.append(_new_cache(ctx, items, name=name, file=file))
    return result


def _new_cache(ctx: _Context, items: list[_Unserved], *, name: str, file: str) -> Suggestion:
    images = tuple(item.image for item in items)
    size, note = _new_size(ctx, name, images)
    spec = CacheSpec(
        name=name, images=images, image_cache_size_gib=size or DEFAULT_IMAGE_CACHE_SIZE_GIB
    )
    cost = pricing.action_cost(ActionKind.CREATE, desired=spec, observed=None, prices=ctx.prices)
    saved, timing = _value(ctx, images)
    pulls = sum(item.count for item in items)
    if len(items) == 1:
        (item,) = items
        what = f"{_short(item.image)} was pulled {_pulled(item.evidence)}"
        if item.image not in ctx.groups_of:
            why = "there is no start-group information for it, so it gets a cache of its own"
        else:
            why = (
                "no image it starts with is in a cache or missed often enough to join it,"
                " so it gets a cache of its own"
            )
    else:
        starts = sum(
            group.count
            for group in _groups(ctx, images)
            if sum(1 for image in group.images if image in images) > 1
        )
        what = (
            f"{len(items)} images ({', '.join(_short(i) for i in images)}) were pulled"
            f" {_plural(pulls, 'time')} with no cache holding them"
        )
        why = (
            f"they started together {_plural(starts, 'time')}, and a pod uses one cache,"
            " so they share one"
        )
    reason = f"In the last {_window(ctx)} {what}; {why}; a new cache {name} saves {timing(saved)}."
    return Suggestion(
        kind=SuggestionKind.NEW_CACHE,
        cache=name,
        reason=reason,
        evidence=_evidence(ctx, images),
        saved_seconds_per_day=saved,
        monthly_cost=cost.monthly,
        images=images,
        to_size_gib=size,
        size_note=note,
        file=file,
    )


def _name_and_file(
    ctx: _Context, items: list[_Unserved], *, taken_names: set[str], taken_files: set[str]
) -> tuple[str, str]:
    base = _dns_label(items[0].ref.repository.rsplit("/", 1)[-1])
    directory = _directory(ctx, [item.ref for item in items])
    suffix_number = 1
    while True:
        suffix = "" if suffix_number == 1 else f"-{suffix_number}"
        name = base[: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix
        file = posixpath.join(directory, f"{name}.yaml")
        if name not in taken_names and file not in taken_files:
            return name, file
        suffix_number += 1


def _dns_label(text: str) -> str:
    """A DNS-1123 label from a repository component: runs of other characters become '-'."""
    label = _NAME_RUN.sub("-", text.lower()).strip("-")[:MAX_NAME_LENGTH].rstrip("-")
    return label or FALLBACK_NAME


def _directory(ctx: _Context, refs: list[ImageRef]) -> str:
    """Where the repository keeps similar caches (module docstring)."""
    if not ctx.files_in:
        return ""
    shared: dict[str, int] = {}  # directory -> leading components in common with a new image
    for ref in refs:
        parts = tuple(ref.name.split("/"))
        for length in range(1, len(parts) + 1):
            for directory in ctx.prefix_dirs.get(parts[:length], ()):
                shared[directory] = max(shared.get(directory, 0), length)
    files = ctx.files_in
    return min(files, key=lambda d: (-shared.get(d, 0), -len(files[d]), d))


def _new_size(ctx: _Context, name: str, images: tuple[str, ...]) -> tuple[int | None, str]:
    """The size `gitsync plan` would ask for, or None and why not."""
    if ctx.sizes is None:
        return None, (
            "image sizes were not looked up, so no imageCacheSize is proposed"
            f" (the default is {DEFAULT_IMAGE_CACHE_SIZE_GIB} GiB)"
        )
    unknown = [
        (image, outcome.reason if isinstance(outcome, Unresolved) else "not looked up")
        for image in images
        if not isinstance(outcome := ctx.sizes.get(image), ImageFacts)
    ]
    if unknown:
        listed = "; ".join(f"{_short(image)}: {why}" for image, why in unknown)
        return None, f"size unknown for {listed}; no imageCacheSize is proposed"
    fit = sizing.check_cache(CacheSpec(name=name, images=images), ctx.sizes, model=ctx.size_model)
    size = ctx.size_model.size_for(fit.needed_high)
    if size > MAX_IMAGE_CACHE_SIZE_GIB:
        return None, (
            f"the images need {size} GiB, more than the largest cache"
            f" ({MAX_IMAGE_CACHE_SIZE_GIB} GiB) allows: split them over several caches"
        )
    return size, _need_note(fit, size, ctx.size_model)


def _need_note(fit: sizing.CacheFit, size: int, model: SizeModel) -> str:
    how = "exact" if fit.exact else "estimated"
    return (
        f"up to {sizing.format_bytes(fit.needed_high)} on disk for"
        f" {_plural(fit.layers, 'unique layer')} ({how}); {size} GiB leaves at least"
        f" {model.min_headroom:.0%} of its usable space free"
    )


# --------------------------------------------------------------- resize, remove


def _resizes(ctx: _Context, pending: _Pending, *, removed: set[str]) -> list[Suggestion]:
    if ctx.sizes is None:
        return []
    model = ctx.size_model
    result: list[Suggestion] = []
    changed = pending.changed()
    for cache in ctx.caches:
        spec = cache.spec
        if spec.name in removed:
            continue
        after = pending.images_after(cache)
        checked = replace(spec, images=tuple(_canonical_or_written(i) for i in after))
        fit = sizing.check_cache(checked, ctx.sizes, model=model)
        size = spec.image_cache_size_gib
        wanted = model.size_for(fit.needed_high)
        grow = fit.fit is sizing.Fit.TOO_SMALL and wanted <= MAX_IMAGE_CACHE_SIZE_GIB
        shrink = (
            not fit.skipped and size > SHRINK_FACTOR * wanted and size - wanted >= SHRINK_MIN_GIB
        )
        if not (grow or shrink):
            continue
        with_others = (
            " with the images the other suggestions for it add" if spec.name in changed else ""
        )
        note = _need_note(fit, wanted, model)
        if fit.skipped:
            listed = "; ".join(f"{_short(image)}: {why}" for image, why in fit.skipped)
            note += f"; size unknown for {listed}, so the need is at least this"
        current = tuple(text for text, _ in cache.refs)
        if grow:
            saved, timing = _value(ctx, current)
            reason = (
                f"Cache {spec.name}'s images{with_others} need at least"
                f" {sizing.format_bytes(fit.needed_low)} on disk, more than the"
                f" {sizing.format_bytes(fit.usable_bytes)} imageCacheSize {size} GiB leaves"
                f" usable, so its build would fail; growing it to {wanted} GiB saves"
                f" {timing(saved)}."
            )
        else:
            saved = 0.0
            reason = (
                f"Cache {spec.name}'s images{with_others} need at most"
                f" {sizing.format_bytes(fit.needed_high)} on disk, which {wanted} GiB holds with"
                f" {model.min_headroom:.0%} headroom, yet it is {size} GiB, and every pod"
                " started from it gets a cloud disk of that size; shrinking saves no pull time."
            )
        result.append(
            Suggestion(
                kind=SuggestionKind.RESIZE,
                cache=spec.name,
                reason=reason,
                evidence=_evidence(ctx, current),
                saved_seconds_per_day=saved,
                monthly_cost=_update_cost(ctx, spec, images=spec.images, size=wanted),
                images=tuple(_canonical_or_written(i) for i in spec.images),
                from_size_gib=size,
                to_size_gib=wanted,
                size_note=note,
                location=spec.location,
                file=_file(spec),
            )
        )
    return result


def _removals(ctx: _Context, *, changed: set[str]) -> list[Suggestion]:
    first = ctx.evidence.first_at
    if first is None or first > ctx.since:
        return []  # the store has not seen the whole window: "no hit" may be "not recorded"
    result: list[Suggestion] = []
    for cache in ctx.caches:
        spec = cache.spec
        if spec.name in changed or not spec.prune:
            continue
        copies = ctx.copies.get(spec.name, ())
        if any(not copy.prune for copy in copies):
            continue
        ready = [
            (created, copy)
            for copy in copies
            if copy.status is CacheStatus.READY
            and (created := copy.created_at) is not None
            and created.timestamp() <= ctx.since
        ]
        use = ctx.evidence.caches.get(spec.name)
        if not ready or (use is not None and (use.hits or use.partials)):
            continue
        created, observed = min(ready, key=lambda pair: _stand_in_key(pair[1]))
        cost = pricing.action_cost(
            ActionKind.DELETE, desired=None, observed=observed, prices=ctx.prices
        )
        saved_money = _money(-cost.monthly, ctx.prices.currency, signed=False)
        reason = (
            f"Cache {spec.name} was Ready for the whole {_window(ctx)} (created"
            f" {created.date().isoformat()}) and served no pull in it (0 hits, 0 partials);"
            f" removing it saves {saved_money} a month of snapshot storage."
        )
        images = tuple(text for text, _ in cache.refs)
        result.append(
            Suggestion(
                kind=SuggestionKind.REMOVE_CACHE,
                cache=spec.name,
                reason=reason,
                evidence=_evidence(ctx, images),
                saved_seconds_per_day=0.0,
                monthly_cost=cost.monthly,
                images=images,
                location=spec.location,
                file=_file(spec),
            )
        )
    return result


def _merge_policy(
    observed: list[Suggestion], policy_bumps: Sequence[Suggestion]
) -> list[Suggestion]:
    """Pass policy bumps through; one moving the same image of the same cache joins that bump."""
    result = list(observed)
    for policy in policy_bumps:
        for index, found in enumerate(result):
            if (
                found.kind is SuggestionKind.BUMP_TAG
                and found.policy is None
                and found.cache == policy.cache
                and set(found.from_images) == set(policy.from_images)
            ):
                name = f"image policy {policy.policy}" if policy.policy else "an image policy"
                if set(found.to_images) == set(policy.to_images):
                    extra = f"; {name} proposes the same."
                else:
                    targets = ", ".join(_short(image) for image in policy.to_images)
                    extra = f"; {name} proposes {targets} instead, but pods run this tag now."
                reason = found.reason.removesuffix(".") + extra
                result[index] = replace(found, policy=policy.policy, reason=reason)
                break
        else:
            result.append(policy)
    return result


# ------------------------------------------------------------- value and cost


def _evidence(ctx: _Context, images: Sequence[str]) -> SuggestionEvidence:
    """Sums over the images; pods = starts that pulled any of them, where groups say so."""
    items = [ctx.image(image) for image in dict.fromkeys(images)]
    starts = sum(group.count for group in _groups(ctx, images))
    timed = sum(e.timed_misses for e in items)
    return SuggestionEvidence(
        hits=sum(e.hits for e in items),
        partials=sum(e.partials for e in items),
        misses=sum(e.misses for e in items),
        # Per-image pods counted once per image; groups count a pod once for all of them.
        pods=max([starts, *(e.pods for e in items)]),
        observed_seconds=sum(e.miss_seconds for e in items) / timed if timed else None,
    )


def _groups(ctx: _Context, images: Iterable[str]) -> list[StartGroup]:
    """The start groups that pulled any of `images`, each once."""
    found: dict[int, StartGroup] = {}
    for image in images:
        for group in ctx.groups_of.get(image, ()):
            found[id(group)] = group
    return list(found.values())


class _Timing:
    """How the saved seconds were worked out, said as the end of a reason."""

    def __init__(self, parts: list[tuple[str, str]]) -> None:
        self._parts = parts  # (image, "12.0 s a pull, the mean of 4 timed misses")

    def __call__(self, saved: float) -> str:
        amount = f"about {seconds_text(saved)} of pulls a day"
        if len(self._parts) == 1:
            return f"{amount} at {self._parts[0][1]}"
        detail = ", ".join(f"{_short(image)} {how}" for image, how in self._parts)
        return f"{amount} ({detail})"


def _value(ctx: _Context, images: Sequence[str]) -> tuple[float, _Timing]:
    """Saved seconds per day if the images were served, and where each figure comes from."""
    total = 0.0
    parts: list[tuple[str, str]] = []
    for image in dict.fromkeys(images):
        evidence = ctx.image(image)
        seconds, how = _miss_seconds(ctx, evidence)
        total += (evidence.partials + evidence.misses) * seconds
        parts.append((image, how))
    return total / ctx.days, _Timing(parts)


def _miss_seconds(ctx: _Context, evidence: ImageEvidence) -> tuple[float, str]:
    mean = evidence.mean_miss_seconds
    if mean is not None:
        timed = _plural(evidence.timed_misses, "timed miss", "timed misses")
        return mean, f"{seconds_text(mean)} a pull (mean of {timed})"
    outcome = ctx.sizes.get(evidence.image) if ctx.sizes is not None else None
    if isinstance(outcome, ImageFacts):
        pulled = sum(layer.compressed_bytes for layer in outcome.layers)
        seconds = pulled / ctx.prices.pull_bytes_per_second
        rate = f"{ctx.prices.pull_bytes_per_second / 1e6:g} MB"
        return seconds, (
            f"{seconds_text(seconds)} a pull ({sizing.format_bytes(pulled)} at {rate}/s;"
            " no timing observed)"
        )
    return 0.0, "0 s a pull (no timing observed and no size known)"


def _update_cost(
    ctx: _Context, spec: CacheSpec, *, images: Sequence[str], size: int | None = None
) -> float:
    """The monthly cost of rebuilding `spec` with `images` (and `size`), against what runs now.

    Against the observed cache of that name; where none is observed yet, against
    the spec as Git has it now.
    """
    desired = replace(
        spec,
        images=tuple(images),
        image_cache_size_gib=spec.image_cache_size_gib if size is None else size,
    )
    observed = ctx.observed.get(spec.name) or ObservedCache(
        name=spec.name,
        cache_id="",
        status=CacheStatus.READY,
        images=spec.images,
        image_cache_size_gib=spec.image_cache_size_gib,
        image_pull_secrets=spec.image_pull_secrets,
        security_group_ids=spec.security_group_ids,
    )
    cost = pricing.action_cost(
        ActionKind.UPDATE, desired=desired, observed=observed, prices=ctx.prices
    )
    return cost.monthly


def _file(spec: CacheSpec) -> str | None:
    return spec.location.path if spec.location is not None else None


# --------------------------------------------------------------------- wording


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

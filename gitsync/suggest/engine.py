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

This module runs the rules in that order, merges the policy bumps and ranks;
each rule lives in a module of its own, over the input indexed once in
`context` (the package docstring draws the layers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from gitsync.model import CacheSpec, ObservedCache
from gitsync.observations.model import Evidence
from gitsync.pricing import PriceTable
from gitsync.sizing import ImageOutcome, SizeModel
from gitsync.suggest.context import _context
from gitsync.suggest.model import Suggestion, SuggestionKind, SuggestOptions
from gitsync.suggest.newcache import MAX_NAME_LENGTH, _new_caches
from gitsync.suggest.pending import _bumps, _group_adds, _Pending
from gitsync.suggest.removals import _removals
from gitsync.suggest.sizes import SHRINK_FACTOR, SHRINK_MIN_GIB, _resizes
from gitsync.suggest.unserved import _split_by_repository, _unserved
from gitsync.suggest.wording import _short, seconds_text, window_text

__all__ = [
    "MAX_NAME_LENGTH",
    "SHRINK_FACTOR",
    "SHRINK_MIN_GIB",
    "rank_key",
    "seconds_text",
    "suggest",
    "window_text",
]

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

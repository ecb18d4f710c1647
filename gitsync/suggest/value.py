"""What a suggestion is worth: pull seconds saved a day, the lookups behind it, its cost.

Every rule prices its change the same way (the engine's docstring, "Value"
and "Cost"), so the figures are comparable across kinds and the ranking is
fair: saved seconds from the timed misses, else from the compressed size at
the price table's pull rate; a change to an existing cache priced by
`pricing.action_cost` against what runs now. `_Timing` keeps how each figure
was worked out, so the reason can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from gitsync import pricing, sizing
from gitsync.model import ActionKind, CacheSpec, CacheStatus, ObservedCache
from gitsync.observations.model import ImageEvidence, StartGroup
from gitsync.sizing import ImageFacts
from gitsync.suggest.context import _Context
from gitsync.suggest.model import SuggestionEvidence
from gitsync.suggest.wording import _plural, _short, seconds_text


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

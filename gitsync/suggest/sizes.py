"""How large a cache must be for its images: a new cache's size, and the resize rule.

Both ask `gitsync plan`'s size check (`sizing.check_cache` over the unique
layers, `SizeModel.size_for` of the high estimate), so that a suggestion,
once applied, passes the plan it leads to. A resize looks at the images a
cache holds after the other suggestions for it (`pending`), so that applying
them all still fits. The thresholds of a shrink are here.
"""

from __future__ import annotations

from dataclasses import replace

from gitsync import sizing
from gitsync.model import DEFAULT_IMAGE_CACHE_SIZE_GIB, MAX_IMAGE_CACHE_SIZE_GIB, CacheSpec
from gitsync.sizing import ImageFacts, SizeModel, Unresolved
from gitsync.suggest.context import _canonical_or_written, _Context
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.pending import _Pending
from gitsync.suggest.value import _evidence, _file, _update_cost, _value
from gitsync.suggest.wording import _plural, _short

SHRINK_FACTOR = 2.0  # shrink only a cache more than twice the size its images need...
SHRINK_MIN_GIB = 10  # ...and at least this much larger: a rebuild for less is not worth it


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

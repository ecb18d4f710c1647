"""The size check's arithmetic: what counts, when a cache cannot fit, when it is tight."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitsync import sizing
from gitsync.model import CacheSpec, Severity, SourceLocation
from gitsync.sizing import Fit, ImageFacts, LayerFacts, SizeModel, Unresolved, check_cache

GIB = 1024**3
MIB = 1024**2
HERE = SourceLocation("caches/web.yaml", 3, 1)

# Round figures so the expected values can be worked out by hand.
MODEL = SizeModel(
    low_ratio=2.0,
    high_ratio=4.0,
    disk_factor=1.0,
    usable_fraction=0.9,
    min_headroom=0.2,
)


def spec(*images: str, size: int = 20) -> CacheSpec:
    return CacheSpec(name="web", images=images, image_cache_size_gib=size, location=HERE)


def layer(digest: int, compressed: int, expanded: int | None = None) -> LayerFacts:
    return LayerFacts(f"sha256:{digest:064x}", compressed, expanded)


def image(*layers: LayerFacts) -> ImageFacts:
    return ImageFacts(layers=layers)


def test_exact_sizes_that_do_not_fit_are_an_error_naming_cache_and_both_sizes() -> None:
    # usable 18 GiB; needed 1 GiB compressed + 18 GiB expanded = 19 GiB
    fit = check_cache(spec("a", size=20), {"a": image(layer(1, 1 * GIB, 18 * GIB))}, model=MODEL)
    assert fit.fit is Fit.TOO_SMALL
    assert fit.exact
    assert fit.needed_low == fit.needed_high == 19 * GIB
    assert fit.usable_bytes == math.floor(20 * GIB * 0.9)
    [error] = fit.diagnostics
    assert error.severity is Severity.ERROR
    assert error.rule == "size-fit"
    assert error.location == HERE
    assert error.field == "spec.imageCacheSize"
    assert "'web'" in error.message
    assert "19.0 GiB on disk" in error.message
    assert "imageCacheSize 20 GiB" in error.message
    assert "18.0 GiB usable" in error.message
    assert "exact" in error.message
    # 19 GiB / (0.9 * 0.8) = 26.4 -> 27
    assert "raise imageCacheSize to at least 27 GiB" in error.message


@pytest.mark.parametrize(
    ("compressed_gib", "size", "expected"),
    [
        # estimate: needed = c + c*2 (low) .. c + c*4 (high); usable = 0.9 * size
        (1, 20, Fit.FITS),  # high 5 of 18: 72% free
        (3, 20, Fit.TIGHT),  # high 15 of 18: 17% free
        (5, 20, Fit.TIGHT),  # low 15 fits, high 25 does not: may not fit, a warning
        (7, 20, Fit.TOO_SMALL),  # low 21 of 18: cannot fit even at the typical ratio
        (7, 40, Fit.TIGHT),  # high 35 of 36
        (7, 50, Fit.FITS),  # high 35 of 45: 22% free
    ],
)
def test_estimates_error_only_when_even_the_low_ratio_cannot_fit(
    compressed_gib: int, size: int, expected: Fit
) -> None:
    fit = check_cache(
        spec("a", size=size), {"a": image(layer(1, compressed_gib * GIB))}, model=MODEL
    )
    assert fit.fit is expected
    assert not fit.exact
    assert fit.expanded_low == 2 * compressed_gib * GIB
    assert fit.expanded_high == 4 * compressed_gib * GIB
    severities = [d.severity for d in fit.diagnostics]
    assert (
        severities
        == {
            Fit.FITS: [],
            Fit.TIGHT: [Severity.WARNING],
            Fit.TOO_SMALL: [Severity.ERROR],
        }[expected]
    )


def test_layers_shared_by_images_count_once_and_known_sizes_win() -> None:
    base = layer(1, 2 * GIB)
    base_known = layer(1, 2 * GIB, 5 * GIB)
    facts = {
        "a": image(base, layer(2, 1 * GIB)),
        "b": image(base_known, layer(3, 1 * GIB, 3 * GIB)),
    }
    fit = check_cache(spec("a", "b", size=100), facts, model=MODEL)
    assert fit.layers == 3
    assert fit.compressed_bytes == 4 * GIB
    # exact 5 + 3, estimated layer 2: 1 GiB x 2..4
    assert fit.expanded_low == 10 * GIB
    assert fit.expanded_high == 12 * GIB
    assert not fit.exact  # one layer is still estimated
    assert fit.fit is Fit.FITS


def test_an_unreadable_image_is_a_skipped_warning_and_what_was_read_still_counts() -> None:
    why = "manifest 127.0.0.1:1/app:1 failed after 2 attempts: ConnectError"
    facts = {"ok": image(layer(1, 10 * MIB, 30 * MIB)), "gone": Unresolved(why)}
    fit = check_cache(spec("ok", "gone"), facts, model=MODEL)
    assert fit.fit is Fit.UNKNOWN
    assert fit.resolved_images == 1
    assert fit.skipped == (("gone", why),)
    [warning] = fit.diagnostics
    assert warning.severity is Severity.WARNING
    assert warning.field == "spec.images"
    assert "size check skipped for 1 of 2 images of cache 'web'" in warning.message
    assert f"gone: {why}" in warning.message

    # Too small for the part that was read: an error, and still the skipped warning.
    facts = {"ok": image(layer(1, 1 * GIB, 30 * GIB)), "gone": Unresolved(why)}
    fit = check_cache(spec("ok", "gone"), facts, model=MODEL)
    assert fit.fit is Fit.TOO_SMALL
    assert [d.severity for d in fit.diagnostics] == [Severity.ERROR, Severity.WARNING]
    assert "only 1 of 2 images could be read" in fit.diagnostics[0].message


def test_an_image_without_facts_counts_as_not_looked_up() -> None:
    fit = check_cache(spec("a"), {}, model=MODEL)
    assert fit.skipped == (("a", "not looked up"),)


def test_a_cache_beyond_the_largest_size_is_told_to_split() -> None:
    fit = check_cache(spec("a"), {"a": image(layer(1, GIB, 40_000 * GIB))}, model=MODEL)
    assert "split the images over several caches" in fit.diagnostics[0].message


def test_the_default_model_keeps_compressed_blobs_and_formats_bytes() -> None:
    model = SizeModel()
    assert model.needed_bytes(compressed=100, expanded=1000) == 100 + math.ceil(
        1000 * model.disk_factor
    )
    assert model.usable_bytes(20) < 20 * GIB
    assert sizing.format_bytes(512) == "512 B"
    assert sizing.format_bytes(19 * MIB + MIB // 10) == "19.1 MiB"
    assert sizing.format_bytes(5 * 1024 * GIB) == "5120.0 GiB"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_ratio": 3.0, "high_ratio": 2.0},
        {"low_ratio": 0.5},
        {"disk_factor": 0.9},
        {"usable_fraction": 0.0},
        {"min_headroom": 1.0},
    ],
)
def test_a_model_that_makes_no_sense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="SizeModel"):
        SizeModel(**kwargs)


# Facts about a digest are the same wherever it appears: content addressing.
layers_strategy = st.dictionaries(
    st.integers(0, 20),
    st.tuples(st.integers(0, 50 * GIB), st.one_of(st.none(), st.integers(0, 200 * GIB))),
    max_size=8,
).map(lambda known: [layer(d, c, e) for d, (c, e) in known.items()])


@given(layers=layers_strategy, size=st.integers(20, 32000))
def test_raising_the_size_never_makes_the_verdict_worse(
    layers: list[LayerFacts], size: int
) -> None:
    rank = {Fit.FITS: 0, Fit.UNKNOWN: 0, Fit.TIGHT: 1, Fit.TOO_SMALL: 2}
    facts = {"a": image(*layers)}
    small = check_cache(spec("a", size=size), facts)
    big = check_cache(spec("a", size=size + 1), facts)
    assert rank[big.fit] <= rank[small.fit]
    assert small.needed_low <= small.needed_high
    assert small.compressed_bytes <= small.needed_low or not layers
    # The suggested size leaves the promised headroom.
    wanted = SizeModel().size_for(small.needed_high)
    if wanted <= 32000:
        assert check_cache(spec("a", size=wanted), facts).fit is Fit.FITS


@given(layers=layers_strategy, split=st.integers(0, 8))
def test_splitting_the_same_layers_over_images_changes_nothing(
    layers: list[LayerFacts], split: int
) -> None:
    together = check_cache(spec("a"), {"a": image(*layers)})
    apart = check_cache(
        spec("a", "b"), {"a": image(*layers[:split]), "b": image(*layers[split:], *layers)}
    )
    assert apart.compressed_bytes == together.compressed_bytes
    assert apart.needed_low == together.needed_low
    assert apart.fit is together.fit

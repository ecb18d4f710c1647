"""Will a cache's images fit its `imageCacheSize`? Pure arithmetic over facts about layers.

Why: the cloud builds a cache on a temporary instance whose data disk is
`imageCacheSize` GiB, pulls the images onto it, and fails the cache when they
do not fit, after billing the instance. `gitsync plan` says so before the
money is spent. The facts (layer digests and sizes) come from the registries
and the local store (`providers.local.imagesizes`); this module only decides,
so every rule is tested here without a registry.

The model. Each figure was measured by `bench/size_ratio.py` (its docstring
says how, its output gives the figures) and rounded the cautious way:

* **Expanded bytes** (the layers' tar streams) are exact where the local
  store has verified a layer: it counted them while checking the diff_id.
  Otherwise they are estimated from the compressed size the manifest gives,
  as a range: compressed × `low_ratio` (1.9) to compressed × `high_ratio`
  (4.9). Of 5,000 layers made of 20 random real Debian packages gzipped at
  level 6 as docker does, 5 % expanded less than 1.97× and 5 % more than
  4.83×; whole trees (a debootstrap rootfs 2.49, a JDK 2.08, /usr/share
  3.09, node_modules 4.56) fall inside.
* **Needed on disk** = the compressed bytes of the cache's unique layers
  (containerd keeps the compressed blobs in its content store after it
  unpacks them: its `discard_unpacked_layers` option defaults to false) + the
  expanded bytes, × `disk_factor` (1.13) for the estimate: files take whole
  4 KiB blocks and directories take blocks too; written into ext4, the trees
  measured took 0.96 to 1.124 × their tar bytes. A layer several images share
  (same digest) counts once: one disk stores it once.
* **Usable** = `imageCacheSize` GiB × `usable_fraction` (0.92): a freshly
  formatted ext4 disk spends blocks on inode tables and its journal and
  reserves 5 % for root; what `df` calls available was 92.6 % of a 20 GiB
  disk and 93.3 % of a 1 TiB one (mke2fs defaults of Debian 12).

Verdicts, each a `Diagnostic` with rule `size-fit` at the cache's document:

* error when the images cannot fit: the low end of the range (exact sizes,
  or compressed × `low_ratio`; no disk factor) is more than the usable space;
* warning when the high end (exact or compressed × `high_ratio`, × the disk
  factor) leaves less than `min_headroom` (20 %) of the usable space free;
* warning "check skipped" naming each image whose manifest could not be read
  and why. What was read still counts, so a cache already too small for part
  of its images is an error all the same.

A limit of the estimate: a layer of content that is already compressed
(archives, JARs, model weights, media) expands barely at all, less than the
low ratio, so a cache of such images near its limit can be called too small
when it is not. Sizes the local store knows are exact: pull the images once
with the local backend into the data dir the plan reads, or pass
`--no-size-check`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gitsync.model import (
    MAX_IMAGE_CACHE_SIZE_GIB,
    MIN_IMAGE_CACHE_SIZE_GIB,
    CacheSpec,
    Diagnostic,
    Severity,
    SourceLocation,
)
from gitsync.units import GIB

__all__ = [
    "RULE",
    "CacheFit",
    "Fit",
    "ImageFacts",
    "LayerFacts",
    "SizeModel",
    "SizeReport",
    "Unresolved",
    "check_cache",
    "format_bytes",
]

RULE = "size-fit"

# Measured by bench/size_ratio.py; see the module docstring and bench/RESULTS.md.
LOW_RATIO = 1.9  # simulated layers' 5th percentile: 1.97
HIGH_RATIO = 4.9  # their 95th percentile: 4.83
DISK_FACTOR = 1.13  # ext4 blocks ÷ tar bytes, at most 1.124 measured
USABLE_FRACTION = 0.92  # available on a fresh ext4, at least 0.9259 measured
MIN_HEADROOM = 0.20


@dataclass(frozen=True, slots=True)
class LayerFacts:
    """One layer: its digest, its compressed size, and its expanded size when known."""

    digest: str
    compressed_bytes: int
    expanded_bytes: int | None = None  # tar bytes, known once the local store verified it


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """An image resolved for the target platform: its layers, bottom first."""

    layers: tuple[LayerFacts, ...]


@dataclass(frozen=True, slots=True)
class Unresolved:
    """An image whose manifest could not be read, and why (registry down, denied...)."""

    reason: str


ImageOutcome = ImageFacts | Unresolved


@dataclass(frozen=True, slots=True)
class SizeModel:
    """The assumptions of the check; the defaults are the measured figures above."""

    low_ratio: float = LOW_RATIO
    high_ratio: float = HIGH_RATIO
    disk_factor: float = DISK_FACTOR
    usable_fraction: float = USABLE_FRACTION
    min_headroom: float = MIN_HEADROOM
    keeps_compressed: bool = True  # containerd keeps compressed blobs beside the unpacked files

    def __post_init__(self) -> None:
        if not 1.0 <= self.low_ratio <= self.high_ratio:
            raise ValueError("SizeModel: need 1 <= low_ratio <= high_ratio")
        if self.disk_factor < 1.0:
            raise ValueError("SizeModel: disk_factor must be at least 1")
        if not 0.0 < self.usable_fraction <= 1.0 or not 0.0 <= self.min_headroom < 1.0:
            raise ValueError("SizeModel: usable_fraction in (0, 1], min_headroom in [0, 1)")

    def usable_bytes(self, size_gib: int) -> int:
        """Bytes the images may fill on a formatted disk of `size_gib` GiB."""
        return math.floor(size_gib * GIB * self.usable_fraction)

    def needed_bytes(self, *, compressed: int, expanded: int, low: bool = False) -> int:
        """Bytes on disk for layers of these compressed and expanded (tar) sizes.

        The low bound counts the expanded bytes as they are; the estimate adds
        what unpacked files cost beyond the tar stream (`disk_factor`).
        """
        kept = compressed if self.keeps_compressed else 0
        return kept + (expanded if low else math.ceil(expanded * self.disk_factor))

    def size_for(self, needed: int) -> int:
        """The smallest imageCacheSize (GiB) leaving `min_headroom` free for `needed` bytes."""
        room = self.usable_fraction * (1.0 - self.min_headroom) * GIB
        return max(MIN_IMAGE_CACHE_SIZE_GIB, math.ceil(needed / room))


class Fit(enum.StrEnum):
    FITS = "fits"  # with at least min_headroom free
    TIGHT = "tight"  # fits, or may, with less than min_headroom free: a warning
    TOO_SMALL = "too-small"  # cannot fit: an error
    UNKNOWN = "unknown"  # some images could not be read and what was read fits


@dataclass(frozen=True, slots=True)
class CacheFit:
    """The check of one cache: sizes over the images that could be read, and the verdict.

    `expanded_low` and `expanded_high` are equal when `exact`; otherwise they
    bracket the estimate (typical and conservative ratio). `headroom` is the
    share of the usable space the high estimate leaves free (negative: short).
    """

    name: str
    size_gib: int
    images: int
    resolved_images: int
    layers: int
    compressed_bytes: int
    expanded_low: int
    expanded_high: int
    exact: bool
    needed_low: int
    needed_high: int
    usable_bytes: int
    headroom: float
    fit: Fit
    skipped: tuple[tuple[str, str], ...] = ()  # (image as written, why)
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True, slots=True)
class SizeReport:
    """Every cache the plan builds, checked; or why nothing was checked."""

    caches: tuple[CacheFit, ...] = ()
    model: SizeModel = field(default_factory=SizeModel)
    off: str | None = None  # why the check did not run (e.g. --no-size-check)

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        return tuple(d for c in self.caches for d in c.diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)


def check_cache(
    spec: CacheSpec, images: Mapping[str, ImageOutcome], *, model: SizeModel | None = None
) -> CacheFit:
    """Check `spec` against facts about its images, keyed by the image as written in the spec.

    An image missing from `images` counts as unresolved ("not looked up").
    """
    model = model or SizeModel()
    layers: dict[str, LayerFacts] = {}
    skipped: list[tuple[str, str]] = []
    for image in spec.images:
        outcome = images.get(image, Unresolved("not looked up"))
        if isinstance(outcome, Unresolved):
            skipped.append((image, outcome.reason))
            continue
        for layer in outcome.layers:
            known = layers.get(layer.digest)
            if known is None or (known.expanded_bytes is None and layer.expanded_bytes is not None):
                layers[layer.digest] = layer
    compressed = sum(layer.compressed_bytes for layer in layers.values())
    exact_part = sum(layer.expanded_bytes or 0 for layer in layers.values())
    unknown = sum(
        layer.compressed_bytes for layer in layers.values() if layer.expanded_bytes is None
    )
    expanded_low = exact_part + math.ceil(unknown * model.low_ratio)
    expanded_high = exact_part + math.ceil(unknown * model.high_ratio)
    needed_low = model.needed_bytes(compressed=compressed, expanded=expanded_low, low=True)
    needed_high = model.needed_bytes(compressed=compressed, expanded=expanded_high)
    usable = model.usable_bytes(spec.image_cache_size_gib)
    headroom = 1.0 - needed_high / usable if usable else -math.inf
    exact = not any(layer.expanded_bytes is None for layer in layers.values())
    if needed_low > usable:
        fit = Fit.TOO_SMALL
    elif headroom < model.min_headroom:
        fit = Fit.TIGHT
    elif skipped:
        fit = Fit.UNKNOWN
    else:
        fit = Fit.FITS
    result = CacheFit(
        name=spec.name,
        size_gib=spec.image_cache_size_gib,
        images=len(spec.images),
        resolved_images=len(spec.images) - len(skipped),
        layers=len(layers),
        compressed_bytes=compressed,
        expanded_low=expanded_low,
        expanded_high=expanded_high,
        exact=exact,
        needed_low=needed_low,
        needed_high=needed_high,
        usable_bytes=usable,
        headroom=headroom,
        fit=fit,
        skipped=tuple(skipped),
    )
    return _with_diagnostics(result, spec=spec, model=model)


def _with_diagnostics(result: CacheFit, *, spec: CacheSpec, model: SizeModel) -> CacheFit:
    location = spec.location or SourceLocation(f"(cache {spec.name})", 1, 1)
    diagnostics: list[Diagnostic] = []
    partial = (
        f" (only {result.resolved_images} of {result.images} images could be read)"
        if result.skipped
        else ""
    )
    if result.fit is Fit.TOO_SMALL:
        diagnostics.append(
            Diagnostic(
                location=location,
                severity=Severity.ERROR,
                rule=RULE,
                field="spec.imageCacheSize",
                message=(
                    f"cache {spec.name!r} cannot fit its images{partial}: they need"
                    f" {_needed(result, model, low=True)}, but imageCacheSize {result.size_gib} GiB"
                    f" leaves {format_bytes(result.usable_bytes)} usable after file-system"
                    f" overhead; {_advice(result, model)}"
                ),
            )
        )
    elif result.fit is Fit.TIGHT:
        how = (
            "may not fit its images"
            if result.headroom < 0
            else f"leaves only {result.headroom:.0%} of its usable space free"
        )
        diagnostics.append(
            Diagnostic(
                location=location,
                severity=Severity.WARNING,
                rule=RULE,
                field="spec.imageCacheSize",
                message=(
                    f"cache {spec.name!r} {how}{partial}: they need"
                    f" {_needed(result, model, low=False)} of"
                    f" {format_bytes(result.usable_bytes)} usable in imageCacheSize"
                    f" {result.size_gib} GiB; with less than {model.min_headroom:.0%} headroom a"
                    f" build may run out of space; {_advice(result, model)}"
                ),
            )
        )
    if result.skipped:
        listed = "; ".join(f"{image}: {why}" for image, why in result.skipped)
        diagnostics.append(
            Diagnostic(
                location=location,
                severity=Severity.WARNING,
                rule=RULE,
                field="spec.images",
                message=(
                    f"size check skipped for {len(result.skipped)} of {result.images} images of"
                    f" cache {spec.name!r}: {listed}"
                ),
            )
        )
    return replace(result, diagnostics=tuple(diagnostics))


def _needed(result: CacheFit, model: SizeModel, *, low: bool) -> str:
    """`19.0 GiB on disk (19.0 MiB compressed + 19.0 GiB expanded; exact, ...)`."""
    needed = result.needed_low if low else result.needed_high
    expanded = format_bytes(result.expanded_low if low else result.expanded_high) + " expanded"
    if not low:
        expanded += f" × {model.disk_factor:g} for file-system blocks"
    if result.exact:
        how = "expanded sizes exact, from the local store"
    else:
        ratio = model.low_ratio if low else model.high_ratio
        how = (
            f"expanded estimated as compressed × {ratio:g} where the local store has not"
            " pulled a layer"
        )
    bound = "" if result.exact else ("at least " if low else "up to ")
    kept = (
        f"{format_bytes(result.compressed_bytes)} compressed + " if model.keeps_compressed else ""
    )
    return f"{bound}{format_bytes(needed)} on disk ({kept}{expanded}; {how})"


def _advice(result: CacheFit, model: SizeModel) -> str:
    wanted = model.size_for(result.needed_high)
    if wanted > MAX_IMAGE_CACHE_SIZE_GIB:
        return (
            f"that is more than the largest cache ({MAX_IMAGE_CACHE_SIZE_GIB} GiB) allows:"
            " split the images over several caches"
        )
    return f"raise imageCacheSize to at least {wanted} GiB, or remove images"


def format_bytes(count: int) -> str:
    """`512 B`, `19.1 MiB`, `18.3 GiB`: binary units, one decimal."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: GiB is the last unit")

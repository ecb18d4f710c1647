"""One cache's lines in the state families: info, times, sizes and what it costs.

A pure function of the cache, the provider and the price table, apart from
`StateExposition`'s caching so that what a cache shows can be read (and
changed) without the bookkeeping that decides when to recompute it. The lines
are static: they change only when the cache's object does; the cost that
accrues with time is computed per scrape from what `CacheLines` keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitsync import pricing
from gitsync.metrics.exposition import escape_value, label_set, sample_value
from gitsync.model import ObservedCache
from gitsync.units import GIB

# Families of StateExposition, in exposition order; indexes name the slots of CacheLines.
STATE_FAMILIES = (
    ("gitsync_applied_revision_info", "gauge", "1 for the revision in force."),
    ("gitsync_cache_info", "gauge", "1 per cache the provider holds."),
    ("gitsync_cache_expiry_timestamp_seconds", "gauge", "When the cache expires."),
    ("gitsync_cache_created_timestamp_seconds", "gauge", "When it was created."),
    ("gitsync_cache_last_matched_timestamp_seconds", "gauge", "When a pod last used the cache."),
    ("gitsync_cache_capacity_bytes", "gauge", "imageCacheSize in bytes."),
    ("gitsync_cache_content_bytes", "gauge", "Expanded size of its images."),
    ("gitsync_cache_images", "gauge", "Number of images in the cache."),
    (
        "gitsync_cache_cost_per_hour",
        "gauge",
        "Standing cost per hour, by component, in gitsync_pricing_info's currency.",
    ),
    (
        "gitsync_cost",
        "counter",
        "Money spent so far, by component (creation, snapshot, disk), estimated.",
    ),
    ("gitsync_cache_desired", "gauge", "1 per cache in the applied revision."),
    ("gitsync_cache_ready", "gauge", "1 if the desired cache is Ready, else 0."),
    ("gitsync_pricing_info", "gauge", "1; the currency label names the price table's currency."),
)
(
    REVISION,
    INFO,
    EXPIRY,
    CREATED,
    MATCHED,
    CAPACITY,
    CONTENT,
    IMAGES,
    COST_HOURLY,
    COST_TOTAL,
    DESIRED,
    READY,
    PRICING,
) = range(len(STATE_FAMILIES))


@dataclass(frozen=True, slots=True)
class CacheLines:
    """One cache's static lines per family, and what the dynamic lines need."""

    source: ObservedCache
    owned: bool
    lines: dict[int, str]
    label: str  # {cache="…",provider="…"} without the closing brace
    snapshot_hourly: float
    built_at: float | None  # when the snapshot cost started to accrue


def cache_lines(
    cache: ObservedCache, *, provider: str, controller_id: str, prices: pricing.PriceTable
) -> CacheLines:
    """`cache`'s static lines; only a cache this controller owns has more than its info line."""
    info = label_set(cache=cache.name, provider=provider, cache_id=cache.cache_id)
    info = info[:-1] + f',status="{escape_value(cache.status.value)}"}}'
    lines = {INFO: f"gitsync_cache_info{info} 1.0\n"}
    owned = cache.owner == controller_id
    label = label_set(cache=cache.name, provider=provider)[:-1]
    hourly, built_at = 0.0, None
    if owned:
        closed = label + "}"
        if cache.expires_at is not None:
            lines[EXPIRY] = (
                f"gitsync_cache_expiry_timestamp_seconds{closed} "
                f"{sample_value(cache.expires_at.timestamp())}\n"
            )
        if cache.created_at is not None:
            lines[CREATED] = (
                f"gitsync_cache_created_timestamp_seconds{closed} "
                f"{sample_value(cache.created_at.timestamp())}\n"
            )
        if cache.last_matched_at is not None:
            lines[MATCHED] = (
                f"gitsync_cache_last_matched_timestamp_seconds{closed} "
                f"{sample_value(cache.last_matched_at.timestamp())}\n"
            )
        lines[CAPACITY] = (
            f"gitsync_cache_capacity_bytes{closed} "
            f"{sample_value(cache.image_cache_size_gib * GIB)}\n"
        )
        if cache.content_bytes is not None:
            lines[CONTENT] = (
                f"gitsync_cache_content_bytes{closed} {sample_value(cache.content_bytes)}\n"
            )
        lines[IMAGES] = f"gitsync_cache_images{closed} {sample_value(len(cache.images))}\n"
        if cache.snapshot_id is not None:  # no snapshot, nothing billed
            hourly = pricing.snapshot_cost_per_hour(
                size_gib=cache.image_cache_size_gib,
                content_bytes=cache.content_bytes,
                prices=prices,
            )
            built_at = cache.created_at.timestamp() if cache.created_at else None
            creation = pricing.creation_cost(
                size_gib=cache.image_cache_size_gib,
                content_bytes=cache.content_bytes,
                prices=prices,
            )
            lines[COST_TOTAL] = (
                f'gitsync_cost_total{label},component="creation"}} {sample_value(creation)}\n'
            )
        lines[COST_HOURLY] = (
            f'gitsync_cache_cost_per_hour{label},component="snapshot"}} {sample_value(hourly)}\n'
        )
    return CacheLines(
        source=cache,
        owned=owned,
        lines=lines,
        label=label,
        snapshot_hourly=hourly,
        built_at=built_at,
    )

"""Per-cache series computed at scrape time from the daemon's latest `StateView`.

State that mirrors something external (the caches a provider holds, the
revision in force) is not updated as events happen but rendered from the
view, so a cache that is gone simply is not rendered and its series vanish
instead of going stale. What is kept between scrapes is only a cache: each
cache's lines (`cachetext`) until its object changes, each family's joined
text until the view does, and the cost that accrues with time per minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gitsync import pricing
from gitsync.metrics.cachetext import (
    COST_HOURLY,
    COST_TOTAL,
    DESIRED,
    PRICING,
    READY,
    REVISION,
    STATE_FAMILIES,
    CacheLines,
    cache_lines,
)
from gitsync.metrics.exposition import TextCollector, family_header, label_set, sample_value
from gitsync.metrics.usage import UsageMetrics
from gitsync.model import CacheSpec, CacheStatus, ObservedCache


@dataclass(frozen=True, slots=True)
class StateView:
    """The daemon's latest knowledge: revision in force, desired caches, provider's caches."""

    applied_revision: str | None
    desired: Sequence[CacheSpec]
    observed: Sequence[ObservedCache]
    controller_id: str


class StateExposition(TextCollector):
    """Per-cache series of the metric contract, from the daemon's latest `StateView`."""

    FAMILIES = STATE_FAMILIES

    def __init__(
        self,
        *,
        provider: str,
        view: Callable[[], StateView],
        prices: pricing.PriceTable,
        usage: UsageMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._view = view
        self._prices = prices
        self._usage = usage
        self._clock = clock
        self._lock = threading.Lock()
        self._caches: dict[str, CacheLines] = {}  # by cache id
        self._desired: dict[str, tuple[CacheSpec, ObservedCache | None, tuple[str, str]]] = {}
        # The last view's joined static text, and the dynamic text of its last minute.
        self._static: tuple[tuple[object, ...], list[bytes], list[CacheLines]] | None = None
        self._dynamic: tuple[object, dict[int, bytes]] | None = None

    def render(self) -> bytes:
        view = self._view()
        with self._lock:
            return self._render(view)

    def _render(self, view: StateView) -> bytes:
        key = (view.observed, view.desired, view.applied_revision, view.controller_id)
        cached = self._static
        # Identity for the collections (providers hand back the same tuple while nothing
        # changed), equality for the strings.
        if cached is None or not (
            cached[0][0] is key[0] and cached[0][1] is key[1] and cached[0][2:] == key[2:]
        ):
            cached = self._static = (key, *self._static_text(view))
        _, static, accruing = cached
        dynamic = self._dynamic_text(accruing)
        return b"".join(
            static[index] + dynamic[index] if index in dynamic else static[index]
            for index in range(len(STATE_FAMILIES))
        )

    def _static_text(self, view: StateView) -> tuple[list[bytes], list[CacheLines]]:
        """Each family's lines that only change when the view does, joined per family."""
        entries = [self._entry(cache, view.controller_id) for cache in view.observed]
        self._caches = {e.source.cache_id: e for e in entries}
        out: list[list[str]] = [[] for _ in STATE_FAMILIES]
        if view.applied_revision:
            out[REVISION].append(
                f"gitsync_applied_revision_info{label_set(revision=view.applied_revision)} 1.0\n"
            )
        for entry in entries:
            for family, line in entry.lines.items():
                out[family].append(line)
        self._desired_lines(view, entries, out)
        out[PRICING].append(
            f"gitsync_pricing_info{label_set(currency=self._prices.currency)} 1.0\n"
        )
        self._dynamic = None
        texts = [
            (family_header(*family) + "".join(lines)).encode()
            for family, lines in zip(STATE_FAMILIES, out, strict=True)
        ]
        return texts, [e for e in entries if e.owned]

    def _dynamic_text(self, owned: list[CacheLines]) -> dict[int, bytes]:
        """Accrued snapshot cost (per minute) and pod disk cost (per observer report)."""
        running, disk_gib_hours = self._usage.disk_usage() if self._usage else ({}, {})
        minute = int(self._clock() // 60) * 60  # a counter of money needs no finer steps
        version = (minute, tuple(sorted(running.items())), tuple(sorted(disk_gib_hours.items())))
        if self._dynamic is not None and self._dynamic[0] == version:
            return self._dynamic[1]
        hourly_lines: list[str] = []
        total_lines: list[str] = []
        disk_price = self._prices.disk_per_gib_hour
        for entry in owned:
            if entry.built_at is not None:
                accrued = entry.snapshot_hourly * max(0.0, minute - entry.built_at) / 3600
                total_lines.append(
                    f'gitsync_cost_total{entry.label},component="snapshot"}} '
                    f"{sample_value(accrued)}\n"
                )
            name = entry.source.name
            if name in running or name in disk_gib_hours:  # only where a pod observer reports
                size = entry.source.image_cache_size_gib
                hourly = running.get(name, 0) * size * disk_price
                spent = disk_gib_hours.get(name, 0.0) * disk_price
                disk = f'{entry.label},component="disk"}}'
                hourly_lines.append(f"gitsync_cache_cost_per_hour{disk} {sample_value(hourly)}\n")
                total_lines.append(f"gitsync_cost_total{disk} {sample_value(spent)}\n")
        text = {
            COST_HOURLY: "".join(hourly_lines).encode(),
            COST_TOTAL: "".join(total_lines).encode(),
        }
        self._dynamic = (version, text)
        return text

    def _desired_lines(
        self, view: StateView, entries: Sequence[CacheLines], out: list[list[str]]
    ) -> None:
        held = {e.source.name: e.source for e in entries if e.owned}
        fresh: dict[str, tuple[CacheSpec, ObservedCache | None, tuple[str, str]]] = {}
        for spec in view.desired:
            cache = held.get(spec.name)
            known = self._desired.get(spec.name)
            if known is not None and known[0] is spec and known[1] is cache:
                pair = known[2]
            else:
                label = label_set(cache=spec.name, provider=self._provider)
                ready = 1 if cache is not None and cache.status is CacheStatus.READY else 0
                pair = (
                    f"gitsync_cache_desired{label} 1.0\n",
                    f"gitsync_cache_ready{label} {ready}.0\n",
                )
            fresh[spec.name] = (spec, cache, pair)
            out[DESIRED].append(pair[0])
            out[READY].append(pair[1])
        self._desired = fresh

    def _entry(self, cache: ObservedCache, controller_id: str) -> CacheLines:
        known = self._caches.get(cache.cache_id)
        if known is not None and known.source is cache:
            return known
        return cache_lines(
            cache, provider=self._provider, controller_id=controller_id, prices=self._prices
        )

"""The daemon's suggestions: `gitsync suggest` worked out on a timer, for `/api/v1/suggestions`.

Why on a timer and not per request: reading a month of lookups and the
registries' sizes takes from milliseconds to seconds (a registry can be slow or
down), and an API answer must not wait for either. So one thread works the
suggestions out every `interval` from the latest pass's specs and caches, and
the API and the `gitsync_suggestions{kind}` gauge read the last result. The
decision itself is `gitsync.suggest.engine`, the same as the command's.

The JSON is the command's (`--format json`), plus `computedAt` and `missed`:
the most missed images of the window (per-image detail is never a metric
label, so the dashboard's "most missed images" panel reads it here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from gitsync.model import CacheSpec, ObservedCache
from gitsync.observations.model import Evidence
from gitsync.pricing import PriceTable
from gitsync.suggest import engine, reports
from gitsync.suggest.model import (
    DEFAULT_MIN_MISSES,
    DEFAULT_WINDOW_SECONDS,
    Suggestion,
    SuggestionKind,
    SuggestOptions,
)
from gitsync.wakeable import WakeableThread

__all__ = ["MISSED_LIMIT", "SuggestionLoop", "missed_images"]

log = logging.getLogger("gitsync.suggester")

MISSED_LIMIT = 20  # images in the `missed` list


class EvidenceReader(Protocol):
    def evidence(self, *, since: float, until: float) -> Evidence: ...


# Sizes of images, by canonical reference, for the suggestions that need them.
SizeLookup = Callable[[Sequence[str]], Mapping[str, Any]]


def missed_images(evidence: Evidence, *, limit: int = MISSED_LIMIT) -> list[dict[str, object]]:
    """The images that missed most in the window (misses, then partials), for the API."""
    ranked = sorted(
        (i for i in evidence.images if i.misses or i.partials),
        key=lambda i: (-i.misses, -i.partials, i.image),
    )
    return [
        {"image": i.image, "misses": i.misses, "partials": i.partials, "hits": i.hits}
        for i in ranked[:limit]
    ]


class SuggestionLoop(WakeableThread):
    """Works the suggestions out every `interval_seconds`; `latest()` is the API's answer."""

    def __init__(
        self,
        *,
        store: EvidenceReader,
        desired: Callable[[], tuple[CacheSpec, ...]],
        observed: Callable[[], tuple[ObservedCache, ...]],
        prices: PriceTable,
        interval_seconds: float,
        on_counts: Callable[[Mapping[str, int]], None],
        sizes: SizeLookup | None = None,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        min_misses: int = DEFAULT_MIN_MISSES,
        clock: Callable[[], float] = time.time,
        policy_bumps: Callable[[], Sequence[Suggestion] | None] | None = None,
    ) -> None:
        """`policy_bumps`: the image policies' pending bumps (gitsync.policyloop), merged in."""
        self._store = store
        self._desired = desired
        self._observed = observed
        self._prices = prices
        self._interval = interval_seconds
        self._on_counts = on_counts
        self._sizes = sizes
        self._window = window_seconds
        self._min_misses = min_misses
        self._clock = clock
        self._policy_bumps = policy_bumps
        self._found: tuple[Suggestion, ...] | None = None
        self._lock = threading.Lock()
        self._latest: dict[str, object] = {
            "computedAt": None,
            "window": None,
            "suggestions": [],
            "missed": [],
            "note": "not worked out yet: the first pass has not finished",
        }
        super().__init__(name="gitsync-suggest")

    def latest(self) -> dict[str, object]:
        with self._lock:
            return dict(self._latest)

    def found(self) -> tuple[Suggestion, ...] | None:
        """The last round's suggestions; None before the first round."""
        with self._lock:
            return self._found

    def _run(self) -> None:
        while self.sleep(self._interval):
            try:
                self.compute()
            except Exception:  # a bug here must not stop the daemon serving
                log.exception("working out the suggestions failed; the next interval retries")

    def compute(self) -> dict[str, object]:
        """One round, on the caller's thread (the loop's, or a test's)."""
        now = self._clock()
        since = now - self._window
        desired, observed = self._desired(), self._observed()
        evidence = self._store.evidence(since=since, until=now)
        options = SuggestOptions(now=now, window_seconds=self._window, min_misses=self._min_misses)
        bumps = (self._policy_bumps() if self._policy_bumps is not None else None) or ()
        found = engine.suggest(
            evidence=evidence,
            desired=desired,
            observed=observed,
            prices=self._prices,
            options=options,
            policy_bumps=bumps,
        )
        if self._sizes is not None and any(_needs_size(s) for s in found):
            images = sorted({image for s in found if _needs_size(s) for image in s.images})
            try:
                sizes = self._sizes(images)
            except Exception as exc:  # an unreachable registry: the suggestions without sizes
                log.warning("image sizes for the suggestions: %s", exc)
            else:
                found = engine.suggest(
                    evidence=evidence,
                    desired=desired,
                    observed=observed,
                    prices=self._prices,
                    options=options,
                    sizes=sizes,
                    policy_bumps=bumps,
                )
        answer = reports.suggestions_json(
            found,
            window_seconds=self._window,
            since=since,
            until=now,
            currency=self._prices.currency,
        )
        answer["computedAt"] = datetime.fromtimestamp(now, UTC).isoformat()
        answer["missed"] = missed_images(evidence)
        with self._lock:
            self._latest = answer
            self._found = found
        self._on_counts(_counts(found))
        return answer


def _needs_size(suggestion: Suggestion) -> bool:
    return suggestion.kind in (SuggestionKind.NEW_CACHE, SuggestionKind.ADD_IMAGE)


def _counts(found: Sequence[Suggestion]) -> dict[str, int]:
    counts = dict.fromkeys((k.value for k in SuggestionKind), 0)
    for suggestion in found:
        counts[suggestion.kind.value] += 1
    return counts

"""The refresh of moving tags: digest checks by result, and the moves found per cache.

Event counters the daemon's refresher (`gitsync.refresh`) updates as it asks
registries what the followed tags point to. Per cache, not per image: an image
tag is never a label (the metric contract), so which image moved is in the
`DigestChanged` event and the log, and the count is here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["DIGEST_CHECK_RESULTS", "RefreshMetrics"]

# ok: the registry answered a digest; error: it failed or refused; backoff: not asked,
# because its registry backs off after a failure.
DIGEST_CHECK_RESULTS: tuple[str, ...] = ("ok", "error", "backoff")


class RefreshMetrics:
    """`gitsync_image_digest_checks_total{result}`, `gitsync_image_digest_changes_total{cache}`.

    Every check result is exposed from the start at 0.
    """

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "gitsync_image_digest_checks_total",
            "Followed tags resolved to a digest (one manifest HEAD each), by result: ok, error"
            " (the registry failed or refused), backoff (not asked: the registry backs off).",
            ["result"],
            registry=registry,
        )
        for result in DIGEST_CHECK_RESULTS:  # every result from the start, so rate() sees the first
            self.checks.labels(result=result)
        self.changes = Counter(
            "gitsync_image_digest_changes_total",
            "Tags of a cache found to point to another digest than the cache holds; each move"
            " is counted once, and rebuilds the cache.",
            ["cache"],
            registry=registry,
        )

    def checked(self, result: str, count: int = 1) -> None:
        if result not in DIGEST_CHECK_RESULTS:
            raise ValueError(f"digest check result {result!r} is not one of {DIGEST_CHECK_RESULTS}")
        if count:
            self.checks.labels(result=result).inc(count)

    def changed(self, cache: str) -> None:
        self.changes.labels(cache=cache).inc()

"""Reading a window of the observations store: two queries, their rows made records.

Why apart from `store`: the store keeps the schema, the writes and the
bounds; this is the one read `gitsync suggest` and the daemon's API make,
shaped by the schema (see `gitsync.observations.store`) for speed. At the
issue's scale (1,000,000 lookups) it must take well under a second, so the
lookups are read once, in the table's key order, and Python touches only
aggregated rows (one per image and per cache, one per distinct set of images
started together), never the lookups themselves.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from gitsync.observations.model import CacheUse, Evidence, ImageEvidence, StartGroup

__all__ = ["read_evidence"]

# One scan of the lookups in the table's key order (no sort; `+at` keeps the planner
# from the time index, which would need one) with plain aggregates only, since at a
# million rows each aggregate call per row counts; then, from those few rows, one row
# per image (kind 0: its figures, and the caches that served it) and one per cache
# (kind 1: its hits, partials and last hit).
_EVIDENCE: Final = """
WITH k AS MATERIALIZED (
    SELECT image, cache, result, COUNT(*) AS c, TOTAL(seconds) AS s, COUNT(seconds) AS t,
           MIN(at) AS lo, MAX(at) AS hi, SUM(first) AS p
    FROM lookups WHERE +at BETWEEN ? AND ?
    GROUP BY image, cache, result
)
SELECT 0, image,
       TOTAL(CASE result WHEN 0 THEN c END), TOTAL(CASE result WHEN 1 THEN c END),
       TOTAL(CASE result WHEN 2 THEN c END),
       TOTAL(CASE result WHEN 2 THEN s END), TOTAL(CASE result WHEN 2 THEN t END),
       TOTAL(CASE result WHEN 0 THEN s END), TOTAL(CASE result WHEN 0 THEN t END),
       MIN(lo), MAX(hi), SUM(p),
       group_concat(DISTINCT CASE WHEN result < 2 AND cache != 0 THEN cache END)
FROM k GROUP BY image
UNION ALL
SELECT 1, cache,
       TOTAL(CASE result WHEN 0 THEN c END), TOTAL(CASE result WHEN 1 THEN c END),
       0, 0, 0, 0, 0, 0, MAX(CASE result WHEN 0 THEN hi END), 0, NULL
FROM k WHERE cache != 0 AND result < 2 GROUP BY cache
"""

# Distinct sets of started-together images, in the partial index's order (no sort).
_GROUPS: Final = """
SELECT members, COUNT(*) FROM groups INDEXED BY groups_sets
WHERE size >= 2 AND at BETWEEN ? AND ?
GROUP BY members
"""


def read_evidence(db: sqlite3.Connection, *, since: float, until: float) -> Evidence:
    """The lookups from `since` to `until` (both included), aggregated; in a read transaction."""
    window = (since, until)
    refs: dict[int, tuple[str, int | None]] = {
        int(row[0]): (str(row[1]), row[2])
        for row in db.execute("SELECT id, ref, bytes FROM images")
    }
    names = {int(row[0]): str(row[1]) for row in db.execute("SELECT id, name FROM caches")}

    images: list[ImageEvidence] = []
    caches: dict[str, CacheUse] = {}
    lookups = 0
    for row in db.execute(_EVIDENCE, window):
        kind, key, hits, partials, misses = row[0], row[1], int(row[2]), int(row[3]), int(row[4])
        if kind == 1:
            name = names.get(key)
            if name is not None:  # else pruned meanwhile
                caches[name] = CacheUse(
                    cache=name, hits=hits, partials=partials, last_hit_at=row[10]
                )
            continue
        lookups += hits + partials + misses
        known = refs.get(key)
        if known is None:
            continue  # pruned meanwhile
        served = (names.get(int(part)) for part in str(row[12] or "").split(",") if part)
        images.append(
            ImageEvidence(
                image=known[0],
                hits=hits,
                partials=partials,
                misses=misses,
                pods=int(row[11]),
                miss_seconds=float(row[5]),
                timed_misses=int(row[6]),
                hit_seconds=float(row[7]),
                timed_hits=int(row[8]),
                first_at=float(row[9]),
                last_at=float(row[10]),
                caches=tuple(sorted(name for name in served if name is not None)),
                image_bytes=known[1],
            )
        )
    images.sort(key=lambda evidence: evidence.image)

    sets: dict[frozenset[str], int] = {}
    for members, count in db.execute(_GROUPS, window):
        found = [refs.get(int(part)) for part in str(members).split(",")]
        group = frozenset(ref[0] for ref in found if ref is not None)
        if len(group) >= 2:
            sets[group] = sets.get(group, 0) + int(count)
    # Most often seen first; among equals, the order of their member ids (stable sort).
    groups = sorted(
        (StartGroup(images=members, count=count) for members, count in sets.items()),
        key=lambda group: -group.count,
    )

    oldest = db.execute("SELECT MIN(at) FROM lookups").fetchone()[0]
    return Evidence(
        since=since,
        until=until,
        images=tuple(images),
        caches=dict(sorted(caches.items())),
        groups=tuple(groups),
        lookups=lookups,
        first_at=None if oldest is None else float(oldest),
    )

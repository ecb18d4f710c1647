"""Which cache a pod with these images would use, and why: the cloud's match policy.

Why a pure function: the same decision answers `gitsync match`,
`POST /api/v1/match` and the registry mirror's choice between caches holding
the same image, so it must not depend on where it is asked, and a table of
cases can pin down every rule without a server or a store.

The policy (docs/architecture.md, after the cloud's image-cache documentation):

* Only Ready caches are candidates. Pending, Updating, Failed and UpdateFailed
  caches never serve a pod, whatever they hold.
* Per cache, each requested image is *exact* (same registry and repository and
  the same tag or digest, after normalisation: `nginx` is
  `docker.io/library/nginx:latest`), else *partial* (the same repository under
  another tag or digest: the runtime still pulls it, but shares base layers),
  else missing. A cache with neither is no candidate.
* Rank: more exact images, then more partial ones, then the smaller
  `imageCacheSize`, then the newer cache. Name and id break any remaining tie,
  so the answer never depends on the order the provider listed caches in.
* The result is `hit` when every image is exact in the chosen cache,
  `partial` when some are there (exact or under another tag), `miss` otherwise.
* A manual match (`--cache`, a cache name or an `imc-…` id) is used as given,
  never replaced by a better cache; its result says which images it lacks, and a
  manual match to a cache that is not Ready is a miss that says so.

Comparing tags and digests: a digest matches the same digest whatever the tags;
two tags match when they are equal and at most one side pins a digest (the
cache resolved the tag to *some* digest, the pod asks for the tag). Two
different digests never match. An image asked by digest only against a cache
holding it by tag is partial: which digest the tag resolved to is in the
provider's snapshot, not in the cache's spec this function sees.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.imageref import ImageRef
from gitsync.model import CacheStatus, ObservedCache

__all__ = [
    "MAX_IMAGES",
    "Candidate",
    "MatchDecision",
    "MatchResult",
    "match",
    "parse_match_request",
    "rank_key",
    "same_image",
]

MAX_IMAGES = 256  # far above any pod's containers; bounds the work one API request can ask for


class MatchResult(enum.StrEnum):
    HIT = "hit"
    PARTIAL = "partial"
    MISS = "miss"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One Ready cache that holds some of the images, with what it holds."""

    name: str
    cache_id: str
    exact: int
    partial: int
    image_cache_size_gib: int
    created_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "exact": self.exact,
            "partial": self.partial,
            "imageCacheSize": self.image_cache_size_gib,
            "createdAt": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The chosen cache (or none), the result, the reason a human reads, and the ranking.

    `exact_images`, `partial_images` and `missing_images` partition the asked
    images (as written, repeats dropped) against the chosen cache; with no cache
    chosen every image is missing.
    """

    result: MatchResult
    cache: str | None
    cache_id: str | None
    reason: str
    candidates: tuple[Candidate, ...]
    images: tuple[str, ...]
    exact_images: tuple[str, ...] = ()
    partial_images: tuple[str, ...] = ()
    missing_images: tuple[str, ...] = ()
    manual: bool = False

    def to_json(self) -> dict[str, object]:
        """The `gitsync match --format json` and match API shape (docs/architecture.md)."""
        return {
            "result": self.result.value,
            "cache": self.cache,
            "id": self.cache_id,
            "reason": self.reason,
            "candidates": [candidate.to_json() for candidate in self.candidates],
        }


def rank_key(cache: ObservedCache) -> tuple[int, float, str, str]:
    """Order between caches that hold an image equally well: smaller, then newer, then name.

    The mirror uses this to pick between caches holding the same image, so it
    agrees with `match`.
    """
    created = cache.created_at.timestamp() if cache.created_at is not None else float("-inf")
    return (cache.image_cache_size_gib, -created, cache.name, cache.cache_id)


def match(
    images: Sequence[str], caches: Sequence[ObservedCache], *, manual: str | None = None
) -> MatchDecision:
    """Decide which cache serves a pod with `images`; see the module docstring for the rules.

    Raises ImageRefError (a ValueError) for an invalid image reference,
    ValueError for an empty list of images, TypeError for one string.
    """
    wanted = _wanted(images)
    asked = tuple(written for written, _ in wanted)
    if manual is not None:
        return _manual(wanted, asked, caches, manual)

    scored: list[tuple[_Score, ObservedCache]] = []
    for cache in caches:
        if cache.status is not CacheStatus.READY:
            continue
        score = _score(wanted, cache)
        if score.exact or score.partial:
            scored.append((score, cache))
    scored.sort(key=lambda item: (-len(item[0].exact), -len(item[0].partial), *rank_key(item[1])))
    candidates = tuple(_candidate(score, cache) for score, cache in scored)

    if not scored:
        return MatchDecision(
            result=MatchResult.MISS,
            cache=None,
            cache_id=None,
            reason=_miss_reason(wanted, caches),
            candidates=(),
            images=asked,
            missing_images=asked,
        )
    best_score, best = scored[0]
    runner_up = scored[1] if len(scored) > 1 else None
    why = _why_first(scored[0], runner_up, len(scored))
    reason = f"{_coverage(best_score, len(wanted))}; {why}"
    return _decision(best_score, best, reason=reason, candidates=candidates, asked=asked)


def parse_match_request(body: Mapping[str, object]) -> tuple[tuple[str, ...], str | None]:
    """The images and manual cache of a `POST /api/v1/match` body (docs/architecture.md).

    `{"images": ["nginx:1.27.2", …], "cache": "web-base"}`, `cache` optional.
    Raises ValueError saying what would be valid; the references themselves are
    checked by `match`, whose ImageRefError is a ValueError too, so one
    `except ValueError` answers 400 for both.
    """
    unknown = sorted(set(body) - {"images", "cache"})
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; the request takes"
            ' "images" (a list of image references) and optionally "cache"'
        )
    images = body.get("images")
    if (
        not isinstance(images, list)
        or not images
        or not all(isinstance(image, str) for image in images)
    ):
        raise ValueError(
            '"images" must be a non-empty list of image references, e.g. ["nginx:1.27.2"]'
        )
    if len(images) > MAX_IMAGES:
        raise ValueError(f'"images" has {len(images)} entries; at most {MAX_IMAGES} are accepted')
    cache = body.get("cache")
    if cache is not None and (not isinstance(cache, str) or not cache):
        raise ValueError('"cache" must be a cache name or an imc-… id, or left out')
    return tuple(images), cache


# ------------------------------------------------------------------------ internals


@dataclass(frozen=True, slots=True)
class _Score:
    exact: tuple[str, ...]
    partial: tuple[str, ...]
    missing: tuple[str, ...]


def _wanted(images: Sequence[str]) -> list[tuple[str, ImageRef]]:
    if isinstance(images, str):
        raise TypeError("images must be a sequence of references, not one string")
    if not images:
        raise ValueError("match needs at least one image, e.g. 'nginx:1.27.2'")
    seen: dict[ImageRef, str] = {}
    for written in images:
        ref = imageref.parse(written)
        # Compare with the tag as written folded in: `nginx` and `nginx:latest` are one image.
        seen.setdefault(ref, written)
    return [(written, ref) for ref, written in seen.items()]


def _cache_refs(cache: ObservedCache) -> list[ImageRef]:
    refs: list[ImageRef] = []
    for image in cache.images:
        try:
            refs.append(imageref.parse(image))
        except ImageRefError:
            continue  # a reference no runtime could pull cannot match anything either
    return refs


def same_image(want: ImageRef, held: ImageRef) -> bool:
    """The match policy's "exact": one digest, or one tag where at most one side pins a digest."""
    if not imageref.same_repository(want, held):
        return False
    if want.digest is not None and want.digest == held.digest:
        return True
    return (
        want.tag is not None
        and want.tag == held.tag
        and (want.digest is None or held.digest is None)
    )


def _score(wanted: list[tuple[str, ImageRef]], cache: ObservedCache) -> _Score:
    held = _cache_refs(cache)
    exact: list[str] = []
    partial: list[str] = []
    missing: list[str] = []
    for written, want in wanted:
        if any(same_image(want, ref) for ref in held):
            exact.append(written)
        elif any(imageref.same_repository(want, ref) for ref in held):
            partial.append(written)
        else:
            missing.append(written)
    return _Score(exact=tuple(exact), partial=tuple(partial), missing=tuple(missing))


def _result(score: _Score) -> MatchResult:
    if not score.partial and not score.missing:
        return MatchResult.HIT
    if score.exact or score.partial:
        return MatchResult.PARTIAL
    return MatchResult.MISS


def _candidate(score: _Score, cache: ObservedCache) -> Candidate:
    return Candidate(
        name=cache.name,
        cache_id=cache.cache_id,
        exact=len(score.exact),
        partial=len(score.partial),
        image_cache_size_gib=cache.image_cache_size_gib,
        created_at=cache.created_at,
    )


def _decision(
    score: _Score,
    cache: ObservedCache,
    *,
    reason: str,
    candidates: tuple[Candidate, ...],
    asked: tuple[str, ...],
    manual: bool = False,
) -> MatchDecision:
    return MatchDecision(
        result=_result(score),
        cache=cache.name,
        cache_id=cache.cache_id,
        reason=reason,
        candidates=candidates,
        images=asked,
        exact_images=score.exact,
        partial_images=score.partial,
        missing_images=score.missing,
        manual=manual,
    )


def _manual(
    wanted: list[tuple[str, ImageRef]],
    asked: tuple[str, ...],
    caches: Sequence[ObservedCache],
    manual: str,
) -> MatchDecision:
    # An id is unique; a name may repeat (caches gitsync does not own), so prefer a Ready one.
    chosen = [c for c in caches if c.cache_id == manual] or [c for c in caches if c.name == manual]
    if not chosen:
        known = ", ".join(sorted({c.name for c in caches})) or "none"
        return MatchDecision(
            result=MatchResult.MISS,
            cache=None,
            cache_id=None,
            reason=f"manual match: no cache is named or has id {manual!r} (caches: {known})",
            candidates=(),
            images=asked,
            missing_images=asked,
            manual=True,
        )
    chosen.sort(key=lambda c: (c.status is not CacheStatus.READY, *rank_key(c)))
    cache = chosen[0]
    score = _score(wanted, cache)
    candidate = _candidate(score, cache)
    if cache.status is not CacheStatus.READY:
        return MatchDecision(
            result=MatchResult.MISS,
            cache=cache.name,
            cache_id=cache.cache_id,
            reason=(
                f"manual match: cache {cache.name} ({cache.cache_id}) is {cache.status.value}, "
                f"not Ready, so it serves no pod (it would hold "
                f"{len(score.exact)} of {len(wanted)} images exact)"
            ),
            candidates=(candidate,),
            images=asked,
            missing_images=asked,
            manual=True,
        )
    return _decision(
        score,
        cache,
        reason=f"manual match: {_coverage(score, len(wanted))}",
        candidates=(candidate,),
        asked=asked,
        manual=True,
    )


def _coverage(score: _Score, total: int) -> str:
    if not score.partial and not score.missing:
        return "the image is exact" if total == 1 else f"all {total} images exact"
    parts = [f"{len(score.exact)} of {total} images exact"]
    if score.partial:
        parts.append(f"{len(score.partial)} under another tag ({', '.join(score.partial)})")
    text = ", ".join(parts)
    if score.missing:
        text += f"; missing: {', '.join(score.missing)}"
    return text


def _why_first(
    best: tuple[_Score, ObservedCache],
    runner_up: tuple[_Score, ObservedCache] | None,
    count: int,
) -> str:
    """The first rule that separated the chosen cache from the next one."""
    if runner_up is None:
        return "only candidate"
    (score, cache), (other_score, other) = best, runner_up
    of = f"of {count} candidates"
    if len(score.exact) != len(other_score.exact):
        return f"most exact images {of}"
    if len(score.partial) != len(other_score.partial):
        return f"most images under another tag {of}"
    if cache.image_cache_size_gib != other.image_cache_size_gib:
        return f"smallest {of}"
    if cache.created_at != other.created_at:
        return f"newest {of}"
    return f"first by name and id {of}, equal in all else"


def _miss_reason(wanted: list[tuple[str, ImageRef]], caches: Sequence[ObservedCache]) -> str:
    total = len(wanted)
    reason = (
        "no Ready cache holds the image"
        if total == 1
        else f"no Ready cache holds any of the {total} images"
    )
    # Say which caches would have matched had they been Ready: that is what to fix.
    blocked: list[str] = []
    for cache in sorted(caches, key=rank_key):
        if cache.status is CacheStatus.READY:
            continue
        score = _score(wanted, cache)
        if score.exact or score.partial:
            blocked.append(f"{cache.name} is {cache.status.value}")
    if blocked:
        reason += f" ({'; '.join(blocked)}; only Ready caches serve pods)"
    return reason


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

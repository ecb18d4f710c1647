"""Which digest a cache holds for each tag, and what the planner does when a tag moves.

Why: a tag (`app:1`, `nginx:1.27`) is a pointer its registry can move to new
content; a cache built from it keeps the content it pulled. The daemon's
refresher (`gitsync.refresh`) resolves the tags of the caches that follow
them (annotation `gitsync.io/refresh`, or `--refresh-interval` for all) to
digests on an interval; this module holds what it found and the decisions
made from it, with no I/O and no clock, so that the planner stays a pure
function of its input.

* **What a cache holds** (`held_digests`): the provider's record
  (`ObservedCache.image_digests`: the local backend's snapshot knows the digest
  of every image it pulled), else a pin written in the cache's images
  (`repo:tag@sha256:…`: what the kubernetes and tencentcloud backends are
  given, since they report no digests of their own).
* **A move** (`moves`): a tag image of a following cache whose last resolved
  digest differs from the held one. Only a resolution newer than the record
  (`image_digests_at`) counts: one made before the snapshot was pulled says
  nothing about it, and would otherwise rebuild a cache that already holds
  newer content. (The local snapshot's time is kept to the second: a
  resolution made in the very second of the snapshot counts, which costs at
  most one rebuild too many, after which the snapshot is the newer.)
* **The action** (`follow`): a Ready cache with no other change and a move is
  an UPDATE, "tag moved: <image> <old digest> → <new digest>"; Git is not
  changed (the spec asked for the tag, and the tag now means something else).
  A provider that rebuilds from the tag (`ProviderFields.pins_digests` False,
  the local store) is given the spec as Git has it and pulls the tag again; one
  that pins gets the moved images written `repo:tag@sha256:<new>`, a change of
  `images` its backend rebuilds for. On a pinning provider a following cache
  whose held digest is unknown (created from the bare tag) is updated once to
  pin it, and every create, update or rebuild of a following cache pins its
  tags to the digests last resolved, so what it holds is known from then on.
* **Status** (`status_rows`): per image, the digest held and the one last
  resolved, for `gitsync status` and `/api/v1/status`.
* **No fight** (`unpinned`): the planner compares a pinned image of the
  provider with the bare tag in Git as the same image, so a pin never reads as
  a difference from Git.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.model import (
    Action,
    ActionKind,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    ProviderFields,
)

__all__ = [
    "DigestMove",
    "ResolvedDigest",
    "TagDigests",
    "follow",
    "follows",
    "held_digests",
    "moves",
    "pin",
    "pinned",
    "status_rows",
    "tag_key",
    "unknown",
    "unpinned",
]

_BUILDS = frozenset({ActionKind.CREATE, ActionKind.UPDATE, ActionKind.RECREATE})
_ARROW = "\N{RIGHTWARDS ARROW}"
_EMPTY: Mapping[str, ResolvedDigest] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ResolvedDigest:
    """What a registry last said of one tag: its digest and when, and the last failure.

    `digest` and `at` are the last answer (None before the first one); `error`
    and `failed_at` are set while the last try failed, and the digest is then
    the older answer.
    """

    digest: str | None
    at: datetime | None
    error: str | None = None
    failed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TagDigests:
    """The refresher's findings as the planner takes them.

    `resolved` is keyed by canonical reference (`imageref.normalize`).
    `every_cache` is True when `--refresh-interval` is set, so every cache follows
    its tags; else only those annotated `gitsync.io/refresh` do (`follows`).
    """

    resolved: Mapping[str, ResolvedDigest] = field(default_factory=lambda: _EMPTY)
    every_cache: bool = False


@dataclass(frozen=True, slots=True)
class DigestMove:
    """A tag of a cache that moved: the image as the spec writes it, held and resolved digest."""

    image: str
    held: str
    resolved: str

    def __str__(self) -> str:
        return f"{self.image} {self.held} {_ARROW} {self.resolved}"


def tag_key(image: str) -> str | None:
    """The canonical reference of a tag image; None for one given by digest, or invalid."""
    try:
        ref = imageref.parse(image)
    except ImageRefError:
        return None
    return None if ref.digest is not None else str(ref)


def follows(spec: CacheSpec, *, every_cache: bool) -> bool:
    """Whether `spec` follows its tags: its annotation if set (0 is off), else the default."""
    if spec.refresh_seconds is not None:
        return spec.refresh_seconds > 0
    return every_cache


def held_digests(cache: ObservedCache) -> dict[str, str]:
    """Canonical tag reference → the digest the cache holds for it, where known."""
    held: dict[str, str] = {}
    for image in cache.images:  # pins a pinning provider was given and reports back
        try:
            ref = imageref.parse(image)
        except ImageRefError:
            continue
        if ref.digest is not None and ref.explicit_tag:
            held[f"{ref.registry}/{ref.repository}:{ref.tag}"] = ref.digest
    for image, digest in cache.image_digests:  # the provider's own record wins
        key = tag_key(image)
        if key is not None:
            held[key] = digest
    return held


def moves(
    spec: CacheSpec, cache: ObservedCache, resolved: Mapping[str, ResolvedDigest]
) -> tuple[DigestMove, ...]:
    """The tag images of `spec` whose resolved digest differs from the one `cache` holds."""
    held = held_digests(cache)
    since = _utc(cache.image_digests_at) if cache.image_digests_at is not None else None
    found: list[DigestMove] = []
    for image in spec.images:
        key = tag_key(image)
        if key is None:
            continue
        answer, holds = resolved.get(key), held.get(key)
        if answer is None or answer.digest is None or answer.at is None or holds is None:
            continue
        if since is not None and _utc(answer.at) <= since:
            continue  # resolved before the content was pulled: says nothing about it
        if answer.digest != holds:
            found.append(DigestMove(image=image, held=holds, resolved=answer.digest))
    return tuple(found)


def unknown(
    spec: CacheSpec, cache: ObservedCache, resolved: Mapping[str, ResolvedDigest]
) -> tuple[str, ...]:
    """Tag images of `spec` resolved to a digest although `cache` says nothing of what it holds."""
    held = held_digests(cache)
    return tuple(
        image
        for image in spec.images
        if (key := tag_key(image)) is not None
        and key not in held
        and (answer := resolved.get(key)) is not None
        and answer.digest is not None
    )


def pin(image: str, digest: str) -> str:
    """`image` written with its tag (`:latest` if none was written) and `@digest`."""
    ref = imageref.parse(image)
    tagged = image if ref.explicit_tag else f"{image}:{ref.tag}"
    return f"{tagged}@{digest}"


def pinned(spec: CacheSpec, resolved: Mapping[str, ResolvedDigest]) -> CacheSpec:
    """`spec` with each tag image that has a resolved digest pinned to it; the rest as written."""
    images: list[str] = []
    for image in spec.images:
        key = tag_key(image)
        answer = resolved.get(key) if key is not None else None
        if answer is not None and answer.digest is not None:
            images.append(pin(image, answer.digest))
        else:
            images.append(image)
    pins = tuple(images)
    return spec if pins == spec.images else replace(spec, images=pins)


def unpinned(have: Mapping[str, str], want: Iterable[str]) -> dict[str, str]:
    """`have` (canonical → as written) with each pin of a tag Git names bare keyed as that tag.

    `registry/repo:tag@sha256:…` on the provider is the same image as
    `registry/repo:tag` in Git: the pin is how a pinning provider follows the tag.
    """
    wanted = set(want)
    result: dict[str, str] = {}
    for key, written in have.items():
        bare, at, _ = key.partition("@")
        tagged = ":" in bare.rpartition("/")[2]  # a tag and a digest: the pin of that tag
        if at and tagged and key not in wanted and bare in wanted and bare not in have:
            result[bare] = written
        else:
            result[key] = written
    return result


def follow(action: Action, tags: TagDigests, *, fields: ProviderFields) -> Action:
    """`action` as it becomes once the tags of its cache are followed (module docstring)."""
    spec = action.desired
    if spec is None or not follows(spec, every_cache=tags.every_cache) or not tags.resolved:
        return action
    cache = action.observed
    notes = [f"tag moved: {move}" for move in moves(spec, cache, tags.resolved)] if cache else []
    if action.kind is ActionKind.NOOP:
        return _followed_noop(action, spec, notes, tags=tags, fields=fields)
    desired = pinned(spec, tags.resolved) if fields.pins_digests else spec
    if action.kind not in _BUILDS or (desired is spec and not notes):
        return action
    return replace(action, desired=desired, reason="; ".join([action.reason, *notes]))


def _followed_noop(
    action: Action, spec: CacheSpec, notes: list[str], *, tags: TagDigests, fields: ProviderFields
) -> Action:
    """A no-op on a Ready cache whose tag moved (or, pinning, is unknown) becomes an UPDATE."""
    cache = action.observed
    if cache is None or cache.status is not CacheStatus.READY:
        return action  # a build in progress: look again once it is Ready
    if fields.pins_digests:
        notes = notes + [
            f"follow tag {image}: the digest the cache holds is unknown; pinning it"
            for image in unknown(spec, cache, tags.resolved)
        ]
    if not notes:
        return action
    return Action(
        kind=ActionKind.UPDATE,
        name=action.name,
        reason="; ".join(notes),
        desired=pinned(spec, tags.resolved) if fields.pins_digests else spec,
        observed=cache,
    )


def status_rows(
    cache: ObservedCache, resolved: Mapping[str, ResolvedDigest] | None = None
) -> list[dict[str, object]]:
    """Per image of `cache`: the digest it holds and the digest its tag was last resolved to.

    `held` is what the provider knows (the local snapshot, or a pin the
    provider was given), None where it knows nothing; `resolved`, `resolvedAt`
    and `error` are the daemon's refresher's for the image's tag (None outside
    the daemon, and for an image given by digest alone, which is never asked).
    """
    held = held_digests(cache)
    answers = resolved or {}
    rows: list[dict[str, object]] = []
    for image in cache.images:
        try:
            ref = imageref.parse(image)
        except ImageRefError:
            rows.append(
                {"image": image, "held": None, "resolved": None, "resolvedAt": None, "error": None}
            )
            continue
        key = f"{ref.registry}/{ref.repository}:{ref.tag}" if ref.tag is not None else str(ref)
        answer = answers.get(key)  # a pin's tag too: what it was pinned from
        rows.append(
            {
                "image": image,
                "held": held.get(key) or ref.digest,
                "resolved": answer.digest if answer else None,
                "resolvedAt": _iso(answer.at) if answer and answer.at else None,
                "error": answer.error if answer else None,
            }
        )
    return rows


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")

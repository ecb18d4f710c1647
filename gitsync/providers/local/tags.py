"""Image policies against the registries: each marker's newest tag, as bump-tag suggestions.

Why here: a cache of `api:1.4.0   # gitsync: semver=~1.4` should move to
`1.4.3` when it ships, and only the registry knows it has. Listing tags is
the registry client's (`RegistryClient.list_tags`), and reading registries
with a cache's credentials is what `imagesizes` already does for `plan`,
whatever the provider; `PolicyResolver` extends its `ImageSizeResolver` for
exactly that: the docker config plus each cache's pull secrets (a missing
secret left out, as the build does), one client per set of secrets, short
timeouts and few attempts. The choice of tag is `gitsync.policies`'s, pure.

Rules:

* **What is looked at.** Caches with image policies (`CacheSpec.image_policies`,
  validated by `gitsync.specs`); each repository's tags are listed once per
  call, however many caches and images name it, trying the credentials of
  each cache that names it in turn (401, 403 and 404 try the next).
* **What is proposed.** When the newest tag the policy allows is newer than
  the line's tag (`policies.is_newer`), a `bump-tag` suggestion: `policy` is
  the marker's text, `from_images`/`to_images` the image as written and the
  same spelling with the new tag (and, for `name:tag@digest`, the new
  digest), `from_digests`/`to_digests` what each tag's manifest GET answered
  (the written digest, when there is one), `file` and `location` the spec's,
  no evidence, no saved seconds; the monthly cost is the update's from the
  price table (`pricing.action_cost`, as `gitsync.suggest` prices changes to
  a cache not observed), or 0 without one.
* **Never raises for a registry.** A listing or a manifest that cannot be
  read leaves that image without a suggestion, and the reason is logged as a
  warning naming the cache and the image; the next call tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from gitsync import imageref, pricing
from gitsync.errors import GitSyncError
from gitsync.imageref import ImageRef
from gitsync.model import ActionKind, CacheSpec, CacheStatus, ObservedCache
from gitsync.policies import ImagePolicy, is_newer, newest, parse_marker
from gitsync.pricing import PriceTable
from gitsync.providers.local.imagesizes import (
    DEFAULT_ATTEMPTS,
    DEFAULT_TIMEOUT,
    ImageSizeResolver,
    SecretsKey,
)
from gitsync.providers.local.registry import TAGS_PAGE_SIZE, RegistryClient
from gitsync.providers.local.registryhttp import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
)
from gitsync.sizing import Unresolved
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind

__all__ = ["PolicyResolver"]

log = logging.getLogger("gitsync.providers.local.tags")

DEFAULT_MAX_WORKERS = 4  # a refresh is background work: a few repositories at a time

# Answers that another cache's credentials may turn around (as in `imagesizes`).
_TRY_OTHER_CREDENTIALS = (AuthenticationError, AccessDeniedError, NotFoundError)
_FAILURES = (GitSyncError, ValueError, httpx.HTTPError, OSError)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One image line with a policy."""

    spec: CacheSpec
    image: str  # as written
    marker: str
    policy: ImagePolicy
    ref: ImageRef


@dataclass(frozen=True, slots=True)
class _Listing:
    """A repository's tags, and the client (credentials) that could read them."""

    tags: tuple[str, ...]
    client: RegistryClient


class PolicyResolver(ImageSizeResolver):
    """Bump-tag suggestions from image policies and registry tags; close it (or use `with`).

    An `ImageSizeResolver` for its credentials and clients (see the module
    docstring); `suggestions` is what it adds.
    """

    def __init__(
        self,
        *,
        docker_config: Path | None = None,
        secrets_dir: Path | None = None,
        insecure_registries: Collection[str] = (),
        client_factory: Callable[..., RegistryClient] = RegistryClient,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        prices: PriceTable | None = None,
        page_size: int = TAGS_PAGE_SIZE,
    ) -> None:
        super().__init__(
            store_root=None,
            docker_config=docker_config,
            secrets_dir=secrets_dir,
            insecure_registries=insecure_registries,
            client_factory=client_factory,
            max_workers=max_workers,
            timeout=timeout,
            attempts=attempts,
        )
        self._prices = prices
        self._page_size = page_size
        self._workers = max(1, max_workers)

    def __enter__(self) -> PolicyResolver:
        return self

    def suggestions(self, specs: Sequence[CacheSpec]) -> tuple[Suggestion, ...]:
        """A bump-tag suggestion for each policy image with a newer allowed tag, in spec order."""
        wanted = list(_wanted(specs))
        if not wanted:
            return ()
        repositories: dict[str, tuple[ImageRef, list[SecretsKey]]] = {}
        for item in wanted:
            _, keys = repositories.setdefault(item.ref.name, (item.ref, []))
            key = tuple(sorted(set(item.spec.image_pull_secrets)))
            if key not in keys:
                keys.append(key)
        workers = min(self._workers, len(repositories))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tags") as pool:
            listings = dict(
                zip(
                    repositories,
                    pool.map(lambda found: self._listing(*found), repositories.values()),
                    strict=True,
                )
            )
            made = list(pool.map(lambda item: self._suggestion(item, listings), wanted))
        return tuple(suggestion for suggestion in made if suggestion is not None)

    # -- one repository, one image ------------------------------------------------------

    def _listing(self, ref: ImageRef, keys: Sequence[SecretsKey]) -> _Listing | str:
        """The repository's tags with the first credentials that may read them, or why not."""
        reason = "no credentials were tried"
        for key in keys:
            client = self._client(key)
            if isinstance(client, Unresolved):
                reason = client.reason
                continue
            try:
                return _Listing(client.list_tags(ref, page_size=self._page_size), client)
            except _TRY_OTHER_CREDENTIALS as exc:
                reason = _one_line(exc)
            except _FAILURES as exc:
                return _one_line(exc)
        return reason

    def _suggestion(self, item: _Wanted, listings: dict[str, _Listing | str]) -> Suggestion | None:
        listing = listings[item.ref.name]
        if isinstance(listing, str):
            _skipped(item, f"its tags could not be listed: {listing}")
            return None
        candidate = newest(item.policy, listing.tags)
        current = item.ref.tag or imageref.DEFAULT_TAG
        if candidate is None or not is_newer(item.policy, candidate, current):
            return None
        try:
            old_digest = item.ref.digest or listing.client.get_manifest(item.ref).digest
            new_digest = listing.client.get_manifest(item.ref, candidate).digest
        except _FAILURES as exc:
            _skipped(
                item,
                f"the manifest of {current} or {candidate} could not be read: {_one_line(exc)}",
            )
            return None
        to_image = _retagged(item.image, candidate, new_digest if item.ref.digest else None)
        allowed = sum(1 for tag in listing.tags if newest(item.policy, [tag]) == tag)
        return Suggestion(
            kind=SuggestionKind.BUMP_TAG,
            cache=item.spec.name,
            reason=(
                f"image policy {item.marker!r} allows {candidate}, newer than {current}: the"
                f" newest of the {allowed} tags it allows among the {len(listing.tags)} of"
                f" {item.ref.name}"
            ),
            evidence=SuggestionEvidence(),
            saved_seconds_per_day=0.0,
            monthly_cost=self._monthly_cost(item, to_image),
            from_images=(item.image,),
            to_images=(to_image,),
            location=item.spec.location,
            file=item.spec.location.path if item.spec.location is not None else None,
            policy=item.marker,
            from_digests=(old_digest,),
            to_digests=(new_digest,),
        )

    def _monthly_cost(self, item: _Wanted, to_image: str) -> float:
        """The update's cost against the spec as Git has it (`gitsync.suggest`'s fallback)."""
        if self._prices is None:
            return 0.0
        spec = item.spec
        images = tuple(to_image if image == item.image else image for image in spec.images)
        current = ObservedCache(
            name=spec.name,
            cache_id="",
            status=CacheStatus.READY,
            images=spec.images,
            image_cache_size_gib=spec.image_cache_size_gib,
            image_pull_secrets=spec.image_pull_secrets,
            security_group_ids=spec.security_group_ids,
        )
        cost = pricing.action_cost(
            ActionKind.UPDATE,
            desired=replace(spec, images=images),
            observed=current,
            prices=self._prices,
        )
        return cost.monthly


def _wanted(specs: Sequence[CacheSpec]) -> Iterator[_Wanted]:
    """Every image line with a policy that can be followed; the others are logged."""
    for spec in specs:
        for image, marker in spec.image_policies:
            try:
                policy = parse_marker(marker)
                ref = imageref.parse(image)
            except ValueError as exc:  # validation refuses these; never crash on one
                log.warning(
                    "cache %s: image policy %r of %s cannot be followed: %s",
                    spec.name,
                    marker,
                    image,
                    _one_line(exc),
                    extra={"cache": spec.name},
                )
                continue
            if ref.digest is not None and not ref.explicit_tag:
                log.warning(
                    "cache %s: image policy %r of %s cannot be followed: no tag to move",
                    spec.name,
                    marker,
                    image,
                    extra={"cache": spec.name},
                )
                continue
            yield _Wanted(spec=spec, image=image, marker=marker, policy=policy, ref=ref)


def _retagged(written: str, tag: str, digest: str | None) -> str:
    """`written` with `tag` (and `digest`, when one was written), its name spelled as it was."""
    name = written.partition("@")[0]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name = name[:colon]
    return f"{name}:{tag}" + (f"@{digest}" if digest is not None else "")


def _skipped(item: _Wanted, why: str) -> None:
    log.warning(
        "cache %s: image policy %r of %s proposes nothing this time: %s",
        item.spec.name,
        item.marker,
        item.image,
        why,
        extra={"cache": item.spec.name, "reason": why},
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

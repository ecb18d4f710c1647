"""`TencentCloudProvider`: the `Provider` protocol over the TKE image-cache API.

What it decides, on top of the mapping and the transport (the package
docstring gives the reasons): which calls a change costs (`observe` is
DescribeImageCaches pages of `PAGE_SIZE` and nothing else; concurrent deletes
share DeleteImageCaches calls of up to `DELETE_BATCH_SIZE` ids), whether an
update goes in place or replaces the cache, and what to do after a create that
failed ambiguously (look the cache up by name before anyone creates it again).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tencentcloud.tke.v20180525 import tke_client

from gitsync.errors import ConfigError, GitSyncError, PermanentError, TemporaryError
from gitsync.model import CacheSpec, ObservedCache, ObservedState
from gitsync.providers.tencentcloud.errors import (
    TencentCloudNotFoundError,
    TencentCloudResponseError,
    TencentCloudTransientError,
)
from gitsync.providers.tencentcloud.mapping import (
    OWNER_TAG,
    TENCENTCLOUD_FIELDS,
    create_params,
    describe_page,
    observed_after_create,
    observed_after_update,
    observed_from_api,
    ownership_tags,
    registry_credentials,
    replacement_reason,
    still_serving,
    update_params,
)
from gitsync.providers.tencentcloud.settings import TencentCloudCredentials, TencentCloudSettings
from gitsync.providers.tencentcloud.transport import TencentCloudAPI

__all__ = ["DELETE_BATCH_SIZE", "PAGE_SIZE", "TencentCloudProvider", "describe_image_caches"]

# One logger for the whole backend, as before the package was split.
log = logging.getLogger("gitsync.providers.tencentcloud")

PAGE_SIZE = 50  # DescribeImageCaches: "最大不能超过50"
DELETE_BATCH_SIZE = 50


@dataclass(slots=True)
class _Ticket:
    cache_id: str
    done: threading.Event = field(default_factory=threading.Event)
    error: GitSyncError | None = None


class _DeleteBatcher:
    """Coalesces deletes that arrive within a short window into one DeleteImageCaches call.

    The reconciler deletes one cache per worker thread; the first delete of a
    wave waits `window` seconds for the others, then sends them all.
    """

    def __init__(
        self,
        send: Callable[[list[str]], dict[str, GitSyncError | None]],
        *,
        window: float,
        sleep: Callable[[float], None],
    ) -> None:
        self._send = send
        self._window = window
        self._sleep = sleep
        self._queue: list[_Ticket] = []
        self._flushing = False
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def delete(self, cache_id: str) -> None:
        ticket = _Ticket(cache_id)
        with self._lock:
            self._queue.append(ticket)
            leader = not self._flushing
            self._flushing = True
        if leader:
            if self._window > 0:
                self._sleep(self._window)
            self._flush()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    def _flush(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = (
                    self._queue[:DELETE_BATCH_SIZE],
                    self._queue[DELETE_BATCH_SIZE:],
                )
                if not batch:
                    self._flushing = False
                    return
            try:
                results = self._send(sorted({t.cache_id for t in batch}))
            except GitSyncError as exc:
                results = {t.cache_id: exc for t in batch}
            except BaseException as exc:  # never leave a waiter hanging, whatever happened
                wrapped = TemporaryError(f"TKE DeleteImageCaches failed unexpectedly: {exc!r}")
                results = {t.cache_id: wrapped for t in batch}
            for ticket in batch:
                ticket.error = results.get(ticket.cache_id)
                ticket.done.set()


class TencentCloudProvider:
    """`Provider` over the TKE image-cache API; see the package docstring for the rules."""

    name = "tencentcloud"
    fields = TENCENTCLOUD_FIELDS

    def __init__(
        self,
        *,
        settings: TencentCloudSettings,
        credentials: TencentCloudCredentials,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._api = TencentCloudAPI(
            api="TKE",
            client_class=tke_client.TkeClient,
            host=settings.host,
            settings=settings,
            credentials=credentials,
            sleep=sleep,
            rng=rng,
        )
        self._deletes = _DeleteBatcher(
            self._delete_batch, window=settings.delete_batch_window_seconds, sleep=sleep
        )

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        """Every image cache in the region: DescribeImageCaches pages, nothing else."""
        caches = tuple(self._to_observed(i) for i in describe_image_caches(self._api))
        return ObservedState(caches=caches, fields=self.fields)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        return self._create(spec, owner=owner, replacing=None)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        owner = _owner_of(current, verb="update")
        now = datetime.fromtimestamp(self._clock(), UTC)
        reason = replacement_reason(spec, current, now=now)
        if reason is not None:
            return self._replace(spec, current, owner=owner, reason=reason)
        credentials = self._credentials_for(spec)
        params = update_params(
            spec,
            current,
            tags=ownership_tags(spec, owner=owner),
            credentials=credentials,
            settings=self.settings,
        )
        self._api.call("UpdateImageCache", params, idempotent=True)
        serving = still_serving(current)
        log.info(
            "updating image cache %s in place (%s)",
            current.cache_id,
            "the current snapshot serves meanwhile" if serving else "nothing served yet",
            extra={"cache": spec.name},
        )
        return observed_after_update(spec, current, owner=owner)

    def delete(self, current: ObservedCache) -> None:
        _owner_of(current, verb="delete")
        self._deletes.delete(current.cache_id)
        log.info("deleted image cache %s", current.cache_id, extra={"cache": current.name})

    def close(self) -> None:
        self._api.close()

    # ---------------------------------------------------------------- extras

    def delete_many(self, caches: Sequence[ObservedCache]) -> dict[str, GitSyncError | None]:
        """Delete owned caches in DeleteImageCaches calls of up to 50 ids; per-id outcome.

        For an executor that knows all its deletes up front; `delete` coalesces
        concurrent calls into batches on its own.
        """
        for cache in caches:
            _owner_of(cache, verb="delete")
        ids = sorted({c.cache_id for c in caches})
        outcome: dict[str, GitSyncError | None] = {}
        for start in range(0, len(ids), DELETE_BATCH_SIZE):
            outcome.update(self._delete_batch(ids[start : start + DELETE_BATCH_SIZE]))
        return outcome

    @property
    def queued_deletes(self) -> int:
        """Deletes waiting for the current batch window (for tests and debugging)."""
        return self._deletes.queued

    def describe(self, names: Sequence[str]) -> tuple[ObservedCache, ...]:
        """The caches named `names` only (a name-filtered describe), e.g. for `status NAME`."""
        if not names:
            return ()
        return tuple(self._to_observed(i) for i in describe_image_caches(self._api, names=names))

    def most_suitable(self, images: Sequence[str]) -> tuple[str | None, str]:
        """The cache TKE itself would pick for a pod with `images` (GetMostSuitableImageCache).

        Returns (cache id or None, a reason a human reads).
        """
        if not images:
            raise ConfigError("gitsync match: name at least one image")
        response = self._api.call(
            "GetMostSuitableImageCache", {"Images": list(images)}, idempotent=True
        )
        found = response.get("Found")
        if not isinstance(found, bool):
            raise self._api.malformed("GetMostSuitableImageCache", "no boolean Found", response)
        cache = response.get("ImageCache")
        if not found or not isinstance(cache, Mapping):
            return None, f"TKE has no image cache for {_count(len(images), 'image')}"
        observed = self._to_observed(cache)
        present = sum(1 for image in images if image in observed.images)
        return observed.cache_id, (
            f"TKE picked {observed.name} ({observed.cache_id}, {observed.status}):"
            f" {present} of {_count(len(images), 'image')} listed in it as written,"
            f" {observed.image_cache_size_gib} GiB"
        )

    # -------------------------------------------------------------- changes

    def _create(
        self, spec: CacheSpec, *, owner: str, replacing: ObservedCache | None
    ) -> ObservedCache:
        settings = self.settings
        if not settings.vpc_id or not settings.subnet_id:
            raise ConfigError(
                "creating an image cache needs --vpc-id and --subnet-id (the VPC and subnet"
                " the TKE API builds caches in); set both, or only plan"
            )
        tags = ownership_tags(spec, owner=owner)
        credentials = self._credentials_for(spec)
        params = create_params(spec, tags=tags, credentials=credentials, settings=settings)
        try:
            response = self._api.call("CreateImageCache", params, idempotent=False)
        except (TencentCloudTransientError, TencentCloudResponseError) as exc:
            if isinstance(exc, TencentCloudTransientError) and exc.throttled:
                raise  # rejected before it ran: nothing to look for
            existing = self._find_created(spec.name, owner=owner, replacing=replacing)
            if existing is None:
                raise
            log.warning(
                "CreateImageCache for %s failed ambiguously (%s) but created %s; using it",
                spec.name,
                exc,
                existing.cache_id,
                extra={"cache": spec.name},
            )
            return existing
        cache_id = response.get("ImageCacheId")
        if not isinstance(cache_id, str) or not cache_id:
            # Ambiguous like a timeout: the cache may exist; the next observe shows it.
            existing = self._find_created(spec.name, owner=owner, replacing=replacing)
            if existing is not None:
                return existing
            raise self._api.malformed("CreateImageCache", "no ImageCacheId", response)
        now = datetime.fromtimestamp(self._clock(), UTC)
        log.info(
            "created image cache %s (%s)",
            cache_id,
            f"replaces {replacing.cache_id}" if replacing else "new",
            extra={"cache": spec.name},
        )
        return observed_after_create(spec, cache_id=cache_id, owner=owner, now=now)

    def _find_created(
        self, name: str, *, owner: str, replacing: ObservedCache | None
    ) -> ObservedCache | None:
        """After an ambiguous create: the owned cache of that name it may have made, if any."""
        try:
            found = self.describe([name])
        except GitSyncError as exc:
            log.warning("cannot check whether %s was created: %s", name, exc, extra={"cache": name})
            return None
        skip = replacing.cache_id if replacing is not None else None
        candidates = [
            c for c in found if c.name == name and c.owner == owner and c.cache_id != skip
        ]
        if not candidates:
            return None
        epoch = datetime.min.replace(tzinfo=UTC)
        return max(candidates, key=lambda c: (c.created_at or epoch, c.cache_id))

    def _replace(
        self, spec: CacheSpec, current: ObservedCache, *, owner: str, reason: str
    ) -> ObservedCache:
        log.info(
            "replacing image cache %s: %s", current.cache_id, reason, extra={"cache": spec.name}
        )
        new = self._create(spec, owner=owner, replacing=current)
        try:
            self._deletes.delete(current.cache_id)
        except GitSyncError as exc:
            # The new cache exists; the next pass sees two owned caches of this name and
            # the planner deletes the older, so report and carry on.
            log.warning(
                "replaced %s by %s but could not delete the old cache yet: %s",
                current.cache_id,
                new.cache_id,
                exc,
                extra={"cache": spec.name},
            )
        return new

    def _delete_batch(self, cache_ids: list[str]) -> dict[str, GitSyncError | None]:
        try:
            self._api.call("DeleteImageCaches", {"ImageCacheIds": cache_ids}, idempotent=True)
        except TencentCloudNotFoundError:
            if len(cache_ids) == 1:
                return {cache_ids[0]: None}  # already gone: the goal is reached
            # One id of the batch is gone and the API refused the whole batch: one by one.
            return {cache_id: self._delete_batch([cache_id])[cache_id] for cache_id in cache_ids}
        except GitSyncError as exc:
            return dict.fromkeys(cache_ids, exc)
        return dict.fromkeys(cache_ids)

    def _credentials_for(self, spec: CacheSpec) -> list[dict[str, str]]:
        credentials, missing = registry_credentials(spec, secrets_dir=self.settings.secrets_dir)
        if missing:
            where = (
                f"in {self.settings.secrets_dir}"
                if self.settings.secrets_dir
                else "(no --secrets-dir is set)"
            )
            log.warning(
                "imagePullSecrets %s not found %s; the cache is built without them",
                ", ".join(missing),
                where,
                extra={"cache": spec.name},
            )
        return credentials

    # ------------------------------------------------------------------ reads

    def _to_observed(self, item: Mapping[str, Any]) -> ObservedCache:
        return observed_from_api(item, naive_offset_hours=self.settings.naive_time_offset_hours)


def _owner_of(current: ObservedCache, *, verb: str) -> str:
    """The owner of `current`; a cache gitsync did not create is never changed."""
    if current.owner is None:
        raise PermanentError(
            f"refusing to {verb} image cache {current.cache_id} ({current.name}): it has no"
            f" {OWNER_TAG} tag, so gitsync did not create it"
        )
    return current.owner


def describe_image_caches(
    api: TencentCloudAPI, *, names: Sequence[str] = ()
) -> list[Mapping[str, Any]]:
    """All pages of DescribeImageCaches (only `names`, if given); once more if the total moved.

    Offset paging skips an item when another one is deleted between two
    pages; a skipped owned cache would be planned as a create. A changed
    TotalCount shows that happened, and one more pass reads a settled list.
    """
    items: dict[str, Mapping[str, Any]] = {}
    for attempt in (1, 2):
        items, moved = _describe_once(api, names)
        if not moved:
            break
        if attempt == 1:
            log.info("the list of image caches changed while paging; reading it again")
    return list(items.values())


def _describe_once(
    api: TencentCloudAPI, names: Sequence[str]
) -> tuple[dict[str, Mapping[str, Any]], bool]:
    items: dict[str, Mapping[str, Any]] = {}
    offset, first_total, moved, pages = 0, None, False, 0
    while True:
        params: dict[str, Any] = {"Limit": PAGE_SIZE, "Offset": offset}
        if names:
            params["ImageCacheNames"] = list(names)
        response = api.call("DescribeImageCaches", params, idempotent=True)
        total, page = describe_page(response)
        pages += 1
        if first_total is None:
            first_total = total
        elif total != first_total:
            moved = True
        for item in page:
            items.setdefault(str(item["ImageCacheId"]), item)
        offset += len(page)
        # Stop at the end; also stop a server that keeps answering (never loop forever).
        if not page or offset >= total or pages > first_total // PAGE_SIZE + 2:
            return items, moved


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")

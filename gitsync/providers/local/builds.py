"""Building a cache's snapshot: a lease, the credentials, the pull, one committing transaction.

Why apart from the provider: the provider decides when a cache is built (a
create, an update, a rebuild of a damaged snapshot) and what its status says
meanwhile; this module does the build itself, the same way every time:

1. a lease is taken (see `leases`), so `gc` keeps every blob the pull writes
   or reuses until the snapshot commits;
2. the credentials are the docker config's logins plus the cache's pull
   secrets; a secret that does not exist is a Warning event, not a failure
   (like the kubelet, the pull goes on with what remains);
3. `pull.pull_images` fetches what the store lacks, verifying as it goes and
   stopping at the cache's `imageCacheSize`;
4. the snapshot (resolved digests, expanded size, the blobs with their sizes)
   commits in one SQLite transaction that also ends the lease, and refuses to
   if a blob went missing meanwhile (only a lease that lapsed allows that);
5. a tag that now resolves to another digest than in the snapshot it replaces
   is a Normal `DigestChanged` event naming the image, the old and the new
   digest (a tag moved upstream: the rebuild a refresh asked for, or any other
   rebuild that found it). Tags are always resolved anew, never from the store.

A failure is recorded by `failures` (Failed or UpdateFailed, a Warning event,
the lease's end) and raised again. A full or failing data disk is a
`DataDiskError` (`DiskFullError` when out of space): nothing half-written is
kept, and the next pass tries again.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from gitsync import imageref
from gitsync.digests import tag_key
from gitsync.errors import GitSyncError, PermanentError, TemporaryError
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.providers.credentials import (
    CredentialStore,
    PullSecretNotFoundError,
    load_pull_secret,
)
from gitsync.providers.local.auth import TokenCache
from gitsync.providers.local.blobs import BlobStore
from gitsync.providers.local.failures import FailureRecords
from gitsync.providers.local.leases import Lease, LeaseManager
from gitsync.providers.local.oci import Platform
from gitsync.providers.local.pull import PulledImage, PullProgress, PullResult, pull_images
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.state import DataDiskError, DiskFullError, StateStore
from gitsync.providers.local.statereads import image_digests


class SnapshotBuilder:
    """Builds snapshots for the provider; see the module docstring for the steps."""

    def __init__(
        self,
        *,
        data_dir: Path,
        state: StateStore,
        blobs: BlobStore,
        leases: LeaseManager,
        failures: FailureRecords,
        platform: Platform,
        secrets_dir: Path | None,
        docker_config: Path | None,
        insecure_registries: Collection[str],
        on_progress: Callable[[PullProgress], None] | None,
        max_layer_workers: int,
        client_factory: Callable[..., RegistryClient],
        gib_bytes: int,
    ) -> None:
        self._data_dir = data_dir
        self._state = state
        self._blobs = blobs
        self._leases = leases
        self._failures = failures
        self._platform = platform
        self._secrets_dir = secrets_dir
        self._base_credentials = (
            CredentialStore.from_docker_config(docker_config)
            if docker_config
            else CredentialStore()
        )
        self._insecure = tuple(insecure_registries)
        self._on_progress = on_progress
        self._workers = max_layer_workers
        self._client_factory = client_factory
        self._gib_bytes = gib_bytes
        # One token cache per set of pull secrets: a token earned with one cache's
        # credentials must never serve a cache that lacks them.
        self._tokens: dict[tuple[str, ...], TokenCache] = {}

    def build(
        self, cache_id: str, spec: CacheSpec, *, failed: CacheStatus, verb: str
    ) -> ObservedCache:
        """Pull `spec` and commit its snapshot; on a failure record `failed` and raise."""
        lease: Lease | None = None
        committed = False
        before = self._state.cache(cache_id)
        try:
            try:
                lease = self._leases.acquire(purpose=f"pull {cache_id} ({spec.name})")
                result = self._pull(cache_id, spec, lease)
                pulled = {str(image.reference): image for image in result.images}
                records = [
                    _image_record(written, pulled[imageref.normalize(written)])
                    for written in _unique(spec.images)
                ]
                self._state.commit_snapshot(
                    cache_id,
                    content_bytes=result.content_bytes,
                    images=records,
                    blob_digests=result.blob_digests,
                    retention_days=spec.retention_days,
                    lease_id=lease.lease_id,
                    check=lambda: self._require_blobs(result),
                    blob_sizes={d: self._blobs.size(d) for d in result.blob_digests},
                )
                committed = True
            except OSError as exc:
                # A full or failing data disk: nothing half-written is kept (blobs are
                # renamed into place only when complete, a failed write removes its
                # temporary file); try again when there is room.
                raise _store_error(self._data_dir, exc) from exc
        except GitSyncError as exc:
            self._failures.record(cache_id, spec.name, status=failed, error=exc, lease=lease)
            raise
        finally:
            if lease is not None:
                # Idempotent. The commit or the failure record ended the row; only a bug
                # (any other exception) leaves it for this to end.
                lease.release(end_row=not committed)
        for message in _digest_changes(before, image_digests(records)):
            self._state.add_event(cache_id, type_="Normal", reason="DigestChanged", message=message)
        self._state.add_event(
            cache_id,
            type_="Normal",
            reason=verb,
            message=(
                f"{len(result.images)} images, {_mib(result.content_bytes)} expanded; "
                f"fetched {_mib(result.fetched_bytes)}, reused {_mib(result.reused_bytes)}"
            ),
        )
        return self._cache(cache_id)

    def _credentials(self, cache_id: str, spec: CacheSpec) -> CredentialStore:
        """docker config logins plus the cache's pull secrets.

        A secret that does not exist is a Warning event, not a failure: like the
        kubelet, we pull with whatever credentials remain, so public images still
        build and a private one fails with the registry's own "unauthorized".
        A secret that exists but is malformed fails the build: someone must fix it.
        """
        credentials = self._base_credentials
        missing: list[str] = []
        for name in spec.image_pull_secrets:
            if self._secrets_dir is None:
                missing.append(name)
                continue
            try:
                credentials = credentials.merged(load_pull_secret(self._secrets_dir, name))
            except PullSecretNotFoundError:
                missing.append(name)
        if missing:
            where = f"in {self._secrets_dir}" if self._secrets_dir else "(no --secrets-dir is set)"
            self._state.add_event(
                cache_id,
                type_="Warning",
                reason="PullSecretNotFound",
                message=f"imagePullSecrets {', '.join(missing)} not found {where}; "
                "pulling without them",
            )
        return credentials

    def _pull(self, cache_id: str, spec: CacheSpec, lease: Lease) -> PullResult:
        refs = [imageref.parse(image) for image in _unique(spec.images)]
        credentials = self._credentials(cache_id, spec)
        client = self._client_factory(
            credentials=credentials,
            insecure_registries=self._insecure,
            token_cache=self._tokens.setdefault(
                tuple(sorted(spec.image_pull_secrets)), TokenCache()
            ),
        )
        try:
            return pull_images(
                refs,
                client=client,
                store=self._blobs.with_lease(lease),
                platform=self._platform,
                limit_bytes=spec.image_cache_size_gib * self._gib_bytes,
                max_workers=self._workers,
                on_progress=self._on_progress,
            )
        finally:
            client.close()

    def _require_blobs(self, result: PullResult) -> None:
        """Inside the snapshot's transaction: every blob is there, or the commit is refused.

        Only a lease that lapsed (its process hung past the lease's expiry) lets gc take
        a blob a pull still needs; this catches that case instead of committing a hole.
        """
        missing = [d for d in result.blob_digests if not self._blobs.has(d)]
        if missing:
            raise TemporaryError(
                f"{len(missing)} blobs were removed by gc while pulling after this pull's"
                f" lease lapsed (first: {missing[0]}); the next pass fetches them again"
            )

    def _cache(self, cache_id: str) -> ObservedCache:
        cache = self._state.cache(cache_id)
        if cache is not None:
            return cache
        raise PermanentError(f"cache {cache_id} vanished from {self._state.path} while building")


def pulling(spec: CacheSpec) -> str:
    """The message of the event that starts a build."""
    return f"pulling {len(spec.images)} images into a {spec.image_cache_size_gib} GiB cache"


def _digest_changes(before: ObservedCache | None, now: Sequence[Sequence[str]]) -> list[str]:
    """A message per tag whose digest differs from the one in the snapshot it replaces."""
    if before is None:
        return []
    held = {key: digest for image, digest in before.image_digests if (key := tag_key(image))}
    messages = []
    for image, digest in now:
        key = tag_key(image)
        old = held.get(key) if key is not None else None
        if old is not None and old != digest:
            messages.append(
                f"{image} moved upstream from {old} to {digest}; the new snapshot holds {digest}"
            )
    return messages


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _store_error(data_dir: Path, exc: OSError) -> DataDiskError:
    """A failed write to the data disk: DiskFullError when it is out of space or quota."""
    message = f"cannot write to the store in {data_dir}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(message)
    return DataDiskError(message)


def _unique(images: tuple[str, ...]) -> list[str]:
    """Images in order, each normalised reference once (the validator already refuses repeats)."""
    seen: dict[str, str] = {}
    for image in images:
        seen.setdefault(imageref.normalize(image), image)
    return list(seen.values())


def _image_record(written: str, image: PulledImage) -> dict[str, object]:
    return {
        "image": written,
        "reference": str(image.reference),
        "manifestDigest": image.manifest_digest,
        "mediaType": image.media_type,
        "indexDigest": image.index_digest,
        "indexMediaType": image.index_media_type,
        "platform": str(image.platform),
        "configDigest": image.config_digest,
        "layers": list(image.layer_digests),
        "diffIds": list(image.diff_ids),
        "compressedBytes": image.compressed_bytes,
        "expandedBytes": image.expanded_bytes,
    }

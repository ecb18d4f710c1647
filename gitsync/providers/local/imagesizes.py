"""The facts `gitsync plan`'s size check needs: each image's layers, from registries and the store.

Why in the local backend: resolving a reference to one platform's manifest is
what its registry client does, and every backend's caches are built from the
same registries with the same credentials (the docker config, the pull
secrets a spec names in `imagePullSecrets`, the insecure registries), so
`plan` uses this module whatever the provider. `gitsync.sizing` then decides,
without I/O.

Rules:

* **Read only.** `plan` writes nothing (it runs in CI and beside a daemon
  without the data dir's lock), so nothing is cached on disk. What the local
  store already holds is read, never written: manifests by digest (verified
  against their digest) and, per layer, the expanded size it counted while
  verifying the layer's diff_id, which makes that layer's size exact.
* **Once per run.** Each image reference is resolved once, however many
  caches name it, and each manifest or index fetched by digest is fetched
  once (a single-flight memo: a second request for a digest waits for the
  first). Tags are asked anew on every run, since a tag can move; a cache on
  disk would only save the by-digest child of an index, at the price of
  writing during `plan`.
* **Bounded.** At most `max_workers` images resolve at a time; each request
  has a `timeout` and at most `attempts` tries, so a registry that is down
  costs seconds, not the pull's minute-long retry budget.
* **Never raises for a registry.** An image whose manifest cannot be read
  (connection refused, 401, 404, a malformed manifest, a broken pull secret)
  becomes `Unresolved(reason)`, which the check reports as "skipped".
* **Credentials as the build uses them.** Each cache pulls with the docker
  config plus its own pull secrets; a secret missing from the secrets dir is
  left out, as the kubelet and the local backend do. An image several caches
  name is tried with each of their credential sets in turn until one may
  read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from gitsync import imageref
from gitsync.errors import ConfigError, GitSyncError
from gitsync.imageref import ImageRef
from gitsync.model import CacheSpec
from gitsync.providers.credentials import CredentialStore, plan_credentials
from gitsync.providers.local.auth import TokenCache
from gitsync.providers.local.blobs import BlobStore
from gitsync.providers.local.oci import Manifest, Platform, load_manifest, resolve_manifest
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryhttp import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
)
from gitsync.sizing import ImageFacts, ImageOutcome, LayerFacts, Unresolved

DEFAULT_MAX_WORKERS = 8
DEFAULT_TIMEOUT = 10.0  # seconds per request; a plan should not wait a pull's minute
DEFAULT_ATTEMPTS = 2

# Answers that another cache's credentials may turn around (registries hide
# private repositories behind 404 as often as behind 401).
_TRY_OTHER_CREDENTIALS = (AuthenticationError, AccessDeniedError, NotFoundError)
_FAILURES = (GitSyncError, ValueError, httpx.HTTPError, OSError)

SecretsKey = tuple[str, ...]


class ImageSizeResolver(AbstractContextManager["ImageSizeResolver"]):
    """Resolves the images of caches to `sizing.ImageOutcome`s; close it (or use `with`)."""

    def __init__(
        self,
        *,
        store_root: Path | None,
        platform: str = "linux/amd64",
        docker_config: Path | None = None,
        secrets_dir: Path | None = None,
        insecure_registries: Collection[str] = (),
        client_factory: Callable[..., RegistryClient] = RegistryClient,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        try:
            self.platform = Platform.parse(platform)
        except ValueError as exc:
            raise ConfigError(f"--platform: {exc}") from exc
        # BlobStore only reads here: has, read_bytes, layer_info never create files.
        self._store = BlobStore(store_root) if store_root is not None else None
        self._docker_config = docker_config
        self._secrets_dir = secrets_dir
        self._insecure = tuple(insecure_registries)
        self._client_factory = client_factory
        self._max_workers = max(1, max_workers)
        self._timeout = timeout
        self._attempts = attempts
        self._lock = threading.Lock()
        self._clients: dict[SecretsKey, RegistryClient | Unresolved] = {}
        self._manifests: dict[str, Future[Manifest]] = {}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            if isinstance(client, RegistryClient):
                client.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public ---------------------------------------------------------------------

    def facts(self, specs: Sequence[CacheSpec]) -> dict[str, dict[str, ImageOutcome]]:
        """For each cache name, each of its images (as written) and what is known of it."""
        wanted: dict[str, tuple[ImageRef, list[SecretsKey]]] = {}
        invalid: dict[str, Unresolved] = {}
        for spec in specs:
            key = tuple(sorted(set(spec.image_pull_secrets)))
            for image in spec.images:
                try:
                    ref = imageref.parse(image)
                except ValueError as exc:  # validation refuses these; never crash on one
                    invalid[image] = Unresolved(str(exc))
                    continue
                _, keys = wanted.setdefault(str(ref), (ref, []))
                if key not in keys:
                    keys.append(key)
        outcomes: dict[str, ImageOutcome] = {}
        # Tags first: what they return answers the references pinned to the same digests.
        for pinned in (False, True):
            batch = {n: w for n, w in wanted.items() if (w[0].digest is not None) is pinned}
            if not batch:
                continue
            workers = min(self._max_workers, len(batch))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="size") as pool:
                futures = {
                    name: pool.submit(self._resolve_image, ref, keys)
                    for name, (ref, keys) in batch.items()
                }
                outcomes.update((name, future.result()) for name, future in futures.items())
        result: dict[str, dict[str, ImageOutcome]] = {}
        for spec in specs:
            per_image: dict[str, ImageOutcome] = {}
            for image in spec.images:
                if image in invalid:
                    per_image[image] = invalid[image]
                else:
                    per_image[image] = outcomes[imageref.normalize(image)]
            result[spec.name] = per_image
        return result

    # -- resolving ------------------------------------------------------------------

    def _resolve_image(self, ref: ImageRef, keys: Sequence[SecretsKey]) -> ImageOutcome:
        last: Unresolved | None = None
        for key in keys:
            client = self._client(key)
            if isinstance(client, Unresolved):
                last = client
                continue
            try:
                return self._facts(client, ref)
            except _TRY_OTHER_CREDENTIALS as exc:
                last = Unresolved(_one_line(exc))
            except _FAILURES as exc:
                return Unresolved(_one_line(exc))
        if last is None:
            raise AssertionError("an image is always wanted with at least one credential set")
        return last

    def _facts(self, client: RegistryClient, ref: ImageRef) -> ImageFacts:
        if ref.digest is not None:
            top = self._manifest(client, ref, ref.digest)
        else:
            top = client.get_manifest(ref)  # a tag can move: always asked
            self._remember(top)
        resolved = resolve_manifest(
            ref,
            top,
            platform=self.platform,
            fetch=lambda digest: self._manifest(client, ref, digest),
        )
        return ImageFacts(
            layers=tuple(
                LayerFacts(
                    digest=layer.digest,
                    compressed_bytes=layer.size,
                    expanded_bytes=self._expanded(layer.digest),
                )
                for layer in resolved.layers
            )
        )

    def _manifest(self, client: RegistryClient, ref: ImageRef, digest: str) -> Manifest:
        """A manifest by digest: from this run's memo, the store, or the registry, once."""
        with self._lock:
            pending = self._manifests.get(digest)
            mine = pending is None
            if pending is None:
                pending = self._manifests[digest] = Future()
        if not mine:
            return pending.result()
        try:
            manifest = self._stored_manifest(digest, ref) or client.get_manifest(ref, digest)
        except BaseException as exc:
            with self._lock:
                del self._manifests[digest]  # another cache's credentials may succeed
            pending.set_exception(exc)
            raise
        pending.set_result(manifest)
        return manifest

    def _remember(self, manifest: Manifest) -> None:
        """A manifest fetched by tag also answers later requests for its digest."""
        with self._lock:
            if manifest.digest not in self._manifests:
                done: Future[Manifest] = Future()
                done.set_result(manifest)
                self._manifests[manifest.digest] = done

    def _stored_manifest(self, digest: str, ref: ImageRef) -> Manifest | None:
        if self._store is None or not self._store.has(digest):
            return None
        try:
            return load_manifest(
                self._store.read_bytes(digest), digest=digest, registry=ref.registry
            )
        except (OSError, GitSyncError):
            return None  # unreadable or not a manifest: ask the registry instead

    def _expanded(self, digest: str) -> int | None:
        if self._store is None:
            return None
        info = self._store.layer_info(digest)
        return info.expanded_size if info is not None else None

    # -- credentials ----------------------------------------------------------------

    def _client(self, key: SecretsKey) -> RegistryClient | Unresolved:
        with self._lock:
            known = self._clients.get(key)
            if known is None:
                known = self._clients[key] = self._new_client(key)
            return known

    def _new_client(self, key: SecretsKey) -> RegistryClient | Unresolved:
        try:
            credentials = self._credentials(key)
        except GitSyncError as exc:  # a malformed docker config or pull secret
            return Unresolved(_one_line(exc))
        return self._client_factory(
            credentials=credentials,
            insecure_registries=self._insecure,
            token_cache=TokenCache(),
            timeout=self._timeout,
            max_attempts=self._attempts,
            backoff_base=0.2,
            backoff_max=2.0,
            max_retry_after=5.0,
            max_connections=self._max_workers,
        )

    def _credentials(self, key: SecretsKey) -> CredentialStore:
        """The docker config's logins, then the cache's pull secrets, as the local backend."""
        return plan_credentials(
            docker_config=self._docker_config, secrets_dir=self._secrets_dir, secret_names=key
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

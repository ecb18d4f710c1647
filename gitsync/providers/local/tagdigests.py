"""What a tag points to now, for the daemon's refresher: one manifest HEAD per image.

Why in the local backend: asking a registry with the right credentials is
what its registry client does, and every backend's caches are built from the
same registries with the same credentials, so the refresher uses this module
whatever the provider, as `gitsync plan`'s size check uses `imagesizes`.

Rules:

* **One HEAD.** `RegistryClient.manifest_digest`: the registry's
  `Docker-Content-Digest` for the tag, asked with the pull's Accept header, so
  it is the digest a pull records (the index's for a multi-platform image).
  Nothing is downloaded and nothing is written.
* **Credentials as the build uses them.** The docker config's logins plus a
  cache's pull secrets; a secret missing from the secrets dir is left out, as
  the kubelet and the local backend do. An image several caches name is tried
  with each of their credential sets in turn until one may read it.
* **Bounded.** Each request has a `timeout` and at most `attempts` tries, so a
  registry that is down costs seconds; the refresher backs off per registry on
  top of that.
* **Errors as the registry client raises them**: a `TemporaryError` when the
  registry is down or overloaded (the refresher backs that registry off), a
  `PermanentError` when it refuses (401, 403, 404: that image's problem).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from gitsync.imageref import ImageRef
from gitsync.providers.credentials import CredentialStore, plan_credentials
from gitsync.providers.local.auth import TokenCache
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryhttp import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
)

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_TIMEOUT", "TagDigestResolver"]

DEFAULT_TIMEOUT = 10.0  # seconds per request: a refresh should not wait a pull's minute
DEFAULT_ATTEMPTS = 2

# Answers another cache's credentials may turn around (registries hide private
# repositories behind 404 as often as behind 401).
_TRY_OTHER_CREDENTIALS = (AuthenticationError, AccessDeniedError, NotFoundError)

SecretsKey = tuple[str, ...]


class TagDigestResolver(AbstractContextManager["TagDigestResolver"]):
    """`resolver(ref, secret_sets)` → the digest `ref`'s tag points to; thread-safe; close it."""

    def __init__(
        self,
        *,
        docker_config: Path | None = None,
        secrets_dir: Path | None = None,
        insecure_registries: Collection[str] = (),
        client_factory: Callable[..., RegistryClient] = RegistryClient,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self._docker_config = docker_config
        self._secrets_dir = secrets_dir
        self._insecure = tuple(insecure_registries)
        self._client_factory = client_factory
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._lock = threading.Lock()
        self._clients: dict[SecretsKey, RegistryClient] = {}

    def __call__(self, ref: ImageRef, secret_sets: Sequence[Sequence[str]]) -> str:
        """One HEAD with the first credential set; the next ones only if the registry refuses.

        Raises what the registry client raises (`gitsync.errors`): the last refusal
        when every set was refused.
        """
        keys = list(dict.fromkeys(tuple(sorted(set(s))) for s in secret_sets)) or [()]
        for key in keys[:-1]:
            try:
                return self._client(key).manifest_digest(ref)
            except _TRY_OTHER_CREDENTIALS:
                continue
        return self._client(keys[-1]).manifest_digest(ref)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, key: SecretsKey) -> RegistryClient:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # One token cache per set: a token earned with one cache's credentials
                # must never serve a cache that lacks them.
                client = self._clients[key] = self._client_factory(
                    credentials=self._credentials(key),
                    insecure_registries=self._insecure,
                    token_cache=TokenCache(),
                    timeout=self._timeout,
                    max_attempts=self._attempts,
                    backoff_base=0.2,
                    backoff_max=2.0,
                    max_retry_after=5.0,
                    max_connections=4,
                )
            return client

    def _credentials(self, key: SecretsKey) -> CredentialStore:
        """The docker config's logins, then the cache's pull secrets, as the local backend."""
        return plan_credentials(
            docker_config=self._docker_config, secrets_dir=self._secrets_dir, secret_names=key
        )

"""Pull secrets for the local backend, read from the cluster instead of `--secrets-dir`.

`ClusterPullSecrets` reads `kubernetes.io/dockerconfigjson` (and the legacy
`dockercfg`) Secrets named `namespace/name` from the API and returns the same
`CredentialStore` as `--secrets-dir`, parsed by `providers.credentials`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

# The same secret format as `--secrets-dir`, parsed by the same shared module.
from gitsync.providers.credentials import (
    CredentialError,
    CredentialStore,
    PullSecretNotFoundError,
    credentials_from_secret,
    split_secret_name,
)
from gitsync.providers.kubernetes.client import DEFAULT_REQUEST_TIMEOUT, is_status, translate


class ClusterPullSecrets:
    """Pull secrets (`namespace/name`) read from the API, for the local backend.

    The same rules as files in `--secrets-dir` (see `providers.credentials`):
    type `kubernetes.io/dockerconfigjson` (or the legacy `dockercfg`); a
    missing secret raises `PullSecretNotFoundError`, which the local backend
    reports as a Warning and pulls without it, as the kubelet does.
    """

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._timeout = request_timeout

    def load(self, name: str) -> CredentialStore:
        namespace, secret = split_secret_name(name)
        where = f"pull secret {name} (Secret {namespace}/{secret} in the cluster)"
        try:
            # Raw JSON: the model's type says V1Secret, but _preload_content=False returns
            # the HTTP response.
            response: Any = self._core.read_namespaced_secret(
                secret, namespace, _preload_content=False, _request_timeout=self._timeout
            )
            try:
                document = json.loads(response.data or b"{}")
            finally:
                response.release_conn()
        except ApiException as exc:
            if is_status(exc, 404):
                raise PullSecretNotFoundError(
                    f"pull secret {name!r} not found: no Secret {secret} in namespace {namespace}"
                ) from exc
            if is_status(exc, 401, 403):
                raise CredentialError(
                    f"{where}: the API server refused to read it (HTTP {exc.status}); grant"
                    f" 'get' on secrets in namespace {namespace}"
                    " (manifests/components/pull-secrets)"
                ) from exc
            raise translate(exc, what=f"read {where}") from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise translate(exc, what=f"read {where}") from exc
        return credentials_from_secret(document, where=where)

    def load_all(self, names: Iterable[str]) -> CredentialStore:
        """Several secrets, the first named winning on equal matches."""
        return CredentialStore().merged(*(self.load(n) for n in names))

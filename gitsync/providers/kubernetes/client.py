"""Talking to the API server: the client, error translation, raw JSON calls and paged lists.

The only part of the backend that knows the `kubernetes` package's calling
conventions, so the rest deals in plain JSON and gitsync's own errors.

Configuration comes from a kubeconfig file (`--kubeconfig`, `--context`) or,
without one, from the ServiceAccount the pod runs as (in-cluster config).
Every call has a timeout, decodes the response as JSON without building the
client's model objects (10,000 of them cost more than the list), and turns a
failure into `TemporaryError` (unreachable, 409, 429, 5xx: retried on a later
pass) or `PermanentError` (401/403 name the RBAC rules to grant), raised
from the original. Lists are paged (`limit`, `continue`); an expired
continue token restarts the list once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from gitsync.errors import ConfigError, GitSyncError, PermanentError, TemporaryError
from gitsync.providers.kubernetes.ownership import Json

log = logging.getLogger("gitsync.providers.kubernetes")

GROUP = "eks.cloud.tencent.com"
VERSION = "v1"
PLURAL = "imagecaches"
DEFAULT_PAGE_SIZE = 500  # 1,000 caches: two pages; the API server's own default cap is 500
DEFAULT_REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a stuck API server must not stall a pass

# What the code calls, for the RBAC test: (apiGroup, resource, verbs). Keep in step with
# manifests/clusterrole.yaml (tests/unit/test_manifests.py checks the manifests cover it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (GROUP, PLURAL, ("get", "list", "create", "patch", "delete")),
    ("", "events", ("list", "create")),
)
PULL_SECRET_RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (("", "secrets", ("get",)),)


def load_api_client(
    *, kubeconfig: Path | None = None, context: str | None = None
) -> kubernetes.client.ApiClient:
    """An API client from a kubeconfig (and context), or in-cluster without one.

    The in-cluster loader reads the ServiceAccount token and CA that the
    kubelet mounts, and the `KUBERNETES_SERVICE_HOST`/`_PORT` variables it
    sets: that is the platform's contract, not gitsync configuration.
    """
    try:
        if kubeconfig is not None or context is not None:
            # The config loaders are untyped in the kubernetes package.
            client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                persist_config=False,
            )
            return client
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped upstream
        return kubernetes.client.ApiClient(configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = (
            f"kubeconfig {kubeconfig or '(default)'}"
            + (f", context {context!r}" if context else "")
            if kubeconfig is not None or context is not None
            else "in-cluster config (ServiceAccount token)"
        )
        hint = (
            "check the file and that the context exists (`kubectl config get-contexts`)"
            if kubeconfig is not None or context is not None
            else "not running in a pod? pass --kubeconfig FILE (and --context NAME)"
        )
        raise ConfigError(f"cannot load the Kubernetes {where}: {exc}; {hint}") from exc


# ------------------------------------------------------------ error handling


def api_error_message(exc: ApiException) -> str:
    """The API server's Status message, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    return f"{exc.reason or 'error'}"


def retry_after_seconds(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def translate(exc: BaseException, *, what: str) -> GitSyncError:
    """An API or transport failure as gitsync's transient/permanent error."""
    if isinstance(exc, GitSyncError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: HTTP {status}: {api_error_message(exc)}"
        if status in (401, 403):
            return PermanentError(
                f"{message}; the ServiceAccount needs the rules in manifests/clusterrole.yaml"
            )
        if status in {0, 409, 429} or status >= 500:
            return TemporaryError(message, retry_after=retry_after_seconds(exc))
        return PermanentError(message)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TemporaryError(f"{what}: cannot reach the Kubernetes API server: {exc}")
    return PermanentError(f"{what}: {exc}")


def is_status(exc: BaseException, *statuses: int) -> bool:
    return isinstance(exc, ApiException) and exc.status in statuses


# ------------------------------------------------------------------- calls


class ImageCacheApi:
    """Raw JSON calls on ImageCaches and Events, with the timeout and the page size."""

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        page_size: int = DEFAULT_PAGE_SIZE,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self._page_size = page_size
        self._timeout = request_timeout

    def get(self, name: str) -> Json | None:
        """The ImageCache `name`, or None when there is none."""
        try:
            return self.call(self.custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if is_status(exc, 404):
                return None
            raise translate(exc, what=f"read ImageCache {name!r}") from exc

    def delete(self, name: str, *, uid: str | None) -> None:
        """Delete `name` (only the object of `uid`, when given); gone already is fine."""
        body: Json = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.call(
                self.custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name, body=body
            )
        except ApiException as exc:
            if is_status(exc, 404):
                return  # already gone: deleting is idempotent
            if is_status(exc, 409) and uid:
                # The name now belongs to a newer object: the one we meant is gone already.
                log.info("ImageCache %s was replaced since it was observed; left alone", name)
                return
            raise translate(exc, what=f"delete ImageCache {name!r}") from exc

    def create_event(self, namespace: str, body: Json) -> Json:
        """POST one core/v1 Event into `namespace`."""
        name = (body.get("metadata") or {}).get("name", "")
        try:
            return self.call(self.core.create_namespaced_event, namespace, body)
        except ApiException as exc:
            raise translate(exc, what=f"record Event {namespace}/{name}") from exc

    def list_all(
        self, method: Callable[..., Any], *args: Any, what: str, **kwargs: Any
    ) -> list[Json]:
        """Every item of a paginated list; an expired continue token restarts the list once."""
        restarted = False
        while True:
            items: list[Json] = []
            token: str | None = None
            try:
                while True:
                    page_args = dict(kwargs, limit=self._page_size)
                    if token:
                        page_args["_continue"] = token
                    page = self.call(method, *args, **page_args)
                    items.extend(page.get("items") or [])
                    token = (page.get("metadata") or {}).get("continue") or None
                    if not token:
                        return items
            except ApiException as exc:
                if is_status(exc, 410) and token and not restarted:
                    restarted = True  # the list was too slow for the server's snapshot
                    continue
                if is_status(exc, 404) and method == self.custom.list_cluster_custom_object:
                    raise PermanentError(
                        f"{what}: the API server does not serve {PLURAL}.{GROUP}/{VERSION};"
                        " install the imc-operator add-on (or manifests/crd-imagecache.yaml)"
                    ) from exc
                raise translate(exc, what=what) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise translate(exc, what=what) from exc

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        """One API call, decoded as JSON without building the client's model objects."""
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self._timeout, **kwargs
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what=getattr(method, "__name__", "Kubernetes API call")) from exc
        try:
            data = json.loads(response.data or b"{}")
        finally:
            response.release_conn()
        return data if isinstance(data, dict) else {}

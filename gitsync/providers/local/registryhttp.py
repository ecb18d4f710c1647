"""The registry's HTTP session: scheme, auth round trips, retries, and what an answer means.

Why apart from the client: `registry.RegistryClient` knows the distribution
API (manifests, blobs, what to verify); this module knows how any request to a
registry is sent, and nothing of what it asks for:

* Scheme: loopback registries (127.0.0.0/8, ::1, localhost) and those listed
  in `insecure_registries` (host[:port], or a CIDR as docker accepts) are
  spoken to over plain HTTP, all others over HTTPS with verified
  certificates. `docker.io` is served by `registry-1.docker.io`.
* Auth: anonymous first; on a 401 the challenge decides Basic or a Bearer
  token (see `auth`), and the request is sent once more with it. A challenge
  round trip does not count as a failed attempt.
* Retries: 429, 5xx and connection errors are retried by the policy in
  `registryretry`; token requests are retried the same way.
* Answers: 2xx comes back with its body unread; 401, 403 and 404 become
  `AuthenticationError`, `AccessDeniedError` and `NotFoundError` (each a
  `PermanentError` naming registry, repository and what was asked), with the
  distribution error body's code and message when there is one.
* One `httpx.Client` with a connection pool serves all threads.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

import httpx

from gitsync import __version__
from gitsync.imageref import ImageRef
from gitsync.netaddr import is_loopback_host
from gitsync.providers.credentials import CredentialStore
from gitsync.providers.local.auth import Authenticator, TokenCache
from gitsync.providers.local.oci import ManifestError, RegistryError
from gitsync.providers.local.registryretry import (
    RETRY_STATUSES,
    Attempts,
    OperationCancelledError,
    RetryPolicy,
)

T = TypeVar("T")

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
MAX_ERROR_BODY = 16 * 1024


class AuthenticationError(RegistryError):
    """401: no credentials, or the registry rejected them."""


class AccessDeniedError(RegistryError):
    """403: the credentials are valid but may not pull this repository."""


class NotFoundError(RegistryError):
    """404: the repository, tag, manifest or blob does not exist."""


def _networks(entries: Collection[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR entries of an insecure-registries list (docker accepts those too)."""
    networks = []
    for entry in entries:
        if "/" in entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # not a CIDR: a host[:port] entry, matched exactly
    return networks


def _in_networks(
    host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in network for network in networks)


def split_host_port(registry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` or `host` as (host, port)."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, colon, port = registry.rpartition(":")
    if colon and port.isdigit() and host:
        return host, int(port)
    return registry, None


def read_capped(response: httpx.Response, cap: int, *, where: str, registry: str) -> bytes:
    """The whole body, refused (`ManifestError`) once it passes `cap` bytes."""
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > cap:
            raise ManifestError(f"{where} is larger than {cap} bytes", registry=registry)
    return bytes(buf)


class RegistrySession:
    """Sends requests to registries; thread-safe. See the module docstring for the rules.

    Everything the environment would otherwise provide is injected: credentials,
    insecure registries, an HTTP proxy and CA bundle (`verify`), the clock of the
    token cache, the retry policy's sleep and jitter, and an httpx transport for tests.
    """

    def __init__(
        self,
        *,
        credentials: CredentialStore | None,
        insecure_registries: Collection[str],
        transport: httpx.BaseTransport | None,
        clock: Callable[[], float],
        retry: RetryPolicy,
        timeout: float,
        max_connections: int,
        token_cache: TokenCache | None,
        user_agent: str = f"gitsync/{__version__}",
        proxy: str | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self._insecure = frozenset(r.lower() for r in insecure_registries)
        self._insecure_networks = tuple(_networks(insecure_registries))
        self.retry = retry
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.http = httpx.Client(
            transport=transport,
            limits=limits,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=True,  # httpx drops Authorization on cross-origin redirects
            headers={"User-Agent": user_agent},
            trust_env=False,  # proxies, CA bundles and netrc come from the caller, not os.environ
            proxy=proxy,
            verify=verify,
        )
        self.auth = Authenticator(
            credentials=credentials,
            token_cache=token_cache or TokenCache(clock=clock),
            clock=clock,
            send=self._send_token_request,
        )

    def close(self) -> None:
        self.http.close()

    def base_url(self, registry: str) -> str:
        """`scheme://endpoint` for a registry name as it appears in image references."""
        endpoint = DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry
        host, _ = split_host_port(endpoint)
        plain = (
            is_loopback_host(host)
            or endpoint.lower() in self._insecure
            or _in_networks(host, self._insecure_networks)
        )
        return f"{'http' if plain else 'https'}://{endpoint}"

    def get_and_read(
        self,
        ref: ImageRef,
        path: str,
        *,
        headers: Mapping[str, str],
        what: str,
        read: Callable[[httpx.Response], T],
        broken: Callable[[Attempts, httpx.TransportError], None],
        cancel: threading.Event | None,
    ) -> T:
        """GET `path` and `read` the response, asking again from the start if its body breaks off.

        The request's own retries (connection errors, 429/5xx) and these re-requests
        share one budget of attempts; `broken` raises when it is spent, or waits.
        """
        attempts = self.retry.attempts()
        while True:
            response = self._request(
                "GET",
                ref.registry,
                ref.repository,
                path,
                headers=headers,
                what=what,
                attempts=attempts,
                cancel=cancel,
            )
            try:
                return read(response)
            except httpx.TransportError as exc:
                broken(attempts, exc)
            finally:
                response.close()

    def head(
        self,
        ref: ImageRef,
        path: str,
        *,
        headers: Mapping[str, str],
        what: str,
        cancel: threading.Event | None = None,
    ) -> httpx.Headers:
        """HEAD `path`: the headers of a 2xx answer, retried and translated as a GET is."""
        response = self._request(
            "HEAD",
            ref.registry,
            ref.repository,
            path,
            headers=headers,
            what=what,
            attempts=self.retry.attempts(),
            cancel=cancel,
        )
        response.close()
        return response.headers

    def _send_token_request(self, request: httpx.Request) -> httpx.Response:
        """Send a token request with retries on 429/5xx/connection errors."""
        attempts = self.retry.attempts()
        where = f"token request to {request.url.copy_with(query=None)}"
        while True:
            attempts.next()
            try:
                response = self.http.send(request)
            except httpx.TransportError as exc:
                self.retry.give_up_or_wait(attempts, where, exc=exc, response=None, cancel=None)
                continue
            if response.status_code in RETRY_STATUSES:
                response.close()
                self.retry.give_up_or_wait(
                    attempts, where, exc=None, response=response, cancel=None
                )
                continue
            return response

    def _request(
        self,
        method: str,
        registry: str,
        repository: str,
        path: str,
        *,
        headers: Mapping[str, str],
        what: str,
        attempts: Attempts,
        cancel: threading.Event | None,
    ) -> httpx.Response:
        """Send until a 2xx response (returned with its body unread) or a final error."""
        url = self.base_url(registry) + path
        reauthenticated = False
        while True:
            if cancel is not None and cancel.is_set():
                raise OperationCancelledError("cancelled")
            attempts.next()
            authorization = self.auth.authorization(registry, repository)
            request_headers = dict(headers)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            request = self.http.build_request(method, url, headers=request_headers)
            try:
                response = self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                self.retry.give_up_or_wait(
                    attempts, f"{what} from {registry}", exc=exc, response=None, cancel=cancel
                )
                continue
            status = response.status_code
            if 200 <= status < 300:
                return response
            if status == 401:
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                if not reauthenticated and self.auth.on_unauthorized(
                    registry, repository, challenge, sent=authorization
                ):
                    reauthenticated = True
                    attempts.used -= 1  # a challenge round trip is not a failed attempt
                    continue
                raise self._auth_error(registry, repository, what, challenge)
            if status in RETRY_STATUSES:
                response.close()
                self.retry.give_up_or_wait(
                    attempts, f"{what} from {registry}", exc=None, response=response, cancel=cancel
                )
                continue
            raise _status_error(response, registry, repository, what)

    def _auth_error(
        self, registry: str, repository: str, what: str, challenge: str | None
    ) -> AuthenticationError:
        credential = self.auth.credential_for(registry, repository)
        if credential is None:
            hint = f"no credentials for {registry} were given (docker config or pull secret)"
        else:
            hint = f"the registry rejected the credentials from {credential.source}"
        scheme = (challenge or "no challenge").split(" ", 1)[0]
        return AuthenticationError(
            f"{what}: {registry} answered 401 Unauthorized ({scheme}); {hint}",
            registry=registry,
            repository=repository,
        )


def _status_error(
    response: httpx.Response, registry: str, repository: str, what: str
) -> RegistryError:
    """A final answer other than 2xx or 401, closed, as the error it means."""
    try:
        body = read_capped(response, MAX_ERROR_BODY, where=what, registry=registry)
    except (httpx.HTTPError, RegistryError):
        body = b""
    finally:
        response.close()
    detail = _error_detail(body)
    status = response.status_code
    message = f"{what}: {registry} answered HTTP {status}{detail}"
    if status == 403:
        return AccessDeniedError(
            message + f"; the credentials may not pull {repository}",
            registry=registry,
            repository=repository,
        )
    if status == 404:
        return NotFoundError(
            message + "; check the repository name, tag or digest",
            registry=registry,
            repository=repository,
        )
    return RegistryError(message, registry=registry, repository=repository)


def _error_detail(body: bytes) -> str:
    """` (CODE: message)` from a distribution error body, if it has one."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return f" ({first.get('code', '?')}: {first.get('message', '')})"
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""

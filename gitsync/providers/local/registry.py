"""A client for the OCI distribution API: resolve manifests, stream blobs, with auth and retries.

Why not a ready-made client: oras-py and friends hide the raw manifest bytes
and verify digests after a download rather than during it, and gitsync needs
both (the export feature must reproduce digests byte for byte, and a lying
registry must not fill the disk). httpx does the HTTP; this module adds the
registry's rules:

* Scheme: loopback registries (127.0.0.0/8, ::1, localhost) and those listed
  in `insecure_registries` (host[:port]) are spoken to over plain HTTP, all
  others over HTTPS with verified certificates. `docker.io` is served by
  `registry-1.docker.io`.
* Auth: anonymous first; on a 401 the challenge decides Basic or a Bearer
  token (see `auth.py`), and the request is retried once with it.
* Retries: 429 (honouring Retry-After, capped), 5xx and connection errors are
  retried with exponential backoff and jitter, for a bounded number of
  attempts; a blob whose body breaks off mid-way is fetched again from the
  start with a fresh sink, so no partial content can survive. What remains
  failing is a TemporaryError; 401/403/404 and bad content are PermanentError
  subclasses naming registry, repository and reference or digest.
* One `httpx.Client` with a connection pool serves all threads.

Manifests are returned with their exact bytes and verified digest; a tag is
resolved with Accept headers for OCI and Docker v2 manifests and indexes, and
an index is narrowed to one platform (default linux/amd64, variant aware) by the
rules of the image model in `oci.py`.
"""

from __future__ import annotations

import ipaddress
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from gitsync import __version__
from gitsync.backoff import backoff_ceiling, equal_jitter
from gitsync.errors import PermanentError, TemporaryError
from gitsync.imageref import ImageRef
from gitsync.netaddr import is_loopback_host
from gitsync.providers.credentials import CredentialStore
from gitsync.providers.local.auth import Authenticator, TokenCache
from gitsync.providers.local.blobs import (
    DigestMismatchError,
    SizeMismatchError,
    compute_digest,
    parse_digest,
)
from gitsync.providers.local.oci import (
    ACCEPT_MANIFESTS,
    DEFAULT_PLATFORM,
    DOCKER_SCHEMA1,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Manifest,
    ManifestError,
    Platform,
    RegistryError,
    ResolvedImage,
    media_type_of,
    parse_descriptor,
    parse_image_manifest,
    select_platform,
)

T = TypeVar("T")

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution refuses larger manifests too
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_ERROR_BODY = 16 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# -- errors --------------------------------------------------------------------


class AuthenticationError(RegistryError):
    """401: no credentials, or the registry rejected them."""


class AccessDeniedError(RegistryError):
    """403: the credentials are valid but may not pull this repository."""


class NotFoundError(RegistryError):
    """404: the repository, tag, manifest or blob does not exist."""


class OperationCancelledError(TemporaryError):
    """The caller cancelled the operation (another part of the pull failed, or a stop).

    Temporary: nothing was wrong with this part, so the next pass may well succeed.
    """


# -- the client ------------------------------------------------------------------


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


class _Attempts:
    """A shared budget of attempts for one logical operation (connect and body retries)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def next(self) -> bool:
        self.used += 1
        return self.used <= self.limit


class RegistryClient:
    """Thread-safe OCI distribution client; see the module docstring for the rules.

    Everything the environment would otherwise provide is injected: credentials,
    insecure registries, an HTTP proxy and CA bundle (`verify`), the clock of the
    token cache, the sleep used between retries (None: wait on the pull's cancel
    event, so a cancelled pull does not sit out a backoff), the random jitter,
    and an httpx transport for tests.
    """

    def __init__(
        self,
        *,
        credentials: CredentialStore | None = None,
        insecure_registries: Collection[str] = (),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        max_retry_after: float = 60.0,
        timeout: float = 60.0,
        max_connections: int = 16,
        token_cache: TokenCache | None = None,
        user_agent: str = f"gitsync/{__version__}",
        proxy: str | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._insecure = frozenset(r.lower() for r in insecure_registries)
        self._insecure_networks = tuple(_networks(insecure_registries))
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._rng_lock = threading.Lock()
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(
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
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs -----------------------------------------------------------------

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

    # -- public API -----------------------------------------------------------

    def get_manifest(
        self,
        ref: ImageRef,
        reference: str | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Manifest:
        """Fetch a manifest or index by tag or digest, verifying the digest from its bytes."""
        reference = reference or ref.reference
        by_digest = reference.startswith(("sha256:", "sha512:"))
        where = f"manifest {ref.name}{'@' if by_digest else ':'}{reference}"

        def read(response: httpx.Response) -> tuple[bytes, httpx.Headers]:
            data = self._read_capped(
                response, MAX_MANIFEST_BYTES, where=where, registry=ref.registry
            )
            return data, response.headers

        def broken(attempts: _Attempts, exc: httpx.TransportError) -> None:
            self._give_up_or_wait(
                attempts, f"{where} from {ref.registry}", exc=exc, response=None, cancel=cancel
            )

        data, response_headers = self._get_and_read(
            ref,
            f"/v2/{ref.repository}/manifests/{reference}",
            headers={"Accept": ACCEPT_MANIFESTS},
            what=where,
            read=read,
            broken=broken,
            cancel=cancel,
        )
        content_type = response_headers.get("Content-Type")
        media_type = media_type_of(data, content_type, where, ref.registry)
        if media_type in DOCKER_SCHEMA1:
            raise ManifestError(
                f"{where} is a Docker schema 1 manifest, which is deprecated and unsupported;"
                " push the image again with a current client",
                registry=ref.registry,
                repository=ref.repository,
            )
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            raise ManifestError(
                f"{where} has media type {media_type!r}; expected an OCI or Docker v2 manifest"
                " or index",
                registry=ref.registry,
                repository=ref.repository,
            )
        if by_digest:
            algorithm, _ = parse_digest(reference)
            actual = compute_digest(data, algorithm)
            if actual != reference:
                raise DigestMismatchError(digest=reference, actual=actual, where=where)
            digest = reference
        else:
            digest = compute_digest(data)
            header = response_headers.get("Docker-Content-Digest")
            if header and header.startswith("sha256:") and header != digest:
                raise DigestMismatchError(
                    digest=header, actual=digest, where=f"{where} (Docker-Content-Digest)"
                )
        return Manifest(media_type=media_type, digest=digest, data=data)

    def resolve(
        self,
        ref: ImageRef,
        *,
        platform: Platform = DEFAULT_PLATFORM,
        cancel: threading.Event | None = None,
    ) -> ResolvedImage:
        """Tag or digest → the platform's image manifest, its config and layers."""
        top = self.get_manifest(ref, cancel=cancel)
        return self.resolve_manifest(
            ref,
            top,
            platform=platform,
            fetch=lambda digest: self.get_manifest(ref, digest, cancel=cancel),
        )

    def resolve_manifest(
        self,
        ref: ImageRef,
        top: Manifest,
        *,
        platform: Platform,
        fetch: Callable[[str], Manifest],
    ) -> ResolvedImage:
        """Narrow an already fetched manifest or index; `fetch` gets a child by digest."""
        index: Manifest | None = None
        manifest = top
        if top.is_index:
            index = top
            document = json.loads(top.data)
            entries = document.get("manifests")
            if not isinstance(entries, list):
                raise ManifestError(
                    f"index {ref} ({top.digest}) has no 'manifests' list",
                    registry=ref.registry,
                    repository=ref.repository,
                )
            descriptors = [
                parse_descriptor(e, where=f"index {ref}", registry=ref.registry) for e in entries
            ]
            chosen = select_platform(
                descriptors, platform, registry=ref.registry, where=f"index {ref} ({top.digest})"
            )
            manifest = fetch(chosen.digest)
            if len(manifest.data) != chosen.size:
                raise SizeMismatchError(
                    digest=chosen.digest,
                    expected=chosen.size,
                    actual=len(manifest.data),
                    where=f"manifest {ref.name}@{chosen.digest}",
                )
            if manifest.is_index:
                raise ManifestError(
                    f"index {ref} points to another index for {platform}; nested indexes are"
                    " not supported",
                    registry=ref.registry,
                    repository=ref.repository,
                )
        config, layers = parse_image_manifest(
            manifest, registry=ref.registry, where=f"manifest {ref.name}@{manifest.digest}"
        )
        return ResolvedImage(
            reference=ref,
            manifest=manifest,
            index=index,
            platform=platform,
            config=config,
            layers=layers,
        )

    def fetch_blob_bytes(
        self,
        ref: ImageRef,
        descriptor: Descriptor,
        *,
        max_size: int = MAX_CONFIG_BYTES,
        cancel: threading.Event | None = None,
    ) -> bytes:
        """A small blob (a config) in memory, digest and size verified."""
        where = f"blob {descriptor.digest} of {ref.name}"
        if descriptor.size > max_size:
            raise RegistryError(
                f"{where} is {descriptor.size} bytes; at most {max_size} are accepted here",
                registry=ref.registry,
                repository=ref.repository,
            )

        def consume(chunks: Iterator[bytes]) -> bytes:
            buf = bytearray()
            for chunk in chunks:
                buf += chunk
                if len(buf) > descriptor.size:
                    break
            data = bytes(buf)
            if len(data) != descriptor.size:
                raise SizeMismatchError(
                    digest=descriptor.digest,
                    expected=descriptor.size,
                    actual=len(data),
                    where=where,
                )
            algorithm, _ = parse_digest(descriptor.digest)
            actual = compute_digest(data, algorithm)
            if actual != descriptor.digest:
                raise DigestMismatchError(digest=descriptor.digest, actual=actual, where=where)
            return data

        return self.fetch_blob(ref, descriptor, consume, cancel=cancel)

    def fetch_blob(
        self,
        ref: ImageRef,
        descriptor: Descriptor,
        consume: Callable[[Iterator[bytes]], T],
        *,
        cancel: threading.Event | None = None,
    ) -> T:
        """Stream a blob into `consume`, retrying from the start if the body breaks off.

        `consume` gets an iterator of chunks and must be restartable: each
        attempt calls it afresh (with a new temporary file, hasher...). Errors it
        raises propagate; a broken connection while it reads is retried.
        """
        where = f"blob {descriptor.digest} of {ref.name}"

        def read(response: httpx.Response) -> T:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != descriptor.size:
                raise SizeMismatchError(
                    digest=descriptor.digest,
                    expected=descriptor.size,
                    actual=int(length),
                    where=f"{where} (Content-Length)",
                )
            return consume(response.iter_bytes())

        def broken(attempts: _Attempts, exc: httpx.TransportError) -> None:
            if attempts.used >= attempts.limit:
                raise TemporaryError(
                    f"{where}: connection broke mid-transfer on all {attempts.limit}"
                    f" attempts ({type(exc).__name__}: {exc})"
                ) from exc
            self._pause(self._backoff(attempts.used), cancel)

        return self._get_and_read(
            ref,
            f"/v2/{ref.repository}/blobs/{descriptor.digest}",
            headers={"Accept-Encoding": "identity"},
            what=where,
            read=read,
            broken=broken,
            cancel=cancel,
        )

    # -- plumbing ---------------------------------------------------------------

    def _get_and_read(
        self,
        ref: ImageRef,
        path: str,
        *,
        headers: Mapping[str, str],
        what: str,
        read: Callable[[httpx.Response], T],
        broken: Callable[[_Attempts, httpx.TransportError], None],
        cancel: threading.Event | None,
    ) -> T:
        """GET `path` and `read` the response, asking again from the start if its body breaks off.

        The request's own retries (connection errors, 429/5xx) and these re-requests
        share one budget of attempts; `broken` raises when it is spent, or waits.
        """
        attempts = _Attempts(self.max_attempts)
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

    def _backoff(self, attempt: int) -> float:
        # The doubling stops at 2^30 (attempt 31), as it always has here.
        ceiling = backoff_ceiling(min(attempt, 31), base=self._backoff_base, cap=self._backoff_max)
        with self._rng_lock:
            return equal_jitter(ceiling, rng=self._rng)

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelledError("cancelled")
        if self._sleep is not None:
            self._sleep(seconds)
        elif cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)
        if cancel is not None and cancel.is_set():
            raise OperationCancelledError("cancelled")

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        seconds: float | None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()  # an HTTP date is wall-clock by nature
        return max(0.0, min(seconds, self._max_retry_after))

    def _send_token_request(self, request: httpx.Request) -> httpx.Response:
        """Send a token request with retries on 429/5xx/connection errors."""
        attempts = _Attempts(self.max_attempts)
        where = f"token request to {request.url.copy_with(query=None)}"
        while True:
            attempts.next()
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                self._give_up_or_wait(attempts, where, exc=exc, response=None, cancel=None)
                continue
            if response.status_code in RETRY_STATUSES:
                response.close()
                self._give_up_or_wait(attempts, where, exc=None, response=response, cancel=None)
                continue
            return response

    def _give_up_or_wait(
        self,
        attempts: _Attempts,
        where: str,
        *,
        exc: Exception | None,
        response: httpx.Response | None,
        cancel: threading.Event | None,
    ) -> None:
        retry_after = self._retry_after(response) if response is not None else None
        if exc is not None:
            cert_error = _certificate_error(exc)
            if cert_error is not None:
                raise PermanentError(
                    f"{where}: TLS certificate verification failed ({cert_error});"
                    " if the registry serves plain HTTP, list it as an insecure registry"
                ) from exc
        if attempts.used >= attempts.limit:
            cause = (
                f"HTTP {response.status_code}"
                if response is not None
                else f"{type(exc).__name__}: {exc}"
            )
            error = TemporaryError(
                f"{where} failed after {attempts.used} attempts: {cause}", retry_after=retry_after
            )
            if exc is not None:
                raise error from exc
            raise error
        delay = retry_after if retry_after is not None else self._backoff(attempts.used)
        self._pause(delay, cancel)

    def _request(
        self,
        method: str,
        registry: str,
        repository: str,
        path: str,
        *,
        headers: Mapping[str, str],
        what: str,
        attempts: _Attempts,
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
            request = self._http.build_request(method, url, headers=request_headers)
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                self._give_up_or_wait(
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
                self._give_up_or_wait(
                    attempts, f"{what} from {registry}", exc=None, response=response, cancel=cancel
                )
                continue
            raise self._status_error(response, registry, repository, what)

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
        self, response: httpx.Response, registry: str, repository: str, what: str
    ) -> RegistryError:
        try:
            body = self._read_capped(response, MAX_ERROR_BODY, where=what, registry=registry)
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

    @staticmethod
    def _read_capped(response: httpx.Response, cap: int, *, where: str, registry: str) -> bytes:
        buf = bytearray()
        for chunk in response.iter_bytes():
            buf += chunk
            if len(buf) > cap:
                raise ManifestError(f"{where} is larger than {cap} bytes", registry=registry)
        return bytes(buf)


def _error_detail(body: bytes) -> str:
    """` (CODE: message)` from a distribution error body, if it has one."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return f" ({first.get('code', '?')}: {first.get('message', '')})"
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _certificate_error(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen)
        seen = seen.__cause__ or seen.__context__
    return None

"""A client for the OCI distribution API: resolve manifests, stream blobs, verify both.

Why not a ready-made client: oras-py and friends hide the raw manifest bytes
and verify digests after a download rather than during it, and gitsync needs
both (the export feature must reproduce digests byte for byte, and a lying
registry must not fill the disk). httpx does the HTTP; three modules add the
registry's rules, each one concern:

* `registry` (this one): what to ask and what to check. Manifests come back
  with their exact bytes and verified digest; a tag is resolved with Accept
  headers for OCI and Docker v2 manifests and indexes, and an index is
  narrowed to one platform (default linux/amd64, variant aware) by the rules
  of the image model in `oci`. A blob whose body breaks off mid-way is fetched
  again from the start with a fresh sink, so no partial content can survive.
* `registryhttp`: how a request is sent (scheme, auth round trips, answers
  turned into `AuthenticationError`, `AccessDeniedError`, `NotFoundError`).
* `registryretry`: when it is sent again (429, 5xx and connection errors,
  with backoff and Retry-After, within one budget per operation).

Tags are listed page by page (`/v2/<name>/tags/list?n=…`, then each
`Link: <…?n=…&last=…>; rel="next"` until there is none, as the distribution
spec paginates), each page capped in size and the pages in number; a next
link to another origin is refused, since the client's credentials are for
the registry the image names.

What remains failing is a TemporaryError; 401/403/404 and bad content are
PermanentError subclasses naming registry, repository and reference or digest.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

import httpx

from gitsync import __version__
from gitsync.errors import TemporaryError
from gitsync.imageref import ImageRef
from gitsync.providers.credentials import CredentialStore
from gitsync.providers.local.auth import TokenCache
from gitsync.providers.local.blobs import (
    DigestMismatchError,
    InvalidDigestError,
    SizeMismatchError,
    compute_digest,
    parse_digest,
)
from gitsync.providers.local.oci import (
    ACCEPT_MANIFESTS,
    DEFAULT_PLATFORM,
    Descriptor,
    Manifest,
    ManifestError,
    Platform,
    RegistryError,
    ResolvedImage,
    resolve_manifest,
    served_manifest,
)
from gitsync.providers.local.registryhttp import RegistrySession, read_capped
from gitsync.providers.local.registryretry import Attempts, RetryPolicy

T = TypeVar("T")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution refuses larger manifests too
MAX_CONFIG_BYTES = 8 * 1024 * 1024
TAGS_PAGE_SIZE = 100  # `n`: every registry takes 100 (some refuse more); Link says the rest
MAX_TAGS_PAGE_BYTES = 4 * 1024 * 1024
MAX_TAG_PAGES = 1000


def _list_tags(
    session: RegistrySession,
    ref: ImageRef,
    *,
    base: httpx.URL,
    first: str,
    max_pages: int,
    cancel: threading.Event | None,
) -> tuple[str, ...]:
    """`RegistryClient.list_tags`: page after page from `first`, while a next link says so."""
    where = f"tags of {ref.name}"
    path = first
    tags: list[str] = []
    seen: set[str] = set()

    def read(response: httpx.Response) -> tuple[bytes, str | None, httpx.URL]:
        data = read_capped(response, MAX_TAGS_PAGE_BYTES, where=where, registry=ref.registry)
        return data, response.links.get("next", {}).get("url"), response.url

    def broken(attempts: Attempts, exc: httpx.TransportError) -> None:
        session.retry.give_up_or_wait(
            attempts, f"{where} from {ref.registry}", exc=exc, response=None, cancel=cancel
        )

    while True:
        if len(seen) >= max_pages:
            raise RegistryError(
                f"{where}: more than {max_pages} pages of tags; gave up",
                registry=ref.registry,
                repository=ref.repository,
            )
        seen.add(path)
        data, link, url = session.get_and_read(
            ref,
            path,
            headers={"Accept": "application/json"},
            what=where,
            read=read,
            broken=broken,
            cancel=cancel,
        )
        tags.extend(_tag_page(data, ref=ref, where=where))
        if link is None:
            return tuple(tags)
        path = _next_page(url.join(link), base=base, ref=ref, where=where)
        if path in seen:
            raise RegistryError(
                f"{where}: the next page's link ({path}) points back to a page already read",
                registry=ref.registry,
                repository=ref.repository,
            )


_NOT_A_LIST = object()


def _tag_page(data: bytes, *, ref: ImageRef, where: str) -> list[str]:
    """The tags of one `tags/list` answer: `{"name": …, "tags": [...]}`; null means none."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    tags = body.get("tags", _NOT_A_LIST) if isinstance(body, dict) else _NOT_A_LIST
    if tags is None:
        return []  # a repository whose tags were all deleted
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RegistryError(
            f"{where}: the registry answered something other than a tag list"
            ' ({"name": …, "tags": [...]})',
            registry=ref.registry,
            repository=ref.repository,
        )
    return tags


def _next_page(url: httpx.URL, *, base: httpx.URL, ref: ImageRef, where: str) -> str:
    """The path and query of a `rel="next"` link, which must stay on the registry's origin."""
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        raise RegistryError(
            f"{where}: the next page's link leaves {base} (for {url.scheme}://{url.host}); refused,"
            " since the credentials are for the registry the image names",
            registry=ref.registry,
            repository=ref.repository,
        )
    return url.raw_path.decode("ascii")


class RegistryClient:
    """Thread-safe OCI distribution client; see the module docstring for the rules.

    Everything the environment would otherwise provide is injected: credentials,
    insecure registries, an HTTP proxy and CA bundle (`verify`), the clock of the
    token cache, the sleep used between retries (None: wait on the pull's cancel
    event, so a cancelled pull does not sit out a backoff), the random jitter,
    and an httpx transport for tests. `session` is the pooled HTTP side.
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
        retry = RetryPolicy(
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            sleep=sleep,
            rng=rng,
        )
        self.session = RegistrySession(
            credentials=credentials,
            insecure_registries=insecure_registries,
            transport=transport,
            clock=clock,
            retry=retry,
            timeout=timeout,
            max_connections=max_connections,
            token_cache=token_cache,
            user_agent=user_agent,
            proxy=proxy,
            verify=verify,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def base_url(self, registry: str) -> str:
        """`scheme://endpoint` for a registry name as it appears in image references."""
        return self.session.base_url(registry)

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
            data = read_capped(response, MAX_MANIFEST_BYTES, where=where, registry=ref.registry)
            return data, response.headers

        def broken(attempts: Attempts, exc: httpx.TransportError) -> None:
            self.session.retry.give_up_or_wait(
                attempts, f"{where} from {ref.registry}", exc=exc, response=None, cancel=cancel
            )

        data, headers = self.session.get_and_read(
            ref,
            f"/v2/{ref.repository}/manifests/{reference}",
            headers={"Accept": ACCEPT_MANIFESTS},
            what=where,
            read=read,
            broken=broken,
            cancel=cancel,
        )
        return served_manifest(
            data,
            ref=ref,
            reference=reference,
            content_type=headers.get("Content-Type"),
            announced_digest=headers.get("Docker-Content-Digest"),
            where=where,
        )

    def resolve(
        self,
        ref: ImageRef,
        *,
        platform: Platform = DEFAULT_PLATFORM,
        cancel: threading.Event | None = None,
    ) -> ResolvedImage:
        """Tag or digest → the platform's image manifest, its config and layers."""
        top = self.get_manifest(ref, cancel=cancel)
        return resolve_manifest(
            ref,
            top,
            platform=platform,
            fetch=lambda digest: self.get_manifest(ref, digest, cancel=cancel),
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

        def broken(attempts: Attempts, exc: httpx.TransportError) -> None:
            if attempts.used >= attempts.limit:
                raise TemporaryError(
                    f"{where}: connection broke mid-transfer on all {attempts.limit}"
                    f" attempts ({type(exc).__name__}: {exc})"
                ) from exc
            retry = self.session.retry
            retry.pause(retry.backoff(attempts.used), cancel)

        return self.session.get_and_read(
            ref,
            f"/v2/{ref.repository}/blobs/{descriptor.digest}",
            headers={"Accept-Encoding": "identity"},
            what=where,
            read=read,
            broken=broken,
            cancel=cancel,
        )

    def manifest_digest(self, ref: ImageRef, *, cancel: threading.Event | None = None) -> str:
        """The digest `ref`'s tag points to now: one manifest HEAD (see `_manifest_digest`)."""
        return _manifest_digest(self, ref, cancel=cancel)

    def list_tags(
        self,
        ref: ImageRef,
        *,
        page_size: int = TAGS_PAGE_SIZE,
        max_pages: int = MAX_TAG_PAGES,
        cancel: threading.Event | None = None,
    ) -> tuple[str, ...]:
        """Every tag of `ref`'s repository (its tag or digest is not looked at), as listed.

        Follows the pagination of the distribution spec (see the module
        docstring) with the client's auth and retries. A 404 (no such
        repository) is `NotFoundError`; a body that is not a tag list, a next
        link to another origin or back to a page already read, or more than
        `max_pages` pages is a `RegistryError`.
        """
        return _list_tags(
            self.session,
            ref,
            base=httpx.URL(self.base_url(ref.registry)),
            first=f"/v2/{ref.repository}/tags/list?n={page_size}",
            max_pages=max_pages,
            cancel=cancel,
        )


def _manifest_digest(
    client: RegistryClient, ref: ImageRef, *, cancel: threading.Event | None
) -> str:
    """One manifest HEAD with the pull's Accept.

    The answer's `Docker-Content-Digest` is the digest of what a GET would
    serve (the index of a multi-platform image, else the manifest), which is
    what a snapshot records. A registry that leaves the header out is asked
    with a GET, whose bytes are hashed instead.
    """
    where = f"manifest {ref.name}:{ref.reference}"
    headers = client.session.head(
        ref,
        f"/v2/{ref.repository}/manifests/{ref.reference}",
        headers={"Accept": ACCEPT_MANIFESTS},
        what=where,
        cancel=cancel,
    )
    announced: str | None = headers.get("Docker-Content-Digest")
    if announced is None:
        return client.get_manifest(ref, cancel=cancel).digest
    try:
        parse_digest(announced)
    except InvalidDigestError as exc:
        raise ManifestError(
            f"{where}: {ref.registry} answered Docker-Content-Digest {announced[:80]!r},"
            " which is not a digest",
            registry=ref.registry,
            repository=ref.repository,
        ) from exc
    return announced

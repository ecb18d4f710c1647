"""A read-only OCI distribution API over the cached images: the daemon's `/v2/` mirror.

Why a mirror: the local backend's caches are only worth their disk if pods
use them. containerd (and docker, skopeo, crane) can use any registry as a
mirror, so serving the cached manifests and blobs over the distribution API
lets a node pull from the cache and fall back upstream for everything else,
with no change to the pod specs.

What is served (distribution-spec "pull" only):

* `GET /v2/` → 200 `{}`; every answer carries
  `Docker-Distribution-API-Version: registry/2.0`.
* `GET|HEAD /v2/<name>/manifests/<tag|digest>`: the stored bytes exactly as the
  upstream registry served them, so `Docker-Content-Digest` is the upstream
  digest. A tag of a multi-platform image answers the upstream *index*, so a
  node of another platform picks its own manifest, gets a 404 here, and
  fetches it upstream (containerd tries the next host for every request); a
  client whose Accept header excludes indexes gets the cached platform
  manifest instead, as registries do.
* `GET|HEAD /v2/<name>/blobs/<digest>`, streamed, with single byte ranges
  (206 and `Content-Range`; 416 for a malformed or unsatisfiable range).
* `GET /v2/<name>/tags/list`: the tags cached for that repository.
* Anything else under `/v2/` is 404 with an OCI error body
  (`{"errors":[{"code":"MANIFEST_UNKNOWN",…}]}`) so clients go upstream;
  writes are 405.

Which repository a path names: a cached image `registry/repository` is
reachable as `repository` (`library/nginx`, plus `nginx` for Docker Hub's
official images) and as `registry/repository`. containerd sends
`?ns=<registry>` when it uses a mirror; that keeps only that registry's
images (`ns=docker.io` for Docker Hub). Without `ns`, a path held by several
registries prefers docker.io (what a bare name means to docker), then the
cache `matching` would choose.

Safety: only the current snapshots of Ready caches are served, and of
Updating ones, whose snapshot is still the previous one: a rebuild keeps
serving the old content until the new snapshot is Ready (why that is safe:
`mirrorview`). A blob is served only under a repository whose cached image
references it.
The mirror never serves arbitrary store contents, so a digest learnt from one
repository cannot read another's layers through it.

Integrity: nothing is served whose digest does not match. A manifest is
hashed before it is answered (404 if it does not match, so the client goes
upstream). A blob is hashed while it streams, and its last chunk is sent only
once the whole blob (for a range: the bytes before and after it too) hashed
to its digest; on a mismatch the answer stops short of its Content-Length,
so the client sees a broken response and retries elsewhere (containerd tries
the next host). Either way the provider's `report_damage` moves the blob
aside and fails the caches that use it, which the next pass rebuilds.

Lookups (`gitsync_cache_lookups_total`, `gitsync_startup_seconds`) count
each pull once, whatever client pulls. The rules follow what the clients were
seen to send (containerd 1.6 with hosts.toml, skopeo):

* A hit is a `GET` that serves a cached *image* manifest. A `HEAD` that
  succeeds and a `GET` of an index are steps of a pull, not pulls: containerd
  resolves with `HEAD` and then `GET`s by digest, skopeo `GET`s the tag, and
  both `GET` the platform manifest after an index.
* A miss is a manifest request answered 404, except a `GET` by digest that
  follows, within a minute, a `HEAD` that missed in the same repository:
  containerd resolves upstream after that `HEAD`, then still tries the mirror
  first for every manifest and blob it fetches.

* A partial is such a 404 where a serving cache holds the repository under
  another tag (or digest): the cloud's name-only match. It is reported with
  the cache `matching`'s rank would pick (entries are sorted best first).

A hit sets the cache's last matched time, at most once a minute per cache, to
spare the database; a partial served nothing, so it does not.

Observations (`on_observation`, for `gitsync suggest`): each counted lookup is
also a `Lookup` with the canonical image reference (the served entry's, for a
hit; the requested one, its registry from `?ns=` or the holding cache, Docker
Hub by default, for a partial or a miss), the cache, the image's bytes (a
hit's blobs, summed once per view) and a start group: a client address's
lookups less than 30 s apart are one burst, `<client>#<n>` with n the
burst's first lookup in Unix milliseconds (unique across restarts). A hit
carries its serve seconds; a partial or a miss none, because the pull
happened upstream and the mirror cannot see how long it took.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.matching import rank_key
from gitsync.model import ObservedCache
from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.providers.local.blobs import (
    BlobNotFoundError,
    InvalidDigestError,
    parse_digest,
)
from gitsync.providers.local.mirrorblobs import (
    _echo,
    _FileChunks,
    _gone,
    _parse_range,
    _RangeError,
    _verify_manifest,
)
from gitsync.providers.local.mirrorview import Entry, MirrorView
from gitsync.providers.local.oci import INDEX_TYPES
from gitsync.providers.local.provider import LocalProvider

__all__ = ["LookupCallback", "Mirror", "MirrorReply", "ObservationCallback"]

log = logging.getLogger("gitsync.providers.local.mirror")

LookupCallback = Callable[[str | None, str, float], None]
"""Called once per lookup with (cache name or None on a miss, hit|partial|miss, seconds)."""
ObservationCallback = Callable[[Lookup], None]
"""Called once per lookup with its record; must be quick (a `BatchRecorder.record`)."""

API_VERSION_HEADER: Final = "Docker-Distribution-API-Version"
API_VERSION: Final = "registry/2.0"
_JSON: Final = "application/json"
_ALLOW: Final = "GET, HEAD"
_DOCKER_HUB: Final = imageref.DEFAULT_REGISTRY
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_NAME_RE: Final = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_NAME_MAX: Final = 255
DEFAULT_CHUNK_BYTES: Final = 1 << 20
DEFAULT_TOUCH_INTERVAL_SECONDS: Final = 60.0
# containerd GETs by digest within seconds of the HEAD that missed; a minute is ample.
_HEAD_MISS_WINDOW_SECONDS: Final = 60.0
_HEAD_MISS_MEMORY: Final = 4096  # repositories remembered before expired ones are dropped
# Kubelet pulls a pod's images one after another: a client's lookups this close are one start.
BURST_GAP_SECONDS: Final = 30.0
_BURST_MEMORY: Final = 4096  # clients remembered; the least recently seen is forgotten first


@dataclass(frozen=True, slots=True)
class MirrorReply:
    """An answer in the shape `gitsync.server.HttpReply` expects (status, headers, body)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


class _NotFoundError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Mirror:
    """The `/v2/` API over `provider`'s serving caches; `handle` is the server's registry hook.

    Thread-safe: the server calls `handle` from one thread per connection.
    One class, longer than the house's ~250 lines, because routing and the
    once-per-pull counting of lookups share one lock and one reading of the
    view; the view itself is in `mirrorview`, the verified bytes in `mirrorblobs`.
    """

    def __init__(
        self,
        provider: LocalProvider,
        *,
        on_lookup: LookupCallback | None = None,
        on_observation: ObservationCallback | None = None,
        clock: Callable[[], float] = time.time,
        touch_interval_seconds: float = DEFAULT_TOUCH_INTERVAL_SECONDS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._provider = provider
        self._on_lookup = on_lookup
        self._on_observation = on_observation
        self._clock = clock
        self._touch_interval = touch_interval_seconds
        self._chunk = chunk_bytes
        self._lock = threading.Lock()
        self._view = MirrorView(provider)
        self._touched: dict[str, float] = {}
        self._head_misses: dict[tuple[str | None, str], float] = {}
        self._bursts: dict[str, tuple[str, float]] = {}  # client -> (group, last lookup)

    # ------------------------------------------------------------------ entry

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], *, client: str = ""
    ) -> MirrorReply:
        """Answer one request; `target` has its query string, `client` is the peer's address."""
        started = time.monotonic()
        if method not in ("GET", "HEAD"):
            return _not_allowed(method)
        head = method == "HEAD"
        url = urlsplit(target)
        if url.path in ("/v2", "/v2/"):
            return _reply(HTTPStatus.OK, b"{}", content_type=_JSON, head=head)
        ns = _namespace(url.query)
        rest = url.path.removeprefix("/v2/") if url.path.startswith("/v2/") else ""
        # <name>/manifests/<reference>, <name>/blobs/<digest>: a reference has no '/'.
        parent, _, reference = rest.rpartition("/")
        name, _, kind = parent.rpartition("/")
        if name and kind == "manifests":
            return self._manifest(
                head=head,
                name=name,
                reference=unquote(reference),
                ns=ns,
                headers=headers,
                started=started,
                client=client,
            )
        if name and kind == "blobs":
            return self._blob(
                head=head, name=name, digest=unquote(reference), ns=ns, headers=headers
            )
        if name and kind == "tags" and reference == "list":
            return self._tags(head=head, name=name, ns=ns)
        return _error(
            HTTPStatus.NOT_FOUND,
            "UNSUPPORTED",
            f"{_echo(url.path)}: this read-only mirror serves /v2/<name>/manifests/<reference>,"
            " /v2/<name>/blobs/<digest> and /v2/<name>/tags/list",
            head=head,
        )

    # -------------------------------------------------------------- manifests

    def _manifest(
        self,
        *,
        head: bool,
        name: str,
        reference: str,
        ns: str | None,
        headers: Mapping[str, str],
        started: float,
        client: str,
    ) -> MirrorReply:
        # Entries that hold the repository but not this reference make a 404 a partial.
        held: list[Entry] = []
        try:
            held = self._entries(name, ns)
            entry, digest, media_type = _resolve(held, reference, headers.get("accept"))
            held = []  # resolved: a failure from here on is the cache's, not a partial
            data = self._provider.blobs.read_bytes(digest)
            _verify_manifest(data, digest, self._provider)
        except _NotFoundError as exc:
            self._miss(
                head=head,
                name=name,
                ns=ns,
                reference=reference,
                started=started,
                held=held,
                client=client,
            )
            return _error(HTTPStatus.NOT_FOUND, exc.code, str(exc), head=head)
        except BlobNotFoundError:
            self._miss(
                head=head,
                name=name,
                ns=ns,
                reference=reference,
                started=started,
                held=held,
                client=client,
            )
            return _error(
                HTTPStatus.NOT_FOUND,
                "MANIFEST_UNKNOWN",
                f"manifest {reference} of {name} left the store (a cache changed); pull upstream",
                head=head,
            )
        reply = _reply(
            HTTPStatus.OK,
            data,
            content_type=media_type,
            head=head,
            extra={"Docker-Content-Digest": digest, "ETag": f'"{digest}"'},
        )
        if not head and media_type not in INDEX_TYPES:
            self._lookup(
                LookupResult.HIT,
                entry.cache,
                started,
                image=entry.reference,
                image_bytes=entry.image_bytes,
                client=client,
            )
        return reply

    # ------------------------------------------------------------------ blobs

    def _blob(
        self, *, head: bool, name: str, digest: str, ns: str | None, headers: Mapping[str, str]
    ) -> MirrorReply:
        # Blob fetches are parts of a pull, not lookups: the manifest GET counted it.
        try:
            size = self._blob_size(name, digest, ns)
        except _NotFoundError as exc:
            return _error(HTTPStatus.NOT_FOUND, exc.code, str(exc), head=head)
        answer = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
            API_VERSION_HEADER: API_VERSION,
        }
        status: int = HTTPStatus.OK
        offset, length = 0, size
        wanted = headers.get("range")
        try:
            parsed = _parse_range(wanted, size) if wanted is not None else None
        except _RangeError as exc:
            refused = _error(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "RANGE_INVALID", str(exc), head=head
            )
            return MirrorReply(
                status=refused.status,
                headers={**refused.headers, "Content-Range": f"bytes */{size}"},
                body=refused.body,
            )
        if parsed is not None:
            status = HTTPStatus.PARTIAL_CONTENT
            offset, length = parsed
            answer["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
        answer["Content-Length"] = str(length)
        if head:
            return MirrorReply(status=status, headers=answer)
        try:
            fh = self._provider.blobs.open(digest)
        except BlobNotFoundError:
            return _error(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", _gone(digest))
        body = _FileChunks(
            fh,
            digest=digest,
            offset=offset,
            length=length,
            chunk=self._chunk,
            on_damage=self._provider.report_damage,
        )
        return MirrorReply(status=status, headers=answer, body=body)

    def _blob_size(self, name: str, digest: str, ns: str | None) -> int:
        """The size of a blob `name` may serve; _NotFoundError for anything else."""
        try:
            parse_digest(digest)
        except InvalidDigestError as exc:
            raise _NotFoundError(
                "BLOB_UNKNOWN",
                f"{_echo(digest)!r} is not a digest (sha256:<64 hex> or sha512:<128 hex>)",
            ) from exc
        if not any(digest in entry.blobs for entry in self._entries(name, ns)):
            raise _NotFoundError(
                "BLOB_UNKNOWN", f"blob {digest} is not part of a cached image of {name}"
            )
        try:
            return self._provider.blobs.size(digest)
        except BlobNotFoundError as exc:
            raise _NotFoundError("BLOB_UNKNOWN", _gone(digest)) from exc

    # ------------------------------------------------------------------- tags

    def _tags(self, *, head: bool, name: str, ns: str | None) -> MirrorReply:
        try:
            entries = self._entries(name, ns)
        except _NotFoundError as exc:
            return _error(HTTPStatus.NOT_FOUND, exc.code, str(exc), head=head)
        tags = sorted({e.tag for e in entries if e.tag is not None})
        body = json.dumps({"name": name, "tags": tags}).encode()
        return _reply(HTTPStatus.OK, body, content_type=_JSON, head=head)

    # ----------------------------------------------------------------- lookup

    def _entries(self, name: str, ns: str | None) -> list[Entry]:
        """Cached images reachable as `name` (narrowed to registry `ns`), best first."""
        if len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
            raise _NotFoundError("NAME_INVALID", f"{name!r} is not a repository name")
        entries = list(self._view.current().by_path.get(name, ()))
        if ns is not None:
            wanted = _DOCKER_HUB if ns.lower() in _HUB_ALIASES else ns.lower()
            entries = [e for e in entries if e.registry.lower() == wanted]
        if not entries:
            where = f" from {ns}" if ns else ""
            raise _NotFoundError("NAME_UNKNOWN", f"no Ready or Updating cache holds {name}{where}")
        entries.sort(key=lambda e: (e.registry != _DOCKER_HUB, e.registry, *rank_key(e.cache)))
        return entries

    def _miss(
        self,
        *,
        head: bool,
        name: str,
        ns: str | None,
        reference: str,
        started: float,
        held: list[Entry],
        client: str,
    ) -> None:
        """Count a miss (or partial) once per pull, though containerd asks twice (module doc)."""
        key = (ns, name)
        now = time.monotonic()
        with self._lock:
            if head:
                if len(self._head_misses) >= _HEAD_MISS_MEMORY:
                    cutoff = now - _HEAD_MISS_WINDOW_SECONDS
                    self._head_misses = {k: t for k, t in self._head_misses.items() if t > cutoff}
                self._head_misses[key] = now
                counted = True
            else:
                last = self._head_misses.get(key)
                follows_head = last is not None and now - last < _HEAD_MISS_WINDOW_SECONDS
                counted = not (":" in reference and follows_head)
        if not counted:
            return
        best = held[0] if held else None
        self._lookup(
            LookupResult.PARTIAL if best is not None else LookupResult.MISS,
            best.cache if best is not None else None,
            started,
            image=_requested(name, reference, ns, best),
            image_bytes=None,
            client=client,
        )

    def _lookup(
        self,
        result: LookupResult,
        cache: ObservedCache | None,
        started: float,
        *,
        image: str | None,
        image_bytes: int | None,
        client: str,
    ) -> None:
        seconds = time.monotonic() - started
        now = self._clock()
        if result is LookupResult.HIT and cache is not None:
            with self._lock:
                last = self._touched.get(cache.cache_id)
                due = last is None or now - last >= self._touch_interval
                if due:
                    self._touched[cache.cache_id] = now
            if due:
                self._provider.state.touch_matched(cache.cache_id, datetime.fromtimestamp(now, UTC))
        if self._on_lookup is not None:
            self._on_lookup(cache.name if cache is not None else None, result.value, seconds)
        if self._on_observation is not None and image is not None:
            self._on_observation(
                Lookup(
                    image=image,
                    result=result,
                    at=now,
                    source=LookupSource.MIRROR,
                    cache=cache.name if cache is not None else None,
                    # A 404's seconds are the mirror's, not the upstream pull's: unknown.
                    seconds=seconds if result is LookupResult.HIT else None,
                    group=self._burst(client, now),
                    image_bytes=image_bytes,
                )
            )

    def _burst(self, client: str, now: float) -> str | None:
        """The start group of a lookup by `client` at `now` (see the module docstring)."""
        if not client:
            return None
        with self._lock:
            known = self._bursts.pop(client, None)  # re-inserted last: least recent first
            if known is not None and 0 <= now - known[1] < BURST_GAP_SECONDS:
                group = known[0]
            else:
                group = f"{client}#{int(now * 1000)}"
            self._bursts[client] = (group, now)
            if len(self._bursts) > _BURST_MEMORY:
                del self._bursts[next(iter(self._bursts))]
        return group


# ---------------------------------------------------------------------- helpers


def _resolve(entries: list[Entry], reference: str, accept: str | None) -> tuple[Entry, str, str]:
    """The entry, digest and media type that answer `reference` (a tag or a digest)."""
    if ":" in reference:  # a digest: content-addressed, any entry holding it will do
        for entry in entries:
            if reference == entry.index_digest:
                return entry, reference, entry.top_media_type
            if reference == entry.manifest_digest:
                return entry, reference, entry.manifest_media_type
        other = any(reference in entry.children for entry in entries)
        detail = (
            "another platform's manifest of a cached index; the cache holds "
            + ", ".join(sorted({str(e.manifest_digest) for e in entries if e.children}))
            if other
            else "not cached"
        )
        raise _NotFoundError("MANIFEST_UNKNOWN", f"manifest {reference}: {detail}")
    for entry in entries:
        if entry.tag == reference:
            if entry.index_digest is not None and not _accepts_index(accept, entry):
                return entry, entry.manifest_digest, entry.manifest_media_type
            return entry, entry.top_digest, entry.top_media_type
    raise _NotFoundError("MANIFEST_UNKNOWN", f"tag {reference} is not cached")


def _accepts_index(accept: str | None, entry: Entry) -> bool:
    """False only when the client lists types, not the index's but the manifest's."""
    if not accept:
        return True
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "*/*" in types or entry.top_media_type in types:
        return True
    return entry.manifest_media_type not in types


def _requested(name: str, reference: str, ns: str | None, held: Entry | None) -> str | None:
    """The canonical reference a partial or a miss asked for; None if it is not one."""
    if held is not None:
        prefix = f"{held.registry}/{held.repository}"
    elif ns is not None:
        prefix = f"{_DOCKER_HUB if ns.lower() in _HUB_ALIASES else ns}/{name}"
    else:
        prefix = name  # a registry host in the path stays one; else Docker Hub
    separator = "@" if ":" in reference else ":"
    try:
        return imageref.normalize(f"{prefix}{separator}{reference}")
    except ImageRefError:
        return None


def _namespace(query: str) -> str | None:
    values = parse_qs(query).get("ns")
    return values[0] if values and values[0] else None


def _reply(
    status: int,
    body: bytes,
    *,
    content_type: str,
    head: bool = False,
    extra: Mapping[str, str] | None = None,
) -> MirrorReply:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        API_VERSION_HEADER: API_VERSION,
        **(extra or {}),
    }
    return MirrorReply(status=status, headers=headers, body=b"" if head else body)


def _error(status: int, code: str, message: str, *, head: bool = False) -> MirrorReply:
    """An OCI error answer; the Content-Length is the body's even for HEAD, as for GET."""
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": {}}]}).encode()
    return _reply(status, body, content_type=_JSON, head=head)


def _not_allowed(method: str) -> MirrorReply:
    reply = _error(
        HTTPStatus.METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        f"{_echo(method)} is not supported: this mirror is read-only (GET and HEAD)",
    )
    return MirrorReply(
        status=reply.status, headers={**reply.headers, "Allow": _ALLOW}, body=reply.body
    )

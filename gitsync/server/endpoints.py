"""The listener's routes: what each path answers, by calling the daemon's hooks.

Why here and not in the transport: these are the endpoints of
docs/architecture.md (metrics, health, status, match, webhooks, the /v2/
mirror), and they change with the daemon; the transport's defences do not.
Webhook requests are judged by the pure functions of `gitsync.webhooks`; this
module only counts, triggers and answers what they decide.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, Protocol
from urllib.parse import urlsplit

from gitsync.server.transport import RequestHandler, Route, ThreadedServer
from gitsync.webhooks import HOOKS, Judge, NotAJsonObject, header_map, json_object

logger = logging.getLogger("gitsync.server")  # the listener's one logger; see transport

_READ_METHODS: Final = ("GET", "HEAD")


class HttpReply(Protocol):
    """What a registry hook returns; any object with these attributes will do.

    `body` is bytes, or an iterable of byte chunks to stream (a blob). Without
    a Content-Length header a streamed body ends by closing the connection.
    For HEAD the server sends the headers only, so a hook can answer HEAD with
    an empty body and an explicit Content-Length.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes | Iterable[bytes]: ...


class RegistryHook(Protocol):
    """The `/v2/` hook: (method, request target with query string, headers), and the peer.

    `client` is the peer's IP address, so a registry mirror can tell which
    node's pulls belong together.
    """

    def __call__(
        self, method: str, target: str, headers: Mapping[str, str], /, *, client: str
    ) -> HttpReply: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """A ready-made `HttpReply` for hooks that need no type of their own."""

    status: int
    body: bytes | Iterable[bytes] = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerHooks:
    """The daemon's side: callables the server invokes. They must be thread-safe.

    `healthy` and `ready` may return a bool or `(ok, reason)`; /healthz and /readyz
    show the reason when they answer 503. `healthy` must not wait for the daemon's
    work (a probe that hangs is a probe that fails for the wrong reason).
    `registry` gets (method, request target with query string, headers with
    lower-case names; repeated headers joined by ", ") for GET/HEAD under /v2,
    and the peer's address as the keyword `client`.
    """

    metrics: Callable[[], tuple[bytes, str]]
    healthy: Callable[[], bool | tuple[bool, str]]
    ready: Callable[[], bool | tuple[bool, str]]
    status: Callable[[], Mapping[str, object]]
    trigger: Callable[[str], None]
    match: Callable[[dict[str, object]], tuple[int, Mapping[str, object]]] | None = None
    registry: RegistryHook | None = None
    suggestions: Callable[[], Mapping[str, object]] | None = None


class _Handler(RequestHandler):
    server: EndpointServer

    def route(self, path: str) -> Route | None:
        hooks, secret = self.server.hooks, self.server.webhook_secret
        routes: dict[str, Route] = {
            "/metrics": (_READ_METHODS, self._metrics),
            "/healthz": (_READ_METHODS, self._healthz),
            "/readyz": (_READ_METHODS, self._readyz),
            "/api/v1/status": (_READ_METHODS, self._status),
        }
        suggestions = hooks.suggestions
        if suggestions is not None:
            routes["/api/v1/suggestions"] = (
                _READ_METHODS,
                lambda: self.send_json(HTTPStatus.OK, suggestions()),
            )
        match = hooks.match
        if match is not None:
            routes["/api/v1/match"] = (("POST",), lambda: self._match(match))
        if secret is not None:
            for hook, judge in HOOKS.items():
                routes[f"/hooks/{hook}"] = (
                    ("POST",),
                    functools.partial(self._webhook, hook, judge, secret),
                )
        route = routes.get(path)
        registry = hooks.registry
        if route is None and registry is not None and (path == "/v2" or path.startswith("/v2/")):
            route = (_READ_METHODS, lambda: self._registry(registry))
        return route

    # --- plain endpoints ------------------------------------------------------------------

    def _metrics(self) -> None:
        body, content_type = self.server.hooks.metrics()
        self.send_bytes(HTTPStatus.OK, body, content_type)

    def _healthz(self) -> None:
        self._probe(self.server.hooks.healthy, check="health", failing="unhealthy")

    def _readyz(self) -> None:
        self._probe(self.server.hooks.ready, check="readiness", failing="not ready")

    def _probe(self, hook: Callable[[], object], *, check: str, failing: str) -> None:
        """200 `ok`, or 503 with the hook's reason; a hook that raises counts as failing."""
        try:
            answer = hook()
        except Exception:
            logger.exception("%s check raised", check)
            answer = (False, f"the {check} check failed; see the log")
        passed, reason = answer if isinstance(answer, tuple) else (answer, "")
        if passed:
            self.send_text(HTTPStatus.OK, "ok\n")
        else:
            text = f"{failing}: {reason}\n" if reason else f"{failing}\n"
            self.send_text(HTTPStatus.SERVICE_UNAVAILABLE, text)

    def _status(self) -> None:
        self.send_json(HTTPStatus.OK, self.server.hooks.status())

    def _match(
        self, match: Callable[[dict[str, object]], tuple[int, Mapping[str, object]]]
    ) -> None:
        body = self.read_body()
        try:
            document = json_object(body, content_type=self.headers.get("Content-Type"))
        except NotAJsonObject as exc:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        status, answer = match(document)
        if not 200 <= status <= 599:
            raise ValueError(f"match hook returned HTTP status {status}; expected 200-599")
        self.send_json(status, answer)

    # --- webhooks -------------------------------------------------------------------------

    def _webhook(self, hook: str, judge: Judge, secret: bytes) -> None:
        """Read the body, let `judge` decide, then trigger, count, log and answer.

        Every outcome is counted (and a pass queued) before the answer goes
        out, so a client that has its answer can read the count from /metrics
        at once. A refused body is counted by the transport's `on_refusal`.
        """
        body = self.read_body(on_refusal=lambda: self.server.count(hook, "refused"))
        verdict = judge(
            header_map(self.headers.items()), body, secret=secret, tracked=self.server.refs
        )
        if verdict.trigger is not None:
            self.server.hooks.trigger(verdict.trigger)
        self.server.count(hook, verdict.outcome)
        if verdict.outcome == "unauthorized":
            logger.debug("webhook %s from %s: authentication failed", hook, self.client_address[0])
        elif verdict.outcome == "triggered":
            logger.debug("webhook %s: %s, pass triggered", hook, verdict.detail)
        elif verdict.outcome == "ignored":
            logger.debug("webhook %s: ignored: %s", hook, verdict.detail)
        self.send_json(verdict.status, verdict.answer)

    # --- registry mirror ------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    def _registry(self, hook: RegistryHook) -> None:
        reply = hook(
            self.command, self.path, self._request_headers(), client=str(self.client_address[0])
        )
        # Framing is ours to decide: hop-by-hop headers from a hook would corrupt it.
        headers = [
            (name, value)
            for name, value in reply.headers.items()
            if name.lower() not in ("connection", "transfer-encoding", "keep-alive")
        ]
        declared = next((v for n, v in headers if n.lower() == "content-length"), None)
        body = reply.body
        if isinstance(body, bytes | bytearray | memoryview):
            chunks: Iterable[bytes] = (bytes(body),)
            if declared is None:
                headers.append(("Content-Length", str(len(body))))
        else:
            chunks = body
            if declared is None:
                self.force_close = True  # the end of the body is the end of the connection
        try:
            self.start_response(reply.status, headers)
            if self.command == "HEAD":
                return
            sent = 0
            for chunk in chunks:
                self.write_chunk(chunk)
                sent += len(chunk)
            if declared is not None and str(sent) != declared.strip():
                path = urlsplit(self.path).path
                logger.error("registry reply for %s sent %d of %s bytes", path, sent, declared)
                self.close_connection = True
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()


class EndpointServer(ThreadedServer):
    """The transport serving these routes, with the daemon's hooks and the webhook tallies."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        hooks: ServerHooks,
        refs: frozenset[str],
        webhook_secret: bytes | None,
        max_body_bytes: int,
        request_timeout: float,
        max_connections: int,
    ) -> None:
        self.hooks = hooks
        self.refs = refs
        self.webhook_secret = webhook_secret
        self._counts: Counter[tuple[str, str]] = Counter()  # webhook outcomes, under the lock
        self._counts_lock = threading.Lock()
        super().__init__(
            address,
            _Handler,
            max_body_bytes=max_body_bytes,
            request_timeout=request_timeout,
            max_connections=max_connections,
        )

    def count(self, hook: str, outcome: str) -> None:
        with self._counts_lock:
            self._counts[hook, outcome] += 1

    def counts_snapshot(self) -> dict[tuple[str, str], int]:
        with self._counts_lock:
            return dict(self._counts)

"""The one HTTP listener of `gitsync run`: metrics, health, webhooks, the API, a registry hook.

Why the standard library: the daemon's HTTP needs are small (a few fixed
routes, small bodies) and its other work is synchronous, so a
`ThreadingHTTPServer` fits with no extra dependency and no event loop.

Why the server holds no business logic: it only parses HTTP, checks
signatures and limits, and calls the callables in `ServerHooks` that the
daemon wires in (render metrics, report health, queue a trigger, answer a
match, serve the registry mirror). It can thus be tested with plain fakes and
sits beside the reconciler in the layering without importing it.

Why these defences, each of them cheap:
- One thread per connection, so a slow client pins only its own thread and
  `/healthz` stays fast. A connection cap bounds the threads a flood can start.
- A deadline per request (not only a timeout per read): a client that sends
  its headers one byte at a time ("slowloris") is cut off after
  `request_timeout_seconds` in all, however steadily it trickles.
- Body limits are checked on `Content-Length` before reading; bodies without
  a length (chunked) are refused with 411, so nothing is ever buffered past
  the limit.
- Webhook secrets are compared with `hmac.compare_digest`. Neither the secret
  nor any signature is logged or echoed; requests are logged at debug level
  only, with method, path (without query string) and status, never headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Final, Literal, NoReturn, Protocol
from urllib.parse import parse_qs, urlsplit

from gitsync.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20  # docs/architecture.md: bodies over 1 MiB answer 413
DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 128
# After refusing a body we read and drop a bounded amount of it before closing, so the
# client's kernel does not answer our response with a reset and the client sees the status.
_LINGER_MAX_BYTES: Final = 256 * 1024
_LINGER_MAX_SECONDS: Final = 1.0
_ECHO_LIMIT: Final = 200  # refs and event names echoed back are cut to this length
_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"
_READ_METHODS: Final = ("GET", "HEAD")
_SIGNATURE_HELP: Final = "expected sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>"


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
    lower-case names; repeated headers joined by ", ") for GET/HEAD under /v2.
    """

    metrics: Callable[[], tuple[bytes, str]]
    healthy: Callable[[], bool | tuple[bool, str]]
    ready: Callable[[], bool | tuple[bool, str]]
    status: Callable[[], Mapping[str, object]]
    trigger: Callable[[str], None]
    match: Callable[[dict[str, object]], tuple[int, Mapping[str, object]]] | None = None
    registry: Callable[[str, str, Mapping[str, str]], HttpReply] | None = None


def tracked_refs(branch: str) -> frozenset[str]:
    """The git refs whose pushes concern a daemon that follows `branch` (a branch or a tag)."""
    if branch.startswith("refs/"):
        return frozenset({branch})
    return frozenset({f"refs/heads/{branch}", f"refs/tags/{branch}"})


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check a `sha256=<hex>` HMAC header against `body`, in constant time."""
    if header is None:
        return False
    scheme, sep, given = header.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
    # Header values arrive decoded as latin-1, so this encoding restores the bytes sent.
    return hmac.compare_digest(expected, given.strip().lower().encode("latin-1", "replace"))


def _token_matches(secret: bytes, header: str | None) -> bool:
    """Compare a plain token header with the secret in constant time.

    Both sides are hashed first, so not even the secret's length shows in the timing.
    """
    given = (header or "").encode("latin-1", "replace")
    return hmac.compare_digest(hashlib.sha256(secret).digest(), hashlib.sha256(given).digest())


def _echo(text: object) -> str:
    """A client-supplied value cut short, for messages (JSON encoding escapes the rest)."""
    value = str(text)
    return value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "…"


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline, so trickling bytes cannot extend a request."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def arm(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _BodyRefused(Exception):
    """The request body was refused and the answer is already sent."""


class _ClientGone(Exception):
    """Writing the answer failed: the client closed the connection or stopped reading."""


_Framing = tuple[Literal["none", "length", "chunked", "invalid"], int]


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "gitsync"
    sys_version = ""  # do not advertise the Python version
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs
    # add tens of milliseconds to every keep-alive response.
    disable_nagle_algorithm = True

    _reader: _DeadlineReader
    _body_consumed = False
    _force_close = False
    _responded = False

    # --- connection and request lifecycle -------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader that enforces the request deadline
        self._reader = _DeadlineReader(self.connection, self.server.request_timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        # The deadline covers waiting for the request line on a kept-alive connection,
        # the headers and the body; the stock handler turns TimeoutError into a close.
        self._reader.arm(self.server.request_timeout)
        self._body_consumed = False
        self._force_close = False
        self._responded = False
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        kind, length = self._framing()
        if kind == "length" and length <= self.server.max_body_bytes:
            return super().handle_expect_100()
        return True  # do not invite a body we will refuse; the final status follows

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _routes(self) -> dict[str, tuple[tuple[str, ...], Callable[[], None]]]:
        hooks = self.server.hooks
        routes: dict[str, tuple[tuple[str, ...], Callable[[], None]]] = {
            "/metrics": (_READ_METHODS, self._metrics),
            "/healthz": (_READ_METHODS, self._healthz),
            "/readyz": (_READ_METHODS, self._readyz),
            "/api/v1/status": (_READ_METHODS, self._status),
        }
        match, secret = hooks.match, self.server.webhook_secret
        if match is not None:
            routes["/api/v1/match"] = (("POST",), lambda: self._match(match))
        if secret is not None:
            routes["/hooks/github"] = (("POST",), lambda: self._hook_github(secret))
            routes["/hooks/gitlab"] = (("POST",), lambda: self._hook_gitlab(secret))
            routes["/hooks/generic"] = (("POST",), lambda: self._hook_generic(secret))
        return routes

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        try:
            # A refusal is answered already; what is left of its body is handled below.
            with contextlib.suppress(_BodyRefused):
                self._handle(path)
            if self._force_close:
                self.close_connection = True
            self._drop_unread_body()
        except _ClientGone:
            # Routine: the client hung up or stopped reading. Not the server's error.
            logger.debug("HTTP %s %s: client went away", self.command, path)
            self.close_connection = True

    def _handle(self, path: str) -> None:
        route = self._routes().get(path)
        registry = self.server.hooks.registry
        if route is None and registry is not None and (path == "/v2" or path.startswith("/v2/")):
            route = (_READ_METHODS, lambda: self._registry(registry))
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        elif self.command not in route[0]:
            allow = ", ".join(route[0])
            self._send_json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"method {self.command} is not allowed here; use {allow}"},
                headers=(("Allow", allow),),
            )
        else:
            try:
                route[1]()
            except (_BodyRefused, _ClientGone):
                raise
            except Exception:
                # A failing hook is the daemon's bug or outage; the client learns only that.
                logger.exception("HTTP %s %s failed", self.command, path)
                if self._responded:
                    self._force_close = True
                else:
                    self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    # --- bodies ---------------------------------------------------------------------------

    def _framing(self) -> _Framing:
        """How the request body is delimited, without reading it."""
        if self.headers.get("Transfer-Encoding") is not None:
            # With a Content-Length as well this is a smuggling attempt; either way we refuse.
            has_length = self.headers.get("Content-Length") is not None
            return ("invalid", 0) if has_length else ("chunked", 0)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return ("none", 0)
        if len(set(values)) != 1 or not (values[0].isascii() and values[0].isdigit()):
            return ("invalid", 0)
        return ("length", int(values[0]))

    def _read_body(self, *, on_refusal: Callable[[], None] | None = None) -> bytes:
        """The request body within the limit, or answer 400/411/413 and raise `_BodyRefused`.

        `on_refusal` runs before the answer goes out, so what it counts is
        already counted when the client reads the answer.
        """
        kind, length = self._framing()
        if kind == "none":
            self._body_consumed = True
            return b""
        if kind == "chunked":
            self._refuse(
                HTTPStatus.LENGTH_REQUIRED,
                "a Content-Length header is required; chunked request bodies are not accepted",
                before=on_refusal,
            )
        if kind == "invalid":
            self._refuse(
                HTTPStatus.BAD_REQUEST,
                "send one Content-Length with a decimal byte count and no Transfer-Encoding",
                before=on_refusal,
            )
        limit = self.server.max_body_bytes
        if length > limit:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes is over the limit of {limit} bytes",
                before=on_refusal,
            )
        body = self.rfile.read(length)
        if len(body) != length:
            # The client went away mid-body: nobody is left to answer.
            self._force_close = True
            if on_refusal is not None:
                on_refusal()
            raise _BodyRefused
        self._body_consumed = True
        return body

    def _refuse(
        self, status: HTTPStatus, message: str, *, before: Callable[[], None] | None = None
    ) -> NoReturn:
        if before is not None:
            before()
        self._send_json(status, {"error": message})
        raise _BodyRefused

    def _keep_alive_possible(self) -> bool:
        if self._force_close or self.close_connection:
            return False
        if self._body_consumed:
            return True
        kind, length = self._framing()
        return kind == "none" or (kind == "length" and length <= self.server.max_body_bytes)

    def _drop_unread_body(self) -> None:
        """After answering, skip a body the route did not read, or close the connection."""
        if self._body_consumed:
            return
        kind, length = self._framing()
        if kind == "none":
            return
        if self._keep_alive_possible() and kind == "length":
            if len(self.rfile.read(length)) != length:
                self.close_connection = True
            return
        self.close_connection = True
        self._linger()

    def _linger(self) -> None:
        """Read and drop a bounded part of a refused body, so the client can read our answer.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the answer before the client reads it. So we end our side
        first (the client sees the answer complete), then drain for a moment.
        """
        with contextlib.suppress(OSError):  # the client may be gone already
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
        self._reader.arm(min(_LINGER_MAX_SECONDS, self.server.request_timeout))
        budget = _LINGER_MAX_BYTES
        try:
            while budget > 0:
                chunk = self.rfile.read1(min(budget, 64 * 1024))
                if not chunk:
                    return
                budget -= len(chunk)
        except OSError:  # TimeoutError included: the client is slow or gone, we close anyway
            return

    # --- responses ------------------------------------------------------------------------

    def _start_response(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        # Reads shrink the socket timeout towards the deadline; writes get the full timeout.
        self.connection.settimeout(self.server.request_timeout)
        self._responded = True
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not self._keep_alive_possible():
            self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError as exc:
            raise _ClientGone from exc

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:  # TimeoutError included: a client that stopped reading
            raise _ClientGone from exc

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._start_response(
            status,
            [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
        )
        if self.command != "HEAD" and body:
            self._write(body)

    def _send_json(
        self,
        status: int,
        document: Mapping[str, object],
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, _JSON, [("Cache-Control", "no-store"), *headers])

    def _send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), _TEXT, [("Cache-Control", "no-store")])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stock page echoes the request line back; ours names the status only.
        del message, explain
        self._force_close = True
        if self.request_version == "HTTP/0.9":
            # Nothing parseable arrived; answer with a status line, not a bare HTTP/0.9 body.
            self.request_version = "HTTP/1.1"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_json(code, {"error": phrase})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        del size
        command = getattr(self, "command", None) or "-"
        path = urlsplit(getattr(self, "path", "") or "").path or "-"
        logger.debug("HTTP %s %s -> %s", command, path, int(code) if code != "-" else code)

    def log_message(self, format: str, *args: object) -> None:
        # The stock messages (timeouts, bad request lines) may quote the request; keep it debug.
        logger.debug("HTTP connection from %s: " + format, self.client_address[0], *args)

    # --- plain endpoints ------------------------------------------------------------------

    def _metrics(self) -> None:
        body, content_type = self.server.hooks.metrics()
        self._send(HTTPStatus.OK, body, content_type)

    def _healthz(self) -> None:
        try:
            answer = self.server.hooks.healthy()
        except Exception:
            logger.exception("health check raised")
            answer = (False, "the health check failed; see the log")
        healthy, reason = answer if isinstance(answer, tuple) else (answer, "")
        if healthy:
            self._send_text(HTTPStatus.OK, "ok\n")
        else:
            text = f"unhealthy: {reason}\n" if reason else "unhealthy\n"
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, text)

    def _readyz(self) -> None:
        try:
            answer = self.server.hooks.ready()
        except Exception:
            logger.exception("readiness check raised")
            answer = (False, "the readiness check failed; see the log")
        ready, reason = answer if isinstance(answer, tuple) else (answer, "")
        if ready:
            self._send_text(HTTPStatus.OK, "ok\n")
        else:
            text = f"not ready: {reason}\n" if reason else "not ready\n"
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, text)

    def _status(self) -> None:
        self._send_json(HTTPStatus.OK, self.server.hooks.status())

    def _match(
        self, match: Callable[[dict[str, object]], tuple[int, Mapping[str, object]]]
    ) -> None:
        document = self._json_object(self._read_body())
        status, answer = match(document)
        if not 200 <= status <= 599:
            raise ValueError(f"match hook returned HTTP status {status}; expected 200-599")
        self._send_json(status, answer)

    def _json_object(
        self,
        body: bytes,
        *,
        form_field: str | None = None,
        on_refusal: Callable[[], None] | None = None,
    ) -> dict[str, object]:
        """Parse a JSON object (or a form field holding one), or answer 400 (after `on_refusal`)."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if form_field is not None and content_type == "application/x-www-form-urlencoded":
                fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
                text: str | bytes = fields.get(form_field, [""])[0]
            else:
                text = body
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested input
            if on_refusal is not None:
                on_refusal()
            self._send_json(
                HTTPStatus.BAD_REQUEST, {"error": f"request body is not valid JSON: {_echo(exc)}"}
            )
            raise _BodyRefused from exc
        if not isinstance(document, dict):
            self._refuse(
                HTTPStatus.BAD_REQUEST,
                f"request body must be a JSON object, got {type(document).__name__}",
                before=on_refusal,
            )
        return document

    # --- webhooks -------------------------------------------------------------------------

    def _count(self, hook: str, outcome: str) -> None:
        self.server.count(hook, outcome)

    def _authenticated_body(
        self, hook: str, secret: bytes, check: Callable[[bytes, bytes], bool]
    ) -> bytes:
        """The body, if the signature or token is right; otherwise answer 401 (or 4xx).

        Every outcome is counted before it is answered (here and below), so a
        client that has its answer can read the count from /metrics at once.
        """
        body = self._read_body(on_refusal=lambda: self._count(hook, "refused"))
        if not check(secret, body):
            self._count(hook, "unauthorized")
            logger.debug("webhook %s from %s: authentication failed", hook, self.client_address[0])
            header = {"github": "X-Hub-Signature-256", "gitlab": "X-Gitlab-Token"}.get(
                hook, "X-Signature"
            )
            expected = "the configured secret" if hook == "gitlab" else _SIGNATURE_HELP
            self._refuse(HTTPStatus.UNAUTHORIZED, f"missing or invalid {header} header; {expected}")
        return body

    def _trigger(self, hook: str, why: str) -> None:
        self.server.hooks.trigger(f"webhook:{hook}")
        self._count(hook, "triggered")
        logger.debug("webhook %s: %s, pass triggered", hook, why)
        self._send_json(HTTPStatus.ACCEPTED, {"triggered": True})

    def _ignore(self, hook: str, why: str) -> None:
        self._count(hook, "ignored")
        logger.debug("webhook %s: ignored: %s", hook, why)
        self._send_json(HTTPStatus.ACCEPTED, {"triggered": False, "reason": f"ignored: {why}"})

    def _push(self, hook: str, payload: Mapping[str, object]) -> None:
        ref = payload.get("ref")
        if not isinstance(ref, str):
            self._count(hook, "invalid")
            self._refuse(
                HTTPStatus.BAD_REQUEST, "push event has no string field 'ref' (refs/heads/NAME)"
            )
        if ref in self.server.refs:
            self._trigger(hook, f"push to {ref}")
        else:
            self._ignore(hook, f"push to {_echo(ref)}")

    def _hook_github(self, secret: bytes) -> None:
        body = self._authenticated_body(
            "github",
            secret,
            lambda secret, body: signature_matches(
                secret, body, self.headers.get("X-Hub-Signature-256")
            ),
        )
        event = self.headers.get("X-GitHub-Event")
        if event == "ping":
            self._count("github", "ping")
            self._send_json(HTTPStatus.OK, {"triggered": False, "pong": True})
            return
        if event != "push":
            self._ignore("github", f"event {_echo(event)}")
            return
        self._push("github", self._webhook_json("github", body, form_field="payload"))

    def _hook_gitlab(self, secret: bytes) -> None:
        body = self._authenticated_body(
            "gitlab",
            secret,
            lambda secret, body: _token_matches(secret, self.headers.get("X-Gitlab-Token")),
        )
        payload = self._webhook_json("gitlab", body)
        kind = payload.get("object_kind")
        if kind not in (None, "push", "tag_push"):
            self._ignore("gitlab", f"event {_echo(kind)}")
            return
        self._push("gitlab", payload)

    def _hook_generic(self, secret: bytes) -> None:
        self._authenticated_body(
            "generic",
            secret,
            lambda secret, body: signature_matches(secret, body, self.headers.get("X-Signature")),
        )
        self._trigger("generic", "signed request")

    def _webhook_json(
        self, hook: str, body: bytes, *, form_field: str | None = None
    ) -> dict[str, object]:
        return self._json_object(
            body, form_field=form_field, on_refusal=lambda: self._count(hook, "invalid")
        )

    # --- registry mirror ------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    def _registry(self, hook: Callable[[str, str, Mapping[str, str]], HttpReply]) -> None:
        reply = hook(self.command, self.path, self._request_headers())
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
                self._force_close = True  # the end of the body is the end of the connection
        try:
            self._start_response(reply.status, headers)
            if self.command == "HEAD":
                return
            sent = 0
            for chunk in chunks:
                self._write(chunk)
                sent += len(chunk)
            if declared is not None and str(sent) != declared.strip():
                path = urlsplit(self.path).path
                logger.error("registry reply for %s sent %d of %s bytes", path, sent, declared)
                self.close_connection = True
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()


def _peer(client_address: object) -> str:
    """The client's IP address (the port differs per connection)."""
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return str(client_address)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() shuts connections down itself; see ControlServer.stop
    request_queue_size = 64

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
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        # One address may hold at most half the slots, so a slow or hostile client cannot
        # turn away the kubelet's probes or Prometheus, which come from other addresses.
        self._per_address = max(1, max_connections // 2)
        self._by_address: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self.counts: Counter[tuple[str, str]] = Counter()  # webhook outcomes, under _lock
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on DNS; we never use it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: object,
    ) -> None:
        assert isinstance(request, socket.socket)  # noqa: S101 - a TCP server gets sockets
        peer = _peer(client_address)
        with self._lock:
            crowded = self._by_address[peer] >= self._per_address
            if not crowded:
                self._by_address[peer] += 1
        if crowded:
            self._turn_away(request)
            return
        if not self._slots.acquire(blocking=False):
            self._release_address(peer)
            self._turn_away(request)
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="gitsync-http-connection",
            daemon=True,
        )
        with self._lock:
            self._connections[request] = thread
        thread.start()

    def _turn_away(self, request: socket.socket) -> None:
        """Over the connection cap: a best-effort 503 without blocking the accept loop."""
        logger.debug("HTTP connection refused: %d connections open", len(self._connections))
        try:
            request.setblocking(False)
            request.send(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Retry-After: 1\r\nConnection: close\r\n\r\n"
            )
        except OSError:
            pass  # the client sees a closed connection instead; nothing else we can do
        self.shutdown_request(request)

    def _serve_connection(self, request: socket.socket, client_address: object) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.pop(request, None)
            self._slots.release()
            self._release_address(_peer(client_address))

    def _release_address(self, peer: str) -> None:
        with self._lock:
            self._by_address[peer] -= 1
            if self._by_address[peer] <= 0:
                del self._by_address[peer]

    def handle_error(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: object,
    ) -> None:
        # Resets and broken pipes from clients are routine; handler bugs are logged in _dispatch.
        del request
        logger.debug("HTTP connection from %s ended with an error", client_address, exc_info=True)

    def count(self, hook: str, outcome: str) -> None:
        with self._lock:
            self.counts[hook, outcome] += 1

    def counts_snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.counts)

    def close_connections(self, *, join_seconds: float) -> None:
        """Cut every open connection and wait briefly for their threads."""
        with self._lock:
            connections = list(self._connections.items())
        for sock, _thread in connections:
            with contextlib.suppress(OSError):  # already closed by its own thread
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + join_seconds
        for _sock, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class ControlServer:
    """The daemon's HTTP listener; endpoints in docs/architecture.md.

    `branch` is what the daemon follows: a branch name, a tag name, or a full
    ref. Webhook pushes to other refs are answered 202 and ignored.
    `webhook_secret` None disables /hooks/* (they answer 404).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        hooks: ServerHooks,
        branch: str,
        webhook_secret: bytes | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"listen port {port} is out of range; use 0-65535 (0 picks one)")
        if not branch:
            raise ConfigError("the branch to follow is empty; give a branch, tag or refs/… name")
        if webhook_secret is not None and not webhook_secret:
            raise ConfigError(
                "the webhook secret is empty, so anyone could sign requests; "
                "put a long random string in the --webhook-secret-file"
            )
        if max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        if not request_timeout_seconds > 0:
            raise ConfigError(
                f"request timeout must be more than 0 seconds, got {request_timeout_seconds}"
            )
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        self._host = host
        self._port = port
        self._hooks = hooks
        self._refs = tracked_refs(branch)
        self._secret = webhook_secret
        self._max_body_bytes = max_body_bytes
        self._timeout = request_timeout_seconds
        self._max_connections = max_connections
        self._httpd: _HTTPServer | None = None
        self._stopped: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the listener and serve in a background thread; returns once it accepts."""
        if self._httpd is not None:
            raise RuntimeError("ControlServer.start() called twice")
        try:
            httpd = _HTTPServer(
                (self._host, self._port),
                hooks=self._hooks,
                refs=self._refs,
                webhook_secret=self._secret,
                max_body_bytes=self._max_body_bytes,
                request_timeout=self._timeout,
                max_connections=self._max_connections,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}; "
                "choose a free address with --listen HOST:PORT"
            ) from exc
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="gitsync-http"
        )
        self._thread.daemon = True
        self._thread.start()
        host, port = self.address
        logger.info("HTTP server listening on %s:%d", host, port)

    def stop(self, *, join_seconds: float = 2.0) -> None:
        """Stop accepting, cut open connections, and wait up to `join_seconds` for them."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        self._stopped = httpd  # keeps the webhook counts readable after a stop
        httpd.shutdown()  # returns once serve_forever has left its loop
        httpd.server_close()
        httpd.close_connections(join_seconds=join_seconds)
        thread.join(join_seconds)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when 0 was asked for)."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._httpd.server_name, self._httpd.server_port

    def webhook_counts(self) -> dict[tuple[str, str], int]:
        """Webhook requests by (hook, outcome), for gitsync_webhook_requests_total.

        Outcomes: triggered, ignored, ping, unauthorized, refused (size or
        framing), invalid (bad JSON or no ref). Each is counted before the
        request is answered.
        """
        httpd = self._httpd or self._stopped
        return httpd.counts_snapshot() if httpd is not None else {}

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""The HTTP machinery under the listener: deadlines, body framing, connection slots, replies.

Why apart from the endpoints: these are the defences every route shares, and
none of them knows what a route means. `RequestHandler` serves whatever
`route()` a subclass returns; `ThreadedServer` hands each connection a thread
within its limits. `gitsync.server.endpoints` supplies the routes.

Why these defences, each of them cheap:
- One thread per connection, so a slow client pins only its own thread and
  `/healthz` stays fast. A connection cap bounds the threads a flood can start,
  and one address may hold at most half of it.
- A deadline per request (not only a timeout per read): a client that sends
  its headers one byte at a time ("slowloris") is cut off after
  `request_timeout_seconds` in all, however steadily it trickles.
- Body limits are checked on `Content-Length` before reading; bodies without
  a length (chunked) are refused with 411, so nothing is ever buffered past
  the limit.
- Requests are logged at debug level only, with method, path (without query
  string) and status, never headers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# One logger for the whole listener: its name is in every JSON log line, and
# operators filter on it.
logger = logging.getLogger("gitsync.server")

# After refusing a body we read and drop a bounded amount of it before closing, so the
# client's kernel does not answer our response with a reset and the client sees the status.
_LINGER_MAX_BYTES: Final = 256 * 1024
_LINGER_MAX_SECONDS: Final = 1.0
_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"

Framing = tuple[Literal["none", "length", "chunked", "invalid"], int]
# The methods a path allows, and what answers them.
Route = tuple[tuple[str, ...], Callable[[], None]]


def body_framing(headers: Message) -> Framing:
    """How a request body is delimited, from its headers, without reading it."""
    if headers.get("Transfer-Encoding") is not None:
        # With a Content-Length as well this is a smuggling attempt; either way we refuse.
        has_length = headers.get("Content-Length") is not None
        return ("invalid", 0) if has_length else ("chunked", 0)
    values = headers.get_all("Content-Length") or []
    if not values:
        return ("none", 0)
    if len(set(values)) != 1 or not (values[0].isascii() and values[0].isdigit()):
        return ("invalid", 0)
    return ("length", int(values[0]))


def body_refusal(framing: Framing, *, limit: int) -> tuple[HTTPStatus, str] | None:
    """The status and message that refuse a body so framed, or None to read it."""
    kind, length = framing
    if kind == "chunked":
        return (
            HTTPStatus.LENGTH_REQUIRED,
            "a Content-Length header is required; chunked request bodies are not accepted",
        )
    if kind == "invalid":
        return (
            HTTPStatus.BAD_REQUEST,
            "send one Content-Length with a decimal byte count and no Transfer-Encoding",
        )
    if length > limit:
        return (
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"request body of {length} bytes is over the limit of {limit} bytes",
        )
    return None


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


class RequestHandler(BaseHTTPRequestHandler):
    """One connection's requests: deadline, framing, routing by `route()`, safe replies.

    Subclasses return a `Route` from `route(path)` (None answers 404) and
    answer with `send_json`, `send_text`, `send_bytes`, or `start_response`
    plus `write_chunk` to stream. A route that raises is logged and answered
    500 (or its connection closed, if its answer had started).
    """

    server: ThreadedServer
    server_version = "gitsync"
    sys_version = ""  # do not advertise the Python version
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs
    # add tens of milliseconds to every keep-alive response.
    disable_nagle_algorithm = True

    force_close = False  # set when the connection must end after this answer
    _reader: _DeadlineReader
    _body_consumed = False
    _responded = False

    def route(self, path: str) -> Route | None:
        """What answers `path`; subclasses say. None answers 404."""
        del path
        return None

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
        self.force_close = False
        self._responded = False
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        kind, length = body_framing(self.headers)
        if kind == "length" and length <= self.server.max_body_bytes:
            return super().handle_expect_100()
        return True  # do not invite a body we will refuse; the final status follows

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        try:
            # A refusal is answered already; what is left of its body is handled below.
            with contextlib.suppress(_BodyRefused):
                self._handle(path)
            if self.force_close:
                self.close_connection = True
            self._drop_unread_body()
        except _ClientGone:
            # Routine: the client hung up or stopped reading. Not the server's error.
            logger.debug("HTTP %s %s: client went away", self.command, path)
            self.close_connection = True

    # Every method is routed; a path's route says which it allows (405 otherwise).
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _handle(self, path: str) -> None:
        route = self.route(path)
        if route is None:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        elif self.command not in route[0]:
            allow = ", ".join(route[0])
            self.send_json(
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
                    self.force_close = True
                else:
                    self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    # --- bodies ---------------------------------------------------------------------------

    def read_body(self, *, on_refusal: Callable[[], None] | None = None) -> bytes:
        """The request body within the limit; or answer 400/411/413 and end the route.

        `on_refusal` runs before the answer goes out, so what it counts is
        already counted when the client reads the answer. A client that goes
        away mid-body gets no answer; `on_refusal` runs all the same.
        """
        framing = body_framing(self.headers)
        refusal = body_refusal(framing, limit=self.server.max_body_bytes)
        if refusal is not None:
            if on_refusal is not None:
                on_refusal()
            self.send_json(refusal[0], {"error": refusal[1]})
            raise _BodyRefused
        kind, length = framing
        if kind == "none":
            self._body_consumed = True
            return b""
        body = self.rfile.read(length)
        if len(body) != length:
            # The client went away mid-body: nobody is left to answer.
            self.force_close = True
            if on_refusal is not None:
                on_refusal()
            raise _BodyRefused
        self._body_consumed = True
        return body

    def _keep_alive_possible(self) -> bool:
        if self.force_close or self.close_connection:
            return False
        if self._body_consumed:
            return True
        kind, length = body_framing(self.headers)
        return kind == "none" or (kind == "length" and length <= self.server.max_body_bytes)

    def _drop_unread_body(self) -> None:
        """After answering, skip a body the route did not read, or close the connection."""
        if self._body_consumed:
            return
        kind, length = body_framing(self.headers)
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

    def start_response(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """Send the status line and headers; `Connection: close` is added when due."""
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

    def write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:  # TimeoutError included: a client that stopped reading
            raise _ClientGone from exc

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.start_response(
            status,
            [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
        )
        if self.command != "HEAD" and body:
            self.write_chunk(body)

    def send_json(
        self,
        status: int,
        document: Mapping[str, object],
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_bytes(status, body, _JSON, [("Cache-Control", "no-store"), *headers])

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode("utf-8"), _TEXT, [("Cache-Control", "no-store")])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stock page echoes the request line back; ours names the status only.
        del message, explain
        self.force_close = True
        if self.request_version == "HTTP/0.9":
            # Nothing parseable arrived; answer with a status line, not a bare HTTP/0.9 body.
            self.request_version = "HTTP/1.1"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.send_json(code, {"error": phrase})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        del size
        command = getattr(self, "command", None) or "-"
        path = urlsplit(getattr(self, "path", "") or "").path or "-"
        logger.debug("HTTP %s %s -> %s", command, path, int(code) if code != "-" else code)

    def log_message(self, format: str, *args: object) -> None:
        # The stock messages (timeouts, bad request lines) may quote the request; keep it debug.
        logger.debug("HTTP connection from %s: " + format, self.client_address[0], *args)


def _peer(client_address: object) -> str:
    """The client's IP address (the port differs per connection)."""
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return str(client_address)


class ThreadedServer(ThreadingHTTPServer):
    """A thread per connection, within a cap overall and half of it per client address."""

    daemon_threads = True
    block_on_close = False  # stop() shuts connections down itself; see close_connections
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[RequestHandler],
        *,
        max_body_bytes: int,
        request_timeout: float,
        max_connections: int,
    ) -> None:
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
        super().__init__(address, handler)

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
        # Resets and broken pipes from clients are routine; handler bugs are logged in _handle.
        del request
        logger.debug("HTTP connection from %s ended with an error", client_address, exc_info=True)

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

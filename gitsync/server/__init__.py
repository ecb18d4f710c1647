"""The one HTTP listener of `gitsync run`: metrics, health, webhooks, the API, a registry hook.

Why the standard library: the daemon's HTTP needs are small (a few fixed
routes, small bodies) and its other work is synchronous, so a
`ThreadingHTTPServer` fits with no extra dependency and no event loop.

Why the server holds no business logic: it only parses HTTP, enforces
limits, and calls the callables in `ServerHooks` that the daemon wires in
(render metrics, report health, queue a trigger, answer a match, serve the
registry mirror); what a webhook means is decided by the pure functions of
`gitsync.webhooks`. It can thus be tested with plain fakes and sits beside
the reconciler in the layering without importing it.

The package in three parts:
- `transport`: deadline reader, body framing, per-address connection slots,
  the threading server, replies (the defences; see its docstring);
- `endpoints`: the routes and what each answers, by calling `ServerHooks`;
- here: `ControlServer`, which checks the settings and starts and stops it.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from gitsync.errors import ConfigError
from gitsync.server.endpoints import EndpointServer, HttpReply, RegistryHook, Reply, ServerHooks
from gitsync.webhooks import tracked_refs

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT_SECONDS",
    "ControlServer",
    "HttpReply",
    "RegistryHook",
    "Reply",
    "ServerHooks",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20  # docs/architecture.md: bodies over 1 MiB answer 413
DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 128


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
        self._httpd: EndpointServer | None = None
        self._stopped: EndpointServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the listener and serve in a background thread; returns once it accepts."""
        if self._httpd is not None:
            raise RuntimeError("ControlServer.start() called twice")
        try:
            httpd = EndpointServer(
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

        Outcomes are `gitsync.webhooks.OUTCOMES`: triggered, ignored, ping,
        unauthorized, refused (size or framing), invalid (bad JSON or no ref).
        Each is counted before the request is answered.
        """
        httpd = self._httpd or self._stopped
        return httpd.counts_snapshot() if httpd is not None else {}

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

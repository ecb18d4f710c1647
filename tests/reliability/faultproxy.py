"""Fault injection and the process harness of the reliability suite.

Why a proxy of our own: the faults gitsync must survive are the ones a real
network and real dependencies produce (a 503 from an overloaded registry, a
connection reset, a body cut off mid-way, a server that stops answering for
ten seconds), and they must reach gitsync's real HTTP clients (httpx in the
registry client, the Tencent SDK's requests) unchanged. A proxy on loopback in
front of the real registry or the TKE emulator does that with no hook inside
gitsync. Its choices come from a seeded RNG, so a failing run can be replayed.

`FaultProxy` speaks just enough HTTP/1.1 to forward requests byte for byte and
to know where a response body starts (so "truncated" really means a valid
status line and headers announcing N bytes, then fewer than N, then a reset).
Faults, drawn per request with probability `rate`:

* ``5xx``: answer 500/502/503/504 without forwarding;
* ``reset``: reset the connection (RST) without forwarding;
* ``reset-after``: forward the request (the upstream does the work), then
  reset instead of answering: the ambiguous failure a create must survive;
* ``truncate``: forward, send the headers and part of the body, then reset;
* ``stall``: hold the request for `stall_seconds`, then forward it.

Kinds are dealt from a shuffled deck, so every kind shows up within every
`len(kinds)` faults; `max_stalls` caps the (slow) stalls. A short test can also
deal "cards" first: a kind for the first request a predicate picks (a reset
right after a create reached the API), so that every kind surely happens.
`fail_paths()` answers 503 to every request for some paths (an image that stays
broken), `refuse()` resets every connection at once, like a host that is down,
and `throttle()` caps body bytes per second so that pulls last long enough to be
interrupted. Every request is recorded with the fault it got.

The rest of this module is the harness the tests share: a smart-HTTP git
server (`git http-backend`, optionally behind a Basic-auth token), a work tree
with a bare remote, and `gitsync run` as a child process with helpers to read
its status and metrics.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx

FAULT_KINDS = ("5xx", "reset", "reset-after", "truncate", "stall")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)
_CHUNK = 64 * 1024


class _Reset(Exception):
    """Internal: reset the client connection now."""


@dataclass(frozen=True, slots=True)
class ProxyRecord:
    """One request the proxy saw, and the fault (if any) it got."""

    at: float  # time.monotonic()
    method: str
    path: str
    fault: str | None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request as fault cards see it: its number at this proxy, method, path, headers."""

    index: int
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names

    def action(self) -> str:
        """The TKE API action (X-TC-Action), or ""."""
        return self.headers.get("x-tc-action", "")


@dataclass(slots=True)
class FaultSettings:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    stall_seconds: float = 10.0
    max_stalls: int | None = None
    bytes_per_second: float | None = None
    refuse: bool = False
    failing_paths: tuple[str, ...] = ()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (HOST:PORT) that injects faults."""

    def __init__(self, upstream: str, *, seed: int = 0, upstream_timeout: float = 60.0) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.upstream_timeout = upstream_timeout
        self.settings = FaultSettings()
        self.records: list[ProxyRecord] = []
        self.stalls = 0
        self._rng = random.Random(seed)
        self._deck: list[str] = []
        self._cards: list[tuple[str, Callable[[Incoming], bool]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled requests
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -------------------------------------------------------------------

    def inject(
        self,
        *,
        rate: float,
        kinds: Sequence[str] = FAULT_KINDS,
        stall_seconds: float = 10.0,
        max_stalls: int | None = None,
        first: Sequence[tuple[str, Callable[[Incoming], bool]]] = (),
    ) -> None:
        """From now on, fault this share of requests with kinds dealt from `kinds`.

        `first` are (kind, which request) cards dealt before any random fault, each
        to the first request it matches: a short test can make sure that a rare
        kind (a stall) or a precise case (a reset after a create) happens.
        """
        unknown = (set(kinds) | {kind for kind, _ in first}) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be some of {FAULT_KINDS}, got {list(kinds)}")
        with self._lock:
            self.settings.rate = rate
            self.settings.kinds = tuple(kinds)
            self.settings.stall_seconds = stall_seconds
            self.settings.max_stalls = max_stalls
            self._deck = []
            self._cards = list(first)

    def fail_paths(self, *substrings: str) -> None:
        """Answer 503 to every request whose path contains one of these (a broken image)."""
        with self._lock:
            self.settings.failing_paths = substrings

    def heal(self) -> None:
        """No more faults (requests already stalled finish their stall)."""
        with self._lock:
            self.settings.rate = 0.0
            self.settings.refuse = False
            self.settings.failing_paths = ()

    def refuse(self, refused: bool = True) -> None:
        """Reset every connection as soon as it is accepted (a host that is down)."""
        with self._lock:
            self.settings.refuse = refused

    def throttle(self, bytes_per_second: float | None) -> None:
        """Send response bodies at most this fast, per connection (None: unthrottled)."""
        with self._lock:
            self.settings.bytes_per_second = bytes_per_second

    # -- reading what happened -----------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[ProxyRecord]:
        with self._lock:
            return list(self.records[mark:])

    def faults(self) -> Counter[str]:
        with self._lock:
            return Counter(r.fault for r in self.records if r.fault is not None)

    # -- used by the handler -------------------------------------------------------

    def _decide(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[str | None, FaultSettings, int]:
        with self._lock:
            settings = dataclasses.replace(self.settings)
            incoming = Incoming(len(self.records), method, path, headers)
            card = next((c for c in self._cards if c[1](incoming)), None)
            fault: str | None = None
            if settings.refuse:
                fault = "refused"
            elif any(part in path for part in settings.failing_paths):
                fault = "5xx-path"
            elif card is not None:
                self._cards.remove(card)
                fault = card[0]
            elif settings.rate > 0 and self._rng.random() < settings.rate:
                fault = self._deal(settings)
            if fault == "stall":
                self.stalls += 1
            self.records.append(ProxyRecord(time.monotonic(), method, path, fault))
            return fault, settings, self._rng.choice((500, 502, 503, 504))

    def _deal(self, settings: FaultSettings) -> str:
        for _ in range(2 * len(settings.kinds) + 1):
            if not self._deck:
                self._deck = list(settings.kinds)
                self._rng.shuffle(self._deck)
            kind = self._deck.pop()
            if kind == "stall" and (
                settings.max_stalls is not None and self.stalls >= settings.max_stalls
            ):
                continue
            return kind
        return "5xx"  # only stalls were asked for and their budget is spent

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Resets and broken pipes are the point of this server; nothing to report."""


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's name
        """Quiet: the records are the log."""

    def handle(self) -> None:
        try:
            super().handle()
        except _Reset:
            self.close_connection = True
            _reset(self.connection)
        except (OSError, http.client.HTTPException):
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.proxy
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault, settings, status = proxy._decide(self.command, self.path, headers)
        if fault in ("refused", "reset"):
            raise _Reset
        body = self._read_body()
        if fault in ("5xx", "5xx-path"):
            payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by faultproxy"}]}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "stall":
            proxy._pause(settings.stall_seconds)
        self._forward(body, fault=fault, settings=settings)

    def _forward(self, body: bytes, *, fault: str | None, settings: FaultSettings) -> None:
        proxy = self.proxy
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=proxy.upstream_timeout)
        try:
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            }
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            if fault == "reset-after":
                response.read()
                raise _Reset
            self._relay(response, fault=fault, settings=settings)
        finally:
            upstream.close()

    def _relay(
        self, response: http.client.HTTPResponse, *, fault: str | None, settings: FaultSettings
    ) -> None:
        no_body = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        declared = response.getheader("Content-Length")
        if declared is None and not no_body:
            data = response.read()
            chunks: Iterator[bytes] = iter([data])
            total = len(data)
        else:
            total = int(declared or 0)
            chunks = iter(lambda: response.read(_CHUNK), b"")
        if fault == "truncate" and (no_body or total == 0):
            raise _Reset  # nothing to cut short: a reset is the nearest fault
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if declared is not None or not no_body:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        if no_body:
            return
        limit = total // 2 if fault == "truncate" else total
        self._send_body(chunks, limit=limit, rate=settings.bytes_per_second)
        if fault == "truncate":
            self.wfile.flush()
            raise _Reset

    def _send_body(self, chunks: Iterator[bytes], *, limit: int, rate: float | None) -> None:
        """Up to `limit` bytes of `chunks`, at most `rate` bytes per second."""
        sent = 0
        started = time.monotonic()
        for chunk in chunks:
            piece = chunk[: max(0, limit - sent)]
            if piece:
                self.wfile.write(piece)
                sent += len(piece)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if sent >= limit:
                break


# ------------------------------------------------------------------------ git


AUTHOR = ("-c", "user.name=reliability", "-c", "user.email=reliability@example.invalid")


def git(*args: str, cwd: Path, timeout: float = 30.0) -> str:
    done = subprocess.run(
        ["git", *AUTHOR, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


class GitRepo:
    """A bare remote (`remote`) and a work tree (`work`) that commits and pushes to it."""

    def __init__(self, root: Path, *, name: str = "remote.git") -> None:
        self.root = root
        self.remote = root / name
        self.work = root / "work"
        root.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", "main", str(self.remote), cwd=root)
        git("init", "-q", "-b", "main", str(self.work), cwd=root)

    def write(self, relative: str, text: str) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> str:
        """Commit everything and push it to the remote's main; returns the commit id."""
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", str(self.remote), "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


def cache_doc(
    name: str, images: Sequence[str], *, size: int | None = None, pull_secrets: Sequence[str] = ()
) -> str:
    """One ImageCache document (with the leading `---`, so files can hold several)."""
    lines = [
        "---",
        "apiVersion: eks.cloud.tencent.com/v1",
        "kind: ImageCache",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  images:",
        *(f"    - {image}" for image in images),
    ]
    if size is not None:
        lines.append(f"  imageCacheSize: {size}")
    if pull_secrets:
        lines.append("  imagePullSecrets:")
        lines.extend(f"    - {secret}" for secret in pull_secrets)
    return "\n".join(lines) + "\n"


class GitHttpServer:
    """Smart-HTTP git (`git http-backend`) over the bare repositories under `root`.

    With `token`, every request must carry HTTP Basic auth whose password is the
    token (any user name), as GitHub and GitLab ask; others get 401 with a
    challenge, which makes git ask its askpass helper. `seen_tokens` counts the
    passwords offered, so a test can prove the token was really used.
    """

    def __init__(self, root: Path, *, token: str | None = None) -> None:
        self.root = root
        self.token = token
        self.seen_tokens: Counter[str] = Counter()
        self.requests = 0
        handler = type("Handler", (_GitHandler,), {"server_owner": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"http://{self.host}/{name}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _GitHandler(BaseHTTPRequestHandler):
    server_owner: GitHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's name
        """Quiet."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _authorized(self) -> bool:
        owner = self.server_owner
        if owner.token is None:
            return True
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        owner.seen_tokens[password] += 1
        return hmac.compare_digest(password, owner.token)

    def _serve(self) -> None:
        owner = self.server_owner
        owner.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self._authorized():
            message = b"authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(owner.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "git",
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run(
            ["git", "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


# ------------------------------------------------------------------ the daemon


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a gitsync child: no GITSYNC_* or proxy variables leak in."""
    dropped = ("GITSYNC_", "TENCENTCLOUD_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k.lower() not in proxies
    }
    env.update(extra or {})
    return env


def gitsync(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one gitsync command to completion (never a hang: `timeout` kills it)."""
    return subprocess.run(
        [sys.executable, "-m", "gitsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        check=False,
        cwd=cwd,
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → {'name{labels}': value} (labels as printed)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class DaemonProcess:
    """`gitsync run` as a child process in its own session (so a kill takes git along)."""

    args: list[str]
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    wrapper: list[str] = field(default_factory=list)  # e.g. prlimit: it execs the daemon

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        command = [
            *self.wrapper,
            sys.executable, "-m", "gitsync", "run",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(self.env),
                start_new_session=True,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until /healthz answers (the first pass starts right after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.02)
        raise AssertionError(f"gitsync run did not listen within {timeout} s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL the daemon and every process of its session (git children too)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gitsync run did not stop on SIGTERM: {self.tail()}") from None

    def close(self) -> None:
        self.kill()

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"gitsync run exited with {self.process.returncode}: {self.tail()}"
            )

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        return httpx.get(self.base + path, timeout=timeout)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=10, **kwargs)

    def status(self) -> dict[str, Any]:
        answer = self.get("/api/v1/status")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics").text)

    def wait_for(
        self, what: str, check: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(httpx.TransportError):
                status = self.status()
                if check(status):
                    return status
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}: "
            f"{json.dumps(status)[:3000]}\nlog: {self.tail()}"
        )

    def hook(self, secret: str, ref: str = "refs/heads/main") -> int:
        body = json.dumps({"ref": ref}).encode()
        answer = httpx.post(
            self.base + "/hooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "push",
                "X-Hub-Signature-256": sign(secret, body),
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        return answer.status_code


def caches_by_name(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status["caches"]}


def converged(
    status: Mapping[str, Any], revision: str, desired: Mapping[str, Sequence[str]]
) -> bool:
    """The status shows `revision` applied and exactly the `desired` caches, all Ready."""
    caches = status["caches"]
    if status.get("appliedRevision") != revision:
        return False
    if sorted(c["name"] for c in caches) != sorted(desired):
        return False
    return all(
        c["status"] == "Ready" and list(c["images"]) == list(desired[c["name"]]) for c in caches
    )


def converged_to(
    revision: str, desired: Mapping[str, Sequence[str]]
) -> Callable[[Mapping[str, Any]], bool]:
    """A `wait_for` check for `converged` with these arguments, bound now."""
    wanted = {name: list(images) for name, images in desired.items()}
    return lambda status: converged(status, revision, wanted)

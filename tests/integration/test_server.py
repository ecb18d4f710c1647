"""ControlServer over real sockets on 127.0.0.1, with the daemon's side played by a recorder.

The recorder is not under test: it stands for what `gitsync run` wires in (a
TriggerQueue.put, a metrics registry, health flags). Everything the server
decides (routes, status codes, signatures, limits, slow clients) is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from gitsync.errors import ConfigError
from gitsync.server import ControlServer, HttpReply, Reply, ServerHooks

SECRET = b"s3cr3t-webhook-key-do-not-leak"
SANITY_SECONDS = 10.0  # generous bound: only a hang or a pinned server exceeds it


@dataclass
class FakeDaemon:
    """Plays the daemon: records triggers and match requests, answers health from flags."""

    healthy: bool | tuple[bool, str] = True
    ready: bool | tuple[bool, str] = True
    fail_status: bool = False
    triggers: list[str] = field(default_factory=list)
    matches: list[dict[str, object]] = field(default_factory=list)
    registry_calls: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)
    stream_closed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.scrapes = Counter("gitsync_test_scrapes", "scrapes seen", registry=self.registry)

    def hooks(self, *, with_match: bool = True, with_registry: bool = False) -> ServerHooks:
        return ServerHooks(
            metrics=self.metrics,
            healthy=lambda: self.healthy,
            ready=lambda: self.ready,
            status=self.status,
            trigger=self.trigger,
            match=self.match if with_match else None,
            registry=self.serve_registry if with_registry else None,
        )

    def metrics(self) -> tuple[bytes, str]:
        self.scrapes.inc()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def status(self) -> dict[str, object]:
        if self.fail_status:
            raise RuntimeError("status store unavailable")
        return {"provider": "local", "appliedRevision": "3f9c", "lastError": None, "caches": []}

    def trigger(self, reason: str) -> None:
        with self.lock:
            self.triggers.append(reason)

    def match(self, request: dict[str, object]) -> tuple[int, dict[str, object]]:
        self.matches.append(request)
        if not request.get("images"):
            return 400, {"error": "images must be a non-empty list"}
        return 200, {"result": "miss", "cache": None, "candidates": []}

    def serve_registry(
        self, method: str, target: str, headers: Mapping[str, str], /, *, client: str
    ) -> HttpReply:
        self.registry_calls.append((method, target, dict(headers), client))
        if target.startswith("/v2/endless/"):
            return Reply(200, self.endless(), {"Content-Type": "x/blob"})
        if target.startswith("/v2/stream/"):
            return Reply(200, iter([b"abc", b"def", b"gh"]), {"Content-Type": "x/blob"})
        if target.startswith("/v2/sized/"):
            return Reply(200, iter([b"12345"]), {"Content-Length": "5"})
        return Reply(
            200,
            b"{}",
            {"Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"},
        )

    def endless(self) -> Iterator[bytes]:
        try:
            while True:
                yield b"z" * 65536
        finally:
            self.stream_closed.set()


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def push(ref: str) -> bytes:
    return json.dumps({"ref": ref, "after": "0" * 40, "repository": {"name": "caches"}}).encode()


@contextlib.contextmanager
def running(daemon: FakeDaemon, **kwargs: object) -> Iterator[ControlServer]:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "hooks": daemon.hooks(),
        "branch": "main",
        "webhook_secret": SECRET,
    }
    options.update(kwargs)
    server = ControlServer(**options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_for(server: ControlServer) -> httpx.Client:
    host, port = server.address
    return httpx.Client(base_url=f"http://{host}:{port}", timeout=SANITY_SECONDS, trust_env=False)


def raw_connect(server: ControlServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=SANITY_SECONDS)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[FakeDaemon, ControlServer]]:
    daemon = FakeDaemon()
    with running(daemon, hooks=daemon.hooks(with_registry=True)) as server:
        yield daemon, server


@pytest.fixture
def daemon(shared: tuple[FakeDaemon, ControlServer]) -> FakeDaemon:
    daemon = shared[0]
    daemon.healthy, daemon.ready, daemon.fail_status = True, True, False
    daemon.triggers.clear()
    daemon.matches.clear()
    daemon.registry_calls.clear()
    daemon.stream_closed.clear()
    return daemon


@pytest.fixture(scope="module")
def client(shared: tuple[FakeDaemon, ControlServer]) -> Iterator[httpx.Client]:
    # One kept-alive client for the module: it also shows that every answer keeps the
    # connection in step for the next request (httpx builds an SSL context per client, 50 ms).
    with client_for(shared[1]) as http:
        yield http


# --- health, metrics, status ----------------------------------------------------------------


def test_healthz_answers_ok_and_503_when_unhealthy(
    daemon: FakeDaemon, client: httpx.Client
) -> None:
    ok = client.get("/healthz")
    assert (ok.status_code, ok.text) == (200, "ok\n")

    daemon.healthy = False
    assert client.get("/healthz").status_code == 503


def test_healthz_reports_the_reason_when_unhealthy(
    daemon: FakeDaemon, client: httpx.Client
) -> None:
    daemon.healthy = (False, "the reconcile loop has made no progress for 301.0 s")
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.text == "unhealthy: the reconcile loop has made no progress for 301.0 s\n"

    daemon.healthy = (True, "waiting for the next trigger")
    ok = client.get("/healthz")
    assert (ok.status_code, ok.text) == (200, "ok\n")


def test_healthz_is_503_when_the_check_raises() -> None:
    def broken() -> bool:
        raise RuntimeError("loop thread died")

    hooks = dataclasses.replace(FakeDaemon().hooks(), healthy=broken)
    with running(FakeDaemon(), hooks=hooks) as server, client_for(server) as client:
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert "the health check failed; see the log" in answer.text
        assert client.get("/metrics").status_code == 200  # the server itself is fine


def test_readyz_reports_the_reason_when_not_ready(daemon: FakeDaemon, client: httpx.Client) -> None:
    assert client.get("/readyz").status_code == 200

    daemon.ready = (False, "no revision applied yet")
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert "no revision applied yet" in answer.text

    daemon.ready = False
    assert client.get("/readyz").status_code == 503

    daemon.ready = (True, "")
    assert client.get("/readyz").status_code == 200


def test_head_answers_headers_without_a_body(client: httpx.Client) -> None:
    answer = client.head("/healthz")

    assert answer.status_code == 200
    assert answer.headers["content-length"] == "3"
    assert answer.content == b""
    assert client.get("/healthz").text == "ok\n"  # the kept-alive connection is still in step


def test_metrics_are_the_hooks_exposition(client: httpx.Client) -> None:
    answer = client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# TYPE gitsync_test_scrapes_total counter" in answer.text
    second = client.get("/metrics").text
    # Rendered at each scrape by the hook, not cached by the server.
    assert second != answer.text


def test_status_is_json(client: httpx.Client) -> None:
    answer = client.get("/api/v1/status")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "provider": "local",
        "appliedRevision": "3f9c",
        "lastError": None,
        "caches": [],
    }


def test_a_failing_hook_gives_500_and_the_server_keeps_serving(
    daemon: FakeDaemon, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.fail_status = True
    with caplog.at_level(logging.ERROR, logger="gitsync.server"):
        answer = client.get("/api/v1/status")

    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error"}
    assert "status store unavailable" not in answer.text  # internals stay in the log
    assert "/api/v1/status" in caplog.text
    assert client.get("/healthz").status_code == 200


# --- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/nope", "/healthz/", "/api/v1", "/hooks/bitbucket"])
def test_unknown_paths_are_404(client: httpx.Client, path: str) -> None:
    answer = client.get(path)

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/api/v1/status", "GET, HEAD"),
        ("GET", "/api/v1/match", "POST"),
        ("GET", "/hooks/github", "POST"),
        ("PATCH", "/hooks/generic", "POST"),
        ("POST", "/v2/", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    answer = client.request(method, path, content=b"{}")

    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert client.get("/healthz").status_code == 200  # the unread body did not desync the stream


def test_a_bad_request_line_is_400_and_not_echoed(shared: tuple[FakeDaemon, ControlServer]) -> None:
    with raw_connect(shared[1]) as sock:
        sock.sendall(b"GARBAGE-WITH-SECRET-LOOKING-TEXT\r\n\r\n")
        answer = read_response(sock)

    assert answer.startswith(b"HTTP/1.1 400")
    assert b"GARBAGE" not in answer


# --- match --------------------------------------------------------------------------------------


def test_match_passes_json_through_both_ways(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = client.post("/api/v1/match", json={"images": ["nginx:1.27.2"], "cache": "web"})

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["result"] == "miss"
    assert daemon.matches == [{"images": ["nginx:1.27.2"], "cache": "web"}]


def test_match_status_comes_from_the_hook(client: httpx.Client) -> None:
    answer = client.post("/api/v1/match", json={"images": []})

    assert answer.status_code == 400
    assert answer.json() == {"error": "images must be a non-empty list"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'["nginx"]', "must be a JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_match_refuses_bad_json_with_a_message(
    daemon: FakeDaemon, client: httpx.Client, body: bytes, message: str
) -> None:
    answer = client.post("/api/v1/match", content=body)

    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert daemon.matches == []


# --- GitHub -------------------------------------------------------------------------------------


def github(
    client: httpx.Client,
    body: bytes,
    *,
    event: str = "push",
    signature: str | None = None,
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {"X-GitHub-Event": event, "Content-Type": content_type}
    headers["X-Hub-Signature-256"] = sign(body) if signature is None else signature
    return client.post("/hooks/github", content=body, headers=headers)


def test_github_push_to_the_branch_triggers(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = github(client, push("refs/heads/main"))

    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"triggered": True}
    assert daemon.triggers == ["webhook:github"]


def test_github_form_encoded_push_triggers(daemon: FakeDaemon, client: httpx.Client) -> None:
    body = urlencode({"payload": push("refs/heads/main").decode()}).encode()

    answer = github(client, body, content_type="application/x-www-form-urlencoded")

    assert answer.status_code == 202
    assert daemon.triggers == ["webhook:github"]


def test_github_push_to_another_branch_is_ignored(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = github(client, push("refs/heads/feature"))

    assert answer.status_code == 202
    assert answer.json() == {"triggered": False, "reason": "ignored: push to refs/heads/feature"}
    assert daemon.triggers == []


def test_github_push_of_a_tag_named_like_the_branch_is_not_a_branch_push(
    daemon: FakeDaemon, client: httpx.Client
) -> None:
    # The shared server follows the branch "main"; refs/tags/main would be the tag "main".
    assert github(client, push("refs/tags/v1.0")).json()["triggered"] is False
    assert github(client, push("refs/heads/main-2")).json()["triggered"] is False
    assert daemon.triggers == []


def test_github_tag_push_triggers_when_following_that_tag() -> None:
    daemon = FakeDaemon()
    with running(daemon, branch="v1.0") as server, client_for(server) as client:
        assert github(client, push("refs/tags/v1.0")).json() == {"triggered": True}
        assert github(client, push("refs/tags/v1.1")).json()["triggered"] is False
    assert daemon.triggers == ["webhook:github"]


def test_github_ping_answers_200_without_a_trigger(
    daemon: FakeDaemon, client: httpx.Client
) -> None:
    answer = github(client, b'{"zen": "Keep it logically awesome.", "hook_id": 1}', event="ping")

    assert answer.status_code == 200
    assert answer.json()["triggered"] is False
    assert daemon.triggers == []


def test_github_other_events_are_ignored(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = github(client, b'{"action": "opened"}', event="pull_request")

    assert answer.status_code == 202
    assert answer.json() == {"triggered": False, "reason": "ignored: event pull_request"}
    assert daemon.triggers == []


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "sha256=",
        "sha256=" + "0" * 64,
        "sha1=" + hmac.new(SECRET, push("refs/heads/main"), hashlib.sha1).hexdigest(),
        sign(push("refs/heads/main"), b"another-secret"),
        sign(push("refs/heads/main"))[:-1],
        hmac.new(SECRET, push("refs/heads/main"), hashlib.sha256).hexdigest(),  # no scheme
    ],
)
def test_github_bad_signature_is_401_and_triggers_nothing(
    daemon: FakeDaemon, client: httpx.Client, signature: str
) -> None:
    answer = github(client, push("refs/heads/main"), signature=signature)

    assert answer.status_code == 401
    assert "X-Hub-Signature-256" in answer.json()["error"]
    assert daemon.triggers == []


def test_github_missing_signature_is_401(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = client.post(
        "/hooks/github", content=push("refs/heads/main"), headers={"X-GitHub-Event": "push"}
    )

    assert answer.status_code == 401
    assert daemon.triggers == []


def test_github_signature_covers_the_body(daemon: FakeDaemon, client: httpx.Client) -> None:
    # A signature taken from a push to another branch does not carry over to a forged body.
    stolen = sign(push("refs/heads/feature"))

    assert github(client, push("refs/heads/main"), signature=stolen).status_code == 401
    assert daemon.triggers == []


def test_github_ping_needs_a_signature_too(daemon: FakeDaemon, client: httpx.Client) -> None:
    assert github(client, b"{}", event="ping", signature="sha256=00").status_code == 401


def test_github_push_without_a_ref_is_400(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = github(client, b'{"after": "abc"}')

    assert answer.status_code == 400
    assert "ref" in answer.json()["error"]
    assert daemon.triggers == []


# --- GitLab -------------------------------------------------------------------------------------


def gitlab(
    client: httpx.Client, body: bytes, *, token: str | None = SECRET.decode()
) -> httpx.Response:
    headers = {"X-Gitlab-Event": "Push Hook", "Content-Type": "application/json"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return client.post("/hooks/gitlab", content=body, headers=headers)


def gitlab_push(ref: str, kind: str = "push") -> bytes:
    return json.dumps({"object_kind": kind, "ref": ref, "checkout_sha": "0" * 40}).encode()


def test_gitlab_push_with_the_token_triggers(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = gitlab(client, gitlab_push("refs/heads/main"))

    assert answer.status_code == 202
    assert answer.json() == {"triggered": True}
    assert daemon.triggers == ["webhook:gitlab"]


def test_gitlab_push_to_another_branch_is_ignored(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = gitlab(client, gitlab_push("refs/heads/x"))

    assert answer.status_code == 202
    assert answer.json() == {"triggered": False, "reason": "ignored: push to refs/heads/x"}
    assert daemon.triggers == []


def test_gitlab_other_events_are_ignored(daemon: FakeDaemon, client: httpx.Client) -> None:
    body = json.dumps({"object_kind": "merge_request", "ref": "refs/heads/main"}).encode()

    assert gitlab(client, body).json() == {
        "triggered": False,
        "reason": "ignored: event merge_request",
    }
    assert daemon.triggers == []


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET.decode() + "x", SECRET.decode()[:-1]])
def test_gitlab_bad_token_is_401_and_triggers_nothing(
    daemon: FakeDaemon, client: httpx.Client, token: str | None
) -> None:
    answer = gitlab(client, gitlab_push("refs/heads/main"), token=token)

    assert answer.status_code == 401
    assert "X-Gitlab-Token" in answer.json()["error"]
    assert daemon.triggers == []


def test_gitlab_bad_json_is_400(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = gitlab(client, b"not json")

    assert answer.status_code == 400
    assert daemon.triggers == []


# --- generic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"anything at all", b"\x00\xff binary"])
def test_generic_signed_request_always_triggers(
    daemon: FakeDaemon, client: httpx.Client, body: bytes
) -> None:
    answer = client.post("/hooks/generic", content=body, headers={"X-Signature": sign(body)})

    assert answer.status_code == 202
    assert answer.json() == {"triggered": True}
    assert daemon.triggers == ["webhook:generic"]


@pytest.mark.parametrize("signature", [None, "", "sha256=deadbeef", sign(b"other body")])
def test_generic_bad_signature_is_401(
    daemon: FakeDaemon, client: httpx.Client, signature: str | None
) -> None:
    headers = {} if signature is None else {"X-Signature": signature}

    answer = client.post("/hooks/generic", content=b"payload", headers=headers)

    assert answer.status_code == 401
    assert "X-Signature" in answer.json()["error"]
    assert daemon.triggers == []


def test_optional_endpoints_are_404_when_not_configured() -> None:
    """Without a secret, a match hook or a registry hook, those routes do not exist."""
    daemon = FakeDaemon()
    body = push("refs/heads/main")
    hooks = daemon.hooks(with_match=False, with_registry=False)
    with (
        running(daemon, hooks=hooks, webhook_secret=None) as server,
        client_for(server) as client,
    ):
        answers = {
            "github": github(client, body).status_code,
            "gitlab": gitlab(client, body).status_code,
            "generic": client.post(
                "/hooks/generic", content=body, headers={"X-Signature": sign(body)}
            ).status_code,
            "github GET": client.get("/hooks/github").status_code,
            "match": client.post("/api/v1/match", json={"images": ["a:1"]}).status_code,
            "v2": client.get("/v2/").status_code,
        }
        assert client.get("/healthz").status_code == 200
    assert answers == dict.fromkeys(answers, 404)
    assert daemon.triggers == []
    assert daemon.matches == []


def test_webhook_outcomes_are_counted(
    daemon: FakeDaemon, shared: tuple[FakeDaemon, ControlServer], client: httpx.Client
) -> None:
    server = shared[1]
    before = server.webhook_counts()
    github(client, push("refs/heads/main"))
    github(client, push("refs/heads/other"))
    github(client, b"{}", signature="sha256=00")
    gitlab(client, gitlab_push("refs/heads/main"), token="nope")
    after = server.webhook_counts()

    changed = {
        key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key)
    }
    assert changed == {
        ("github", "triggered"): 1,
        ("github", "ignored"): 1,
        ("github", "unauthorized"): 1,
        ("gitlab", "unauthorized"): 1,
    }


# --- limits -------------------------------------------------------------------------------------


def test_an_oversized_body_is_413_without_being_read(
    daemon: FakeDaemon, shared: tuple[FakeDaemon, ControlServer]
) -> None:
    # Announce 100 MiB and send none of it: the answer must come from the header alone.
    with raw_connect(shared[1]) as sock:
        sock.sendall(
            b"POST /hooks/generic HTTP/1.1\r\nHost: t\r\nX-Signature: sha256=00\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        answer = read_response(sock)

    assert answer.startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in answer
    assert daemon.triggers == []


def test_a_body_just_over_the_limit_is_413_for_a_real_client() -> None:
    daemon = FakeDaemon()
    with running(daemon, max_body_bytes=1024) as server, client_for(server) as client:
        at_limit = b"x" * 1024
        over = b"x" * 1025
        ok = client.post(
            "/hooks/generic", content=at_limit, headers={"X-Signature": sign(at_limit)}
        )
        refused = client.post("/hooks/generic", content=over, headers={"X-Signature": sign(over)})
        assert client.get("/healthz").status_code == 200

    assert ok.status_code == 202
    assert refused.status_code == 413
    assert "1024" in refused.json()["error"]
    assert daemon.triggers == ["webhook:generic"]
    # Counts stay readable after stop(), for a last scrape during shutdown.
    assert server.webhook_counts() == {("generic", "triggered"): 1, ("generic", "refused"): 1}


def test_a_chunked_body_without_length_is_411(daemon: FakeDaemon, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"ref": '
        yield b'"refs/heads/main"}'

    answer = client.post("/hooks/github", content=chunks(), headers={"X-GitHub-Event": "push"})

    assert answer.status_code == 411
    assert daemon.triggers == []


def test_content_length_with_transfer_encoding_is_400(
    daemon: FakeDaemon, shared: tuple[FakeDaemon, ControlServer]
) -> None:
    body = b"0\r\n\r\n"
    with raw_connect(shared[1]) as sock:
        sock.sendall(
            b"POST /hooks/generic HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\nX-Signature: "
            + sign(body).encode()
            + b"\r\n\r\n"
            + body
        )
        answer = read_response(sock)

    assert answer.startswith(b"HTTP/1.1 400")
    assert daemon.triggers == []


def test_expect_continue_is_answered_413_when_too_big_and_100_when_fine(
    daemon: FakeDaemon, shared: tuple[FakeDaemon, ControlServer]
) -> None:
    head = b"POST /hooks/generic HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
    with raw_connect(shared[1]) as sock:
        sock.sendall(head + b"Content-Length: 99999999\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 413")

    body = b"go"
    with raw_connect(shared[1]) as sock:
        sock.sendall(
            head + b"Content-Length: 2\r\nX-Signature: " + sign(body).encode() + b"\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 202")
    assert daemon.triggers == ["webhook:generic"]


# --- slow clients and the connection cap ----------------------------------------------------------


def test_a_client_sending_headers_byte_by_byte_does_not_block_healthz(
    shared: tuple[FakeDaemon, ControlServer], client: httpx.Client
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nUser-Agent: slowloris\r\n\r\n"
    with raw_connect(shared[1]) as slow:
        for index, byte in enumerate(request):
            slow.sendall(bytes([byte]))
            time.sleep(0.005)
            if index % 10 == 5:  # the slow client is mid-request: others are served meanwhile
                assert client.get("/healthz").status_code == 200
        assert slow.recv(65536).startswith(b"HTTP/1.1 200")


def closed_by_server(sock: socket.socket, *, trickle: bytes, within: float) -> bool:
    """Trickle bytes until the server closes the connection or `within` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.02)
        if readable:
            try:
                return sock.recv(65536) == b""
            except ConnectionResetError:
                return True
        try:
            sock.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_a_trickling_client_is_cut_off_at_the_request_deadline() -> None:
    with running(FakeDaemon(), request_timeout_seconds=0.3) as server:
        with raw_connect(server) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            # Each byte arrives well inside any per-read timeout; the total still runs out.
            assert closed_by_server(slow, trickle=b"X", within=SANITY_SECONDS)
        with raw_connect(server) as idle:
            assert closed_by_server(idle, trickle=b"", within=SANITY_SECONDS)
        with client_for(server) as client:
            assert client.get("/healthz").status_code == 200


def test_connections_over_the_cap_are_turned_away_and_others_recover() -> None:
    with running(FakeDaemon(), max_connections=2) as server:
        holders = [raw_connect(server), raw_connect(server)]
        try:
            with raw_connect(server) as extra:
                assert read_response(extra).startswith(b"HTTP/1.1 503")
        finally:
            for sock in holders:
                sock.close()
        # The holders' threads notice the close and free their slots.
        deadline = time.monotonic() + SANITY_SECONDS
        with client_for(server) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the connection slots were never freed"
                time.sleep(0.02)


# --- registry extension point ---------------------------------------------------------------------


def test_registry_hook_serves_v2(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = client.get("/v2/", headers=[("Accept", "a/1"), ("Accept", "b/2")])

    assert answer.status_code == 200
    assert answer.headers["docker-distribution-api-version"] == "registry/2.0"
    assert answer.json() == {}
    method, target, headers, peer = daemon.registry_calls[0]
    assert (method, target) == ("GET", "/v2/")
    assert headers["accept"] == "a/1, b/2"
    assert peer == "127.0.0.1"  # the mirror groups a node's pulls by it


def test_registry_hook_gets_head_and_the_query(daemon: FakeDaemon, client: httpx.Client) -> None:
    answer = client.head("/v2/library/busybox/tags/list?n=10")

    assert answer.status_code == 200
    assert answer.headers["content-length"] == "2"
    assert answer.content == b""
    assert daemon.registry_calls[0][:2] == ("HEAD", "/v2/library/busybox/tags/list?n=10")


def test_registry_hook_can_stream_a_body(daemon: FakeDaemon, client: httpx.Client) -> None:
    streamed = client.get("/v2/stream/blobs/x")
    sized = client.get("/v2/sized/blobs/y")

    assert (streamed.status_code, streamed.content) == (200, b"abcdefgh")
    assert (sized.status_code, sized.content, sized.headers["content-length"]) == (
        200,
        b"12345",
        "5",
    )


def test_a_client_that_hangs_up_mid_answer_is_no_server_error(
    daemon: FakeDaemon,
    shared: tuple[FakeDaemon, ControlServer],
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="gitsync.server"):
        with raw_connect(shared[1]) as sock:
            sock.sendall(b"GET /v2/endless/blobs/z HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # The server notices on a later write, stops streaming and closes the hook's iterator.
        assert daemon.stream_closed.wait(SANITY_SECONDS)
        # The handler thread logs just after closing the iterator; give it a moment.
        deadline = time.monotonic() + SANITY_SECONDS
        while "client went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)

    assert "client went away" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert client.get("/healthz").status_code == 200


# --- lifecycle and configuration ------------------------------------------------------------------


def test_port_zero_binds_a_free_port_and_stop_closes_open_connections() -> None:
    server = ControlServer(
        host="127.0.0.1", port=0, hooks=FakeDaemon().hooks(), branch="main", webhook_secret=None
    )
    with pytest.raises(RuntimeError, match="start"):
        _ = server.address
    server.start()
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
        with pytest.raises(RuntimeError, match="twice"):
            server.start()
        idle = raw_connect(server)
    finally:
        server.stop()
    with idle:
        assert read_response(idle) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=SANITY_SECONDS).close()
    server.stop()  # a second stop is harmless


def test_a_busy_port_is_a_config_error() -> None:
    with running(FakeDaemon()) as first:
        second = ControlServer(
            host="127.0.0.1",
            port=first.address[1],
            hooks=FakeDaemon().hooks(),
            branch="main",
            webhook_secret=None,
        )
        with pytest.raises(ConfigError, match="--listen"):
            second.start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "port"),
        ({"branch": ""}, "branch"),
        ({"webhook_secret": b""}, "secret is empty"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"request_timeout_seconds": 0.0}, "timeout"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_nonsense_settings_are_config_errors(options: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "hooks": FakeDaemon().hooks(),
        "branch": "main",
        "webhook_secret": SECRET,
        **options,
    }
    with pytest.raises(ConfigError, match=message):
        ControlServer(**settings)  # type: ignore[arg-type]


def test_secrets_and_signatures_never_reach_logs_or_answers(
    daemon: FakeDaemon, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    good = push("refs/heads/main")
    signature = sign(good)
    wrong = sign(good, b"wrong-key")
    bodies: list[str] = []
    with caplog.at_level(logging.DEBUG):
        bodies.append(github(client, good).text)
        bodies.append(github(client, good, signature=wrong).text)
        bodies.append(gitlab(client, gitlab_push("refs/heads/main")).text)
        bodies.append(gitlab(client, good, token="wrong-token").text)
        answer = client.post(
            "/hooks/generic?token=query-secret", content=b"x", headers={"X-Signature": wrong}
        )
        bodies.append(answer.text)

    assert "POST /hooks/github -> 202" in caplog.text  # requests are logged, at debug level
    assert "POST /hooks/generic -> 401" in caplog.text  # without the query string
    assert {r.levelno for r in caplog.records if r.name == "gitsync.server"} == {logging.DEBUG}
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gitsync"))
    for leaked in (SECRET.decode(), signature[7:], wrong[7:], "wrong-token", "query-secret"):
        assert leaked not in ours
        assert not any(leaked in body for body in bodies)

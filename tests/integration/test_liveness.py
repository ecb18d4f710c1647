"""/healthz fails when a provider call hangs, while everything else keeps answering.

The daemon runs in-process over a real git remote, a real registry and the
local backend, with a liveness timeout of 1 s. Its provider's `observe()` can
be made to block on an Event nobody sets: a stand-in for a TCP connection that
never answers, which Python cannot interrupt. The first pass builds a real
cache, so the mirror has something to serve while the second pass hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gitrepo import git
from oci_images import Pusher, small_layer

from gitsync import wiring
from gitsync.controller_record import RecordFile
from gitsync.daemon import Daemon
from gitsync.liveness import Heartbeat
from gitsync.metrics import DaemonMetrics, ExpositionRegistry
from gitsync.model import ObservedState
from gitsync.pricing import PriceTable
from gitsync.providers.local.provider import LocalProvider
from gitsync.reconciler import ReconcilePolicy, Reconciler
from gitsync.sources.git import GitSource

DEADLINE_SECONDS = 60.0  # generous: only a hang or a broken daemon gets near it
REQUEST_TIMEOUT_SECONDS = 5.0  # an endpoint that waits for the stuck loop fails the test


class HangingProvider(LocalProvider):
    """The local backend, whose `observe()` blocks once `armed` until `release` is set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.armed = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def observe(self) -> ObservedState:
        if self.armed.is_set():
            self.entered.set()
            self.release.wait()  # no timeout: a call that never returns on its own
        return super().observe()


def wait_until(what: str, check: Callable[[], bool], *, alive: threading.Thread) -> None:
    """Poll `check` until it holds; fail at the deadline or if the daemon thread ends."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert alive.is_alive(), f"the daemon stopped while waiting for {what}"
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {DEADLINE_SECONDS:g} s waiting for {what}")


@dataclass
class Running:
    daemon: Daemon
    provider: HangingProvider
    thread: threading.Thread
    http: httpx.Client
    image: str


@pytest.fixture
def running(tmp_path: Path, pusher: Pusher) -> Iterator[Running]:
    repo = pusher.repo("liveness")
    pusher.push_image(repo, [small_layer("liveness")])
    image = f"{pusher.registry.host}/{repo}:v1"
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    (work / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: web\nspec:\n  images: [{image}]\n"
    )
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one cache", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)

    data = tmp_path / "data"
    provider = HangingProvider(data_dir=data)
    registry = ExpositionRegistry()
    daemon = Daemon(
        source=GitSource(url=f"file://{bare}", ref="main", cache_dir=data / "source"),
        reconciler=Reconciler(
            provider=provider,
            records=RecordFile(data),
            policy=ReconcilePolicy(),
            prices=PriceTable(),
        ),
        registry=registry,
        metrics=DaemonMetrics(registry=registry, version="test"),
        interval_seconds=3600,  # no poll during the test: passes come from triggers
        host="127.0.0.1",
        port=0,
        branch="main",
        webhook_secret=None,
        version="test",
        heartbeat=Heartbeat(timeout_seconds=1.0),
        mirror=wiring.mirror_for(provider),
    )
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    try:
        wait_until("the first pass", daemon.ready_to_serve, alive=thread)
        host, port = daemon.server.address
        with httpx.Client(
            base_url=f"http://{host}:{port}", timeout=REQUEST_TIMEOUT_SECONDS
        ) as http:
            yield Running(daemon, provider, thread, http, image)
    finally:
        provider.release.set()  # let a hung pass end, so the loop can stop
        daemon.stop()
        thread.join(DEADLINE_SECONDS)
        provider.close()
    assert not thread.is_alive(), "the daemon did not stop"


def test_healthz_fails_while_a_provider_call_hangs_and_the_rest_still_answers(
    running: Running,
) -> None:
    http, provider = running.http, running.provider
    status = http.get("/api/v1/status").json()
    assert [(c["name"], c["status"]) for c in status["caches"]] == [("web", "Ready")]
    assert (http.get("/healthz").status_code, http.get("/readyz").status_code) == (200, 200)

    # The next pass hangs in the provider, for longer than the liveness timeout.
    provider.armed.set()
    running.daemon.queue.put("test")
    assert provider.entered.wait(DEADLINE_SECONDS), "the pass never reached observe()"
    wait_until(
        "/healthz to fail", lambda: http.get("/healthz").status_code == 503, alive=running.thread
    )
    health = http.get("/healthz")
    assert health.status_code == 503
    assert health.text.startswith("unhealthy: the reconcile loop has made no progress for ")
    assert "over the liveness timeout of 1 s" in health.text
    assert "reconciling revision" in health.text
    assert "with the local provider" in health.text

    # Nothing else waits for the stuck loop.
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert 'gitsync_cache_info{cache="web"' in metrics.text
    assert http.get("/readyz").status_code == 200  # the revision in force is still applied
    assert http.get("/api/v1/status").json()["caches"][0]["status"] == "Ready"
    assert http.get("/v2/").status_code == 200
    name, tag = running.image.split("/", 1)[1].rsplit(":", 1)
    manifest = http.get(
        f"/v2/{name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"].startswith("sha256:")
    assert http.get("/healthz").status_code == 503  # still stuck: nothing above unblocked it

    # The call returns, the pass finishes: the loop is alive again.
    provider.armed.clear()
    provider.release.set()
    wait_until(
        "/healthz to recover", lambda: http.get("/healthz").status_code == 200, alive=running.thread
    )
    assert http.get("/healthz").text == "ok\n"

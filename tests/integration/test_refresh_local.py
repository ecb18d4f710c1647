"""A moving tag, end to end on the local backend, against Debian's docker-registry.

The parts are the real ones: the registry (re-pushed with skopeo), the
refresher's HEADs through the registry client, the reconciler and planner, the
local provider's pull and snapshots, and the `/v2/` mirror. Only time is the
test's: the refresher's clock is set, so an interval passes when the test
says, and the new snapshot's pull is held at a gate while the test looks at
what the mirror serves meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    CountingTransport,
    Fault,
    FaultProxy,
    Pusher,
    RegistryProcess,
    small_layer,
)
from prometheus_client import CollectorRegistry

from gitsync.backoff import backoff_delay
from gitsync.controller_record import RecordFile
from gitsync.metrics import RefreshMetrics
from gitsync.model import ActionKind, CacheSpec, CacheStatus, ObservedCache
from gitsync.pricing import PriceTable
from gitsync.providers.local.mirror import Mirror
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.tagdigests import TagDigestResolver
from gitsync.reconciler import PassResult, ReconcilePolicy, Reconciler
from gitsync.refresh import DigestRefresher

pytestmark = pytest.mark.registry

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gate(httpx.BaseTransport):
    """A transport that holds requests for one path until the test opens the gate."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.hold: str | None = None
        self.waiting = threading.Event()
        self.opened = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.hold is not None and self.hold in request.url.path:
            self.waiting.set()
            if not self.opened.wait(60):
                raise httpx.ConnectError("the test never opened the gate", request=request)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def write_spec(tree: Path, name: str, *images: str) -> None:
    listed = "".join(f"    - {image}\n" for image in images)
    (tree / f"{name}.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images:\n{listed}",
        encoding="utf-8",
    )


def served(mirror: Mirror, repo: str, *, method: str = "GET") -> str:
    """The digest the mirror answers for `repo:1`, or the error body."""
    reply = mirror.handle(method, f"/v2/{repo}/manifests/1", {"accept": ACCEPT})
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.body!r}"
    return reply.headers["Docker-Content-Digest"]


def heads(transport: CountingTransport) -> list[str]:
    return [path for method, path, _ in transport.requests if method == "HEAD"]


def counting_clients(transport: httpx.BaseTransport) -> Callable[..., RegistryClient]:
    def factory(**kwargs: object) -> RegistryClient:
        return RegistryClient(transport=transport, **kwargs)  # type: ignore[arg-type]

    return factory


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_re_pushed_tag_rebuilds_the_cache_and_the_old_content_serves_until_then(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("moving")
    image = f"{pusher.registry.host}/{repo}:1"
    first = pusher.push_image(repo, [small_layer("first content")], tag="1")
    tree = tmp_path / "repo"
    tree.mkdir()
    write_spec(tree, "web", image)
    data = tmp_path / "data"
    gate = Gate()
    local = LocalProvider(data_dir=data, client_factory=counting_clients(gate))
    reconciler = Reconciler(
        provider=local,
        records=RecordFile(data),
        policy=ReconcilePolicy(controller_id="gitsync"),
        prices=PriceTable(),
    )
    counting = CountingTransport()
    resolver = TagDigestResolver(client_factory=counting_clients(counting), attempts=1)
    metrics = CollectorRegistry()
    passes: list[str] = []
    clock = Clock(0.0)
    refresher = DigestRefresher(
        resolve=resolver,
        desired=lambda: reconciler.desired_caches,
        default_interval_seconds=10.0,  # --refresh-interval 10s: every cache follows
        observed=local.current,
        owner="gitsync",
        metrics=RefreshMetrics(registry=metrics),
        on_change=lambda: passes.append("refresh"),
        clock=clock,
    )
    reconciler.follow_tags(refresher.tag_digests)
    mirror = Mirror(local)
    try:
        created = reconciler.reconcile(tree=tree, revision="r1")
        assert [a.kind for a in created.plan.changes] == [ActionKind.CREATE]  # type: ignore[union-attr]
        assert served(mirror, repo) == first.manifest_digest
        (cache,) = local.current()
        assert cache.image_digests == ((image, first.manifest_digest),)
        assert cache.image_digests_at is not None

        # The refresher's time starts after the snapshot: its answers are newer.
        clock.now = cache.image_digests_at.timestamp() + 1
        assert refresher.check().asked == (image,)
        assert heads(counting) == [f"/v2/{repo}/manifests/1"]
        assert refresher.resolved()[image].digest == first.manifest_digest
        quiet = reconciler.reconcile(tree=tree, revision="r1")
        assert quiet.plan is not None
        assert not quiet.plan.has_changes

        second = pusher.push_image(repo, [small_layer("second content")], tag="1")
        assert second.manifest_digest != first.manifest_digest
        clock.now += 5
        assert refresher.check().asked == ()  # the interval has not passed: no HEAD
        assert len(heads(counting)) == 1
        clock.now += 5
        found = refresher.check()
        assert found.asked == (image,)
        ((name, move),) = found.moves
        assert (name, move.held, move.resolved) == (
            "web",
            first.manifest_digest,
            second.manifest_digest,
        )
        assert passes == ["refresh"]
        assert sample(metrics, "gitsync_image_digest_changes_total", cache="web") == 1
        assert sample(metrics, "gitsync_image_digest_checks_total", result="ok") == 2

        # The pass the refresher asked for: held at the new layer while the test looks.
        gate.hold = f"/blobs/{second.layers[0].digest}"
        results: list[PassResult] = []
        worker = threading.Thread(
            target=lambda: results.append(reconciler.reconcile(tree=tree, revision="r1"))
        )
        worker.start()
        try:
            assert gate.waiting.wait(60), "the rebuild never fetched the new layer"
            (building,) = local.current()
            assert building.status is CacheStatus.UPDATING
            assert served(mirror, repo) == first.manifest_digest
            assert served(mirror, repo, method="HEAD") == first.manifest_digest
            layer = mirror.handle("GET", f"/v2/{repo}/blobs/{first.layers[0].digest}", {})
            assert layer.status == 200
            assert b"".join(layer.body) == first.layers[0].blob  # type: ignore[arg-type]
        finally:
            gate.opened.set()
            worker.join(60)
        assert not worker.is_alive()
        ((rebuild,),) = [r.plan.changes for r in results]  # type: ignore[union-attr]
        assert rebuild.kind is ActionKind.UPDATE
        assert rebuild.reason == (
            f"tag moved: {image} {first.manifest_digest} \N{RIGHTWARDS ARROW}"
            f" {second.manifest_digest}"
        )
        assert results[0].error is None

        (rebuilt,) = local.current()
        assert rebuilt.status is CacheStatus.READY
        assert rebuilt.images == (image,)  # Git's spelling: nothing pinned on the local store
        assert rebuilt.image_digests == ((image, second.manifest_digest),)
        assert served(mirror, repo) == second.manifest_digest
        (changed,) = [e for e in rebuilt.events if e.reason == "DigestChanged"]
        assert changed.type == "Normal"
        assert image in changed.message
        assert first.manifest_digest in changed.message
        assert second.manifest_digest in changed.message

        # Settled: no fight with Git, no second count.
        settled = reconciler.reconcile(tree=tree, revision="r1")
        assert settled.plan is not None
        assert not settled.plan.has_changes
        clock.now += 10
        assert refresher.check().moves == ()
        assert sample(metrics, "gitsync_image_digest_changes_total", cache="web") == 1
    finally:
        resolver.close()
        local.close()


def test_a_digest_pinned_image_is_never_asked(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("pinned")
    built = pusher.push_image(repo, [small_layer("pinned")], tag="1")
    host = pusher.registry.host
    pinned = f"{host}/{repo}@{built.manifest_digest}"
    tagged = f"{host}/{repo}:1"
    counting = CountingTransport()
    with TagDigestResolver(client_factory=counting_clients(counting)) as resolver:
        refresher = DigestRefresher(
            resolve=resolver,
            desired=lambda: [
                CacheSpec(name="a", images=(pinned,), refresh_seconds=10.0),
                CacheSpec(name="b", images=(tagged, pinned), refresh_seconds=10.0),
            ],
            default_interval_seconds=None,
        )
        done = refresher.check()
    assert done.asked == (tagged,)
    assert counting.paths() == [f"/v2/{repo}/manifests/1"]
    assert heads(counting) == [f"/v2/{repo}/manifests/1"]
    assert refresher.resolved()[tagged].digest == built.manifest_digest
    assert set(refresher.resolved()) == {tagged}


def test_a_failing_registry_backs_off(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("flaky")
    built = pusher.push_image(repo, [small_layer("flaky")], tag="1")
    with FaultProxy(pusher.registry.host) as proxy:
        proxy.faults.append(Fault(path_contains="/manifests/", status=503, times=None))
        image = f"{proxy.host}/{repo}:1"
        clock = Clock(1_000_000.0)
        metrics = CollectorRegistry()
        with TagDigestResolver(attempts=1) as resolver:
            refresher = DigestRefresher(
                resolve=resolver,
                desired=lambda: [CacheSpec(name="a", images=(image,), refresh_seconds=3600.0)],
                default_interval_seconds=None,
                metrics=RefreshMetrics(registry=metrics),
                clock=clock,
                rng=random.Random(5),
                backoff_base_seconds=30.0,
                backoff_max_seconds=600.0,
            )
            manifest_path = f"/v2/{repo}/manifests/1"
            assert refresher.check().failed == (image,)
            assert proxy.hits[manifest_path] == 1
            record = refresher.resolved()[image]
            assert record.digest is None
            assert record.error is not None
            assert "503" in record.error
            rng = random.Random(5)
            until = clock.now + backoff_delay(1, base=30.0, cap=600.0, rng=rng)
            assert refresher.next_due([], now=clock.now) is None
            specs = [CacheSpec(name="a", images=(image,), refresh_seconds=3600.0)]
            assert refresher.next_due(specs, now=clock.now) == pytest.approx(until)

            clock.now = until - 0.01
            assert refresher.check().held_back == (image,)
            assert proxy.hits[manifest_path] == 1  # nothing sent while backing off

            clock.now = until
            assert refresher.check().failed == (image,)  # retried, long before the hour
            assert proxy.hits[manifest_path] == 2
            again = clock.now + backoff_delay(2, base=30.0, cap=600.0, rng=rng)
            assert refresher.next_due(specs, now=clock.now) == pytest.approx(again)

            proxy.faults.clear()
            clock.now = again
            assert refresher.check().failed == ()
            assert refresher.resolved()[image].digest == built.manifest_digest
            assert refresher.resolved()[image].error is None
        assert sample(metrics, "gitsync_image_digest_checks_total", result="error") == 2
        assert sample(metrics, "gitsync_image_digest_checks_total", result="backoff") == 1
        assert sample(metrics, "gitsync_image_digest_checks_total", result="ok") == 1


def test_the_pull_secrets_of_the_caches_are_used(
    pusher: Pusher, basic_registry: RegistryProcess, tmp_path: Path
) -> None:
    repo = pusher.repo("private-tag")
    built = pusher.push_image(repo, [small_layer("private tag")], tag="1")  # shared storage
    secrets = tmp_path / "secrets"
    (secrets / "team").mkdir(parents=True)
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    config = {"auths": {basic_registry.host: {"auth": auth}}}
    (secrets / "team/regcred.yaml").write_text(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\n"
        "metadata: {name: regcred, namespace: team}\n"
        f"data:\n  .dockerconfigjson: {base64.b64encode(json.dumps(config).encode()).decode()}\n"
    )
    image = f"{basic_registry.host}/{repo}:1"
    with TagDigestResolver(secrets_dir=secrets, attempts=1) as resolver:
        refresher = DigestRefresher(
            resolve=resolver,
            desired=lambda: [
                # A cache without the secret is tried first, and refused; the one with it wins.
                CacheSpec(name="a-public", images=(image,), refresh_seconds=60.0),
                CacheSpec(
                    name="b-team",
                    images=(image,),
                    refresh_seconds=60.0,
                    image_pull_secrets=("team/regcred",),
                ),
            ],
            default_interval_seconds=None,
        )
        done = refresher.check()
    assert done.failed == ()
    assert refresher.resolved()[image].digest == built.manifest_digest


def test_a_snapshot_from_before_schema_4_still_tells_its_digests(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("legacy")
    built = pusher.push_image(repo, [small_layer("legacy")], tag="1")
    image = f"{pusher.registry.host}/{repo}:1"
    data = tmp_path / "data"
    local = LocalProvider(data_dir=data)
    local.create(CacheSpec(name="web", images=(image,)), owner="gitsync")
    local.close()
    with contextlib.closing(sqlite3.connect(data / "state.db")) as db:
        db.execute("UPDATE snapshots SET image_digests = NULL")
        db.commit()
    reopened = LocalProvider(data_dir=data, writable=False)
    try:
        (cache,) = reopened.current()
        assert isinstance(cache, ObservedCache)
        assert cache.image_digests == ((image, built.manifest_digest),)
    finally:
        reopened.close()

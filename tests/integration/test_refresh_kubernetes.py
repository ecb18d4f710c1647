"""A moved tag on the kubernetes backend: the object's spec.images is pinned, Git keeps the tag.

Against kmock's Kubernetes emulator with the real `kubernetes` client and the
stand-in operator (`kube_fixtures`), as tests/integration/test_kubernetes_provider.py.
The digests are given to the reconciler as the refresher would give them: what
is under test is what gitsync writes, that its own drift detection then
leaves the pin alone, and the `DigestChanged` Event recorded on the object
(which the stand-in admits only if the real API server would).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import kmock
import pytest
from kube_fixtures import FakeOperator, KubeServer

from gitsync.controller_record import RecordFile
from gitsync.digests import ResolvedDigest, TagDigests
from gitsync.model import ActionKind, CacheStatus
from gitsync.pricing import PriceTable
from gitsync.providers import kubernetes as kube_provider
from gitsync.providers.kubernetes import KubernetesProvider
from gitsync.reconciler import ReconcilePolicy, Reconciler
from gitsync.reports import cache_dict

GROUP = "eks.cloud.tencent.com"
IMAGE = "registry.example.com/team/app:1"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server
        # gitsync asked only for what it declares (and manifests/clusterrole.yaml grants).
        declared = {
            (group, resource, verb)
            for group, resource, verbs in kube_provider.RBAC_RULES
            for verb in verbs
        }
        undeclared = set(server.verbs()) - declared
        assert not undeclared, f"requests outside the declared RBAC rules: {undeclared}"


@pytest.fixture
def operator(kube: KubeServer) -> Iterator[FakeOperator]:
    stand_in = FakeOperator(kube)
    yield stand_in
    stand_in.close()


@pytest.fixture
def provider(kube: KubeServer) -> Iterator[KubernetesProvider]:
    client = kube.client()
    instance = KubernetesProvider(api_client=client)
    yield instance
    instance.close()
    client.close()


class Tags:
    """What the refresher would hand the reconciler: every cache follows its tags."""

    def __init__(self) -> None:
        self.current = TagDigests()

    def resolve(self, digest: str) -> None:
        entry = ResolvedDigest(digest=digest, at=AT)
        self.current = TagDigests(resolved=MappingProxyType({IMAGE: entry}), every_cache=True)

    def __call__(self) -> TagDigests:
        return self.current


def world(provider: KubernetesProvider, tmp_path: Path) -> tuple[Reconciler, Tags, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
        f"spec:\n  images: [{IMAGE}]\n",
        encoding="utf-8",
    )
    loop = Reconciler(
        provider=provider,
        records=RecordFile(tmp_path / "data"),
        policy=ReconcilePolicy(controller_id="gitsync", backoff_base_seconds=0.001),
        prices=PriceTable(),
    )
    tags = Tags()
    loop.follow_tags(tags)
    return loop, tags, repo


def ready(kube: KubeServer, operator: FakeOperator) -> None:
    """The operator has built the object's current generation."""
    generation = kube.api.get(GROUP, "imagecaches", None, "web")["metadata"]["generation"]
    operator.set_status("web", {"phase": "Ready", "observedGeneration": generation})


def images(kube: KubeServer) -> list[str]:
    return list(kube.api.get(GROUP, "imagecaches", None, "web")["spec"]["images"])


def stored_events(kube: KubeServer) -> list[dict[str, Any]]:
    """Every Event the stand-in holds, in any namespace, as the API server stores them."""
    with kube.api.lock:
        keys = [k for k in kube.api.objects if k[:2] == ("", "events")]
    return [kube.api.get(*key) for key in keys]


def event_posts(kube: KubeServer, mark: int) -> list[kmock.Request]:
    return [
        r
        for r in kube.requests_since(mark)
        if r.resource is not None
        and r.resource.plural == "events"
        and str(r.method.value).upper() == "POST"
    ]


def test_a_moved_tag_is_pinned_in_place_and_the_pin_is_no_drift(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    tags.resolve(D1)
    created = loop.reconcile(tree=repo, revision="r1")
    assert created.error is None, created.error
    assert images(kube) == [f"{IMAGE}@{D1}"]  # known from the start: created pinned
    uid = operator.uid("web")
    ready(kube, operator)

    mark = kube.mark()
    quiet = loop.reconcile(tree=repo, revision="r1")
    assert quiet.plan is not None
    assert not quiet.plan.has_changes
    assert [r for r in kube.requests_since(mark) if str(r.method.value) != "GET"] == []

    tags.resolve(D2)
    moved = loop.reconcile(tree=repo, revision="r1")
    assert moved.error is None, moved.error
    assert moved.plan is not None
    (action,) = moved.plan.changes
    assert action.kind is ActionKind.UPDATE
    assert action.reason == f"tag moved: {IMAGE} {D1} \N{RIGHTWARDS ARROW} {D2}"
    assert images(kube) == [f"{IMAGE}@{D2}"]
    assert operator.uid("web") == uid  # in place: the operator's update path, not a delete
    (building,) = provider.observe().caches
    assert building.status is CacheStatus.UPDATING  # the operator has not built it yet

    ready(kube, operator)
    mark = kube.mark()
    settled = loop.reconcile(tree=repo, revision="r1")
    assert settled.plan is not None
    assert not settled.plan.has_changes
    assert [r for r in kube.requests_since(mark) if str(r.method.value) != "GET"] == []

    # A reconciler that follows nothing (`gitsync plan`, `apply`) sees no drift either.
    plain = Reconciler(
        provider=provider,
        records=RecordFile(tmp_path / "plain"),
        policy=ReconcilePolicy(controller_id="gitsync"),
        prices=PriceTable(),
    )
    unfollowed = plain.reconcile(tree=repo, revision="r1")
    assert unfollowed.plan is not None
    assert not unfollowed.plan.has_changes
    assert images(kube) == [f"{IMAGE}@{D2}"]


def test_a_cache_built_from_the_bare_tag_is_pinned_once(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    loop.reconcile(tree=repo, revision="r1")  # nothing resolved yet
    assert images(kube) == [IMAGE]
    ready(kube, operator)

    tags.resolve(D1)
    pinned = loop.reconcile(tree=repo, revision="r1")
    assert pinned.plan is not None
    (action,) = pinned.plan.changes
    assert action.reason == (
        f"follow tag {IMAGE}: the digest the cache holds is unknown; pinning it"
    )
    assert images(kube) == [f"{IMAGE}@{D1}"]
    ready(kube, operator)
    again = loop.reconcile(tree=repo, revision="r1")
    assert again.plan is not None
    assert not again.plan.has_changes


def test_a_moved_tag_records_a_digest_changed_event_that_status_lists(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    tags.resolve(D1)
    assert loop.reconcile(tree=repo, revision="r1").error is None
    ready(kube, operator)
    assert stored_events(kube) == []  # created pinned: nothing moved

    tags.resolve(D2)
    moved = loop.reconcile(tree=repo, revision="r1")
    assert moved.error is None, moved.error
    assert images(kube) == [f"{IMAGE}@{D2}"]

    (event,) = stored_events(kube)
    cache = kube.api.get(GROUP, "imagecaches", None, "web")
    message = f"{IMAGE} moved upstream from {D1} to {D2}; the cache is rebuilt"
    assert event["metadata"]["namespace"] == "default"  # where cluster-scoped objects' go
    assert event["metadata"]["name"].startswith("web.")
    assert event["involvedObject"] == {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ImageCache",
        "name": "web",
        "uid": cache["metadata"]["uid"],
        "resourceVersion": cache["metadata"]["resourceVersion"],  # the object as written
    }
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal",
        "DigestChanged",
        message,
    )
    assert event["source"] == {"component": "gitsync"}
    assert event["reportingComponent"] == "gitsync"
    assert event["reportingInstance"] == "gitsync"  # the controller id
    assert event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"]

    (observed,) = provider.observe().caches
    assert [(e.type, e.reason, e.message, e.count) for e in observed.events] == [
        ("Normal", "DigestChanged", message, 1)
    ]
    # As `gitsync status --format json` shows the cache.
    shown = cache_dict(observed, controller_id="gitsync")["events"]
    assert isinstance(shown, list)
    assert [(e["reason"], e["message"]) for e in shown] == [("DigestChanged", message)]

    ready(kube, operator)
    mark = kube.mark()
    settled = loop.reconcile(tree=repo, revision="r1")
    assert settled.plan is not None
    assert not settled.plan.has_changes
    assert event_posts(kube, mark) == []  # recorded once, not on every pass


def test_pinning_a_bare_tag_records_the_event_from_the_unpinned_tag(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    loop.reconcile(tree=repo, revision="r1")  # nothing resolved yet: the bare tag
    ready(kube, operator)

    tags.resolve(D1)
    assert loop.reconcile(tree=repo, revision="r1").error is None

    (event,) = stored_events(kube)
    assert event["reason"] == "DigestChanged"
    assert event["message"] == (
        f"{IMAGE} moved upstream from the unpinned tag to {D1}; the cache is rebuilt"
    )


def test_an_update_that_moves_no_digest_records_no_event(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    tags.resolve(D1)
    loop.reconcile(tree=repo, revision="r1")
    ready(kube, operator)

    # Git changes the size; the tag still resolves to the digest the object holds.
    (repo / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
        f"spec:\n  images: [{IMAGE}]\n  imageCacheSize: 40\n",
        encoding="utf-8",
    )
    mark = kube.mark()
    resized = loop.reconcile(tree=repo, revision="r2")
    assert resized.error is None, resized.error
    assert resized.plan is not None
    (action,) = resized.plan.changes
    assert action.kind is ActionKind.UPDATE
    cache = kube.api.get(GROUP, "imagecaches", None, "web")
    assert cache["spec"]["imageCacheSize"] == 40
    assert cache["spec"]["images"] == [f"{IMAGE}@{D1}"]
    assert event_posts(kube, mark) == []
    assert stored_events(kube) == []


def test_a_refused_event_is_logged_and_the_cache_is_still_updated(
    kube: KubeServer,
    provider: KubernetesProvider,
    operator: FakeOperator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, tags, repo = world(provider, tmp_path)
    tags.resolve(D1)
    loop.reconcile(tree=repo, revision="r1")
    ready(kube, operator)
    # A ClusterRole without `create` on events: the API server answers 403.
    (
        kube.api[kmock.method.POST, kmock.resource("", "v1", "events")]
        << 403
        << {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'events is forbidden: User "system:serviceaccount:gitsync:gitsync"'
            ' cannot create resource "events" in API group "" in the namespace "default"',
        }
    )

    tags.resolve(D2)
    mark = kube.mark()
    with caplog.at_level(logging.WARNING, logger="gitsync.providers.kubernetes"):
        moved = loop.reconcile(tree=repo, revision="r1")

    assert moved.error is None, moved.error
    assert moved.plan is not None
    (action,) = moved.plan.changes
    assert action.reason == f"tag moved: {IMAGE} {D1} \N{RIGHTWARDS ARROW} {D2}"
    assert images(kube) == [f"{IMAGE}@{D2}"]  # the update happened
    assert len(event_posts(kube, mark)) == 1  # it was asked for, and refused
    assert stored_events(kube) == []
    (warning,) = [r for r in caplog.records if "DigestChanged" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert "HTTP 403" in text
    assert f"from {D1} to {D2}" in text
    (observed,) = provider.observe().caches
    assert observed.images == (f"{IMAGE}@{D2}",)

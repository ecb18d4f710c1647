"""A moved tag on the kubernetes backend: the object's spec.images is pinned, Git keeps the tag.

Against kmock's Kubernetes emulator with the real `kubernetes` client and the
stand-in operator (`kube_fixtures`), as tests/integration/test_kubernetes_provider.py.
The digests are given to the reconciler as the refresher would give them: what
is under test is what gitsync writes, and that its own drift detection then
leaves the pin alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest
from kube_fixtures import FakeOperator, KubeServer

from gitsync.controller_record import RecordFile
from gitsync.digests import ResolvedDigest, TagDigests
from gitsync.model import ActionKind, CacheStatus
from gitsync.pricing import PriceTable
from gitsync.providers.kubernetes import KubernetesProvider
from gitsync.reconciler import ReconcilePolicy, Reconciler

GROUP = "eks.cloud.tencent.com"
IMAGE = "registry.example.com/team/app:1"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


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

"""Labels, annotations and securityGroupIds from Git on the kubernetes backend.

gitsync writes Git's labels and annotations beside its own with server-side
apply and reads back, from `metadata.managedFields`, only the keys it wrote:
a key Git drops is removed, a key someone else set stays and is never a
difference, and a change of a label alone is an update of the same object.
Without server-side apply the merge-patch fallback keeps its own record of
the keys it wrote (`gitsync.io/applied-metadata`) to the same effect.

The stand-in API server (`kube_fixtures`) keeps managed fields as the real
one does (tests/integration/test_kube_standin.py checks that), and other
writers here are other clients with their own field manager, as `kubectl
label` and `kubectl annotate` are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kube_fixtures import FakeOperator, KubeServer

from gitsync.controller_record import RecordFile
from gitsync.errors import PermanentError
from gitsync.model import (
    ANNOTATIONS_FIELD,
    LABELS_FIELD,
    ActionKind,
    CacheSpec,
)
from gitsync.pricing import PriceTable
from gitsync.providers.kubernetes import (
    APPLIED_ANNOTATION,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    KubernetesProvider,
)
from gitsync.reconciler import PassResult, ReconcilePolicy, Reconciler

GROUP = "eks.cloud.tencent.com"
CONTROLLER = "ci"
OWN = {MANAGED_BY_LABEL: "gitsync", OWNER_LABEL: CONTROLLER}
EIP = "eks.tke.cloud.tencent.com/eip-attributes"


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


@pytest.fixture
def operator(kube: KubeServer) -> Iterator[FakeOperator]:
    stand_in = FakeOperator(kube)
    yield stand_in
    stand_in.close()


class Kubectl:
    """Another client writing labels and annotations as `kubectl label`/`annotate` do."""

    def __init__(self, server: KubeServer, manager: str) -> None:
        self.client = server.client(user_agent="kubectl/v1.31.0")
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.manager = manager

    def patch(self, name: str, metadata: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(
            GROUP,
            "v1",
            "imagecaches",
            name,
            {"metadata": metadata},
            field_manager=self.manager,
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ).release_conn()

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def kubectl(kube: KubeServer) -> Iterator[Kubectl]:
    writer = Kubectl(kube, "kubectl-label")
    yield writer
    writer.close()


class Loop:
    """gitsync's reconciler over one provider, fed the documents of a plain folder."""

    def __init__(self, server: KubeServer, tmp_path: Path) -> None:
        self.client = server.client()
        self.provider = KubernetesProvider(api_client=self.client)
        self.repo = tmp_path / "repo"
        self.repo.mkdir(exist_ok=True)
        self.reconciler = Reconciler(
            provider=self.provider,
            records=RecordFile(tmp_path / "data"),
            policy=ReconcilePolicy(controller_id=CONTROLLER, backoff_base_seconds=0.001),
            prices=PriceTable(),
        )
        self.passes = 0

    def write(self, documents: dict[str, str]) -> None:
        for old in self.repo.glob("*.yaml"):
            old.unlink()
        for name, text in documents.items():
            (self.repo / f"{name}.yaml").write_text(text, encoding="utf-8")

    def reconcile(self) -> PassResult:
        self.passes += 1
        result = self.reconciler.reconcile(tree=self.repo, revision=f"r{self.passes}")
        assert result.error is None, result.error
        return result

    def close(self) -> None:
        self.provider.close()
        self.client.close()


@pytest.fixture
def loop(kube: KubeServer, tmp_path: Path) -> Iterator[Loop]:
    instance = Loop(kube, tmp_path)
    yield instance
    instance.close()


def doc(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    groups: list[str] | None = None,
    secrets: list[str] | None = None,
) -> str:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"images": ["nginx:1.27.2"]}
    if groups:
        spec["securityGroupIds"] = groups
    if secrets:
        spec["imagePullSecrets"] = secrets
    document = {"apiVersion": f"{GROUP}/v1", "kind": "ImageCache", "metadata": metadata}
    return json.dumps({**document, "spec": spec})  # JSON is YAML


def stored(kube: KubeServer, name: str = "web") -> dict[str, Any]:
    return kube.api.get(GROUP, "imagecaches", None, name)


def writes_since(kube: KubeServer, mark: int) -> list[str]:
    return [
        f"{r.method.value} {r.headers.get('Content-Type', '')}"
        for r in kube.requests_since(mark)
        if str(r.method.value) != "GET"
    ]


def assert_converged(loop: Loop, kube: KubeServer) -> None:
    """One more pass plans nothing and writes nothing."""
    mark = kube.mark()
    again = loop.reconcile()
    assert again.plan is not None
    assert not again.plan.has_changes, [a.reason for a in again.plan.changes]
    assert writes_since(kube, mark) == []


# ------------------------------------------------------------ server-side apply


def test_labels_annotations_and_security_groups_from_git_are_written_and_read_back(
    kube: KubeServer, loop: Loop
) -> None:
    labels = {"team": "web", "example.com/tier": "frontend"}
    annotations = {EIP: '{"InternetMaxBandwidthOut":2}', "note": "cached for the web pods"}
    loop.write({"web": doc("web", labels=labels, annotations=annotations, groups=["sg-b", "sg-a"])})

    first = loop.reconcile()

    obj = stored(kube)
    assert obj["metadata"]["labels"] == {**labels, **OWN}
    assert obj["metadata"]["annotations"] == annotations
    assert obj["spec"]["securityGroupIds"] == ["sg-b", "sg-a"]  # in order, as written
    (entry,) = obj["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("gitsync", "Apply")
    assert first.observed_after is not None
    (web,) = first.observed_after.caches
    assert dict(web.labels) == labels  # Git's: not gitsync's own two
    assert dict(web.annotations) == annotations
    assert web.security_group_ids == ("sg-b", "sg-a")
    assert_converged(loop, kube)


def test_a_label_or_annotation_removed_from_git_is_removed_and_others_keys_stay(
    kube: KubeServer, loop: Loop, kubectl: Kubectl
) -> None:
    loop.write(
        {
            "web": doc(
                "web",
                labels={"team": "web", "tier": "1"},
                annotations={"note": "x", "owner": "alice"},
                groups=["sg-1"],
            )
        }
    )
    loop.reconcile()
    # Someone labels and annotates the object by hand; an operator adds its own annotation.
    kubectl.patch("web", {"labels": {"cost-centre": "42"}, "annotations": {"seen-by": "audit"}})

    # Their keys are none of gitsync's business: no difference, no write.
    observed = loop.provider.observe().caches[0]
    assert dict(observed.labels) == {"team": "web", "tier": "1"}
    assert dict(observed.annotations) == {"note": "x", "owner": "alice"}
    assert_converged(loop, kube)

    loop.write({"web": doc("web", labels={"team": "web"}, annotations={"owner": "alice"})})
    dropped = loop.reconcile()

    assert dropped.plan is not None
    (update,) = dropped.plan.changes
    assert update.kind is ActionKind.UPDATE
    assert {c.field for c in update.changes} == {
        LABELS_FIELD,
        ANNOTATIONS_FIELD,
        "securityGroupIds",
    }
    obj = stored(kube)
    assert obj["metadata"]["labels"] == {"team": "web", "cost-centre": "42", **OWN}
    assert obj["metadata"]["annotations"] == {"owner": "alice", "seen-by": "audit"}
    assert "securityGroupIds" not in obj["spec"]
    assert_converged(loop, kube)


def test_a_label_someone_overwrote_is_an_update_that_takes_it_back(
    kube: KubeServer, loop: Loop, kubectl: Kubectl
) -> None:
    loop.write({"web": doc("web", labels={"team": "web"})})
    loop.reconcile()
    kubectl.patch("web", {"labels": {"team": "ops"}})  # kubectl label --overwrite team=ops

    result = loop.reconcile()

    assert result.plan is not None
    (update,) = result.plan.changes
    assert update.kind is ActionKind.UPDATE
    assert "metadata.labels: +team=web" in update.reason
    assert stored(kube)["metadata"]["labels"]["team"] == "web"  # Git wins (force)
    managers = {m["manager"] for m in stored(kube)["metadata"]["managedFields"]}
    assert managers == {"gitsync"}  # kubectl's only field is gitsync's again
    assert_converged(loop, kube)


def test_a_change_of_labels_alone_updates_the_object_in_place(
    kube: KubeServer, loop: Loop, operator: FakeOperator
) -> None:
    loop.write({"web": doc("web", labels={"team": "web"})})
    loop.reconcile()
    uid = operator.uid("web")
    operator.set_status("web", {"phase": "Ready", "imcId": "imc-1"})

    for labels, notes in (({"team": "ops"}, None), ({"team": "ops"}, {"note": "moved"})):
        loop.write({"web": doc("web", labels=labels, annotations=notes)})
        result = loop.reconcile()

        assert result.plan is not None
        assert [a.kind for a in result.plan.changes] == [ActionKind.UPDATE]
        assert operator.uid("web") == uid  # the same object: not deleted and built again
        obj = stored(kube)
        assert obj["metadata"]["labels"] == {**labels, **OWN}
        assert obj["metadata"].get("annotations") == notes
        assert obj["status"]["imcId"] == "imc-1"
        assert_converged(loop, kube)


def test_gitsyncs_own_bookkeeping_is_not_reported_as_metadata_from_git(
    kube: KubeServer, loop: Loop
) -> None:
    loop.provider.create(
        CacheSpec(name="web", images=("nginx:1.27.2",), prune=False, labels=(("team", "web"),)),
        owner=CONTROLLER,
    )
    (web,) = loop.provider.observe().caches
    assert web.labels == (("team", "web"),)
    assert web.annotations == ()  # not gitsync.io/prune
    assert web.prune is False


@pytest.mark.parametrize(
    ("labels", "annotations", "named"),
    [
        ({MANAGED_BY_LABEL: "helm"}, {}, f"label {MANAGED_BY_LABEL}"),
        ({OWNER_LABEL: CONTROLLER}, {}, f"label {OWNER_LABEL}"),
        ({}, {APPLIED_ANNOTATION: "{}"}, f"annotation {APPLIED_ANNOTATION}"),
    ],
)
def test_git_cannot_set_gitsyncs_own_keys(
    kube: KubeServer,
    loop: Loop,
    labels: dict[str, str],
    annotations: dict[str, str],
    named: str,
) -> None:
    spec = CacheSpec(
        name="web",
        images=("nginx:1.27.2",),
        labels=tuple(labels.items()),
        annotations=tuple(annotations.items()),
    )
    with pytest.raises(PermanentError, match=f"{named} is gitsync's own"):
        loop.provider.create(spec, owner=CONTROLLER)
    assert kube.api.names(GROUP, "imagecaches") == set()


# ------------------------------------------------------------------ the fallback


@pytest.mark.parametrize("managed_fields", [True, False], ids=["managed-fields", "before-1.18"])
def test_without_server_side_apply_a_record_tells_gitsyncs_keys_from_others(
    kube: KubeServer, loop: Loop, kubectl: Kubectl, managed_fields: bool
) -> None:
    kube.api.apply_supported = False
    kube.api.managed_fields = managed_fields
    loop.write(
        {
            "web": doc(
                "web",
                labels={"team": "web", "tier": "1", "zone": "a"},
                annotations={"note": "x"},
                groups=["sg-1"],
            )
        }
    )
    loop.reconcile()
    obj = stored(kube)
    assert obj["metadata"]["labels"] == {"team": "web", "tier": "1", "zone": "a", **OWN}
    record = json.loads(obj["metadata"]["annotations"].pop(APPLIED_ANNOTATION))
    assert record == {"annotations": ["note"], "labels": ["team", "tier", "zone"]}
    assert obj["metadata"]["annotations"] == {"note": "x"}
    kubectl.patch("web", {"labels": {"cost-centre": "42"}, "annotations": {"seen-by": "audit"}})
    assert_converged(loop, kube)

    kubectl.patch("web", {"labels": {"zone": "b"}})  # kubectl label --overwrite zone=b
    loop.write({"web": doc("web", labels={"team": "web"})})
    loop.reconcile()

    obj = stored(kube)
    # Where the server keeps managed fields, `zone` is kubectl's now: dropping it from Git
    # leaves it alone, as server-side apply would. Without them only the record speaks.
    theirs = {"zone": "b"} if managed_fields else {}
    assert obj["metadata"]["labels"] == {"team": "web", "cost-centre": "42", **theirs, **OWN}
    assert obj["metadata"]["annotations"] == {
        "seen-by": "audit",
        APPLIED_ANNOTATION: '{"annotations":[],"labels":["team"]}',
    }
    assert "securityGroupIds" not in obj["spec"]
    assert_converged(loop, kube)

    loop.write({"web": doc("web")})
    loop.reconcile()
    obj = stored(kube)
    assert obj["metadata"]["labels"] == {"cost-centre": "42", **theirs, **OWN}
    assert obj["metadata"]["annotations"] == {"seen-by": "audit"}  # no keys: no record
    assert_converged(loop, kube)


def test_back_on_server_side_apply_what_the_fallback_wrote_is_cleaned_up(
    kube: KubeServer, tmp_path: Path, kubectl: Kubectl
) -> None:
    kube.api.apply_supported = False  # say, a proxy in front of the API server
    old = Loop(kube, tmp_path)
    old.write(
        {
            "web": doc(
                "web",
                labels={"team": "web", "tier": "1"},
                annotations={"note": "x", "gitsync.io/prune": "disabled"},
                secrets=["imc/pull"],
            )
        }
    )
    old.reconcile()
    old.close()
    kubectl.patch("web", {"labels": {"cost-centre": "42"}})

    kube.api.apply_supported = True  # the proxy is gone; a new gitsync process applies
    new = Loop(kube, tmp_path)
    try:
        new.write({"web": doc("web", labels={"team": "web"})})
        result = new.reconcile()

        assert result.plan is not None
        assert [a.kind for a in result.plan.changes] == [ActionKind.UPDATE]
        obj = stored(kube)
        # Apply alone would keep what the merge patches wrote: the follow-up removes it.
        assert obj["metadata"]["labels"] == {"team": "web", "cost-centre": "42", **OWN}
        assert not obj["metadata"].get("annotations")  # no note, no prune, no record
        assert "imagePullSecrets" not in obj["spec"]
        assert_converged(new, kube)

        # From now on server-side apply alone removes what Git drops.
        new.write({"web": doc("web")})
        new.reconcile()
        assert stored(kube)["metadata"]["labels"] == {"cost-centre": "42", **OWN}
        assert_converged(new, kube)
    finally:
        new.close()

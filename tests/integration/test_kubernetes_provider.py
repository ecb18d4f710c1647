"""The kubernetes provider against kmock's Kubernetes emulator, with the real `kubernetes` client.

The emulator (`kube_fixtures.KubeAPI`) speaks the wire protocol: label
selectors, pagination, server-side apply with field managers, merge patch,
preconditions and the status subresource. A stand-in operator writes status
and Events with its own user agent; every request gitsync itself makes is
checked against the RBAC rules the module declares (and the manifests grant,
see tests/unit/test_manifests.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import kmock
import pytest
from kube_fixtures import FakeOperator, KubeServer

from gitsync.controller_record import RecordFile
from gitsync.errors import ConfigError, PermanentError, TemporaryError
from gitsync.model import CacheSpec, CacheStatus
from gitsync.pricing import PriceTable
from gitsync.providers import kubernetes as kube_provider
from gitsync.providers.base import Provider
from gitsync.providers.credentials import CredentialError, PullSecretNotFoundError
from gitsync.providers.kubernetes import (
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    ClusterPullSecrets,
    KubernetesProvider,
    load_api_client,
)
from gitsync.reconciler import ReconcilePolicy, Reconciler

GROUP = "eks.cloud.tencent.com"
CONTROLLER = "ci"


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server
        # Whatever a test did, gitsync asked only for what it declares (and RBAC grants).
        declared = {
            (group, resource, verb)
            for group, resource, verbs in (
                *kube_provider.RBAC_RULES,
                *kube_provider.PULL_SECRET_RBAC_RULES,
            )
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


def write_repo(root: Path, documents: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.yaml"):
        old.unlink()
    for name, text in documents.items():
        (root / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


def cache_yaml(
    name: str,
    images: list[str],
    *,
    size: int = 20,
    retention: int = 0,
    secrets: list[str] | None = None,
    keep: bool = False,
) -> str:
    lines = [
        "apiVersion: eks.cloud.tencent.com/v1",
        "kind: ImageCache",
        "metadata:",
        f"  name: {name}",
    ]
    if keep:
        lines += ["  annotations:", "    gitsync.io/prune: disabled"]
    lines += ["spec:", f"  images: [{', '.join(images)}]", f"  imageCacheSize: {size}"]
    lines.append(f"  retentionDays: {retention}")
    if secrets:
        lines.append(f"  imagePullSecrets: [{', '.join(secrets)}]")
    return "\n".join(lines) + "\n"


def reconciler(provider: KubernetesProvider, data_dir: Path) -> Reconciler:
    return Reconciler(
        provider=provider,
        records=RecordFile(data_dir),
        policy=ReconcilePolicy(controller_id=CONTROLLER, backoff_base_seconds=0.001),
        prices=PriceTable(),
    )


def test_satisfies_the_provider_protocol(provider: KubernetesProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "kubernetes"


def test_reconcile_creates_updates_and_deletes_objects_from_git_revisions(
    kube: KubeServer, provider: KubernetesProvider, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    loop = reconciler(provider, tmp_path / "data")
    write_repo(
        repo,
        {
            "web": cache_yaml("web", ["nginx:1.27.2"], size=30, retention=7),
            "kept": cache_yaml("kept", ["alpine:3.20"], keep=True),
            "private": cache_yaml(
                "private", ["registry.example.com/team/api:1.0"], secrets=["imc/pull"]
            ),
            "old": cache_yaml("old", ["busybox:1.36"]),
        },
    )
    first = loop.reconcile(tree=repo, revision="r1")
    assert first.error is None, first.error
    assert kube.api.names(GROUP, "imagecaches") == {"web", "kept", "private", "old"}
    web = kube.api.get(GROUP, "imagecaches", None, "web")
    assert web["metadata"]["labels"] == {MANAGED_BY_LABEL: "gitsync", OWNER_LABEL: CONTROLLER}
    assert web["spec"] == {"images": ["nginx:1.27.2"], "imageCacheSize": 30, "retentionDays": 7}
    managers = {(m["manager"], m["operation"]) for m in web["metadata"]["managedFields"]}
    assert managers == {("gitsync", "Apply")}
    kept = kube.api.get(GROUP, "imagecaches", None, "kept")
    assert kept["metadata"]["annotations"] == {"gitsync.io/prune": "disabled"}
    # The operator has not acted yet: every cache is reported Pending and owned by us.
    assert first.observed_after is not None
    assert {(c.name, c.status, c.owner) for c in first.observed_after.caches} == {
        (name, CacheStatus.PENDING, CONTROLLER) for name in ("web", "kept", "private", "old")
    }

    write_repo(
        repo,
        {
            "web": cache_yaml("web", ["nginx:1.27.3"], size=30, retention=7),
            "private": cache_yaml("private", ["registry.example.com/team/api:1.0"]),
            "new": cache_yaml("new", ["redis:7.4"]),
        },
    )
    second = loop.reconcile(tree=repo, revision="r2")
    assert second.error is None, second.error
    assert kube.api.names(GROUP, "imagecaches") == {"web", "kept", "private", "new"}
    assert kube.api.get(GROUP, "imagecaches", None, "web")["spec"]["images"] == ["nginx:1.27.3"]
    # Server-side apply removes what gitsync applied before and Git dropped since.
    assert "imagePullSecrets" not in kube.api.get(GROUP, "imagecaches", None, "private")["spec"]
    # Pruning is disabled on the object itself, so it outlives its spec.
    assert "kept" in kube.api.names(GROUP, "imagecaches")

    mark = kube.mark()
    third = loop.reconcile(tree=repo, revision="r2")
    assert third.error is None
    assert third.plan is not None
    assert not third.plan.has_changes
    writes = [r for r in kube.requests_since(mark) if str(r.method.value) != "GET"]
    assert writes == [], "an unchanged revision must not write anything"


def test_status_and_events_written_by_the_operator_map_onto_the_model(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator
) -> None:
    for name in ("ready", "updatefailed", "odd", "fresh", "stale"):
        provider.create(
            CacheSpec(name=name, images=("nginx:1.27.2",), retention_days=7), owner="ci"
        )
    operator.set_status(
        "ready",
        {
            "phase": "Ready",
            "imcId": "imc-ready01",
            "snapshotId": "snap-1",
            "creationTime": "2026-11-20T03:00:00Z",
            "expireDateTime": "2026-11-27T03:00:00Z",
            "lastMatchedTime": "2026-11-21T08:30:00.123456789Z",
        },
    )
    operator.set_status("updatefailed", {"imcPhase": "UpdateFailed", "imcId": "imc-uf"})
    operator.set_status("odd", {"phase": "Defrosting"})
    operator.set_status("stale", {"phase": "Ready", "observedGeneration": 1})
    provider.update(
        CacheSpec(name="stale", images=("nginx:1.27.3",), retention_days=7),
        next(c for c in provider.observe().caches if c.name == "stale"),
    )
    involved = {
        "apiVersion": "eks.cloud.tencent.com/v1",
        "kind": "ImageCache",
        "name": "ready",
        "uid": operator.uid("ready"),
    }
    operator.event(
        involved=involved, reason="Creating", message="pulling", last="2026-11-20T03:00:00Z"
    )
    operator.event(
        involved=involved, reason="Created", message="done", last="2026-11-20T03:05:00Z", count=2
    )
    operator.event(  # same name, another kind: not ours
        involved={"apiVersion": "v1", "kind": "Pod", "name": "ready", "uid": "pod-uid"},
        reason="Pulled",
        message="pod event",
    )

    caches = {c.name: c for c in provider.observe().caches}

    ready = caches["ready"]
    assert ready.status is CacheStatus.READY
    assert ready.cache_id == "imc-ready01"
    assert ready.snapshot_id == "snap-1"
    assert ready.created_at == datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    assert ready.expires_at == datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    assert ready.last_matched_at == datetime(2026, 11, 21, 8, 30, 0, 123456, tzinfo=UTC)
    assert [(e.reason, e.count) for e in ready.events] == [("Creating", 1), ("Created", 2)]
    assert caches["updatefailed"].status is CacheStatus.UPDATE_FAILED
    assert caches["updatefailed"].cache_id == "imc-uf"
    odd = caches["odd"]
    assert odd.status is CacheStatus.PENDING
    assert [(e.type, e.reason) for e in odd.events] == [("Warning", "UnknownPhase")]
    assert "'Defrosting'" in odd.events[0].message
    fresh = caches["fresh"]
    assert fresh.status is CacheStatus.PENDING
    assert fresh.events == ()
    assert fresh.cache_id == operator.uid("fresh")  # no cloud id yet
    assert fresh.expires_at is not None
    assert fresh.created_at is not None
    assert (fresh.expires_at - fresh.created_at).days == 7  # derived from retentionDays
    # The operator's Ready describes generation 1; the spec is at 2 now.
    assert caches["stale"].status is CacheStatus.UPDATING


def test_objects_gitsync_does_not_own_are_left_alone(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator, tmp_path: Path
) -> None:
    operator.create_cache(
        {
            "apiVersion": "eks.cloud.tencent.com/v1",
            "kind": "ImageCache",
            "metadata": {"name": "by-hand"},
            "spec": {"images": ["nginx:1.0"]},
        }
    )
    operator.create_cache(
        {
            "apiVersion": "eks.cloud.tencent.com/v1",
            "kind": "ImageCache",
            "metadata": {
                "name": "other-team",
                "labels": {MANAGED_BY_LABEL: "gitsync", OWNER_LABEL: "other"},
            },
            "spec": {"images": ["nginx:1.0"]},
        }
    )
    before = {n: kube.api.get(GROUP, "imagecaches", None, n) for n in ("by-hand", "other-team")}
    repo = write_repo(
        tmp_path / "repo",
        {
            "by-hand": cache_yaml("by-hand", ["nginx:2.0"]),
            "other-team": cache_yaml("other-team", ["nginx:2.0"]),
            "mine": cache_yaml("mine", ["nginx:2.0"]),
        },
    )

    result = reconciler(provider, tmp_path / "data").reconcile(tree=repo, revision="r1")

    # The hand-made object is not listed (label selector) and create refuses to adopt it.
    assert result.error is not None
    assert "by-hand" in result.error
    assert "already exists with no gitsync owner label" in result.error
    # Another controller's object is listed with its owner, so the planner keeps out of it.
    assert result.plan is not None
    assert any(n.name == "other-team" for n in result.plan.notices)
    after = {n: kube.api.get(GROUP, "imagecaches", None, n) for n in ("by-hand", "other-team")}
    assert after == before
    assert kube.api.get(GROUP, "imagecaches", None, "mine")["spec"]["images"] == ["nginx:2.0"]

    foreign = next(c for c in provider.observe().caches if c.name == "other-team")
    assert foreign.owner == "other"
    by_hand = kube_provider.observed_from(before["by-hand"])
    assert by_hand.owner is None
    with pytest.raises(PermanentError, match="only the objects it created"):
        provider.delete(by_hand)
    with pytest.raises(PermanentError, match="only the objects it created"):
        provider.update(CacheSpec(name="by-hand", images=("x:1",)), by_hand)
    assert kube.api.get(GROUP, "imagecaches", None, "by-hand") == before["by-hand"]


def test_lists_use_the_label_selector_and_pagination(
    kube: KubeServer, operator: FakeOperator
) -> None:
    client = kube.client()
    provider = KubernetesProvider(api_client=client, page_size=3)
    for index in range(7):
        provider.create(CacheSpec(name=f"c{index}", images=("nginx:1",)), owner="ci")
    for index in range(3):
        operator.create_cache(
            {
                "apiVersion": "eks.cloud.tencent.com/v1",
                "kind": "ImageCache",
                "metadata": {"name": f"other{index}"},
                "spec": {"images": ["nginx:1"]},
            }
        )
    mark = kube.mark()

    caches = provider.observe().caches

    assert [c.name for c in caches] == [f"c{i}" for i in range(7)]
    lists = [
        r for r in kube.requests_since(mark) if r.resource and r.resource.plural == "imagecaches"
    ]
    assert len(lists) == 3  # 7 objects, 3 per page
    assert {r.params.get("labelSelector") for r in lists} == {
        "app.kubernetes.io/managed-by=gitsync"
    }
    assert {r.params.get("limit") for r in lists} == {"3"}
    assert [("continue" in r.params) for r in lists] == [False, True, True]
    events = [r for r in kube.requests_since(mark) if r.resource and r.resource.plural == "events"]
    assert len(events) == 1
    assert events[0].params.get("fieldSelector") == "involvedObject.kind=ImageCache"
    client.close()


def test_an_expired_continue_token_restarts_the_list(kube: KubeServer) -> None:
    client = kube.client()
    provider = KubernetesProvider(api_client=client, page_size=2)
    for index in range(5):
        provider.create(CacheSpec(name=f"c{index}", images=("nginx:1",)), owner="ci")
    expired: list[str] = []

    def compact_before_the_first_continuation(request: kmock.Request) -> None:
        if "continue" in request.params and not expired:
            expired.append(request.params["continue"])
            kube.api.compact()  # etcd compaction: the token's snapshot is gone (410 Expired)

    kube.api.before.append(compact_before_the_first_continuation)

    assert [c.name for c in provider.observe().caches] == [f"c{i}" for i in range(5)]
    assert len(expired) == 1
    client.close()


def test_without_server_side_apply_writes_fall_back_to_create_and_merge_patch(
    kube: KubeServer, provider: KubernetesProvider
) -> None:
    kube.api.apply_supported = False
    spec = CacheSpec(name="web", images=("nginx:1",), image_pull_secrets=("imc/pull",), prune=False)
    created = provider.create(spec, owner="ci")
    assert created.owner == "ci"
    assert created.prune is False
    stored = kube.api.get(GROUP, "imagecaches", None, "web")
    assert stored["spec"]["imagePullSecrets"] == ["imc/pull"]
    assert stored["metadata"]["annotations"] == {"gitsync.io/prune": "disabled"}

    current = provider.observe().caches[0]
    updated = provider.update(CacheSpec(name="web", images=("nginx:2",)), current)

    stored = kube.api.get(GROUP, "imagecaches", None, "web")
    assert stored["spec"] == {"images": ["nginx:2"], "imageCacheSize": 20, "retentionDays": 0}
    assert not stored["metadata"].get("annotations")  # dropped fields are nulled explicitly
    assert updated.prune is True
    methods = [
        (str(r.method.value), r.headers.get("Content-Type", ""))
        for r in kube.requests()
        if str(r.method.value) in ("POST", "PATCH")
    ]
    # One refused apply, remembered: then create and merge patch only.
    assert methods == [
        ("PATCH", "application/apply-patch+yaml"),
        ("POST", "application/json"),
        ("PATCH", "application/merge-patch+json"),
    ]


def test_a_failed_cache_is_rebuilt_by_deleting_and_applying_again(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator
) -> None:
    spec = CacheSpec(name="web", images=("nginx:1",))
    provider.create(spec, owner="ci")
    old_uid = operator.uid("web")
    operator.add_finalizer("web")
    operator.set_status("web", {"phase": "Failed"})
    failed = provider.observe().caches[0]
    assert failed.status is CacheStatus.FAILED

    # The operator's finalizer holds the old object: gitsync waits instead of patching it.
    with pytest.raises(TemporaryError, match="still being deleted"):
        provider.update(spec, failed)
    terminating = provider.observe().caches[0]
    assert terminating.status is CacheStatus.PENDING
    assert [e.reason for e in terminating.events] == ["Terminating"]
    with pytest.raises(TemporaryError, match="still being deleted"):
        provider.create(spec, owner="ci")

    kube.api.remove_finalizers(GROUP, "imagecaches", None, "web")
    rebuilt = provider.create(spec, owner="ci")
    assert rebuilt.status is CacheStatus.PENDING
    assert operator.uid("web") != old_uid

    # An expired Ready cache whose spec is unchanged: update() rebuilds at once.
    ready_uid = operator.uid("web")
    operator.set_status("web", {"phase": "Ready", "expireDateTime": "2026-01-01T00:00:00Z"})
    provider.update(spec, provider.observe().caches[0])
    assert operator.uid("web") != ready_uid


def test_delete_never_removes_an_object_that_replaced_the_observed_one(
    kube: KubeServer, provider: KubernetesProvider, operator: FakeOperator
) -> None:
    provider.create(CacheSpec(name="web", images=("nginx:1",)), owner="ci")
    observed = provider.observe().caches[0]
    kube.api.objects.pop((GROUP, "imagecaches", None, "web"))  # gone behind our back …
    operator.create_cache(  # … and a hand-made object took the name
        {
            "apiVersion": "eks.cloud.tencent.com/v1",
            "kind": "ImageCache",
            "metadata": {"name": "web"},
            "spec": {"images": ["nginx:9"]},
        }
    )

    provider.delete(observed)

    assert kube.api.get(GROUP, "imagecaches", None, "web")["spec"]["images"] == ["nginx:9"]
    provider.delete(observed)  # and again: still no error, still not deleted
    assert "web" in kube.api.names(GROUP, "imagecaches")


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, PermanentError), (401, PermanentError), (500, TemporaryError), (429, TemporaryError)],
)
def test_api_errors_are_classified_transient_or_permanent(
    kube: KubeServer, provider: KubernetesProvider, status: int, error: type[Exception]
) -> None:
    kube.api[kmock.action.LIST] << status << {"kind": "Status", "message": "injected"}
    with pytest.raises(error, match=f"HTTP {status}: injected"):
        provider.observe()


def test_a_missing_custom_resource_definition_is_a_permanent_error(
    kube: KubeServer, provider: KubernetesProvider
) -> None:
    (
        kube.api[kmock.action.LIST, kmock.resource(GROUP, "v1", "imagecaches")]
        << 404
        << {
            "kind": "Status",
            "message": "the server could not find the requested resource",
        }
    )
    with pytest.raises(PermanentError, match="install the imc-operator add-on"):
        provider.observe()


def test_an_unreachable_api_server_is_a_temporary_error(kube: KubeServer) -> None:
    client = kube.client()
    client.configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    provider = KubernetesProvider(api_client=client, request_timeout=(1.0, 1.0))
    client.rest_client.pool_manager.connection_pool_kw["retries"] = False
    with pytest.raises(TemporaryError, match="cannot reach the Kubernetes API server"):
        provider.observe()
    client.close()


def test_config_comes_from_a_kubeconfig_context(
    kube: KubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kube.write_kubeconfig(
        tmp_path / "config", contexts={"elsewhere": "http://127.0.0.1:9"}
    )
    client = load_api_client(kubeconfig=config, context="emulator")
    assert client.configuration.host == kube.url
    KubernetesProvider(api_client=client).observe()  # talks to the emulator
    client.close()
    other = load_api_client(kubeconfig=config, context="elsewhere")
    assert other.configuration.host == "http://127.0.0.1:9"
    other.close()
    with pytest.raises(ConfigError, match="context 'missing'"):
        load_api_client(kubeconfig=config, context="missing")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(ConfigError, match="pass --kubeconfig"):
        load_api_client()


def test_a_controller_id_that_is_no_label_value_is_refused(provider: KubernetesProvider) -> None:
    with pytest.raises(ConfigError, match="cannot be the value of label"):
        provider.create(CacheSpec(name="web", images=("nginx:1",)), owner="team a/b")


def _secret(
    name: str, namespace: str, *, type_: str, key: str, payload: object
) -> dict[str, object]:
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": type_,
        "data": {key: encoded},
    }


def test_pull_secrets_for_the_local_backend_come_from_cluster_secrets(
    kube: KubeServer, operator: FakeOperator
) -> None:
    auth = base64.b64encode(b"robot:s3cret").decode()
    operator.core.create_namespaced_secret(
        "imc",
        _secret(
            "pull",
            "imc",
            type_="kubernetes.io/dockerconfigjson",
            key=".dockerconfigjson",
            payload={"auths": {"registry.example.com": {"auth": auth}}},
        ),
        _preload_content=False,
    ).release_conn()
    operator.core.create_namespaced_secret(
        "default",
        _secret(
            "legacy",
            "default",
            type_="kubernetes.io/dockercfg",
            key=".dockercfg",
            payload={"https://index.docker.io/v1/": {"username": "hub", "password": "pw"}},
        ),
        _preload_content=False,
    ).release_conn()
    operator.core.create_namespaced_secret(
        "imc",
        {"metadata": {"name": "opaque"}, "type": "Opaque", "data": {"x": "eA=="}},
        _preload_content=False,
    ).release_conn()
    client = kube.client()
    secrets = ClusterPullSecrets(api_client=client)

    store = secrets.load_all(["imc/pull", "legacy"])

    credential = store.lookup("registry.example.com", "team/api")
    assert credential is not None
    assert credential.username == "robot"
    assert credential.password == "s3cret"
    assert "imc/pull" in credential.source
    hub = store.lookup("docker.io", "library/nginx")
    assert hub is not None
    assert hub.username == "hub"
    with pytest.raises(PullSecretNotFoundError, match="no Secret absent in namespace imc"):
        secrets.load("imc/absent")
    with pytest.raises(CredentialError, match="type is 'Opaque'"):
        secrets.load("imc/opaque")
    assert "s3cret" not in repr(store)
    client.close()

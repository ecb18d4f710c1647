"""The Kubernetes stand-in admits objects and keeps field ownership as a real API server does.

These requests are raw HTTP, as any client would send them, so what is
checked is the stand-in itself: unknown fields are dropped (or refused with
`fieldValidation=Strict`), the CRD's defaults are filled in, and an invalid
object is answered 422 with a Status of reason Invalid naming each field,
and is not stored. The CRD is `manifests/crd-imagecache.yaml`, as users
install it. Server-side apply follows the field manager's rules, which the
kubernetes provider relies on to tell its labels and annotations from
others': what an applier stops sending goes unless someone else owns it,
fields set alike are shared, another manager's field is a 409 conflict
unless forced, and every other write owns what it changed. core/v1 Events
are checked by the server's Event rules: the kind client-go's recorder
writes is accepted, one in the wrong namespace for its object, without a
name or without what an `eventTime` needs is 422, and one whose fields do
not decode is 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kube_fixtures import KubeServer
from kube_validation import StructuralSchema

GROUP = "eks.cloud.tencent.com"
CACHES = f"/apis/{GROUP}/v1/imagecaches"


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


@pytest.fixture
def http(kube: KubeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube.url, timeout=10) as client:
        yield client


def cache(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ImageCache",
        "metadata": {"name": name},
        "spec": {"images": ["nginx:1.27.2"], **spec},
    }


def stored(kube: KubeServer, name: str) -> dict[str, Any]:
    return kube.api.get(GROUP, "imagecaches", None, name)


def test_unknown_fields_are_pruned_and_defaults_filled_in(
    kube: KubeServer, http: httpx.Client
) -> None:
    body = cache(imageCacheSzie=50)  # the typo a provider might make
    body["metadata"]["labelz"] = {"a": "b"}
    body["extra"] = True
    answer = http.post(CACHES, json=body)
    assert answer.status_code < 300, answer.text

    obj = stored(kube, "web")
    assert "extra" not in obj
    assert "labelz" not in obj["metadata"]
    # The typo is gone and the schema's defaults are in: what a real cluster would hold.
    assert obj["spec"] == {"images": ["nginx:1.27.2"], "imageCacheSize": 20, "retentionDays": 0}
    assert answer.json()["spec"] == obj["spec"]

    # The status keeps whatever the operator writes (x-kubernetes-preserve-unknown-fields).
    status = {"phase": "Ready", "imcId": "imc-1", "anything": {"nested": [1, 2]}}
    answer = http.patch(
        f"{CACHES}/web/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    assert stored(kube, "web")["status"] == status


def test_strict_field_validation_refuses_unknown_fields(
    kube: KubeServer, http: httpx.Client
) -> None:
    answer = http.post(f"{CACHES}?fieldValidation=Strict", json=cache(imageCacheSzie=50))
    assert answer.status_code == 400
    assert answer.json()["reason"] == "BadRequest"
    assert 'unknown field "spec.imageCacheSzie"' in answer.json()["message"]
    assert kube.api.names(GROUP, "imagecaches") == set()


LONG = "x" * 64

INVALID: dict[str, tuple[dict[str, Any], str, str, str]] = {
    # case: (object, field, cause reason, words of the message)
    "capital and underscore in the name": (
        cache("Web_1"),
        "metadata.name",
        "FieldValueInvalid",
        "lowercase RFC 1123 subdomain",
    ),
    "name over 253 characters": (
        cache("a" * 254),
        "metadata.name",
        "FieldValueInvalid",
        "no more than 253 characters",
    ),
    "label value with a space": (
        {**cache(), "metadata": {"name": "web", "labels": {"gitsync.io/owner": "ci x"}}},
        "metadata.labels",
        "FieldValueInvalid",
        "a valid label must be an empty string",
    ),
    "label value over 63 characters": (
        {**cache(), "metadata": {"name": "web", "labels": {"team": LONG}}},
        "metadata.labels",
        "FieldValueInvalid",
        "no more than 63 characters",
    ),
    "label key with two slashes": (
        {**cache(), "metadata": {"name": "web", "labels": {"a.io/b/c": "x"}}},
        "metadata.labels",
        "FieldValueInvalid",
        "optional DNS subdomain prefix",
    ),
    "label key name part over 63 characters": (
        {**cache(), "metadata": {"name": "web", "labels": {f"a.io/{LONG}": "x"}}},
        "metadata.labels",
        "FieldValueInvalid",
        "name part must be no more than 63 characters",
    ),
    "label key with an invalid prefix": (
        {**cache(), "metadata": {"name": "web", "labels": {"A_B/name": "x"}}},
        "metadata.labels",
        "FieldValueInvalid",
        "prefix part a lowercase RFC 1123 subdomain",
    ),
    "annotations over 256 KiB": (
        {**cache(), "metadata": {"name": "web", "annotations": {"big": "x" * 262_142}}},
        "metadata.annotations",
        "FieldValueTooLong",
        "must have at most 262144 bytes",
    ),
    "size under the minimum": (
        cache(imageCacheSize=10),
        "spec.imageCacheSize",
        "FieldValueInvalid",
        "should be greater than or equal to 20",
    ),
    "size over the maximum": (
        cache(imageCacheSize=32001),
        "spec.imageCacheSize",
        "FieldValueInvalid",
        "should be less than or equal to 32000",
    ),
    "size as a string": (
        cache(imageCacheSize="50"),
        "spec.imageCacheSize",
        "FieldValueTypeInvalid",
        "must be of type integer",
    ),
    "negative retention": (
        cache(retentionDays=-1),
        "spec.retentionDays",
        "FieldValueInvalid",
        "should be greater than or equal to 0",
    ),
    "no images": (
        {**cache(), "spec": {"imageCacheSize": 20}},
        "spec.images",
        "FieldValueRequired",
        "Required value",
    ),
    "an empty image list": (
        {**cache(), "spec": {"images": []}},
        "spec.images",
        "FieldValueInvalid",
        "should have at least 1 items",
    ),
    "101 images": (
        {**cache(), "spec": {"images": [f"nginx:{n}" for n in range(101)]}},
        "spec.images",
        "FieldValueTooMany",
        "must have at most 100 items",
    ),
    "an image reference over 512 characters": (
        {**cache(), "spec": {"images": ["a" * 513]}},
        "spec.images[0]",
        "FieldValueTooLong",
        "may not be longer than 512",
    ),
    "a pull secret without a namespace": (
        cache(imagePullSecrets=["regcred"]),
        "spec.imagePullSecrets[0]",
        "FieldValueInvalid",
        "should match",
    ),
    "no spec": (
        {k: v for k, v in cache().items() if k != "spec"},
        "spec",
        "FieldValueRequired",
        "Required value",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_image_cache_is_422_and_not_stored(
    kube: KubeServer, http: httpx.Client, case: str
) -> None:
    body, field, reason, words = INVALID[case]
    answer = http.post(CACHES, json=body)

    assert answer.status_code == 422, answer.text
    status = answer.json()
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status",
        "Failure",
        "Invalid",
        422,
    )
    name = body["metadata"]["name"]
    assert status["message"].startswith(f'ImageCache.{GROUP} "{name}" is invalid: {field}: ')
    assert (status["details"]["kind"], status["details"]["group"]) == ("ImageCache", GROUP)
    causes = [(c["field"], c["reason"]) for c in status["details"]["causes"]]
    assert (field, reason) in causes, status
    assert any(words in c["message"] for c in status["details"]["causes"]), status
    assert kube.api.names(GROUP, "imagecaches") == set()


def test_valid_metadata_is_accepted(kube: KubeServer, http: httpx.Client) -> None:
    body = cache("web.team-a")
    body["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "gitsync",
        "gitsync.io/owner": "ci-1.main_x",
        "empty": "",
    }
    body["metadata"]["annotations"] = {"gitsync.io/prune": "disabled", "note": "x" * 200_000}
    answer = http.post(CACHES, json=body)
    assert answer.status_code < 300, answer.text
    assert stored(kube, "web.team-a")["metadata"]["labels"] == body["metadata"]["labels"]


def test_a_write_that_would_make_an_object_invalid_changes_nothing(
    kube: KubeServer, http: httpx.Client
) -> None:
    assert http.post(CACHES, json=cache(imageCacheSize=30)).status_code < 300
    before = stored(kube, "web")

    merge = {"Content-Type": "application/merge-patch+json"}
    answer = http.patch(f"{CACHES}/web", json={"spec": {"imageCacheSize": 5}}, headers=merge)
    assert answer.status_code == 422
    assert answer.json()["details"]["causes"][0]["field"] == "spec.imageCacheSize"

    replaced = {**before, "spec": {"images": []}}
    answer = http.put(f"{CACHES}/web", json=replaced)
    assert answer.status_code == 422
    assert answer.json()["details"]["causes"][0]["field"] == "spec.images"

    apply = {"Content-Type": "application/apply-patch+yaml"}
    invalid = cache(imageCacheSize=99999)
    answer = http.patch(
        f"{CACHES}/web?fieldManager=gitsync&force=true", json=invalid, headers=apply
    )
    assert answer.status_code == 422
    assert "should be less than or equal to 32000" in answer.json()["message"]

    assert stored(kube, "web") == before  # not even the resourceVersion moved


def test_server_side_apply_prunes_before_it_takes_ownership(
    kube: KubeServer, http: httpx.Client
) -> None:
    body = cache(imageCacheSize=30, imageCacheSzie=50)
    answer = http.patch(
        f"{CACHES}/web?fieldManager=gitsync",
        json=body,
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert answer.status_code < 300, answer.text
    obj = stored(kube, "web")
    assert obj["spec"] == {"images": ["nginx:1.27.2"], "imageCacheSize": 30, "retentionDays": 0}
    (managed,) = obj["metadata"]["managedFields"]
    assert managed["manager"] == "gitsync"
    assert set(managed["fieldsV1"]["f:spec"]) == {"f:images", "f:imageCacheSize"}


def test_built_in_kinds_get_the_metadata_rules_too(kube: KubeServer, http: httpx.Client) -> None:
    secrets = "/api/v1/namespaces/apps/secrets"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "Regcred"}}
    answer = http.post(secrets, json=secret)
    assert answer.status_code == 422
    assert answer.json()["message"].startswith('Secret "Regcred" is invalid: metadata.name: ')
    assert "group" not in answer.json()["details"]  # the core group has no name

    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "gitsync-leader", "colour": "blue"},
        "spec": {"holderIdentity": "a"},
    }
    answer = http.post("/apis/coordination.k8s.io/v1/namespaces/default/leases", json=lease)
    assert answer.status_code < 300, answer.text
    held = kube.api.get("coordination.k8s.io", "leases", "default", "gitsync-leader")
    assert "colour" not in held["metadata"]


def test_the_schema_rules_a_future_crd_may_use() -> None:
    """Enums, nullable, maps and nested preserved fields: none in today's CRD, all handled."""
    schema = StructuralSchema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "mode": {"type": "string", "enum": ["fast", "cheap"], "default": "fast"},
                        "note": {"type": "string", "nullable": True},
                        "sizes": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {"gib": {"type": "integer", "minimum": 1}},
                            },
                        },
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "items": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"n": {"type": "integer"}}},
                        },
                    },
                },
            },
        }
    )
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "a"},
        "spec": {
            "note": None,
            "sizes": {"small": {"gib": 2, "typo": 1}},
            "extra": {"anything": {"goes": [1]}},
            "items": [{"n": 1, "m": 2}],
            "unknown": 1,
        },
    }
    pruned, dropped = schema.prune(obj)
    assert dropped == ["spec.sizes.small.typo", "spec.items[0].m", "spec.unknown"]
    schema.default(pruned)
    assert pruned == {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "a"},
        "spec": {
            "mode": "fast",
            "note": None,
            "sizes": {"small": {"gib": 2}},
            "extra": {"anything": {"goes": [1]}},
            "items": [{"n": 1}],
        },
    }
    assert schema.causes(pruned) == []

    pruned["spec"]["mode"] = "slow"
    pruned["spec"]["sizes"]["large"] = {"gib": 0}
    pruned["spec"]["items"][0]["n"] = True  # a boolean is not an integer
    causes = {(c.field, c.reason): c.message for c in schema.causes(pruned)}
    assert causes == {
        ("spec.items[0].n", "FieldValueTypeInvalid"): (
            'Invalid value: "boolean": spec.items[0].n in body must be of type integer: "boolean"'
        ),
        ("spec.mode", "FieldValueNotSupported"): (
            'Unsupported value: "slow": supported values: "fast", "cheap"'
        ),
        ("spec.sizes.large.gib", "FieldValueInvalid"): (
            "Invalid value: 0: spec.sizes.large.gib in body should be greater than or equal to 1"
        ),
    }


# ------------------------------------------------------- server-side apply semantics
#
# What the real API server's field manager (structured-merge-diff) does, which the
# kubernetes provider relies on to tell its labels and annotations from everyone else's.

APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def labelled(labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = cache()
    body["metadata"]["labels"] = labels
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


def apply(
    http: httpx.Client, body: dict[str, Any], *, manager: str, force: bool = False
) -> httpx.Response:
    query = f"fieldManager={manager}" + ("&force=true" if force else "")
    return http.patch(f"{CACHES}/{body['metadata']['name']}?{query}", json=body, headers=APPLY)


def merge(
    http: httpx.Client, name: str, body: dict[str, Any], *, manager: str | None = None
) -> httpx.Response:
    query = f"?fieldManager={manager}" if manager else ""
    return http.patch(f"{CACHES}/{name}{query}", json=body, headers=MERGE)


def owned(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, operation)."""
    return {(m["manager"], m["operation"]): m for m in obj["metadata"].get("managedFields", [])}


def label_keys(entry: dict[str, Any]) -> set[str]:
    labels = entry["fieldsV1"].get("f:metadata", {}).get("f:labels", {})
    return {k[2:] for k in labels if k.startswith("f:")}


def test_apply_removes_what_the_manager_stops_sending_and_keeps_the_rest(
    kube: KubeServer, http: httpx.Client
) -> None:
    first = labelled({"team": "web", "tier": "1"}, {"note": "x"})
    assert apply(http, first, manager="gitsync").status_code == 200
    added = merge(http, "web", {"metadata": {"labels": {"extra": "kept"}}}, manager="kubectl-label")
    assert added.status_code == 200, added.text

    obj = stored(kube, "web")
    managers = owned(obj)
    assert label_keys(managers[("gitsync", "Apply")]) == {"team", "tier"}
    assert managers[("gitsync", "Apply")]["fieldsV1"]["f:metadata"]["f:annotations"] == {
        "f:note": {}
    }
    assert label_keys(managers[("kubectl-label", "Update")]) == {"extra"}
    assert managers[("kubectl-label", "Update")]["apiVersion"] == f"{GROUP}/v1"
    assert managers[("kubectl-label", "Update")]["time"].endswith("Z")

    # Stop sending `tier` and the annotation: gone. `extra` was never ours: kept.
    answer = apply(http, labelled({"team": "web"}), manager="gitsync")
    assert answer.status_code == 200, answer.text
    obj = stored(kube, "web")
    assert obj["metadata"]["labels"] == {"team": "web", "extra": "kept"}
    assert "annotations" not in obj["metadata"]
    assert label_keys(owned(obj)[("gitsync", "Apply")]) == {"team"}
    assert answer.json()["metadata"]["labels"] == obj["metadata"]["labels"]


def test_a_field_two_appliers_set_alike_is_shared_and_stays_until_both_drop_it(
    kube: KubeServer, http: httpx.Client
) -> None:
    assert apply(http, labelled({"team": "web"}), manager="gitsync").status_code == 200
    # Same value from another applier, without force: no conflict, the field is shared.
    assert apply(http, labelled({"team": "web"}), manager="helm").status_code == 200
    managers = owned(stored(kube, "web"))
    assert label_keys(managers[("gitsync", "Apply")]) == {"team"}
    assert label_keys(managers[("helm", "Apply")]) == {"team"}

    assert apply(http, cache(), manager="gitsync").status_code == 200
    assert stored(kube, "web")["metadata"]["labels"] == {"team": "web"}  # helm still owns it
    assert apply(http, cache(), manager="helm").status_code == 200
    assert "labels" not in stored(kube, "web")["metadata"]


def test_changing_another_managers_field_is_a_conflict_unless_forced(
    kube: KubeServer, http: httpx.Client
) -> None:
    assert apply(http, labelled({"team": "web"}), manager="gitsync").status_code == 200
    # An Update that changes a value takes the field from every other manager.
    overwritten = merge(http, "web", {"metadata": {"labels": {"team": "ops"}}}, manager="kubectl")
    assert overwritten.status_code == 200
    managers = owned(stored(kube, "web"))
    assert label_keys(managers[("kubectl", "Update")]) == {"team"}
    assert label_keys(managers[("gitsync", "Apply")]) == set()  # it keeps the spec only
    before = stored(kube, "web")

    answer = apply(http, labelled({"team": "web"}), manager="helm")
    assert answer.status_code == 409
    status = answer.json()
    assert status["reason"] == "Conflict"
    assert status["message"].startswith(
        f'Apply failed with 1 conflict: conflict with "kubectl" using {GROUP}/v1 at '
    )
    assert status["message"].endswith(": .metadata.labels.team")
    assert [(c["type"], c["field"]) for c in status["details"]["causes"]] == [
        ("FieldManagerConflict", ".metadata.labels.team")
    ]
    assert stored(kube, "web") == before  # refused: nothing changed

    forced = apply(http, labelled({"team": "web"}), manager="helm", force=True)
    assert forced.status_code == 200, forced.text
    obj = stored(kube, "web")
    assert obj["metadata"]["labels"] == {"team": "web"}
    assert label_keys(owned(obj)[("helm", "Apply")]) == {"team"}
    assert ("kubectl", "Update") not in owned(obj)  # it lost its only field


def test_a_conflict_lists_every_field_by_manager(kube: KubeServer, http: httpx.Client) -> None:
    assert apply(http, labelled({"a": "1", "b": "1"}), manager="one").status_code == 200
    assert apply(http, labelled({"c": "1"}), manager="two").status_code == 200
    answer = apply(http, labelled({"a": "2", "b": "2", "c": "2"}), manager="three")
    assert answer.status_code == 409
    assert answer.json()["message"] == (
        "Apply failed with 3 conflicts: "
        'conflicts with "one":\n- .metadata.labels.a\n- .metadata.labels.b\n'
        'conflicts with "two":\n- .metadata.labels.c'
    )


def test_spec_fields_follow_the_same_rules(kube: KubeServer, http: httpx.Client) -> None:
    body = cache(imagePullSecrets=["imc/pull"], securityGroupIds=["sg-1"])
    assert apply(http, body, manager="gitsync").status_code == 200
    assert apply(http, cache(), manager="gitsync").status_code == 200
    obj = stored(kube, "web")
    assert "imagePullSecrets" not in obj["spec"]
    assert "securityGroupIds" not in obj["spec"]
    # The schema's defaults fill in what nobody sends; nobody owns them.
    assert obj["spec"]["imageCacheSize"] == 20
    assert set(owned(obj)[("gitsync", "Apply")]["fieldsV1"]["f:spec"]) == {"f:images"}


def test_updates_own_what_they_change_with_the_map_itself_and_their_user_agent(
    kube: KubeServer, http: httpx.Client
) -> None:
    body = labelled({"team": "web"})
    answer = http.post(CACHES, json=body, headers={"User-Agent": "kubectl/v1.31.0 (linux)"})
    assert answer.status_code < 300, answer.text
    (entry,) = stored(kube, "web")["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Update")
    # A map an Update adds is owned as a whole too: the `.` entry beside its members.
    assert entry["fieldsV1"]["f:metadata"]["f:labels"] == {".": {}, "f:team": {}}
    assert "f:images" in entry["fieldsV1"]["f:spec"]

    # Setting a value to what it already is changes nothing, so takes nothing.
    same = merge(http, "web", {"metadata": {"labels": {"team": "web"}}}, manager="other")
    assert same.status_code == 200
    assert ("other", "Update") not in owned(stored(kube, "web"))
    # Removing a field removes it from every manager's set.
    gone = merge(http, "web", {"metadata": {"labels": {"team": None}}}, manager="other")
    assert gone.status_code == 200
    obj = stored(kube, "web")
    assert "f:team" not in str(obj["metadata"]["managedFields"])

    # Status writes are recorded under their subresource.
    status = http.patch(
        f"{CACHES}/web/status?fieldManager=imc-operator",
        json={"status": {"phase": "Ready"}},
        headers=MERGE,
    )
    assert status.status_code == 200
    entries = {m["manager"]: m for m in stored(kube, "web")["metadata"]["managedFields"]}
    assert entries["imc-operator"]["subresource"] == "status"
    assert entries["imc-operator"]["fieldsV1"] == {"f:status": {"f:phase": {}}}


def test_apply_needs_a_field_manager(http: httpx.Client) -> None:
    answer = http.patch(f"{CACHES}/web", json=cache(), headers=APPLY)
    assert answer.status_code == 400
    assert "fieldManager" in answer.json()["message"]


# ------------------------------------------------------------------ Events

EVENTS = "/api/v1/namespaces/{namespace}/events"


def recorded(**changes: Any) -> dict[str, Any]:
    """An Event as client-go's recorder writes one for a cluster-scoped ImageCache."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.17f0a1b2c3d4e5f6", "namespace": "default"},
        "involvedObject": {
            "apiVersion": f"{GROUP}/v1",
            "kind": "ImageCache",
            "name": "web",
            "uid": "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d",
            "resourceVersion": "101",
        },
        "type": "Normal",
        "reason": "DigestChanged",
        "message": "app:1 moved upstream from sha256:1 to sha256:2; the cache is rebuilt",
        "source": {"component": "gitsync"},
        "firstTimestamp": "2026-11-22T03:00:00Z",
        "lastTimestamp": "2026-11-22T03:00:00Z",
        "count": 1,
    }
    body.update(changes)
    return body


def stored_events(kube: KubeServer) -> set[tuple[str | None, str]]:
    return {(k[2], k[3]) for k in kube.api.objects if k[:2] == ("", "events")}


def test_a_recorded_event_of_a_cluster_scoped_object_is_stored_in_default(
    kube: KubeServer, http: httpx.Client
) -> None:
    answer = http.post(EVENTS.format(namespace="default"), json=recorded())
    assert answer.status_code < 300, answer.text
    listed = http.get("/api/v1/events", params={"fieldSelector": "involvedObject.kind=ImageCache"})
    (item,) = listed.json()["items"]
    assert item["reason"] == "DigestChanged"
    assert item["metadata"]["namespace"] == "default"
    assert item["metadata"]["uid"]

    # An Event's name need only be a path segment (client-go's `<name>.<hex>` of any object).
    upper = recorded(metadata={"name": "Web_Cache.17f0"})
    assert http.post(EVENTS.format(namespace="default"), json=upper).status_code < 300
    generated = recorded(metadata={"generateName": "web."})
    answer = http.post(EVENTS.format(namespace="default"), json=generated)
    assert answer.status_code < 300, answer.text
    assert answer.json()["metadata"]["name"].startswith("web.")
    assert len(stored_events(kube)) == 3


INVALID_EVENTS: dict[str, tuple[str, dict[str, Any], list[tuple[str, str]]]] = {
    # case: (namespace posted to, body, [(field, reason)] of the 422's causes)
    "cluster-scoped object's event outside default": (
        "apps",
        recorded(metadata={"name": "web.1", "namespace": "apps"}),
        [("involvedObject.namespace", "FieldValueInvalid")],
    ),
    "namespaced object's event in another namespace": (
        "default",
        recorded(
            involvedObject={"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "apps"}
        ),
        [("involvedObject.namespace", "FieldValueInvalid")],
    ),
    "no name": (
        "default",
        recorded(metadata={"namespace": "default"}),
        [("metadata.name", "FieldValueRequired")],
    ),
    "a name that is no path segment": (
        "default",
        recorded(metadata={"name": "web%2"}),
        [("metadata.name", "FieldValueInvalid")],
    ),
    "an eventTime event without its reporting fields": (
        "default",
        recorded(eventTime="2026-11-22T03:00:00.000000Z", reason=""),
        [
            ("reportingComponent", "FieldValueRequired"),
            ("reportingComponent", "FieldValueInvalid"),  # "" is no qualified name either
            ("reportingInstance", "FieldValueRequired"),
            ("action", "FieldValueRequired"),
            ("reason", "FieldValueRequired"),
        ],
    ),
}


@pytest.mark.parametrize("case", list(INVALID_EVENTS))
def test_an_invalid_event_is_422_and_not_stored(
    kube: KubeServer, http: httpx.Client, case: str
) -> None:
    namespace, body, expected = INVALID_EVENTS[case]
    answer = http.post(EVENTS.format(namespace=namespace), json=body)

    assert answer.status_code == 422, answer.text
    status = answer.json()
    assert (status["reason"], status["details"]["kind"]) == ("Invalid", "Event")
    assert status["message"].startswith("Event ")
    causes = [(c["field"], c["reason"]) for c in status["details"]["causes"]]
    assert causes == expected, status
    assert stored_events(kube) == set()


def test_an_event_with_every_field_an_eventtime_needs_is_accepted(
    kube: KubeServer, http: httpx.Client
) -> None:
    body = recorded(
        eventTime="2026-11-22T03:00:00.000000Z",
        reportingComponent="gitsync",
        reportingInstance="gitsync-0",
        action="Rebuild",
    )
    assert http.post(EVENTS.format(namespace="default"), json=body).status_code < 300


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"count": "1"}, "cannot unmarshal string into Go struct field Event.count of type int32"),
        ({"count": 2**31}, f"cannot unmarshal number {2**31} into Go struct field Event.count"),
        ({"firstTimestamp": "yesterday"}, 'parsing time "yesterday"'),
        ({"lastTimestamp": 1700000000}, "cannot unmarshal number into Go value of type string"),
        (
            {"involvedObject": "web"},
            "Go struct field Event.involvedObject of type v1.ObjectReference",
        ),
        ({"source": {"component": 7}}, "Event.source.component of type string"),
    ],
)
def test_an_event_the_server_cannot_decode_is_400(
    kube: KubeServer, http: httpx.Client, changes: dict[str, Any], words: str
) -> None:
    answer = http.post(EVENTS.format(namespace="default"), json=recorded(**changes))
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith('Event in version "v1" cannot be handled as a Event')
    assert words in answer.json()["message"]
    assert stored_events(kube) == set()


def test_a_body_naming_another_namespace_than_the_url_is_400(
    kube: KubeServer, http: httpx.Client
) -> None:
    body = recorded(metadata={"name": "web.1", "namespace": "apps"})
    answer = http.post(EVENTS.format(namespace="default"), json=body)
    assert answer.status_code == 400
    assert "does not match the namespace sent on the request" in answer.json()["message"]
    assert stored_events(kube) == set()

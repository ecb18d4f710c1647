"""The kustomize base in manifests/: it renders, validates, hangs together, and grants what the
code uses and no more.

Rendering uses `kubectl kustomize` (kubectl 1.32 with kustomize 5 on the machine image);
objects of built-in kinds are validated with `kubernetes-validate` against the 1.32 schemas in
strict mode (unknown fields are errors). The Prometheus Operator kinds have no schema there and
are checked field by field. The RBAC rules are compared with the `RBAC_RULES` that the
provider, the observer and the leader election declare (the integration tests check that
those modules make no request outside them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gitsync import leader, specs
from gitsync.observers import kubernetes as observer
from gitsync.providers import kubernetes as provider

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
COMPONENT = MANIFESTS / "components" / "pull-secrets"
SCHEMA = ROOT / "schemas" / "imagecache.schema.json"
NAMESPACE = "gitsync-system"
KUBERNETES_VERSION = "1.32"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
Doc = dict[str, Any]


def kustomize(path: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the CI image has kubectl 1.32 with kustomize 5)")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return kustomize(MANIFESTS)


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def manifest_files() -> Iterator[Path]:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if "prometheus" in path.relative_to(MANIFESTS).parts:
            continue  # rule files and promtool tests, checked by test_promtool / test_rules_sync
        yield path


# ------------------------------------------------------------------ the files


def test_every_manifest_file_is_yaml_with_kind_and_name() -> None:
    files = list(manifest_files())
    assert len(files) >= 15
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert documents, f"{path} is empty"
        for document in documents:
            assert {"apiVersion", "kind"} <= document.keys(), f"{path}: apiVersion and kind"
            if document["kind"] not in ("Kustomization", "Component"):
                assert document["metadata"]["name"], f"{path}: metadata.name"


def test_every_file_of_the_base_is_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = {MANIFESTS / r for r in kustomization["resources"]}
    on_disk = {p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk <= listed, f"not in kustomization.yaml: {sorted(on_disk - listed)}"
    assert MANIFESTS / "prometheus/prometheusrule.yaml" in listed
    assert all(p.exists() for p in listed)


# ------------------------------------------------------------- the rendering


def test_the_base_renders_every_kind_once(rendered: list[Doc]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "CustomResourceDefinition",
        ]
    )
    for document in rendered:
        labels = document["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/name") == "gitsync", document["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "gitsync"


def test_rendered_objects_validate_against_the_kubernetes_schemas(rendered: list[Doc]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (a test dependency)"
    )
    checked = 0
    for document in rendered:
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema in kubernetes-validate; see the next test
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == 10


def test_prometheus_operator_objects_are_well_formed(rendered: list[Doc]) -> None:
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert re.fullmatch(r"\d+s", endpoint["interval"])
    rule = one(rendered, "PrometheusRule", "gitsync")
    assert rule["metadata"]["namespace"] == NAMESPACE
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "GitSyncReconcileFailing" in alerts


def test_namespaced_objects_live_in_the_controller_namespace(rendered: list[Doc]) -> None:
    one(rendered, "Namespace", NAMESPACE)
    for document in rendered:
        namespace = document["metadata"].get("namespace")
        if document["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{document['kind']} is cluster-scoped"
        else:
            assert namespace == NAMESPACE, f"{document['kind']} {document['metadata']['name']}"


def test_names_labels_selectors_and_ports_agree(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "gitsync")
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = one(rendered, "Service", "gitsync")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(rendered, "ServiceMonitor", "gitsync")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )

    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
    for port in service_ports.values():
        assert port["targetPort"] in ports
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] in ports for p in probes.values())

    config = one(rendered, "ConfigMap", "gitsync-config")
    settings = yaml.safe_load(config["data"]["config.yaml"])
    assert settings["provider"] == "kubernetes"
    assert int(settings["listen"].rsplit(":", 1)[1]) == ports["http-metrics"]
    assert settings["leader-election-name"] == leader.DEFAULT_LEASE_NAME
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"] == ["run", "--config", f"{mounts['config']}/config.yaml"]
    assert settings["data-dir"] == mounts["data"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]

    account = one(rendered, "ServiceAccount")["metadata"]["name"]
    assert template["spec"]["serviceAccountName"] == account
    roles = {
        (d["kind"], d["metadata"]["name"]) for d in rendered if d["kind"] in ("Role", "ClusterRole")
    }
    for binding in (d for d in rendered if d["kind"].endswith("Binding")):
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
    image = container["image"]
    assert image.startswith("ghcr.io/gitsync/gitsync:")
    assert not image.endswith(":latest")


def test_the_deployment_is_highly_available_and_hardened(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "gitsync")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= container["resources"].keys()
    assert "memory" in container["resources"]["limits"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/gitsync", "/tmp"}  # everything else is read-only
    env = {e["name"]: e for e in container["env"]}
    assert env["GITSYNC_LEADER_ELECTION_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    namespace = one(rendered, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ----------------------------------------------------------------------- RBAC


def grants(rules: list[Doc]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def declared(*rule_sets: tuple[tuple[str, str, tuple[str, ...]], ...]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rules in rule_sets for g, r, verbs in rules for v in verbs}


def test_the_cluster_role_grants_what_the_code_uses_and_nothing_more(rendered: list[Doc]) -> None:
    cluster_role = one(rendered, "ClusterRole", "gitsync")
    assert not any(
        "*" in (r["apiGroups"] + r["resources"] + r["verbs"]) for r in cluster_role["rules"]
    )
    assert grants(cluster_role["rules"]) == declared(provider.RBAC_RULES, observer.RBAC_RULES)
    # Read-only for pods; events are read, and created (gitsync's own DigestChanged), never
    # changed or deleted; no secrets at all in the base.
    for _group, resource, verb in grants(cluster_role["rules"]):
        if resource == "pods":
            assert verb in ("get", "list", "watch")
        if resource == "events":
            assert verb in ("get", "list", "watch", "create")
        assert resource != "secrets"


def test_the_leader_election_role_is_namespaced_and_names_the_lease(rendered: list[Doc]) -> None:
    role = one(rendered, "Role", "gitsync-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role["rules"]) == declared(leader.RBAC_RULES)
    for rule in role["rules"]:
        if set(rule["verbs"]) - {"create"}:  # create cannot be limited by name
            assert rule["resourceNames"] == [leader.DEFAULT_LEASE_NAME]


def test_the_pull_secrets_component_grants_get_on_named_secrets_only(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, overlay)],
                "components": [os.path.relpath(COMPONENT, overlay)],
            }
        ),
        encoding="utf-8",
    )
    docs = kustomize(overlay)
    role = one(docs, "Role", "gitsync-pull-secrets")
    assert grants(role["rules"]) == declared(provider.PULL_SECRET_RBAC_RULES)
    assert all(rule.get("resourceNames") for rule in role["rules"])
    binding = one(docs, "RoleBinding", "gitsync-pull-secrets")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] != NAMESPACE
    assert binding["subjects"][0]["namespace"] == NAMESPACE


# ------------------------------------------------------------------ the CRD


def crd_schema(rendered: list[Doc]) -> Doc:
    crd = one(rendered, "CustomResourceDefinition")
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_the_crd_serves_what_the_provider_talks_to(rendered: list[Doc]) -> None:
    crd = one(rendered, "CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{provider.PLURAL}.{provider.GROUP}"
    assert spec["group"] == provider.GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"]["plural"] == provider.PLURAL
    assert spec["names"]["kind"] == "ImageCache"
    assert spec["names"]["shortNames"] == ["imc"]
    (version,) = spec["versions"]
    assert version["name"] == provider.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def _structural(node: Doc, path: str) -> None:
    """Every node typed (or preserving unknown fields); RE2 patterns only (no look-around)."""
    assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
    if "pattern" in node:
        assert not re.search(r"\(\?[=!<]", node["pattern"]), f"{path}: RE2 has no look-around"
    for key, child in (node.get("properties") or {}).items():
        _structural(child, f"{path}.{key}")
    if "items" in node:
        _structural(node["items"], f"{path}[]")


def test_the_crd_schema_is_structural(rendered: list[Doc]) -> None:
    _structural(crd_schema(rendered), "")


CONSTRAINTS = (
    "type",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "default",
)


def re2_search(pattern: str, text: str) -> bool:
    """RE2's search, near enough: its `$` is the end of the text, never before a final newline."""
    return re.search(re.sub(r"\$$", r"\\Z", pattern), text) is not None


def _resolve(node: Doc, root: Doc) -> Doc:
    ref = node.get("$ref")
    if ref is None:
        return node
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def test_the_crd_spec_schema_agrees_with_schemas(rendered: list[Doc]) -> None:
    json_schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    ours = json_schema["properties"]["spec"]
    theirs = crd_schema(rendered)["properties"]["spec"]
    assert theirs["type"] == ours["type"] == "object"
    assert theirs["required"] == ours["required"]
    assert theirs["properties"].keys() == ours["properties"].keys()
    for name, expected in ours["properties"].items():
        actual = theirs["properties"][name]
        for constraint in CONSTRAINTS:
            assert actual.get(constraint) == expected.get(constraint), f"spec.{name}.{constraint}"
        if "items" in expected:
            items = _resolve(expected["items"], json_schema)
            for constraint in CONSTRAINTS:
                assert actual["items"].get(constraint) == items.get(constraint), (
                    f"spec.{name}[].{constraint}"
                )
            if "pattern" in items:
                # The same language, but for one case: RE2 has no look-ahead, so the CRD cannot
                # bound the name after '/' to 253 characters within the 317 in all. Such a name
                # can never resolve (no Secret has it), and gitsync validation still rejects it.
                too_long_name = "ns/" + "a" * 254
                assert not re.search(items["pattern"], too_long_name)
                assert re2_search(actual["items"]["pattern"], too_long_name)
                probes = [
                    "imc-operator-system/qcloudregistrykey",
                    "a/b",
                    "default/my.secret-1",
                    "ns/" + "a" * 253,
                    "Upper/case",
                    "no-slash",
                    "ns/-dash",
                    "ns/a..b",
                    "a" * 64 + "/x",
                    "ns/x\n",
                ]
                for probe in probes:
                    json_ok = len(probe) <= items["maxLength"] and bool(
                        re.search(items["pattern"], probe)
                    )
                    crd_ok = len(probe) <= actual["items"]["maxLength"] and re2_search(
                        actual["items"]["pattern"], probe
                    )
                    assert json_ok == crd_ok, f"{probe!r}: schemas/ {json_ok}, CRD {crd_ok}"


# -------------------------------------------------------------------- samples


def test_the_samples_are_valid_for_gitsync_and_for_the_crd(rendered: list[Doc]) -> None:
    samples = sorted((MANIFESTS / "samples").glob("*.yaml"))
    assert samples
    result = specs.load_repository([MANIFESTS / "samples"], root=MANIFESTS)
    assert [d for d in result.diagnostics if d.severity.value == "error"] == []
    assert len(result.caches) == len(samples)
    schema = crd_schema(rendered)
    for path in samples:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            jsonschema.validate(document, schema)
    assert any(not cache.prune for cache in result.caches), "a sample shows gitsync.io/prune"

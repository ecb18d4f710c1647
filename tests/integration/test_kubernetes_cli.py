"""`gitsync plan` and `apply --provider kubernetes` as processes, on Git's labels and annotations.

The cloud documentation's two samples (examples/cache-repo/caches), applied
to the stand-in API server, give objects whose labels and annotations are
exactly Git's plus gitsync's own two labels: the second sample's
`eks.tke.cloud.tencent.com/eip-attributes` reaches the operator. A change of
a label alone is a planned UPDATE that names it, and once applied the next
plan is empty; a label someone else adds is no change at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kube_fixtures import KubeServer

pytestmark = pytest.mark.slow  # `python -m gitsync` processes

GROUP = "eks.cloud.tencent.com"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cache-repo" / "caches"
SAMPLES = ("cloud-doc-basic.yaml", "cloud-doc-full.yaml")
OWN_LABELS = {"app.kubernetes.io/managed-by": "gitsync", "gitsync.io/owner": "gitsync"}


@dataclass
class Cluster:
    kube: KubeServer
    kubeconfig: Path
    data: Path
    repo: Path

    def gitsync(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITSYNC_", "KUBECONFIG"))}
        return subprocess.run(
            [
                sys.executable, "-m", "gitsync", command,
                "--provider", "kubernetes",
                "--kubeconfig", str(self.kubeconfig),
                "--data-dir", str(self.data),
                "--repo", str(self.repo),
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip

    def metadata(self, name: str) -> dict[str, Any]:
        return dict(self.kube.api.get(GROUP, "imagecaches", None, name)["metadata"])

    def writes_since(self, mark: int) -> list[str]:
        return [
            f"{r.method.value} {r.url}"
            for r in list(self.kube.api)[mark:]
            if r.method.value != "GET"
        ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in SAMPLES:
        (repo / name).write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    with KubeServer() as kube:
        yield Cluster(kube, kube.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "data", repo)


def git_metadata(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(document["metadata"])


def applied(cluster: Cluster) -> None:
    done = cluster.gitsync("apply")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_documented_samples_carry_exactly_gits_labels_and_annotations(
    cluster: Cluster,
) -> None:
    applied(cluster)

    for sample in SAMPLES:
        git = git_metadata(EXAMPLES / sample)
        obj = cluster.metadata(git["name"])
        assert obj.get("labels") == {**git.get("labels", {}), **OWN_LABELS}, sample
        assert obj.get("annotations") == git.get("annotations"), sample
    full = cluster.metadata("imagecache-sample-full")
    assert full["annotations"] == {
        "eks.tke.cloud.tencent.com/eip-attributes": '{"InternetMaxBandwidthOut":2}'
    }

    mark = cluster.kube.mark()
    again = cluster.gitsync("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 unchanged" in again.stdout
    assert cluster.writes_since(mark) == []


def test_a_label_change_alone_is_an_update_that_names_it_and_then_nothing(
    cluster: Cluster,
) -> None:
    applied(cluster)
    # Someone labels one object by hand: theirs, and no difference from Git.
    client = cluster.kube.client(user_agent="kubectl/v1.31.0")
    try:
        kubernetes.client.CustomObjectsApi(client).patch_cluster_custom_object(
            GROUP,
            "v1",
            "imagecaches",
            "imagecache-sample-full",
            {"metadata": {"labels": {"cost-centre": "42"}}},
            field_manager="kubectl-label",
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ).release_conn()
    finally:
        client.close()
    assert cluster.gitsync("plan", "--detailed-exitcode").returncode == 0

    sample = cluster.repo / "cloud-doc-full.yaml"
    original = sample.read_text(encoding="utf-8")
    sample.write_text(
        original.replace(
            "  name: imagecache-sample-full\n",
            "  name: imagecache-sample-full\n  labels:\n    team: web\n",
        ),
        encoding="utf-8",
    )

    text = cluster.gitsync("plan", "--detailed-exitcode")
    assert text.returncode == 2, text.stdout + text.stderr
    assert "0 to create, 1 to update, 0 to recreate, 0 to delete" in text.stdout
    [row] = [line for line in text.stdout.splitlines() if "update   imagecache-sample-full" in line]
    assert row.endswith("metadata.labels: [] → [team=web]"), row
    assert "monthly 0.00 CNY  one-off 0.00 CNY" in row, row  # a label alone runs no build
    as_json = cluster.gitsync("plan", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    [action] = [a for a in json.loads(as_json.stdout)["actions"] if a["action"] != "noop"]
    assert action["action"] == "update"
    assert action["reason"].startswith("metadata.labels: +team=web")
    assert action["changes"] == [{"field": "metadata.labels", "before": [], "after": ["team=web"]}]

    uid = cluster.metadata("imagecache-sample-full")["uid"]
    applied(cluster)
    full = cluster.metadata("imagecache-sample-full")
    assert full["uid"] == uid  # updated in place, not rebuilt
    assert full["labels"] == {"team": "web", "cost-centre": "42", **OWN_LABELS}
    assert cluster.gitsync("plan", "--detailed-exitcode").returncode == 0

    sample.write_text(original, encoding="utf-8")  # and out of Git again
    removed = cluster.gitsync("plan", "--format", "json")
    [action] = [a for a in json.loads(removed.stdout)["actions"] if a["action"] != "noop"]
    assert action["changes"] == [{"field": "metadata.labels", "before": ["team=web"], "after": []}]
    applied(cluster)
    assert cluster.metadata("imagecache-sample-full")["labels"] == {
        "cost-centre": "42",
        **OWN_LABELS,
    }
    assert cluster.gitsync("plan", "--detailed-exitcode").returncode == 0

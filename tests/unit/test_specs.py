"""The spec loader: the corpus under tests/data/specs, hostile files, and the fast schema check.

Every invalid corpus case is a small tree with its exact expected diagnostics
in INVALID_CASES below (path, line, column, severity, rule and a fragment of the
message), so a change in any position or rule id shows up here. Hostile inputs
are made in tmp_path; each must produce a diagnostic and no exception, and the
pytest-timeout marks guard against a hang rather than measure speed.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitsync import specs
from gitsync.errors import SpecError
from gitsync.model import CacheSpec, Diagnostic, EipAttributes, Severity, SourceLocation

DATA = Path(__file__).resolve().parents[1] / "data" / "specs"
VALID = DATA / "valid"
INVALID = DATA / "invalid"

E, W, I = "error", "warning", "info"  # noqa: E741  # short column values keep the table readable

# case -> every diagnostic: (path, line, column, severity, rule, fragment of the message)
INVALID_CASES: dict[str, list[tuple[str, int, int, str, str, str]]] = {
    "alias-bomb": [("bomb.yaml", 9, 8, E, "yaml-alias", "alias bomb")],
    "bad-eip-annotation": [
        ("cache.yaml", 6, 47, E, "annotation", "is not JSON (Expecting ',' delimiter: line 1"),
        ("cache.yaml", 8, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 15, 49, E, "annotation", "'InternetChargeType', a key of the pod"),
        ("cache.yaml", 17, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 24, 47, E, "annotation", "(did you mean 'InternetMaxBandwidthOut'?)"),
        ("cache.yaml", 26, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 33, 47, E, "annotation", "InternetMaxBandwidthOut must be an integer"),
        ("cache.yaml", 35, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 42, 47, E, "annotation", "of at least 1 (Mbps), got 0"),
        ("cache.yaml", 44, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 51, 47, E, "annotation", "must be a JSON object of DeletePolicy,"),
        ("cache.yaml", 53, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 60, 47, E, "annotation", "names 'InternetMaxBandwidthOut' twice"),
        ("cache.yaml", 63, 12, W, "mutable-tag", "is held by tag"),
    ],
    "bad-refresh-annotation": [
        ("cache.yaml", 6, 25, E, "annotation", "refresh '6 hours' is not a duration; use a"),
        ("cache.yaml", 15, 25, E, "annotation", "refresh '-1h' is negative"),
        ("cache.yaml", 24, 25, E, "annotation", "refresh '500ms' is shorter than 1s"),
        ("cache.yaml", 33, 25, E, "annotation", "refresh '36501d' is longer than 36500d"),
    ],
    "bad-security-group": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 9, 7, E, "security-group", "[1] 'default' is not a security group id"),
        ("cache.yaml", 10, 7, E, "security-group", "'SG-1CGHHUUU' is not"),
        ("cache.yaml", 11, 7, E, "security-group", "'' is not a security group id"),
        ("cache.yaml", 12, 7, E, "schema", "securityGroupIds[4] must be a string, got 42"),
    ],
    "bad-image-policy": [
        ("cache.yaml", 9, 68, E, "image-policy", "'|' is not part of an npm-style range"),
        ("cache.yaml", 10, 82, E, "image-policy", "missing ), unterminated subpattern"),
        ("cache.yaml", 11, 58, E, "image-policy", "unknown policy 'semvar' (did you mean semver?)"),
        ("cache.yaml", 12, 124, E, "image-policy", "pinned by digest alone"),
        ("cache.yaml", 13, 56, E, "image-policy", "names no policy"),
        ("cache.yaml", 14, 5, W, "image-policy", "this '# gitsync:' marker is ignored"),
        ("cache.yaml", 23, 94, E, "image-policy", "the line holds more than one image"),
    ],
    "bad-image-ref": [
        ("cache.yaml", 7, 7, E, "image-ref", "'Nginx:1.27' is not a valid image reference"),
        ("cache.yaml", 8, 7, E, "image-ref", "tag after ':' is empty"),
        ("cache.yaml", 9, 7, E, "image-ref", "URL scheme"),
        ("cache.yaml", 10, 7, E, "image-ref", "64 lower-case hex"),
        ("cache.yaml", 11, 7, W, "mutable-tag", "is held by tag"),
    ],
    "bad-name": [
        ("cache.yaml", 4, 9, E, "schema", "must be a DNS-1123 subdomain"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "bad-prune-annotation": [
        ("cache.yaml", 6, 23, E, "prune-annotation", "must be 'disabled'"),
        ("cache.yaml", 8, 12, W, "mutable-tag", "is held by tag"),
    ],
    "bad-pull-secret": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 8, 7, E, "pull-secret", "got 'qcloudregistrykey'"),
        ("cache.yaml", 9, 7, E, "pull-secret", "got 'Team/Key'"),
        ("cache.yaml", 11, 7, E, "pull-secret", "got 'a/b/c'"),
    ],
    "duplicate-image": [
        ("cache.yaml", 7, 7, W, "mutable-tag", "'nginx' has no tag"),
        ("cache.yaml", 8, 7, E, "duplicate-image", "both mean docker.io/library/nginx:latest"),
        ("cache.yaml", 9, 7, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 10, 7, E, "duplicate-image", "(line 9)"),
    ],
    "duplicate-key": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 8, 3, E, "yaml-duplicate-key", "'imageCacheSize' (first at line 7)"),
    ],
    "duplicate-name-across-files": [
        ("a.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("team/b.yaml", 5, 9, E, "duplicate-name", "already used at a.yaml:4:9"),
        ("team/b.yaml", 7, 12, W, "mutable-tag", "is held by tag"),
    ],
    "duplicate-name-same-file": [
        ("cache.yaml", 4, 17, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 8, 18, E, "duplicate-name", "already used at cache.yaml:3:18"),
        ("cache.yaml", 9, 17, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 13, 18, E, "duplicate-name", "already used at cache.yaml:3:18"),
        ("cache.yaml", 14, 17, W, "mutable-tag", "is held by tag"),
    ],
    "empty-images": [("cache.yaml", 6, 11, E, "schema", "got an empty list")],
    "images-not-list": [("cache.yaml", 6, 11, E, "schema", "must be a list of 1 to 100")],
    "kind-case": [
        ("cache.yaml", 2, 7, E, "schema", "kind must be 'ImageCache'"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "label-not-string": [
        ("cache.yaml", 6, 14, E, "schema", "got 2; quote it"),
        ("cache.yaml", 7, 14, E, "schema", "got true; quote it"),
        ("cache.yaml", 9, 15, E, "schema", "metadata.annotations.replicas must be a string"),
        ("cache.yaml", 11, 12, W, "mutable-tag", "is held by tag"),
    ],
    "list-item-invalid": [
        ("list.yaml", 9, 14, W, "mutable-tag", "is held by tag"),
        ("list.yaml", 15, 14, W, "mutable-tag", "is held by tag"),
        ("list.yaml", 16, 21, E, "schema", "items[1].spec.imageCacheSize must be"),
        ("list.yaml", 17, 3, E, "not-a-mapping", "List item 2"),
    ],
    "missing-images": [("cache.yaml", 5, 1, E, "schema", "spec.images is required")],
    "missing-kind": [
        ("cache.yaml", 1, 1, E, "schema", "kind is required"),
        ("cache.yaml", 5, 12, W, "mutable-tag", "is held by tag"),
    ],
    "missing-name": [
        ("cache.yaml", 3, 1, E, "schema", "metadata.name is required"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "missing-spec": [("cache.yaml", 1, 1, E, "schema", "spec is required")],
    "name-too-long": [
        ("cache.yaml", 4, 9, E, "schema", "got 254 characters"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "negative-retention": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 7, 18, E, "schema", "from 0 to 3650, got -1"),
    ],
    "reserved-keys": [
        ("cache.yaml", 7, 23, E, "reserved-key", "label gitsync.io/owner is gitsync's own"),
        ("cache.yaml", 9, 34, E, "reserved-key", "gitsync.io/applied-metadata is gitsync's"),
        ("cache.yaml", 11, 12, W, "mutable-tag", "is held by tag"),
    ],
    "retention-too-long": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 7, 18, E, "schema", "spec.retentionDays must be an integer from 0 to 3650"),
    ],
    "not-a-mapping": [
        ("cache.yaml", 1, 1, E, "not-a-mapping", "document is a list"),
        ("cache.yaml", 4, 1, E, "not-a-mapping", "document is 'just a string'"),
    ],
    "not-utf8": [("cache.yaml", 4, 12, E, "file-encoding", "byte 0xe9 at line 4")],
    "partly-valid": [
        ("bad.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("bad.yaml", 7, 18, E, "schema", "got 'forever'"),
        ("good.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "size-not-integer": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 7, 19, E, "schema", "got '30'; write the number without quotes"),
        ("cache.yaml", 14, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 15, 19, E, "schema", "from 20 to 32000, got 20.5"),
        ("cache.yaml", 16, 18, E, "schema", "got true"),
    ],
    "size-out-of-range": [
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
        (
            "cache.yaml",
            7,
            19,
            E,
            "schema",
            "spec.imageCacheSize must be an integer from 20 to 32000, got 10",
        ),
        ("cache.yaml", 14, 12, W, "mutable-tag", "is held by tag"),
        ("cache.yaml", 15, 19, E, "schema", "got 32001"),
    ],
    "syntax-error": [("cache.yaml", 7, 17, E, "yaml-syntax", "flow sequence (line 6)")],
    "tabs": [("cache.yaml", 4, 1, E, "yaml-syntax", "a tab")],
    "unknown-fields": [
        ("cache.yaml", 5, 1, E, "schema", "spec.images is required"),
        ("cache.yaml", 6, 3, E, "unknown-field", "spec.image (did you mean 'images'?)"),
        ("cache.yaml", 7, 3, E, "unknown-field", "did you mean 'imageCacheSize'?"),
        ("cache.yaml", 8, 3, E, "unknown-field", "did you mean 'retentionDays'?"),
        ("cache.yaml", 9, 3, E, "unknown-field", "did you mean 'imagePullSecrets'?"),
        ("cache.yaml", 10, 3, E, "unknown-field", "spec.color; spec takes images"),
    ],
    "unknown-tag": [
        ("cache.yaml", 4, 9, E, "yaml-tag", "'!Sub'"),
        ("cache.yaml", 4, 9, E, "schema", "got '${Name}-cache'"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
    "unknown-top-level": [
        ("cache.yaml", 1, 1, E, "schema", "spec is required"),
        ("cache.yaml", 5, 3, E, "unknown-field", "metadata.label (did you mean 'labels'?)"),
        ("cache.yaml", 6, 1, E, "unknown-field", "specs (did you mean 'spec'?)"),
    ],
    "wrong-api-version": [
        ("cache.yaml", 1, 13, E, "schema", "got 'eks.cloud.tencent.com/v2'"),
        ("cache.yaml", 6, 12, W, "mutable-tag", "is held by tag"),
    ],
}


def _rows(diagnostics: tuple[Diagnostic, ...]) -> list[tuple[str, int, int, str, str]]:
    return [
        (d.location.path, d.location.line, d.location.column, d.severity.value, d.rule)
        for d in diagnostics
    ]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# Pinned by digest: the helper's caches draw no mutable-tag warning unless a test asks for one.
PINNED = "nginx:1.27.2@sha256:" + "0" * 64


def _cache(name: str, *extra: str, images: str = f"[{PINNED}]") -> str:
    lines = [
        "apiVersion: eks.cloud.tencent.com/v1",
        "kind: ImageCache",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  images: {images}",
        *extra,
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ corpus


def test_corpus_has_every_invalid_case_in_the_table() -> None:
    on_disk = {p.name for p in INVALID.iterdir() if p.is_dir()}
    assert on_disk == set(INVALID_CASES)
    assert len(on_disk) >= 20


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_invalid_case_diagnostics(case: str) -> None:
    expected = INVALID_CASES[case]
    result = specs.load_repository([INVALID / case], root=INVALID / case)

    assert _rows(result.diagnostics) == [row[:5] for row in expected]
    for diagnostic, row in zip(result.diagnostics, expected, strict=True):
        assert row[5] in diagnostic.message, diagnostic.message
    assert not result.ok
    with pytest.raises(SpecError, match="is invalid"):
        result.desired("abc123")


def test_pure_python_parser_gives_the_same_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml, PyYAML's own parser is used: same values, same positions."""
    trees = [VALID, *(INVALID / case for case in sorted(INVALID_CASES))]
    with_libyaml = [specs.load_repository([tree], root=tree) for tree in trees]
    monkeypatch.setattr(specs.yaml_events, "_Loader", yaml.SafeLoader)
    without = [specs.load_repository([tree], root=tree) for tree in trees]
    for fast, slow in zip(with_libyaml, without, strict=True):
        assert _rows(slow.diagnostics) == _rows(fast.diagnostics)
        assert slow.caches == fast.caches


def test_partly_valid_repository_keeps_its_valid_caches_but_is_not_ok() -> None:
    result = specs.load_repository([INVALID / "partly-valid"], root=INVALID)
    assert [c.name for c in result.caches] == ["good"]
    assert result.caches[0].location == SourceLocation("partly-valid/good.yaml", 4, 9)
    assert not result.ok


def test_duplicate_names_keep_only_the_first_cache() -> None:
    result = specs.load_repository([INVALID / "duplicate-name-across-files"], root=INVALID)
    assert [(c.name, c.images) for c in result.caches] == [("shared", ("nginx:1.27.2",))]


def test_list_items_are_validated_one_by_one() -> None:
    result = specs.load_repository([INVALID / "list-item-invalid"], root=INVALID)
    assert [c.name for c in result.caches] == ["good-item"]
    assert [d.field for d in result.errors] == ["items[1].spec.imageCacheSize", "items[2]"]


def test_valid_tree_counts_and_diagnostics() -> None:
    result = specs.load_repository([VALID], root=VALID)

    assert result.ok
    assert result.files == 19  # README.md, notes.json and .hidden/ are not read
    assert result.documents == 25  # empty.yaml and comments-only.yaml hold none
    # Each cache holding images by tag without gitsync.io/refresh: one warning, at the first.
    held_by_tag = [
        ("anchors.yaml", 14, 7),
        ("defaults.yml", 5, 17),
        ("eip-and-groups.yaml", 13, 7),
        ("eip-and-groups.yaml", 29, 12),
        ("eip-and-groups.yaml", 41, 12),
        ("flow.yaml", 2, 22),
        ("kubectl/get-output.yaml", 25, 5),
        ("kubectl/list.yaml", 12, 7),
        ("kubectl/list.yaml", 19, 7),
        ("mixed-kinds.yaml", 11, 12),
        ("multi-doc.yaml", 8, 12),
        ("multi-doc.yaml", 15, 12),
        ("multi-doc.yaml", 24, 5),
        ("nested/team-a/caches.yml", 10, 7),
        ("nested/team-b/deep/more/cache.yaml", 7, 7),
        ("prune-disabled.yaml", 9, 12),
        ("registry-ports.yaml", 7, 7),
        ("single.yaml", 7, 7),
        ("sizes.yaml", 6, 12),
        ("sizes.yaml", 15, 12),
        ("warnings.yaml", 9, 7),
    ]
    assert _rows(result.diagnostics) == sorted(
        [
            *((path, line, column, W, "mutable-tag") for path, line, column in held_by_tag),
            ("mixed-kinds.yaml", 2, 7, I, "other-kind"),
            ("mixed-kinds.yaml", 14, 7, I, "other-kind"),
            ("warnings.yaml", 7, 7, W, "mutable-tag"),
            ("warnings.yaml", 8, 7, W, "mutable-tag"),
        ]
    )
    by_place = {(d.location.path, d.location.line): d.message for d in result.diagnostics}
    assert "skipped Namespace (v1)" in by_place["mixed-kinds.yaml", 2]
    assert "two caches of it built at different times" in by_place["warnings.yaml", 7]
    assert "uses tag 'latest'" in by_place["warnings.yaml", 8]
    # `latest` keeps its own warning; the version tag beside it gets the refresh one.
    assert by_place["warnings.yaml", 9] == (
        "spec.images[2] 'quay.io/coreos/etcd:v3.5.12' is held by tag, and a tag can be"
        " re-pushed upstream while the cache keeps what it was built with: annotate the cache"
        " gitsync.io/refresh (e.g. 6h) to resolve its tags to digests on that interval, rebuild"
        " it when one moves, or pin digests (@sha256:…)"
    )
    assert by_place["registry-ports.yaml", 7].startswith(
        "spec.images[0] 'localhost:5000/tools/curl:8.5.0' and 3 more images"
        " ('registry.example.com:5000/team/api:v1.2.3', '10.0.0.12:8443/mirror/alpine:3.19', …)"
        " are held by tag,"
    )
    names = [c.name for c in result.caches]
    assert names == sorted(names)
    assert len(names) == 24


def test_valid_tree_values() -> None:
    caches = {c.name: c for c in specs.load_repository([VALID], root=VALID).caches}

    assert caches["web-base"] == CacheSpec(
        name="web-base",
        images=("nginx:1.27.2", "redis:7.2.4"),
        image_cache_size_gib=30,
        retention_days=7,
        image_pull_secrets=("imc-operator-system/qcloudregistrykey",),
        prune=True,
    )
    assert caches["web-base"].location == SourceLocation("single.yaml", 4, 9)
    defaults = caches["defaults-only"]
    assert (defaults.image_cache_size_gib, defaults.retention_days) == (20, 0)
    assert defaults.image_pull_secrets == ()
    assert caches["keep-me"].prune is False
    assert caches["anchored"].image_cache_size_gib == 0x20  # YAML 1.1 hex, as kubectl reads it
    assert caches["smallest"].image_cache_size_gib == 20
    assert caches["largest"].image_cache_size_gib == 32000
    assert caches["from-kubectl"].images == ("nginx:1.25.3",)
    assert caches["listed-two"].image_cache_size_gib == 50
    assert caches["listed-two"].location == SourceLocation("kubectl/list.yaml", 16, 11)
    assert caches["team-a.api"].location == SourceLocation("nested/team-a/caches.yml", 4, 9)
    assert caches["multi-three"].retention_days == 30
    assert caches["flow-json"].image_cache_size_gib == 25
    assert len(caches["registry-ports"].images) == 4


def test_labels_annotations_security_groups_and_the_eip_reach_the_spec() -> None:
    caches = {c.name: c for c in specs.load_repository([VALID], root=VALID).caches}

    sample = caches["imagecache-sample-more-para"]  # the cloud documentation's second sample
    assert sample.labels == (("team", "web"),)
    assert sample.annotations == (
        ("eks.tke.cloud.tencent.com/eip-attributes", '{"InternetMaxBandwidthOut":2}'),
    )
    assert sample.eip == EipAttributes(internet_max_bandwidth_out=2)
    assert sample.security_group_ids == ("sg-1cghhuuu", "sg-33ocnj9n")  # in the order written
    assert sample.retention_days == 3650  # the operator's maximum
    # "" asks for an EIP with the cloud's defaults; the prune annotation stays `prune`.
    assert caches["eip-defaults"].eip == EipAttributes()
    assert caches["eip-defaults"].annotations == (("eks.tke.cloud.tencent.com/eip-attributes", ""),)
    assert caches["eip-defaults"].prune is False
    assert caches["eip-every-field"].eip == EipAttributes(
        delete_policy="Never", internet_service_provider="BGP", internet_max_bandwidth_out=100
    )
    assert str(caches["eip-every-field"].eip) == (
        '{"DeletePolicy":"Never","InternetServiceProvider":"BGP","InternetMaxBandwidthOut":100}'
    )
    # kubectl's own record of what it applied is not the spec's.
    assert caches["from-kubectl"].annotations == ()
    assert caches["keep-me"].annotations == (("owner", "platform team"),)
    assert caches["team-a.api"].labels == (
        ("app.kubernetes.io/part-of", "payments"),
        ("team", "team-a"),
    )
    assert caches["web-base"].eip is None
    assert caches["web-base"].security_group_ids == ()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (
            "'{\"InternetMaxBandwidthOut\": true}'",
            "must be an integer of at least 1 (Mbps), got true",
        ),
        ("'{\"InternetMaxBandwidthOut\": 2.5}'", "got 2.5"),
        ('\'{"InternetServiceProvider": ""}\'', "naming the line (BGP, CMCC, CTCC, CUCC)"),
        ("'{\"DeletePolicy\": 1}'", "DeletePolicy must be a string"),
        ("'null'", "got null"),
        ("'2'", "got 2"),
        ("'" + "[" * 100_000 + "'", "nested too deeply"),
    ],
)
def test_a_malformed_eip_annotation_names_the_file_line_and_field(
    tmp_path: Path, value: str, fragment: str
) -> None:
    path = _write(
        tmp_path / "cache.yaml",
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: eip\n"
        f"  annotations:\n    eks.tke.cloud.tencent.com/eip-attributes: {value}\n"
        f"spec:\n  images: [{PINNED}]\n",
    )
    result = specs.load_repository([path], root=tmp_path)
    (diagnostic,) = result.diagnostics
    assert (diagnostic.rule, diagnostic.location) == (
        "annotation",
        SourceLocation("cache.yaml", 6, 47),
    )
    assert diagnostic.field == "metadata.annotations['eks.tke.cloud.tencent.com/eip-attributes']"
    assert fragment in diagnostic.message
    assert len(diagnostic.message) < 400
    assert result.caches == ()


def test_desired_state_of_a_valid_tree() -> None:
    result = specs.load_repository([VALID], root=VALID)
    desired = result.desired("3f9c0de")
    assert desired.revision == "3f9c0de"
    assert desired.caches == result.caches


def test_paths_outside_root_are_shown_as_given_and_inside_relative() -> None:
    inside = specs.load_repository([INVALID / "bad-name"], root=INVALID)
    assert inside.diagnostics[0].location.path == "bad-name/cache.yaml"
    outside = specs.load_repository([INVALID / "bad-name"], root=VALID)
    assert outside.diagnostics[0].location.path == (INVALID / "bad-name" / "cache.yaml").as_posix()


def test_default_root_is_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID)
    result = specs.load_repository([Path("bad-name")])
    assert result.diagnostics[0].location.path == "bad-name/cache.yaml"


def test_missing_path_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file or directory"):
        specs.load_repository([tmp_path / "nope"], root=tmp_path)


def test_a_file_named_explicitly_is_read_whatever_its_suffix_and_only_once(tmp_path: Path) -> None:
    spec = _write(tmp_path / "cache.txt", _cache("explicit"))
    result = specs.load_repository([spec, tmp_path, spec], root=tmp_path)
    assert result.files == 1
    assert [c.name for c in result.caches] == ["explicit"]


def test_every_rule_is_listed_in_the_docstring() -> None:
    doc = specs.__doc__ or ""
    for rule in specs.RULES:
        assert f"\n{rule} " in doc
    seen = {row[4] for rows in INVALID_CASES.values() for row in rows}
    assert seen <= set(specs.RULES)


# ------------------------------------------------------------------ hostile input

HANG_GUARD = pytest.mark.timeout(30)


@HANG_GUARD
def test_billion_laughs_is_refused_at_the_alias(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, 10):
        refs = ", ".join([f"*a{n - 1}"] * 10)
        levels.append(f"a{n}: &a{n} [{refs}]")
    _write(tmp_path / "bomb.yaml", "\n".join(levels) + "\nkind: ImageCache\n")

    result = specs.load_repository([tmp_path], root=tmp_path)

    # Levels 0-2 expand to about 1,300 nodes; some alias on line 4 (level 3) passes 10,000.
    ((path, line, column, severity, rule),) = _rows(result.diagnostics)
    assert (path, line, severity, rule) == ("bomb.yaml", 4, E, "yaml-alias")
    assert levels[3][column - 1 : column + 2] == "*a2"


@HANG_GUARD
def test_many_small_aliases_are_refused_too(tmp_path: Path) -> None:
    body = "a: &x 1\nb: [" + ", ".join(["*x"] * (specs.MAX_ALIASES + 1)) + "]\n"
    _write(tmp_path / "aliases.yaml", body)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert [d.rule for d in result.diagnostics] == ["yaml-alias"]


@HANG_GUARD
@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("[" * 10_000, 1, specs.MAX_DEPTH + 1),
        ("{a: " * 10_000, 1, 4 * specs.MAX_DEPTH + 1),
        ("- " * 10_000 + "x", 1, 2 * specs.MAX_DEPTH + 1),
        ("[" * 500_000, 1, specs.MAX_DEPTH + 1),  # half a MiB, just under the size limit
    ],
    ids=["flow-sequences", "flow-mappings", "block-sequences", "half-a-mebibyte"],
)
def test_runaway_nesting_is_refused(tmp_path: Path, text: str, line: int, column: int) -> None:
    _write(tmp_path / "deep.yaml", text)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("deep.yaml", line, column, E, "yaml-depth")]


@HANG_GUARD
def test_runaway_nesting_after_valid_documents_reports_each_problem_once(tmp_path: Path) -> None:
    """libyaml ≥ 0.2.6 stops at its own limit first; the documents before still count once."""
    deep = "x: " + "[" * 10_000
    _write(tmp_path / "deep.yaml", _cache("a", images="[nginx]") + "---\n" + deep + "\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [
        ("deep.yaml", 6, 12, W, "mutable-tag"),
        ("deep.yaml", 8, 3 + specs.MAX_DEPTH, E, "yaml-depth"),  # the mapping is level 1
    ]
    assert [cache.name for cache in result.caches] == ["a"]


def test_nesting_just_under_the_limit_is_fine(tmp_path: Path) -> None:
    depth = specs.MAX_DEPTH
    _write(tmp_path / "deep.yaml", "x: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert [d.rule for d in result.diagnostics] == ["other-kind"]


@HANG_GUARD
def test_file_over_one_mebibyte_is_not_read(tmp_path: Path) -> None:
    big = _cache("big") + "#" * (2 * 1024 * 1024) + "\n"
    _write(tmp_path / "big.yaml", big)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("big.yaml", 1, 1, E, "file-too-large")]
    assert "1 MiB" in result.diagnostics[0].message
    assert result.files == 0


@HANG_GUARD
def test_huge_strings_give_short_messages(tmp_path: Path) -> None:
    long = "a-" * 80_000 + "!"
    text = _cache(long, "  imagePullSecrets: [ns/" + long + "]", images=f"[{long}]")
    text += "---\n" + _cache("keys").replace(
        "  name: keys", "  name: keys\n  labels: {? " + long + ": v}"
    )
    _write(tmp_path / "long.yaml", text)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert [(d.location.line, d.rule) for d in result.diagnostics] == [
        (4, "schema"),  # metadata.name
        (6, "schema"),  # spec.images[0] is over 512 characters: not parsed as a reference
        (7, "pull-secret"),
        (13, "schema"),  # the label key
    ]
    assert all(len(d.message) < 1000 for d in result.diagnostics)
    assert all(len(d.field or "") < 200 for d in result.diagnostics)


def test_invalid_utf8_names_the_line_of_the_first_bad_byte(tmp_path: Path) -> None:
    _write(tmp_path / "latin1.yaml", _cache("ok").encode() + b"# caf\xe9\n# \xff\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("latin1.yaml", 7, 6, E, "file-encoding")]


def test_nul_byte_is_refused_with_its_line(tmp_path: Path) -> None:
    _write(tmp_path / "nul.yaml", b"a: 1\nb: x\x00y\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("nul.yaml", 2, 5, E, "file-encoding")]
    assert "NUL byte" in result.diagnostics[0].message


def test_symlink_out_of_the_tree_is_not_followed(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    _write(tree / "ok.yaml", _cache("ok"))
    (tree / "passwd.yaml").symlink_to("/etc/passwd")
    (tree / "outside").symlink_to(tmp_path)
    _write(tmp_path / "secret.yaml", _cache("secret"))

    result = specs.load_repository([tree], root=tree)

    assert _rows(result.diagnostics) == [
        ("outside", 1, 1, E, "symlink-escape"),
        ("passwd.yaml", 1, 1, E, "symlink-escape"),
    ]
    assert "/etc/passwd" in result.diagnostics[1].message
    assert [c.name for c in result.caches] == ["ok"]


def test_symlink_to_a_parent_inside_the_tree_does_not_loop(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "b" / "cache.yaml", _cache("once"))
    (tmp_path / "a" / "b" / "loop").symlink_to("..")
    (tmp_path / "a" / "alias.yaml").symlink_to("b/cache.yaml")  # same file: read once
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert result.diagnostics == ()
    assert result.files == 1
    assert [c.name for c in result.caches] == ["once"]


def test_broken_symlink_and_fifo_are_reported_not_hung_on(tmp_path: Path) -> None:
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    os.mkfifo(tmp_path / "pipe.yaml")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [
        ("dangling.yaml", 1, 1, E, "file-unreadable"),
        ("pipe.yaml", 1, 1, E, "file-unreadable"),
    ]


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    _write(tmp_path / "dup.yaml", _cache("dup", "metadata:", "  name: again"))
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("dup.yaml", 7, 1, E, "yaml-duplicate-key")]
    assert "'metadata' (first at line 3)" in result.diagnostics[0].message


def test_tabs_get_a_hint(tmp_path: Path) -> None:
    _write(tmp_path / "tabs.yaml", "spec:\n\timages: [x]\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("tabs.yaml", 2, 1, E, "yaml-syntax")]
    assert "spaces" in result.diagnostics[0].message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n---\n", "---\n...\n\n"])
def test_files_without_documents_are_quietly_fine(tmp_path: Path, text: str) -> None:
    _write(tmp_path / "empty.yaml", text)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert (result.diagnostics, result.files, result.documents) == ((), 1, 0)


def test_undefined_alias_and_complex_keys_are_errors(tmp_path: Path) -> None:
    _write(tmp_path / "alias.yaml", "a: *nowhere\n")
    _write(tmp_path / "key.yaml", "? [a, b]\n: c\n")
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [
        ("alias.yaml", 1, 4, E, "yaml-syntax"),
        ("key.yaml", 1, 3, E, "yaml-key"),
    ]


def test_crlf_line_endings_and_wide_characters_keep_positions(tmp_path: Path) -> None:
    text = _cache("crlf", "  imageCacheSize: 5").replace("\n", "\r\n")
    text = "# ünïcödé 鏡像\r\n" + text.replace("kind: ImageCache", "kind: ImageCache # 缓存")
    _write(tmp_path / "crlf.yaml", text)
    result = specs.load_repository([tmp_path], root=tmp_path)
    assert _rows(result.diagnostics) == [("crlf.yaml", 8, 19, E, "schema")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(alphabet="[]{}:-,&*!|>'\"#? \n\tab1", max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    with tempfile.TemporaryDirectory() as scratch:
        _write(Path(scratch) / "fuzz.yaml", raw)
        result = specs.load_repository([Path(scratch)], root=Path(scratch))
    assert result.files + len(result.diagnostics) >= 1


# ------------------------------------------------------------------ YAML values


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["yes", "No", "on", "0o17", "012", "0x1F", "1_000", "1:30", "~", "null"])
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=3), st.sampled_from([None, True, False]))
def test_values_match_pyyaml_safe_load(documents: list[Any], flow: bool | None) -> None:
    text = yaml.dump_all(
        documents, Dumper=yaml.CSafeDumper, default_flow_style=flow, allow_unicode=True
    )
    expected = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
    got = [d.value for d in specs._documents(text.encode()) if d.value is not None]
    assert got == expected


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("yes", True),
        ("Off", False),
        ("~", None),
        ("", None),
        ("012", 10),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("1:30", 90),
        ("-1.5e+3", -1500.0),
        ("1.5e3", "1.5e3"),  # YAML 1.1 floats need a dot and a signed exponent
        (".inf", float("inf")),
        ("2024-01-01", "2024-01-01"),  # timestamps stay text, as kubectl reads them
        ("'yes'", "yes"),
        ("!!str 12", "12"),
        ("!!int '12'", 12),
        ("! 12", "12"),
    ],
)
def test_scalars_resolve_like_yaml_1_1(scalar: str, value: object) -> None:
    (document,) = specs._documents(f"v: {scalar}\n".encode())
    assert document.value == {"v": value}
    assert type(document.value["v"]) is type(value)


# ------------------------------------------------------------------ schema


def test_schema_is_valid_draft_2020_12_with_editor_metadata() -> None:
    schema = specs.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("imagecache.schema.json")
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    for name in ("images", "imageCacheSize", "retentionDays", "imagePullSecrets"):
        assert spec["properties"][name]["title"]
        assert spec["properties"][name]["description"]
    assert spec["properties"]["imageCacheSize"]["default"] == 20
    assert spec["properties"]["retentionDays"]["default"] == 0


def _base() -> dict[str, Any]:
    return {
        "apiVersion": "eks.cloud.tencent.com/v1",
        "kind": "ImageCache",
        "metadata": {"name": "web", "labels": {"team": "a"}, "annotations": {"x/y": "z"}},
        "spec": {
            "images": ["nginx:1.27.2"],
            "imageCacheSize": 20,
            "retentionDays": 0,
            "imagePullSecrets": ["ns/name"],
        },
    }


_PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "labels"),
    ("metadata", "labels", "team"),
    ("metadata", "labels", "Bad Key"),
    ("metadata", "annotations", "x/y"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "bogus"),
    ("spec",),
    ("spec", "images"),
    ("spec", "images", 0),
    ("spec", "imageCacheSize"),
    ("spec", "retentionDays"),
    ("spec", "imagePullSecrets"),
    ("spec", "imagePullSecrets", 0),
    ("spec", "bogus"),
    ("status",),
    ("bogus",),
]
_VALUES = (
    _JSON_SCALARS
    | st.sampled_from(
        [
            19,
            20,
            20.0,
            32000,
            32001,
            -1,
            0,
            True,
            [],
            {},
            [""],
            ["a"] * 101,
            "a" * 64,
            "a" * 254,
            "ns/name",
            "NS/name",
            "ns/" + "a" * 254,
            "eks.cloud.tencent.com/v1",
            "ImageCache",
            "web-1.example",
            "-web",
            "web\n",
        ]
    )
    | st.lists(st.sampled_from(["nginx", "", 5, "ns/x"]), max_size=3)
)


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    target: Any = document
    for part in path[:-1]:
        if isinstance(target, dict):
            target = target.setdefault(part, {})
        elif isinstance(target, list) and isinstance(part, int) and part < len(target):
            target = target[part]
        else:
            return
    last = path[-1]
    in_list = isinstance(target, list) and isinstance(last, int) and last < len(target)
    if isinstance(target, dict) or in_list:
        target[last] = value


_JSONSCHEMA = jsonschema.Draft202012Validator(specs.schema())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES), max_size=3), st.data())
def test_fast_check_agrees_with_jsonschema(
    changes: list[tuple[tuple[str | int, ...], object]], data: st.DataObject
) -> None:
    document = _base()
    for path, value in changes:
        _set(document, path, value)
    for path in data.draw(st.lists(st.sampled_from(_PATHS), max_size=2)):
        _set(document, path, None) if data.draw(st.booleans()) else _drop(document, path)
    assert specs.is_schema_valid(document) == _JSONSCHEMA.is_valid(document)


def _drop(document: dict[str, Any], path: tuple[str | int, ...]) -> None:
    target: Any = document
    for part in path[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target.pop(path[-1], None)


def test_schema_keywords_outside_the_fast_subset_fall_back_to_jsonschema() -> None:
    schema = {"type": "array", "uniqueItems": True}
    validator = specs._Validator(schema)
    assert validator.fast([1, 2])
    assert not validator.fast([1, 1])


def test_the_packaged_schema_compiles_to_the_fast_check() -> None:
    assert specs._Validator(specs.schema())._compiled is not None


def test_schema_file_is_plain_json() -> None:
    json.loads(specs.SCHEMA_PATH.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ workers


def test_worker_processes_give_the_same_result_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(specs.PARALLEL_MIN_FILES + 10):
        extra = ("  imageCacheSize: 5",) if n % 37 == 0 else ()
        if n % 5 == 0:  # every field a worker must send back
            extra = (*extra, "  securityGroupIds: [sg-1cghhuuu]")
        images = "[nginx]" if n % 41 == 0 else "[nginx:1.27.2]"
        text = _cache(f"c{n % 150}", *extra, images=images)
        if n % 3 == 0:
            text = text.replace(
                "metadata:\n",
                "metadata:\n  labels: {team: web}\n  annotations:\n"
                '    eks.tke.cloud.tencent.com/eip-attributes: \'{"DeletePolicy":"Never"}\'\n',
            )
        _write(tmp_path / f"d{n % 7}" / f"c{n:03d}.yaml", text)
    monkeypatch.setattr(specs.pool, "_worker_count", lambda files: 2)  # even on a one-core machine
    parallel = specs.load_repository([tmp_path], root=tmp_path)
    monkeypatch.setattr(specs.pool, "_worker_count", lambda files: 1)
    serial = specs.load_repository([tmp_path], root=tmp_path)

    assert parallel == serial
    assert [c.location for c in parallel.caches] == [c.location for c in serial.caches]
    assert any(c.eip and c.labels and c.security_group_ids for c in parallel.caches)
    rules = {d.rule for d in serial.diagnostics}
    assert rules == {"schema", "mutable-tag", "duplicate-name"}
    assert all(d.severity in (Severity.ERROR, Severity.WARNING) for d in serial.diagnostics)


@pytest.mark.parametrize("workers", [1, 2])
def test_equal_label_and_annotation_maps_are_kept_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Every cache holds its maps until the plan is made: equal ones share one tuple, keys are
    interned, also across files a worker checked (bench/validate.py's peak memory)."""
    shared = "metadata:\n  labels: {tier: cache, team: web}\n  annotations: {owner: platform}\n"
    for n in range(8):
        _write(tmp_path / f"c{n}.yaml", _cache(f"c{n}").replace("metadata:\n", shared))
    other = "metadata:\n  labels: {team: api, tier: cache}\n"
    _write(tmp_path / "other.yaml", _cache("other").replace("metadata:\n", other))
    monkeypatch.setattr(specs.pool, "_worker_count", lambda files: workers)

    result = specs.load_repository([tmp_path], root=tmp_path)

    assert result.ok
    first, *rest = (c for c in result.caches if c.name != "other")
    assert first.labels == (("team", "web"), ("tier", "cache"))
    assert first.annotations == (("owner", "platform"),)
    assert len(rest) == 7
    assert all(c.labels is first.labels and c.annotations is first.annotations for c in rest)
    [odd] = (c for c in result.caches if c.name == "other")
    assert odd.labels == (("team", "api"), ("tier", "cache"))
    assert odd.labels[0][0] is first.labels[0][0]  # "team", once


def test_workers_only_for_large_trees_and_never_with_threads() -> None:
    assert specs._worker_count(specs.PARALLEL_MIN_FILES - 1) == 1
    assert specs._worker_count(specs.PARALLEL_MIN_FILES) in (1, 2)  # 1 on a one-core machine
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert specs._worker_count(10 * specs.PARALLEL_MIN_FILES) == 1
    finally:
        stop.set()
        thread.join()

"""Rendering contracts: diagnostic lines, GitHub annotations, plan text/markdown/json, status."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gitsync import planning, reports
from gitsync.model import (
    EIP_FIELD,
    SPEC_FIELDS,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    DesiredState,
    Diagnostic,
    EipAttributes,
    ObservedCache,
    ObservedState,
    ProviderFields,
    Severity,
    SourceLocation,
)
from gitsync.pricing import PriceTable

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def diag(severity: Severity = Severity.ERROR, message: str = "bad") -> Diagnostic:
    return Diagnostic(
        location=SourceLocation("caches/a.yaml", 7, 5),
        severity=severity,
        rule="schema",
        message=message,
        field="spec.imageCacheSize",
    )


def test_text_line_is_the_contract_shape() -> None:
    assert reports.diagnostic_line(diag()) == "caches/a.yaml:7:5: error: bad [schema]"


def test_github_annotation_escapes_what_workflow_commands_reserve() -> None:
    line = reports.github_annotation(diag(Severity.WARNING, "50%\nnext"))
    assert line == "::warning file=caches/a.yaml,line=7,col=5,title=schema::50%25%0Anext"


def test_validate_json_shape() -> None:
    text = reports.format_diagnostics(
        [diag()], output_format="json", files=1, documents=2, caches=1
    )
    data = json.loads(text)
    assert data["valid"] is False
    assert data["diagnostics"][0] == {
        "path": "caches/a.yaml",
        "line": 7,
        "column": 5,
        "severity": "error",
        "rule": "schema",
        "message": "bad",
        "field": "spec.imageCacheSize",
    }


def _plan():
    desired = DesiredState(
        caches=(
            CacheSpec(name="new", images=("nginx:1.27.2",)),
            CacheSpec(name="grow", images=("busybox:1.36.1",), image_cache_size_gib=40),
            CacheSpec(name="same", images=("alpine:3.20.3",)),
        ),
        revision="3f9c" + "0" * 36,
    )
    observed = ObservedState(
        caches=(
            ObservedCache("grow", "imc-1", CacheStatus.READY, ("busybox:1.36.1",), owner="g"),
            ObservedCache("same", "imc-2", CacheStatus.READY, ("alpine:3.20.3",), owner="g"),
            ObservedCache("old", "imc-3", CacheStatus.READY, ("redis:7",), owner="g"),
            ObservedCache("old2", "imc-4", CacheStatus.READY, ("redis:6",), owner="g"),
        )
    )
    policy = planning.PlanPolicy(controller_id="g", now=NOW)
    return planning.plan(desired, observed, policy=policy, prices=PriceTable())


def test_plan_text_lists_changes_with_symbols_and_cost() -> None:
    text = reports.format_plan(_plan(), output_format="text", provider="local")
    assert "1 to create, 1 to update, 0 to recreate, 2 to delete, 1 unchanged" in text
    assert "+ create" in text
    assert "~ update" in text
    assert "- delete" in text
    assert "imageCacheSize: 20 → 40" in text
    assert "Cost delta:" in text
    assert "/month" in text


def test_plan_markdown_is_a_table_for_a_pr_comment() -> None:
    text = reports.format_plan(_plan(), output_format="markdown", provider="local")
    assert text.startswith("### gitsync plan for `3f9c00000000` (local)")
    assert "| | action | cache | details | monthly | one-off |" in text
    assert "| + | create | `new` |" in text
    assert "**Cost delta:**" in text


def test_plan_json_summary_and_costs_add_up() -> None:
    the_plan = _plan()
    data = json.loads(reports.format_plan(the_plan, output_format="json", provider="local"))
    assert data["summary"] == {"create": 1, "update": 1, "recreate": 0, "delete": 2, "noop": 1}
    assert data["hasChanges"] is True
    monthly = sum(a["cost"]["monthly"] for a in data["actions"] if a["cost"])
    assert abs(monthly - data["cost"]["monthly"]) < 1e-3
    assert data["cost"]["currency"] == PriceTable().currency


def test_status_json_has_the_design_fields() -> None:
    cache = ObservedCache(
        name="web",
        cache_id="imc-abc",
        status=CacheStatus.READY,
        images=("nginx:1.27.2",),
        owner="gitsync",
        created_at=NOW,
        events=(CacheEvent("Normal", "Pulled", "ok", 2, NOW, NOW),),
    )
    view = reports.StatusView(
        provider="local",
        controller_id="gitsync",
        applied_revision="abc",
        newest_revision="abc",
        spec_valid=True,
        last_error=None,
        diagnostics=(),
        caches=(cache,),
    )
    data = reports.status_dict(view)
    (entry,) = data["caches"]
    for key in (
        "name",
        "id",
        "status",
        "managed",
        "images",
        "imageCacheSize",
        "retentionDays",
        "contentBytes",
        "snapshotId",
        "createdAt",
        "expiresAt",
        "lastMatchedAt",
        "events",
    ):
        assert key in entry
    assert entry["managed"] is True
    assert entry["createdAt"] == "2026-11-22T03:00:00Z"
    assert entry["events"][0]["count"] == 2
    assert data["appliedRevision"] == "abc"
    text = reports.format_status(view, output_format="text")
    assert "web" in text
    assert "imc-abc" in text
    assert "Ready" in text


def test_a_recreate_says_why_it_cannot_be_made_in_place() -> None:
    fields = ProviderFields(
        kept=SPEC_FIELDS,
        updatable=SPEC_FIELDS - {EIP_FIELD},
        why_not=((EIP_FIELD, "UpdateImageCache cannot change the EIP settings"),),
    )
    desired = DesiredState(
        caches=(
            CacheSpec(
                name="web",
                images=("nginx:1.27.2",),
                eip=EipAttributes(internet_max_bandwidth_out=2),
            ),
        ),
        revision="3f9c" + "0" * 36,
    )
    observed = ObservedState(
        caches=(ObservedCache("web", "imc-1", CacheStatus.READY, ("nginx:1.27.2",), owner="g"),),
        fields=fields,
    )
    policy = planning.PlanPolicy(controller_id="g", now=NOW)
    the_plan = planning.plan(desired, observed, policy=policy, prices=PriceTable())
    for output_format in ("text", "markdown"):
        text = reports.format_plan(the_plan, output_format=output_format, provider="tencentcloud")
        assert "UpdateImageCache cannot change the EIP settings: recreated" in text, text

"""How `gitsync plan` shows the size check in text, markdown and JSON (JSON: add, never rename)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gitsync import planning, reports, sizing
from gitsync.model import CacheSpec, DesiredState, ObservedState, Plan, SourceLocation
from gitsync.pricing import PriceTable

GIB = 1024**3
MIB = 1024**2
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def _plan_and_sizes() -> tuple[Plan, sizing.SizeReport]:
    big = CacheSpec(
        name="big",
        images=("r.example/big:1", "r.example/gone:1"),
        image_cache_size_gib=20,
        location=SourceLocation("caches/big.yaml", 4, 9),
    )
    small = CacheSpec(
        name="small",
        images=("r.example/small:1",),
        image_cache_size_gib=20,
        location=SourceLocation("caches/small.yaml", 4, 9),
    )
    the_plan = planning.plan(
        DesiredState(caches=(big, small)),
        ObservedState(caches=()),
        policy=planning.PlanPolicy(controller_id="g", now=NOW),
        prices=PriceTable(),
    )
    facts: dict[str, sizing.ImageOutcome] = {
        "r.example/big:1": sizing.ImageFacts(
            (sizing.LayerFacts("sha256:" + "a" * 64, 20 * MIB, 30 * GIB),)
        ),
        "r.example/gone:1": sizing.Unresolved("connection refused"),
        "r.example/small:1": sizing.ImageFacts((sizing.LayerFacts("sha256:" + "b" * 64, MIB),)),
    }
    sizes = sizing.SizeReport(
        caches=(sizing.check_cache(big, facts), sizing.check_cache(small, facts))
    )
    return the_plan, sizes


def test_text_has_a_row_per_cache_and_the_diagnostic_lines() -> None:
    the_plan, sizes = _plan_and_sizes()
    text = reports.format_plan(the_plan, output_format="text", provider="local", sizes=sizes)
    lines = text.splitlines()
    [header] = [line for line in lines if line.strip().startswith("CACHE")]
    assert header.split() == [
        "CACHE",
        "IMAGES",
        "COMPRESSED",
        "EXPANDED",
        "ON",
        "DISK",
        "SIZE",
        "USABLE",
        "HEADROOM",
        "FIT",
    ]
    [big] = [line for line in lines if line.strip().startswith("big ")]
    assert "1/2" in big
    assert "30.0 GiB exact" in big
    assert big.rstrip().endswith("too-small")
    [small] = [line for line in lines if line.strip().startswith("small ")]
    assert " est. " in small
    assert small.rstrip().endswith("fits")
    assert any(
        line.strip().startswith("caches/big.yaml:4:9: error: cache 'big' cannot fit")
        for line in lines
    )
    assert any("size check skipped for 1 of 2 images" in line for line in lines)


def test_markdown_warns_at_the_top_and_lists_diagnostics() -> None:
    the_plan, sizes = _plan_and_sizes()
    text = reports.format_plan(the_plan, output_format="markdown", provider="local", sizes=sizes)
    assert text.index("**Size check failed:**") < text.index("| | action |")
    assert "| cache | images | compressed | expanded | on disk | size |" in text
    assert "- :x: **error** `caches/big.yaml:4:9`:" in text
    assert "- :warning: **warning** `caches/big.yaml:4:9`: size check skipped" in text


def test_json_size_check_shape() -> None:
    the_plan, sizes = _plan_and_sizes()
    data = json.loads(
        reports.format_plan(the_plan, output_format="json", provider="local", sizes=sizes)
    )
    check = data["sizeCheck"]
    assert check["enabled"] is True
    assert check["ok"] is False
    assert set(check["assumptions"]) == {
        "usableFraction",
        "diskFactor",
        "lowRatio",
        "highRatio",
        "minHeadroom",
        "keepsCompressed",
    }
    big = check["caches"][0]
    assert big["name"] == "big"
    assert big["skipped"] == [{"image": "r.example/gone:1", "reason": "connection refused"}]
    assert big["exact"] is True
    assert big["expandedBytes"] == big["expandedBytesMin"] == 30 * GIB
    assert big["fit"] == "too-small"
    assert [d["severity"] for d in check["diagnostics"]] == ["error", "warning"]
    assert {d["rule"] for d in check["diagnostics"]} == {"size-fit"}
    for action in data["actions"]:
        cost = action["cost"]
        assert abs(cost["monthly"] - cost["standingMonthly"] - cost["oneOff"]) < 1e-6


def test_a_check_turned_off_says_so_and_json_is_null_without_one() -> None:
    the_plan, _ = _plan_and_sizes()
    off = sizing.SizeReport(off="--no-size-check")
    text = reports.format_plan(the_plan, output_format="text", provider="local", sizes=off)
    assert "Size check: off (--no-size-check)." in text
    data = json.loads(reports.format_plan(the_plan, output_format="json", provider="local"))
    assert data["sizeCheck"] is None

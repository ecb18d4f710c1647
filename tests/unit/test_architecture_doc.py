"""docs/architecture.md is the contract: its metric and alert tables must match what ships.

The doc is what dashboards, alert authors and CI jobs read, so a metric the code
exports but the doc omits (or one the doc promises that nothing exports) is a
broken contract. The exported names come from `test_dashboards.CONTRACT_METRICS`,
which the dashboard tests already hold to a live scrape; the alerts from the
plain rule file.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from test_dashboards import CONTRACT_METRICS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
RULES = ROOT / "manifests" / "prometheus" / "gitsync-rules.yaml"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _family(exposed: str) -> str:
    """The name a table row uses: histograms are listed without `_bucket`/`_sum`/`_count`."""
    return re.sub(r"_(bucket|sum|count)$", "", exposed)


def test_the_metric_table_lists_exactly_what_is_exported() -> None:
    rows = re.findall(r"^\| `(gitsync_[a-z_]+)", _section("Metric contract"), flags=re.M)
    documented = set(rows)
    exported = {_family(name) for name in CONTRACT_METRICS}
    assert len(rows) == len(documented), "a metric is listed twice"
    assert exported - documented == set(), "exported but not in docs/architecture.md"
    assert documented - exported == set(), "in docs/architecture.md but not exported"


def test_the_alert_table_lists_exactly_the_rules() -> None:
    documented = set(re.findall(r"^\| `(GitSync[A-Za-z]+)`", _section("Alert contract"), re.M))
    plain = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    shipped = {r["alert"] for g in plain["groups"] for r in g["rules"] if "alert" in r}
    assert documented == shipped


# Built, not written out, so that this file does not itself point outside the repository.
OUTSIDE = "../" + "shared/"


def test_no_file_points_outside_the_repository() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("gitsync", "tests", "bench", "docs", "manifests", "scripts")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json"}
        and OUTSIDE in path.read_text(encoding="utf-8", errors="replace")
    ]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert OUTSIDE not in readme
    assert offenders == []

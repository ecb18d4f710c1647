"""The Prometheus rules: the PrometheusRule object never drifts from the plain rule file.

gitsync ships its rules twice: `manifests/prometheus/gitsync-rules.yaml` for a
Prometheus configured by file (`rule_files:`), and
`manifests/prometheus/prometheusrule.yaml`, the same groups wrapped in a
monitoring.coreos.com/v1 PrometheusRule for the Prometheus Operator. The plain
file is the source of truth (promtool checks and unit-tests it); the object is
generated from it by this module:

    python tests/unit/test_rules_sync.py --write

and the tests below fail, with that command in the message, when someone edits
one file and not the other. The generator lives here, beside the test that
enforces it, so there is one small thing to read and nothing else to install.

The remaining tests hold the rules to docs/architecture.md's alert contract: the alert
names, the labels and annotations every alert carries, runbook links that
resolve to a section of docs/runbooks.md, and recording-rule names of the
form level:metric:operation.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "manifests" / "prometheus"
PLAIN = PROMETHEUS / "gitsync-rules.yaml"
OBJECT = PROMETHEUS / "prometheusrule.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/gitsync/gitsync/blob/main/docs/runbooks.md"
REGENERATE = "python tests/unit/test_rules_sync.py --write"

CONTRACT_ALERTS = frozenset(
    {
        "GitSyncCacheExpiringSoon",
        "GitSyncCacheMissing",
        "GitSyncCacheFailed",
        "GitSyncSpecInvalid",
        "GitSyncSourceStale",
        "GitSyncReconcileFailing",
        "GitSyncCacheHitRateLow",
        "GitSyncCacheUnused",
        "GitSyncCacheSavedNothing",
    }
)
REQUIRED_RECORDS = frozenset(
    {
        "gitsync:cache_lookups:rate5m",
        "gitsync:cache_lookups:hit_ratio_rate5m",
        "gitsync:startup_seconds:p50_rate5m",
        "gitsync:startup_seconds:p95_rate5m",
        "gitsync:cache_cost:monthly",
        "gitsync:cost:monthly",
        "gitsync:cache_saved_seconds:rate1h",
    }
)
SEVERITIES = frozenset({"critical", "warning", "info"})

HEADER = f"""\
# GENERATED from gitsync-rules.yaml by `{REGENERATE}`: do not edit.
# The same rules as the plain rule file, as a Prometheus Operator object;
# tests/unit/test_rules_sync.py fails when the two differ. If your Prometheus
# selects rules by label (kube-prometheus-stack: release=<name>), add the label
# with a kustomize patch rather than here.
"""


class _Dumper(yaml.SafeDumper):
    """Writes strings the way the plain file does, so the two read alike.

    Multi-line strings (the PromQL) as literal blocks; long prose (the
    descriptions) folded, whose line breaks read back as the spaces they
    replaced, so a template split over two lines is still the same template.
    """


_FOLD_OVER = 80


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    prose = len(value) > _FOLD_OVER and " " in value
    style = "|" if "\n" in value else ">" if prose else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def load_plain() -> dict[str, Any]:
    data = yaml.safe_load(PLAIN.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{PLAIN}: a rule file is a mapping with `groups`"
    return data


def prometheus_rule(plain: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule object holding exactly the plain file's groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "gitsync",
            "labels": {
                "app.kubernetes.io/name": "gitsync",
                "app.kubernetes.io/component": "monitoring",
            },
        },
        "spec": plain,
    }


def render(plain: dict[str, Any]) -> str:
    body = yaml.dump(
        prometheus_rule(plain),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body


def alerts(plain: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in plain["groups"] for rule in group["rules"] if "alert" in rule]


def records(plain: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in plain["groups"] for rule in group["rules"] if "record" in rule]


# ------------------------------------------------------------------------------ tests


def test_prometheusrule_holds_the_same_rules_as_the_plain_file() -> None:
    generated = yaml.safe_load(OBJECT.read_text(encoding="utf-8"))
    assert generated["apiVersion"] == "monitoring.coreos.com/v1"
    assert generated["kind"] == "PrometheusRule"
    assert generated["spec"] == load_plain(), (
        f"{OBJECT.name} differs from {PLAIN.name}: run `{REGENERATE}`"
    )


def test_prometheusrule_is_exactly_what_the_generator_writes() -> None:
    # Content equality above is the contract; this also catches a hand edit
    # of the generated file (metadata, comments) that the next regeneration
    # would silently undo.
    assert OBJECT.read_text(encoding="utf-8") == render(load_plain()), (
        f"{OBJECT.name} was edited by hand: change {PLAIN.name} or the generator, then run "
        f"`{REGENERATE}`"
    )


def test_render_round_trips_multiline_promql() -> None:
    plain = {"groups": [{"name": "g", "rules": [{"record": "a:b:c", "expr": "sum(\n  x\n)\n"}]}]}
    text = render(plain)
    assert "expr: |\n" in text
    assert yaml.safe_load(text)["spec"] == plain


def test_alerts_are_exactly_the_contract() -> None:
    names = [rule["alert"] for rule in alerts(load_plain())]
    assert len(names) == len(set(names)), f"duplicate alerts: {names}"
    assert set(names) == CONTRACT_ALERTS


def test_every_alert_has_severity_annotations_and_a_for() -> None:
    problems: list[str] = []
    for rule in alerts(load_plain()):
        name = rule["alert"]
        annotations = rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
        if not re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))):
            problems.append(f"{name}: needs a `for:` duration")
        summary = annotations.get("summary", "")
        if not summary or "{{" in summary:
            problems.append(f"{name}: summary must be static text (it groups notifications)")
        if "{{ $labels." not in annotations.get("description", ""):
            problems.append(f"{name}: description must be templated with $labels")
        expected = f"{RUNBOOK_BASE}#{name.lower()}"
        if annotations.get("runbook_url") != expected:
            problems.append(f"{name}: runbook_url must be {expected}")
    assert not problems, "\n".join(problems)


def test_every_runbook_url_lands_on_a_runbook_section() -> None:
    # GitHub's anchor for "## GitSyncCacheMissing" is "#gitsynccachemissing".
    headings = {
        line[3:].strip().lower()
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    anchors = {rule["annotations"]["runbook_url"].split("#", 1)[1] for rule in alerts(load_plain())}
    assert anchors <= headings, f"no runbook section for {sorted(anchors - headings)}"


def test_recording_rules_are_named_level_metric_operation() -> None:
    names = [rule["record"] for rule in records(load_plain())]
    assert len(names) == len(set(names)), f"duplicate records: {names}"
    bad = [n for n in names if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", n)]
    assert not bad, f"not level:metric:operation: {bad}"
    assert set(names) >= REQUIRED_RECORDS, f"missing {sorted(REQUIRED_RECORDS - set(names))}"


def rule_test_files() -> list[Path]:
    """The promtool unit-test files: one per evaluation_interval (see their headers)."""
    return sorted((PROMETHEUS / "tests").glob("*.test.yaml"))


def test_the_rule_test_files_fire_and_silence_every_alert() -> None:
    # promtool runs the files (tests/integration/test_promtool.py); this checks
    # that together they cover every alert both ways, which promtool cannot know.
    files = rule_test_files()
    assert "gitsync-rules.test.yaml" in {f.name for f in files}, files
    groups = [group for path in files for group in yaml.safe_load(path.read_text("utf-8"))["tests"]]
    fired: set[str] = set()
    silent: set[str] = set()
    summaries: dict[str, str] = {
        rule["alert"]: rule["annotations"]["summary"] for rule in alerts(load_plain())
    }
    for group in groups:
        for case in group.get("alert_rule_test", []):
            if case["exp_alerts"]:
                fired.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert alert["exp_annotations"]["summary"] == summaries[case["alertname"]]
                    assert "severity" in alert["exp_labels"]
            else:
                silent.add(case["alertname"])
    assert fired == CONTRACT_ALERTS, f"never fires: {sorted(CONTRACT_ALERTS - fired)}"
    assert silent == CONTRACT_ALERTS, f"never silent: {sorted(CONTRACT_ALERTS - silent)}"
    tested = {case["expr"] for group in groups for case in group.get("promql_expr_test", ())}
    assert tested >= REQUIRED_RECORDS, f"untested records: {REQUIRED_RECORDS - tested}"


def main(argv: list[str]) -> int:
    """`--write` regenerates prometheusrule.yaml; `--check` exits 1 when it is stale."""
    text = render(load_plain())
    if argv == ["--write"]:
        OBJECT.write_text(text, encoding="utf-8")
        return 0
    if argv == ["--check"]:
        current = OBJECT.read_text(encoding="utf-8") if OBJECT.exists() else ""
        return 0 if current == text else 1
    sys.stderr.write(f"usage: {REGENERATE} | --check\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

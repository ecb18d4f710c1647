"""The rule files checked and unit-tested by the real `promtool`.

`promtool check rules` parses every expression and template and checks the
rule names. `promtool test rules` runs manifests/prometheus/tests/*.test.yaml
(gitsync-rules.test.yaml, and gitsync-rules-7d.test.yaml for the rules that
look a week back, at coarser steps): every alert fires in a realistic
situation and stays silent in a near miss, and the recording rules compute
the values expected.
promtool comes from Debian's `prometheus` package, which .ci/run installs;
without it these tests skip and say so.

The PrometheusRule object is checked as well: its `spec` is written to a
plain rule file for promtool, so a broken generator cannot hide behind the
plain file passing. And every PromQL expression of the dashboards, with the
Grafana variables filled in, goes through promtool's parser the same way (as
recording rules of a scratch file), so a typo in a panel fails here rather
than as an empty panel.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "manifests" / "prometheus"
RULES = PROMETHEUS / "gitsync-rules.yaml"
OBJECT = PROMETHEUS / "prometheusrule.yaml"
RULE_TESTS = PROMETHEUS / "tests" / "gitsync-rules.test.yaml"
ALL_RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yaml"))
DASHBOARD_LINT = ROOT / "tests" / "unit" / "test_dashboards.py"
TIMEOUT_SECONDS = 60


def _dashboard_lint() -> ModuleType:
    """tests/unit/test_dashboards.py, where all_promql_expressions() lives."""
    name = "gitsync_dashboard_lint"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DASHBOARD_LINT)
    assert spec is not None, DASHBOARD_LINT
    assert spec.loader is not None, DASHBOARD_LINT
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing: install Debian's prometheus package (CI's .ci/run does)")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def test_promtool_checks_the_plain_rule_file(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    count = sum(len(group["rules"]) for group in groups)
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


def test_promtool_checks_the_prometheusrule_spec(promtool: str, tmp_path: Path) -> None:
    spec = yaml.safe_load(OBJECT.read_text(encoding="utf-8"))["spec"]
    extracted = tmp_path / "prometheusrule-spec.yaml"
    extracted.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = _run(promtool, "check", "rules", str(extracted), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule_file(promtool: str, tmp_path: Path) -> None:
    # The check above means something only if promtool fails on a bad rule.
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules["groups"][1]["rules"][0]["expr"] = "gitsync_cache_desired ==="
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    result = _run(promtool, "check", "rules", str(broken), cwd=tmp_path)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


def test_promtool_unit_tests_pass(promtool: str) -> None:
    # Run from the tests folder: rule_files in the test files are relative to it.
    assert RULE_TESTS in ALL_RULE_TESTS
    names = [path.name for path in ALL_RULE_TESTS]
    result = _run(promtool, "test", "rules", *names, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(names), result.stdout


def test_promtool_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    # The unit tests must pin behaviour: the same tests against rules with a
    # 1-day instead of a 3-day expiry threshold have to fail.
    rules_text = RULES.read_text(encoding="utf-8")
    assert "< 3 * 86400" in rules_text
    (tmp_path / "tests").mkdir()
    (tmp_path / "gitsync-rules.yaml").write_text(
        rules_text.replace("< 3 * 86400", "< 1 * 86400"), encoding="utf-8"
    )
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path / "tests")
    assert result.returncode != 0
    assert "GitSyncCacheExpiringSoon" in result.stdout + result.stderr


def test_promtool_week_tests_catch_a_dropped_condition(promtool: str, tmp_path: Path) -> None:
    # GitSyncCacheSavedNothing must not fire for a cache desired for less than
    # a week; without that condition the week-long tests have to fail.
    rules_text = RULES.read_text(encoding="utf-8")
    condition = "gitsync_cache_desired offset 7d == 1"
    assert condition in rules_text
    (tmp_path / "tests").mkdir()
    (tmp_path / "gitsync-rules.yaml").write_text(
        rules_text.replace(condition, "gitsync_cache_desired == 1"), encoding="utf-8"
    )
    week = PROMETHEUS / "tests" / "gitsync-rules-7d.test.yaml"
    shutil.copy(week, tmp_path / "tests" / week.name)
    result = _run(promtool, "test", "rules", week.name, cwd=tmp_path / "tests")
    assert result.returncode != 0
    assert "GitSyncCacheSavedNothing" in result.stdout + result.stderr


def test_promtool_parses_every_dashboard_expression(promtool: str, tmp_path: Path) -> None:
    expressions = [e for e in _dashboard_lint().all_promql_expressions() if ".json:" in e.origin]
    assert len(expressions) > 20
    rules = [
        {"record": f"dashboard:expression_{index}:check", "expr": expression.query}
        for index, expression in enumerate(expressions)
    ]
    scratch = tmp_path / "dashboard-expressions.yaml"
    scratch.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8"
    )
    result = _run(promtool, "check", "rules", str(scratch), cwd=tmp_path)
    origins = "\n".join(f"{i}: {e.origin}" for i, e in enumerate(expressions))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nexpressions:\n{origins}"

"""The automation branch's pure parts: its metrics, its commit message, its arguments.

The rounds themselves run against real git remotes in
tests/integration/test_automation_branch.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from test_dashboards import CONTRACT_METRICS

from gitsync.automation import AutomationBranch, commit_message
from gitsync.errors import ConfigError
from gitsync.metrics.automation import AUTOMATION_RESULTS, AutomationMetrics
from gitsync.suggest.edits import EditOutcome
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind

REG = "ccr.ccs.tencentyun.com/team"


def suggestion(**fields: object) -> Suggestion:
    base: dict[str, object] = {
        "kind": SuggestionKind.BUMP_TAG,
        "cache": "api",
        "reason": "policy semver=~1.4 allows 1.4.3",
        "evidence": SuggestionEvidence(),
        "saved_seconds_per_day": 0.0,
        "monthly_cost": 0.0,
        "from_images": (f"{REG}/api:1.4.0",),
        "to_images": (f"{REG}/api:1.4.3",),
        "file": "caches/api.yaml",
        "policy": "semver=~1.4",
    }
    base.update(fields)
    return Suggestion(**base)  # type: ignore[arg-type]


def applied(*suggestions: Suggestion) -> list[EditOutcome]:
    return [EditOutcome(s, applied=True, path=s.file, detail="") for s in suggestions]


# ------------------------------------------------------------------ metrics


def test_every_result_is_exposed_from_the_start_and_counts() -> None:
    registry = CollectorRegistry()
    metrics = AutomationMetrics(registry=registry)

    def value(result: str) -> float | None:
        return registry.get_sample_value("gitsync_automation_pushes_total", {"result": result})

    assert {result: value(result) for result in AUTOMATION_RESULTS} == dict.fromkeys(
        ("pushed", "deleted", "unchanged", "failed"), 0.0
    )
    assert registry.get_sample_value("gitsync_automation_pending_bumps") == 0
    metrics.record("failed")
    metrics.record("failed")
    metrics.record("pushed")
    metrics.set_pending(3)
    assert value("failed") == 2
    assert value("pushed") == 1
    assert registry.get_sample_value("gitsync_automation_pending_bumps") == 3


def test_an_unknown_result_or_a_negative_count_is_a_bug_said_plainly() -> None:
    metrics = AutomationMetrics(registry=CollectorRegistry())
    with pytest.raises(ValueError, match="'skipped' is not one of pushed, deleted"):
        metrics.record("skipped")
    with pytest.raises(ValueError, match="must not be negative"):
        metrics.set_pending(-1)


def test_the_metrics_are_in_the_contract() -> None:
    registry = CollectorRegistry()
    AutomationMetrics(registry=registry)
    exposed = {
        sample.name
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")  # the client's own, not part of the contract
    }
    assert exposed == {"gitsync_automation_pushes_total", "gitsync_automation_pending_bumps"}
    assert exposed <= CONTRACT_METRICS


# ------------------------------------------------------------------ the commit message


def test_the_message_lists_each_bump_with_its_tags_and_digests() -> None:
    old, new = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    bump = suggestion(from_digests=(old,), to_digests=(new,))
    web = suggestion(
        cache="web",
        from_images=("nginx:1.27",),
        to_images=("nginx:1.28",),
        policy="semver=^1",
    )

    message = commit_message(applied(bump, web), tracked="main")

    assert message.splitlines()[:8] == [
        "gitsync: 2 image bumps on main",
        "",
        f"- api: {REG}/api 1.4.0 -> 1.4.3 (policy semver=~1.4)",
        f"  from {old}",
        f"  to   {new}",
        "- web: docker.io/library/nginx 1.27 -> 1.28 (policy semver=^1)",
        "  from digest unknown",
        "  to   digest unknown",
    ]
    assert message.endswith("deleted when nothing is pending.\n")


def test_suggestions_are_listed_with_their_reason_after_the_bumps() -> None:
    bump = suggestion()
    resize = suggestion(
        kind=SuggestionKind.RESIZE,
        cache="big",
        reason="the images need 31 GiB",
        from_images=(),
        to_images=(),
        from_size_gib=20,
        to_size_gib=40,
        policy=None,
    )
    added = suggestion(
        kind=SuggestionKind.ADD_IMAGE,
        cache="web",
        reason="missed 12 times",
        from_images=(),
        to_images=(),
        images=("redis:7.2",),
        policy=None,
    )

    message = commit_message(applied(resize, bump, added), tracked="trunk")

    lines = message.splitlines()
    assert lines[0] == "gitsync: 1 image bump and 2 suggestions on trunk"
    assert lines[2].startswith("- api: ")
    assert lines[5:9] == [
        "- resize big: imageCacheSize 20 -> 40 GiB",
        "  the images need 31 GiB",
        "- add-image web: redis:7.2",
        "  missed 12 times",
    ]


def test_a_reference_that_does_not_parse_is_written_as_given() -> None:
    odd = suggestion(from_images=("Not A Ref",), to_images=(f"{REG}/api:2",))
    message = commit_message(applied(odd), tracked="main")
    assert f"- api: Not A Ref  -> {REG}/api:2 (policy semver=~1.4)" in message


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"branch": "main"}, "'main' is the tracked branch; .* needs --allow-push-to-tracked"),
        ({"branch": "refs/heads/main"}, "needs --allow-push-to-tracked"),
        ({"interval_seconds": 0.0}, "interval must be positive seconds"),
        ({"retry_base_seconds": -1.0}, "retry base must be positive seconds"),
        ({"path": "../outside"}, "must be a folder inside the repository"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_git_call(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {
        "repo": str(tmp_path / "nowhere"),
        "tracked_branch": "main",
        "branch": "auto",
        "work_dir": tmp_path / "work",
        "bumps": tuple,
        "interval_seconds": 60.0,
    }
    options.update(fields)
    with pytest.raises(ConfigError, match=message):
        AutomationBranch(**options)  # type: ignore[arg-type]
    assert not (tmp_path / "work").exists()

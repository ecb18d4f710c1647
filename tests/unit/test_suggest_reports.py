"""Rendering contracts of `gitsync suggest`: the JSON shape of the issue, text and markdown."""

from __future__ import annotations

import json

import pytest

from gitsync.model import SourceLocation
from gitsync.suggest import reports
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
WEEK = 7 * 86400.0
WINDOW = {"window_seconds": WEEK, "since": NOW - WEEK, "until": NOW, "currency": "CNY"}

# The issue's field list (#15, section 2), verbatim.
ISSUE_TOP = {"window", "suggestions"}
ISSUE_FIELDS = {
    "kind",
    "cache",
    "file",
    "images",
    "from",
    "to",
    "evidence",
    "savedSecondsPerDay",
    "monthlyCost",
    "reason",
}
ISSUE_EVIDENCE = {"hits", "partials", "misses", "pods"}
# What gitsync adds to it (documented in gitsync/suggest/reports.py; add, never rename).
ADDED_TOP = {"currency", "total"}
ADDED_FIELDS = {"size", "sizeNote", "policy"}
ADDED_EVIDENCE = {"observedSeconds"}


def sample() -> list[Suggestion]:
    return [
        Suggestion(
            kind=SuggestionKind.NEW_CACHE,
            cache="redis",
            reason="In the last 7 days redis:7 was pulled 7 times (7 misses); a new cache helps.",
            evidence=SuggestionEvidence(misses=7, pods=7, observed_seconds=12.3456),
            saved_seconds_per_day=12.3456,
            monthly_cost=1.234567891,
            images=("docker.io/library/redis:7",),
            to_size_gib=30,
            size_note="up to 20.0 GiB on disk for 3 unique layers (estimated)",
            file="caches/redis.yaml",
        ),
        Suggestion(
            kind=SuggestionKind.BUMP_TAG,
            cache="web",
            reason="Pods run app:1.5 | not app:1.4.",
            evidence=SuggestionEvidence(partials=3, pods=3),
            saved_seconds_per_day=4.0,
            monthly_cost=0.5,
            images=("docker.io/library/app:1.5",),
            from_images=("docker.io/library/app:1.4",),
            to_images=("docker.io/library/app:1.5",),
            location=SourceLocation("caches/web.yaml", 1, 1),
            file="caches/web.yaml",
        ),
        Suggestion(
            kind=SuggestionKind.RESIZE,
            cache="data",
            reason="Too small.",
            evidence=SuggestionEvidence(misses=1, pods=1),
            saved_seconds_per_day=1.0,
            monthly_cost=2.0,
            images=("docker.io/library/big:1",),
            from_size_gib=20,
            to_size_gib=70,
            size_note="up to 50.0 GiB on disk",
            file="caches/data.yaml",
        ),
        Suggestion(
            kind=SuggestionKind.ADD_IMAGE,
            cache="api",
            reason="Starts with api.",
            evidence=SuggestionEvidence(misses=3, pods=2),
            saved_seconds_per_day=0.0,
            monthly_cost=0.75,
            images=("docker.io/library/memcached:1", "docker.io/library/busybox:1"),
            file="caches/api.yaml",
        ),
        Suggestion(
            kind=SuggestionKind.REMOVE_CACHE,
            cache="old-and-long-name",
            reason="Unused for 7 days.",
            evidence=SuggestionEvidence(),
            saved_seconds_per_day=0.0,
            monthly_cost=-3.5,
            images=("docker.io/library/legacy:1",),
            file="caches/old.yaml",
        ),
    ]


def test_json_has_the_issue_shape_and_only_documented_additions() -> None:
    data = json.loads(json.dumps(reports.suggestions_json(sample(), **WINDOW)))
    assert set(data) == ISSUE_TOP | ADDED_TOP
    assert len(data["suggestions"]) == 5
    for item in data["suggestions"]:
        assert set(item) == ISSUE_FIELDS | ADDED_FIELDS
        assert set(item["evidence"]) == ISSUE_EVIDENCE | ADDED_EVIDENCE
        assert isinstance(item["images"], list)
        assert isinstance(item["savedSecondsPerDay"], float)
        assert isinstance(item["monthlyCost"], float)


def test_json_values() -> None:
    data = reports.suggestions_json(sample(), **WINDOW)
    assert data["window"] == {
        "since": "2027-01-08T08:00:00Z",
        "until": "2027-01-15T08:00:00Z",
        "seconds": WEEK,
        "text": "7 days",
    }
    assert data["currency"] == "CNY"
    assert data["total"] == {
        "suggestions": 5,
        "savedSecondsPerDay": round(12.3456 + 4 + 1, 3),
        "monthlyCost": round(1.234567891 + 0.5 + 2 + 0.75 - 3.5, 6),
    }
    new, bump, resize, add, remove = data["suggestions"]  # type: ignore[misc]
    assert new == {
        "kind": "new-cache",
        "cache": "redis",
        "file": "caches/redis.yaml",
        "images": ["docker.io/library/redis:7"],
        "from": None,
        "to": None,
        "evidence": {"hits": 0, "partials": 0, "misses": 7, "pods": 7, "observedSeconds": 12.346},
        "savedSecondsPerDay": 12.346,
        "monthlyCost": 1.234568,
        "reason": sample()[0].reason,
        "size": 30,
        "sizeNote": "up to 20.0 GiB on disk for 3 unique layers (estimated)",
        "policy": None,
    }
    assert (bump["from"], bump["to"]) == (
        ["docker.io/library/app:1.4"],
        ["docker.io/library/app:1.5"],
    )
    assert bump["size"] is None
    assert bump["sizeNote"] is None
    assert (resize["from"], resize["to"], resize["size"]) == (20, 70, None)
    assert (add["from"], add["to"]) == (None, None)
    assert remove["monthlyCost"] == -3.5


def test_json_of_a_new_cache_without_a_size() -> None:
    new = sample()[0]
    unsized = Suggestion(
        kind=new.kind,
        cache=new.cache,
        reason=new.reason,
        evidence=new.evidence,
        saved_seconds_per_day=0.0,
        monthly_cost=0.0,
        images=new.images,
        size_note="size unknown for redis:7: registry said 401",
    )
    item = reports.suggestion_dict(unsized)
    assert item["size"] is None
    assert item["sizeNote"] == "size unknown for redis:7: registry said 401"
    assert item["evidence"] == {
        "hits": 0,
        "partials": 0,
        "misses": 7,
        "pods": 7,
        "observedSeconds": 12.346,
    }


def test_text_is_aligned_and_ends_with_the_total() -> None:
    text = reports.render_text(sample(), **WINDOW)
    lines = text.splitlines()
    assert lines[0] == (
        "Suggestions from 7 days of lookups, 2027-01-08T08:00:00Z to 2027-01-15T08:00:00Z:"
    )
    header = next(line for line in lines if line.lstrip().startswith("#"))
    rows = [line for line in lines if line[:5].strip().isdigit()]
    assert len(rows) == 5
    # Every column starts where its header does.
    for title in ("KIND", "CACHE", "CHANGE"):
        column = header.index(title)
        assert all(row[column - 1] == " " and row[column] != " " for row in rows), title
    # Numbers align right: the saves and costs columns end where their headers end.
    for title in ("SAVES", "COSTS"):
        end = header.index(title) + len(title)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows), title
    assert "+ new-cache" in rows[0]
    assert "12 s/day" in rows[0]
    assert "+1.23 CNY/month" in rows[0]
    assert "new cache in caches/redis.yaml (30 GiB): redis:7" in rows[0]
    assert "app:1.4 → app:1.5" in rows[1]
    assert "imageCacheSize 20 → 70 GiB" in rows[2]
    assert "+ memcached:1, busybox:1" in rows[3]
    assert "-3.50 CNY/month" in rows[4]
    assert "remove cache caches/old.yaml (1 image)" in rows[4]
    assert "evidence: 0 hits, 0 partials, 7 misses, 7 pods; misses took 12 s on average" in text
    assert "size: up to 20.0 GiB on disk for 3 unique layers (estimated)" in text
    assert "why: Unused for 7 days." in text
    assert lines[-1] == "Total: 5 suggestions, about 17 s of pulls saved a day, +0.98 CNY a month."


def test_text_with_nothing_to_suggest() -> None:
    text = reports.render_text([], **WINDOW)
    assert text.splitlines()[-1] == "Total: nothing to suggest."


def test_markdown_is_a_pull_request_body() -> None:
    text = reports.render_markdown(sample(), **WINDOW)
    lines = text.splitlines()
    assert lines[0] == "### gitsync suggest: 5 suggestions"
    assert "From 7 days of lookups, `2027-01-08T08:00:00Z` to `2027-01-15T08:00:00Z`." in lines
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert len(table) == 5
    assert table[0].startswith("| 1 | new-cache | `redis` |")
    assert table[0].endswith("| 12 s | +1.23 CNY |")
    # A '|' in a reason cannot break the table or the list.
    assert "Pods run app:1.5 \\| not app:1.4." in text
    headings = [line for line in lines if line.startswith("#### ")]
    assert headings == [
        "#### 1. new-cache `redis`",
        "#### 2. bump-tag `web`",
        "#### 3. resize `data`",
        "#### 4. add-image `api`",
        "#### 5. remove-cache `old-and-long-name`",
    ]
    assert "- **File:** `caches/web.yaml`" in lines
    assert "- **Evidence:** 0 hits, 3 partials, 0 misses, 3 pods" in lines
    assert "- **Change:** `app:1.4` → `app:1.5`" in lines
    assert "- **Size:** up to 50.0 GiB on disk" in lines
    assert "**Total:** 5 suggestions, about 17 s of pulls saved a day, +0.98 CNY a month." in lines


def test_markdown_with_nothing_to_suggest() -> None:
    text = reports.render_markdown([], **WINDOW)
    assert text.splitlines()[0] == "### gitsync suggest: nothing to suggest"
    assert "|" not in text


def test_policy_is_shown() -> None:
    bump = sample()[1]
    with_policy = Suggestion(
        kind=bump.kind,
        cache=bump.cache,
        reason=bump.reason,
        evidence=bump.evidence,
        saved_seconds_per_day=bump.saved_seconds_per_day,
        monthly_cost=bump.monthly_cost,
        images=bump.images,
        from_images=bump.from_images,
        to_images=bump.to_images,
        policy="semver-minor",
    )
    assert reports.suggestion_dict(with_policy)["policy"] == "semver-minor"
    assert "(policy semver-minor)" in reports.render_text([with_policy], **WINDOW)
    assert "- **Policy:** `semver-minor`" in reports.render_markdown([with_policy], **WINDOW)


def test_format_suggestions_dispatches_and_refuses_unknown_formats() -> None:
    as_json = reports.format_suggestions(sample(), output_format="json", **WINDOW)
    assert json.loads(as_json) == json.loads(
        json.dumps(reports.suggestions_json(sample(), **WINDOW))
    )
    assert reports.format_suggestions([], output_format="text", **WINDOW).endswith(
        "nothing to suggest."
    )
    assert reports.format_suggestions([], output_format="markdown", **WINDOW).startswith("###")
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        reports.format_suggestions([], output_format="yaml", **WINDOW)

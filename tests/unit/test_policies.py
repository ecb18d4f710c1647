"""Image policies: markers parsed (or refused at the right column) and tags compared under them."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitsync.errors import PermanentError
from gitsync.policies import (
    ImagePolicy,
    PolicyError,
    PolicyKind,
    is_newer,
    newest,
    parse_marker,
)

# The registry: a patch release inside ~1.4, a minor release outside it.
RELEASES = ["1.4.0", "1.4.3", "1.5.0"]


@pytest.mark.parametrize(
    ("marker", "tags", "expected"),
    [
        ("semver=~1.4", RELEASES, "1.4.3"),
        ("semver=^1", RELEASES, "1.5.0"),
        ("semver=>=1.2 <2", [*RELEASES, "2.0.0"], "1.5.0"),
        ("semver=1.x", [*RELEASES, "2.0.0"], "1.5.0"),
        ("semver=~1.4 || ^3", [*RELEASES, "2.0.0", "3.1.0"], "3.1.0"),
        ("semver=1.2 - 1.4", [*RELEASES, "1.2.0"], "1.4.3"),
        ("semver=  >=1.2   <1.5  ", RELEASES, "1.4.3"),  # spaces as written are fine
        ("semver=~1.4", ["1.4.0", "v1.4.7", "1.4.5"], "v1.4.7"),  # a leading v
        # numeric parts compare as numbers, not strings
        ("semver=^1", ["1.9.0", "1.10.0", "1.2.0"], "1.10.0"),
        # not versions, or not full ones: no candidates
        ("semver=~1.4", ["latest", "1.4", "1.4.3.1", "01.4.9", "V1.4.9", "stable"], None),
        ("semver=~1.4", [], None),
        (
            r"numerical filter=^(\d{8})-",
            ["20261130-ff00", "20261201-ab12", "main"],
            "20261201-ab12",
        ),
        (r"numerical filter=^build-(\d+)$", ["build-9", "build-10", "build-x"], "build-10"),
        ("numerical", ["9", "10", "v11", "1e3"], "10"),  # no filter: the whole tag is the number
        (r"alphabetical filter=^main-(.*)$", ["main-a1", "main-b0", "dev-z9"], "main-b0"),
        ("alphabetical", ["2026-11-30", "2026-12-01", "2026-02-28"], "2026-12-01"),
        # no capture group: the whole tag is the key; search, not match
        (r"alphabetical filter=rc", ["v1-rc", "v2-rc", "v3"], "v2-rc"),
        # an optional group that takes no part in the match: no key
        (r"numerical filter=^x(\d+)?$", ["x", "x7"], "x7"),
    ],
)
def test_newest_picks_the_tag_the_policy_allows(
    marker: str, tags: list[str], expected: str | None
) -> None:
    assert newest(parse_marker(marker), tags) == expected


def test_prereleases_only_where_the_range_names_one_of_the_same_version() -> None:
    tags = ["1.4.3", "1.4.4-rc.1", "1.5.0-beta.2", "2.0.0-rc.1"]
    assert newest(parse_marker("semver=~1.4"), tags) == "1.4.3"
    assert newest(parse_marker("semver=^1"), tags) == "1.4.3"
    assert newest(parse_marker("semver=>=1.4.4-rc.0 <1.5"), tags) == "1.4.4-rc.1"
    assert newest(parse_marker("semver=*"), tags) == "1.4.3"


def test_invalid_tags_from_a_registry_are_no_candidates() -> None:
    hostile = ["", "-1.4.9", "1.4.9 ", "1.4.9\n", "a" * 129, "1.4.9/x", "1.4.9+meta", "ä"]
    assert newest(parse_marker("semver=~1.4"), [*hostile, "1.4.1"]) == "1.4.1"
    assert newest(parse_marker("alphabetical"), [*hostile, "b"]) == "b"
    assert newest(parse_marker("numerical"), ["٣", "²", "1_000", "+5", "12"]) == "12"


def test_equal_keys_are_broken_by_the_tag_whatever_the_order() -> None:
    semver = parse_marker("semver=~1.4")
    numerical = parse_marker(r"numerical filter=^(\d{8})-")
    rng = random.Random(16)
    for _ in range(20):
        tags = ["1.4.3", "v1.4.3", "1.4.0"]
        rng.shuffle(tags)
        assert newest(semver, tags) == "v1.4.3"
        dated = ["20261201-ab12", "20261201-cd34", "20261130-zz99"]
        rng.shuffle(dated)
        assert newest(numerical, dated) == "20261201-cd34"


@pytest.mark.parametrize(
    ("marker", "candidate", "current", "expected"),
    [
        ("semver=~1.4", "1.4.3", "1.4.0", True),
        ("semver=~1.4", "1.4.3", "1.4.3", False),
        ("semver=~1.4", "v1.4.3", "1.4.3", False),  # the same version, spelled otherwise
        ("semver=~1.4", "1.4.3", "2.0.0", False),  # outside the range, but newer: no downgrade
        ("semver=~1.4", "1.4.3", "latest", True),  # not a version: any allowed tag is newer
        ("semver=~1.4", "1.5.0", "1.4.0", False),  # the candidate must be allowed
        ("semver=~1.4", "1.4.3", "1.4.3-rc.1", True),
        (r"numerical filter=^(\d{8})-", "20261201-ab12", "20261130-ff00", True),
        (r"numerical filter=^(\d{8})-", "20261130-ff00", "20261201-ab12", False),
        (r"numerical filter=^(\d{8})-", "20261201-ab12", "main", True),
        ("alphabetical", "b", "a", True),
        ("alphabetical", "a", "b", False),
    ],
)
def test_is_newer(marker: str, candidate: str, current: str, expected: bool) -> None:
    assert is_newer(parse_marker(marker), candidate, current) is expected


def test_parsed_policies_say_what_they_are() -> None:
    policy = parse_marker("  semver=>=1.2   <2 ")
    assert (policy.kind, policy.range, policy.filter, policy.text) == (
        PolicyKind.SEMVER,
        ">=1.2 <2",
        None,
        "semver=>=1.2   <2",
    )
    ordered = parse_marker(r"numerical filter=^(\d+)$")
    assert (ordered.kind, ordered.range, ordered.filter) == (
        PolicyKind.NUMERICAL,
        None,
        r"^(\d+)$",
    )
    assert parse_marker("alphabetical") == ImagePolicy(
        text="alphabetical", kind=PolicyKind.ALPHABETICAL
    )
    assert parse_marker("alphabetical").filter is None


@pytest.mark.parametrize(
    ("marker", "at", "fragment"),
    [
        ("", "", "names no policy"),
        ("semvar=~1.4", "semvar", "unknown policy 'semvar' (did you mean semver?)"),
        ("numeric filter=x", "numeric", "(did you mean numerical?)"),
        ("semver", "", "semver needs a range"),
        ("semver=", "", "semver needs a range after '='"),
        ("semver=~1.4 |", "|", "'|' is not part of an npm-style range"),
        ("semver=~1.4 later", "later", "'later' is not part of an npm-style range"),
        ("semver=~1.4 ||", "||", "an empty alternative around '||'"),
        ("semver=|| ~1.4", "||", "an empty alternative around '||'"),
        ("semver=~1 || || ^2", "|| ^2", "an empty alternative"),
        ("semver=1.2 - 1.4 - 2", "- 1.4 - 2", "a hyphen range is LOW - HIGH"),
        ("semver=>=1 1.2 - 1.4", "- 1.4", "a hyphen range is LOW - HIGH"),
        ("semver=~1.4.x.y", "~1.4.x.y", "is not part of an npm-style range"),
        ("numerical=asc", "=asc", "numerical takes no value"),
        ("numerical order=asc", "order", "unexpected 'order=asc'; numerical takes filter=REGEX"),
        ("alphabetical filter=a filter=b", "filter=b", "filter is given twice"),
        ("numerical filter=", "", "filter needs a regular expression"),
        (r"numerical filter=^(\d{8}-", r"(\d{8}-", "missing ), unterminated subpattern"),
        (r"numerical filter=a[b", "[b", "unterminated character set"),
        ("numerical filter=*x", "*x", "nothing to repeat"),
    ],
)
def test_a_bad_marker_names_the_column_of_the_offending_part(
    marker: str, at: str, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_marker(marker)
    error = caught.value
    assert fragment in error.reason
    assert marker[error.column - 1 :].startswith(at), (error.column, marker)
    assert error.text == marker
    assert f"(column {error.column})" in str(error)
    assert isinstance(error, PermanentError)
    assert isinstance(error, ValueError)


def test_messages_quote_the_marker_as_written_and_cut_it_short() -> None:
    with pytest.raises(PolicyError, match=r"filter '\^\(\\d\{8\}-' is not"):
        parse_marker(r"numerical filter=^(\d{8}-")
    with pytest.raises(PolicyError) as caught:
        parse_marker("semver=" + "~1" * 300 + " x")
    assert len(caught.value.reason) < 300
    with pytest.raises(PolicyError, match="longer than 1024 characters"):
        parse_marker("semver=~1" + " " * 2000)


# -- properties ---------------------------------------------------------------------

_VERSIONS = st.builds(
    lambda major, minor, patch, pre, v: (
        f"{'v' if v else ''}{major}.{minor}.{patch}" + (f"-rc.{pre}" if pre is not None else "")
    ),
    st.integers(0, 3),
    st.integers(0, 12),
    st.integers(0, 12),
    st.none() | st.integers(0, 3),
    st.booleans(),
)
_RANGES = st.sampled_from(["~1.4", "^1", ">=1.2 <2", "1.x", "~0.3 || ^2", "*", "1.2 - 2.4", "^0"])
_NOISE = st.sampled_from(["latest", "stable", "main", "1.4", "", "1.2.3.4"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_VERSIONS | _NOISE, max_size=30), _RANGES)
def test_semver_newest_is_allowed_and_nothing_allowed_is_newer(
    tags: list[str], semver_range: str
) -> None:
    policy = parse_marker(f"semver={semver_range}")
    best = newest(policy, tags)
    allowed = [tag for tag in tags if newest(policy, [tag]) == tag]
    assert (best is None) == (not allowed)
    if best is not None:
        assert best in allowed
        assert not any(is_newer(policy, tag, best) for tag in allowed)
        assert newest(policy, list(reversed(tags))) == best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{0,3}-?[0-9]{0,4}", fullmatch=True), max_size=30))
def test_numerical_newest_has_the_greatest_number(tags: list[str]) -> None:
    policy = parse_marker(r"numerical filter=^[a-z]*-?(\d+)$")
    keyed = [
        (int(found.group(1)), tag)
        for tag in tags
        if not tag.startswith("-") and (found := re.fullmatch(r"[a-z]*-?(\d+)", tag))
    ]
    assert newest(policy, tags) == (max(keyed)[1] if keyed else None)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60) | st.text(alphabet="semvrnuicalphbtfl=~^<>|- .0123x()[]\\*", max_size=40)
)
def test_any_text_parses_or_raises_a_policy_error(text: str) -> None:
    try:
        policy = parse_marker(text)
    except PolicyError as exc:
        column: int | None = exc.column
    else:
        column = None
        assert policy.text == text.strip()
        newest(policy, ["1.0.0", "v2.1.0", "10", "main-a", "x"])  # never raises either
    assert column is None or 1 <= column <= len(text) + 1

"""What the spec loader reads of drift: `# gitsync:` markers, gitsync.io/refresh, mutable-tag.

The markers are comments, which the YAML event stream does not carry: they are
read from the file's text after each image's end, so every layout the loader
accepts (block, flow, quoted, CRLF, wide characters, List items) is tried here,
with both parsers, and every error must point at the exact file column.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitsync import specs
from gitsync.model import CacheSpec, Diagnostic

DATA = Path(__file__).resolve().parents[1] / "data" / "specs"
HEADER = "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: {name}\n"
REFRESH = "  annotations:\n    gitsync.io/refresh: {refresh}\n"
DIGEST = "sha256:" + "ab" * 32


def _doc(name: str, images: str, *, refresh: str | None = "6h") -> str:
    text = HEADER.format(name=name)
    if refresh is not None:
        text += REFRESH.format(refresh=refresh)
    return text + "spec:\n  images:" + images + "\n"


def _load(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> specs.LoadResult:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return specs.load_repository([path], root=tmp_path)


def _rows(result: specs.LoadResult) -> list[tuple[int, int, str, str]]:
    return [
        (d.location.line, d.location.column, d.severity.value, d.rule) for d in result.diagnostics
    ]


def _at(text: str, diagnostic: Diagnostic) -> str:
    """The file text from a diagnostic's position to the end of its line."""
    line = text.splitlines()[diagnostic.location.line - 1]
    return line[diagnostic.location.column - 1 :]


@pytest.fixture(params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with libyaml's events and with PyYAML's own parser."""
    if request.param == "pure-python":
        monkeypatch.setattr(specs.yaml_events, "_Loader", yaml.SafeLoader)
    return str(request.param)


# -- markers reach the spec ---------------------------------------------------------------


def test_the_valid_corpus_file_pairs_each_image_with_its_marker(parser: str) -> None:
    result = specs.load_repository([DATA / "valid" / "policies.yaml"], root=DATA / "valid")
    assert result.diagnostics == ()
    caches = {c.name: c for c in result.caches}
    assert caches["policies-block"].image_policies == (
        ("ccr.ccs.tencentyun.com/team/api:1.4.2", "semver=~1.4"),
        ("ccr.ccs.tencentyun.com/team/web:20261201-ab12", r"numerical filter=^(\d{8})-"),
        ("ccr.ccs.tencentyun.com/team/docs:main-b", "alphabetical filter=^main-(.*)$"),
        (
            "redis:7.2.4@sha256:8a2fa9e5a6b3c9a3a0c2b8d1b2f7e6d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8",
            "semver=^7",
        ),
    )
    assert caches["policies-flow"].image_policies == (
        ("ccr.ccs.tencentyun.com/team/api:v2.0.0", "semver=>=2.0.0 <3 || ^4"),
        ("busybox:1.36.1", "semver=~1.36"),
    )
    assert (caches["policies-block"].refresh_seconds, caches["policies-flow"].refresh_seconds) == (
        6 * 3600.0,
        5400.0,
    )


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ("\n    - api:1.4.2   # gitsync: semver=~1.4", ("api:1.4.2", "semver=~1.4")),
        ("\n    - 'api:1.4.2'#gitsync:semver=~1.4", ("api:1.4.2", "semver=~1.4")),
        ('\n    - "api:1.4.2"   #  gitsync:   semver=~1.4   ', ("api:1.4.2", "semver=~1.4")),
        (" [api:1.4.2]   # gitsync: semver=^1", ("api:1.4.2", "semver=^1")),
        (" [\n    api:1.4.2,   # gitsync: semver=^1\n  ]", ("api:1.4.2", "semver=^1")),
        ("\n    - api:1.4.2   # see gitsync: docs", None),  # not a marker: a comment naming it
        ("\n    - api:1.4.2\n    # gitsync: semver=^1", None),  # not at the end of the line
    ],
    ids=["block", "quoted-no-space", "double-quoted", "flow", "flow-lines", "prose", "next-line"],
)
def test_marker_layouts(
    tmp_path: Path, parser: str, images: str, expected: tuple[str, str] | None
) -> None:
    result = _load(tmp_path, _doc("c", images))
    caches = result.caches
    if expected is None:
        assert all(c.image_policies == () for c in caches)
    else:
        assert result.diagnostics == ()
        assert caches[0].image_policies == (expected,)


def test_wide_characters_count_as_one_column(tmp_path: Path, parser: str) -> None:
    text = "# 鏡像\n" + _doc("wide", "\n    - 'api:1.4.2'   # gitsync: semver=~1.4 鏡像 x")
    result = _load(tmp_path, text)
    (diagnostic,) = result.diagnostics
    assert _at(text, diagnostic) == "鏡像 x"
    assert "'鏡像' is not part of an npm-style range" in diagnostic.message


def test_a_bad_marker_in_a_list_item_points_at_the_offending_character(
    tmp_path: Path, parser: str
) -> None:
    text = (
        "apiVersion: v1\r\nkind: List\r\nitems:\r\n"
        "- apiVersion: eks.cloud.tencent.com/v1\r\n  kind: ImageCache  # 缓存\r\n"
        "  metadata: {name: wide, annotations: {gitsync.io/refresh: 1h}}\r\n"
        "  spec:\r\n    images:\r\n"
        "      - 'ccr.ccs.tencentyun.com/team/api:1.4.2'  # 版本\r\n"
        "      - ccr.ccs.tencentyun.com/team/x:1.0.0   # gitsync: semver=~1 || ^2 ||\r\n"
    )
    result = _load(tmp_path, text)
    (diagnostic,) = result.diagnostics
    line = text.split("\r\n")[9]
    assert (diagnostic.location.line, diagnostic.location.column, diagnostic.rule) == (
        10,
        line.rindex("||") + 1,
        "image-policy",
    )
    assert diagnostic.field == "items[0].spec.images[1]"
    assert "an empty alternative around '||'" in diagnostic.message


@pytest.mark.parametrize(
    ("marker", "at", "fragment"),
    [
        ("semver=~1.4 |", "|", "'|' is not part of an npm-style range"),
        ("semvar=~1.4", "semvar", "unknown policy 'semvar'"),
        ("semver=", "", "semver needs a range"),
        (r"numerical filter=^(\d{8}-", r"(\d{8}-", "missing ), unterminated subpattern"),
        ("alphabetical sort=asc", "sort=asc", "unexpected 'sort=asc'"),
    ],
)
def test_bad_markers_are_errors_at_file_line_and_column(
    tmp_path: Path, parser: str, marker: str, at: str, fragment: str
) -> None:
    text = _doc("c", f"\n    - nginx:1.27.2\n    - 'api:1.4.2'    #  gitsync:  {marker}")
    result = _load(tmp_path, text)
    (diagnostic,) = result.diagnostics
    assert (diagnostic.location.path, diagnostic.location.line) == ("c.yaml", 10)
    assert (diagnostic.severity.value, diagnostic.rule) == ("error", "image-policy")
    assert _at(text, diagnostic).startswith(at) if at else _at(text, diagnostic) == ""
    assert diagnostic.field == "spec.images[1]"
    assert fragment in diagnostic.message
    assert diagnostic.message.startswith(f"marker '# gitsync: {marker}' on spec.images[1]")
    assert result.caches == ()


def test_a_marker_on_a_line_of_several_images_or_on_a_bare_digest_is_an_error(
    tmp_path: Path, parser: str
) -> None:
    text = (
        _doc("several", " [a:1.0.0, b:2.0.0]  # gitsync: semver=^2")
        + "---\n"
        + _doc("digest", f"\n    - nginx@{DIGEST}  # gitsync: semver=^1")
        + "---\n"
        + _doc("both", f"\n    - nginx:1.27.2@{DIGEST}  # gitsync: semver=~1.27")
    )
    result = _load(tmp_path, text)
    assert [(d.location.line, d.rule) for d in result.diagnostics] == [
        (8, "image-policy"),
        (18, "image-policy"),
    ]
    assert "the line holds more than one image" in result.diagnostics[0].message
    assert "pinned by digest alone" in result.diagnostics[1].message
    assert all(_at(text, d).startswith("semver=") for d in result.diagnostics)
    # A tag and a digest: the policy moves the tag (and the digest with it).
    assert [c.image_policies for c in result.caches] == [
        ((f"nginx:1.27.2@{DIGEST}", "semver=~1.27"),)
    ]


def test_markers_anywhere_else_are_warnings_that_they_are_ignored(
    tmp_path: Path, parser: str
) -> None:
    text = (
        HEADER.format(name="c")
        + "  annotations: {gitsync.io/refresh: 6h}  # gitsync: semver=~1\n"
        + "spec:  # gitsync: semver=~1\n"
        + "  images:\n    - api:1.4.2\n    # gitsync: semver=~1.4\n"
        + "  imagePullSecrets:\n    - ns/key   # gitsync: semver=~1\n"
        + "---\n"
        + "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
        + "data:\n  images: |\n    - a:1  # gitsync: semver=~1\n"
        + "  note: 'x # gitsync: is only text here'\n"
        + "  other: 'x#gitsync: not a comment'\n"
    )
    result = _load(tmp_path, text)
    lines = text.splitlines()
    warnings = [
        (d.location.line, d.location.column) for d in result.diagnostics if d.rule == "image-policy"
    ]
    # In a block scalar or a quoted string the text is no comment either, but it looks like
    # one a line-wise reading cannot tell apart: those are warned about too, harmlessly.
    assert warnings == [(n, lines[n - 1].index("# gitsync:") + 1) for n in (5, 6, 9, 11, 18, 19)]
    assert all(d.severity.value in {"warning", "info"} for d in result.diagnostics)
    assert all("is ignored" in d.message for d in result.diagnostics if d.rule == "image-policy")
    assert result.caches[0].image_policies == ()
    assert result.ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet="semvrnuical=~^<>|-. 0123x()[]\\*#:gitsync'\"\t,]}", max_size=60),
    st.sampled_from(["api:1.4.2", "'api:1.4.2'", "api@" + DIGEST, "Bad:1", "[a:1, b:2]"]),
)
def test_any_marker_text_gives_diagnostics_never_an_exception(marker: str, image: str) -> None:
    text = _doc("c", f"\n    - {image}   # gitsync: {marker}")
    with tempfile.TemporaryDirectory() as scratch:
        result = _load(Path(scratch), text)
    lines = text.splitlines()
    for diagnostic in result.diagnostics:
        assert 1 <= diagnostic.location.line <= len(lines) + 1
        if diagnostic.rule == "image-policy" and diagnostic.location.line <= len(lines):
            assert diagnostic.location.column <= len(lines[diagnostic.location.line - 1]) + 1
        assert len(diagnostic.message) < 1000


def test_files_without_markers_are_never_split_into_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object) -> list[str]:
        raise AssertionError("lines split for a file without a marker")

    monkeypatch.setattr(specs.drift._Source, "lines", refuse)
    result = _load(tmp_path, _doc("c", "\n    - api:1.4.2   # a comment"))
    assert result.ok
    assert result.caches[0].image_policies == ()


def test_a_huge_marker_is_refused_with_a_short_message(tmp_path: Path) -> None:
    text = _doc("c", "\n    - api:1.4.2   # gitsync: semver=" + "~1" * 200_000)
    result = _load(tmp_path, text)
    (diagnostic,) = result.diagnostics
    assert "longer than 1024 characters" in diagnostic.message
    assert len(diagnostic.message) < 400


def test_every_marker_of_a_large_file_is_read(tmp_path: Path) -> None:
    images = "".join(
        f"\n    - registry.example.com/t/a{n}:1.{n}.0   # gitsync: semver=^1" for n in range(100)
    )
    text = "---\n".join(_doc(f"c{n}", images) for n in range(100))
    result = _load(tmp_path, text)
    assert result.ok
    assert len(result.caches) == 100
    assert all(len(c.image_policies) == 100 for c in result.caches)


# -- gitsync.io/refresh ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6h", 21600.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("'3600'", 3600.0),  # a bare number is seconds, as the flags read it
        ("+10s", 10.0),
        ("1s", 1.0),
        ("' 10m '", 600.0),
        ("36500d", 36500 * 86400.0),
    ],
)
def test_the_refresh_annotation_reaches_the_spec(
    tmp_path: Path, value: str, seconds: float
) -> None:
    result = _load(tmp_path, _doc("c", " [api:1.4.2]", refresh=value))
    assert result.diagnostics == ()
    (cache,) = result.caches
    assert cache.refresh_seconds == seconds
    assert dict(cache.annotations)["gitsync.io/refresh"] == str(yaml.safe_load(value))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("6 hours", "is not a duration; use a number and a unit"),
        ("1h-30m", "is not a duration"),
        ("''", "is not a duration"),
        ("-1h", "is negative"),
        ("0s", "is shorter than 1s"),
        ("999ms", "is shorter than 1s"),
        ("36500d1s", "is longer than 36500d"),
        ("'" + "9" * 5000 + "h'", "is longer than 36500d"),
    ],
)
def test_a_bad_refresh_annotation_is_an_annotation_error(
    tmp_path: Path, value: str, fragment: str
) -> None:
    result = _load(tmp_path, _doc("c", " [api:1.4.2]", refresh=value))
    (diagnostic,) = result.diagnostics
    assert (diagnostic.rule, diagnostic.location.line, diagnostic.location.column) == (
        "annotation",
        6,
        25,
    )
    assert diagnostic.field == "metadata.annotations['gitsync.io/refresh']"
    assert fragment in diagnostic.message
    assert "leave it out to refresh on the daemon's --refresh-interval" in diagnostic.message
    assert len(diagnostic.message) < 400
    assert result.caches == ()


def test_a_refresh_annotation_that_is_not_a_string_is_a_schema_error(tmp_path: Path) -> None:
    result = _load(tmp_path, _doc("c", " [api:1.4.2]", refresh="6"))
    assert [d.rule for d in result.diagnostics] == ["schema"]


# -- mutable-tag ------------------------------------------------------------------------


def test_images_by_tag_without_refresh_warn_once_per_cache(tmp_path: Path) -> None:
    images = (
        f"\n    - nginx@{DIGEST}\n    - redis:7.2.4\n    - nginx:latest\n    - alpine:3.19"
        f"\n    - busybox:1.36.1@{DIGEST}"
    )
    result = _load(tmp_path, _doc("c", images, refresh=None))
    assert _rows(result) == [
        (8, 7, "warning", "mutable-tag"),
        (9, 7, "warning", "mutable-tag"),
    ]
    by_tag, latest = result.diagnostics
    assert by_tag.message == (
        "spec.images[1] 'redis:7.2.4' and 1 more image ('alpine:3.19') are held by tag, and a"
        " tag can be re-pushed upstream while the cache keeps what it was built with: annotate"
        " the cache gitsync.io/refresh (e.g. 6h) to resolve its tags to digests on that"
        " interval, rebuild it when one moves, or pin digests (@sha256:…)"
    )
    assert "uses tag 'latest'" in latest.message
    assert result.ok  # warnings do not fail validation


def test_with_refresh_only_latest_warns(tmp_path: Path) -> None:
    result = _load(tmp_path, _doc("c", "\n    - redis:7.2.4\n    - nginx:latest"))
    assert [(d.location.line, d.rule) for d in result.diagnostics] == [(10, "mutable-tag")]
    assert "uses tag 'latest'" in result.diagnostics[0].message


def test_digests_alone_never_warn(tmp_path: Path) -> None:
    result = _load(tmp_path, _doc("c", f" [nginx@{DIGEST}, redis:7.2.4@{DIGEST}]", refresh=None))
    assert result.diagnostics == ()


def test_a_long_list_of_tagged_images_is_named_in_part(tmp_path: Path) -> None:
    images = "".join(f"\n    - registry.example.com/t/a{n}:1.0.{n}" for n in range(12))
    result = _load(tmp_path, _doc("c", images, refresh=None))
    (diagnostic,) = result.diagnostics
    assert "and 11 more images ('registry.example.com/t/a1:1.0.1'," in diagnostic.message
    assert "'registry.example.com/t/a2:1.0.2', …) are held by tag" in diagnostic.message


def test_a_cache_with_image_policies_is_told_they_are_checked_on_the_interval(
    tmp_path: Path,
) -> None:
    result = _load(tmp_path, _doc("c", "\n    - api:1.4.2   # gitsync: semver=~1.4", refresh=None))
    (diagnostic,) = result.diagnostics
    assert "rebuild it when one moves and check its image policies, or pin" in diagnostic.message
    assert result.caches[0].image_policies == (("api:1.4.2", "semver=~1.4"),)


def test_validate_without_semver_markers_does_not_load_the_semver_library(tmp_path: Path) -> None:
    """`semantic_version` loads importlib.metadata: only a repository with a range pays for it."""
    (tmp_path / "c.yaml").write_text(
        _doc("c", "\n    - api:1.4.2   # gitsync: numerical filter=^(\\d+)$"), encoding="utf-8"
    )
    script = (
        "import sys\n"
        "from gitsync.cli import main\n"
        "code = main(['validate', '.'])\n"
        "print('loaded:', 'semantic_version' in sys.modules)\n"
        "raise SystemExit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: False"
    (tmp_path / "c.yaml").write_text(_doc("c", "\n    - api:1.4.2   # gitsync: semver=~1.4"))
    again = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.stdout.splitlines()[-1] == "loaded: True"  # the check can fail


def test_image_policies_do_not_change_what_the_spec_compares(tmp_path: Path) -> None:
    plain = _load(tmp_path, _doc("c", "\n    - api:1.4.2"), "a.yaml").caches[0]
    marked = _load(tmp_path, _doc("c", "\n    - api:1.4.2   # gitsync: semver=~1.4"), "b.yaml")
    assert plain == marked.caches[0]  # markers do not make a cache differ for the planner
    assert isinstance(plain, CacheSpec)

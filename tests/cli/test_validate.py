"""`gitsync validate` as a process, on every corpus case, in all three output formats.

The exact diagnostics of each case are pinned in tests/unit/test_specs.py;
here the question is whether the command renders them faithfully: exit codes
(0 valid, warnings allowed; 1 invalid; 2 usage), `path:line:col: severity:
message [rule]` text lines, the JSON object, and GitHub workflow annotations.
So the expected output is built from the library's own result for the same
tree, plus a few literal lines that pin the shapes independently.

All runs start at once in a thread pool (each is a separate interpreter), so
the matrix of 30-odd cases times three formats costs a few seconds of wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitsync import specs
from gitsync.model import Diagnostic, Severity

DATA = Path(__file__).resolve().parents[1] / "data" / "specs"
CASES: dict[str, Path] = {"valid": DATA / "valid"} | {
    path.name: path for path in sorted((DATA / "invalid").iterdir()) if path.is_dir()
}
FORMATS = ("text", "json", "github")
GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    stdout: str
    stderr: str


def _gitsync(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "gitsync", "validate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment with a private bytecode cache: a hundred runs compile gitsync once."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return environment


@pytest.fixture(scope="module")
def runs(env: dict[str, str]) -> dict[tuple[str, str], Run]:
    """Every (case, format) run of `gitsync validate .` from inside the case's folder."""
    _gitsync(["."], cwd=CASES["valid"], env=env)  # fill the bytecode cache first
    jobs = [(case, fmt) for case in CASES for fmt in FORMATS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(
            lambda job: _gitsync([".", "--format", job[1]], cwd=CASES[job[0]], env=env), jobs
        )
        return dict(zip(jobs, results, strict=True))


def _expected(case: str) -> specs.LoadResult:
    return specs.load_repository([CASES[case]], root=CASES[case])


def _text_line(d: Diagnostic) -> str:
    loc = d.location
    return f"{loc.path}:{loc.line}:{loc.column}: {d.severity.value}: {d.message} [{d.rule}]"


def _github_line(d: Diagnostic) -> str:
    loc = d.location
    message = d.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return (
        f"::{GITHUB_LEVEL[d.severity]} file={loc.path},line={loc.line},col={loc.column},"
        f"title={d.rule}::{message}"
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 21
    assert len(list((DATA / "valid").rglob("*.y*ml"))) >= 12


@pytest.mark.parametrize("case", sorted(CASES))
def test_exit_code(case: str, runs: dict[tuple[str, str], Run]) -> None:
    expected = 0 if _expected(case).ok else 1
    assert expected == (0 if case == "valid" else 1)
    for fmt in FORMATS:
        run = runs[case, fmt]
        assert run.code == expected, (fmt, run.stderr)
        assert "Traceback" not in run.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_text_lines(case: str, runs: dict[tuple[str, str], Run]) -> None:
    result = _expected(case)
    lines = runs[case, "text"].stdout.splitlines()
    wanted = [_text_line(d) for d in result.diagnostics]
    assert lines[: len(wanted)] == wanted
    assert len(lines) == len(wanted) + 1  # and one summary line
    assert lines[-1].startswith("valid:" if result.ok else "invalid:")


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_object(case: str, runs: dict[tuple[str, str], Run]) -> None:
    result = _expected(case)
    assert json.loads(runs[case, "json"].stdout) == {
        "valid": result.ok,
        "files": result.files,
        "documents": result.documents,
        "caches": len(result.caches),
        "diagnostics": [
            {
                "path": d.location.path,
                "line": d.location.line,
                "column": d.location.column,
                "severity": d.severity.value,
                "rule": d.rule,
                "message": d.message,
                "field": d.field,
            }
            for d in result.diagnostics
        ],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_github_annotations(case: str, runs: dict[tuple[str, str], Run]) -> None:
    result = _expected(case)
    lines = runs[case, "github"].stdout.splitlines()
    assert lines == [_github_line(d) for d in result.diagnostics]


# Literal lines, written by hand, so that the shapes do not only agree with themselves.


def test_literal_text_line(runs: dict[tuple[str, str], Run]) -> None:
    assert runs["bad-name", "text"].stdout.splitlines()[0] == (
        "cache.yaml:4:9: error: metadata.name must be a DNS-1123 subdomain (at most 253 "
        "characters of lower-case letters, digits, '-' and '.', starting and ending with a "
        "letter or digit), got 'Web_Base' [schema]"
    )
    assert runs["unknown-fields", "text"].stdout.splitlines()[2] == (
        "cache.yaml:7:3: error: unknown field spec.imagecachesize (did you mean "
        "'imageCacheSize'?); spec takes images, imageCacheSize, retentionDays, "
        "imagePullSecrets, securityGroupIds [unknown-field]"
    )
    # The operator's limit, with file, line and column.
    assert runs["retention-too-long", "text"].stdout.splitlines()[1] == (
        "cache.yaml:7:18: error: spec.retentionDays must be an integer from 0 to 3650, got 3651"
        " [schema]"
    )
    assert runs["bad-eip-annotation", "text"].stdout.splitlines()[2] == (
        "cache.yaml:15:49: error: annotation eks.tke.cloud.tencent.com/eip-attributes has field"
        " 'InternetChargeType', a key of the pod annotation (the EIP API's parameters) that the"
        " image cache API does not take; CreateImageCache's AutoCreateEipAttribute takes"
        " DeletePolicy, InternetServiceProvider, InternetMaxBandwidthOut [annotation]"
    )
    assert runs["bad-security-group", "text"].stdout.splitlines()[1] == (
        "cache.yaml:9:7: error: spec.securityGroupIds[1] 'default' is not a security group id:"
        " write it as the console and the API show it, sg- and lower-case letters or digits"
        " (e.g. sg-1cghhuuu) [security-group]"
    )
    # An image policy marker: the column is the offending character's, inside the comment.
    assert runs["bad-image-policy", "text"].stdout.splitlines()[0] == (
        "cache.yaml:9:68: error: marker '# gitsync: semver=~1.4 |' on spec.images[0]"
        " 'registry.example.com/team/api:1.4.2': '|' is not part of an npm-style range; write"
        " ranges such as ~1.4, ^1, >=1.2 <2, 1.x or ~1.4 || ^2 [image-policy]"
    )
    assert runs["bad-refresh-annotation", "text"].stdout.splitlines()[0] == (
        "cache.yaml:6:25: error: annotation gitsync.io/refresh '6 hours' is not a duration; use"
        " a number and a unit (ns, us, ms, s, m, h, d), e.g. 90s, 1h30m, 500ms, 2d; leave it out"
        " to refresh on the daemon's --refresh-interval [annotation]"
    )


def test_literal_json_of_the_valid_tree(runs: dict[tuple[str, str], Run]) -> None:
    report = json.loads(runs["valid", "json"].stdout)
    assert (report["valid"], report["files"], report["documents"], report["caches"]) == (
        True,
        19,
        25,
        24,
    )
    latest = [d for d in report["diagnostics"] if d["path"] == "warnings.yaml"]
    assert latest[0] == {
        "path": "warnings.yaml",
        "line": 7,
        "column": 7,
        "severity": "warning",
        "rule": "mutable-tag",
        "message": (
            "spec.images[0] 'nginx' has no tag, so it means tag 'latest', which moves: two "
            "caches of it built at different times can hold different content; pin a version "
            "tag (e.g. nginx:1.2.3) or a digest (@sha256:…)"
        ),
        "field": "spec.images[0]",
    }
    assert latest[2]["rule"] == "mutable-tag"
    assert latest[2]["message"].startswith(
        "spec.images[2] 'quay.io/coreos/etcd:v3.5.12' is held by tag, and a tag can be"
    )


def test_literal_github_annotation(runs: dict[tuple[str, str], Run]) -> None:
    lines = runs["duplicate-name-across-files", "github"].stdout.splitlines()
    assert lines[1] == (
        "::error file=team/b.yaml,line=5,col=9,title=duplicate-name::metadata.name 'shared' "
        "is already used at a.yaml:4:9; names must be unique in the repository"
    )
    assert [line.split("::")[1] for line in (lines[0], lines[2])] == [
        "warning file=a.yaml,line=6,col=12,title=mutable-tag",
        "warning file=team/b.yaml,line=7,col=12,title=mutable-tag",
    ]
    notices = [n for n in runs["valid", "github"].stdout.splitlines() if n.startswith("::notice")]
    assert notices[0].startswith("::notice file=mixed-kinds.yaml,line=2,col=7,title=other-kind::")


# What it loads.


def test_validate_loads_none_of_the_other_commands_modules(env: dict[str, str]) -> None:
    """CI runs `validate` on every pull request: its start-up and peak memory (bench/validate.py)
    must not pay for the wiring, the backends, plan's size check or duration parsing."""
    script = (
        "import sys\n"
        "from gitsync.cli import main\n"
        "code = main(['validate', '.'])\n"
        "print('modules:', *sorted(sys.modules))\n"
        "raise SystemExit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=CASES["valid"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.splitlines()[-1].split()[1:])
    assert "gitsync.specs.documents" in modules  # the list is the validating process's
    unwanted = {
        "gitsync.wiring",
        "gitsync.sizing",
        "gitsync.planning",
        "gitsync.reconciler",
        "gitsync.providers",
        "gitsync.sources",
        "logging",  # the wiring's; validate logs nothing
        "fractions",  # durations only; it loads decimal
        "decimal",
        "git",
        "httpx",
        "kubernetes",
        "prometheus_client",
        "tencentcloud",
    }
    assert sorted(modules & unwanted) == []


# Paths and usage.


def test_several_paths_and_the_default_path(env: dict[str, str]) -> None:
    both = _gitsync(["invalid/bad-name", "valid/single.yaml"], cwd=DATA, env=env)
    assert both.code == 1
    assert both.stdout.splitlines()[0].startswith("invalid/bad-name/cache.yaml:4:9: error:")
    assert "1 caches in 2 documents, 2 files" in both.stdout

    default = _gitsync([], cwd=DATA / "valid" / "nested", env=env)
    assert default.code == 0  # warnings do not fail validate
    lines = default.stdout.splitlines()
    assert lines[-1] == "valid: 2 caches in 2 documents, 2 files; 0 errors, 2 warnings"
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        "team-a/caches.yml:10:7",
        "team-b/deep/more/cache.yaml:7:7",
    ]
    assert all(line.endswith("[mutable-tag]") for line in lines[:-1])


@pytest.mark.parametrize(
    "args",
    [["no-such-dir"], [".", "--format", "xml"], ["--no-such-flag"]],
    ids=["missing-path", "bad-format", "bad-flag"],
)
def test_usage_errors_exit_2(args: list[str], env: dict[str, str]) -> None:
    run = _gitsync(args, cwd=DATA / "valid", env=env)
    assert run.code == 2
    assert run.stdout == ""
    assert run.stderr.strip()
    assert "Traceback" not in run.stderr

"""Hostile input: every file gets a diagnostic, never a traceback, a hang or an apply.

Three sources of input:

* the hand-written corpus in `tests/data/hostile/` (its README explains the
  file names: each names the rule it must get, or `valid`), validated by
  `gitsync validate` as a process in each output format, and each file alone
  through `specs.load_repository`;
* inputs that cannot live in git, made here: a 100 MB file (sparse) and one
  really written, files of exactly 1 MiB and one byte more, a FIFO, device
  files, symlinks leaving the tree, symlink loops;
* hypothesis: `imageref.parse` and `specs.load_repository` fuzzed for a fixed
  time budget each (a minute in all), in batches of bounded size, with
  properties checked on every example: nothing but the documented errors, and
  what is accepted really satisfies the contract.

Every process has a timeout (a hang fails the test instead of stalling CI), and
one `gitsync apply` over a hostile tree must create nothing at all.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultproxy import cache_doc, gitsync
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gitsync import imageref, specs
from gitsync.errors import ImageRefError, SpecError
from gitsync.model import Severity

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"
PROCESS_TIMEOUT = 60.0  # seconds; validate does all of this in well under one
HANG_SECONDS = 5.0  # an in-process call slower than this is a hang, whatever the machine
FUZZ_SECONDS = 30.0  # per fuzz target: two targets, a minute in all
FUZZ_BATCH = 300  # examples per hypothesis run; runs repeat with new seeds until time is up
PWNED = Path("/tmp/gitsync-pwned")  # what the !!python/object/apply file would create
_LINE = re.compile(r"^(?P<path>[^\n]+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|info): ")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_REF = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/" + _DNS1123.pattern)

generated_examples: Counter[str] = Counter()


def _expected(name: str) -> str:
    return name.split("--", 1)[0]


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix == ".yaml")


def _check_diagnostics(diagnostics: list[dict[str, Any]]) -> None:
    for d in diagnostics:
        assert d["rule"] in specs.RULES, d
        assert d["severity"] in {s.value for s in Severity}, d
        assert d["line"] >= 1, d
        assert d["column"] >= 1, d
        assert isinstance(d["message"], str), d
        assert d["message"].strip(), d


def _rules_by_path(report: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    by_path: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for d in report["diagnostics"]:
        by_path[d["path"]].append((d["severity"], d["rule"]))
    return by_path


def _assert_expected(name: str, found: list[tuple[str, str]]) -> None:
    expected = _expected(name)
    errors = [rule for severity, rule in found if severity == "error"]
    if expected == "valid":
        assert errors == [], f"{name} must validate, got {found}"
    else:
        assert expected in errors, f"{name} must get a {expected} error, got {found}"


def _validate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = gitsync("validate", *args, cwd=cwd, timeout=PROCESS_TIMEOUT)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr[-2000:]}"
    return done


# ------------------------------------------------------------ hand-written corpus


def test_the_hand_written_corpus_gets_its_diagnostics_from_gitsync_validate() -> None:
    files = _corpus_files()
    assert len(files) >= 100
    done = _validate("--format", "json", ".", cwd=CORPUS)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    _check_diagnostics(report["diagnostics"])
    by_path = _rules_by_path(report)
    for path in files:
        _assert_expected(path.name, by_path.get(path.name, []))
    assert not PWNED.exists(), "a YAML tag ran code"

    # Text: one line per diagnostic, whatever the input held (no line breaks smuggled in).
    text = _validate(".", cwd=CORPUS).stdout.splitlines()
    assert len(text) == len(report["diagnostics"]) + 1  # and the summary line
    for line in text[:-1]:
        assert _LINE.match(line), f"not a path:line:col diagnostic: {line[:200]!r}"
    assert text[-1].startswith("invalid: ")

    # GitHub annotations: every line is one workflow command, none injected by a message.
    github = _validate("--format", "github", ".", cwd=CORPUS).stdout.splitlines()
    assert len(github) == len(report["diagnostics"])
    for line in github:
        assert re.match(r"^::(error|warning|notice) ", line), f"not an annotation: {line[:200]!r}"


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.stem)
def test_each_corpus_file_alone_gets_its_diagnostic(path: Path) -> None:
    started = time.monotonic()
    result = specs.load_repository([path], root=CORPUS)
    assert time.monotonic() - started < HANG_SECONDS
    found = [(d.severity.value, d.rule) for d in result.diagnostics]
    _assert_expected(path.name, found)
    if _expected(path.name) != "valid":
        assert not result.ok
        with pytest.raises(SpecError, match="is invalid"):
            result.desired("rev")  # an invalid revision never becomes a desired state


# ------------------------------------------------------------ made at test time


def _hostile_tree(root: Path, outside: Path) -> dict[str, str]:
    """Files that cannot be committed; returns {display path: expected rule or 'valid'}."""
    root.mkdir()
    outside.mkdir()
    expect: dict[str, str] = {}
    (outside / "stolen.yaml").write_text(cache_doc("stolen", ["nginx:1.27.2"]))
    with open(root / "sparse-100mb.yaml", "wb") as fh:
        fh.truncate(100 * 2**20)  # reads as 100 MB of NUL bytes, costs no disk
    expect["sparse-100mb.yaml"] = "file-too-large"
    with open(root / "written-100mb.yaml", "wb") as fh:
        block = b"# " + b"x" * (2**20 - 3) + b"\n"
        for _ in range(100):
            fh.write(block)
    expect["written-100mb.yaml"] = "file-too-large"
    body = cache_doc("exactly-one-mib", ["nginx:1.27.2"]).encode()
    padding = specs.MAX_FILE_BYTES - len(body)
    exact = body + b"#" + b"p" * (padding - 2) + b"\n"
    assert len(exact) == specs.MAX_FILE_BYTES
    (root / "exactly-1mib.yaml").write_bytes(exact)
    expect["exactly-1mib.yaml"] = "valid"
    (root / "one-byte-over.yaml").write_bytes(exact + b"\n")
    expect["one-byte-over.yaml"] = "file-too-large"
    long_line = cache_doc("x" * 900_000, ["nginx:1.27.2"])
    (root / "900k-character-name.yaml").write_text(long_line)
    expect["900k-character-name.yaml"] = "schema"
    os.mkfifo(root / "fifo.yaml")  # a reader that waits for a writer would hang forever
    expect["fifo.yaml"] = "file-unreadable"
    (root / "escape.yaml").symlink_to(outside / "stolen.yaml")
    expect["escape.yaml"] = "symlink-escape"
    (root / "escape-dir").symlink_to(outside)
    expect["escape-dir"] = "symlink-escape"
    (root / "zero.yaml").symlink_to("/dev/zero")
    expect["zero.yaml"] = "symlink-escape"
    (root / "etc-passwd.yaml").symlink_to("/etc/passwd")
    expect["etc-passwd.yaml"] = "symlink-escape"
    (root / "loop-a.yaml").symlink_to(root / "loop-b.yaml")
    (root / "loop-b.yaml").symlink_to(root / "loop-a.yaml")
    expect["loop-a.yaml"] = expect["loop-b.yaml"] = "file-unreadable"
    (root / "dangling.yaml").symlink_to(root / "nothing-here.yaml")
    expect["dangling.yaml"] = "file-unreadable"
    (root / "looks-like-a-file.yaml").mkdir()  # a directory with a spec suffix
    (root / "looks-like-a-file.yaml" / "inner.yaml").write_text(cache_doc("inner", ["redis:7.2"]))
    expect["looks-like-a-file.yaml/inner.yaml"] = "valid"
    (root / "self.yaml").symlink_to(root / "looks-like-a-file.yaml" / "inner.yaml")
    expect["self.yaml"] = "valid"  # inside the tree: the same file, read once (no duplicate)
    (root / "subdir-loop").symlink_to(root)  # a directory cycle must not walk forever
    (root / "good.yaml").write_text(cache_doc("good", ["nginx:1.27.2"]))
    expect["good.yaml"] = "valid"
    return expect


@pytest.mark.timeout(120)
def test_files_made_at_test_time_get_diagnostics_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    expect = _hostile_tree(root, tmp_path / "outside")
    started = time.monotonic()
    done = _validate("--format", "json", ".", cwd=root)
    seconds = time.monotonic() - started
    report = json.loads(done.stdout)
    _check_diagnostics(report["diagnostics"])
    by_path = _rules_by_path(report)
    for name, rule in expect.items():
        _assert_expected(f"{rule}--{name}", by_path.get(name, []))
    # good, exactly-one-mib, inner (once, though linked twice); not "stolen", outside the tree
    assert report["caches"] == 3
    assert not [d for d in report["diagnostics"] if d["path"].startswith("escape-dir/")]
    print(f"validate over the made-up tree (200 MB of files, a FIFO, loops): {seconds:.2f} s")

    # Named explicitly on the command line, special files are refused, not read.
    for target, rule in (
        (root / "fifo.yaml", "file-unreadable"),
        (Path("/dev/zero"), "file-unreadable"),
        (Path("/dev/urandom"), "file-unreadable"),
        (root / "sparse-100mb.yaml", "file-too-large"),
    ):
        alone = json.loads(_validate("--format", "json", str(target), cwd=root).stdout)
        assert rule in [d["rule"] for d in alone["diagnostics"]], (target, alone)


def test_apply_over_a_hostile_tree_creates_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    shutil.copytree(CORPUS, tree / "corpus")
    made = _hostile_tree(tree / "made", tmp_path / "outside")
    assert made
    # Valid caches too: a partial apply would create these.
    for n in range(3):
        (tree / f"valid-{n}.yaml").write_text(cache_doc(f"would-be-created-{n}", ["nginx:1.27"]))
    data = tmp_path / "data"
    done = gitsync("apply", "--repo", str(tree), "--data-dir", str(data), timeout=PROCESS_TIMEOUT)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr  # the diagnostics are shown
    status = gitsync("status", "--format", "json", "--data-dir", str(data))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["caches"] == []
    assert not (data / "store").exists() or not any((data / "store").rglob("*.json"))
    assert not PWNED.exists()


# ------------------------------------------------------------------ fuzzing


def _run_for(seconds: float, name: str, make: Callable[[int], Callable[[], None]]) -> None:
    """Run hypothesis batches with fresh seeds until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    batch = 0
    while time.monotonic() < deadline:
        make(batch)()
        batch += 1
    kinds = {k: v for k, v in generated_examples.items() if k.startswith(name + " ")}
    print(
        f"{name}: {generated_examples[name]} examples in {batch} batches, {seconds:.0f} s {kinds}"
    )
    assert generated_examples[name] >= 200


_FUZZ = settings(
    max_examples=FUZZ_BATCH,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_HOSTILE_CHARS = ":/@._-+ \t\n\r\x00\x7f\u00e9\u200b\u00a0\uffffAZ#*&!|>%'\"[]{},?`~\\"


@st.composite
def _image_refs(draw: st.DrawFn) -> str:
    """References near and past the grammar's edges: most valid, many broken in one place."""
    component = st.text(_ALNUM, min_size=1, max_size=12)
    sep = st.sampled_from([".", "_", "__", "-", "--", "---"])
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        words = draw(st.lists(component, min_size=1, max_size=3))
        joiners = [draw(sep) for _ in words[1:]]
        parts.append(words[0] + "".join(j + w for j, w in zip(joiners, words[1:], strict=True)))
    path = "/".join(parts)
    if draw(st.booleans()):
        long = draw(st.integers(200, 270))
        path = (path + "/" + "a" * long)[:long]
    registry = draw(
        st.sampled_from(
            ["", "docker.io/", "index.docker.io/", "localhost/", "localhost:5000/",
             "registry.example.com/", "registry.example.com:443/", "127.0.0.1:5000/",
             "[::1]:5000/", "Registry.Example.COM/", "a-b.c/"]
        )
    )  # fmt: skip
    text = registry + path
    if draw(st.booleans()):
        text += ":" + draw(
            st.one_of(
                st.text(_ALNUM + "._-ABC", min_size=1, max_size=20),
                st.integers(120, 135).map(lambda n: "t" * n),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        algorithm, length = draw(
            st.sampled_from([("sha256", 64), ("sha384", 96), ("sha512", 128), ("blake3", 64)])
        )
        length += draw(st.sampled_from([0, 0, 0, -1, 1]))
        text += f"@{algorithm}:" + draw(
            st.text("0123456789abcdef", min_size=length, max_size=length)
        )
    for _ in range(draw(st.integers(0, 2))):  # a few hostile edits somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(list(_HOSTILE_CHARS))) + text[at:]
    return text


def _check_ref(text: str) -> None:
    started = time.monotonic()
    refused: ImageRefError | None = None
    try:
        ref = imageref.parse(text)
    except ImageRefError as exc:  # the one error parse may raise; anything else fails here
        refused = exc
    assert time.monotonic() - started < HANG_SECONDS
    if refused is not None:
        assert refused.reference == text
        assert refused.reason
        assert isinstance(refused, ValueError)  # callers catch ValueError too
        return
    generated_examples["imageref accepted"] += 1
    shown = str(ref)
    assert all(c.isprintable() and not c.isspace() for c in shown), shown
    assert imageref.parse(shown) == ref
    assert imageref.normalize(text) == shown == imageref.normalize(shown)
    assert imageref.parse(ref.familiar()) == ref
    assert len(ref.name) <= imageref.MAX_NAME_LENGTH
    assert ref.tag is None or 1 <= len(ref.tag) <= imageref.MAX_TAG_LENGTH
    assert ref.digest is None or re.fullmatch(
        r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-f0-9]{32,}", ref.digest
    )


@pytest.mark.timeout(FUZZ_SECONDS * 3)
def test_fuzz_imageref_parse_for_a_fixed_time() -> None:
    def make(batch: int) -> Callable[[], None]:
        @seed(batch)
        @_FUZZ
        @given(
            st.one_of(_image_refs(), st.text(max_size=300), st.text(_HOSTILE_CHARS, max_size=80))
        )
        def check(text: str) -> None:
            generated_examples["imageref"] += 1
            _check_ref(text)

        return check

    _run_for(FUZZ_SECONDS, "imageref", make)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-2, 40),
    st.sampled_from([19, 20, 21, 31999, 32000, 32001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
_NAMES = st.one_of(
    st.from_regex(_DNS1123, fullmatch=True).filter(lambda s: len(s) <= 253),
    st.integers(250, 256).map(lambda n: ("a" * 63 + ".") * 4 + "b" * (n - 256)),
    st.text(_ALNUM + "-.A_/ ", min_size=0, max_size=30),
    _SCALARS,
)


_GOOD_IMAGES = [
    "nginx:1.27.2",
    "redis:7.2.4",
    "docker.io/library/busybox:1.36",
    "registry.example.com:5000/team/api:v1.2.3",
    "ghcr.io/org/app@sha256:" + "e" * 64,
    "quay.io/prometheus/node-exporter:v1.7.0",
    "ccr.ccs.tencentyun.com/library/nginx:1.27.2",
]


_GATE = st.integers(0, 9)


def _pick(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """`good` nine times in ten: enough valid documents for the oracle to judge."""
    return draw(good) if draw(_GATE) else draw(bad)


# Built once: hypothesis validates every strategy object it is given, which is slow.
_GOOD_IMAGE_LISTS = st.lists(st.sampled_from(_GOOD_IMAGES), min_size=1, max_size=4, unique=True)
_BAD_IMAGE_LISTS = st.one_of(st.lists(_image_refs(), min_size=0, max_size=4), _SCALARS)
_GOOD_SIZES = st.sampled_from([20, 21, 100, 31999, 32000])
_RETENTION = st.integers(0, 10**6)  # both sides of the CRD range 0-3650; the oracle knows it
_GOOD_SECRET = st.from_regex(_SECRET_REF, fullmatch=True)
_GOOD_NAMES = st.from_regex(_DNS1123, fullmatch=True).filter(lambda n: len(n) <= 253)
_EXTRA_KEY = st.text(_ALNUM + "A", min_size=1, max_size=12)
_BAD_API = st.sampled_from(["v1", "eks.cloud.tencent.com/v2", 1, None])
_BAD_KIND = st.sampled_from(["imagecache", "Deployment", None])


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(_GATE):
        spec["images"] = _pick(draw, _GOOD_IMAGE_LISTS, _BAD_IMAGE_LISTS)
    if draw(st.booleans()):
        spec["imageCacheSize"] = _pick(draw, _GOOD_SIZES, _SCALARS)
    if draw(st.booleans()):
        spec["retentionDays"] = _pick(draw, _RETENTION, _SCALARS)
    if not draw(st.integers(0, 3)):
        count = draw(st.integers(0, 2))
        spec["imagePullSecrets"] = [_pick(draw, _GOOD_SECRET, _SCALARS) for _ in range(count)]
    if not draw(_GATE):
        spec[draw(_EXTRA_KEY)] = draw(_SCALARS)
    return {
        "apiVersion": _pick(draw, st.just("eks.cloud.tencent.com/v1"), _BAD_API),
        "kind": _pick(draw, st.just("ImageCache"), _BAD_KIND),
        "metadata": {"name": _pick(draw, _GOOD_NAMES, _NAMES)},
        "spec": spec,
    }


def _integer(value: Any, low: int, high: float) -> bool:
    """A JSON Schema integer in [low, high]: an int, or a float with no fraction; no bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return False
    return low <= value <= high


def _valid_images(images: Any) -> bool:
    if not (isinstance(images, list) and 1 <= len(images) <= 100):
        return False
    normalised = []
    for image in images:
        if not (isinstance(image, str) and 1 <= len(image) <= 512):
            return False
        try:
            normalised.append(imageref.normalize(image))
        except ImageRefError:
            return False
    return len(set(normalised)) == len(normalised)


def _oracle(document: dict[str, Any]) -> bool:
    """Whether an ImageCache document is valid, decided independently of gitsync.specs."""
    name = document["metadata"]["name"]
    spec = document["spec"]
    secrets = spec.get("imagePullSecrets", [])
    return (
        isinstance(name, str)
        and len(name) <= 253
        and _DNS1123.fullmatch(name) is not None
        and _valid_images(spec.get("images"))
        and ("imageCacheSize" not in spec or _integer(spec["imageCacheSize"], 20, 32000))
        and ("retentionDays" not in spec or _integer(spec["retentionDays"], 0, 3650))
        and isinstance(secrets, list)
        and all(isinstance(s, str) and len(s) <= 317 and _SECRET_REF.fullmatch(s) for s in secrets)
        and set(spec) <= {"images", "imageCacheSize", "retentionDays", "imagePullSecrets"}
    )


def _check_load(folder: Path, data: bytes, document: dict[str, Any] | None) -> None:
    path = folder / "spec.yaml"
    path.write_bytes(data)
    started = time.monotonic()
    result = specs.load_repository([path], root=folder)
    assert time.monotonic() - started < HANG_SECONDS
    for d in result.diagnostics:
        assert d.rule in specs.RULES, d
        assert d.location.path == "spec.yaml", d
        assert min(d.location.line, d.location.column) >= 1, d
        assert d.message.strip(), d
    for cache in result.caches:  # what is accepted honours the contract
        assert len(cache.name) <= 253, cache
        assert _DNS1123.fullmatch(cache.name), cache
        assert 20 <= cache.image_cache_size_gib <= 32000, cache
        assert 0 <= cache.retention_days <= 3650, cache
        assert 1 <= len(cache.images) <= 100, cache
        assert len({imageref.normalize(i) for i in cache.images}) == len(cache.images), cache
    if (
        document is not None
        and document["apiVersion"] == "eks.cloud.tencent.com/v1"
        and (document["kind"] == "ImageCache")
    ):
        valid = _oracle(document)
        generated_examples["specs valid" if valid else "specs invalid"] += 1
        assert result.ok == valid, (document, [str(d.message) for d in result.diagnostics])
        if valid:
            (cache,) = result.caches
            assert cache.name == document["metadata"]["name"]
            assert list(cache.images) == document["spec"]["images"]
            assert cache.image_cache_size_gib == document["spec"].get("imageCacheSize", 20)


_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4)


def _corrupt(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


@pytest.mark.timeout(FUZZ_SECONDS * 3)
def test_fuzz_specs_load_repository_for_a_fixed_time() -> None:
    folder = Path(tempfile.mkdtemp(prefix="gitsync-fuzz-"))
    try:

        def make(batch: int) -> Callable[[], None]:
            @seed(10_000 + batch)
            @_FUZZ
            @given(
                st.one_of(
                    st.tuples(_documents(), st.sampled_from([None, True, False]), st.just([])),
                    st.tuples(_documents(), st.just(None), _EDITS),
                ),
                st.one_of(st.none(), st.none(), st.binary(max_size=600), st.text(_HOSTILE_CHARS)),
            )
            def check(
                generated: tuple[dict[str, Any], bool | None, list[tuple[int, int]]],
                raw: bytes | str | None,
            ) -> None:
                generated_examples["specs"] += 1
                document, flow, edits = generated
                if raw is not None:
                    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
                    _check_load(folder, data, None)
                    return
                text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
                data = _corrupt(text.encode("utf-8", "surrogatepass"), edits)
                _check_load(folder, data, document if not edits else None)

            return check

        _run_for(FUZZ_SECONDS, "specs", make)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

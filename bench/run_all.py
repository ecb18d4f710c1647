"""Run every benchmark under bench/ and write bench/RESULTS.md from what they print.

Why one command: each benchmark prints its own figures in its own words, and
the numbers that matter (each against its target, and against the peer tool
where there is one: check-jsonschema for validation, skopeo for pulls) end up
scattered over several terminals and machines. This script runs each
`bench/*.py` (except itself) as a subprocess, one at a time so they do not
compete for the CPU, keeps its whole output, and pulls the headline figures
out with the patterns below. A benchmark it has no patterns for still gets
every line that states a target (`... (target ...)`), so a new benchmark shows
up without changes here; its full output is in the file either way.

The machine's details (CPU, cores, memory, kernel, Python, load average
before and after) head the file: on a shared or busy machine every figure is
worse, and the load average says how much to trust them.

Usage: python bench/run_all.py [--only validate,pull] [--quick] [--output FILE]
       [--timeout SECONDS] [--rerender]
`--quick` passes each known benchmark smaller arguments (fewer runs and
rounds); the file says so. `--rerender` rebuilds only the table of an existing
RESULTS.md from the full outputs it keeps (after changing the patterns).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
QUICK_ARGS = {
    "validate.py": ["--runs", "2", "--baseline-runs", "1"],
    "pull.py": ["--rounds", "1"],
    "sync.py": ["--pushes", "10"],
    "scrape.py": ["--scrapes", "10"],
    "size_ratio.py": ["--max-debs", "200"],
    "suggest.py": ["--lookups", "100000", "--runs", "1", "--requests", "2000"],
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """One headline figure: where it is in a benchmark's output and what it is held to."""

    figure: str
    regex: str  # named group `value`; optional group `peer`
    unit: str
    target: str = ""
    peer_name: str = ""
    peer_unit: str = ""  # when the peer's figure is not in `unit` (a time beside a ratio)


@dataclass(frozen=True, slots=True)
class Row:
    bench: str
    figure: str
    value: str
    target: str
    peer: str


@dataclass
class Outcome:
    name: str
    args: list[str]
    seconds: float
    returncode: int | None
    output: str
    rows: list[Row] = field(default_factory=list)


_S = r"(?P<value>[\d.]+)"
PATTERNS: dict[str, list[Pattern]] = {
    "validate.py": [
        Pattern(
            "`gitsync validate`, 10,000 documents in 1,000 files (median)",
            r"gitsync validate, A \(1,000 files\)\s+best\s+[\d.]+ s\s+median\s+" + _S + " s",
            "s",
            "≤ 2 s",
        ),
        Pattern(
            "`gitsync validate`, same, peak memory",
            r"gitsync validate, A \(1,000 files\).*max RSS\s+" + _S + " MiB",
            "MiB",
            "≤ 150 MB",
        ),
        Pattern(
            "`gitsync validate`, 10,000 documents in 10,000 files (median)",
            r"gitsync validate, B \(10,000 files\)\s+best\s+[\d.]+ s\s+median\s+" + _S + " s",
            "s",
            "",
            "check-jsonschema",
        ),
        Pattern(
            "`gitsync validate`, 1,000 files, no bytecode cache (once)",
            r"gitsync validate, A, no bytecode cache\s+once\s+" + _S + " s",
            "s",
        ),
        Pattern(
            "check-jsonschema ÷ gitsync on the same 10,000 files",
            r"on the same files \(B\) " + _S + "x",
            "×",
            "> 1 (gitsync faster)",
        ),
    ],
    "pull.py": [
        Pattern(
            "pull of the benchmark's images (median)",
            r"gitsync \(workers=\d+\): median " + _S + " s",
            "s",
            "≤ skopeo",
            "skopeo",
        ),
        Pattern("gitsync ÷ skopeo pull time", r"ratio gitsync/skopeo: " + _S, "×", "≤ 1.0"),
        Pattern(
            "pull throughput (fsync, diff_ids verified)", r"throughput: " + _S + " MB/s", "MB/s"
        ),
        Pattern("bytes saved by layer dedupe", r"saved [\d.]+ MB \(" + _S + "%\\)", "%"),
    ],
    "sync.py": [
        Pattern(
            "webhook → provider call (p95)",
            r"webhook -> provider call .* p95 " + _S + " ms",
            "ms",
            "≤ 1000 ms",
        ),
        Pattern(
            "no-op pass at 10,000 caches (median)",
            r"no-op pass at \d+ caches: median " + _S + " ms",
            "ms",
            "≤ 50 ms",
        ),
        Pattern(
            "one changed file at 10,000 caches (median)",
            r"one file of \d+ changed at \d+ caches: median " + _S + " ms",
            "ms",
            "≤ 500 ms",
        ),
        Pattern("first pass at 10,000 caches", r"first pass " + _S + " ms", "ms"),
        Pattern("peak RSS of the loop", r"peak RSS: " + _S + " MiB", "MiB", "≤ 200 MiB"),
    ],
    "scrape.py": [
        Pattern(
            "`/metrics` scrape at 100 caches (p95)",
            r"^\s*100 caches: scrape median\s+[\d.]+ ms, p95\s+" + _S + " ms",
            "ms",
        ),
        Pattern(
            "`/metrics` scrape at 1,000 caches (p95)",
            r"^\s*1000 caches: scrape median\s+[\d.]+ ms, p95\s+" + _S + " ms",
            "ms",
        ),
        Pattern(
            "`/metrics` scrape at 10,000 caches (p95)",
            r"^\s*10000 caches: scrape median\s+[\d.]+ ms, p95\s+" + _S + " ms",
            "ms",
            "≤ 100 ms",
        ),
        Pattern(
            "`/metrics` body at 10,000 caches",
            r"^\s*10000 caches: .*body\s+" + _S + " KiB",
            "KiB",
        ),
    ],
    "tke.py": [
        Pattern(
            "TKE calls of a no-change pass, 1,000 caches",
            r"no change, cold\s+calls\s+" + _S + ":",
            "calls",
            "= 20 DescribeImageCaches, nothing else",
        ),
        Pattern(
            "TKE calls of a pass with 10 changes, 1,000 caches",
            r"10 changes\s+calls\s+" + _S + ":",
            "calls",
            "≤ 40 describes + 1 per change",
        ),
        Pattern(
            "no-change pass, 1,000 caches, loopback (median wall)",
            r"(?s)loopback.*?no change, cold\s+calls.*?wall median " + _S + " s",
            "s",
        ),
        Pattern(
            "pass with 10 changes, loopback (median wall)",
            r"(?s)loopback.*?10 changes\s+calls.*?wall median " + _S + " s",
            "s",
        ),
        Pattern(
            "no-change pass, +50 ms per API answer (median wall)",
            r"(?s)\+50 ms per answer.*?no change, cold\s+calls.*?wall median " + _S + " s",
            "s",
        ),
        Pattern(
            "TKE call budget",
            r"^target: a no-change pass .*: (?P<value>met|MISSED)$",
            "",
            "calls as above",
        ),
    ],
    "use.py": [
        Pattern(
            "gitsync cold pull ÷ export (copy) of the ~150 MB cache",
            r"export \(copy\) vs gitsync cold pull\s+" + _S + "x",
            "×",
            "≥ 3 (cached 3× faster)",
        ),
        Pattern(
            "gitsync cold pull ÷ export --link",
            r"export --link vs gitsync cold pull\s+" + _S + "x",
            "×",
            "≥ 3 (cached 3× faster)",
        ),
        Pattern(
            "gitsync cold pull ÷ skopeo pull through the mirror",
            r"mirror vs gitsync cold pull\s+" + _S + "x",
            "×",
            "≥ 3 (on loopback: see the output)",
        ),
        Pattern(
            "skopeo cold pull ÷ skopeo pull through the mirror",
            r"mirror vs skopeo cold \(same client\)\s+" + _S + "x",
            "×",
            "≥ 3 (on loopback: see the output)",
            "skopeo cold",
            "s",
        ),
    ],
    "k8s.py": [
        Pattern(
            "Kubernetes API requests per no-change pass, 1,000 caches",
            r"over [\d,]+ unchanged caches: " + _S + " API requests",
            "requests",
            "≤ 1 list per resource type",
        ),
        Pattern(
            "pod-observer memory after 10,000 pod events",
            r"after\s+10,\d{3} pod events .*?memory held by gitsync/observers " + _S + " KiB",
            "KiB",
            "flat",
        ),
        Pattern(
            "pod-observer memory after 100,000 pod events",
            r"after\s*100,\d{3} pod events .*?memory held by gitsync/observers " + _S + " KiB",
            "KiB",
            "flat",
        ),
    ],
    "suggest.py": [
        Pattern(
            "observations evidence() over 1,000,000 lookups (median)",
            r"evidence\(\) over [\d,]+ lookups: median " + _S + " s",
            "s",
            "well under 1 s (all of `gitsync suggest` ≤ 2 s)",
        ),
        Pattern(
            "observations evidence(), peak RSS",
            r"evidence\(\) peak RSS: " + _S + " MiB",
            "MiB",
            "≤ 200 MB (all of `gitsync suggest`)",
        ),
        Pattern(
            "`gitsync suggest` over 1,000,000 lookups, 1,000 caches (median)",
            r"gitsync suggest over [\d,]+ lookups: median " + _S + " s",
            "s",
            "≤ 2 s",
        ),
        Pattern(
            "`gitsync suggest`, peak RSS",
            r"gitsync suggest over [\d,]+ lookups: .*?peak RSS " + _S + " MiB",
            "MiB",
            "≤ 200 MB",
        ),
        Pattern(
            "recording a lookup, added to a mirror request (median)",
            r"recording a lookup adds " + _S + " µs",
            "µs",
            "≤ 50 µs",
        ),
    ],
}
# Peers' figures, printed by the same benchmark.
PEERS: dict[str, dict[str, str]] = {
    "validate.py": {
        "check-jsonschema": r"check-jsonschema, B \(10,000 files\)\s+best\s+[\d.]+ s\s+median\s+"
        + _S
        + " s"
    },
    "pull.py": {"skopeo": r"skopeo copy, per image:\s+median " + _S + " s"},
    "use.py": {"skopeo cold": r"^\s*cold: skopeo copy from the registry\s+" + _S + " s"},
}
_TARGET_LINE = re.compile(r"^(?P<figure>.+?)\s*\(target (?P<target>[^)]*)\)")
_TARGET_COLON = re.compile(r"^target: (?P<target>.+?): (?P<verdict>met|MISSED) \((?P<value>.+)\)")


def benchmarks(only: set[str] | None) -> list[Path]:
    found = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name)
    found = [p for p in found if not p.name.startswith("_")]
    if only:
        found = [p for p in found if p.stem in only or p.name in only]
    return found


def run(path: Path, args: list[str], timeout: float) -> Outcome:
    print(f"== {path.name} {' '.join(args)}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(path), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + (f"\n[stderr]\n{done.stderr}" if done.stderr.strip() else "")
        code: int | None = done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output, code = partial + f"\n[killed after {timeout:.0f} s]", None
    seconds = time.monotonic() - started
    print(output.rstrip(), flush=True)
    outcome = Outcome(path.name, args, seconds, code, output)
    outcome.rows = extract(path.name, output)
    return outcome


def _search(regex: str, output: str) -> str | None:
    found = re.search(regex, output, re.MULTILINE)
    return found.group("value") if found else None


def extract(name: str, output: str) -> list[Row]:
    rows: list[Row] = []
    known = PATTERNS.get(name)
    if known:
        peers = {peer: _search(regex, output) for peer, regex in PEERS.get(name, {}).items()}
        for pattern in known:
            value = _search(pattern.regex, output)
            if value is None:
                continue
            peer = ""
            if pattern.peer_name and peers.get(pattern.peer_name):
                unit = pattern.peer_unit or pattern.unit
                peer = f"{pattern.peer_name}: {peers[pattern.peer_name]} {unit}"
            rows.append(
                Row(
                    name,
                    pattern.figure,
                    f"{value} {pattern.unit}".strip(),
                    pattern.target or "—",
                    peer,
                )
            )
        return rows
    # An unknown benchmark: every line that states its target.
    for raw in output.splitlines():
        line = raw.strip()
        if match := _TARGET_LINE.match(line):
            rows.append(Row(name, match["figure"], "(see the line)", match["target"], ""))
        elif match := _TARGET_COLON.match(line):
            rows.append(Row(name, match["target"], match["value"], match["verdict"], ""))
    return rows


def _first_line(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> list[tuple[str, str]]:
    mem_kib = _first_line("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return [
        ("CPU", _first_line("/proc/cpuinfo", "model name")),
        ("cores (usable)", str(len(os.sched_getaffinity(0)))),
        ("memory", memory),
        ("system", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("commit", (commit or "unknown") + " (plus uncommitted changes, if any)"),
    ]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def figures_table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| benchmark | figure | value | target | peer |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        if not outcome.rows:
            status = (
                "did not finish" if outcome.returncode is None else f"exit {outcome.returncode}"
            )
            lines.append(f"| {outcome.name} | (no figures found: {status}) | | | |")
        for row in outcome.rows:
            lines.append(
                f"| {row.bench} | {_cell(row.figure)} | {_cell(row.value)} "
                f"| {_cell(row.target)} | {_cell(row.peer) or '—'} |"
            )
    return lines


_SECTION = re.compile(
    r"^### (?P<name>\S+)\n\n`(?P<command>[^`]*)`: (?P<status>[^,\n]*), (?P<seconds>[\d.]+) s\.\n\n"
    r"```text\n(?P<output>.*?)\n```$",
    re.MULTILINE | re.DOTALL,
)


def rerender(path: Path) -> int:
    """Rebuild the figures table of an existing RESULTS.md from the outputs it keeps.

    For when the patterns above change: the benchmarks need not run again, and the
    machine's details and load stay those of the run that made the figures.
    """
    text = path.read_text(encoding="utf-8")
    outcomes = []
    for found in _SECTION.finditer(text):
        code = int(found["status"].split()[1]) if found["status"].startswith("exit ") else None
        outcome = Outcome(found["name"], [], float(found["seconds"]), code, found["output"])
        outcome.rows = extract(outcome.name, outcome.output)
        outcomes.append(outcome)
    head, _, rest = text.partition("## Figures\n")
    _, _, tail = rest.partition("## Full output\n")
    if not outcomes or not tail:
        raise SystemExit(f"{path} does not look like a RESULTS.md written by this script")
    table = "\n".join(figures_table(outcomes))
    path.write_text(f"{head}## Figures\n\n{table}\n\n## Full output\n{tail}", encoding="utf-8")
    print(f"rewrote the figures of {path} ({sum(len(o.rows) for o in outcomes)} figures)")
    return 0


def render(outcomes: list[Outcome], *, quick: bool, load_before: str, load_after: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py{' --quick' if quick else ''}` on {when}. "
        "Each benchmark ran as its own process, one after the other; the full output of "
        "each is below the table. Targets come from the benchmarks' own docstrings and "
        "the issues that set them; peers ran in the same benchmark, on the same input.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {_cell(value)} |" for key, value in machine()),
        f"| load average (1, 5, 15 min) | before {load_before}; after {load_after} |",
        "",
        "## Figures",
        "",
        *figures_table(outcomes),
        "",
        "## Full output",
        "",
    ]
    for outcome in outcomes:
        status = "killed (timeout)" if outcome.returncode is None else f"exit {outcome.returncode}"
        command = " ".join(["python", f"bench/{outcome.name}", *outcome.args])
        lines += [
            f"### {outcome.name}",
            "",
            f"`{command}`: {status}, {outcome.seconds:.0f} s.",
            "",
            "```text",
            outcome.output.rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names, e.g. validate,pull")
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per benchmark, seconds")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="only rebuild the figures table of --output from the outputs it holds",
    )
    args = parser.parse_args()
    if args.rerender:
        return rerender(args.output)
    only = {part.strip() for part in args.only.split(",")} if args.only else None
    load_before = _load()
    outcomes = []
    for path in benchmarks(only):
        extra = QUICK_ARGS.get(path.name, []) if args.quick else []
        outcomes.append(run(path, extra, args.timeout))
    text = render(outcomes, quick=args.quick, load_before=load_before, load_after=_load())
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.output} ({sum(len(o.rows) for o in outcomes)} figures)")
    return 0 if all(o.returncode == 0 for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

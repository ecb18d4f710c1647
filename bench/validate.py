"""Time `gitsync validate` on 10,000 ImageCache documents against check-jsonschema.

Usage: python bench/validate.py [--runs 5] [--keep DIR]

Generates a realistic repository (1-6 images per cache from a pool with tags,
digests and registry ports; sizes; retention; pull secrets; labels) twice:

* layout A, 1,000 files of 10 documents each: how cache repositories look,
  and the target (whole process under 2 s and 150 MB);
* layout B, the same 10,000 documents one per file, because check-jsonschema
  reads only single-document YAML; both tools are timed on it, so the ratio
  compares like with like.

Each command runs as its own process, timed from spawn to exit; its peak
memory is the kernel's ru_maxrss from wait4() on that one child (workers it
forks and waits for are included as a maximum, not a sum), plus the largest
sum of RSS over its process tree sampled every 20 ms. Python's bytecode cache
is enabled in a private folder and warmed once, as an installed package has
it; one cold run (no bytecode cache) is reported too. Figures are printed;
only sanity (every exit code 0) is asserted. A busy machine makes every figure
worse: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import console_script

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "gitsync" / "schemas" / "imagecache.schema.json"
FILES = 1_000
PER_FILE = 10

IMAGES = [
    "nginx:1.27.2",
    "nginx:1.25.3-alpine",
    "redis:7.2.4",
    "memcached:1.6.23",
    "postgres:16.2",
    "python:3.11.7-slim",
    "node:20.11.1-alpine",
    "busybox@sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "ghcr.io/org/app:2.{n}.0",
    "registry.example.com:5000/team-{t}/api:v1.{n}.2",
    "registry.example.com/team-{t}/worker@sha256:{digest}",
    "ccr.ccs.tencentyun.com/library/nginx:1.27.2",
    "localhost:5000/tools/curl:8.5.0",
]


def _document(rnd: random.Random, index: int, team: int) -> str:
    count = rnd.randint(1, 6)
    images: list[str] = []
    while len(images) < count:
        image = rnd.choice(IMAGES).format(
            n=rnd.randrange(40), t=team, digest=f"{rnd.getrandbits(256):064x}"
        )
        if image not in images:
            images.append(image)
    lines = [
        "apiVersion: eks.cloud.tencent.com/v1",
        "kind: ImageCache",
        "metadata:",
        f"  name: team-{team:02d}-cache-{index:05d}",
        "  labels:",
        f"    team: team-{team:02d}",
        "    app.kubernetes.io/part-of: platform",  # not managed-by: gitsync reserves that
    ]
    if index % 9 == 0:
        lines += ["  annotations:", "    gitsync.io/prune: disabled"]
    lines += ["spec:", "  # images are pinned; see the runbook", "  images:"]
    lines += [f"    - {image}" for image in images]
    lines.append(f"  imageCacheSize: {rnd.choice([20, 30, 50, 100, 200])}")
    lines.append(f"  retentionDays: {rnd.choice([0, 7, 14, 30])}")
    if rnd.random() < 0.6:
        lines += ["  imagePullSecrets:", f"    - team-{team:02d}/registry-credentials"]
    return "\n".join(lines) + "\n"


def generate(root: Path) -> tuple[Path, Path, list[str]]:
    """Layout A (multi-document files) and B (one document per file) of the same documents."""
    rnd = random.Random(20261122)  # noqa: S311  # reproducible test data, not secrets
    multi, single = root / "multi", root / "single"
    single_files: list[str] = []
    index = 0
    for number in range(FILES):
        team = number % 25
        docs = []
        for _ in range(PER_FILE):
            index += 1
            text = _document(rnd, index, team)
            docs.append(text)
            name = f"team-{team:02d}/cache-{index:05d}.yaml"
            target = single / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            single_files.append(name)
        target = multi / f"team-{team:02d}" / f"caches-{number:04d}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("---\n".join(docs), encoding="utf-8")
    return multi, single, single_files


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    maxrss_mib: (
        float  # ru_maxrss of the child (largest process among it and its waited-for children)
    )
    tree_mib: float  # largest sampled sum of RSS over the child's process tree
    code: int


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _tree_rss_kib(root_pid: int) -> int:
    """Sum of RSS over `root_pid` and its descendants, from /proc.

    Only pids from `root_pid` up are read (children are newer), so sampling
    stays cheap and does not steal the CPU it is measuring.
    """
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) < root_pid:
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/statm", encoding="utf-8") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry)] = int(fields[1])  # after "pid (comm)": state, ppid, …
        rss[int(entry)] = pages * _PAGE_KIB
    members = {root_pid}
    for pid in sorted(parents):
        if parents[pid] in members:
            members.add(pid)
    return sum(rss.get(pid, 0) for pid in members)


def run(command: list[str], *, cwd: Path, env: dict[str, str]) -> Sample:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        sys.exit(f"{' '.join(command[:4])} … exited {process.returncode}:\n{error[:2000]}")
    if process.stderr:
        process.stderr.close()
    return Sample(elapsed, usage.ru_maxrss / 1024, peak / 1024, process.returncode)


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}; {cores} cores usable; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {platform.system()} {platform.release()}; "
        f"load average {load}"
    )


def _report(label: str, samples: list[Sample]) -> float:
    times = [s.seconds for s in samples]
    best, median = min(times), statistics.median(times)
    maxrss = max(s.maxrss_mib for s in samples)
    tree = max(s.tree_mib for s in samples)
    print(
        f"{label:<44} best {best:6.3f} s   median {median:6.3f} s   "
        f"max RSS {maxrss:6.1f} MiB   tree RSS {tree:6.1f} MiB   (n={len(samples)})"
    )
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of gitsync per layout")
    parser.add_argument(
        "--baseline-runs", type=int, default=3, help="runs of check-jsonschema (0: skip it)"
    )
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()

    checker = console_script("check-jsonschema")
    if checker is None:
        sys.exit(
            f"check-jsonschema is neither beside {sys.executable} nor on PATH "
            "(pip install check-jsonschema)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="gitsync-bench-"))
    root = args.keep or scratch
    try:
        multi, single, single_files = generate(root)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        cold_env = dict(env, PYTHONDONTWRITEBYTECODE="1")
        gitsync = [sys.executable, "-m", "gitsync", "validate", "."]
        run(gitsync, cwd=multi, env=env)  # warm the bytecode cache and the page cache
        run([checker, "--version"], cwd=single, env=env)

        print(f"machine: {_machine()}")
        print(
            f"corpus: {FILES * PER_FILE} ImageCache documents; layout A {FILES} files of "
            f"{PER_FILE}, layout B {len(single_files)} files of 1\n"
        )
        cold = run(gitsync, cwd=multi, env=cold_env)
        print(f"{'gitsync validate, A, no bytecode cache':<44} once {cold.seconds:6.3f} s")
        multi_median = _report(
            "gitsync validate, A (1,000 files)",
            [run(gitsync, cwd=multi, env=env) for _ in range(args.runs)],
        )
        single_median = _report(
            "gitsync validate, B (10,000 files)",
            [run(gitsync, cwd=single, env=env) for _ in range(args.runs)],
        )
        if args.baseline_runs > 0:
            baseline = [checker, "--schemafile", str(SCHEMA), *single_files]
            baseline_median = _report(
                "check-jsonschema, B (10,000 files)",
                [run(baseline, cwd=single, env=env) for _ in range(args.baseline_runs)],
            )
            same, multi_ratio = baseline_median / single_median, baseline_median / multi_median
            print(
                f"\nratio check-jsonschema / gitsync (medians): on the same files (B) {same:.1f}x; "
                f"against gitsync on A {multi_ratio:.1f}x"
            )
        print(f"machine after: {_machine()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: reading a month of observations, and what recording costs a mirror request.

Why: `gitsync suggest` (issue 15) reads every lookup of its window from
`<data-dir>/observations.db`; at the issue's scale, 1,000,000 lookups of
5,000 images and 1,000 caches, the whole command must take at most 2 s and
200 MB, so reading the evidence must take well under a second. And the mirror
records each pull on the request path, which must add at most 50 µs to a
request (median).

How:

* evidence: builds an observations.db of `--lookups` (default 1,000,000)
  lookups through `ObservationStore.add`, the daemon's write path: pods start
  workloads of 1-4 images (a fixed set each, so the same sets start again and
  again), workloads and images drawn with Zipf-like popularity, each workload
  on one of the caches (or none), 70 % hits, 10 % partials, 20 % misses,
  over 7 days, in time order. Then it times `ObservationStore.evidence()`
  over the whole window in a fresh Python that imports only the store,
  `--runs` times (default 3), and reports the median wall time (and the CPU
  time: on a busy machine the wall time is the larger) and the subprocess's
  peak RSS (its VmHWM, the interpreter included).
* the whole command: a repository of the 1,000 caches (each holding up to 20
  of the images its workloads start; 20 caches to a folder) beside that
  observations.db, and `gitsync suggest --format json --no-size-check` run
  `--runs` times in a fresh Python each (the CLI's own `main`, so the
  figure includes loading the repository, reading the evidence, the engine
  and the JSON): the median wall time and the peak RSS against the issue's
  2 s and 200 MB. `--no-size-check` because sizes come from registries, which
  a benchmark cannot reach: their time is the registries'.
* recording: one Ready cache in a `LocalProvider`, two `Mirror`s over it,
  one without observations and one whose `on_observation` is a running
  `BatchRecorder.record` (its writer thread writing to SQLite meanwhile, as in
  the daemon). `Mirror.handle` of a manifest GET that hits, alternately on
  each, `--requests` times (default 20,000); the difference of the medians.

    python bench/suggest.py [--lookups 1000000] [--runs 3] [--requests 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from _common import cpu_model
from oci_images import OCI_CONFIG, OCI_MANIFEST, make_layer

from gitsync.model import CacheSpec, CacheStatus
from gitsync.observations.model import Lookup, LookupResult, LookupSource
from gitsync.observations.recorder import BatchRecorder
from gitsync.observations.store import ObservationStore
from gitsync.providers.local.mirror import Mirror
from gitsync.providers.local.provider import LocalProvider

IMAGES = 5_000
CACHES = 1_000
WORKLOADS = 20_000
DAYS = 7
NOW = float(int(time.time()))  # `gitsync suggest` reads the window that ends now
BATCH = 50_000
EVIDENCE_TARGET_S = 1.0  # "well under" it: the whole command has 2 s
MEMORY_TARGET_MB = 200
RECORDING_TARGET_US = 50.0
COMMAND_TARGET_S = 2.0


def zipf_weights(count: int, exponent: float = 1.0) -> list[float]:
    """Cumulative Zipf weights of `count` ranks, for `random.choices(cum_weights=…)`."""
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, count + 1)))


def build(path: Path, *, lookups: int, seed: int = 15) -> tuple[int, float, dict[str, list[str]]]:
    """Write `lookups` realistic lookups to a new store at `path`.

    Returns (rows, seconds, the images each cache's workloads start).
    """
    rng = random.Random(seed)  # noqa: S311  # made-up workloads, not cryptography
    images = [f"registry.example.com/team{n % 97}/service{n}:1.{n % 13}" for n in range(IMAGES)]
    caches = [f"cache-{n:04d}" for n in range(CACHES)]
    image_weights = zipf_weights(IMAGES)
    workloads = []
    for _ in range(WORKLOADS):
        size = rng.choices((1, 2, 3, 4), weights=(4, 3, 2, 1))[0]
        members = tuple(dict.fromkeys(rng.choices(images, cum_weights=image_weights, k=size)))
        cache = rng.choice(caches) if rng.random() < 0.8 else None
        workloads.append((members, cache, rng.lognormvariate(2.5, 0.8)))
    workload_weights = zipf_weights(WORKLOADS, 0.8)
    results = (LookupResult.HIT, LookupResult.PARTIAL, LookupResult.MISS)
    written, pod = 0, 0
    started = time.perf_counter()
    with ObservationStore(path) as store:
        batch: list[Lookup] = []
        while written + len(batch) < lookups:
            members, cache, base_seconds = rng.choices(workloads, cum_weights=workload_weights)[0]
            pod += 1
            # Pods start as time goes on, as the daemon records them: over the last DAYS.
            at = NOW - DAYS * 86_400 * (1 - (written + len(batch)) / lookups) - rng.random()
            result = rng.choices(results, weights=(7, 1, 2))[0] if cache else LookupResult.MISS
            seconds = base_seconds * (0.2 if result is LookupResult.HIT else 1.0)
            for image in members:
                batch.append(
                    Lookup(
                        image=image,
                        result=result,
                        at=at,
                        source=LookupSource.POD,
                        cache=cache if result is not LookupResult.MISS else None,
                        seconds=seconds,
                        group=f"pod-{pod}",
                        image_bytes=None,
                    )
                )
            if len(batch) >= BATCH:
                written += store.add(batch)
                batch = []
        written += store.add(batch[: lookups - written])
    held: dict[str, list[str]] = {name: [] for name in caches}
    for members, cache, _ in workloads:
        if cache is not None:
            held[cache].extend(m for m in members if m not in held[cache])
    return written, time.perf_counter() - started, held


CACHE_YAML = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: {name}
spec:
  images:
{images}
"""


def write_repository(root: Path, held: dict[str, list[str]]) -> Path:
    """One file per cache, 20 to a folder, each holding up to 20 of its workloads' images."""
    repo = root / "repo"
    for n, (name, images) in enumerate(sorted(held.items())):
        folder = repo / f"team-{n // 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        listed = "\n".join(f"    - {image}" for image in (images[:20] or ["busybox:1.36"]))
        (folder / f"{name}.yaml").write_text(CACHE_YAML.format(name=name, images=listed))
    return repo


# `gitsync suggest` in a fresh Python, through the CLI's main; its VmHWM at the end.
_COMMAND_CHILD = """
import contextlib, io, json, sys, time
from pathlib import Path
from gitsync.cli import main
out = io.StringIO()
started = time.perf_counter()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:], env={"HOME": "/nonexistent"})
seconds = time.perf_counter() - started
peak = next(
    int(line.split()[1])
    for line in Path("/proc/self/status").read_text().splitlines()
    if line.startswith("VmHWM:")
)
answer = json.loads(out.getvalue()) if code == 0 else {}
print(json.dumps({"code": code, "seconds": seconds, "peak_kib": peak,
                  "suggestions": len(answer.get("suggestions", []))}))
"""


def measure_command(root: Path, repo: Path, *, runs: int) -> tuple[list[float], float, int]:
    """Wall seconds of each `gitsync suggest`, the runs' peak RSS in MiB, suggestions made."""
    times: list[float] = []
    peak_kib, made = 0, 0
    for _ in range(runs):
        done = subprocess.run(
            [
                sys.executable, "-c", _COMMAND_CHILD, "suggest", "--repo", str(repo),
                "--data-dir", str(root), "--format", "json", "--no-size-check",
            ],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        answer = json.loads(done.stdout.splitlines()[-1])
        if answer["code"] != 0:
            raise SystemExit(f"gitsync suggest failed: {done.stderr}")
        times.append(float(answer["seconds"]))
        peak_kib = max(peak_kib, int(answer["peak_kib"]))
        made = int(answer["suggestions"])
    return times, peak_kib / 1024, made


# The measuring subprocess: a Python that imports the store alone, so its peak RSS is
# the read's (and the interpreter's), not this benchmark's other imports.
_EVIDENCE_CHILD = """
import json, sys, time
from pathlib import Path
from gitsync.observations.store import ObservationStore
path, since, until = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
started = time.perf_counter()
cpu = time.process_time()
with ObservationStore.open_readonly(path) as store:
    evidence = store.evidence(since=since, until=until)
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "cpu": time.process_time() - cpu,
    "lookups": evidence.lookups,
    "images": len(evidence.images),
    "caches": len(evidence.caches),
    "groups": len(evidence.groups),
    # VmHWM: this image's peak RSS (ru_maxrss would keep the forking parent's size).
    "peak_kib": next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    ),
}))
"""


def measure_evidence(
    path: Path, *, runs: int
) -> tuple[list[float], list[float], float, dict[str, int]]:
    """Wall and CPU seconds of each run, the runs' peak RSS in MiB, what the last one read."""
    times: list[float] = []
    cpu: list[float] = []
    read: dict[str, int] = {}
    peak_kib = 0
    window = (str(NOW - DAYS * 86_400 - 1), str(NOW))
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _EVIDENCE_CHILD, str(path), *window],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        answer = json.loads(done.stdout)
        times.append(float(answer.pop("seconds")))
        cpu.append(float(answer.pop("cpu")))
        peak_kib = max(peak_kib, int(answer.pop("peak_kib")))
        read = answer
    return times, cpu, peak_kib / 1024, read


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def one_cache(provider: LocalProvider) -> str:
    """A Ready cache of one image, written straight into the store; its mirror path."""
    layer = make_layer({"app.txt": b"bench\n"})
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
    ).encode()
    for blob in (layer.blob, config, manifest):
        provider.blobs.put_bytes(blob)
    reference = "docker.io/library/nginx:1.27.2"
    cache_id = provider.state.insert_cache(
        CacheSpec(name="web", images=(reference,)), owner="gitsync", status=CacheStatus.PENDING
    )
    provider.state.commit_snapshot(
        cache_id,
        content_bytes=layer.expanded_size,
        images=[
            {
                "image": reference,
                "reference": reference,
                "manifestDigest": sha256(manifest),
                "mediaType": OCI_MANIFEST,
                "indexDigest": None,
                "indexMediaType": None,
                "platform": "linux/amd64",
                "configDigest": sha256(config),
                "layers": [layer.digest],
                "diffIds": [layer.diff_id],
            }
        ],
        blob_digests=[sha256(manifest), sha256(config), layer.digest],
        retention_days=0,
    )
    return "/v2/library/nginx/manifests/1.27.2?ns=docker.io"


def measure_recording(root: Path, *, requests: int) -> tuple[float, float, BatchRecorder]:
    """Median µs of a hit without and with recording, and the recorder (for its counts)."""
    provider = LocalProvider(data_dir=root / "data")
    recorder = BatchRecorder(lambda: ObservationStore(root / "data" / "observations.db"))
    try:
        path = one_cache(provider)
        plain = Mirror(provider)
        recording = Mirror(provider, on_observation=recorder.record)
        recorder.start()
        for mirror in (plain, recording):  # warm up: views built, caches filled
            for _ in range(200):
                assert mirror.handle("GET", path, {}, client="10.0.0.1").status == 200
        without: list[float] = []
        with_recording: list[float] = []
        clock = time.perf_counter_ns
        for _ in range(requests):
            for mirror, sink in ((plain, without), (recording, with_recording)):
                started = clock()
                mirror.handle("GET", path, {}, client="10.0.0.1")
                sink.append((clock() - started) / 1000)
        assert recorder.flush(60), "the recorder did not write its lookups"
    finally:
        recorder.stop()
        provider.close()
    return statistics.median(without), statistics.median(with_recording), recorder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-suggest-") as tmp:
        root = Path(tmp)
        path = root / "observations.db"
        print(f"writing {args.lookups:,} lookups ...", flush=True)
        rows, seconds, held = build(path, lookups=args.lookups)
        size = path.stat().st_size + sum(
            p.stat().st_size for p in root.glob("observations.db-*") if p.is_file()
        )
        print(
            f"wrote {rows:,} lookups in {seconds:.1f} s ({rows / seconds:,.0f} a second);"
            f" the file: {size / 2**20:.1f} MiB ({size / rows:.0f} bytes a lookup)"
        )
        times, cpu, peak_mib, read = measure_evidence(path, runs=args.runs)
        print(
            f"read: {read['lookups']:,} lookups of {read['images']:,} images,"
            f" {read['caches']:,} caches, {read['groups']:,} distinct start groups"
        )
        print(
            f"evidence() runs: {', '.join(f'{t:.3f}' for t in times)} s"
            f" (CPU {', '.join(f'{t:.3f}' for t in cpu)} s: more wall than CPU is a busy machine)"
        )
        median = statistics.median(times)
        print(
            f"evidence() over {rows:,} lookups: median {median:.3f} s"
            f" (target well under {EVIDENCE_TARGET_S:.0f} s: the whole suggest has 2 s)"
        )
        print(
            f"evidence() peak RSS: {peak_mib:.1f} MiB, of a Python that imports only the store"
            f" (target <= {MEMORY_TARGET_MB} MB for the whole suggest)"
        )
        repo = write_repository(root, held)
        command_times, command_mib, made = measure_command(root, repo, runs=args.runs)
        command = statistics.median(command_times)
        print(
            f"gitsync suggest runs: {', '.join(f'{t:.2f}' for t in command_times)} s;"
            f" {made:,} suggestions over {CACHES:,} caches"
        )
        print(
            f"gitsync suggest over {rows:,} lookups: median {command:.2f} s"
            f" (target <= 2 s), peak RSS {command_mib:.1f} MiB (target <= {MEMORY_TARGET_MB} MB)"
        )
        print(f"timing {args.requests:,} mirror hits without and with recording ...", flush=True)
        plain, recording, recorder = measure_recording(root, requests=args.requests)
    added = recording - plain
    print(
        f"mirror hit, median: {plain:.1f} µs without recording, {recording:.1f} µs with;"
        f" recorder wrote {recorder.written:,}, dropped {recorder.dropped:,}"
    )
    print(
        f"recording a lookup adds {added:.1f} µs to a mirror request (median)"
        f" (target <= {RECORDING_TARGET_US:.0f} µs)"
    )
    met = (
        median < EVIDENCE_TARGET_S
        and command <= COMMAND_TARGET_S
        and command_mib <= MEMORY_TARGET_MB * 1e6 / 2**20
        and peak_mib <= MEMORY_TARGET_MB * 1e6 / 2**20
        and added <= RECORDING_TARGET_US
    )
    print(f"targets: {'met' if met else 'MISSED'}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the `/metrics` scrape: time and body size at 100, 1,000 and 10,000 caches.

Prometheus scrapes gitsync every 15-60 s and gives up after `scrape_timeout`
(10 s by default, often less); a scrape that takes long also holds a server
thread and the GIL away from the reconcile loop. Target (observability issue):
≤ 100 ms per scrape at 10,000 caches.

The world is the daemon's own, not a stand-in: a bare git remote holding N
ImageCache documents (10 per file), a local-backend data dir whose SQLite state
holds the same N caches as Ready (rows inserted through
`gitsync.providers.local.state.StateStore`, as bench/sync.py's `seed_state`
does, so nothing is pulled), and a real `gitsync.daemon.Daemon` (the same
wiring as `gitsync run`: DaemonMetrics, UsageMetrics and StateExposition on one
CollectorRegistry) that has run one real pass, so the desired set, the
revision in force and the event metrics are what a running daemon exposes.
Usage is that of a busy cluster: every cache was hit, one in four also
partially, misses and startup times recorded through the same
`UsageMetrics.record` the mirror and the match API call. Scrapes go through
the daemon's ControlServer over loopback with httpx, from a separate process
as Prometheus's would (in this process the client would fight the server for
the GIL).

Printed per size: median and p95 of the scrape time (request to last byte),
body size, and samples per cache. For the largest size: samples per cache by
series name, each part of a scrape timed alone (StateView, the collector's
families, generate_latest of each group of collectors), the time HTTP alone
takes for that body (pre-rendered, same server; with httpx and with curl, a
compiled client like Prometheus), and a cProfile summary (file:function) when
the target is missed or --profile is given. The machine line carries the load
average: on a shared machine the figures move with it.

Run: python bench/scrape.py [--caches 100,1000,10000] [--scrapes 20] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import prometheus_client
from _common import cpu_model, percentile
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gitsync import wiring
from gitsync.config import CommandSettings
from gitsync.daemon import Daemon
from gitsync.metrics import ExpositionRegistry, StateExposition
from gitsync.model import CacheSpec, CacheStatus
from gitsync.providers.local.provider import LocalProvider
from gitsync.server import ControlServer, ServerHooks

TARGET_MS = 100.0
PER_FILE = 10
AUTHOR = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
SIZES_GIB = (20, 30, 50, 100)
RETENTION_DAYS = (0, 7, 30)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *AUTHOR, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def spec_of(index: int) -> CacheSpec:
    """Cache `index`: 1-3 images, a spread of sizes and retentions, as teams write them."""
    team = index % 40
    images = tuple(
        f"registry.example.com/team-{team:02d}/app-{index % 97 + k}:1.{index % 13}.{k}"
        for k in range(1 + index % 3)
    )
    return CacheSpec(
        name=f"cache-{index:05d}",
        images=images,
        image_cache_size_gib=SIZES_GIB[index % len(SIZES_GIB)],
        retention_days=RETENTION_DAYS[index % len(RETENTION_DAYS)],
    )


def doc(spec: CacheSpec) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {spec.name}\n  labels: {{team: bench}}\n"
        f"spec:\n  images: [{', '.join(spec.images)}]\n"
        f"  imageCacheSize: {spec.image_cache_size_gib}\n"
        f"  retentionDays: {spec.retention_days}\n"
    )


def seed_repository(root: Path, specs: list[CacheSpec]) -> Path:
    bare, work = root / "remote.git", root / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=root)
    git("clone", "-q", str(bare), str(work), cwd=root)
    git("checkout", "-q", "-b", "main", cwd=work)
    for start in range(0, len(specs), PER_FILE):
        path = work / "caches" / f"team-{start // PER_FILE % 20:02d}" / f"file-{start:05d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("---\n".join(doc(s) for s in specs[start : start + PER_FILE]))
    git("add", "-A", cwd=work)
    git("commit", "-qm", f"{len(specs)} caches", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return bare


def seed_state(provider: LocalProvider, specs: list[CacheSpec], *, owner: str) -> None:
    """The N caches as Ready, with snapshots and the two events a real build leaves."""
    now = datetime.now(UTC).replace(microsecond=0)

    def ts(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat(timespec="seconds")

    caches, snapshots, events = [], [], []
    for i, spec in enumerate(specs):
        created = now - timedelta(days=i % 5, hours=i % 24)
        expires = created + timedelta(days=spec.retention_days) if spec.retention_days else None
        matched = now - timedelta(minutes=i % 600) if i % 3 else None
        cache_id, snapshot_id = f"imc-{i:08d}", f"snap-{i:08d}"
        caches.append(
            (
                cache_id,
                spec.name,
                owner,
                json.dumps(list(spec.images)),
                spec.image_cache_size_gib,
                spec.retention_days,
                snapshot_id,
                ts(created),
                ts(created),
                ts(expires),
                ts(matched),
            )
        )
        content = (150 + (i * 37) % 2000) * 1024 * 1024
        snapshots.append((snapshot_id, cache_id, ts(created), content))
        events += [
            (cache_id, "Normal", "Creating", f"pulling {len(spec.images)} images", ts(created)),
            (cache_id, "Normal", "Created", f"{len(spec.images)} images", ts(created)),
        ]
    with provider.state.transaction() as db:
        db.executemany(
            "INSERT INTO caches(id, name, owner, status, images, image_cache_size_gib,"
            " retention_days, image_pull_secrets, prune, snapshot_id, created_at, updated_at,"
            " expires_at, last_matched_at)"
            " VALUES (?, ?, ?, 'Ready', ?, ?, ?, '[]', 1, ?, ?, ?, ?, ?)",
            caches,
        )
        db.executemany(
            "INSERT INTO snapshots(id, cache_id, created_at, content_bytes, images)"
            " VALUES (?, ?, ?, ?, '[]')",
            snapshots,
        )
        db.executemany(
            "INSERT INTO events(cache_id, type, reason, message, count, first_timestamp,"
            " last_timestamp) VALUES (?, ?, ?, ?, 1, ?, ?)",
            [(*e, e[-1]) for e in events],
        )
    held = provider.state.caches()
    assert len(held) == len(specs)
    assert all(c.status is CacheStatus.READY for c in held)


@dataclass
class World:
    """A daemon over N seeded caches, after one real pass, serving HTTP on loopback."""

    caches: int
    provider: LocalProvider
    daemon: Daemon
    registry: ExpositionRegistry
    url: str
    first_pass_s: float

    def close(self) -> None:
        self.daemon.server.stop()
        self.provider.close()


def build_world(root: Path, caches: int) -> World:
    specs = [spec_of(i) for i in range(caches)]
    bare = seed_repository(root, specs)
    # Wired as `gitsync run --repo file://... --data-dir ... --listen 127.0.0.1:0` is.
    flags = {"repo": f"file://{bare}", "data_dir": str(root / "data"), "listen": "127.0.0.1:0"}
    settings = CommandSettings(flags=flags, env={"HOME": str(root)}, config_path=None)
    provider = wiring.image_store(wiring.open_provider(settings, writable=True))
    assert provider is not None, "the local backend holds its images"
    seed_state(provider, specs, owner=settings.common.controller_id)
    registry = ExpositionRegistry()
    daemon = wiring.daemon(settings, provider=provider, registry=registry)
    started = time.perf_counter()
    result = daemon.run_pass(reason="bench-first")
    first_pass_s = time.perf_counter() - started
    assert result is not None
    assert result.converged, result.error
    assert result.plan is not None
    assert not result.outcomes, f"the seeded state should need no change: {result.outcomes[:3]}"
    # A busy cluster: every cache served pods; a quarter also partial matches; some misses.
    for i, spec in enumerate(specs):
        daemon.usage.record(cache=spec.name, result="hit", seconds=0.3 + (i % 50) / 10)
        if i % 4 == 0:
            daemon.usage.record(cache=spec.name, result="partial", seconds=5 + i % 30)
    for i in range(max(10, caches // 10)):
        daemon.usage.record(cache=None, result="miss", seconds=20 + i % 60)
    daemon.server.start()
    url = "http://{}:{}/metrics".format(*daemon.server.address)
    return World(caches, provider, daemon, registry, url, first_pass_s)


# The scraper runs in its own process, as Prometheus does: in this process it would
# fight the server for the GIL and measure httpx's parsing more than gitsync.
_SCRAPER = """
import json, sys, time
import httpx
url, count = sys.argv[1], int(sys.argv[2])
headers = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"}  # as Prometheus
times, body = [], b""
with httpx.Client(timeout=60) as client:
    for _ in range(2):  # warm-up: the first reads fill the state store's cache
        client.get(url, headers=headers).raise_for_status()
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(url, headers=headers)
        body = answer.content
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
families = {}
for line in body.decode().splitlines():
    if line and not line.startswith("#"):
        name = line.split("{", 1)[0].split(" ", 1)[0]
        families[name] = families.get(name, 0) + 1
print(json.dumps({"times_ms": times, "bytes": len(body), "families": families,
                  "encoding": answer.headers.get("content-encoding", "identity")}))
"""


@dataclass(frozen=True, slots=True)
class Figures:
    caches: int
    times_ms: list[float]
    body_bytes: int
    encoding: str
    lines_by_name: dict[str, int]
    first_pass_s: float

    @property
    def samples(self) -> int:
        return sum(self.lines_by_name.values())


def scrape(world: World, count: int) -> Figures:
    done = subprocess.run(
        [sys.executable, "-c", _SCRAPER, world.url, str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    lines: dict[str, int] = result["families"]
    assert lines.get("gitsync_cache_desired") == world.caches, lines.get("gitsync_cache_desired")
    return Figures(
        world.caches,
        result["times_ms"],
        result["bytes"],
        result["encoding"],
        lines,
        world.first_pass_s,
    )


def _median_ms(step: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def _registry_of(*collectors: Collector) -> ExpositionRegistry:
    registry = ExpositionRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


def breakdown(world: World, repeat: int = 5) -> dict[str, float]:
    """Median ms of each part of a scrape, outside HTTP, each part alone."""
    everything = list(world.registry._collector_to_names)  # the daemon's own wiring
    state = next(c for c in everything if isinstance(c, StateExposition))
    lookups = world.daemon.usage.lookups
    rest = [c for c in everything if c is not state and c is not lookups]
    alone = {
        "StateExposition": _registry_of(state),
        "UsageMetrics.lookups": _registry_of(lookups),
        "the rest (DaemonMetrics, startup histogram)": _registry_of(*rest),
    }
    steps: dict[str, float] = {
        "DaemonHttp.state_view (record file, provider.current())": _median_ms(
            world.daemon.http.state_view, repeat
        ),
        "StateExposition.render() (the per-cache text)": _median_ms(state.render, repeat),
    }
    for what, registry in alone.items():
        steps[f"exposition: {what}"] = _median_ms(registry.exposition, repeat)
    steps["exposition: the daemon's whole registry"] = _median_ms(world.registry.exposition, repeat)
    return steps


def transport_floor(world: World, count: int) -> tuple[list[float], list[float]]:
    """The same body rendered once and served as-is by a ControlServer: HTTP's share alone.

    No change inside metrics.py can make a scrape of this body faster than this;
    only a smaller body (fewer series) or compression can. Returns the times
    with httpx (this bench's client) and with curl (a compiled client, as
    Prometheus is), in ms; curl's list is empty when curl is not installed.
    """
    body = world.registry.exposition()
    server = ControlServer(
        host="127.0.0.1",
        port=0,
        hooks=ServerHooks(
            metrics=lambda: (body, CONTENT_TYPE_LATEST),
            healthy=lambda: True,
            ready=lambda: True,
            status=dict,
            trigger=lambda _reason: None,
        ),
        branch="main",
        webhook_secret=None,
    )
    server.start()
    try:
        url = "http://{}:{}/metrics".format(*server.address)
        with_httpx = scrape(replace(world, url=url), count).times_ms
        with_curl: list[float] = []
        curl = shutil.which("curl")
        for _ in range(count if curl else 0):
            done = subprocess.run(
                [str(curl), "-sf", "-o", "/dev/null", "-w", "%{time_total}", url],
                capture_output=True,
                text=True,
                check=True,
            )
            with_curl.append(float(done.stdout) * 1000)
        return with_httpx, with_curl
    finally:
        server.stop()


def profile(world: World, top: int = 12) -> str:
    """cProfile of three whole-registry renders, by own time, as file:function lines."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        world.registry.exposition()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    site = str(Path(prometheus_client.__file__).parent.parent) + "/"
    return "\n".join(line.replace(site, "") for line in lines[start : start + top + 1])


def machine() -> str:
    cpu = cpu_model()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (load average {load}), "
        f"Python {platform.python_version()}, prometheus_client {version('prometheus_client')}, "
        f"{platform.system()} {platform.release()}"
    )


def python_speed_ms() -> float:
    """A yardstick for comparing machines: 1,000,000 iterations of an empty loop."""
    started = time.perf_counter()
    for _ in range(1_000_000):
        pass
    return (time.perf_counter() - started) * 1000


def report(figures: Figures) -> None:
    times = figures.times_ms
    print(
        f"{figures.caches:>6} caches: scrape median {statistics.median(times):7.1f} ms, "
        f"p95 {percentile(times, 0.95):7.1f} ms; body {figures.body_bytes / 1024:6.0f} KiB "
        f"({figures.encoding}), {figures.samples} samples "
        f"({figures.samples / figures.caches:.1f} per cache); "
        f"first pass {figures.first_pass_s:.1f} s"
    )


def report_largest(world: World, figures: Figures, *, want_profile: bool) -> None:
    caches = figures.caches
    print(f"  samples per cache at {caches} caches, by series name (> 0.5 per cache):")
    for name, count in sorted(figures.lines_by_name.items(), key=lambda kv: -kv[1]):
        if count / caches > 0.5:
            print(f"    {name:<52} {count / caches:4.2f}")
    print(f"  where a scrape's time goes at {caches} caches (each part alone, median of 5):")
    steps = breakdown(world)
    for step, ms in steps.items():
        print(f"    {step:<62} {ms:8.1f} ms")
    with_httpx, with_curl = transport_floor(world, count=len(figures.times_ms))
    for client, times in (("httpx", with_httpx), ("curl", with_curl)):
        if times:
            print(
                f"    {'HTTP alone (body pre-rendered, ControlServer), ' + client:<62} "
                f"{statistics.median(times):8.1f} ms (p95 {percentile(times, 0.95):.1f})"
            )
    if want_profile or percentile(figures.times_ms, 0.95) > TARGET_MS:
        print("  cProfile of the daemon's exposition, by own time (3 renders):")
        print("    " + profile(world).replace("\n", "\n    "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--caches", default="100,1000,10000", help="comma-separated sizes")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="profile even when on target")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.caches.split(","))
    print(f"machine: {machine()}")
    print(f"python speed: empty loop of 1e6 iterations {python_speed_ms():.0f} ms")
    print(
        f"{args.scrapes} scrapes per size from a separate process, over loopback HTTP, "
        "after 2 warm-up scrapes"
    )
    largest: Figures | None = None
    for caches in sizes:
        with tempfile.TemporaryDirectory(prefix="gitsync-bench-scrape-") as scratch:
            world = build_world(Path(scratch), caches)
            try:
                figures = scrape(world, args.scrapes)
                report(figures)
                if caches == sizes[-1]:
                    largest = figures
                    report_largest(world, figures, want_profile=args.profile)
            finally:
                world.close()
    assert largest is not None
    p95 = percentile(largest.times_ms, 0.95)
    verdict = "met" if p95 <= TARGET_MS else "MISSED"
    print(f"target: p95 <= {TARGET_MS:.0f} ms at {largest.caches} caches: {verdict} ({p95:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

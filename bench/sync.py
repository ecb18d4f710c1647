"""Benchmark of the GitOps loop: webhook latency, no-op and one-file passes at 10,000 caches.

Everything is real: a bare git remote on disk, Debian's docker-registry on
127.0.0.1, the local backend's SQLite state and blob store, the daemon's HTTP
server with signed GitHub webhooks. The daemon runs in this process so the
provider's calls can be timed exactly (a thin wrapper records when each call
starts); nothing is simulated.

Figures (targets from the daemon issue; Flux polls every minute, Argo CD every 2-3):
- webhook → provider call latency over 20 pushes, p50 and p95 (target p95 ≤ 1 s)
- a no-op pass at 10,000 caches, unchanged revision (target ≤ 50 ms)
- a pass where one file of 1,000 changed, at 10,000 caches (target ≤ 500 ms)
- peak RSS of this process (target ≤ 200 MB)

Run: python bench/sync.py [--caches 10000] [--files 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from _common import cpu_model, percentile
from oci_images import OciLayout, Pusher, RegistryProcess, small_layer

from gitsync import wiring
from gitsync.config import CommandSettings
from gitsync.model import CacheSpec, CacheStatus, ObservedCache
from gitsync.providers.local.provider import LocalProvider

SECRET = b"bench-webhook-secret"
AUTHOR = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *AUTHOR, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class TimedProvider(LocalProvider):
    """The real local provider, noting when each create/update/delete starts."""

    calls: list[tuple[str, str, float]]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.calls = []
        self.called = threading.Event()

    def _note(self, verb: str, name: str) -> None:
        self.calls.append((verb, name, time.perf_counter()))
        self.called.set()

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        self._note("create", spec.name)
        return super().create(spec, owner=owner)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        self._note("update", spec.name)
        return super().update(spec, current)


def doc(name: str, image: str) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\n  labels: {{team: bench}}\n"
        f"spec:\n  images: [{image}]\n  imageCacheSize: 20\n  retentionDays: 0\n"
    )


def seed_state(provider: LocalProvider, specs: list[CacheSpec]) -> None:
    """Record caches as Ready, as if they had been pulled: the no-op baseline."""
    store = provider.state
    with store.transaction() as db:
        now = "2026-11-22T00:00:00+00:00"
        db.executemany(
            "INSERT INTO caches(id, name, owner, status, images, image_cache_size_gib,"
            " retention_days, image_pull_secrets, prune, snapshot_id, created_at, updated_at)"
            " VALUES (?, ?, 'gitsync', 'Ready', ?, 20, 0, '[]', 1, ?, ?, ?)",
            [
                (f"imc-{i:08d}", s.name, json.dumps(list(s.images)), f"snap-{i}", now, now)
                for i, s in enumerate(specs)
            ],
        )
        db.executemany(
            "INSERT INTO snapshots(id, cache_id, created_at, content_bytes, images)"
            " VALUES (?, ?, ?, 1048576, '[]')",
            [(f"snap-{i}", f"imc-{i:08d}", now) for i in range(len(specs))],
        )
    assert all(c.status is CacheStatus.READY for c in store.caches()[:1])


def signed_push(base: str, ref: str = "refs/heads/main") -> int:
    body = json.dumps({"ref": ref}).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    response = httpx.post(
        base + "/hooks/github",
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
    )
    return response.status_code


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()}"
    )


class Bench:
    """One world: registry with pushed images, a git remote of N caches, a seeded daemon."""

    def __init__(self, root: Path, *, caches: int, files: int, pushes: int) -> None:
        self.root = root
        self.files = files
        self.per_file = caches // files
        self.registry = RegistryProcess(storage=root / "registry", workdir=root / "registry-run")
        self.registry.start()
        pusher = Pusher(layout=OciLayout(root / "layout"), registry=self.registry)
        self.images = []
        for i in range(pushes + 1):
            repo = f"bench/app-{i}"
            pusher.push_image(repo, [small_layer(f"bench-{i}")])
            self.images.append(f"{self.registry.host}/{repo}:v1")
        self.base_image = f"{self.registry.host}/bench/base:v1"  # seeded only, never pulled
        self.bare, self.work = root / "remote.git", root / "work"
        specs = self._seed_repository()
        data = root / "data"
        self.provider = TimedProvider(data_dir=data)
        seed_state(self.provider, specs)
        secret_file = root / "webhook-secret"
        secret_file.write_bytes(SECRET)
        # Wired as `gitsync run` is, over the timed provider; no poll: passes come from webhooks.
        flags = {
            "repo": f"file://{self.bare}",
            "data_dir": str(data),
            "listen": "127.0.0.1:0",
            "interval": "3600s",
            "webhook_secret_file": str(secret_file),
        }
        settings = CommandSettings(flags=flags, env={"HOME": str(root)}, config_path=None)
        self.daemon = wiring.daemon(settings, provider=self.provider)

    def close(self) -> None:
        self.provider.close()
        self.registry.stop()

    def _names(self, f: int) -> list[str]:
        return [f"cache-{f:04d}-{d:02d}" for d in range(self.per_file)]

    def _file(self, f: int) -> Path:
        return self.work / "caches" / f"team-{f % 20:02d}" / f"file-{f:04d}.yaml"

    def _seed_repository(self) -> list[CacheSpec]:
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=self.root)
        git("clone", "-q", str(self.bare), str(self.work), cwd=self.root)
        git("checkout", "-q", "-b", "main", cwd=self.work)
        specs: list[CacheSpec] = []
        for f in range(self.files):
            self._file(f).parent.mkdir(parents=True, exist_ok=True)
            self._file(f).write_text("---\n".join(doc(n, self.base_image) for n in self._names(f)))
            specs += [CacheSpec(name=n, images=(self.base_image,)) for n in self._names(f)]
        self._commit("seed")
        return specs

    def _commit(self, message: str) -> None:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)

    def change_one_cache(self, f: int, image: str) -> str:
        """Point the first cache of file `f` at `image`; returns that cache's name."""
        names = self._names(f)
        self._file(f).write_text(
            "---\n".join(doc(n, image if n == names[0] else self.base_image) for n in names)
        )
        self._commit(f"{names[0]} -> {image}")
        return names[0]

    def first_pass(self) -> float:
        started = time.perf_counter()
        self.daemon.run_pass(reason="bench-first")
        assert not self.provider.calls, self.provider.calls[:3]
        return time.perf_counter() - started

    def noop_passes(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            result = self.daemon.run_pass(reason="bench-noop")
            times.append(time.perf_counter() - started)
            assert result is not None
            assert not self.provider.calls
        return times

    def one_file_passes(self, count: int) -> list[float]:
        times = []
        for i in range(count):
            name = self.change_one_cache(7, self.images[-1 - (i % 2)])
            self.provider.calls.clear()
            started = time.perf_counter()
            result = self.daemon.run_pass(reason="bench-one-file")
            times.append(time.perf_counter() - started)
            assert [c[:2] for c in self.provider.calls] == [("update", name)], self.provider.calls
            assert result is not None
            assert result.converged, result.error
        return times

    def webhook_latencies(self, pushes: int) -> list[float]:
        """Signed webhook sent → first provider call, through the real server and loop."""
        loop = threading.Thread(target=self.daemon.run, name="bench-daemon", daemon=True)
        loop.start()
        while not self.daemon.ready_to_serve():
            time.sleep(0.01)
        base = "http://{}:{}".format(*self.daemon.server.address)
        latencies = []
        for i in range(pushes):
            self.change_one_cache(11, self.images[i])
            self.provider.calls.clear()
            self.provider.called.clear()
            sent = time.perf_counter()
            assert signed_push(base) == 202
            if not self.provider.called.wait(30):
                raise SystemExit(f"push {i}: no provider call within 30 s")
            latencies.append(self.provider.calls[0][2] - sent)
            time.sleep(0.3)  # let that pass finish its pull before the next push
        self.daemon.stop()
        loop.join(30)
        return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--caches", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-sync-") as scratch:
        bench = Bench(Path(scratch), caches=args.caches, files=args.files, pushes=args.pushes)
        try:
            first = bench.first_pass()
            noop = bench.noop_passes(20)
            one_file = bench.one_file_passes(5)
            latencies = bench.webhook_latencies(args.pushes)
        finally:
            bench.close()

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {machine()}")
    print(f"caches: {args.caches} in {args.files} files; first pass {first * 1000:.0f} ms")
    print(
        f"webhook -> provider call over {args.pushes} pushes: "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms  (target p95 <= 1000 ms)"
    )
    print(
        f"no-op pass at {args.caches} caches: median {statistics.median(noop) * 1000:.1f} ms, "
        f"max {max(noop) * 1000:.1f} ms  (target <= 50 ms)"
    )
    print(
        f"one file of {args.files} changed at {args.caches} caches: "
        f"median {statistics.median(one_file) * 1000:.0f} ms, "
        f"max {max(one_file) * 1000:.0f} ms  (target <= 500 ms)"
    )
    print(f"peak RSS: {rss_mib:.0f} MiB  (target <= 200 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of checked snapshots on the local backend: the scrub's rate and the per-pass check.

Everything is real: the local backend's SQLite state and blob store on disk,
the scrub hashing real files through its token bucket, `observe()` stat-ing
every blob of every Ready snapshot.

Figures:
- the bytes per second the scrub holds against its `--scrub-rate` limit, over
  a store of --store-mib MiB (and its unthrottled hashing speed, for scale)
- what the per-pass blob check adds to a no-op `observe()` at --caches caches
  (each snapshot: a manifest, a config, a layer shared by all and one of its own)

Run: python bench/scrub.py [--caches 10000] [--store-mib 256] [--rate-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_model

from gitsync.model import CacheStatus
from gitsync.providers.local.blobs import compute_digest
from gitsync.providers.local.provider import LocalProvider
from gitsync.providers.local.scrub import Scrubber

MIB = 1024 * 1024
NOW = "2026-11-22T00:00:00+00:00"


def seed(provider: LocalProvider, *, caches: int, store_bytes: int) -> None:
    """Ready caches whose snapshots reference real blobs: one big shared layer, small others."""
    provider.blobs.fsync = False  # seeding only: the figures are about reading
    shared = os.urandom(store_bytes)
    shared_digest = provider.blobs.put_bytes(shared)
    rows: list[tuple[str, str, int]] = []
    for i in range(caches):
        own = provider.blobs.put_bytes(f"layer {i}".encode())
        config = provider.blobs.put_bytes(json.dumps({"i": i}).encode())
        manifest = provider.blobs.put_bytes(json.dumps({"m": i, "c": config}).encode())
        for digest in (own, config, manifest, shared_digest):
            rows.append((f"snap-{i}", digest, provider.blobs.size(digest)))
    with provider.state.transaction() as db:
        db.executemany(
            "INSERT INTO caches(id, name, owner, status, images, image_cache_size_gib,"
            " retention_days, image_pull_secrets, prune, snapshot_id, created_at, updated_at)"
            " VALUES (?, ?, 'gitsync', 'Ready', '[]', 20, 0, '[]', 1, ?, ?, ?)",
            [(f"imc-{i:08d}", f"cache-{i:05d}", f"snap-{i}", NOW, NOW) for i in range(caches)],
        )
        db.executemany(
            "INSERT INTO snapshots(id, cache_id, created_at, content_bytes, images)"
            " VALUES (?, ?, ?, 1048576, '[]')",
            [(f"snap-{i}", f"imc-{i:08d}", NOW) for i in range(caches)],
        )
        db.executemany(
            "INSERT INTO snapshot_blobs(snapshot_id, digest, size) VALUES (?, ?, ?)", rows
        )
    assert compute_digest(shared) == shared_digest


def time_observe(provider: LocalProvider, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        state = provider.observe()
        times.append(time.perf_counter() - started)
        assert all(c.status is CacheStatus.READY for c in state.caches[:1])
    return times


def time_read(provider: LocalProvider, runs: int) -> list[float]:
    """The same pass without the check: what observe() did before it."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        provider.state.caches()
        times.append(time.perf_counter() - started)
    return times


def scrub_rate(provider: LocalProvider, rate: int) -> tuple[float, int]:
    """(bytes per second held, bytes hashed) for one full pass at `rate`."""
    scrubber = Scrubber(provider, rate_bytes=rate, interval_seconds=3600)
    provider.state.set_meta("scrub_pass_finished_at", None)
    provider.state.set_meta("scrub_pass_started_at", None)
    started = time.monotonic()
    done = scrubber.scrub()
    seconds = time.monotonic() - started
    assert done.finished
    assert not done.damaged
    return done.bytes / seconds, done.bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caches", type=int, default=10_000)
    parser.add_argument("--store-mib", type=int, default=256)
    parser.add_argument("--rate-mib", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="gitsync-bench-scrub-") as tmp:
        provider = LocalProvider(data_dir=Path(tmp) / "data")
        try:
            seed(provider, caches=args.caches, store_bytes=args.store_mib * MIB)
            provider.blobs.fsync = True
            time_observe(provider, 2)  # loads the snapshots' blob lists once
            checked = time_observe(provider, 20)
            plain = time_read(provider, 20)
            blobs = 3 * args.caches + 1
            with_check, without = statistics.median(checked), statistics.median(plain)
            added = with_check - without
            print(
                f"no-op observe at {args.caches} caches ({blobs} distinct blobs):"
                f" {with_check * 1000:.1f} ms with the blob check, {without * 1000:.1f} ms"
                f" without; the check adds {added * 1000:.1f} ms ({added / blobs * 1e6:.2f} µs a"
                " blob)"
            )
            limit = args.rate_mib * MIB
            held, hashed = scrub_rate(provider, limit)
            print(
                f"scrub at --scrub-rate {args.rate_mib}M: held {held / MIB:.1f} MiB/s"
                f" ({held / limit:.0%} of the limit) over {hashed / MIB:.0f} MiB"
            )
            raw, _ = scrub_rate(provider, 1 << 40)
            print(f"scrub unthrottled (for scale): {raw / MIB:.0f} MiB/s")
        finally:
            provider.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: gitsync's pull against `skopeo copy`, from a loopback docker-registry.

Builds 5 images that share base layers (about 200 MB of random, incompressible
data in unique layers, about twice that summed per image), pushes them to a
docker-registry it starts on 127.0.0.1, then pulls the whole set alternately:

* gitsync: `pull_images` of all 5 references into a fresh blob store;
* skopeo: `skopeo copy docker://... oci:DIR:TAG` for each image in turn, into
  a fresh OCI layout (skopeo reuses blobs already in that layout, so it dedupes
  across images too).

Each side runs `--rounds` times (default 3); the script prints every time,
the medians, the ratio gitsync/skopeo (target <= 1.0) and the dedupe savings.

    python bench/pull.py [--rounds 3] [--workers 4] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from _common import skopeo_copy
from oci_images import Layer, OciLayout, RegistryProcess, make_layer, skopeo_push

from gitsync.imageref import parse
from gitsync.providers.local.blobs import BlobStore
from gitsync.providers.local.pull import DEFAULT_MAX_WORKERS, pull_images
from gitsync.providers.local.registry import RegistryClient

MB = 1000 * 1000

# Unique layers (MB of random data) and the images built from them.
LAYERS = {"base": 60, "runtime": 30, "a": 15, "b": 20, "c": 25, "d": 20, "e": 10, "f": 20}
IMAGES = {
    "app-a": ["base", "runtime", "a"],
    "app-b": ["base", "runtime", "b"],
    "app-c": ["base", "c"],
    "app-d": ["runtime", "d", "e"],
    "app-e": ["base", "runtime", "f"],
}


def build_layers(scale: float) -> dict[str, Layer]:
    layers = {}
    for name, size in LAYERS.items():
        data = os.urandom(int(size * MB * scale))
        layers[name] = make_layer({f"{name}.bin": data}, level=1)
    return layers


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def time_gitsync(refs: list[str], root: Path, workers: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process, bytes fetched."""
    store_dir = root / "gitsync-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    cpu = _cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with RegistryClient() as client:
        result = pull_images(
            [parse(r) for r in refs],
            client=client,
            store=BlobStore(store_dir),
            max_workers=workers,
        )
    elapsed = time.perf_counter() - started
    cpu = _cpu(resource.RUSAGE_SELF) - cpu
    shutil.rmtree(store_dir, ignore_errors=True)
    return elapsed, cpu, result.fetched_bytes


def time_skopeo(refs: list[str], root: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the skopeo processes."""
    layout = root / "skopeo-layout"
    shutil.rmtree(layout, ignore_errors=True)
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    skopeo_copy(refs, layout)
    elapsed = time.perf_counter() - started
    cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu
    shutil.rmtree(layout, ignore_errors=True)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=DEFAULT_MAX_WORKERS)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply layer sizes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gitsync-bench-") as tmp:
        root = Path(tmp)
        print("building layers ...", flush=True)
        layers = build_layers(args.scale)
        layout = OciLayout(root / "source")
        per_image_bytes = 0
        for name, parts in IMAGES.items():
            image = layout.add_image([layers[p] for p in parts], tag=name, label=name)
            per_image_bytes += sum(layer.size for layer in image.layers)
        unique_bytes = sum(layer.size for layer in layers.values())
        registry = RegistryProcess(storage=root / "storage", workdir=root / "registry").start()
        try:
            print(f"pushing {len(IMAGES)} images to {registry.host} ...", flush=True)
            refs = []
            for name in IMAGES:
                skopeo_push(layout, name, f"{registry.host}/bench/{name}:1")
                refs.append(f"{registry.host}/bench/{name}:1")
            gitsync_times: list[float] = []
            skopeo_times: list[float] = []
            gitsync_cpu: list[float] = []
            skopeo_cpu: list[float] = []
            fetched = 0
            for round_no in range(1, args.rounds + 1):
                elapsed, cpu, fetched = time_gitsync(refs, root, args.workers)
                gitsync_times.append(elapsed)
                gitsync_cpu.append(cpu)
                elapsed, cpu = time_skopeo(refs, root)
                skopeo_times.append(elapsed)
                skopeo_cpu.append(cpu)
                print(
                    f"round {round_no}: gitsync {gitsync_times[-1]:.2f} s"
                    f" (cpu {gitsync_cpu[-1]:.2f} s), skopeo {skopeo_times[-1]:.2f} s"
                    f" (cpu {skopeo_cpu[-1]:.2f} s)",
                    flush=True,
                )
        finally:
            registry.stop()

    g, s = statistics.median(gitsync_times), statistics.median(skopeo_times)
    print()
    print(f"images: {len(IMAGES)}; layer bytes summed per image: {per_image_bytes / MB:.1f} MB;")
    print(f"        unique layer bytes: {unique_bytes / MB:.1f} MB")
    print(f"gitsync (workers={args.workers}): median {g:.2f} s  (all: {_fmt(gitsync_times)})")
    print(f"skopeo copy, per image:  median {s:.2f} s  (all: {_fmt(skopeo_times)})")
    print(f"ratio gitsync/skopeo: {g / s:.2f}  (target <= 1.0)")
    gc, sc = statistics.median(gitsync_cpu), statistics.median(skopeo_cpu)
    print(
        f"cpu seconds (client side, registry excluded): gitsync {gc:.2f}, skopeo {sc:.2f}"
        " (gitsync also decompresses every layer to check its diff_id, and fsyncs)"
    )
    saved = per_image_bytes - fetched
    print(
        f"dedupe: fetched {fetched / MB:.1f} MB instead of {per_image_bytes / MB:.1f} MB"
        f" summed per image: saved {saved / MB:.1f} MB ({100 * saved / per_image_bytes:.0f}%)"
    )
    print(f"gitsync throughput: {fetched / MB / g:.0f} MB/s (fsync on, diff_ids verified)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: how much image layers expand, and how much of a formatted disk holds them.

`gitsync plan` checks that a cache's images fit its `imageCacheSize` (see
`gitsync/sizing.py`). A registry only tells the *compressed* size of a layer;
where the local store has not pulled a layer, the expanded size is estimated
as compressed × a ratio. This script measures the range of that ratio, and
the two disk facts the check also needs, on real content available offline:

1. **Expansion ratio** of real Debian packages as image layers: each `.deb`
   in `--debs` (default: apt's cache, /var/cache/apt/archives) is turned into
   the tar stream of its files (`dpkg-deb --fsys-tarfile`, exactly what a
   `RUN apt-get install` layer adds) and gzipped at level 6, the level
   docker, buildkit and containerd write (Go's `gzip.DefaultCompression`).
   Ratio = tar bytes ÷ gzip bytes. Single packages spread widely (fonts and
   docs expand far more than binaries), so layers are simulated as 5,000
   seeded draws of 20 packages each; the 5th and 95th percentiles of their
   ratios bound the estimate. Whole directory trees are measured as layers
   too: the Debian rootfs a `debootstrap --variant=minbase` builds
   (`--rootfs`, without apt's lists and downloads, as the official image
   ships it) and big folders of this machine (libraries, /usr/share, a JDK,
   Python, node_modules).
2. **Files on disk vs tar bytes**: each tree is written into a fresh ext4
   image with `mkfs.ext4 -d` (no mount needed); blocks used ÷ tar bytes is
   what unpacking costs beyond the tar stream (4 KiB blocks, directories).
3. **Usable share of a formatted disk**: `mkfs.ext4` with this machine's
   defaults on sparse files of 20 GiB to 1 TiB; (free blocks − blocks
   reserved for root) ÷ all blocks is what `df` calls available.

    python bench/size_ratio.py [--debs DIR] [--rootfs DIR] [--max-debs N] [--no-ext4]

About 10 minutes for the 1,678 packages (10.5 GiB of tar) of this machine on
2 cores; `--max-debs 200` takes a seeded sample. Prints one line per
measurement, then the figures `gitsync/sizing.py` uses beside what they were
chosen from.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gitsync import sizing

GIB = 1024**3
MIB = 1024**2
CHUNK = 1024 * 1024
GZIP_LEVEL = 6  # Go's compress/gzip DefaultCompression, what docker and containerd write
DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/share",
    "/usr/bin",
    "/usr/lib/jvm",
    "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages",
    "/usr/lib/node_modules",
)
DISK_SIZES_GIB = (20, 50, 100, 200, 500, 1000)
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
LAYER_PACKAGES = 20  # packages in one simulated `RUN apt-get install` layer
LAYER_SAMPLES = 5000
# Apt's downloads and indexes: not in the official image's rootfs.
ROOTFS_EXCLUDES = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    expanded: int  # tar bytes
    compressed: int  # gzip -6 bytes

    @property
    def ratio(self) -> float:
        return self.expanded / self.compressed


def gzip_stream(chunks: Iterable[bytes]) -> tuple[int, int]:
    """Tar bytes in, (tar bytes, gzip bytes) out, without keeping either."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    expanded = compressed = 0
    for chunk in chunks:
        expanded += len(chunk)
        compressed += len(compressor.compress(chunk))
    compressed += len(compressor.flush())
    return expanded, compressed


def command_output(command: list[str]) -> Iterator[bytes]:
    """The stdout of `command` in chunks; fails loudly if the command does."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read(CHUNK):
            yield chunk
        stderr = process.stderr.read() if process.stderr else b""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr.decode(errors='replace')[-500:]}")


def tar_command(directory: Path, excludes: Iterable[str] = ()) -> list[str]:
    """A tar stream of `directory` as a layer holds it: relative paths, numeric owners."""
    return [
        "tar",
        "--numeric-owner",
        "--sort=name",
        *(f"--exclude={pattern}" for pattern in excludes),
        "-C",
        str(directory),
        "-cf",
        "-",
        ".",
    ]


def measure_debs(folder: Path, *, limit: int | None) -> list[Sample]:
    debs = sorted(folder.glob("*.deb"))
    if limit is not None and limit < len(debs):
        debs = sorted(random.Random(1).sample(debs, limit))  # noqa: S311 - seeded, repeatable
    samples = []
    for deb in debs:
        expanded, compressed = gzip_stream(command_output(["dpkg-deb", "--fsys-tarfile", str(deb)]))
        samples.append(Sample(deb.name, expanded, compressed))
    return samples


def weighted_percentile(samples: list[Sample], q: float) -> float:
    """The ratio below which a share `q` of all tar bytes lies."""
    ordered = sorted(samples, key=lambda s: s.ratio)
    total = sum(s.expanded for s in ordered)
    seen = 0
    for sample in ordered:
        seen += sample.expanded
        if seen >= q * total:
            return sample.ratio
    return ordered[-1].ratio


def dumpe2fs(image: Path) -> dict[str, int]:
    out = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            fields[key.strip()] = int(value.strip())
    return fields


def mkfs(image: Path, size: int, *, source: Path | None = None) -> dict[str, int]:
    image.unlink(missing_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(size)
    command = ["mkfs.ext4", "-q", "-F"]
    if source is not None:
        command += ["-d", str(source)]
    subprocess.run([*command, str(image)], check=True, capture_output=True)
    return dumpe2fs(image)


def disk_usage(directory: Path, tar_bytes: int, scratch: Path) -> float:
    """Blocks an ext4 file system spends on `directory`'s files, ÷ its tar bytes."""
    size = max(256 * MIB, 2 * tar_bytes + 256 * MIB)
    empty = mkfs(scratch / "empty.img", size)
    full = mkfs(scratch / "full.img", size, source=directory)
    (scratch / "empty.img").unlink()
    (scratch / "full.img").unlink()
    used = (empty["Free blocks"] - full["Free blocks"]) * full["Block size"]
    return used / tar_bytes


def clean_rootfs(rootfs: Path, scratch: Path) -> Path:
    """A copy of the rootfs without apt's downloads and lists, as the official image ships it."""
    target = scratch / "rootfs"
    target.mkdir()
    with subprocess.Popen(tar_command(rootfs, ROOTFS_EXCLUDES), stdout=subprocess.PIPE) as pack:
        subprocess.run(["tar", "-C", str(target), "-xf", "-"], stdin=pack.stdout, check=True)
    if pack.returncode != 0:
        raise RuntimeError(f"tar of {rootfs} failed")
    return target


def simulated_layers(samples: list[Sample], *, size: int, count: int) -> list[float]:
    """Ratios of `count` layers of `size` random packages each, as `RUN apt-get install` makes.

    A layer mixes packages, so its ratio spreads less than single packages do;
    this is the spread a layer of unknown content has.
    """
    rng = random.Random(1)  # noqa: S311 - a seeded sample, the same on every run
    ratios = []
    for _ in range(count):
        group = rng.sample(samples, min(size, len(samples)))
        ratios.append(sum(s.expanded for s in group) / sum(s.compressed for s in group))
    return sorted(ratios)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_debs(args: argparse.Namespace) -> tuple[float, float] | None:
    """Section 1a; returns the p5 and p95 of the simulated layers' ratios."""
    folder = Path(args.debs)
    debs = measure_debs(folder, limit=args.max_debs) if folder.is_dir() else []
    if not debs:
        print(f"   no .deb files in {folder}")
        return None
    tar_total = sum(s.expanded for s in debs)
    gz_total = sum(s.compressed for s in debs)
    print(
        f"   {len(debs)} Debian packages from {folder}: {tar_total / GIB:.2f} GiB of tar,"
        f" {gz_total / GIB:.2f} GiB gzipped, overall {tar_total / gz_total:.2f}"
    )
    print(
        "   single packages, by tar bytes: "
        + ", ".join(f"p{round(q * 100)} {weighted_percentile(debs, q):.2f}" for q in QUANTILES)
    )
    top = sorted(debs, key=lambda s: s.ratio)[-3:]
    print("   highest: " + ", ".join(f"{s.name} {s.ratio:.1f}" for s in reversed(top)))
    layers = simulated_layers(debs, size=LAYER_PACKAGES, count=LAYER_SAMPLES)
    print(
        f"   {LAYER_SAMPLES} layers of {LAYER_PACKAGES} random packages: "
        + ", ".join(f"p{round(q * 100)} {quantile(layers, q):.2f}" for q in QUANTILES)
    )
    return quantile(layers, 0.05), quantile(layers, 0.95)


def report_trees(args: argparse.Namespace, scratch: Path, *, ext4: bool) -> list[float]:
    """Section 1b (and the disk factor of each tree); returns the disk factors."""
    trees: list[tuple[str, Path]] = []
    if args.rootfs:
        trees.append(("debootstrap minbase rootfs", clean_rootfs(Path(args.rootfs), scratch)))
    trees += [(d, Path(d)) for d in DIRECTORIES if Path(d).is_dir()]
    factors: list[float] = []
    for name, path in trees:
        expanded, compressed = gzip_stream(command_output(tar_command(path)))
        line = (
            f"   {name}: {expanded / MIB:,.0f} MiB tar, {compressed / MIB:,.0f} MiB gzipped,"
            f" ratio {expanded / compressed:.2f}"
        )
        if ext4:
            factor = disk_usage(path, expanded, scratch)
            factors.append(factor)
            line += f"; on ext4 {factor:.3f} × tar bytes"
        print(line, flush=True)
    return factors


def report_disks(scratch: Path) -> list[float]:
    """Section 2; returns the usable share at each size."""
    usable: list[float] = []
    for gib in DISK_SIZES_GIB:
        fields = mkfs(scratch / "disk.img", gib * GIB)
        (scratch / "disk.img").unlink()
        blocks = fields["Block count"]
        share = (fields["Free blocks"] - fields["Reserved block count"]) / blocks
        usable.append(share)
        print(
            f"   {gib:>5} GiB: available {share:.4f}, to root {fields['Free blocks'] / blocks:.4f}"
        )
    return usable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debs", default="/var/cache/apt/archives", help="folder of .deb files")
    parser.add_argument("--max-debs", type=int, default=None, help="a seeded sample of N")
    parser.add_argument("--rootfs", default="", help="a debootstrap --variant=minbase folder")
    parser.add_argument("--no-ext4", action="store_true", help="skip the mkfs.ext4 figures")
    args = parser.parse_args()
    started = time.monotonic()
    ext4 = not args.no_ext4 and bool(shutil.which("mkfs.ext4") and shutil.which("dumpe2fs"))
    model = sizing.SizeModel()

    print(f"1. expansion ratio (tar bytes ÷ gzip -{GZIP_LEVEL} bytes)")
    spread = report_debs(args)
    with tempfile.TemporaryDirectory(prefix="size-ratio-") as tmp:
        print("   directory trees as layers:")
        factors = report_trees(args, Path(tmp), ext4=ext4)
        usable: list[float] = []
        if ext4:
            print("2. fresh ext4, mke2fs defaults: available (free − reserved) ÷ all blocks")
            usable = report_disks(Path(tmp))

    print("figures in gitsync/sizing.py, and what they were chosen from:")
    if spread is not None:
        print(f"   low expansion ratio {model.low_ratio} (simulated layers p5 {spread[0]:.2f})")
        print(f"   high expansion ratio {model.high_ratio} (simulated layers p95 {spread[1]:.2f})")
    if factors:
        print(f"   disk factor {model.disk_factor} (ext4 max {max(factors):.3f} × tar bytes)")
    if usable:
        print(f"   usable fraction {model.usable_fraction} (ext4 min {min(usable):.4f})")
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0 and "--no-ext4" not in sys.argv:
        # mkfs.ext4 -d on a file needs no root, but reading every folder might.
        print("note: not root; unreadable files are skipped by tar", file=sys.stderr)
    sys.exit(main())

"""Helpers the benchmarks share: the machine's description, percentiles, a skopeo pull,
finding a Python tool's console script.

The leading underscore keeps `bench/run_all.py` from running this file as a benchmark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def console_script(name: str) -> str | None:
    """The console script `name` installed beside the running interpreter, else on PATH.

    `venv/bin/python bench/run_all.py` runs without the virtualenv activated, so its
    scripts (check-jsonschema…) are not on PATH; the ones on PATH may be another version.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def skopeo_copy(refs: list[str], layout: Path, *, timeout: float = 300) -> None:
    """Copy each image into one OCI layout with skopeo, as a client materialising them would."""
    for n, ref in enumerate(refs):
        subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--src-no-creds",
                f"docker://{ref}",
                f"oci:{layout}:img{n}",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

"""A real containerd (`ctr`) pulling through gitsync's `/v2/` mirror with the README's hosts.toml.

Shared by the mirror's tests and the `gitsync suggest` end-to-end test: the
lookups they assert on are made by the client nodes really run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from waiting import wait_until


@contextmanager
def containerd(upstream: str, mirror: str) -> Iterator[Callable[..., str]]:
    """A real containerd using `mirror` for `upstream` through the README's hosts.toml.

    Yields `ctr(*args)`, which fails the test when ctr does; `images pull`
    gets the native snapshotter and the hosts directory.
    """
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is missing: install Debian's containerd package")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root for its content store and snapshotter")
    work = Path(tempfile.mkdtemp(prefix="gitsync-ctr-"))  # short: a socket path has ~100 bytes
    hosts = work / "certs.d" / upstream
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{upstream}"\n\n'
        f'[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    config = work / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{work}/root"\nstate = "{work}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{work}/sock"\n'
    )
    with open(work / "log", "wb") as log:
        daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    try:
        wait_until(
            (work / "sock").exists,
            timeout=10,
            what="containerd's socket",
            detail=lambda: (work / "log").read_text(errors="replace")[-2000:],
        )

        def ctr(*args: str) -> str:
            if args[:2] == ("images", "pull"):
                options = ("--snapshotter", "native", "--hosts-dir", str(hosts.parent))
                args = (*args[:2], *options, *args[2:])
            done = subprocess.run(
                ["ctr", "--address", str(work / "sock"), *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        yield ctr
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

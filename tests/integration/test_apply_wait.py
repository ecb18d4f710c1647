"""`gitsync apply` exit codes on the asynchronous backends, as processes, on both stand-ins.

On `--provider kubernetes` (kmock's API server, with a stand-in operator that
writes status) and `--provider tencentcloud` (the TKE emulator, whose builds
finish `ready_after` seconds after a create), `apply` returns once the
provider has accepted every action, as `kubectl apply` does: exit 0 while the
caches are still Pending. `apply --wait` waits for them, as `helm upgrade
--wait` does: 0 once they are Ready, 1 when one goes Failed or at `--timeout`,
and a signal ends the wait cleanly. The local backend builds during the pass,
so a Failed cache there is exit 1 with or without `--wait`.

Each test changes the stand-in's state only after the child has said it is
waiting, so the wait loop itself (not the first observation) sees the change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from gitrepo import git
from kube_fixtures import FakeOperator, KubeServer

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from tke_fixtures import (  # type: ignore[attr-defined]  # tke_fixtures re-exports it
    PROXY_VARIABLES,
    REGION,
    SECRET_ID,
    SECRET_KEY,
    TkeEmulator,
)

pytestmark = pytest.mark.slow  # `python -m gitsync` processes, two of them waiting 5 s

GROUP = "eks.cloud.tencent.com"
CACHES = {"tools": "busybox:1.36.1", "web": "nginx:1.27.2"}
PROCESS_TIMEOUT = 120.0
WAITING = "waiting up to"  # what apply --wait says once its signal handlers are in place


class Backend(Protocol):
    def argv(self, *args: str) -> list[str]: ...

    def env(self) -> dict[str, str]: ...

    def names(self) -> set[str]: ...

    def make_ready(self) -> None: ...

    def make_failed(self, name: str) -> None: ...


def base_env() -> dict[str, str]:
    dropped = ("GITSYNC_", "TENCENTCLOUD_", "KUBECONFIG")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in PROXY_VARIABLES and k.lower() != "no_proxy"
    }


@dataclass
class Kubernetes:
    server: KubeServer
    operator: FakeOperator
    kubeconfig: Path
    data: Path

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "gitsync", "apply",
            "--provider", "kubernetes",
            "--kubeconfig", str(self.kubeconfig),
            "--data-dir", str(self.data),
            *args,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return base_env()

    def names(self) -> set[str]:
        return self.server.api.names(GROUP, "imagecaches")

    def make_ready(self) -> None:
        for name in sorted(self.names()):
            self.operator.set_status(name, {"phase": "Ready", "imcId": f"imc-{name}"})

    def make_failed(self, name: str) -> None:
        involved = {
            "apiVersion": f"{GROUP}/v1",
            "kind": "ImageCache",
            "name": name,
            "uid": self.operator.uid(name),
        }
        self.operator.event(
            involved=involved,
            reason="PullImageFailed",
            message=f"failed to pull {CACHES[name]}",
            type_="Warning",
        )
        self.operator.set_status(name, {"phase": "Failed"})


@dataclass
class TencentCloud:
    tke: TkeEmulator
    data: Path

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "gitsync", "apply",
            "--provider", "tencentcloud",
            "--region", REGION,
            "--tencentcloud-endpoint", self.tke.endpoint,
            "--tencentcloud-scheme", "http",
            "--vpc-id", "vpc-1",
            "--subnet-id", "subnet-1",
            "--data-dir", str(self.data),
            *args,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "TENCENTCLOUD_SECRET_ID": SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        }

    def names(self) -> set[str]:
        return {str(c["ImageCacheName"]) for c in self.tke.caches()}

    def make_ready(self) -> None:
        self.tke.ready_after = 0.0  # the cloud finishes every build now

    def make_failed(self, name: str) -> None:
        self.tke.fail_images(CACHES[name])
        self.tke.ready_after = 0.0


@dataclass(frozen=True)
class Repo:
    path: Path
    head: str


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repo"
    root.mkdir()
    for name, image in CACHES.items():
        (root / f"{name}.yaml").write_text(
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
            f"metadata:\n  name: {name}\nspec:\n  images: [{image}]\n",
            encoding="utf-8",
        )
    git("init", "-q", "-b", "main", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-qm", "two caches", cwd=root)
    return Repo(root, git("rev-parse", "HEAD", cwd=root))


@pytest.fixture(params=["kubernetes", "tencentcloud"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "kubernetes":
        with KubeServer() as server:
            operator = FakeOperator(server)
            try:
                yield Kubernetes(
                    server=server,
                    operator=operator,
                    kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"),
                    data=tmp_path / "data",
                )
            finally:
                operator.close()
    else:
        # Builds stay Pending until a test says otherwise.
        with TkeEmulator(
            secret_id=SECRET_ID, secret_key=SECRET_KEY, region=REGION, ready_after=3600.0
        ) as tke:
            yield TencentCloud(tke=tke, data=tmp_path / "data")


def apply(backend: Backend, repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        backend.argv("--repo", str(repo.path), *args),
        env=backend.env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


@dataclass
class Waiting:
    """An `apply --wait` child that has said it is waiting."""

    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path

    def finish(self) -> tuple[int, str, str]:
        code = self.process.wait(timeout=PROCESS_TIMEOUT)
        return code, self.stdout.read_text(), self.stderr.read_text()


class StartWaiting(Protocol):
    def __call__(self, backend: Backend, repo: Repo, *args: str) -> Waiting: ...


@pytest.fixture
def start_waiting(tmp_path: Path) -> Iterator[StartWaiting]:
    started: list[subprocess.Popen[str]] = []

    def start(backend: Backend, repo: Repo, *args: str) -> Waiting:
        out, err = tmp_path / "apply.out", tmp_path / "apply.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                backend.argv("--repo", str(repo.path), "--wait", *args),
                env=backend.env(),
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
        started.append(process)
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while WAITING not in err.read_text():
            if process.poll() is not None:
                pytest.fail(f"apply exited {process.returncode} before waiting:\n{err.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"apply did not start waiting within {PROCESS_TIMEOUT} s")
            time.sleep(0.05)
        return Waiting(process, out, err)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------ tests


def test_apply_exits_0_once_accepted_while_the_caches_build(backend: Backend, repo: Repo) -> None:
    done = apply(backend, repo)

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"applied at {repo.head}; still building: tools (Pending), web (Pending)"
        " (gitsync apply --wait waits until they are Ready)\n"
    )
    assert "Traceback" not in done.stderr
    assert backend.names() == set(CACHES)

    again = apply(backend, repo)  # nothing to change: still 0, and no duplicate

    assert again.returncode == 0, again.stderr
    assert "still building: tools (Pending), web (Pending)" in again.stdout
    assert backend.names() == set(CACHES)


def test_wait_exits_1_at_the_timeout_naming_the_caches(backend: Backend, repo: Repo) -> None:
    done = apply(backend, repo, "--wait", "--timeout", "5s")

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert (
        "gitsync apply: timed out after 5s waiting for tools (Pending), web (Pending)\n"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_wait_exits_0_once_the_caches_are_ready(
    backend: Backend, repo: Repo, start_waiting: StartWaiting
) -> None:
    waiting = start_waiting(backend, repo, "--timeout", "2m")

    backend.make_ready()

    code, out, err = waiting.finish()
    assert code == 0, err
    assert out == f"converged at {repo.head}\n"
    assert f"applied at {repo.head}; waiting up to 2m for tools (Pending), web (Pending)" in err
    assert "  tools: Ready after" in err  # progress, one line per change off a terminal
    assert "Traceback" not in err


def test_wait_exits_1_naming_a_cache_that_failed(
    backend: Backend, repo: Repo, start_waiting: StartWaiting
) -> None:
    waiting = start_waiting(backend, repo, "--timeout", "2m")

    backend.make_failed("tools")

    code, out, err = waiting.finish()
    assert code == 1, out + err
    assert out == ""
    assert (
        "gitsync apply: cache tools is Failed: PullImageFailed: failed to pull busybox:1.36.1\n"
        in err
    )
    assert "cache web" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_ends_the_wait_cleanly(
    backend: Backend, repo: Repo, start_waiting: StartWaiting, signum: signal.Signals, code: int
) -> None:
    waiting = start_waiting(backend, repo, "--timeout", "10m")

    waiting.process.send_signal(signum)

    exit_code, out, err = waiting.finish()
    assert exit_code == code, err
    assert out == ""
    assert err.endswith(
        f"gitsync apply: stopped by {signum.name} while waiting; the provider keeps building"
        " tools (Pending), web (Pending)\n"
    )
    assert "Traceback" not in err
    assert backend.names() == set(CACHES)  # nothing undone on the way out


def test_local_apply_stays_synchronous_a_failed_cache_is_exit_1(tmp_path: Path) -> None:
    """A registry that refuses connections: the local build fails during the pass."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "c.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        "metadata:\n  name: broken\nspec:\n  images: [127.0.0.1:9/nothing/here:v1]\n",
        encoding="utf-8",
    )
    data = tmp_path / "data"
    for extra in ([], ["--wait"]):
        done = subprocess.run(
            [sys.executable, "-m", "gitsync", "apply", "--repo", str(root), "--data-dir",
             str(data), *extra],
            env=base_env(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "gitsync apply: broken: " in done.stderr
        assert "Traceback" not in done.stderr
        assert "converged" not in done.stdout

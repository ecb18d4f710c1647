"""Dependencies failing under `gitsync run`: a faulty registry and TKE API, a git remote
that goes away, a full data disk.

What each test injects and what must hold:

* registry and TKE API behind `FaultProxy` at 30% (5xx, resets before and
  after the upstream did the work, truncated bodies, one 10-second stall),
  plus one image whose manifest always fails: gitsync converges once the faults
  stop, creates no duplicate cloud caches (a reset after a create is the
  ambiguous case), and the requests it makes while faults last are bounded by
  its backoff, never a hot loop;
* the git remote refusing connections: the last applied state stays in force
  and Ready, `gitsync_source_fetch_errors_total` rises and the time since the
  last good fetch passes the GitSyncSourceStale threshold (3 intervals); once
  the remote is back, the commit pushed meanwhile is applied;
* a data disk that fills up during a pull: nothing half-written is ever Ready
  or stored under a digest, no temporary file is left, the failure is recorded
  (Failed, a DiskFull Warning event) and (the daemon's duty) the pass fails
  cleanly.

The daemons poll every second here, so a missing backoff would show at once.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from faultproxy import (
    FAULT_KINDS,
    DaemonProcess,
    FaultProxy,
    GitHttpServer,
    GitRepo,
    Incoming,
    cache_doc,
    caches_by_name,
    converged,
    converged_to,
)
from oci_images import Pusher, random_layer, small_layer
from waiting import wait_until

from gitsync.errors import TemporaryError

FAULT_RATE = 0.3
FAULT_WINDOW = 12.0  # seconds of faults: room for one 10-second stall and some backoff
CLIENT_ATTEMPTS = 5  # RegistryClient.max_attempts and TencentCloudSettings.max_attempts
SEED = 7
TKE_KINDS = ("5xx", "reset", "reset-after")  # its one stall is dealt by a card


def _any(_request: Incoming) -> bool:
    return True


def _tke() -> tuple[ModuleType, ModuleType]:
    """The TKE emulator and its test fixtures; skips when the SDK (extra 'tencent') is missing."""
    pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")
    import tke_emulator  # noqa: PLC0415  # imports the optional SDK
    import tke_fixtures  # noqa: PLC0415

    return tke_emulator, tke_fixtures


def _tke_args(endpoint: str) -> list[str]:
    fixtures = _tke()[1]
    return [
        "--provider", "tencentcloud",
        "--region", fixtures.REGION,
        "--vpc-id", fixtures.VPC_ID,
        "--subnet-id", fixtures.SUBNET_ID,
        "--security-group-id", "sg-gitsync1",
        "--tencentcloud-endpoint", endpoint,
        "--tencentcloud-scheme", "http",
    ]  # fmt: skip


@dataclass
class _Scenario:
    name: str
    daemon: DaemonProcess
    proxy: FaultProxy
    head: str
    desired: dict[str, list[str]]


def _registry_scenario(tmp_path: Path, pusher: Pusher, proxy: FaultProxy) -> tuple[_Scenario, str]:
    desired: dict[str, list[str]] = {}
    repo = GitRepo(tmp_path / "registry-git")
    for i in range(4):
        name = pusher.repo("faulty")
        layers = [random_layer(2**20, seed=name), small_layer(name), small_layer(f"{name}-b")]
        pusher.push_image(name, layers)
        desired[f"cache-{i}"] = [f"{proxy.host}/{name}:v1"]
    broken = pusher.repo("broken")
    pusher.push_image(broken, [small_layer(broken)])
    desired["broken"] = [f"{proxy.host}/{broken}:v1"]
    for name, images in desired.items():
        repo.write(f"{name}.yaml", cache_doc(name, images))
    head = repo.commit("five caches")
    daemon = DaemonProcess(
        args=["--repo", f"file://{repo.remote}", "--interval", "1s"],
        data_dir=tmp_path / "registry-data",
        log_path=tmp_path / "registry-daemon.log",
    )
    return _Scenario("registry", daemon, proxy, head, desired), f"/v2/{broken}/manifests/"


def _tke_scenario(tmp_path: Path, proxy: FaultProxy) -> _Scenario:
    repo = GitRepo(tmp_path / "tke-git")
    desired = {f"api-{i}": [f"nginx:1.27.{i}", f"redis:7.2.{i}"] for i in range(4)}
    for name, images in desired.items():
        repo.write(f"{name}.yaml", cache_doc(name, images))
    head = repo.commit("four cloud caches")
    daemon = DaemonProcess(
        args=["--repo", f"file://{repo.remote}", "--interval", "1s", *_tke_args(proxy.host)],
        data_dir=tmp_path / "tke-data",
        log_path=tmp_path / "tke-daemon.log",
        env={
            "TENCENTCLOUD_SECRET_ID": _tke()[1].SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": _tke()[1].SECRET_KEY,
        },
    )
    return _Scenario("tke", daemon, proxy, head, desired)


@pytest.mark.timeout(150)
def test_registry_and_tke_api_at_30_percent_faults_converge_without_hot_loops(
    tmp_path: Path, pusher: Pusher
) -> None:
    emulators, fixtures = _tke()
    emulator = emulators.TkeEmulator(
        secret_id=fixtures.SECRET_ID, secret_key=fixtures.SECRET_KEY, ready_after=0.2
    )
    with (
        emulator,
        FaultProxy(pusher.registry.host, seed=SEED) as registry_proxy,
        FaultProxy(emulator.endpoint, seed=SEED + 1, upstream_timeout=30) as tke_proxy,
    ):
        registry, broken_path = _registry_scenario(tmp_path, pusher, registry_proxy)
        tke = _tke_scenario(tmp_path, tke_proxy)
        scenarios = (registry, tke)
        # Cards make sure that every kind happens at least once in the short window, the
        # one 10-second stall of each proxy included; the 30% random faults come on top.
        registry_proxy.inject(
            rate=FAULT_RATE,
            first=[
                ("stall", _any),
                ("truncate", lambda r: "/blobs/" in r.path),
                ("5xx", _any),
                ("reset", _any),
                ("reset-after", _any),
            ],
            max_stalls=1,
        )
        # Truncated TKE answers have their own test below; the API gets the other kinds
        # here, the registry gets all of them.
        tke_proxy.inject(
            rate=FAULT_RATE,
            kinds=TKE_KINDS,
            first=[
                ("5xx", lambda r: r.action() == "DescribeImageCaches"),
                # The ambiguous failure: the cache is created, the answer is lost.
                ("reset-after", lambda r: r.action() == "CreateImageCache"),
                ("reset", _any),
                # Later, so that the API sees traffic before and after it.
                ("stall", lambda r: r.index >= 8 and r.action() == "DescribeImageCaches"),
            ],
            max_stalls=1,
        )
        registry_proxy.fail_paths(broken_path)
        try:
            started = time.monotonic()
            for s in scenarios:
                s.daemon.start()
            for s in scenarios:
                s.daemon.wait_listening()
            time.sleep(max(0.0, FAULT_WINDOW - (time.monotonic() - started)))
            during = {s.name: s.proxy.since(0) for s in scenarios}
            for s in scenarios:
                s.proxy.heal()
            healed = time.monotonic()
            for s in scenarios:
                status = s.daemon.wait_for(
                    f"the {s.name} caches to converge after the faults",
                    converged_to(s.head, s.desired),
                    timeout=60,
                )
                assert sorted(caches_by_name(status)) == sorted(s.desired)
            recovery = time.monotonic() - healed
        finally:
            for s in scenarios:
                s.daemon.close()

        faults = {s.name: Counter(r.fault for r in during[s.name] if r.fault) for s in scenarios}
        for s in scenarios:
            print(
                f"{s.name}: {len(during[s.name])} requests in {FAULT_WINDOW:.0f} s of faults"
                f" {dict(faults[s.name])}; {s.proxy.count()} in all; converged {recovery:.1f} s"
                " after the faults stopped"
            )
        for name, kinds in (("registry", FAULT_KINDS), ("tke", (*TKE_KINDS, "stall"))):
            assert faults[name]["stall"] == 1, faults[name]  # the 10-second stall happened
            assert all(faults[name][kind] >= 1 for kind in kinds), faults[name]
            random_faults = sum(faults[name].values()) - len(kinds)  # less the cards
            print(f"{name}: {random_faults} random faults besides one card of each kind")

        # No hot loop on a registry path that fails every time: each pass that tries the
        # broken image makes at most CLIENT_ATTEMPTS requests, and the per-cache backoff
        # (at least 5 s after the first failure, doubling) allows 2 passes in the window.
        broken = [r for r in during["registry"] if r.fault == "5xx-path"]
        assert 1 <= len(broken) <= 2 * CLIENT_ATTEMPTS, len(broken)
        # Everything else the registry saw: 4 caches x 5 requests, each retried at most
        # CLIENT_ATTEMPTS times, and no second build of a cache that already succeeded.
        assert len(during["registry"]) - len(broken) <= 4 * 5 * CLIENT_ATTEMPTS

        # The TKE API: one DescribeImageCaches per pass (1 per second) with retries, and
        # one create per cache plus its retries and the look-up after an ambiguous failure.
        tke_calls = len(during["tke"])
        passes_bound = FAULT_WINDOW / 1.0 + 2
        assert tke_calls <= passes_bound * CLIENT_ATTEMPTS + 4 * 3 * CLIENT_ATTEMPTS, tke_calls
        names = Counter(c["ImageCacheName"] for c in emulator.caches())
        assert names == Counter(dict.fromkeys(tke.desired, 1)), f"duplicates: {names}"


def test_a_truncated_tke_answer_is_a_temporary_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        _tke()[1].running_emulator(monkeypatch) as emulator,
        FaultProxy(emulator.endpoint, seed=SEED) as proxy,
    ):
        provider = _tke()[1].provider_for(emulator, endpoint=proxy.host)
        proxy.inject(rate=1.0, kinds=("truncate",))
        try:
            with pytest.raises(TemporaryError, match="DescribeImageCaches"):
                provider.observe()
        finally:
            provider.close()
        assert proxy.faults()["truncate"] >= 1


def test_git_remote_unreachable_keeps_the_last_state_and_goes_stale(
    tmp_path: Path, pusher: Pusher
) -> None:
    images = []
    for _ in range(2):
        name = pusher.repo("git-outage")
        pusher.push_image(name, [small_layer(name)])
        images.append(f"{pusher.registry.host}/{name}:v1")
    repo = GitRepo(tmp_path / "git")
    repo.write("caches.yaml", cache_doc("kept", [images[0]]))
    first = repo.commit("one cache")
    with (
        GitHttpServer(repo.root) as server,
        FaultProxy(server.host, seed=SEED) as proxy,
    ):
        daemon = DaemonProcess(
            args=["--repo", f"http://{proxy.host}/remote.git", "--interval", "1s"],
            data_dir=tmp_path / "data",
            log_path=tmp_path / "daemon.log",
        )

        def stale() -> tuple[bool, dict[str, float]]:
            """GitSyncSourceStale's condition, from a scrape: no good fetch for 3 intervals."""
            m = daemon.metrics()
            age = time.time() - m["gitsync_source_last_fetch_success_timestamp_seconds"]
            return age > 3 * m["gitsync_source_interval_seconds"], m

        try:
            daemon.start()
            before = daemon.wait_for(
                "the first revision", lambda s: converged(s, first, {"kept": [images[0]]})
            )
            # A few more passes: fetches keep succeeding.
            fetches = daemon.metrics()["gitsync_source_fetch_duration_seconds_count"]
            wait_until(
                lambda: (
                    daemon.metrics()["gitsync_source_fetch_duration_seconds_count"] >= fetches + 2
                ),
                timeout=30,
                what="two more fetches",
                detail=daemon.tail,
            )
            fresh, metrics = stale()
            assert not fresh
            errors_before = metrics["gitsync_source_fetch_errors_total"]

            proxy.refuse()
            down = time.monotonic()
            repo.write("added.yaml", cache_doc("added", [images[1]]))
            second = repo.commit("a commit the daemon cannot see yet")
            deadline = time.monotonic() + 30
            while True:
                fired, metrics = stale()
                errors = metrics["gitsync_source_fetch_errors_total"] - errors_before
                if fired and errors >= 2:
                    break
                assert time.monotonic() < deadline, f"not stale after 30 s ({errors} errors)"
                time.sleep(0.2)
            during = daemon.status()
            assert during["appliedRevision"] == first
            assert during["caches"] == before["caches"]  # in force, untouched, still Ready
            assert daemon.get("/readyz").status_code == 200  # the last good state serves
            assert daemon.get("/healthz").status_code == 200
            outage = time.monotonic() - down

            proxy.refuse(False)
            daemon.wait_for(
                "the commit pushed meanwhile",
                lambda s: converged(s, second, {"kept": [images[0]], "added": [images[1]]}),
            )
            assert not stale()[0]  # the alert resolves
            refused = Counter(r.fault for r in proxy.since(0))["refused"]
            print(
                f"remote down {outage:.1f} s: {refused} connections refused,"
                f" {errors:.0f} fetch errors; the commit pushed meanwhile applied on recovery"
            )
        finally:
            daemon.close()


# ------------------------------------------------------------------ full disk


class _SmallDisk:
    """A data dir that holds `size` bytes: a tmpfs if we may mount one, else RLIMIT_FSIZE.

    A tmpfs gives the real ENOSPC of a full disk. Without mount rights, the
    daemon runs under `prlimit --fsize` instead, so a write past `size` fails
    with EFBIG (Python ignores SIGXFSZ): not the same errno, the same situation
    for the code that writes. `grow()` frees the disk: a remount, or the limit
    lifted on the running daemon (prlimit execs it, so the pid is the daemon's).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        path.mkdir(parents=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "gitsync-test", str(path)],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0
        if not self.mounted and shutil.which("prlimit") is None:
            pytest.skip("needs mount rights (a tmpfs) or util-linux's prlimit to fill a disk")
        self.pid: int | None = None
        self.full = True

    def wrapper(self) -> list[str]:
        if self.mounted or not self.full:
            return []
        return ["prlimit", f"--fsize={self.size}:unlimited", "--"]

    def grow(self) -> None:
        self.full = False
        if self.mounted:
            subprocess.run(
                ["mount", "-o", "remount,size=256m", str(self.path)], check=True, timeout=10
            )
        elif self.pid is not None:
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            with contextlib.suppress(ProcessLookupError):  # a daemon that died stays dead
                resource.prlimit(self.pid, resource.RLIMIT_FSIZE, unlimited)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, timeout=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[_SmallDisk]:
    disk = _SmallDisk(tmp_path / "data", 3 * 2**20)
    try:
        yield disk
    finally:
        disk.close()


def _full_disk_daemon(
    tmp_path: Path, pusher: Pusher, disk: _SmallDisk
) -> tuple[DaemonProcess, str, dict[str, list[str]], str]:
    small, big = pusher.repo("fits"), pusher.repo("too-big")
    pusher.push_image(small, [small_layer(small)])
    big_image = pusher.push_image(big, [random_layer(5 * 2**20, seed=big)])
    desired = {
        "fits": [f"{pusher.registry.host}/{small}:v1"],
        "too-big": [f"{pusher.registry.host}/{big}:v1"],
    }
    repo = GitRepo(tmp_path / "git")
    for name, images in desired.items():
        repo.write(f"{name}.yaml", cache_doc(name, images))
    head = repo.commit("one cache fits the disk, one does not")
    daemon = DaemonProcess(
        args=["--repo", f"file://{repo.remote}", "--interval", "1s"],
        data_dir=disk.path,
        log_path=tmp_path / "daemon.log",
    )
    return daemon, head, desired, big_image.layers[0].digest


def _start_limited(daemon: DaemonProcess, disk: _SmallDisk) -> None:
    daemon.wrapper = disk.wrapper()
    daemon.start()
    assert daemon.process is not None
    disk.pid = daemon.process.pid


def _state(data: Path) -> dict[str, str]:
    """Cache statuses by name, read from the state database; {} until the daemon made it.

    The daemon creates state.db and then its tables, so a read in between finds the
    file but no table yet: that is "no caches yet", not an error.
    """
    if not (data / "state.db").exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True)) as db:
        try:
            return dict(db.execute("SELECT name, status FROM caches").fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise


def _passes_ended(daemon: DaemonProcess) -> float:
    m = daemon.metrics()
    return (
        m['gitsync_reconciles_total{result="success"}']
        + m['gitsync_reconciles_total{result="error"}']
    )


def test_a_full_disk_never_leaves_a_half_written_cache_ready(
    tmp_path: Path, pusher: Pusher, small_disk: _SmallDisk
) -> None:
    """too-big is never Ready, nothing of it is stored, and no temporary file is left.

    fits may fail once or twice while too-big's pull holds the disk full (see the
    next test); the deadline for the verdict allows for its backoffs.
    """
    daemon, head, desired, big_layer = _full_disk_daemon(tmp_path, pusher, small_disk)
    try:
        _start_limited(daemon, small_disk)

        def verdict() -> dict[str, str] | None:
            states = _state(small_disk.path)
            settled = states.get("too-big") not in ("Pending", "Updating")
            if (
                states.get("fits") == "Ready"
                and "too-big" in states
                and (settled or not daemon.alive())
            ):
                return states
            return None

        wait_until(
            verdict,
            timeout=45,
            what="fits Ready and a verdict on too-big (or the daemon gone)",
            detail=daemon.tail,
        )
        if daemon.alive():  # a few more passes must not change the verdict
            ended = _passes_ended(daemon)
            wait_until(
                lambda: not daemon.alive() or _passes_ended(daemon) >= ended + 2,
                timeout=30,
                what="two more passes on the full disk",
                detail=daemon.tail,
            )
        states = _state(small_disk.path)
        print(f"after the disk filled: {states}; daemon alive: {daemon.alive()}")
        assert states.get("too-big") != "Ready"
        blob = small_disk.path / "store" / "blobs" / "sha256" / big_layer.removeprefix("sha256:")
        assert not blob.exists(), "a layer that did not fit is stored under its digest"
        temp = list((small_disk.path / "store").glob("blobs/*/.tmp-*"))
        assert temp == [], f"the failed write left {temp}"
        daemon.kill()

        small_disk.grow()
        _start_limited(daemon, small_disk)
        daemon.wait_for("both caches once the disk has room", lambda s: converged(s, head, desired))
    finally:
        daemon.close()


def test_a_full_disk_fails_the_pass_cleanly_and_the_daemon_keeps_serving(
    tmp_path: Path, pusher: Pusher, small_disk: _SmallDisk
) -> None:
    """too-big fails (Failed, a Warning event) while fits is Ready and the daemon serves.

    Both caches are created in the first pass and pulled at the same time, so
    until too-big's write runs out of space and removes its temporary file, the
    disk is full for fits too: a write of fits that lands in that moment (a
    blob, or one of its pull's state transactions, of which the lease
    bookkeeping added several) fails with DiskFull as well, and fits is Failed
    until its retry after the backoff. That is right for a full disk, so the
    test waits for the moment too-big is Failed *and* fits is Ready, instead of
    assuming that fits won the race in the first pass. The deadline allows for
    fits losing it twice (backoff 5-10 s, then 10-20 s).
    """
    daemon, head, desired, _ = _full_disk_daemon(tmp_path, pusher, small_disk)
    try:
        _start_limited(daemon, small_disk)

        def failed_and_serving(status: dict[str, Any]) -> bool:
            caches = caches_by_name(status)
            return (
                caches.get("too-big", {}).get("status") == "Failed"
                and caches.get("fits", {}).get("status") == "Ready"
            )

        status = daemon.wait_for(
            "the cache that does not fit to fail while the one that fits is Ready",
            failed_and_serving,
            timeout=45,
        )
        events = caches_by_name(status)["too-big"]["events"]
        # ENOSPC on the tmpfs; EFBIG (a failed write, not a full disk) under prlimit.
        reason = "DiskFull" if small_disk.mounted else "DiskWriteFailed"
        assert any(e["type"] == "Warning" and e["reason"] == reason for e in events), events
        assert caches_by_name(status)["fits"]["status"] == "Ready"
        assert daemon.metrics()['gitsync_reconciles_total{result="error"}'] >= 1
        assert daemon.get("/healthz").status_code == 200

        small_disk.grow()
        daemon.wait_for(
            "both caches once the disk has room",
            lambda s: converged(s, head, desired),
            timeout=40,  # the failed cache backs off 5-10 s first
        )
    finally:
        daemon.close()

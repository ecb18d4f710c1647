"""`gitsync run` killed with SIGKILL at 20 random moments, and what must hold after each.

The daemon runs on the local backend against the real registry, through a
throttled `FaultProxy` (no faults, only a bandwidth cap) so that pulls of
multi-MiB layers last long enough to be interrupted. Each round commits a
random change (add caches, change their images or size, delete one), starts
the daemon so its first pass applies the change, kills the whole process
session (daemon and git children, like a pod killed by the OOM killer) after a
seeded random delay, restarts it, and checks:

* the state converges to Git (status JSON of the restarted daemon);
* no cache name appears twice, in the status or in state.db;
* `PRAGMA integrity_check` is ok and no snapshot outlives its cache;
* after `gitsync gc` with its defaults (daemon stopped), the blob files are
  exactly the digests the snapshots reference, each one hashing to its name;
  the leases a killed daemon left are dropped at once (its lease locks died with
  it), with the temporary files of its interrupted writes, so none is left.

The RNG is seeded, so a failing round can be replayed; the round log printed
at the end says where each kill landed.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultproxy import (
    DaemonProcess,
    FaultProxy,
    GitRepo,
    cache_doc,
    caches_by_name,
    converged,
    converged_to,
    gitsync,
)
from oci_images import Pusher, random_layer, small_layer

ROUNDS = 20
SEED = 20261122
LAYER_MIB = (2, 3, 4)  # several MiB of incompressible data per image
THROTTLE = 12 * 2**20  # bytes/s per connection: a 3 MiB layer takes about 0.25 s
FIRST_KILL_WINDOW = 1.4  # seconds after the daemon listens (its first pass runs then)


def _push_images(pusher: Pusher, rng: random.Random, proxy: FaultProxy) -> list[str]:
    """Ten images of one big random layer and one small one, named through the proxy."""
    images: list[str] = []
    for n in range(5):
        repo = pusher.repo("crash")
        for tag in ("v1", "v2"):
            size = rng.choice(LAYER_MIB) * 2**20
            layers = [random_layer(size, seed=f"{repo}-{tag}"), small_layer(f"{repo}-{tag}-{n}")]
            pusher.push_image(repo, layers, tag=tag)
            images.append(f"{proxy.host}/{repo}:{tag}")
    return images


def _mutate(rng: random.Random, desired: dict[str, list[str]], images: list[str], n: int) -> str:
    """One or two random changes to the desired caches; returns what was done."""
    done: list[str] = []
    for _ in range(rng.choice((1, 2))):
        ops = ["add", "change"]
        if len(desired) >= 3 and not any(d.startswith("delete") for d in done):
            ops.append("delete")  # one of three or more stays within --max-delete-ratio
        if len(desired) < 2:
            ops = ["add"]
        op = rng.choice(ops)
        if op == "add":
            name = f"cache-{n}-{len(done)}"
            desired[name] = rng.sample(images, rng.choice((1, 2)))
        elif op == "change":
            name = rng.choice(sorted(desired))
            old = desired[name]
            desired[name] = rng.sample([i for i in images if i not in old], rng.choice((1, 2)))
        else:
            name = rng.choice(sorted(desired))
            del desired[name]
        done.append(f"{op} {name}")
    return ", ".join(done)


def _write(repo: GitRepo, desired: dict[str, list[str]]) -> None:
    for path in (repo.work / "caches").glob("*.yaml"):
        path.unlink()
    for name, images in desired.items():
        repo.write(f"caches/{name}.yaml", cache_doc(name, images))


def _temp_files(data: Path) -> set[Path]:
    return set((data / "store").glob("blobs/*/.tmp-*"))


def _where_killed(data: Path, head: str, temp_before: set[Path]) -> str:
    """Where the kill landed, from what it left behind."""
    temp = _temp_files(data) - temp_before
    building = 0
    if (data / "state.db").exists():
        with sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True) as db:
            building = db.execute(
                "SELECT COUNT(*) FROM caches WHERE status IN ('Pending', 'Updating')"
            ).fetchone()[0]
    record: dict[str, Any] = {}
    if (data / "controller.json").exists():
        record = json.loads((data / "controller.json").read_text())
    if temp:
        return "mid-blob-write"
    if building:
        return "mid-build"
    if record.get("applied_revision") == head:
        return "after-pass"
    return "before-build"


def _check_store(data: Path) -> int:
    """integrity_check, uniqueness, blobs == referenced digests, no leases; returns the blobs.

    Run after `gitsync gc` with the daemon stopped: no lease is live then, so gc must
    have dropped every lease a kill left, and every temporary file of those writes.
    """
    with sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        duplicates = db.execute(
            "SELECT name, COUNT(*) FROM caches GROUP BY name HAVING COUNT(*) > 1"
        ).fetchall()
        assert duplicates == [], f"duplicate caches in state.db: {duplicates}"
        orphans = db.execute(
            "SELECT id FROM snapshots WHERE id NOT IN"
            " (SELECT snapshot_id FROM caches WHERE snapshot_id IS NOT NULL)"
        ).fetchall()
        assert orphans == [], f"snapshots without a cache keep blobs forever: {orphans}"
        referenced = {row[0] for row in db.execute("SELECT DISTINCT digest FROM snapshot_blobs")}
        leases = db.execute("SELECT id, purpose, owner FROM leases").fetchall()
        assert leases == [], f"gc left leases of stopped processes: {leases}"
    blobs_dir = data / "store" / "blobs" / "sha256"
    present = {f"sha256:{p.name}" for p in blobs_dir.iterdir() if not p.name.startswith(".tmp-")}
    assert present - referenced == set(), "gc left blobs that no snapshot references"
    assert referenced - present == set(), "blobs that a snapshot references are missing"
    for digest in referenced:
        content = (blobs_dir / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(content).hexdigest() == digest, f"{digest} is torn"
    temp = sorted(p.name for p in (data / "store").glob("*/*/.tmp-*"))
    assert temp == [], f"gc left temporary files of killed writes: {temp}"
    locks = (
        sorted(p.name for p in (data / "leases").iterdir()) if (data / "leases").is_dir() else []
    )
    assert locks == [], f"lease lock files outlived their leases: {locks}"
    return len(present)


@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_never_corrupts_or_duplicates(
    tmp_path: Path, pusher: Pusher
) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    with FaultProxy(pusher.registry.host, seed=SEED) as proxy:
        proxy.throttle(THROTTLE)
        images = _push_images(pusher, rng, proxy)
        repo = GitRepo(tmp_path / "git")
        data = tmp_path / "data"
        desired: dict[str, list[str]] = {"base": [images[0]], "tools": [images[1]]}
        _write(repo, desired)
        head = first = repo.commit("two caches")
        daemon = DaemonProcess(
            args=["--repo", f"file://{repo.remote}", "--interval", "2s"],
            data_dir=data,
            log_path=tmp_path / "daemon.log",
        )
        landed: Counter[str] = Counter()
        window = FIRST_KILL_WINDOW
        log: list[str] = []
        try:
            daemon.start()
            daemon.wait_for("the first two caches", lambda s: converged(s, first, desired))
            assert daemon.stop() == 0
            for n in range(ROUNDS):
                change = _mutate(rng, desired, images, n)
                _write(repo, desired)
                head = repo.commit(f"round {n}: {change}")
                temp_before = _temp_files(data)
                daemon.start()
                daemon.wait_listening()
                delay = rng.uniform(0, window)
                time.sleep(delay)
                daemon.kill()
                where = _where_killed(data, head, temp_before)
                landed[where] += 1

                daemon.start()
                daemon.wait_listening()
                restarted = time.monotonic()
                status = daemon.wait_for(
                    f"round {n} ({change}) to converge",
                    converged_to(head, desired),
                )
                # Kill within about one pass: how long the restart's pass took, smoothed.
                window = 0.5 * window + 0.5 * 1.2 * (time.monotonic() - restarted)
                names = Counter(c["name"] for c in status["caches"])
                assert max(names.values()) == 1, f"duplicate caches: {names}"
                assert daemon.stop() == 0, daemon.tail()

                temp_left = len(_temp_files(data))
                gc = gitsync("gc", "--data-dir", str(data))
                assert gc.returncode == 0, gc.stderr
                blobs = _check_store(data)
                log.append(
                    f"round {n:2d}: {change:<40} killed after {delay:4.2f} s: {where:<15}"
                    f" blobs {blobs:3d}; gc: {gc.stdout.strip()} ({temp_left} temp files before)"
                )
            cli = gitsync("status", "--format", "json", "--data-dir", str(data))
            assert cli.returncode == 0, cli.stderr
            final = json.loads(cli.stdout)
            assert final["appliedRevision"] == head
            assert {n: c["images"] for n, c in caches_by_name(final).items()} == desired
        finally:
            daemon.close()
            print("\n".join(log))
            print(
                f"kills: {dict(landed)}; daemon starts: {daemon.starts};"
                f" proxied requests: {proxy.count()}; {time.monotonic() - started:.1f} s in all"
            )
    # The rounds must really have hit pulls, or this test proves nothing.
    assert landed["mid-blob-write"] + landed["mid-build"] >= ROUNDS // 4, landed

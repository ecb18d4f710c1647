"""Benchmark: API calls and wall time of a reconcile pass over 1,000 Tencent Cloud caches.

The TKE API is rate-limited per action (20 calls/s for DescribeImageCaches) and
every call is a signed round trip to the region's endpoint, so what a pass
costs is counted in calls first and seconds second. This drives a real
`Reconciler` with the real `TencentCloudProvider` (production retry and batch
settings) through the real SDK against the TKE emulator (tests/tke_emulator.py),
which checks every TC3-HMAC-SHA256 signature and counts every call.

Each round plants N owned, Ready caches in a fresh emulator, writes N matching
ImageCache files, and runs, each pass a new revision:

* no change, cold: a fresh Reconciler, as one `gitsync apply` process runs it
  (parses N files, plans N caches);
* no change, warm: the same Reconciler again, as the daemon runs after a commit
  that changed no cache (files and no-op plans are remembered);
* 10 changes: 4 updates, 3 creates and 3 deletes in one commit.

Target (issue 8): a no-change pass = N/50 describe calls (20 for 1,000) and
nothing else. A pass with changes costs the describes before planning, one
call per change (concurrent deletes share one DeleteImageCaches), and the
describes after applying that report the new state.

The emulator answers in well under a millisecond, so loopback times measure
gitsync and the SDK; `--latency` (default 50 ms, an assumed round trip to a
region's endpoint, not a measurement) repeats the passes with that delay on
every answer, which shows what the calls cost on a real network.

    python bench/tke.py [--caches 1000] [--rounds 3] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tke_emulator import TkeEmulator

from gitsync.controller_record import RecordFile
from gitsync.model import CacheSpec, ObservedCache, ObservedState
from gitsync.pricing import PriceTable
from gitsync.providers.tencentcloud import (
    OWNER_TAG,
    PAGE_SIZE,
    PRUNE_TAG,
    PULL_SECRETS_TAG,
    TencentCloudCredentials,
    TencentCloudProvider,
    TencentCloudSettings,
)
from gitsync.reconciler import ReconcilePolicy, Reconciler

# Throwaway credentials that only the emulator in this process checks.
SECRET_ID = "AKIDbenchSecretId0000000000001"  # noqa: S105  # not a real secret (above)
SECRET_KEY = "benchSecretKey00000000000000001"  # noqa: S105  # not a real secret (above)
REGION = "ap-guangzhou"
OWNED = {OWNER_TAG: "gitsync", PRUNE_TAG: "enabled", PULL_SECRETS_TAG: "-"}
IMAGE = "busybox:1.36.1"
UPDATES, CREATES, DELETES = 4, 3, 3
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
DOC = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: {name}
spec:
  images:
    - {image}
"""


@dataclass(frozen=True, slots=True)
class PassFigures:
    calls: dict[str, int]
    seconds: float
    observe_seconds: float  # of `seconds`, in provider.observe (the describes)
    error: str | None
    converged: bool


class TimedProvider:
    """Delegates to the TKE provider and adds up the time spent observing."""

    name = "tencentcloud"

    def __init__(self, inner: TencentCloudProvider) -> None:
        self.inner = inner
        self.observe_seconds = 0.0

    def observe(self) -> ObservedState:
        started = time.perf_counter()
        try:
            return self.inner.observe()
        finally:
            self.observe_seconds += time.perf_counter() - started

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        return self.inner.create(spec, owner=owner)

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        return self.inner.update(spec, current)

    def delete(self, current: ObservedCache) -> None:
        self.inner.delete(current)

    def close(self) -> None:
        self.inner.close()


def name_of(i: int) -> str:
    return f"c{i:04d}"


def write(tree: Path, name: str, image: str) -> None:
    (tree / f"{name}.yaml").write_text(DOC.format(name=name, image=image), encoding="utf-8")


def provider_for(emulator: TkeEmulator) -> TimedProvider:
    """The provider with its production defaults (retries, timeouts, delete batching)."""
    return TimedProvider(
        TencentCloudProvider(
            settings=TencentCloudSettings(
                region=REGION,
                endpoint=emulator.endpoint,
                scheme="http",
                vpc_id="vpc-bench",
                subnet_id="subnet-bench",
            ),
            credentials=TencentCloudCredentials(secret_id=SECRET_ID, secret_key=SECRET_KEY),
        )
    )


def reconciler_for(provider: TimedProvider, data: Path) -> Reconciler:
    return Reconciler(
        provider=provider,
        records=RecordFile(data),
        policy=ReconcilePolicy(),
        prices=PriceTable(),
        rng=random.Random(1),  # noqa: S311  # seeded backoff jitter, nothing cryptographic
    )


def timed_pass(
    reconciler: Reconciler,
    provider: TimedProvider,
    emulator: TkeEmulator,
    *,
    tree: Path,
    revision: str,
) -> PassFigures:
    emulator.reset_calls()
    provider.observe_seconds = 0.0
    started = time.perf_counter()
    result = reconciler.reconcile(tree=tree, revision=revision)
    seconds = time.perf_counter() - started
    return PassFigures(
        calls=dict(sorted(emulator.counts().items())),
        seconds=seconds,
        observe_seconds=provider.observe_seconds,
        error=result.error,
        converged=result.converged,
    )


def one_round(*, caches: int, latency: float, root: Path) -> dict[str, PassFigures]:
    tree = root / "repo"
    tree.mkdir(parents=True)
    # ready_after: changed caches stay Pending/Updating while the pass reads them back.
    with TkeEmulator(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, region=REGION, ready_after=60.0
    ) as emulator:
        for i in range(caches):
            emulator.add_cache(name_of(i), [IMAGE], tags=OWNED)
            write(tree, name_of(i), IMAGE)
        if latency > 0:
            emulator.slow(latency, times=sys.maxsize)  # every answer, from now on
        provider = provider_for(emulator)
        try:
            figures: dict[str, PassFigures] = {}
            reconciler = reconciler_for(provider, root / "data")
            figures["no change, cold"] = timed_pass(
                reconciler, provider, emulator, tree=tree, revision="1" * 40
            )
            figures["no change, warm"] = timed_pass(
                reconciler, provider, emulator, tree=tree, revision="2" * 40
            )
            for i in range(UPDATES):
                write(tree, name_of(i), "busybox:1.36.2")
            for i in range(CREATES):
                write(tree, f"new{i}", IMAGE)
            for i in range(DELETES):
                (tree / f"{name_of(10 + i)}.yaml").unlink()
            figures["10 changes"] = timed_pass(
                reconciler, provider, emulator, tree=tree, revision="3" * 40
            )
        finally:
            provider.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caches", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="seconds added to every API answer in a second series (0: loopback only)",
    )
    args = parser.parse_args()
    for name in PROXY_VARIABLES:
        os.environ.pop(name, None)  # the SDK reads these; nothing may sit before 127.0.0.1

    expected_pages = max(1, -(-args.caches // PAGE_SIZE))
    series = [("loopback", 0.0)]
    if args.latency > 0:
        series.append((f"+{args.latency * 1000:.0f} ms per answer", args.latency))
    met = True
    for label, latency in series:
        print(f"== {args.caches} caches, {label}, {args.rounds} rounds", flush=True)
        rounds: list[dict[str, PassFigures]] = []
        for n in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="gitsync-bench-tke-") as tmp:
                rounds.append(one_round(caches=args.caches, latency=latency, root=Path(tmp)))
            print(
                f"  round {n + 1}: "
                + ", ".join(f"{k} {v.seconds:.2f} s" for k, v in rounds[-1].items()),
                flush=True,
            )
        for kind in rounds[0]:
            passes = [r[kind] for r in rounds]
            calls = passes[0].calls
            same = all(p.calls == calls for p in passes)
            wall = statistics.median(p.seconds for p in passes)
            observing = statistics.median(p.observe_seconds for p in passes)
            total = sum(calls.values())
            print(f"  {kind:<16} calls {total:>3}: {_calls(calls)}")
            if not same:
                # Concurrent deletes share a DeleteImageCaches call only when they arrive
                # within the batch window of each other; with slow answers some do not.
                for n, p in enumerate(passes, start=1):
                    print(f"  {'':<16} round {n}: {sum(p.calls.values())}: {_calls(p.calls)}")
            print(
                f"  {'':<16} wall median {wall:.3f} s, of which observing {observing:.3f} s"
                f" (all: {', '.join(f'{p.seconds:.3f}' for p in passes)})"
            )
            errors = {p.error for p in passes if p.error}
            if errors:
                print(f"  {'':<16} ERROR: {'; '.join(sorted(errors))}")
            if kind.startswith("no change"):
                ok = all(
                    p.calls == {"DescribeImageCaches": expected_pages} and p.converged
                    for p in passes
                )
                met = met and ok
            else:
                changes = UPDATES + CREATES + DELETES
                for p in passes:
                    describes = p.calls.get("DescribeImageCaches", 0)
                    writes = sum(p.calls.values()) - describes
                    met = met and writes <= changes and describes == 2 * expected_pages
                batches = sorted({p.calls.get("DeleteImageCaches", 0) for p in passes})
                print(
                    f"  {'':<16} write calls per change <= 1 ({DELETES} deletes in"
                    f" {' or '.join(map(str, batches))} DeleteImageCaches call(s)); describes ="
                    f" {expected_pages} before planning + {expected_pages} after applying"
                )
                met = met and not errors
        print()
    print(
        f"target: a no-change pass = {expected_pages} DescribeImageCaches calls and nothing"
        f" else; a pass with changes adds at most one call per change: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


def _calls(calls: dict[str, int]) -> str:
    return ", ".join(f"{action} {n}" for action, n in Counter(calls).most_common())


if __name__ == "__main__":
    raise SystemExit(main())

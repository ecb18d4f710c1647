"""Kubernetes backend figures against kmock's emulator (tests/integration/kube_fixtures.py).

Prints:
- API requests per reconcile pass at 1,000 caches with no change (target: at most one list
  per resource type per pass; pages of one list count as that one list);
- pod-observer memory after 10,000 / 50,000 / 100,000 pod watch events delivered over a real
  watch stream (target: flat).

Run: python bench/k8s.py
"""

from __future__ import annotations

import copy
import gc
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from kube_fixtures import HistoryEntry, KubeServer, Stored, _leaf_paths  # noqa: E402

from gitsync.controller_record import RecordFile  # noqa: E402
from gitsync.model import CacheSpec  # noqa: E402
from gitsync.observers.kubernetes import (  # noqa: E402
    USE_IMAGE_CACHE_ANNOTATION,
    PodLookupTracker,
    PodObserver,
)
from gitsync.pricing import PriceTable  # noqa: E402
from gitsync.providers.kubernetes import GROUP, KubernetesProvider, manifest  # noqa: E402
from gitsync.reconciler import ReconcilePolicy, Reconciler  # noqa: E402

CACHES = 1_000
POD_EVENTS = 100_000


def seed(kube: KubeServer, specs: list[CacheSpec], *, owner: str) -> None:
    """Put the caches in the emulator's store as gitsync would have applied them.

    Straight into the store rather than through 2,000 HTTP requests: kmock checks each request
    against its whole request log, so its cost per request grows with the log, which would
    measure kmock rather than gitsync.
    """
    with kube.api.lock:
        for spec in specs:
            obj = manifest(spec, owner=owner)
            obj["metadata"].update(
                uid=str(uuid.uuid4()), creationTimestamp="2026-11-22T03:00:00Z", generation=1
            )
            stored = Stored(obj, {("gitsync", "Apply", ""): _leaf_paths(obj)})
            stored.obj["metadata"]["resourceVersion"] = str(kube.api._next_rv())
            kube.api.objects[(GROUP, "imagecaches", None, spec.name)] = stored


def reconcile_figures() -> None:
    with KubeServer() as kube, tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        specs = []
        for index in range(CACHES):
            name, image = f"c{index:04d}", f"nginx:1.27.{index % 50}"
            specs.append(CacheSpec(name=name, images=(image,)))
            (repo / f"{name}.yaml").write_text(
                "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
                f"metadata:\n  name: {name}\nspec:\n  images: [{image}]\n",
                encoding="utf-8",
            )
        seed(kube, specs, owner="bench")
        client = kube.client()
        provider = KubernetesProvider(api_client=client)
        loop = Reconciler(
            provider=provider,
            records=RecordFile(Path(tmp) / "data"),
            policy=ReconcilePolicy(controller_id="bench", max_workers=8),
            prices=PriceTable(),
        )
        for attempt in (1, 2, 3):
            mark = kube.mark()
            started = time.perf_counter()
            again = loop.reconcile(tree=repo, revision="r1")
            elapsed = time.perf_counter() - started
            assert again.error is None, again.error
            assert again.plan is not None
            assert not again.plan.has_changes
            requests = kube.requests_since(mark)
            kinds = Counter(
                f"{r.method.value} {r.resource.plural if r.resource else r.url.path}"
                f"{' (continue)' if 'continue' in r.params else ''}"
                for r in requests
            )
            print(
                f"pass {attempt} over {CACHES:,} unchanged caches: {len(requests)} API requests"
                f" in {elapsed:.2f} s: " + ", ".join(f"{n}x {k}" for k, n in sorted(kinds.items())),
                flush=True,
            )
        client.close()


def pod_objects(index: int, created: datetime) -> list[tuple[str, dict]]:
    uid = f"uid-{index}"
    meta = {
        "name": f"web-{index}",
        "namespace": "apps",
        "uid": uid,
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "annotations": {USE_IMAGE_CACHE_ANNOTATION: "auto"},
    }
    pending = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": "Pending"}}
    ready = copy.deepcopy(pending)
    ready["status"] = {
        "phase": "Running",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "lastTransitionTime": (created + timedelta(seconds=7)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            }
        ],
    }
    return [("ADDED", pending), ("MODIFIED", ready), ("DELETED", ready)]


def observer_figures() -> None:
    class Counting:
        def __init__(self) -> None:
            self.counts: Counter[tuple[str | None, str]] = Counter()

        def record(self, *, cache: str | None, result: str, seconds: float | None = None) -> None:
            self.counts[(cache, result)] += 1

    with KubeServer() as kube:
        recorder = Counting()
        tracker = PodLookupTracker(recorder=recorder, settle_seconds=0.0)
        client = kube.client()
        observer = PodObserver(api_client=client, tracker=tracker, sweep_interval=0.05)
        tracemalloc.start()
        observer.start()
        # Both lists done and both watches open: events injected later reach the watches.
        while not (tracker.events_live and observer.relists >= 2):
            time.sleep(0.01)
        while sum(1 for r in kube.requests() if r.params.get("watch") == "true") < 2:
            time.sleep(0.01)
        created = datetime.now(UTC)
        delivered = 0
        index = 0
        checkpoints = (10_000, 50_000, POD_EVENTS)
        started = time.perf_counter()
        for checkpoint in checkpoints:
            batch: list[HistoryEntry] = []
            while delivered + len(batch) < checkpoint:
                for kind, obj in pod_objects(index, created):
                    with kube.api.lock:
                        obj["metadata"]["resourceVersion"] = str(kube.api._next_rv())
                        batch.append(HistoryEntry(kube.api.rv, ("", "pods"), kind, obj))
                index += 1
            with kube.api.lock:
                kube.api.history.extend(batch)
            kube.api._notify_threadsafe()
            delivered += len(batch)
            expected = index
            deadline = time.monotonic() + 120
            while sum(recorder.counts.values()) < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            with kube.api.lock:
                kube.api.history.clear()  # the emulator's own log is not the observer's memory
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            observer_bytes = sum(
                s.size
                for s in snapshot.statistics("filename")
                if "gitsync/observers" in s.traceback[0].filename
            )
            print(
                f"after {delivered:>7,} pod events ({index:,} pods): recorded "
                f"{sum(recorder.counts.values()):,}, tracked {tracker.tracked}, "
                f"orphans {tracker.orphans}, memory held by gitsync/observers "
                f"{observer_bytes / 1024:.1f} KiB ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
        observer.stop()
        tracemalloc.stop()
        client.close()


if __name__ == "__main__":
    reconcile_figures()
    observer_figures()

"""The local backend: caches as snapshots of real OCI pulls in an on-disk store.

It behaves like the cloud's image cache, so what works here works there:

- A cache moves Pending → Ready or Failed when created, Updating → Ready or
  UpdateFailed when changed; while an update pulls or after it fails, the old
  snapshot still serves.
- A snapshot is an immutable record of resolved manifest digests and the
  expanded content size; expiry comes from `retentionDays`, and an expired
  cache is deleted with an event, as the cloud does.
- When the expanded images outgrow `imageCacheSize`, the pull stops at once
  and the cache goes Failed with an event saying what it needs and has.
- Events have the cloud's shape: Type, Reason, Message, count, timestamps.

This module is the `Provider` itself: when a cache is built, what its status
says meanwhile, expiry, and recovery from a process that died. The rest of the
backend lies beside it, one concern a module:

- `builds`: one build (lease, credentials, pull, the committing transaction);
- `failures`: recording a failed build, also when the disk is full;
- `damage` (with `checks` and `scrub`): what a missing or damaged blob leads to;
- `garbage`: `gc`, which removes the blobs nothing needs any more.

Crash safety: the cache row is written (owned, Pending) before anything is
pulled, blobs are written atomically, and a snapshot becomes Ready in one
SQLite transaction. A process that dies mid-pull leaves a Pending row; the
next writable instance (there is one per data dir, see `datadir`) marks it
Failed with an "Interrupted" event and the planner rebuilds it. `create` is
idempotent by name and owner, so a repeated create never duplicates a cache.

A full data disk: a pull that runs out of space removes its temporary file
at once, gives up its lease file, and records Failed (or UpdateFailed) with a
Warning event and the end of its lease in one transaction, so the failure
needs as little new space as possible. If even that cannot be written (the
disk is full for other reasons), the failure is kept in memory and written at
the next `observe` that can: the cache never stays Pending for good, which the
planner would take for a build in progress.

Garbage: deleting a cache drops its snapshot; `gc` then removes every blob
that no snapshot references and no live lease holds (see `leases`): a pull
holds a lease on the blobs it writes or reuses until its snapshot commits, so
`gc` can run at any time, and frees a deleted cache's blobs at once.

Checked snapshots: every `observe` stats each blob a Ready snapshot references
against the size recorded at commit; the scrub (daemon only) re-hashes them at
a bounded rate; the mirror and `export` hash what they serve. Whatever finds a
blob missing or damaged calls `report_damage`, and the cache is reported Failed
and rebuilt, fetching only what is no longer in the store. A read-only
instance (`gitsync status`) reports the same verdict in memory, moving nothing.

Layout of the data dir: `state.db` (SQLite, see `state`), `store/` (blobs),
`leases/` (one locked file per lease in progress).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

from gitsync.model import CacheSpec, CacheStatus, ObservedCache, ObservedState
from gitsync.providers.base import LOCAL_FIELDS
from gitsync.providers.local.blobs import BlobStore
from gitsync.providers.local.builds import SnapshotBuilder, pulling
from gitsync.providers.local.damage import SnapshotDamage
from gitsync.providers.local.failures import FailureRecords
from gitsync.providers.local.garbage import GcResult, collect_garbage
from gitsync.providers.local.leases import LOCK_DIR, LeaseManager
from gitsync.providers.local.oci import Platform
from gitsync.providers.local.pull import DEFAULT_MAX_WORKERS, PullProgress
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.state import StateStore
from gitsync.units import GIB

log = logging.getLogger("gitsync.providers.local")

STATE_FILE = "state.db"
STORE_DIR = "store"


class LocalProvider:
    """`Provider` over a data dir. Open with `writable=False` to only read (status, plan)."""

    name = "local"
    fields = LOCAL_FIELDS  # labels, annotations, security groups: not kept, nothing to rebuild

    def __init__(
        self,
        *,
        data_dir: Path,
        platform: str = "linux/amd64",
        secrets_dir: Path | None = None,
        docker_config: Path | None = None,
        insecure_registries: Collection[str] = (),
        writable: bool = True,
        on_progress: Callable[[PullProgress], None] | None = None,
        max_layer_workers: int = DEFAULT_MAX_WORKERS,
        clock: Callable[[], float] = time.time,
        client_factory: Callable[..., RegistryClient] = RegistryClient,
        gib_bytes: int = GIB,
    ) -> None:
        """`gib_bytes` is the size of one GiB of `imageCacheSize`: tests shrink it to reach
        the size limit without writing gigabytes; `client_factory` lets them count requests."""
        self.data_dir = data_dir
        self.state = StateStore(data_dir / STATE_FILE)
        self.blobs = BlobStore(data_dir / STORE_DIR)
        self.leases = LeaseManager(state=self.state, folder=data_dir / LOCK_DIR, clock=clock)
        self.platform = Platform.parse(platform)
        self._writable = writable
        self._clock = clock
        self._failures = FailureRecords(state=self.state)
        self._builder = SnapshotBuilder(
            data_dir=data_dir,
            state=self.state,
            blobs=self.blobs,
            leases=self.leases,
            failures=self._failures,
            platform=self.platform,
            secrets_dir=secrets_dir,
            docker_config=docker_config,
            insecure_registries=insecure_registries,
            on_progress=on_progress,
            max_layer_workers=max_layer_workers,
            client_factory=client_factory,
            gib_bytes=gib_bytes,
        )
        self._damage = SnapshotDamage(
            state=self.state, blobs=self.blobs, writable=writable, clock=clock
        )
        if writable:
            self._recover_interrupted()

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        if self._writable:
            self._failures.retry()
            self._expire()
        caches = self._damage.checked(self.state.caches())
        totals = self._damage.totals()
        return ObservedState(caches=caches, fields=self.fields, snapshot_checks=totals)

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        for cache in self.state.caches():
            if cache.name == spec.name and cache.owner == owner:
                # Already recorded (a retried or repeated create): build it in place.
                return self.update(spec, cache)
        cache_id = self.state.insert_cache(spec, owner=owner, status=CacheStatus.PENDING)
        replaced = self.state.pop_tombstone(spec.name)
        if replaced:
            self.state.add_event(cache_id, type_="Normal", reason="Recreated", message=replaced)
        self.state.add_event(
            cache_id,
            type_="Normal",
            reason="Creating",
            message=pulling(spec),
        )
        return self._builder.build(cache_id, spec, failed=CacheStatus.FAILED, verb="Created")

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        # A damaged snapshot serves nothing meanwhile: the rebuild is a create.
        serving = current.snapshot_id is not None and current.snapshot_problem is None
        status = CacheStatus.UPDATING if serving else CacheStatus.PENDING
        self.state.set_spec(current.cache_id, spec, status=status)
        self.state.add_event(
            current.cache_id,
            type_="Normal",
            reason="Updating" if serving else "Creating",
            message=pulling(spec) + ("; the current snapshot serves meanwhile" if serving else ""),
        )
        self._failures.forget(current.cache_id)  # a new build supersedes an unrecorded failure
        failed = CacheStatus.UPDATE_FAILED if serving else CacheStatus.FAILED
        return self._builder.build(
            current.cache_id, spec, failed=failed, verb="Updated" if serving else "Created"
        )

    def delete(self, current: ObservedCache) -> None:
        # Blobs stay until `gc`, which frees those no other snapshot or lease keeps.
        self.state.delete_cache(current.cache_id)
        self._failures.forget(current.cache_id)
        log.info("deleted cache %s", current.cache_id, extra={"cache": current.name})

    def close(self) -> None:
        self.leases.close()
        self.state.close()

    def current(self) -> tuple[ObservedCache, ...]:
        """The stored caches, without the expiry sweep `observe` does (safe from any thread)."""
        return self.state.caches()

    def touch_matched(self, cache_id: str) -> None:
        self.state.touch_matched(cache_id, datetime.fromtimestamp(self._clock(), UTC))

    # --------------------------------------------------- damage and garbage

    def report_damage(self, digest: str, detail: str) -> int:
        """A blob served, exported or scrubbed does not hash to its digest: act on it.

        `detail` completes "blob <digest> of image <image> …" ("does not match its
        digest (sha256:…)"). Moves the file aside and marks every Ready cache whose
        snapshot uses it Failed, with the event; returns how many caches. A read-only
        instance (`gitsync export`) only moves the file aside: the next writable
        `observe` (a daemon pass, `gitsync apply`) finds the blob missing and marks.
        """
        return self._damage.report(digest, detail)

    def gc(self, *, grace_seconds: float = 0.0) -> GcResult:
        """Remove blobs that no snapshot references and no live lease holds.

        Safe while pulls run in this or other processes (see `leases`): leases of
        stopped processes and expired ones are dropped first, then each batch of
        digests is checked against the roots and removed in one transaction.
        `grace_seconds` > 0 also keeps blobs written or reused less than that ago.
        """
        return collect_garbage(
            data_dir=self.data_dir,
            state=self.state,
            blobs=self.blobs,
            leases=self.leases,
            clock=self._clock,
            grace_seconds=grace_seconds,
        )

    # ------------------------------------------------------ lifecycle chores

    def _recover_interrupted(self) -> None:
        """Builds left Pending/Updating by a dead process will never finish: say so."""
        for cache in self.state.caches():
            if cache.status in (CacheStatus.PENDING, CacheStatus.UPDATING):
                failed = (
                    CacheStatus.UPDATE_FAILED
                    if cache.status is CacheStatus.UPDATING
                    else CacheStatus.FAILED
                )
                self.state.set_status(cache.cache_id, failed)
                self.state.add_event(
                    cache.cache_id,
                    type_="Warning",
                    reason="Interrupted",
                    message="the process building this cache stopped before it finished",
                )

    def _expire(self) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        for cache in self.state.expired(now):
            when = (cache.expires_at or now).isoformat(timespec="seconds")
            self.state.delete_cache(cache.cache_id)
            self._failures.forget(cache.cache_id)
            self.state.put_tombstone(
                cache.name, f"replaces {cache.cache_id}, which expired at {when}"
            )
            log.warning(
                "cache %s expired at %s and was deleted",
                cache.cache_id,
                when,
                extra={"cache": cache.name},
            )

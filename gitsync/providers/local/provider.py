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

Checked snapshots (see `checks` and `scrub`): every `observe` stats each blob
a Ready snapshot references against the size recorded at commit; the scrub
(daemon only) re-hashes them at a bounded rate; the mirror and `export` hash
what they serve. Whatever finds a blob missing or damaged calls
`report_damage`: the file is moved to `store/quarantine/`, every Ready cache
whose snapshot uses it goes Failed with `snapshot_problem` and a Warning event
`SnapshotDamaged` naming the image and the blob, and the planner's RECREATE
rebuilds it, fetching only what is no longer in the store. A read-only
instance (`gitsync status`) reports the same verdict in memory, moving nothing.

Layout of the data dir: `state.db` (SQLite, see `state`), `store/` (blobs),
`leases/` (one locked file per lease in progress).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from gitsync import imageref
from gitsync.errors import GitSyncError, PermanentError, TemporaryError
from gitsync.model import (
    CacheEvent,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    ObservedState,
    SnapshotCheck,
    SnapshotCheckCounts,
    SnapshotVerdict,
)
from gitsync.providers.base import LOCAL_FIELDS
from gitsync.providers.credentials import (
    CredentialStore,
    PullSecretNotFoundError,
    load_pull_secret,
)
from gitsync.providers.local.auth import TokenCache
from gitsync.providers.local.blobs import (
    QUARANTINE_DAYS,
    BlobNotFoundError,
    BlobStore,
    DigestMismatchError,
)
from gitsync.providers.local.checks import BlobProblem, SnapshotBlobCheck, image_of, verdict_for
from gitsync.providers.local.leases import LOCK_DIR, Lease, LeaseManager
from gitsync.providers.local.oci import Platform
from gitsync.providers.local.pull import (
    DEFAULT_MAX_WORKERS,
    LayerVerificationError,
    PulledImage,
    PullProgress,
    PullResult,
    SizeLimitExceededError,
    pull_images,
)
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryhttp import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
)
from gitsync.providers.local.state import DataDiskError, DiskFullError, StateStore
from gitsync.units import GIB

log = logging.getLogger("gitsync.providers.local")

STATE_FILE = "state.db"
STORE_DIR = "store"
TEMP_FILE_MAX_AGE_SECONDS = 24 * 3600  # for temp files without a lease: far longer than a write
GC_BATCH = 500  # digests per gc transaction: pulls wait for it, so keep it short


@dataclass(frozen=True, slots=True)
class GcResult:
    removed_blobs: int
    freed_bytes: int
    kept_blobs: int  # referenced by a snapshot, held by a lease, or inside --grace
    leased_blobs: int  # of kept_blobs: held only by a live lease (a pull or export running)
    removed_temp_files: int
    dropped_leases: int  # leases whose process stopped, or that expired
    removed_quarantined: int = 0  # damaged blobs moved aside more than QUARANTINE_DAYS ago


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _failure_reason(exc: BaseException) -> str:
    """The event Reason for a failed pull, in the cloud's CamelCase style."""
    reasons: tuple[tuple[type[BaseException], str], ...] = (
        (SizeLimitExceededError, "SizeLimitExceeded"),
        (PullSecretNotFoundError, "PullSecretNotFound"),
        (DigestMismatchError, "DigestMismatch"),
        (LayerVerificationError, "DigestMismatch"),
        (AuthenticationError, "AuthFailed"),
        (AccessDeniedError, "AuthFailed"),
        (NotFoundError, "ImageNotFound"),
        (DiskFullError, "DiskFull"),
        (DataDiskError, "DiskWriteFailed"),
        (TemporaryError, "RegistryUnavailable"),
    )
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "PullFailed"


def _store_error(data_dir: Path, exc: OSError) -> DataDiskError:
    """A failed write to the data disk: DiskFullError when it is out of space or quota."""
    message = f"cannot write to the store in {data_dir}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(message)
    return DataDiskError(message)


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed build the state database could not record yet (a full disk)."""

    name: str  # the cache's, for the log
    status: CacheStatus
    reason: str
    message: str
    lease_id: str | None


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
        self._secrets_dir = secrets_dir
        self._base_credentials = (
            CredentialStore.from_docker_config(docker_config)
            if docker_config
            else CredentialStore()
        )
        self._insecure = tuple(insecure_registries)
        self._writable = writable
        self._on_progress = on_progress
        self._workers = max_layer_workers
        self._clock = clock
        self._client_factory = client_factory
        self._gib_bytes = gib_bytes
        # One token cache per set of pull secrets: a token earned with one cache's
        # credentials must never serve a cache that lacks them.
        self._tokens: dict[tuple[str, ...], TokenCache] = {}
        # Failures the state database refused (a full disk), by cache id: retried by observe().
        self._unrecorded: dict[str, _Failure] = {}
        self._unrecorded_lock = threading.Lock()
        self._blob_check = SnapshotBlobCheck(blobs=self.blobs, load=self.state.snapshot_blobs)
        self._check_totals = SnapshotCheckCounts()
        # observe, the scrub thread and the mirror's threads all report damage.
        self._check_lock = threading.Lock()
        if writable:
            self._recover_interrupted()

    # --------------------------------------------------------------- Provider

    def observe(self) -> ObservedState:
        if self._writable:
            self._record_unrecorded()
            self._expire()
        caches = self._checked(self.state.caches())
        with self._check_lock:
            totals = self._check_totals
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
            message=_pulling(spec),
        )
        return self._build(cache_id, spec, failed=CacheStatus.FAILED, verb="Created")

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        # A damaged snapshot serves nothing meanwhile: the rebuild is a create.
        serving = current.snapshot_id is not None and current.snapshot_problem is None
        status = CacheStatus.UPDATING if serving else CacheStatus.PENDING
        self.state.set_spec(current.cache_id, spec, status=status)
        self.state.add_event(
            current.cache_id,
            type_="Normal",
            reason="Updating" if serving else "Creating",
            message=_pulling(spec) + ("; the current snapshot serves meanwhile" if serving else ""),
        )
        self._forget_failure(current.cache_id)  # a new build supersedes an unrecorded failure
        failed = CacheStatus.UPDATE_FAILED if serving else CacheStatus.FAILED
        return self._build(
            current.cache_id, spec, failed=failed, verb="Updated" if serving else "Created"
        )

    def delete(self, current: ObservedCache) -> None:
        # Blobs stay until `gc`, which frees those no other snapshot or lease keeps.
        self.state.delete_cache(current.cache_id)
        self._forget_failure(current.cache_id)
        log.info("deleted cache %s", current.cache_id, extra={"cache": current.name})

    def close(self) -> None:
        self.leases.close()
        self.state.close()

    def current(self) -> tuple[ObservedCache, ...]:
        """The stored caches, without the expiry sweep `observe` does (safe from any thread)."""
        return self.state.caches()

    def touch_matched(self, cache_id: str) -> None:
        self.state.touch_matched(cache_id, datetime.fromtimestamp(self._clock(), UTC))

    # ------------------------------------------------------------------ build

    def _build(
        self, cache_id: str, spec: CacheSpec, *, failed: CacheStatus, verb: str
    ) -> ObservedCache:
        lease: Lease | None = None
        committed = False
        try:
            try:
                lease = self.leases.acquire(purpose=f"pull {cache_id} ({spec.name})")
                result = self._pull(cache_id, spec, lease)
                pulled = {str(image.reference): image for image in result.images}
                self.state.commit_snapshot(
                    cache_id,
                    content_bytes=result.content_bytes,
                    images=[
                        _image_record(written, pulled[imageref.normalize(written)])
                        for written in _unique(spec.images)
                    ],
                    blob_digests=result.blob_digests,
                    retention_days=spec.retention_days,
                    lease_id=lease.lease_id,
                    check=lambda: self._require_blobs(result),
                    blob_sizes={d: self.blobs.size(d) for d in result.blob_digests},
                )
                committed = True
            except OSError as exc:
                # A full or failing data disk: nothing half-written is kept (blobs are
                # renamed into place only when complete, a failed write removes its
                # temporary file); try again when there is room.
                raise _store_error(self.data_dir, exc) from exc
        except GitSyncError as exc:
            self._record_failure(cache_id, spec.name, status=failed, error=exc, lease=lease)
            raise
        finally:
            if lease is not None:
                # Idempotent. The commit or the failure record ended the row; only a bug
                # (any other exception) leaves it for this to end.
                lease.release(end_row=not committed)
        self.state.add_event(
            cache_id,
            type_="Normal",
            reason=verb,
            message=(
                f"{len(result.images)} images, {_mib(result.content_bytes)} expanded; "
                f"fetched {_mib(result.fetched_bytes)}, reused {_mib(result.reused_bytes)}"
            ),
        )
        return self._cache(cache_id)

    def _record_failure(
        self,
        cache_id: str,
        name: str,
        *,
        status: CacheStatus,
        error: GitSyncError,
        lease: Lease | None,
    ) -> None:
        """Failed or UpdateFailed, a Warning event, and the lease's end: one transaction.

        By now the failed pull has removed its temporary files; the lease's lock file
        goes before the write too. Whatever the disk is short of, the write needs the
        least it can, and if it is refused all the same, `observe` writes it later.
        """
        lease_id = None
        if lease is not None:
            lease_id = lease.lease_id
            lease.release(end_row=False)  # frees its lock file; the row ends in the record
        failure = _Failure(
            name=name,
            status=status,
            reason=_failure_reason(error),
            message=str(error),
            lease_id=lease_id,
        )
        self._write_failure(cache_id, failure)

    def _write_failure(self, cache_id: str, failure: _Failure) -> bool:
        """Record `failure`; on a refusal keep it for the next `observe`. True if written."""
        try:
            self.state.record_failure(
                cache_id,
                status=failure.status,
                reason=failure.reason,
                message=failure.message,
                lease_id=failure.lease_id,
            )
        except (sqlite3.Error, GitSyncError) as exc:
            with self._unrecorded_lock:
                first = cache_id not in self._unrecorded
                self._unrecorded[cache_id] = failure
            if first:
                log.error(
                    "cannot record that cache %s is %s (%s): %s; it is written as soon as the"
                    " state database takes writes again",
                    cache_id,
                    failure.status.value,
                    failure.reason,
                    exc,
                    extra={"cache": failure.name},
                )
            return False
        with self._unrecorded_lock:
            retried = self._unrecorded.pop(cache_id, None) is not None
        if retried:
            log.info(
                "recorded that cache %s is %s (%s) now that the state database takes writes",
                cache_id,
                failure.status.value,
                failure.reason,
                extra={"cache": failure.name},
            )
        return True

    def _record_unrecorded(self) -> None:
        with self._unrecorded_lock:
            pending = list(self._unrecorded.items())
        for cache_id, failure in pending:
            if not self._write_failure(cache_id, failure):
                return  # the disk is still full: the next pass tries again

    def _forget_failure(self, cache_id: str) -> None:
        """A new build or a delete supersedes a failure not recorded yet; its lease ends."""
        with self._unrecorded_lock:
            failure = self._unrecorded.pop(cache_id, None)
        if failure is not None and failure.lease_id is not None:
            try:
                self.state.release_lease(failure.lease_id)
            except (sqlite3.Error, GitSyncError) as exc:
                log.warning(
                    "could not end lease %s: %s; it lapses at its expiry", failure.lease_id, exc
                )

    def _credentials(self, cache_id: str, spec: CacheSpec) -> CredentialStore:
        """docker config logins plus the cache's pull secrets.

        A secret that does not exist is a Warning event, not a failure: like the
        kubelet, we pull with whatever credentials remain, so public images still
        build and a private one fails with the registry's own "unauthorized".
        A secret that exists but is malformed fails the build: someone must fix it.
        """
        credentials = self._base_credentials
        missing: list[str] = []
        for name in spec.image_pull_secrets:
            if self._secrets_dir is None:
                missing.append(name)
                continue
            try:
                credentials = credentials.merged(load_pull_secret(self._secrets_dir, name))
            except PullSecretNotFoundError:
                missing.append(name)
        if missing:
            where = f"in {self._secrets_dir}" if self._secrets_dir else "(no --secrets-dir is set)"
            self.state.add_event(
                cache_id,
                type_="Warning",
                reason="PullSecretNotFound",
                message=f"imagePullSecrets {', '.join(missing)} not found {where}; "
                "pulling without them",
            )
        return credentials

    def _pull(self, cache_id: str, spec: CacheSpec, lease: Lease) -> PullResult:
        refs = [imageref.parse(image) for image in _unique(spec.images)]
        credentials = self._credentials(cache_id, spec)
        client = self._client_factory(
            credentials=credentials,
            insecure_registries=self._insecure,
            token_cache=self._tokens.setdefault(
                tuple(sorted(spec.image_pull_secrets)), TokenCache()
            ),
        )
        try:
            return pull_images(
                refs,
                client=client,
                store=self.blobs.with_lease(lease),
                platform=self.platform,
                limit_bytes=spec.image_cache_size_gib * self._gib_bytes,
                max_workers=self._workers,
                on_progress=self._on_progress,
            )
        finally:
            client.close()

    # ------------------------------------------------------ checked snapshots

    def _checked(self, caches: tuple[ObservedCache, ...]) -> tuple[ObservedCache, ...]:
        """`caches`, with those whose snapshot lost or damaged a blob reported as such."""
        count, found = self._blob_check.check(caches)
        verdicts: dict[str, SnapshotVerdict] = {}
        for snapshot_id, problems in found.items():
            record = self.state.snapshot(snapshot_id)
            image = image_of(record.images if record else (), problems[0].digest)
            verdicts[snapshot_id] = verdict_for(snapshot_id, problems, image=image)
        with self._check_lock:
            before = self._check_totals
            self._check_totals = replace(before, ok=before.ok + count - len(verdicts)).plus(
                verdicts.values()
            )
        if not found:
            return caches
        if not self._writable:
            return tuple(_marked_in_memory(c, verdicts, self._clock()) for c in caches)
        for problems in found.values():
            for problem in problems:
                self._move_aside(problem)
        for cache in caches:
            if cache.status is CacheStatus.READY and cache.snapshot_id in verdicts:
                self._mark(cache.cache_id, cache.name, verdicts[cache.snapshot_id])
        return self.state.caches()

    def report_damage(self, digest: str, detail: str) -> int:
        """A blob served, exported or scrubbed does not hash to its digest: act on it.

        `detail` completes "blob <digest> of image <image> …" ("does not match its
        digest (sha256:…)"). Moves the file aside and marks every Ready cache whose
        snapshot uses it Failed, with the event; returns how many caches. A read-only
        instance (`gitsync export`) only moves the file aside: the next writable
        `observe` (a daemon pass, `gitsync apply`) finds the blob missing and marks.
        """
        self._move_aside(
            BlobProblem(digest=digest, result=SnapshotCheck.DAMAGED, detail=detail, present=True)
        )
        if not self._writable:
            return 0
        marked = 0
        verdicts: list[SnapshotVerdict] = []
        for cache_id, snapshot_id in self.state.ready_users(digest):
            record = self.state.snapshot(snapshot_id)
            image = image_of(record.images if record else (), digest)
            verdict = SnapshotVerdict(
                snapshot_id=snapshot_id,
                result=SnapshotCheck.DAMAGED,
                detail=f"is damaged: blob {digest} of image {image} {detail}",
            )
            cache = self.state.cache(cache_id)
            if self._mark(cache_id, cache.name if cache else cache_id, verdict):
                marked += 1
                verdicts.append(verdict)
        with self._check_lock:
            self._check_totals = self._check_totals.plus(verdicts)
        return marked

    def _move_aside(self, problem: BlobProblem) -> None:
        if not problem.present:
            return
        moved = self.blobs.quarantine(problem.digest, now=self._clock())
        if moved is not None:
            log.warning("blob %s %s; moved aside to %s", problem.digest, problem.detail, moved)

    def _mark(self, cache_id: str, name: str, verdict: SnapshotVerdict) -> bool:
        problem = verdict.problem or ""
        marked = self.state.mark_damaged(
            cache_id,
            snapshot_id=verdict.snapshot_id,
            problem=problem,
            message=f"{problem}; the cache cannot serve from it, so gitsync reports it Failed"
            " and rebuilds it, fetching only what is missing",
        )
        if marked:
            log.warning(
                "%s: the cache is reported Failed and rebuilt", problem, extra={"cache": name}
            )
        return marked

    def _require_blobs(self, result: PullResult) -> None:
        """Inside the snapshot's transaction: every blob is there, or the commit is refused.

        Only a lease that lapsed (its process hung past the lease's expiry) lets gc take
        a blob a pull still needs; this catches that case instead of committing a hole.
        """
        missing = [d for d in result.blob_digests if not self.blobs.has(d)]
        if missing:
            raise TemporaryError(
                f"{len(missing)} blobs were removed by gc while pulling after this pull's"
                f" lease lapsed (first: {missing[0]}); the next pass fetches them again"
            )

    def _cache(self, cache_id: str) -> ObservedCache:
        cache = self.state.cache(cache_id)
        if cache is not None:
            return cache
        raise PermanentError(f"cache {cache_id} vanished from {self.state.path} while building")

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
            self._forget_failure(cache.cache_id)
            self.state.put_tombstone(
                cache.name, f"replaces {cache.cache_id}, which expired at {when}"
            )
            log.warning(
                "cache %s expired at %s and was deleted",
                cache.cache_id,
                when,
                extra={"cache": cache.name},
            )

    def gc(self, *, grace_seconds: float = 0.0) -> GcResult:
        """Remove blobs that no snapshot references and no live lease holds.

        Safe while pulls run in this or other processes (see `leases`): leases of
        stopped processes and expired ones are dropped first, then each batch of
        digests is checked against the roots and removed in one transaction.
        `grace_seconds` > 0 also keeps blobs written or reused less than that ago.
        """
        try:
            return self._gc(grace_seconds)
        except OSError as exc:
            raise TemporaryError(
                f"gc cannot clean the store in {self.data_dir}: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}"
            ) from exc
        except sqlite3.Error as exc:
            raise TemporaryError(f"gc cannot use {self.state.path}: {exc}") from exc

    def _gc(self, grace_seconds: float) -> GcResult:
        now = self._clock()
        dropped = self.leases.drop_dead()
        cutoff = now - grace_seconds if grace_seconds > 0 else None
        removed = freed = kept = leased = 0

        def remove(digest: str) -> bool:
            nonlocal freed
            try:
                size = self.blobs.size(digest)
            except BlobNotFoundError:
                return False
            gone = (
                self.blobs.delete(digest)
                if cutoff is None
                else self.blobs.delete_if_older(digest, cutoff)
            )
            if gone:
                freed += size
            return gone

        digests = sorted(self.blobs.iter_digests())
        for start in range(0, len(digests), GC_BATCH):
            batch = digests[start : start + GC_BATCH]
            outcome = self.state.sweep(batch, remove)
            removed += len(outcome.removed)
            kept += len(batch) - len(outcome.removed)
            leased += outcome.leased
        temp = self.blobs.sweep_temp(
            older_than=TEMP_FILE_MAX_AGE_SECONDS, now=now, live_leases=self.state.lease_ids
        )
        quarantined = self.blobs.sweep_quarantine(older_than=QUARANTINE_DAYS * 86400.0, now=now)
        return GcResult(
            removed_blobs=removed,
            freed_bytes=freed,
            kept_blobs=kept,
            leased_blobs=leased,
            removed_temp_files=temp,
            dropped_leases=len(dropped),
            removed_quarantined=quarantined,
        )


def _marked_in_memory(
    cache: ObservedCache, verdicts: dict[str, SnapshotVerdict], now: float
) -> ObservedCache:
    """A read-only view of a damaged cache: what a writable pass would record."""
    if cache.status is not CacheStatus.READY or cache.snapshot_id not in verdicts:
        return cache
    problem = verdicts[cache.snapshot_id].problem
    when = datetime.fromtimestamp(now, UTC)
    event = CacheEvent(
        type="Warning",
        reason="SnapshotDamaged",
        message=f"{problem}; the next `gitsync apply` or daemon pass rebuilds it",
        first_timestamp=when,
        last_timestamp=when,
    )
    return replace(
        cache,
        status=CacheStatus.FAILED,
        snapshot_problem=problem,
        events=(*cache.events, event),
    )


def _pulling(spec: CacheSpec) -> str:
    return f"pulling {len(spec.images)} images into a {spec.image_cache_size_gib} GiB cache"


def _unique(images: tuple[str, ...]) -> list[str]:
    """Images in order, each normalised reference once (the validator already refuses repeats)."""
    seen: dict[str, str] = {}
    for image in images:
        seen.setdefault(imageref.normalize(image), image)
    return list(seen.values())


def _image_record(written: str, image: PulledImage) -> dict[str, object]:
    return {
        "image": written,
        "reference": str(image.reference),
        "manifestDigest": image.manifest_digest,
        "mediaType": image.media_type,
        "indexDigest": image.index_digest,
        "indexMediaType": image.index_media_type,
        "platform": str(image.platform),
        "configDigest": image.config_digest,
        "layers": list(image.layer_digests),
        "diffIds": list(image.diff_ids),
        "compressedBytes": image.compressed_bytes,
        "expandedBytes": image.expanded_bytes,
    }

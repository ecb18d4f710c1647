"""`gitsync gc` for the local store: remove the blobs nothing needs any more.

Why apart from the provider: gc never changes a cache; it only needs the
state's roots, the store's files and the leases, and it may run at any time,
beside pulls in this or other processes (see `leases` for the protocol):

1. leases of stopped processes and expired ones are dropped;
2. each batch of digests is checked against the roots (snapshots, live leases)
   and its unreferenced blobs removed in one state transaction, short so that
   pulls waiting on it do not wait long;
3. temporary files of writers whose lease ended go at once, others only once
   far older than any write; damaged blobs moved aside go after
   `QUARANTINE_DAYS`.

A grace period also keeps blobs written or reused less than that long ago.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gitsync.errors import TemporaryError
from gitsync.providers.local.blobs import QUARANTINE_DAYS, BlobNotFoundError, BlobStore
from gitsync.providers.local.leases import LeaseManager
from gitsync.providers.local.state import StateStore

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


def collect_garbage(
    *,
    data_dir: Path,
    state: StateStore,
    blobs: BlobStore,
    leases: LeaseManager,
    clock: Callable[[], float],
    grace_seconds: float = 0.0,
) -> GcResult:
    """Remove blobs that no snapshot references and no live lease holds (module docstring).

    `grace_seconds` > 0 also keeps blobs written or reused less than that ago. A
    store or database that cannot be cleaned now is a `TemporaryError`.
    """
    try:
        return _collect(state, blobs, leases, clock(), grace_seconds)
    except OSError as exc:
        raise TemporaryError(
            f"gc cannot clean the store in {data_dir}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}"
        ) from exc
    except sqlite3.Error as exc:
        raise TemporaryError(f"gc cannot use {state.path}: {exc}") from exc


def _collect(
    state: StateStore,
    blobs: BlobStore,
    leases: LeaseManager,
    now: float,
    grace_seconds: float,
) -> GcResult:
    dropped = leases.drop_dead()
    cutoff = now - grace_seconds if grace_seconds > 0 else None
    removed = freed = kept = leased = 0

    def remove(digest: str) -> bool:
        nonlocal freed
        try:
            size = blobs.size(digest)
        except BlobNotFoundError:
            return False
        gone = blobs.delete(digest) if cutoff is None else blobs.delete_if_older(digest, cutoff)
        if gone:
            freed += size
        return gone

    digests = sorted(blobs.iter_digests())
    for start in range(0, len(digests), GC_BATCH):
        batch = digests[start : start + GC_BATCH]
        outcome = state.sweep(batch, remove)
        removed += len(outcome.removed)
        kept += len(batch) - len(outcome.removed)
        leased += outcome.leased
    temp = blobs.sweep_temp(
        older_than=TEMP_FILE_MAX_AGE_SECONDS, now=now, live_leases=state.lease_ids
    )
    quarantined = blobs.sweep_quarantine(older_than=QUARANTINE_DAYS * 86400.0, now=now)
    return GcResult(
        removed_blobs=removed,
        freed_bytes=freed,
        kept_blobs=kept,
        leased_blobs=leased,
        removed_temp_files=temp,
        dropped_leases=len(dropped),
        removed_quarantined=quarantined,
    )

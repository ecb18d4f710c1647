"""A failed build is recorded in one transaction, or kept until the state database takes it.

Why apart from the build: recording a failure is the one write that must
succeed when everything else is failing. A pull that runs out of space has
removed its temporary file and given up its lease's lock file by the time it
gets here; then Failed (or UpdateFailed), a Warning event and the end of the
lease go in one transaction, so the record needs as little new space as
possible. If even that is refused (the disk is full for other reasons), the
failure is kept in memory, and `LocalProvider.observe` writes it at the next
pass that can: the cache never stays Pending for good, which the planner would
take for a build in progress. A new build or a delete of the cache supersedes
a failure not written yet, and ends its lease.

The event's Reason is the cloud's CamelCase word for what went wrong
(`failure_reason`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass

from gitsync.errors import GitSyncError, TemporaryError
from gitsync.model import CacheStatus
from gitsync.providers.credentials import PullSecretNotFoundError
from gitsync.providers.local.blobs import DigestMismatchError
from gitsync.providers.local.leases import Lease
from gitsync.providers.local.pull import LayerVerificationError, SizeLimitExceededError
from gitsync.providers.local.registryhttp import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
)
from gitsync.providers.local.state import DataDiskError, DiskFullError, StateStore

# The provider's logger: these lines have always been the provider's.
log = logging.getLogger("gitsync.providers.local")


def failure_reason(exc: BaseException) -> str:
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


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed build the state database could not record yet (a full disk)."""

    name: str  # the cache's, for the log
    status: CacheStatus
    reason: str
    message: str
    lease_id: str | None


class FailureRecords:
    """Writes build failures to `state`, keeping refused ones for `retry`; thread-safe."""

    def __init__(self, *, state: StateStore) -> None:
        self._state = state
        # Failures the state database refused (a full disk), by cache id.
        self._unrecorded: dict[str, _Failure] = {}
        self._lock = threading.Lock()

    def record(
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
        least it can, and if it is refused all the same, `retry` writes it later.
        """
        lease_id = None
        if lease is not None:
            lease_id = lease.lease_id
            lease.release(end_row=False)  # frees its lock file; the row ends in the record
        failure = _Failure(
            name=name,
            status=status,
            reason=failure_reason(error),
            message=str(error),
            lease_id=lease_id,
        )
        self._write(cache_id, failure)

    def retry(self) -> None:
        """Write the failures refused so far; stop at the first one refused again."""
        with self._lock:
            pending = list(self._unrecorded.items())
        for cache_id, failure in pending:
            if not self._write(cache_id, failure):
                return  # the disk is still full: the next pass tries again

    def forget(self, cache_id: str) -> None:
        """A new build or a delete supersedes a failure not recorded yet; its lease ends."""
        with self._lock:
            failure = self._unrecorded.pop(cache_id, None)
        if failure is not None and failure.lease_id is not None:
            try:
                self._state.release_lease(failure.lease_id)
            except (sqlite3.Error, GitSyncError) as exc:
                log.warning(
                    "could not end lease %s: %s; it lapses at its expiry", failure.lease_id, exc
                )

    def _write(self, cache_id: str, failure: _Failure) -> bool:
        """Record `failure`; on a refusal keep it for the next `retry`. True if written."""
        try:
            self._state.record_failure(
                cache_id,
                status=failure.status,
                reason=failure.reason,
                message=failure.message,
                lease_id=failure.lease_id,
            )
        except (sqlite3.Error, GitSyncError) as exc:
            with self._lock:
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
        with self._lock:
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

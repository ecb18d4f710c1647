"""The local state's leases: blobs an operation in progress holds before a snapshot does.

A lease, as containerd's, keeps blobs from `gc` while a pull or an export uses
them; it expires unless renewed (see `leases`), and `sweep` removes, in one
transaction, what neither a snapshot nor a live lease holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from gitsync.providers.local.statedb import StateDatabase


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease as stored: who holds it, for what, until when (Unix seconds), and how much."""

    lease_id: str
    purpose: str
    owner: str
    created_at: float
    expires_at: float
    blobs: int


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """What one gc batch found: digests kept for a snapshot or a lease, and those removed."""

    referenced: int
    leased: int
    removed: tuple[str, ...]


class LeaseStore(StateDatabase):
    """The lease queries and gc's sweep, over `StateDatabase`'s connection."""

    def create_lease(
        self, lease_id: str, *, purpose: str, owner: str, now: float, expires_at: float
    ) -> None:
        with self.transaction(touches=None) as db:
            db.execute(
                "INSERT INTO leases(id, purpose, owner, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (lease_id, purpose, owner, now, expires_at),
            )

    def hold_blobs(self, lease_id: str, digests: Collection[str], *, expires_at: float) -> bool:
        """Add digests to a lease and extend it; False (and nothing held) if the lease is gone."""
        with self.transaction(touches=None) as db:
            renewed = db.execute(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, lease_id),
            ).rowcount
            if not renewed:
                return False
            db.executemany(
                "INSERT OR IGNORE INTO lease_blobs(lease_id, digest) VALUES (?, ?)",
                [(lease_id, d) for d in sorted(set(digests))],
            )
        return True

    def hold_snapshot(self, lease_id: str, snapshot_id: str, *, expires_at: float) -> bool:
        """Hold every blob a snapshot references; False if the snapshot or the lease is gone."""
        with self.transaction(touches=None) as db:
            renewed = db.execute(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, lease_id),
            ).rowcount
            found = db.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
            if not renewed or found is None:
                return False
            db.execute(
                "INSERT OR IGNORE INTO lease_blobs(lease_id, digest)"
                " SELECT ?, digest FROM snapshot_blobs WHERE snapshot_id = ?",
                (lease_id, snapshot_id),
            )
        return True

    def renew_leases(self, lease_ids: Collection[str], *, expires_at: float) -> set[str]:
        """Extend leases; returns the ids no longer in the table (gc dropped them)."""
        ids = sorted(set(lease_ids))
        if not ids:
            return set()
        with self.transaction(touches=None) as db:
            db.executemany(
                "UPDATE leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                [(expires_at, lease_id) for lease_id in ids],
            )
            sql = (
                "SELECT id FROM leases"  # noqa: S608  # placeholders only
                f" WHERE id IN ({', '.join('?' * len(ids))})"
            )
            present = {row["id"] for row in db.execute(sql, ids)}
        return set(ids) - present

    def release_lease(self, lease_id: str) -> None:
        with self.transaction(touches=None) as db:
            db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))

    def drop_leases(self, lease_ids: Collection[str]) -> None:
        """Forget leases whose holders are gone or expired; their blobs lose this root."""
        if not lease_ids:
            return
        with self.transaction(touches=None) as db:
            db.executemany("DELETE FROM leases WHERE id = ?", [(i,) for i in sorted(lease_ids)])

    def leases(self) -> tuple[LeaseRecord, ...]:
        with self._lock:
            rows = self._db.execute(
                "SELECT l.*, (SELECT COUNT(*) FROM lease_blobs b WHERE b.lease_id = l.id) AS blobs"
                " FROM leases l ORDER BY l.created_at, l.id"
            ).fetchall()
        return tuple(
            LeaseRecord(
                lease_id=r["id"],
                purpose=r["purpose"],
                owner=r["owner"],
                created_at=float(r["created_at"]),
                expires_at=float(r["expires_at"]),
                blobs=int(r["blobs"]),
            )
            for r in rows
        )

    def lease_ids(self) -> frozenset[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM leases").fetchall()
        return frozenset(r["id"] for r in rows)

    def sweep(self, digests: Sequence[str], remove: Callable[[str], bool]) -> SweepOutcome:
        """gc's step: in one write transaction, `remove` every digest no snapshot or lease holds.

        Pulls record a lease's claim on a digest (a write transaction) before they
        create or reuse its file, so no claim can commit between this transaction's
        reading of the roots and its removals: a claim either came first and keeps
        the blob, or comes after and finds the file gone (and fetches it again).
        Keep batches small: pulls wait for this transaction to end.
        """
        if not digests:
            return SweepOutcome(referenced=0, leased=0, removed=())
        marks = ", ".join("?" * len(digests))
        # Only "?" placeholders are formatted into the SQL; the digests travel as parameters.
        snapshot_sql = f"SELECT DISTINCT digest FROM snapshot_blobs WHERE digest IN ({marks})"  # noqa: S608
        lease_sql = f"SELECT DISTINCT digest FROM lease_blobs WHERE digest IN ({marks})"  # noqa: S608
        removed: list[str] = []
        with self.transaction(touches=None) as db:
            referenced = {row["digest"] for row in db.execute(snapshot_sql, tuple(digests))}
            leased = {row["digest"] for row in db.execute(lease_sql, tuple(digests))} - referenced
            for digest in digests:
                if digest not in referenced and digest not in leased and remove(digest):
                    removed.append(digest)
        return SweepOutcome(referenced=len(referenced), leased=len(leased), removed=tuple(removed))

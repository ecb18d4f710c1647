"""The snapshot behind a TKE image cache, looked up in CBS: `DescribeSnapshots`, in batches.

A TKE image cache serves from a CBS snapshot (its `SnapshotId`), and a CBS
snapshot can be deleted by anyone with the rights, without TKE noticing: the
cache stays Ready in DescribeImageCaches. `CbsSnapshotLookup` is the
`snapshots.SnapshotLookup` that finds out, for `snapshots.SnapshotChecked`.

* **One call per 100 snapshots.** `DescribeSnapshots` (cbs 2017-03-12) takes
  `SnapshotIds` and pages with `Offset`/`Limit`, whose maximum is 100, so each
  batch of up to 100 ids is one call (`Limit` 100: the default of 20 would leave
  ids out). Paging still follows `TotalCount`, so a server that pages smaller
  is read in full.
* **Gone means not listed.** The API has no not-found error for SnapshotIds: a
  snapshot that no longer exists is simply absent from `SnapshotSet`. A missing
  snapshot rebuilds a cache, which costs money, so only a well-formed, complete
  answer is read that way; an answer that contradicts itself (a TotalCount its
  pages do not reach) is an error, and an error changes no cache.
* **Usable means NORMAL (or ROLLBACKING).** The states CBS documents: NORMAL;
  ROLLBACKING (a disk is being rolled back from it: the snapshot is intact);
  CREATING, COPYING_FROM_REMOTE and CHECKING_COPIED (not complete, so no disk
  can be made from it, yet TKE called the cache Ready); TORECYCLE (due to be
  recycled, for arrears). The last four are "damaged". A state CBS adds later is
  taken as usable, with a warning, since a rebuild on a guess is not free.
* **Same hygiene as TKE.** Calls go through `transport.TencentCloudAPI`:
  the same credentials, TC3 signing (with `cbs` in the credential scope),
  retries with backoff, strict reading of the envelope and scrubbed messages.
  The endpoint is `TencentCloudSettings.cbs_host` (`--tencentcloud-cbs-endpoint`).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tencentcloud.cbs.v20170312 import cbs_client

from gitsync.model import SnapshotCheck, SnapshotVerdict
from gitsync.providers.tencentcloud.settings import TencentCloudCredentials, TencentCloudSettings
from gitsync.providers.tencentcloud.transport import TencentCloudAPI

__all__ = [
    "ACTION",
    "BATCH_SIZE",
    "DAMAGED_STATES",
    "USABLE_STATES",
    "CbsSnapshotLookup",
    "verdict_for",
]

# The logger keeps the name it had as gitsync.providers.tencent_snapshots: log filters use it.
log = logging.getLogger("gitsync.providers.tencent_snapshots")

ACTION = "DescribeSnapshots"
BATCH_SIZE = 100  # DescribeSnapshots' Limit: "默认为20，最大值为100"
USABLE_STATES = frozenset({"NORMAL", "ROLLBACKING"})
DAMAGED_STATES: Mapping[str, str] = {
    "CREATING": "still being made",
    "COPYING_FROM_REMOTE": "still being copied from another region",
    "CHECKING_COPIED": "a copy still being verified",
    "TORECYCLE": "due to be recycled (the account is in arrears)",
}
_SNAPSHOT_ID = re.compile(r"snap-[0-9a-z]+")


def verdict_for(snapshot_id: str, item: Mapping[str, Any] | None) -> SnapshotVerdict:
    """What one `Snapshot` of DescribeSnapshots (None: not listed) says about `snapshot_id`."""
    if item is None:
        return SnapshotVerdict(snapshot_id, SnapshotCheck.MISSING, f"is gone ({ACTION})")
    state = item.get("SnapshotState")
    if not isinstance(state, str) or not state:
        # The caller checked this; a bare mapping from elsewhere must not read as damaged.
        raise ValueError(f"{ACTION}: snapshot {snapshot_id} has no SnapshotState")
    if state in DAMAGED_STATES:
        return SnapshotVerdict(
            snapshot_id,
            SnapshotCheck.DAMAGED,
            f"is {state}, {DAMAGED_STATES[state]} ({ACTION})",
        )
    return SnapshotVerdict(snapshot_id, SnapshotCheck.OK, f"is {state} ({ACTION})")


class CbsSnapshotLookup:
    """`SnapshotLookup` over CBS DescribeSnapshots; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        settings: TencentCloudSettings,
        credentials: TencentCloudCredentials,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._api = TencentCloudAPI(
            api="CBS",
            client_class=cbs_client.CbsClient,
            host=settings.cbs_host,
            settings=settings,
            credentials=credentials,
            sleep=sleep,
            rng=rng,
        )
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    @property
    def host(self) -> str:
        return self._api.host

    def check(self, snapshot_ids: Sequence[str]) -> dict[str, SnapshotVerdict]:
        """A verdict per well-formed id, in calls of up to BATCH_SIZE ids; raises on failure."""
        wanted = list(dict.fromkeys(snapshot_ids))
        for odd in (i for i in wanted if not _SNAPSHOT_ID.fullmatch(i)):
            # One odd id would make CBS refuse the whole batch (InvalidParameterValue).
            self._warn_once(
                f"id:{odd}",
                "snapshot id %r is not a CBS snapshot id (snap-…); it is not checked",
                odd,
            )
        ids = [i for i in wanted if _SNAPSHOT_ID.fullmatch(i)]
        verdicts: dict[str, SnapshotVerdict] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[start : start + BATCH_SIZE]
            listed = self._describe(batch)
            for snapshot_id in batch:
                verdict = verdict_for(snapshot_id, listed.get(snapshot_id))
                state = (listed.get(snapshot_id) or {}).get("SnapshotState")
                if (
                    verdict.result is SnapshotCheck.OK
                    and isinstance(state, str)
                    and state not in USABLE_STATES
                ):
                    self._warn_once(
                        f"state:{state}",
                        "CBS reports snapshot state %r, which gitsync does not know; taken as"
                        " usable (known: %s)",
                        state,
                        ", ".join(sorted({*USABLE_STATES, *DAMAGED_STATES})),
                    )
                verdicts[snapshot_id] = verdict
        return verdicts

    def close(self) -> None:
        self._api.close()

    def _describe(self, batch: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Every listed snapshot of `batch`, by id: all pages of one SnapshotIds query."""
        listed: dict[str, Mapping[str, Any]] = {}
        offset, pages = 0, 0
        while True:
            params = {"SnapshotIds": list(batch), "Limit": BATCH_SIZE, "Offset": offset}
            response = self._api.call(ACTION, params, idempotent=True)
            total, page = self._page(response)
            pages += 1
            for item in page:
                listed.setdefault(str(item["SnapshotId"]), item)
            offset += len(page)
            if offset >= total:
                return listed
            if not page or pages > len(batch) // BATCH_SIZE + 2:
                # Stopping short would read every unread id as gone: refuse instead.
                raise self._api.malformed(
                    ACTION, f"a TotalCount of {total} that its pages never reach", response
                )

    def _page(self, response: Mapping[str, Any]) -> tuple[int, list[Mapping[str, Any]]]:
        total = response.get("TotalCount")
        items = response.get("SnapshotSet")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise self._api.malformed(ACTION, "no TotalCount", response)
        if items is None and total == 0:
            items = []
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise self._api.malformed(ACTION, "no SnapshotSet list", response)
        for item in items:
            if not isinstance(item.get("SnapshotId"), str) or not item["SnapshotId"]:
                raise self._api.malformed(ACTION, "a Snapshot without SnapshotId", response)
            if not isinstance(item.get("SnapshotState"), str) or not item["SnapshotState"]:
                raise self._api.malformed(
                    ACTION, f"snapshot {item['SnapshotId']} without SnapshotState", response
                )
        return total, items

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)

"""A moved tag on the tencentcloud backend: one UpdateImageCache with the image pinned.

Against the TKE emulator (tests/tke_emulator.py) through the real SDK, as
tests/integration/test_tencentcloud.py. The digests are handed to the
reconciler as the refresher would; what is under test is the calls gitsync
makes, and that the pin read back is no drift from Git.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from tke_fixtures import TkeEmulator, one, provider_for, running_emulator, wait_for

from gitsync.controller_record import RecordFile
from gitsync.digests import ResolvedDigest, TagDigests
from gitsync.model import ActionKind, CacheStatus
from gitsync.pricing import PriceTable
from gitsync.reconciler import ReconcilePolicy, Reconciler

IMAGE = "registry.example.com/team/app:1"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


@pytest.fixture
def tke(monkeypatch: pytest.MonkeyPatch) -> Iterator[TkeEmulator]:
    with running_emulator(monkeypatch) as emulator:
        yield emulator


def following(digest: str) -> TagDigests:
    entry = ResolvedDigest(digest=digest, at=AT)
    return TagDigests(resolved=MappingProxyType({IMAGE: entry}), every_cache=True)


def test_a_moved_tag_is_one_update_in_place_with_the_image_pinned(
    tke: TkeEmulator, tmp_path: Path
) -> None:
    provider = provider_for(tke)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
        f"spec:\n  images: [{IMAGE}]\n",
        encoding="utf-8",
    )
    tags = [following(D1)]
    loop = Reconciler(
        provider=provider,
        records=RecordFile(tmp_path / "data"),
        policy=ReconcilePolicy(controller_id="gitsync"),
        prices=PriceTable(),
    )
    loop.follow_tags(lambda: tags[-1])
    try:
        assert loop.reconcile(tree=repo, revision="r1").error is None
        wait_for(lambda: one(provider, "web").status is CacheStatus.READY, what="web Ready")
        before = one(provider, "web")
        assert before.images == (f"{IMAGE}@{D1}",)
        tke.reset_calls()

        quiet = loop.reconcile(tree=repo, revision="r1")
        assert quiet.plan is not None
        assert not quiet.plan.has_changes

        tags.append(following(D2))
        moved = loop.reconcile(tree=repo, revision="r1")
        assert moved.error is None, moved.error
        assert moved.plan is not None
        (action,) = moved.plan.changes
        assert action.kind is ActionKind.UPDATE
        assert action.cost is not None
        assert action.cost.one_off > 0  # a rebuild is a billed build instance
        counts = tke.counts()
        assert counts["UpdateImageCache"] == 1
        assert "CreateImageCache" not in counts
        assert "DeleteImageCaches" not in counts
        (sent,) = [c.params for c in tke.calls if c.action == "UpdateImageCache"]
        assert sent["ImageCacheId"] == before.cache_id
        assert sent["Images"] == [f"{IMAGE}@{D2}"]
        wait_for(lambda: one(provider, "web").status is CacheStatus.READY, what="web rebuilt")
        after = one(provider, "web")
        assert after.cache_id == before.cache_id
        assert after.snapshot_id != before.snapshot_id

        settled = loop.reconcile(tree=repo, revision="r1")
        assert settled.plan is not None
        assert not settled.plan.has_changes
    finally:
        provider.close()

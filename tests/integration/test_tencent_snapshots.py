"""The CBS snapshot check through the real SDKs against the emulator (tests/tke_emulator.py).

Every DescribeSnapshots here is signed by the SDK's CBS client (TC3-HMAC-SHA256
with `cbs` in the credential scope) and verified by the emulator's CBS-only
listener, so these tests cover the wire protocol: the batches and their size,
what each snapshot state means, what a failing or contradictory answer does (it
must never read as "gone"), the secrets, and a reconcile pass and the in-process
daemon that rebuild a cache whose snapshot was deleted behind TKE's back.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.cbs.v20170312", reason="needs the extra 'tencent'")

from gitrepo import git
from tencentcloud.cbs.v20170312 import cbs_client
from tencentcloud.cbs.v20170312 import models as cbs_models
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.tke.v20180525 import tke_client
from tke_fixtures import (
    REGION,
    SECRET_ID,
    SECRET_KEY,
    ManualClock,
    TkeEmulator,
    checked_provider_for,
    lookup_for,
    provider_for,
    running_emulator,
    wait_for,
)

from gitsync.controller_record import RecordFile
from gitsync.daemon import Daemon
from gitsync.metrics import DaemonMetrics, ExpositionRegistry
from gitsync.model import (
    ActionKind,
    CacheSpec,
    CacheStatus,
    SnapshotCheck,
    SnapshotCheckCounts,
)
from gitsync.pricing import PriceTable
from gitsync.providers.snapshots import MISSING_REASON, SnapshotChecked
from gitsync.providers.tencentcloud import (
    OWNER_TAG,
    PRUNE_TAG,
    TencentCloudAuthError,
    TencentCloudResponseError,
)
from gitsync.providers.tencentcloud.snapshots import BATCH_SIZE, DAMAGED_STATES, USABLE_STATES
from gitsync.reconciler import ReconcilePolicy, Reconciler
from gitsync.sources.git import GitSource

pytestmark = pytest.mark.filterwarnings(
    # The SDK signs with datetime.utcfromtimestamp, deprecated from Python 3.12 on.
    "ignore:datetime.datetime.utcfromtimestamp:DeprecationWarning"
)

OWNED = {OWNER_TAG: "gitsync", PRUNE_TAG: "enabled"}
HOUR = 3600.0


@pytest.fixture
def tke(monkeypatch: pytest.MonkeyPatch) -> Iterator[TkeEmulator]:
    with running_emulator(monkeypatch) as emulator:
        yield emulator


def cbs_raw(endpoint: str, *, secret_key: str = SECRET_KEY) -> cbs_client.CbsClient:
    """The SDK's own CBS client, without gitsync in between."""
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint))
    return cbs_client.CbsClient(credential.Credential(SECRET_ID, secret_key), REGION, profile)


def snapshot_of(tke: TkeEmulator, name: str) -> str:
    (cache_id,) = [c["ImageCacheId"] for c in tke.caches() if c["ImageCacheName"] == name]
    snapshot = tke.snapshot_of(cache_id)
    assert snapshot is not None
    return snapshot


# ------------------------------------------------------------------------ the lookup


def test_the_snapshot_of_a_ready_cache_is_found_normal_in_one_signed_call(
    tke: TkeEmulator,
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    lookup = lookup_for(tke)

    verdicts = lookup.check([snapshot])

    assert verdicts[snapshot].result is SnapshotCheck.OK
    assert verdicts[snapshot].detail == "is NORMAL (DescribeSnapshots)"
    [call] = tke.cbs_calls
    assert (call.action, call.error, call.service) == ("DescribeSnapshots", None, "cbs")
    assert call.params == {"SnapshotIds": [snapshot], "Limit": BATCH_SIZE, "Offset": 0}
    assert call.host == tke.cbs_endpoint  # --tencentcloud-cbs-endpoint, not the TKE one
    assert tke.calls == []  # a snapshot check asks TKE nothing
    lookup.close()


@pytest.mark.parametrize(
    ("state", "result"),
    [(s, SnapshotCheck.OK) for s in sorted(USABLE_STATES)]
    + [(s, SnapshotCheck.DAMAGED) for s in sorted(DAMAGED_STATES)],
)
def test_each_documented_state_has_its_verdict(
    tke: TkeEmulator, state: str, result: SnapshotCheck
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    tke.set_snapshot_state(snapshot, state)

    verdict = lookup_for(tke).check([snapshot])[snapshot]

    assert verdict.result is result
    assert verdict.detail.startswith(f"is {state}")
    assert verdict.detail.endswith("(DescribeSnapshots)")


def test_a_deleted_snapshot_is_missing(tke: TkeEmulator) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    tke.add_cache("api", ["nginx:1.27.2"], tags=OWNED)
    gone, kept = snapshot_of(tke, "web"), snapshot_of(tke, "api")
    tke.delete_snapshot(gone)

    verdicts = lookup_for(tke).check([gone, kept])

    assert verdicts[gone].result is SnapshotCheck.MISSING
    assert verdicts[gone].problem == f"snapshot {gone} is gone (DescribeSnapshots)"
    assert verdicts[kept].result is SnapshotCheck.OK
    assert len(tke.cbs_calls) == 1


def test_a_state_cbs_adds_later_is_taken_as_usable_with_one_warning(
    tke: TkeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    tke.set_snapshot_state(snapshot, "ARCHIVING")
    lookup = lookup_for(tke)

    with caplog.at_level(logging.WARNING, logger="gitsync.providers.tencent_snapshots"):
        first = lookup.check([snapshot])[snapshot]
        lookup.check([snapshot])

    assert first.result is SnapshotCheck.OK
    assert caplog.text.count("'ARCHIVING', which gitsync does not know") == 1


def test_an_id_that_is_no_snapshot_id_is_left_unchecked_not_sent(
    tke: TkeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")

    with caplog.at_level(logging.WARNING, logger="gitsync.providers.tencent_snapshots"):
        verdicts = lookup_for(tke).check(["disk-1234abcd", snapshot, snapshot])

    assert set(verdicts) == {snapshot}  # one odd id would make CBS refuse the whole batch
    assert [c.params["SnapshotIds"] for c in tke.cbs_calls] == [[snapshot]]
    assert "'disk-1234abcd' is not a CBS snapshot id" in caplog.text


def test_250_caches_are_checked_in_3_calls_and_not_again_within_the_interval(
    tke: TkeEmulator,
) -> None:
    for i in range(250):
        tke.add_cache(f"c{i:03d}", ["nginx:1.27.2"], tags=OWNED)
    clock = ManualClock()
    provider = checked_provider_for(tke, interval_seconds=HOUR, clock=clock)

    state = provider.observe()

    batches = [c.params for c in tke.cbs_calls]
    assert [len(b["SnapshotIds"]) for b in batches] == [100, 100, 50]
    assert {b["Limit"] for b in batches} == {BATCH_SIZE}
    asked = [i for b in batches for i in b["SnapshotIds"]]
    assert sorted(asked) == sorted(c.snapshot_id for c in state.caches)
    assert state.snapshot_checks == SnapshotCheckCounts(ok=250)
    assert {c.status for c in state.caches} == {CacheStatus.READY}

    for _ in range(3):  # no-change passes inside the interval: TKE pages only
        clock.advance(HOUR / 4 - 1)
        provider.observe()
    assert len(tke.cbs_calls) == 3

    clock.advance(HOUR)
    provider.observe()
    assert len(tke.cbs_calls) == 6
    provider.close()


# ----------------------------------------------------- failures never read as "gone"


def test_throttling_is_retried_inside_the_call(tke: TkeEmulator) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    tke.inject_error("RequestLimitExceeded", "too fast", action="DescribeSnapshots", times=2)

    verdict = lookup_for(tke).check([snapshot])[snapshot]

    assert verdict.result is SnapshotCheck.OK
    assert [c.error for c in tke.cbs_calls] == ["RequestLimitExceeded"] * 2 + [None]


def test_a_refused_lookup_names_cbs_and_leaves_the_caches_ready(
    tke: TkeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    tke.inject_error("UnauthorizedOperation", "no permission", action="DescribeSnapshots", times=10)

    with pytest.raises(TencentCloudAuthError) as caught:
        lookup_for(tke).check([snapshot])
    with caplog.at_level(logging.WARNING, logger="gitsync.providers.snapshots"):
        state = checked_provider_for(tke).observe()

    message = str(caught.value)
    assert message.startswith("CBS DescribeSnapshots failed: UnauthorizedOperation")
    assert "grant the CAM user or role permission for cbs:DescribeSnapshots" in message
    assert [c.status for c in state.caches] == [CacheStatus.READY]
    assert state.snapshot_checks == SnapshotCheckCounts()
    assert "cannot check the snapshots of 1 Ready caches" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"Response": {"TotalCount": 1, "SnapshotSet": [], "RequestId": "r-1"}}',
        b'{"Response": {"SnapshotSet": [], "RequestId": "r-2"}}',
        b'{"Response": {"TotalCount": 0, "RequestId": null}}',
        b'{"Response": {"TotalCount": 1, "SnapshotSet": [{"SnapshotId": "snap-1"}],'
        b' "RequestId": "r-3"}}',
        b"<html>502 Bad Gateway</html>",
    ],
    ids=["short-page", "no-total", "no-request-id", "no-state", "html"],
)
def test_an_answer_that_cannot_be_trusted_is_an_error_never_a_missing_snapshot(
    tke: TkeEmulator, body: bytes
) -> None:
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    tke.inject_raw(content_type="application/json", body=body, action="DescribeSnapshots", times=9)

    with pytest.raises(TencentCloudResponseError, match="CBS DescribeSnapshots"):
        lookup_for(tke, max_attempts=1).check([snapshot])
    state = checked_provider_for(tke, max_attempts=1).observe()

    assert [c.status for c in state.caches] == [CacheStatus.READY]


def test_wrong_credentials_fail_without_showing_a_secret(
    tke: TkeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tencentcloud_sdk_common")
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    snapshot = snapshot_of(tke, "web")
    wrong = "wrongPlantedCbsSecretKey0003"

    with pytest.raises(TencentCloudAuthError) as caught:
        lookup_for(tke, secret_key=wrong).check([snapshot])
    lookup_for(tke).check([snapshot])  # and a right one, with the SDK logging at DEBUG

    assert "AuthFailure.SignatureFailure" in str(caught.value)
    everything = caplog.text + str(caught.value)
    assert "SendRequest" not in caplog.text  # the SDK's request dumps are filtered out
    for secret in (SECRET_ID, SECRET_KEY, wrong):
        assert secret not in everything


# ----------------------------------------------------------------- the emulator's CBS


def test_the_emulator_pages_snapshots_as_the_api_does(tke: TkeEmulator) -> None:
    planted = [tke.add_snapshot() for _ in range(45)]
    client = cbs_raw(tke.cbs_endpoint)

    pages = [client.call("DescribeSnapshots", {"Limit": 20, "Offset": o}) for o in (0, 20, 40)]
    default = client.call("DescribeSnapshots", {})

    answers = [json.loads(p)["Response"] for p in pages]
    assert [a["TotalCount"] for a in answers] == [45, 45, 45]
    assert [len(a["SnapshotSet"]) for a in answers] == [20, 20, 5]
    assert [s["SnapshotId"] for a in answers for s in a["SnapshotSet"]] == planted
    assert len(json.loads(default)["Response"]["SnapshotSet"]) == 20  # Limit defaults to 20
    by_filter = json.loads(
        client.call(
            "DescribeSnapshots", {"Filters": [{"Name": "snapshot-id", "Values": planted[:3]}]}
        )
    )["Response"]
    assert by_filter["TotalCount"] == 3


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Limit": 101}, "InvalidParameterValue"),
        ({"Limit": 0}, "InvalidParameterValue"),
        ({"Offset": -1}, "InvalidParameterValue"),
        ({"SnapshotIds": ["snap-1234abcd"], "Filters": []}, "InvalidParameter"),
        ({"SnapshotIds": ["disk-1234abcd"]}, "InvalidParameterValue"),
        ({"Filters": [{"Name": "zone", "Values": ["x"]}]}, "InvalidFilter"),
        ({"SnapshotIds": "snap-1234abcd"}, "InvalidParameter"),
        ({"Bogus": 1}, "UnknownParameter"),
        ({"Order": "UP"}, "InvalidParameterValue"),
    ],
)
def test_the_emulator_refuses_bad_input_as_the_api_does(
    tke: TkeEmulator, params: dict[str, object], code: str
) -> None:
    with pytest.raises(TencentCloudSDKException) as caught:
        cbs_raw(tke.cbs_endpoint).call("DescribeSnapshots", params)

    assert caught.value.code == code
    assert tke.cbs_calls[-1].error == code


def test_the_cbs_listener_serves_only_requests_signed_for_cbs_and_its_own_host(
    tke: TkeEmulator,
) -> None:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=tke.cbs_endpoint))
    as_tke = tke_client.TkeClient(credential.Credential(SECRET_ID, SECRET_KEY), REGION, profile)
    with pytest.raises(TencentCloudSDKException) as signed_for_tke:
        as_tke.call("DescribeImageCaches", {})
    with pytest.raises(TencentCloudSDKException) as wrong_key:
        cbs_raw(tke.cbs_endpoint, secret_key="wrong").call("DescribeSnapshots", {})
    other_host = tke.cbs_endpoint.replace("127.0.0.1", "localhost")  # same listener
    with pytest.raises(TencentCloudSDKException) as signed_for_another_host:
        cbs_raw(other_host).call("DescribeSnapshots", {})
    # The main endpoint serves CBS too: a custom --tencentcloud-endpoint that is not tke.*.
    assert b"TotalCount" in cbs_raw(tke.endpoint).call("DescribeSnapshots", {})

    assert signed_for_tke.value.code == "AuthFailure.SignatureFailure"
    assert wrong_key.value.code == "AuthFailure.SignatureFailure"
    assert signed_for_another_host.value.code == "AuthFailure.SignatureFailure"
    assert "signed for host" in str(signed_for_another_host.value.message)
    assert [c.host for c in tke.cbs_calls][-1] == tke.endpoint


def test_the_emulators_snapshots_fit_the_sdks_model(tke: TkeEmulator) -> None:
    """A field the SDK does not know would warn "fileds are useless": the emulator is faithful."""
    tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    tke.add_snapshot(state="CREATING")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for item in tke.snapshots():
            cbs_models.Snapshot()._deserialize(item)


def test_the_emulator_keeps_a_caches_snapshot_with_the_cache(tke: TkeEmulator) -> None:
    provider = provider_for(tke)
    cache_id = tke.add_cache("web", ["nginx:1.27.2"], tags=OWNED)
    first = tke.snapshot_of(cache_id)
    web = provider.observe().caches[0]
    assert web.snapshot_id == first

    provider.update(CacheSpec("web", ("nginx:1.27.3",)), web)
    wait_for(lambda: provider.observe().caches[0].status is CacheStatus.READY, what="the update")
    second = tke.snapshot_of(cache_id)
    ids = {s["SnapshotId"] for s in tke.snapshots()}
    assert second != first
    assert ids == {second}  # the new snapshot replaced the old one

    provider.delete(provider.observe().caches[0])
    assert tke.snapshots() == []  # deleting the cache deleted its snapshot
    provider.close()


# --------------------------------------------------------- a pass and the daemon rebuild


def cache_doc(name: str, image: str) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images: [{image}]\n"
    )


def test_the_daemon_rebuilds_a_cache_whose_snapshot_was_deleted_and_counts_the_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # One clock for the emulator's builds and the checks' interval: builds end when told.
    clock = ManualClock()
    with running_emulator(monkeypatch, clock=clock, ready_after=30.0) as tke:
        rebuild_after_the_snapshot_is_deleted(tke, clock, tmp_path)


def rebuild_after_the_snapshot_is_deleted(
    tke: TkeEmulator, clock: ManualClock, tmp_path: Path
) -> None:
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    for name, image in (("web", "nginx:1.27.2"), ("api", "redis:7.4.1"), ("db", "postgres:16")):
        (work / f"{name}.yaml").write_text(cache_doc(name, image), encoding="utf-8")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "three caches", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    provider = checked_provider_for(tke, interval_seconds=HOUR, clock=clock)
    registry = ExpositionRegistry()
    data = tmp_path / "data"
    daemon = Daemon(
        source=GitSource(url=f"file://{bare}", ref="main", cache_dir=data / "source"),
        reconciler=Reconciler(
            provider=provider,
            records=RecordFile(data),
            policy=ReconcilePolicy(backoff_base_seconds=0.01, backoff_max_seconds=0.02),
            prices=PriceTable(),
            rng=random.Random(5),
        ),
        registry=registry,
        metrics=DaemonMetrics(registry=registry, version="test"),
        interval_seconds=HOUR,
        host="127.0.0.1",
        port=0,
        branch="main",
        webhook_secret=None,
        version="test",
    )

    def checks() -> dict[str, float]:
        found = {}
        for line in registry.exposition().decode().splitlines():
            if line.startswith("gitsync_snapshot_checks_total{"):
                series, _, value = line.rpartition(" ")
                found[series.split('"')[1]] = float(value)
        return found

    def ready() -> set[str]:
        result = daemon.run_pass(reason="test")
        assert result is not None
        assert result.observed_after is not None
        return {c.name for c in result.observed_after.caches if c.status is CacheStatus.READY}

    assert checks() == {"ok": 0, "damaged": 0, "missing": 0}  # exposed from the start
    assert ready() == set()  # created, building
    assert tke.cbs_calls == []  # nothing Ready, nothing to check
    clock.advance(30)
    assert ready() == {"web", "api", "db"}
    assert len(tke.cbs_calls) == 1  # the three snapshots in one batch, once Ready
    assert checks() == {"ok": 3, "damaged": 0, "missing": 0}

    for _ in range(5):  # no-change passes within the interval: no DescribeSnapshots
        clock.advance(60)
        daemon.run_pass(reason="interval")
    assert len(tke.cbs_calls) == 1

    old = {c["ImageCacheName"]: c["ImageCacheId"] for c in tke.caches()}
    gone = snapshot_of(tke, "web")
    tke.delete_snapshot(gone)
    clock.advance(HOUR)
    result = daemon.run_pass(reason="interval")

    assert result is not None
    assert len(tke.cbs_calls) == 2  # one batch per interval
    assert result.plan is not None
    (recreate,) = [a for a in result.plan.actions if a.kind is ActionKind.RECREATE]
    assert recreate.name == "web"
    assert recreate.reason == f"snapshot {gone} is gone (DescribeSnapshots)"
    assert recreate.cost is not None
    assert recreate.cost.one_off > 0
    assert recreate.observed is not None
    assert recreate.observed.events[-1].reason == MISSING_REASON
    assert checks() == {"ok": 5, "damaged": 0, "missing": 1}

    assert ready() == {"api", "db"}  # web's replacement is building
    clock.advance(30)
    assert ready() == {"web", "api", "db"}
    now = {c["ImageCacheName"]: c["ImageCacheId"] for c in tke.caches()}
    assert now["web"] != old["web"]  # a new cache, with a new snapshot
    assert {k: v for k, v in now.items() if k != "web"} == {
        k: v for k, v in old.items() if k != "web"
    }
    fresh = snapshot_of(tke, "web")
    assert fresh != gone
    assert fresh in {s["SnapshotId"] for s in tke.snapshots()}
    assert checks() == {"ok": 6, "damaged": 0, "missing": 1}  # the new snapshot, checked once
    assert len(tke.cbs_calls) == 3
    assert isinstance(daemon.reconciler.provider, SnapshotChecked)
    provider.close()

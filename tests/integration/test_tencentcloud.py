"""TencentCloudProvider through the real SDK against the TKE emulator (tests/tke_emulator.py).

Every request here is signed by the SDK with TC3-HMAC-SHA256 and verified by
the emulator, so these tests cover the wire protocol, not only the mapping.
They assert the exact request fields the provider sends (contract tests),
lifecycles, ownership through a real reconcile pass, error classes and
messages, call counts per pass, and that no planted secret leaks anywhere.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.tke.v20180525 import models, tke_client
from tke_fixtures import (
    REGION,
    REGISTRY_PASSWORD,
    SECRET_ID,
    SECRET_KEY,
    SECURITY_GROUPS,
    SUBNET_ID,
    VPC_ID,
    ManualClock,
    TkeEmulator,
    one,
    provider_for,
    running_emulator,
    spec,
    wait_for,
    write_pull_secret,
)

from gitsync.controller_record import RecordFile
from gitsync.errors import PermanentError, TemporaryError
from gitsync.model import CacheStatus, ObservedCache
from gitsync.pricing import PriceTable
from gitsync.providers.base import Provider
from gitsync.providers.tencentcloud import (
    OWNER_TAG,
    PRUNE_TAG,
    PULL_SECRETS_TAG,
    TencentCloudAPIError,
    TencentCloudAuthError,
    TencentCloudInvalidParameterError,
    TencentCloudProvider,
    TencentCloudResponseError,
    TencentCloudTransientError,
)
from gitsync.reconciler import ReconcilePolicy, Reconciler

pytestmark = pytest.mark.filterwarnings(
    # The SDK signs with datetime.utcfromtimestamp, deprecated from Python 3.12 on.
    "ignore:datetime.datetime.utcfromtimestamp:DeprecationWarning"
)

OWNED = {OWNER_TAG: "gitsync", PRUNE_TAG: "enabled", PULL_SECRETS_TAG: "-"}
ERROR_BODY = json.dumps(
    {
        "Response": {
            "Error": {"Code": "InternalError", "Message": "the back end fell over"},
            "RequestId": "req-wrong-type",
        }
    }
).encode()


@pytest.fixture
def tke(monkeypatch: pytest.MonkeyPatch) -> Iterator[TkeEmulator]:
    with running_emulator(monkeypatch) as emulator:
        yield emulator


@pytest.fixture
def provider(tke: TkeEmulator) -> Iterator[TencentCloudProvider]:
    made = provider_for(tke)
    yield made
    made.close()


def wait_status(provider: TencentCloudProvider, name: str, status: CacheStatus) -> ObservedCache:
    wait_for(lambda: one(provider, name).status is status, what=f"{name} to be {status}")
    return one(provider, name)


def raw_client(tke: TkeEmulator) -> tke_client.TkeClient:
    """The SDK's own client, without gitsync in between."""
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=tke.endpoint))
    return tke_client.TkeClient(credential.Credential(SECRET_ID, SECRET_KEY), REGION, profile)


def params_of(tke: TkeEmulator, action: str) -> list[dict[str, object]]:
    return [c.params for c in tke.calls if c.action == action]


# --------------------------------------------------------------- lifecycle


def test_the_provider_satisfies_the_protocol(provider: TencentCloudProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "tencentcloud"


def test_create_sends_exactly_the_documented_fields_then_goes_pending_to_ready(
    tke: TkeEmulator, tmp_path: Path
) -> None:
    write_pull_secret(tmp_path, "team/regcred", registry="registry.example.com")
    provider = provider_for(
        tke,
        secrets_dir=tmp_path,
        registry_http_endpoints=("mirror.internal:5000",),
        registry_skip_verify=("harbor.internal",),
    )
    desired = spec(
        "web",
        "nginx:1.27.2",
        "registry.example.com/team/api:1.0",
        image_cache_size_gib=30,
        retention_days=7,
        image_pull_secrets=("team/regcred",),
    )
    created = provider.create(desired, owner="gitsync")

    assert created.status is CacheStatus.PENDING
    assert created.owner == "gitsync"
    assert created.cache_id.startswith("imc-")
    [sent] = params_of(tke, "CreateImageCache")
    assert sent == {
        "ImageCacheName": "web",
        "Images": ["nginx:1.27.2", "registry.example.com/team/api:1.0"],
        "VpcId": VPC_ID,
        "SubnetId": SUBNET_ID,
        "SecurityGroupIds": list(SECURITY_GROUPS),
        "ImageCacheSize": 30,
        "RetentionDays": 7,
        "Tags": [
            {"Key": "gitsync.io/owner", "Value": "gitsync"},
            {"Key": "gitsync.io/prune", "Value": "enabled"},
            {"Key": "gitsync.io/pull-secrets", "Value": "team/regcred"},
            {"Key": "gitsync.io/security-groups", "Value": "-"},  # the spec has none
            {"Key": "gitsync.io/eip", "Value": "none"},
        ],
        # Only the registry an image uses gets a credential; Docker Hub has none here.
        "ImageRegistryCredentials": [
            {
                "Server": "registry.example.com",
                "Username": "robot",
                "Password": REGISTRY_PASSWORD,
                "Name": "gitsync-registry-example-com",
            }
        ],
        "RegistryHttpEndPointList": ["mirror.internal:5000"],
        "RegistrySkipVerifyList": ["harbor.internal"],
    }

    pending = one(provider, "web")
    assert pending.status is CacheStatus.PENDING
    assert pending.snapshot_id is None
    ready = wait_status(provider, "web", CacheStatus.READY)
    assert ready.cache_id == created.cache_id
    assert ready.snapshot_id is not None
    assert ready.snapshot_id.startswith("snap-")
    assert ready.images == desired.images
    assert ready.image_cache_size_gib == 30
    assert ready.retention_days == 7
    assert ready.image_pull_secrets == ("team/regcred",)
    assert ready.prune is True
    assert ready.created_at is not None
    assert ready.expires_at is not None
    assert (ready.expires_at - ready.created_at).days == 7
    assert [e.reason for e in ready.events] == ["Creating", "Created"]


def test_create_leaves_optional_fields_out_when_not_configured(tke: TkeEmulator) -> None:
    provider = provider_for(tke, security_group_ids=())
    provider.create(spec("plain", prune=False), owner="ops-controller")
    [sent] = params_of(tke, "CreateImageCache")
    assert set(sent) == {
        "ImageCacheName",
        "Images",
        "VpcId",
        "SubnetId",
        "ImageCacheSize",
        "RetentionDays",
        "Tags",
    }
    assert sent["Tags"] == [
        {"Key": "gitsync.io/owner", "Value": "ops-controller"},
        {"Key": "gitsync.io/prune", "Value": "disabled"},
        {"Key": "gitsync.io/pull-secrets", "Value": "-"},
        {"Key": "gitsync.io/security-groups", "Value": "-"},
        {"Key": "gitsync.io/eip", "Value": "none"},
    ]
    observed = one(provider, "plain")
    assert observed.owner == "ops-controller"
    assert observed.prune is False
    assert observed.image_pull_secrets == ()


def test_create_without_a_vpc_is_a_config_error_before_any_call(tke: TkeEmulator) -> None:
    provider = provider_for(tke, vpc_id=None, subnet_id=None)
    with pytest.raises(PermanentError, match="--vpc-id and --subnet-id"):
        provider.create(spec("web"), owner="gitsync")
    assert tke.count() == 0


def test_a_build_that_fails_is_observed_failed_with_the_clouds_event(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.fail_images("registry.example.com/broken:1")
    provider.create(spec("bad", "registry.example.com/broken:1"), owner="gitsync")
    failed = wait_status(provider, "bad", CacheStatus.FAILED)
    warning = failed.events[-1]
    assert (warning.type, warning.reason) == ("Warning", "PullImageFailed")
    assert "registry.example.com/broken:1" in warning.message


def test_update_in_place_sends_the_new_spec_and_serves_meanwhile(
    tke: TkeEmulator, tmp_path: Path
) -> None:
    write_pull_secret(tmp_path, "team/regcred", registry="registry.example.com")
    provider = provider_for(tke, secrets_dir=tmp_path)
    provider.create(spec("web", "nginx:1.27.2"), owner="gitsync")
    before = wait_status(provider, "web", CacheStatus.READY)
    tke.reset_calls()

    desired = spec(
        "web",
        "nginx:1.27.3",
        "registry.example.com/team/api:2",
        image_cache_size_gib=40,
        retention_days=3,
        image_pull_secrets=("team/regcred",),
    )
    returned = provider.update(desired, before)

    assert tke.counts() == {"UpdateImageCache": 1}
    [sent] = params_of(tke, "UpdateImageCache")
    assert sent == {
        "ImageCacheId": before.cache_id,
        "ImageCacheName": "web",
        "Images": ["nginx:1.27.3", "registry.example.com/team/api:2"],
        "ImageCacheSize": 40,
        "RetentionDays": 3,
        "ImageRegistryCredentials": [
            {
                "Server": "registry.example.com",
                "Username": "robot",
                "Password": REGISTRY_PASSWORD,
                "Name": "gitsync-registry-example-com",
            }
        ],
        "Tags": [
            {"Key": "gitsync.io/owner", "Value": "gitsync"},
            {"Key": "gitsync.io/prune", "Value": "enabled"},
            {"Key": "gitsync.io/pull-secrets", "Value": "team/regcred"},
            {"Key": "gitsync.io/security-groups", "Value": "-"},
            {"Key": "gitsync.io/eip", "Value": "none"},
        ],
        # The rebuild runs on a new instance: it gets --security-group-id too.
        "SecurityGroupIds": list(SECURITY_GROUPS),
    }
    assert returned.status is CacheStatus.UPDATING
    assert returned.snapshot_id == before.snapshot_id  # the old snapshot serves meanwhile
    assert one(provider, "web").status is CacheStatus.UPDATING
    after = wait_status(provider, "web", CacheStatus.READY)
    assert after.cache_id == before.cache_id
    assert after.snapshot_id != before.snapshot_id
    assert after.images == desired.images
    assert (after.image_cache_size_gib, after.retention_days) == (40, 3)
    assert after.image_pull_secrets == ("team/regcred",)


def test_removing_all_pull_secrets_is_read_back_even_though_tags_merge(
    tke: TkeEmulator, tmp_path: Path
) -> None:
    write_pull_secret(tmp_path, "team/regcred", registry="registry.example.com")
    provider = provider_for(tke, secrets_dir=tmp_path)
    provider.create(spec("web", image_pull_secrets=("team/regcred",)), owner="gitsync")
    ready = wait_status(provider, "web", CacheStatus.READY)
    provider.update(spec("web"), ready)
    assert one(provider, "web").image_pull_secrets == ()


def test_an_update_failed_cache_is_updated_in_place(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.fail_images("registry.example.com/broken:1")
    provider.create(spec("web"), owner="gitsync")
    ready = wait_status(provider, "web", CacheStatus.READY)
    provider.update(spec("web", "registry.example.com/broken:1"), ready)
    broken = wait_status(provider, "web", CacheStatus.UPDATE_FAILED)
    tke.reset_calls()

    provider.update(spec("web", "nginx:1.27.3"), broken)

    assert tke.counts() == {"UpdateImageCache": 1}
    assert wait_status(provider, "web", CacheStatus.READY).cache_id == ready.cache_id


def test_a_failed_cache_is_replaced_create_then_delete(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.fail_images("registry.example.com/broken:1")
    provider.create(spec("web", "registry.example.com/broken:1"), owner="gitsync")
    failed = wait_status(provider, "web", CacheStatus.FAILED)
    tke.reset_calls()

    replacement = provider.update(spec("web", "nginx:1.27.3"), failed)

    assert tke.counts() == {"CreateImageCache": 1, "DeleteImageCaches": 1}
    assert params_of(tke, "DeleteImageCaches") == [{"ImageCacheIds": [failed.cache_id]}]
    assert replacement.cache_id != failed.cache_id
    assert replacement.status is CacheStatus.PENDING
    assert wait_status(provider, "web", CacheStatus.READY).cache_id == replacement.cache_id


def test_shrinking_a_cache_replaces_it(tke: TkeEmulator, provider: TencentCloudProvider) -> None:
    provider.create(spec("web", image_cache_size_gib=50), owner="gitsync")
    ready = wait_status(provider, "web", CacheStatus.READY)
    tke.reset_calls()
    replacement = provider.update(spec("web", image_cache_size_gib=30), ready)
    assert tke.counts() == {"CreateImageCache": 1, "DeleteImageCaches": 1}
    assert one(provider, "web").cache_id == replacement.cache_id


def test_an_expiring_cache_is_replaced_and_an_expired_one_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    with running_emulator(monkeypatch, clock=clock, ready_after=1.0) as tke:
        provider = provider_for(tke, clock=clock)
        provider.create(spec("web", retention_days=2), owner="gitsync")
        provider.create(spec("old", retention_days=1), owner="gitsync")
        clock.advance(60)
        web = one(provider, "web")
        assert web.status is CacheStatus.READY
        # Past half its retention (1 day of 2): an update renews by building a new cache.
        clock.advance(1.5 * 86400)
        assert [c.name for c in provider.observe().caches] == ["web"]  # "old" expired
        tke.reset_calls()
        renewed = provider.update(spec("web", retention_days=2), web)
        assert tke.counts() == {"CreateImageCache": 1, "DeleteImageCaches": 1}
        assert renewed.expires_at is not None
        assert web.expires_at is not None
        assert renewed.expires_at > web.expires_at
        provider.close()


def test_retention_sets_the_expiry_and_last_match_is_reported(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    created = provider.create(spec("web", retention_days=5), owner="gitsync")
    assert one(provider, "web").last_matched_at is None
    tke.mark_matched(created.cache_id)
    observed = one(provider, "web")
    assert observed.last_matched_at is not None
    assert observed.created_at is not None
    assert observed.expires_at is not None
    assert (observed.expires_at - observed.created_at).total_seconds() == 5 * 86400


def test_an_unknown_status_is_reported_as_failed_with_the_raw_value(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    cache_id = tke.add_cache("odd", ["nginx:1"], tags=OWNED)
    tke.set_status(cache_id, "Hibernating")
    observed = one(provider, "odd")
    assert observed.status is CacheStatus.FAILED
    assert observed.events[-1].type == "Warning"
    assert "'Hibernating'" in observed.events[-1].message


# ------------------------------------------------------------------ delete


def test_concurrent_deletes_are_sent_as_one_batch(tke: TkeEmulator) -> None:
    ids = [tke.add_cache(f"c{i}", ["nginx:1"], tags=OWNED) for i in range(6)]
    holder: list[TencentCloudProvider] = []

    def hold_window(_seconds: float) -> None:
        # The batch window ends once every delete has queued: deterministic, not timed.
        wait_for(lambda: holder[0].queued_deletes == len(ids), what="all deletes to queue")

    provider = provider_for(tke, sleep=hold_window)
    holder.append(provider)
    caches = provider.observe().caches
    errors: list[BaseException] = []

    def delete(cache: ObservedCache) -> None:
        try:
            provider.delete(cache)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=delete, args=(c,)) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert params_of(tke, "DeleteImageCaches") == [{"ImageCacheIds": sorted(ids)}]
    assert provider.observe().caches == ()


def test_delete_many_batches_by_fifty(tke: TkeEmulator, provider: TencentCloudProvider) -> None:
    for i in range(120):
        tke.add_cache(f"c{i:03d}", ["nginx:1"], tags=OWNED)
    caches = provider.observe().caches
    tke.reset_calls()
    outcome = provider.delete_many(caches)
    assert set(outcome.values()) == {None}
    assert [len(p["ImageCacheIds"]) for p in params_of(tke, "DeleteImageCaches")] == [50, 50, 20]  # type: ignore[arg-type]
    assert tke.caches() == []


def test_deleting_a_cache_that_is_gone_is_not_an_error(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    gone_id = tke.add_cache("gone", ["nginx:1"], tags=OWNED)
    kept_id = tke.add_cache("kept", ["nginx:1"], tags=OWNED)
    gone, kept = sorted(provider.observe().caches, key=lambda c: c.name)
    provider.delete(gone)
    provider.delete(gone)  # again: ResourceNotFound means done
    # A batch with a vanished id is refused whole; the provider falls back to one by one.
    outcome = provider.delete_many([gone, kept])
    assert outcome == {gone_id: None, kept_id: None}
    assert tke.caches() == []


def test_unowned_caches_are_refused_before_any_call(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.add_cache("theirs", ["nginx:1"])
    theirs = one(provider, "theirs")
    assert theirs.owner is None
    tke.reset_calls()
    with pytest.raises(PermanentError, match=r"no gitsync\.io/owner tag"):
        provider.update(spec("theirs"), theirs)
    with pytest.raises(PermanentError, match=r"no gitsync\.io/owner tag"):
        provider.delete(theirs)
    assert tke.count() == 0


# -------------------------------------------------------------- describes


def test_observe_pages_by_fifty_and_reads_everything(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    for i in range(120):
        tke.add_cache(f"c{i:03d}", ["nginx:1"], tags=OWNED if i % 2 else None)
    observed = provider.observe().caches
    assert len({c.cache_id for c in observed}) == 120
    assert sum(1 for c in observed if c.owner == "gitsync") == 60
    assert params_of(tke, "DescribeImageCaches") == [
        {"Limit": 50, "Offset": 0},
        {"Limit": 50, "Offset": 50},
        {"Limit": 50, "Offset": 100},
    ]
    assert tke.counts() == {"DescribeImageCaches": 3}


def test_a_list_that_moves_while_paging_is_read_again(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    ids = [tke.add_cache(f"c{i:03d}", ["nginx:1"], tags=OWNED) for i in range(120)]
    removed: list[str] = []

    def delete_between_pages(action: str, params: dict[str, object]) -> None:
        if action == "DescribeImageCaches" and params.get("Offset") == 50 and not removed:
            removed.append(ids[0])
            tke.remove_cache(ids[0])  # shifts every later cache up: c050 would be skipped

    tke.before_action = delete_between_pages
    observed = {c.cache_id for c in provider.observe().caches}
    assert observed == set(ids[1:])
    assert tke.count("DescribeImageCaches") == 6  # one torn reading, one settled


def test_an_empty_region_costs_one_describe(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    assert provider.observe().caches == ()
    assert tke.counts() == {"DescribeImageCaches": 1}


def test_describe_by_name_uses_the_name_filter(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.add_cache("web", ["nginx:1"], tags=OWNED)
    tke.add_cache("api", ["nginx:1"], tags=OWNED)
    assert [c.name for c in provider.describe(["web"])] == ["web"]
    assert params_of(tke, "DescribeImageCaches") == [
        {"Limit": 50, "Offset": 0, "ImageCacheNames": ["web"]}
    ]


def test_most_suitable_asks_the_api(tke: TkeEmulator, provider: TencentCloudProvider) -> None:
    assert provider.most_suitable(["nginx:1.27.2"]) == (
        None,
        "TKE has no image cache for 1 image",
    )
    small = tke.add_cache("small", ["nginx:1.27.2", "redis:7"], size=20)
    tke.add_cache("big", ["nginx:1.27.2", "redis:7"], size=100)
    cache_id, reason = provider.most_suitable(["nginx:1.27.2", "redis:7"])
    assert cache_id == small
    assert "small" in reason
    assert "2 of 2 images" in reason
    assert params_of(tke, "GetMostSuitableImageCache")[-1] == {
        "Images": ["nginx:1.27.2", "redis:7"]
    }


# ------------------------------------------------------------------ errors


def test_throttling_backs_off_and_then_succeeds(tke: TkeEmulator) -> None:
    slept: list[float] = []
    provider = provider_for(
        tke,
        sleep=slept.append,
        retry_base_seconds=0.1,
        retry_max_seconds=1.0,
        throttle_retry_after_seconds=0.05,
    )
    tke.inject_error("RequestLimitExceeded", "too fast", action="DescribeImageCaches", times=3)
    assert provider.observe().caches == ()
    assert tke.counts() == {"DescribeImageCaches": 4}
    assert len(slept) == 3
    assert min(slept) >= 0.05  # never sooner than the API's limit window
    assert slept[2] > slept[0]  # exponential: 0.05-0.1 s, 0.1-0.2 s, 0.2-0.4 s


def test_throttling_that_lasts_is_a_temporary_error_with_retry_after(tke: TkeEmulator) -> None:
    provider = provider_for(tke, max_attempts=3, throttle_retry_after_seconds=0.01)
    tke.throttle(1.0)
    with pytest.raises(TemporaryError) as caught:
        provider.observe()
    error = caught.value
    assert isinstance(error, TencentCloudTransientError)
    assert error.code == "RequestLimitExceeded"
    assert error.retry_after == 0.01
    assert error.request_id == tke.calls[-1].request_id
    assert tke.count("DescribeImageCaches") == 3


def test_a_throttled_create_is_retried_because_it_never_ran(tke: TkeEmulator) -> None:
    provider = provider_for(tke)
    tke.inject_error("RequestLimitExceeded", "too fast", action="CreateImageCache", times=2)
    provider.create(spec("web"), owner="gitsync")
    assert tke.count("CreateImageCache") == 3
    assert len(tke.caches()) == 1


def test_an_internal_error_is_retried_for_idempotent_calls(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    provider.create(spec("web"), owner="gitsync")
    ready = wait_status(provider, "web", CacheStatus.READY)
    tke.reset_calls()
    tke.inject_error("InternalError", "try later", action="UpdateImageCache")
    provider.update(spec("web", "nginx:1.27.3"), ready)
    assert tke.counts() == {"UpdateImageCache": 2}


def test_an_internal_error_on_create_is_not_retried_blindly(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    tke.inject_error("InternalError", "try later", action="CreateImageCache")
    with pytest.raises(TemporaryError, match="InternalError: try later"):
        provider.create(spec("web"), owner="gitsync")
    # One create, then one name-filtered look for a cache it might have made.
    assert tke.counts() == {"CreateImageCache": 1, "DescribeImageCaches": 1}
    assert params_of(tke, "DescribeImageCaches")[0]["ImageCacheNames"] == ["web"]
    assert tke.caches() == []


def test_a_create_that_timed_out_after_working_is_found_not_duplicated(
    tke: TkeEmulator,
) -> None:
    provider = provider_for(tke, request_timeout_seconds=0.2)
    tke.slow(0.4, action="CreateImageCache", after=True)
    created = provider.create(spec("web"), owner="gitsync")
    assert [c["ImageCacheId"] for c in tke.caches()] == [created.cache_id]
    assert tke.counts() == {"CreateImageCache": 1, "DescribeImageCaches": 1}


def test_a_create_that_timed_out_before_working_is_a_temporary_error(
    tke: TkeEmulator,
) -> None:
    provider = provider_for(tke, request_timeout_seconds=0.2)
    tke.slow(0.4, action="CreateImageCache", after=False)
    with pytest.raises(TemporaryError, match="ClientNetworkError"):
        provider.create(spec("web"), owner="gitsync")
    wait_for(lambda: tke.count("CreateImageCache") == 1, what="the slow create to land")
    assert tke.count("CreateImageCache") == 1


def test_invalid_parameter_is_permanent_with_code_message_and_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, vpcs={"vpc-real0001": ["subnet-real0001"]}) as tke:
        provider = provider_for(tke, vpc_id="vpc-typo", subnet_id="subnet-real0001")
        with pytest.raises(TencentCloudInvalidParameterError) as caught:
            provider.create(spec("web"), owner="gitsync")
        error = caught.value
        assert isinstance(error, PermanentError)
        assert not isinstance(error, TemporaryError)
        [call] = tke.calls  # a permanent error is not retried
        assert error.code == "InvalidParameter"
        assert error.request_id == call.request_id
        assert str(error) == (
            f"TKE CreateImageCache failed: InvalidParameter: VpcId vpc-typo does not exist in"
            f" {REGION}. (RequestId {call.request_id})"
        )


@pytest.mark.parametrize(
    ("secret_id", "secret_key", "code", "hint"),
    [
        (SECRET_ID, "wrong-secret-key-value", "AuthFailure.SignatureFailure", "SECRET_KEY"),
        ("AKIDwrongSecretIdValue", SECRET_KEY, "AuthFailure.SecretIdNotFound", "SECRET_ID"),
    ],
)
def test_wrong_credentials_are_a_permanent_auth_error(
    tke: TkeEmulator, secret_id: str, secret_key: str, code: str, hint: str
) -> None:
    provider = provider_for(tke, secret_id=secret_id, secret_key=secret_key)
    with pytest.raises(TencentCloudAuthError) as caught:
        provider.observe()
    error = caught.value
    assert error.code == code
    assert hint in str(error)
    assert error.request_id == tke.calls[-1].request_id
    assert secret_key not in str(error)
    assert secret_id not in str(error)
    assert tke.count() == 1  # not retried


def test_a_wrong_region_is_reported_as_such(tke: TkeEmulator) -> None:
    provider = provider_for(tke, region="ap-shanghai")
    with pytest.raises(TencentCloudAPIError, match=r"UnsupportedRegion.*check --region"):
        provider.observe()


@pytest.mark.parametrize(
    ("content_type", "body", "expected", "code"),
    [
        # An error envelope the SDK alone would deserialise as an empty success:
        ("text/html", ERROR_BODY, TencentCloudTransientError, "InternalError"),
        (
            "application/json; charset=utf-8",
            ERROR_BODY,
            TencentCloudTransientError,
            "InternalError",
        ),
        (
            "text/html",
            b"<html><body>502 Bad Gateway</body></html>",
            TencentCloudResponseError,
            None,
        ),
        ("application/json", b"<html>not json</html>", TencentCloudResponseError, None),
        (
            "application/json",
            b'{"Response": {"TotalCount": 0, "ImageCaches": []}}',
            TencentCloudResponseError,
            None,
        ),  # no RequestId: not a TKE answer
        (
            "application/json",
            b'{"Response": {"RequestId": "r-1"}}',
            TencentCloudResponseError,
            None,
        ),
        ("application/json", b"[]", TencentCloudResponseError, None),
    ],
)
def test_an_unreadable_or_mistyped_answer_is_an_error_never_an_empty_success(
    tke: TkeEmulator,
    content_type: str,
    body: bytes,
    expected: type[Exception],
    code: str | None,
) -> None:
    provider = provider_for(tke, max_attempts=1)
    tke.add_cache("web", ["nginx:1"], tags=OWNED)
    tke.inject_raw(content_type=content_type, body=body, action="DescribeImageCaches")
    with pytest.raises(expected) as caught:
        provider.observe()
    assert getattr(caught.value, "code", None) == code
    assert len(provider.observe().caches) == 1  # the next answer is read normally


def test_the_sdk_alone_would_take_a_mistyped_error_for_success(tke: TkeEmulator) -> None:
    """Why the provider reads bodies itself: the generated SDK method returns an empty model."""
    client = raw_client(tke)
    tke.inject_raw(content_type="text/html", body=ERROR_BODY, action="DescribeImageCaches")
    response = client.DescribeImageCaches(models.DescribeImageCachesRequest())
    assert response.TotalCount is None
    assert response.ImageCaches is None


def test_a_gateway_error_page_is_temporary(tke: TkeEmulator) -> None:
    provider = provider_for(tke, max_attempts=1)
    tke.inject_raw(status=502, content_type="text/html", body=b"<h1>Bad Gateway</h1>")
    with pytest.raises(TemporaryError, match="HTTP status other than 200"):
        provider.observe()


# ------------------------------------------------------- through the reconciler


def write_cache(tree: Path, name: str, *images: str, extra: str = "") -> None:
    lines = "".join(f"    - {image}\n" for image in images)
    (tree / f"{name}.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images:\n{lines}{extra}",
        encoding="utf-8",
    )


def reconciler_for(provider: TencentCloudProvider, data: Path) -> Reconciler:
    return Reconciler(
        provider=provider,
        records=RecordFile(data),
        policy=ReconcilePolicy(
            controller_id="gitsync", backoff_base_seconds=0.01, backoff_max_seconds=0.02
        ),
        prices=PriceTable(),
        rng=random.Random(3),
    )


def test_a_reconcile_pass_never_touches_caches_gitsync_does_not_own(
    tke: TkeEmulator, provider: TencentCloudProvider, tmp_path: Path
) -> None:
    tree = tmp_path / "repo"
    tree.mkdir()
    theirs = tke.add_cache("web", ["nginx:1.0"])  # no tags: someone else's
    legacy = tke.add_cache("legacy", ["redis:6"])  # no tags, not in Git
    other = tke.add_cache("shared", ["redis:7"], tags={**OWNED, OWNER_TAG: "other-ctrl"})
    keep = tke.add_cache("keep", ["busybox:1.36.1"], tags=OWNED)
    stale = tke.add_cache("stale", ["busybox:1.36.0"], tags=OWNED)
    write_cache(tree, "web", "nginx:1.27.2")  # in the way of an unowned cache
    write_cache(tree, "shared", "redis:7.2")  # in the way of another controller's cache
    write_cache(tree, "keep", "busybox:1.36.1")
    write_cache(tree, "api", "registry.example.com/team/api:1")
    tke.reset_calls()

    result = reconciler_for(provider, tmp_path / "data").reconcile(tree=tree, revision="a" * 40)

    assert result.error is None
    assert result.plan is not None
    assert any("in the way" in n.message for n in result.plan.notices if n.name == "web")
    counts = tke.counts()
    assert counts["CreateImageCache"] == 1
    assert counts["DeleteImageCaches"] == 1
    assert "UpdateImageCache" not in counts
    assert params_of(tke, "DeleteImageCaches") == [{"ImageCacheIds": [stale]}]
    assert [p["ImageCacheName"] for p in params_of(tke, "CreateImageCache")] == ["api"]
    left = {c["ImageCacheId"]: c for c in tke.caches()}
    for untouched in (theirs, legacy, other, keep):
        assert untouched in left
    assert left[theirs]["Images"] == ["nginx:1.0"]
    assert left[other]["Images"] == ["redis:7"]


def test_a_pass_costs_describes_plus_one_call_per_change(
    tke: TkeEmulator, provider: TencentCloudProvider, tmp_path: Path
) -> None:
    tree = tmp_path / "repo"
    tree.mkdir()
    for i in range(120):
        name = f"c{i:03d}"
        tke.add_cache(name, ["busybox:1.36.1"], tags=OWNED)
        write_cache(tree, name, "busybox:1.36.1")
    reconciler = reconciler_for(provider, tmp_path / "data")
    tke.reset_calls()

    quiet = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert quiet.converged
    # Nothing to apply: one observe of 3 pages, and not a single other call.
    assert tke.counts() == {"DescribeImageCaches": 3}

    write_cache(tree, "c000", "busybox:1.36.2")  # update
    write_cache(tree, "new1", "busybox:1.36.1")  # create
    write_cache(tree, "new2", "busybox:1.36.1")  # create
    (tree / "c001.yaml").unlink()  # delete
    tke.reset_calls()
    busy = reconciler.reconcile(tree=tree, revision="b" * 40)
    assert busy.error is None
    counts = tke.counts()
    assert counts["CreateImageCache"] == 2
    assert counts["UpdateImageCache"] == 1
    assert counts["DeleteImageCaches"] == 1
    assert counts["DescribeImageCaches"] == 6  # observe before planning and after applying
    assert sum(counts.values()) == 10


def test_a_repository_converges_through_30_percent_throttling(
    tke: TkeEmulator, tmp_path: Path
) -> None:
    provider = provider_for(tke)
    tree = tmp_path / "repo"
    tree.mkdir()
    names = [f"cache-{i}" for i in range(8)]
    for name in names:
        write_cache(tree, name, "nginx:1.27.2", "busybox:1.36.1")
    tke.throttle(0.3)
    reconciler = reconciler_for(provider, tmp_path / "data")
    passes = 0

    def converged() -> bool:
        nonlocal passes
        passes += 1
        return reconciler.reconcile(tree=tree, revision="c" * 40).converged

    wait_for(converged, timeout=30, what="the repository to converge under throttling")
    assert any(c.error == "RequestLimitExceeded" for c in tke.calls)
    assert sorted(c["ImageCacheName"] for c in tke.caches()) == names  # no duplicates
    provider.close()


# ------------------------------------------------------------------ secrets


def test_no_secret_leaks_into_logs_errors_or_the_status_record(
    tke: TkeEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tencentcloud_sdk_common")  # worst case: SDK dumps on
    write_pull_secret(tmp_path / "secrets", "team/regcred", registry="registry.example.com")
    provider = provider_for(tke, secrets_dir=tmp_path / "secrets", max_attempts=2)
    messages: list[str] = []

    cache = provider.create(
        spec("web", "registry.example.com/team/api:1", image_pull_secrets=("team/regcred",)),
        owner="gitsync",
    )
    ready = wait_status(provider, "web", CacheStatus.READY)
    provider.update(
        spec("web", "registry.example.com/team/api:2", image_pull_secrets=("team/regcred",)),
        ready,
    )
    tke.throttle(1.0)
    for failing in (provider.observe, lambda: provider.delete(cache)):
        with pytest.raises(TemporaryError) as caught:
            failing()
        messages.append(str(caught.value))
    tke.throttle(0.0)
    tke.inject_raw(content_type="text/html", body=b"<html>" + SECRET_KEY.encode() + b"</html>")
    with pytest.raises(TencentCloudResponseError) as raw:
        provider.observe()
    messages.append(str(raw.value))

    tree = tmp_path / "repo"
    tree.mkdir()
    write_cache(tree, "api", "nginx:1.27.2")
    wrong = provider_for(tke, secret_key="wrong-but-also-secret-0001")
    result = reconciler_for(wrong, tmp_path / "data").reconcile(tree=tree, revision="d" * 40)
    assert result.error is not None
    assert "AuthFailure.SignatureFailure" in result.error
    messages.append(result.error)

    record = (tmp_path / "data").rglob("*")
    stored = "".join(p.read_text(encoding="utf-8") for p in record if p.is_file())
    assert "AuthFailure.SignatureFailure" in stored
    everything = "\n".join([caplog.text, stored, *messages, repr(provider.settings)])
    assert "SendRequest" not in caplog.text  # the SDK's request dumps are filtered out
    for secret in (SECRET_ID, SECRET_KEY, REGISTRY_PASSWORD, "wrong-but-also-secret-0001"):
        assert secret not in everything
    # ... while the password did reach the API, where it belongs.
    assert tke.stored(cache.cache_id)["credentials"][0]["Password"] == REGISTRY_PASSWORD


# ---------------------------------------------------------- the emulator itself


def test_the_emulators_answers_fit_the_sdks_models(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    """A field the SDK does not know would warn "fileds are useless": the emulator is faithful."""
    provider.create(spec("web", retention_days=2), owner="gitsync")
    wait_status(provider, "web", CacheStatus.READY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for item in tke.caches():
            models.ImageCache()._deserialize(item)
        models.DescribeImageCachesResponse()._deserialize(
            {"TotalCount": 1, "ImageCaches": tke.caches(), "RequestId": "r"}
        )


def test_the_emulator_rejects_fields_the_sdk_does_not_know(tke: TkeEmulator) -> None:
    client = raw_client(tke)
    with pytest.raises(TencentCloudSDKException) as caught:
        client.call("DescribeImageCaches", {"Limit": 50, "Bogus": 1})
    assert caught.value.code == "UnknownParameter"
    assert tke.calls[-1].error == "UnknownParameter"


def test_the_emulator_finishes_builds_on_its_own_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock()
    with running_emulator(monkeypatch, clock=clock, ready_after=30.0) as tke:
        provider = provider_for(tke, clock=clock)
        provider.create(spec("web"), owner="gitsync")
        assert one(provider, "web").status is CacheStatus.PENDING
        clock.advance(29)
        assert one(provider, "web").status is CacheStatus.PENDING
        clock.advance(1)
        assert one(provider, "web").status is CacheStatus.READY
        provider.close()


def test_a_request_signed_with_a_skewed_clock_is_refused(tke: TkeEmulator) -> None:
    """A timestamp more than five minutes off is refused, as the real API does."""
    provider = provider_for(tke)
    real = time.time
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: real() - 600)
        with pytest.raises(TencentCloudAuthError, match="SignatureExpire"):
            provider.observe()

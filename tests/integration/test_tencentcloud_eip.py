"""Security groups and the EIP annotation on the Tencent Cloud backend, through the SDK.

What the spec asks for must reach `CreateImageCache` as the API reference
(457/70861) names it: `securityGroupIds` as `SecurityGroupIds` (before the
`--security-group-id` default), the annotation
`eks.tke.cloud.tencent.com/eip-attributes` as `AutoCreateEip` and
`AutoCreateEipAttribute`. `UpdateImageCache` has no EIP fields, so a changed
EIP replaces the cache; and since the API never returns either setting, the
provider's tags carry them, so that a plan after an apply is empty. The
emulator checks these parameters as the API does: the last tests show that it
refuses what the real API refuses, so a provider that regresses fails here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.tke.v20180525 import tke_client
from tke_fixtures import (
    REGION,
    SECRET_ID,
    SECRET_KEY,
    SECURITY_GROUPS,
    SUBNET_ID,
    VPC_ID,
    TkeEmulator,
    one,
    provider_for,
    running_emulator,
    spec,
    wait_for,
)

from gitsync.controller_record import RecordFile
from gitsync.model import ActionKind, CacheStatus, EipAttributes, ObservedCache
from gitsync.pricing import PriceTable
from gitsync.providers.tencentcloud import TencentCloudProvider
from gitsync.reconciler import ReconcilePolicy, Reconciler

pytestmark = pytest.mark.filterwarnings(
    # The SDK signs with datetime.utcfromtimestamp, deprecated from Python 3.12 on.
    "ignore:datetime.datetime.utcfromtimestamp:DeprecationWarning"
)

KNOWN_GROUPS = (*SECURITY_GROUPS, "sg-1cghhuuu", "sg-33ocnj9n")
EIP2 = EipAttributes(internet_max_bandwidth_out=2)


@pytest.fixture
def tke(monkeypatch: pytest.MonkeyPatch) -> Iterator[TkeEmulator]:
    with running_emulator(monkeypatch, security_groups=KNOWN_GROUPS) as emulator:
        yield emulator


@pytest.fixture
def provider(tke: TkeEmulator) -> Iterator[TencentCloudProvider]:
    made = provider_for(tke)
    yield made
    made.close()


def ready(provider: TencentCloudProvider, name: str) -> ObservedCache:
    wait_for(lambda: one(provider, name).status is CacheStatus.READY, what=f"{name} Ready")
    return one(provider, name)


def sent(tke: TkeEmulator, action: str) -> list[dict[str, object]]:
    return [c.params for c in tke.calls if c.action == action and c.error is None]


# ------------------------------------------------------------------ create


def test_the_clouds_second_sample_creates_an_eip_with_its_attributes(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    created = provider.create(spec("more-para", eip=EIP2), owner="gitsync")

    [params] = sent(tke, "CreateImageCache")
    assert params["AutoCreateEip"] is True
    assert params["AutoCreateEipAttribute"] == {"InternetMaxBandwidthOut": 2}
    assert "ExistedEipId" not in params  # no documented annotation names an existing EIP
    assert params["SecurityGroupIds"] == list(SECURITY_GROUPS)  # the flag: the spec has none
    assert tke.stored(created.cache_id)["eip"] == {"auto": {"InternetMaxBandwidthOut": 2}}
    observed = ready(provider, "more-para")
    assert observed.eip == EIP2  # read back from the tag: the API never returns it
    assert observed.security_group_ids == ()


def test_an_empty_annotation_asks_for_an_eip_with_the_defaults(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    provider.create(spec("defaults", eip=EipAttributes()), owner="gitsync")
    [params] = sent(tke, "CreateImageCache")
    assert params["AutoCreateEip"] is True
    assert "AutoCreateEipAttribute" not in params
    assert ready(provider, "defaults").eip == EipAttributes()


def test_every_eip_attribute_is_sent_with_its_sdk_name(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    eip = EipAttributes(
        delete_policy="Never", internet_service_provider="BGP", internet_max_bandwidth_out=100
    )
    provider.create(spec("all", eip=eip), owner="gitsync")
    [params] = sent(tke, "CreateImageCache")
    assert params["AutoCreateEipAttribute"] == {
        "DeletePolicy": "Never",
        "InternetServiceProvider": "BGP",
        "InternetMaxBandwidthOut": 100,
    }
    assert ready(provider, "all").eip == eip


def test_security_groups_from_the_spec_beat_the_flag_and_keep_their_order(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    created = provider.create(
        spec("grouped", security_group_ids=("sg-33ocnj9n", "sg-1cghhuuu")), owner="gitsync"
    )
    [params] = sent(tke, "CreateImageCache")
    assert params["SecurityGroupIds"] == ["sg-33ocnj9n", "sg-1cghhuuu"]
    assert "AutoCreateEip" not in params
    assert tke.stored(created.cache_id)["security_groups"] == ["sg-33ocnj9n", "sg-1cghhuuu"]
    assert ready(provider, "grouped").security_group_ids == ("sg-33ocnj9n", "sg-1cghhuuu")


def test_without_groups_in_the_spec_or_a_flag_none_are_sent(tke: TkeEmulator) -> None:
    provider = provider_for(tke, security_group_ids=())
    provider.create(spec("bare"), owner="gitsync")
    [params] = sent(tke, "CreateImageCache")
    assert "SecurityGroupIds" not in params
    provider.close()


# ------------------------------------------------------------------ update


def test_new_security_groups_update_in_place_without_eip_fields(
    tke: TkeEmulator, provider: TencentCloudProvider
) -> None:
    provider.create(spec("web", eip=EIP2), owner="gitsync")
    before = ready(provider, "web")
    tke.reset_calls()

    provider.update(spec("web", eip=EIP2, security_group_ids=("sg-1cghhuuu",)), before)

    assert tke.counts() == {"UpdateImageCache": 1}
    [params] = sent(tke, "UpdateImageCache")
    assert params["ImageCacheId"] == before.cache_id
    assert params["SecurityGroupIds"] == ["sg-1cghhuuu"]
    assert not {"AutoCreateEip", "AutoCreateEipAttribute", "ExistedEipId"} & set(params)
    after = ready(provider, "web")
    assert after.cache_id == before.cache_id
    assert (after.security_group_ids, after.eip) == (("sg-1cghhuuu",), EIP2)


@pytest.mark.parametrize(
    ("was", "now"),
    [(None, EIP2), (EIP2, None), (EIP2, EipAttributes(internet_max_bandwidth_out=5))],
    ids=["added", "removed", "changed"],
)
def test_a_changed_eip_replaces_the_cache_create_then_delete(
    tke: TkeEmulator,
    provider: TencentCloudProvider,
    was: EipAttributes | None,
    now: EipAttributes | None,
) -> None:
    provider.create(spec("web", eip=was), owner="gitsync")
    before = ready(provider, "web")
    tke.reset_calls()

    replaced = provider.update(spec("web", eip=now), before)

    assert [c.action for c in tke.calls] == ["CreateImageCache", "DeleteImageCaches"]
    assert replaced.cache_id != before.cache_id
    [params] = sent(tke, "CreateImageCache")
    if now is None:
        assert not {"AutoCreateEip", "AutoCreateEipAttribute"} & set(params)
    else:
        assert params["AutoCreateEip"] is True
        assert params["AutoCreateEipAttribute"] == now.api()
    after = ready(provider, "web")
    assert (after.cache_id, after.eip) == (replaced.cache_id, now)


# ----------------------------------------------------------- reconcile passes


def write(tree: Path, name: str, body: str) -> None:
    (tree / f"{name}.yaml").write_text(
        f"apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n{body}", encoding="utf-8"
    )


def reconciler_for(provider: TencentCloudProvider, data: Path) -> Reconciler:
    return Reconciler(
        provider=provider,
        records=RecordFile(data),
        policy=ReconcilePolicy(
            controller_id="gitsync", backoff_base_seconds=0.01, backoff_max_seconds=0.02
        ),
        prices=PriceTable(),
        rng=random.Random(5),
    )


SAMPLE = """\
metadata:
  annotations:
    "eks.tke.cloud.tencent.com/eip-attributes": '{eip}'
  labels:
    team: web
  name: sample
spec:
  images: [nginx:1.27.2, mysql:8.4.2]
  imageCacheSize: 30
  retentionDays: 7
  securityGroupIds: [{groups}]
"""


def test_a_plan_after_an_apply_is_empty_and_only_an_eip_change_recreates(
    tke: TkeEmulator, provider: TencentCloudProvider, tmp_path: Path
) -> None:
    tree = tmp_path / "repo"
    tree.mkdir()
    write(tree, "sample", SAMPLE.format(eip='{"InternetMaxBandwidthOut":2}', groups="sg-1cghhuuu"))
    reconciler = reconciler_for(provider, tmp_path / "data")

    first = reconciler.reconcile(tree=tree, revision="a" * 40)
    assert first.error is None
    assert [a.kind for a in first.plan.changes] == [ActionKind.CREATE]  # type: ignore[union-attr]
    ready(provider, "sample")
    tke.reset_calls()

    # Labels have no place in the API, and the EIP and groups come back from tags: no diff,
    # however the annotation is spelled.
    write(
        tree,
        "sample",
        SAMPLE.format(eip='{ "InternetMaxBandwidthOut" : 2 }', groups="sg-1cghhuuu").replace(
            "team: web", "team: api"
        ),
    )
    second = reconciler.reconcile(tree=tree, revision="b" * 40)
    assert second.error is None
    assert second.plan is not None
    assert second.plan.changes == ()
    assert set(tke.counts()) == {"DescribeImageCaches"}

    write(tree, "sample", SAMPLE.format(eip='{"InternetMaxBandwidthOut":2}', groups="sg-33ocnj9n"))
    third = reconciler.reconcile(tree=tree, revision="c" * 40)
    assert third.plan is not None
    [update] = third.plan.changes
    assert update.kind is ActionKind.UPDATE
    assert update.reason == "securityGroupIds: [sg-1cghhuuu] \N{RIGHTWARDS ARROW} [sg-33ocnj9n]"
    assert tke.counts()["UpdateImageCache"] == 1
    ready(provider, "sample")

    write(tree, "sample", SAMPLE.format(eip='{"InternetMaxBandwidthOut":5}', groups="sg-33ocnj9n"))
    tke.reset_calls()
    fourth = reconciler.reconcile(tree=tree, revision="d" * 40)
    assert fourth.error is None
    assert fourth.plan is not None
    [recreate] = fourth.plan.changes
    assert recreate.kind is ActionKind.RECREATE
    assert recreate.reason.endswith("UpdateImageCache cannot change the EIP settings: recreated")
    counts = tke.counts()
    assert (counts["CreateImageCache"], counts["DeleteImageCaches"]) == (1, 1)
    assert "UpdateImageCache" not in counts
    ready(provider, "sample")

    tke.reset_calls()
    fifth = reconciler.reconcile(tree=tree, revision="e" * 40)
    assert fifth.plan is not None
    assert fifth.plan.changes == ()
    assert set(tke.counts()) == {"DescribeImageCaches"}


# ------------------------------------------- the emulator refuses what the API does


def raw_client(tke: TkeEmulator) -> tke_client.TkeClient:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=tke.endpoint))
    return tke_client.TkeClient(credential.Credential(SECRET_ID, SECRET_KEY), REGION, profile)


BASE = {"Images": ["nginx:1.27.2"], "VpcId": VPC_ID, "SubnetId": SUBNET_ID, "ImageCacheName": "x"}


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        ({"AutoCreateEip": "true"}, "InvalidParameter", "AutoCreateEip must be a boolean"),
        (
            {"AutoCreateEip": True, "AutoCreateEipAttribute": {"InternetMaxBandwidthOut": "2"}},
            "InvalidParameter",
            "InternetMaxBandwidthOut must be int",
        ),
        (
            {"AutoCreateEipAttribute": {"InternetMaxBandwidthOut": True}},
            "InvalidParameter",
            "must be int",
        ),
        (
            {"AutoCreateEipAttribute": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR"}},
            "UnknownParameter",
            "AutoCreateEipAttribute.InternetChargeType",
        ),
        ({"AutoCreateEipAttribute": [2]}, "InvalidParameter", "must be an object"),
        (
            {"AutoCreateEip": False, "AutoCreateEipAttribute": {"DeletePolicy": "Never"}},
            "InvalidParameterValue",
            "contradicts AutoCreateEip false",
        ),
        (
            {"AutoCreateEip": True, "AutoCreateEipAttribute": {"InternetMaxBandwidthOut": 0}},
            "InvalidParameterValue",
            "1 or more",
        ),
        (
            {"ExistedEipId": "eip-1cghhuuu", "AutoCreateEip": True},
            "InvalidParameter",
            "mutually exclusive",
        ),
        (
            {"ExistedEipId": "eip-1cghhuuu", "AutoCreateEipAttribute": {}},
            "InvalidParameter",
            "mutually exclusive",
        ),
        ({"SecurityGroupIds": "sg-1cghhuuu"}, "InvalidParameter", "list of strings"),
        ({"SecurityGroupIds": ["default"]}, "InvalidParameterValue", "not a security group"),
        ({"SecurityGroupIds": ["sg-unknown1"]}, "InvalidParameterValue", "does not exist"),
        ({"EipAttribute": {}}, "UnknownParameter", "EipAttribute"),
    ],
)
def test_the_emulator_refuses_bad_eip_and_group_parameters(
    tke: TkeEmulator, extra: dict[str, object], code: str, fragment: str
) -> None:
    with pytest.raises(TencentCloudSDKException) as caught:
        raw_client(tke).call("CreateImageCache", {**BASE, **extra})
    assert caught.value.code == code
    assert fragment in str(caught.value.message)
    assert tke.caches() == []  # refused before anything was created


def test_the_emulator_takes_an_existing_eip_and_the_documented_combinations(
    tke: TkeEmulator,
) -> None:
    client = raw_client(tke)
    client.call("CreateImageCache", {**BASE, "ExistedEipId": "eip-1cghhuuu"})
    client.call("CreateImageCache", {**BASE, "AutoCreateEipAttribute": {"DeletePolicy": ""}})
    client.call("CreateImageCache", {**BASE, "AutoCreateEip": False})
    stored = [tke.stored(c["ImageCacheId"])["eip"] for c in tke.caches()]
    assert stored == [{"existing": "eip-1cghhuuu"}, {"auto": {"DeletePolicy": ""}}, None]


@pytest.mark.parametrize("field", ["AutoCreateEip", "AutoCreateEipAttribute", "ExistedEipId"])
def test_update_image_cache_has_no_eip_fields(tke: TkeEmulator, field: str) -> None:
    client = raw_client(tke)
    client.call("CreateImageCache", BASE)
    [cache] = tke.caches()
    values: dict[str, object] = {
        "AutoCreateEip": True,
        "AutoCreateEipAttribute": {},
        "ExistedEipId": "eip-1",
    }
    with pytest.raises(TencentCloudSDKException) as caught:
        client.call(
            "UpdateImageCache", {"ImageCacheId": cache["ImageCacheId"], field: values[field]}
        )
    assert caught.value.code == "UnknownParameter"
    assert field in str(caught.value.message)

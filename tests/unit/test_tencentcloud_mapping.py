"""The pure parts of the Tencent Cloud backend: API records → model, errors → classes, tags,
registry credentials, settings and credentials files. No server involved."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from gitsync.errors import ConfigError, PermanentError, TemporaryError
from gitsync.model import (
    CLASSIC_FIELDS,
    EIP_FIELD,
    SECURITY_GROUPS_FIELD,
    CacheEvent,
    CacheSpec,
    CacheStatus,
    EipAttributes,
)
from gitsync.providers.credentials import CredentialError
from gitsync.providers.tencentcloud import (
    EIP_TAG,
    OWNER_TAG,
    PRUNE_TAG,
    PULL_SECRETS_TAG,
    SECURITY_GROUPS_TAG,
    TENCENTCLOUD_FIELDS,
    TencentCloudAPIError,
    TencentCloudAuthError,
    TencentCloudCredentials,
    TencentCloudInvalidParameterError,
    TencentCloudNotFoundError,
    TencentCloudResponseError,
    TencentCloudSettings,
    TencentCloudTransientError,
    classify_error,
    eip_params,
    load_credentials_file,
    observed_from_api,
    ownership_tags,
    parse_api_time,
    registry_credentials,
)

FULL: dict[str, Any] = {
    "ImageCacheId": "imc-0001",
    "ImageCacheName": "web-base",
    "ImageCacheSize": 30,
    "Images": ["nginx:1.27.2", "registry.example.com/team/api:1"],
    "CreationTime": "2026-11-22T03:00:00Z",
    "ExpireDateTime": "2026-11-29T11:00:00+08:00",
    "LastMatchedTime": "2026-11-23 11:30:00",  # no offset: China Standard Time
    "SnapshotId": "snap-0001",
    "Status": "Ready",
    "RetentionDays": 7,
    "Events": [
        {
            "ImageCacheId": "imc-0001",
            "Type": "Normal",
            "Reason": "Created",
            "Message": "2 images cached",
            "FirstTimestamp": "2026-11-22T03:01:00Z",
            "LastTimestamp": "2026-11-22T03:02:00Z",
        }
    ],
    "ImageRegistryCredentials": [{"Server": "registry.example.com", "Username": "robot"}],
    "Tags": [
        {"Key": OWNER_TAG, "Value": "gitsync"},
        {"Key": PRUNE_TAG, "Value": "disabled"},
        {"Key": PULL_SECRETS_TAG, "Value": "team/regcred ops/other"},
        {"Key": SECURITY_GROUPS_TAG, "Value": "sg-b sg-a"},
        {"Key": EIP_TAG, "Value": "auto InternetMaxBandwidthOut=2 DeletePolicy=Never"},
        {"Key": "cost-center", "Value": "42"},
    ],
}


def item(**changes: Any) -> dict[str, Any]:
    record = dict(FULL)
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


# ------------------------------------------------------------------ records


def test_every_documented_field_maps_onto_the_model() -> None:
    cache = observed_from_api(FULL)
    assert cache.name == "web-base"
    assert cache.cache_id == "imc-0001"
    assert cache.status is CacheStatus.READY
    assert cache.images == ("nginx:1.27.2", "registry.example.com/team/api:1")
    assert cache.image_cache_size_gib == 30
    assert cache.retention_days == 7
    assert cache.snapshot_id == "snap-0001"
    assert cache.created_at == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert cache.expires_at == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert cache.last_matched_at == datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    assert cache.owner == "gitsync"
    assert cache.prune is False
    assert cache.image_pull_secrets == ("team/regcred", "ops/other")
    assert cache.security_group_ids == ("sg-b", "sg-a")  # in the order the spec gave them
    assert cache.eip == EipAttributes(delete_policy="Never", internet_max_bandwidth_out=2)
    assert (cache.labels, cache.annotations) == ((), ())  # the API has no place for them
    assert cache.content_bytes is None
    assert cache.events == (
        CacheEvent(
            type="Normal",
            reason="Created",
            message="2 images cached",
            count=1,
            first_timestamp=datetime(2026, 11, 22, 3, 1, tzinfo=UTC),
            last_timestamp=datetime(2026, 11, 22, 3, 2, tzinfo=UTC),
        ),
    )


@pytest.mark.parametrize("status", list(CacheStatus))
def test_the_five_statuses_map_one_to_one(status: CacheStatus) -> None:
    cache = observed_from_api(item(Status=status.value))
    assert cache.status is status
    assert all(e.reason != "UnknownStatus" for e in cache.events)


@pytest.mark.parametrize("raw", ["Hibernating", "ready", "", 7, None])
def test_an_unknown_or_missing_status_is_failed_with_a_warning_naming_it(raw: object) -> None:
    record = item()
    record["Status"] = raw
    cache = observed_from_api(record)
    assert cache.status is CacheStatus.FAILED
    warning = cache.events[-1]
    assert (warning.type, warning.reason) == ("Warning", "UnknownStatus")
    assert repr(raw) in warning.message
    assert "Pending, Ready, Failed, Updating, UpdateFailed" in warning.message


def test_a_cache_without_the_owner_tag_has_no_owner_and_no_secrets() -> None:
    tags = [
        {"Key": PULL_SECRETS_TAG, "Value": "team/regcred"},
        {"Key": SECURITY_GROUPS_TAG, "Value": "sg-a"},
        {"Key": EIP_TAG, "Value": "auto"},
    ]
    cache = observed_from_api(item(Tags=tags))
    assert cache.owner is None
    assert cache.image_pull_secrets == ()  # another tool's tag is not trusted
    assert (cache.security_group_ids, cache.eip) == ((), None)
    assert cache.prune is True


@pytest.mark.parametrize("tags", [None, [], [{"Key": OWNER_TAG, "Value": ""}], "junk"])
def test_missing_or_empty_ownership_means_unowned(tags: object) -> None:
    record = item()
    record["Tags"] = tags
    assert observed_from_api(record).owner is None


@pytest.mark.parametrize(
    ("value", "secrets"),
    [("-", ()), ("", ()), ("team/a", ("team/a",)), ("team/a  b", ("team/a", "b"))],
)
def test_the_pull_secrets_tag_reads_back(value: str, secrets: tuple[str, ...]) -> None:
    tags = [{"Key": OWNER_TAG, "Value": "gitsync"}, {"Key": PULL_SECRETS_TAG, "Value": value}]
    assert observed_from_api(item(Tags=tags)).image_pull_secrets == secrets


def test_sparse_records_fall_back_to_defaults() -> None:
    record = {"ImageCacheId": "imc-2", "ImageCacheName": "bare", "Status": "Pending"}
    cache = observed_from_api(record)
    assert cache.images == ()
    assert (cache.image_cache_size_gib, cache.retention_days) == (20, 0)
    assert cache.created_at is None
    assert cache.expires_at is None
    assert cache.snapshot_id is None
    assert cache.events == ()


@pytest.mark.parametrize("missing", ["ImageCacheId", "ImageCacheName"])
def test_a_record_without_id_or_name_is_a_response_error(missing: str) -> None:
    with pytest.raises(TencentCloudResponseError, match="without ImageCacheId or ImageCacheName"):
        observed_from_api(item(**{missing: None}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T03:00:00Z", datetime(2026, 11, 22, 3, tzinfo=UTC)),
        ("2026-11-22T11:00:00+08:00", datetime(2026, 11, 22, 3, tzinfo=UTC)),
        ("2026-11-22 11:00:00", datetime(2026, 11, 22, 3, tzinfo=UTC)),
        ("2026-11-22T03:00:00.250Z", datetime(2026, 11, 22, 3, 0, 0, 250000, tzinfo=UTC)),
        ("", None),
        ("0000-00-00 00:00:00", None),
        ("0001-01-01T00:00:00Z", None),
        ("yesterday", None),
        (None, None),
        (1700000000, None),
    ],
)
def test_api_times(text: object, expected: datetime | None) -> None:
    assert parse_api_time(text) == expected


def test_the_zone_of_times_without_offset_is_configurable() -> None:
    assert parse_api_time("2026-11-22 03:00:00", naive_offset_hours=0) == datetime(
        2026, 11, 22, 3, tzinfo=UTC
    )


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "kind", "temporary"),
    [
        ("RequestLimitExceeded", TencentCloudTransientError, True),
        ("RequestLimitExceeded.UinLimitExceeded", TencentCloudTransientError, True),
        ("InternalError", TencentCloudTransientError, True),
        ("InternalError.UnexpectedInternal", TencentCloudTransientError, True),
        ("ResourceUnavailable.EksContainerStatus", TencentCloudTransientError, True),
        ("ResourceInsufficient", TencentCloudTransientError, True),
        ("ClientNetworkError", TencentCloudTransientError, True),
        ("InternalError.CidrConflictWithVpcCidr", TencentCloudAPIError, False),
        ("InternalError.TradeInsufficientBalance", TencentCloudAPIError, False),
        ("AuthFailure.SignatureFailure", TencentCloudAuthError, False),
        ("AuthFailure.SecretIdNotFound", TencentCloudAuthError, False),
        ("UnauthorizedOperation", TencentCloudAuthError, False),
        ("InternalError.CamNoAuth", TencentCloudAuthError, False),
        ("InvalidParameter", TencentCloudInvalidParameterError, False),
        ("InvalidParameterValue.ReservedTagKey", TencentCloudInvalidParameterError, False),
        ("MissingParameter", TencentCloudInvalidParameterError, False),
        ("UnknownParameter", TencentCloudInvalidParameterError, False),
        ("ResourceNotFound", TencentCloudNotFoundError, False),
        ("FailedOperation", TencentCloudAPIError, False),
        ("LimitExceeded", TencentCloudAPIError, False),
    ],
)
def test_error_codes_map_to_classes(code: str, kind: type[Exception], temporary: bool) -> None:
    error = classify_error(
        action="CreateImageCache", code=code, message="it broke", request_id="req-1"
    )
    assert type(error) is kind
    assert isinstance(error, TemporaryError) is temporary
    assert isinstance(error, PermanentError) is not temporary
    assert str(error).startswith(f"TKE CreateImageCache failed: {code}: it broke (RequestId req-1)")


def test_throttling_carries_a_retry_hint_and_says_it_never_ran() -> None:
    error = classify_error(
        action="DescribeImageCaches",
        code="RequestLimitExceeded",
        message="slow down",
        request_id="r",
        throttle_retry_after=1.5,
    )
    assert isinstance(error, TencentCloudTransientError)
    assert error.retry_after == 1.5
    assert error.throttled
    internal = classify_error(action="X", code="InternalError", message="", request_id=None)
    assert isinstance(internal, TencentCloudTransientError)
    assert internal.retry_after is None
    assert not internal.throttled
    assert "(no message) (no RequestId)" in str(internal)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("AuthFailure.SignatureFailure", "TENCENTCLOUD_SECRET_KEY"),
        ("AuthFailure.SecretIdNotFound", "TENCENTCLOUD_SECRET_ID"),
        ("AuthFailure.SignatureExpire", "clock"),
        ("UnauthorizedOperation", "tke:UpdateImageCache"),
        ("UnsupportedRegion", "--region"),
    ],
)
def test_permanent_errors_say_what_to_fix(code: str, hint: str) -> None:
    error = classify_error(action="UpdateImageCache", code=code, message="no", request_id="r")
    assert isinstance(error, TencentCloudAPIError)
    assert (error.code, error.api_message, error.request_id) == (code, "no", "r")
    assert hint in str(error)


# --------------------------------------------------------------------- tags


def test_ownership_tags_are_always_all_five() -> None:
    spec = CacheSpec(
        name="web",
        images=("nginx:1",),
        image_pull_secrets=("a/b", "c"),
        security_group_ids=("sg-1cghhuuu", "sg-33ocnj9n"),
        eip=EipAttributes(internet_service_provider="BGP", internet_max_bandwidth_out=2),
    )
    assert ownership_tags(spec, owner="gitsync") == [
        {"Key": OWNER_TAG, "Value": "gitsync"},
        {"Key": PRUNE_TAG, "Value": "enabled"},
        {"Key": PULL_SECRETS_TAG, "Value": "a/b c"},
        {"Key": SECURITY_GROUPS_TAG, "Value": "sg-1cghhuuu sg-33ocnj9n"},
        {"Key": EIP_TAG, "Value": "auto InternetServiceProvider=BGP InternetMaxBandwidthOut=2"},
    ]
    bare = CacheSpec(name="web", images=("nginx:1",), prune=False)
    assert ownership_tags(bare, owner="team@prod")[1:] == [
        {"Key": PRUNE_TAG, "Value": "disabled"},
        {"Key": PULL_SECRETS_TAG, "Value": "-"},
        {"Key": SECURITY_GROUPS_TAG, "Value": "-"},
        {"Key": EIP_TAG, "Value": "none"},
    ]


@pytest.mark.parametrize(
    "eip",
    [
        None,
        EipAttributes(),
        EipAttributes(internet_max_bandwidth_out=2),
        EipAttributes(delete_policy="0", internet_service_provider="CMCC"),  # "0" stays a string
        EipAttributes("Never", "BGP", 200),
    ],
)
def test_tags_round_trip_through_a_record(eip: EipAttributes | None) -> None:
    spec = CacheSpec(
        name="web",
        images=("nginx:1",),
        image_pull_secrets=("a/b",),
        prune=False,
        security_group_ids=("sg-b", "sg-a"),
        eip=eip,
    )
    cache = observed_from_api(item(Tags=ownership_tags(spec, owner="gitsync")))
    assert (cache.owner, cache.image_pull_secrets, cache.prune) == ("gitsync", ("a/b",), False)
    assert (cache.security_group_ids, cache.eip) == (("sg-b", "sg-a"), eip)


@pytest.mark.parametrize(
    ("value", "eip"),
    [
        ("none", None),
        ("", None),
        ("auto", EipAttributes()),
        ("auto InternetMaxBandwidthOut=5", EipAttributes(internet_max_bandwidth_out=5)),
        # Edited by hand: what can be read is read; a difference from Git then rebuilds.
        ("auto Colour=red InternetMaxBandwidthOut=x junk", EipAttributes()),
    ],
)
def test_the_eip_tag_reads_back(value: str, eip: EipAttributes | None) -> None:
    tags = [{"Key": OWNER_TAG, "Value": "gitsync"}, {"Key": EIP_TAG, "Value": value}]
    assert observed_from_api(item(Tags=tags)).eip == eip


def test_a_cache_made_before_the_new_tags_reads_as_without_groups_or_eip() -> None:
    cache = observed_from_api(item(Tags=[{"Key": OWNER_TAG, "Value": "gitsync"}]))
    assert (cache.security_group_ids, cache.eip) == ((), None)


def test_eip_attributes_map_to_create_image_cache_parameters() -> None:
    def params(eip: EipAttributes | None) -> dict[str, Any]:
        return eip_params(CacheSpec(name="web", images=("nginx:1",), eip=eip))

    assert params(None) == {}
    assert params(EipAttributes()) == {"AutoCreateEip": True}
    assert params(EipAttributes(internet_max_bandwidth_out=2)) == {
        "AutoCreateEip": True,
        "AutoCreateEipAttribute": {"InternetMaxBandwidthOut": 2},
    }
    assert params(EipAttributes("Never", "CTCC", 10)) == {
        "AutoCreateEip": True,
        "AutoCreateEipAttribute": {
            "DeletePolicy": "Never",
            "InternetServiceProvider": "CTCC",
            "InternetMaxBandwidthOut": 10,
        },
    }


def test_eip_values_a_tag_cannot_hold_are_refused_before_any_call() -> None:
    spec = CacheSpec(
        name="web", images=("nginx:1",), eip=EipAttributes(delete_policy="keep it, please")
    )
    with pytest.raises(PermanentError, match="DeletePolicy 'keep it, please' cannot be kept"):
        ownership_tags(spec, owner="gitsync")


def test_the_backend_keeps_groups_and_the_eip_and_recreates_for_the_eip() -> None:
    assert TENCENTCLOUD_FIELDS.kept == CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, EIP_FIELD}
    assert TENCENTCLOUD_FIELDS.updatable == CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD}
    assert TENCENTCLOUD_FIELDS.reason(EIP_FIELD) == (
        "UpdateImageCache cannot change the EIP settings"
    )


@pytest.mark.parametrize("owner", ["", "  ", "a,b", "x" * 256, "owner#1"])
def test_a_controller_id_that_cannot_be_a_tag_value_is_a_config_error(owner: str) -> None:
    with pytest.raises(ConfigError, match="--controller-id"):
        ownership_tags(CacheSpec(name="web", images=("nginx:1",)), owner=owner)


def test_too_many_pull_secrets_for_one_tag_value_are_refused() -> None:
    secrets = tuple(f"namespace-{i}/secret-name-{i}" for i in range(12))
    spec = CacheSpec(name="web", images=("nginx:1",), image_pull_secrets=secrets)
    with pytest.raises(PermanentError, match="more than the 255"):
        ownership_tags(spec, owner="gitsync")


def test_too_many_security_groups_for_one_tag_value_are_refused() -> None:
    groups = tuple(f"sg-{i:08d}" for i in range(24))
    spec = CacheSpec(name="web", images=("nginx:1",), security_group_ids=groups)
    with pytest.raises(PermanentError, match=r"securityGroupIds .* more than the 255"):
        ownership_tags(spec, owner="gitsync")


# -------------------------------------------------------------- credentials


def write_secret(folder: Path, name: str, auths: dict[str, Any]) -> None:
    namespace, _, secret = name.partition("/")
    config = json.dumps({"auths": auths}).encode()
    manifest = {
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }
    (folder / namespace).mkdir(parents=True, exist_ok=True)
    (folder / namespace / f"{secret}.json").write_text(json.dumps(manifest), encoding="utf-8")


def basic(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_registry_credentials_cover_only_the_registries_images_use(tmp_path: Path) -> None:
    write_secret(
        tmp_path,
        "team/regcred",
        {
            "https://registry.example.com/v1/": basic("robot", "pw-1"),
            "unused.example.com": basic("nobody", "pw-2"),
            "ccr.ccs.tencentyun.com": basic("ccr", "pw-3"),
        },
    )
    spec = CacheSpec(
        name="web",
        images=(
            "nginx:1.27.2",
            "registry.example.com/team/api:1",
            "registry.example.com/team/worker:1",
            "ccr.ccs.tencentyun.com/ns/app:2",
        ),
        image_pull_secrets=("team/regcred",),
    )
    credentials, missing = registry_credentials(spec, secrets_dir=tmp_path)
    assert missing == ()
    assert credentials == [
        {
            "Server": "ccr.ccs.tencentyun.com",
            "Username": "ccr",
            "Password": "pw-3",
            "Name": "gitsync-ccr-ccs-tencentyun-com",
        },
        {
            "Server": "registry.example.com",
            "Username": "robot",
            "Password": "pw-1",
            "Name": "gitsync-registry-example-com",
        },
    ]


def test_missing_secrets_are_reported_not_fatal(tmp_path: Path) -> None:
    spec = CacheSpec(name="web", images=("nginx:1",), image_pull_secrets=("team/absent",))
    assert registry_credentials(spec, secrets_dir=tmp_path) == ([], ("team/absent",))
    assert registry_credentials(spec, secrets_dir=None) == ([], ("team/absent",))


def test_a_malformed_secret_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "bad.json").write_text('{"kind": "Secret", "type": "Opaque"}')
    spec = CacheSpec(name="web", images=("nginx:1",), image_pull_secrets=("team/bad",))
    with pytest.raises(CredentialError, match="dockerconfigjson"):
        registry_credentials(spec, secrets_dir=tmp_path)


def test_two_credentials_for_one_registry_cannot_be_expressed(tmp_path: Path) -> None:
    write_secret(tmp_path, "team/a", {"registry.example.com/team-a": basic("a", "pw-a")})
    write_secret(tmp_path, "team/b", {"registry.example.com/team-b": basic("b", "pw-b")})
    spec = CacheSpec(
        name="web",
        images=("registry.example.com/team-a/x:1", "registry.example.com/team-b/y:1"),
        image_pull_secrets=("team/a", "team/b"),
    )
    with pytest.raises(PermanentError, match="one credential per registry") as caught:
        registry_credentials(spec, secrets_dir=tmp_path)
    assert "pw-a" not in str(caught.value)
    assert "pw-b" not in str(caught.value)


# ---------------------------------------------------- settings and secrets

SECRET_ID = "AKIDunitPlantedId0001"
SECRET_KEY = "unitPlantedSecretKey0001"


def test_credentials_never_show_in_a_repr() -> None:
    credentials = TencentCloudCredentials(secret_id=SECRET_ID, secret_key=SECRET_KEY, token="tok")
    assert SECRET_ID not in repr(credentials)
    assert SECRET_KEY not in repr(credentials)
    assert credentials.secrets() == (SECRET_ID, SECRET_KEY, "tok")


@pytest.mark.parametrize(
    ("secret_id", "secret_key", "message"),
    [("", SECRET_KEY, "secret id .* is empty"), (SECRET_ID, f"{SECRET_KEY}\n", "whitespace")],
)
def test_bad_credentials_are_config_errors_that_name_no_value(
    secret_id: str, secret_key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        TencentCloudCredentials(secret_id=secret_id, secret_key=secret_key, source="environment")
    assert SECRET_KEY not in str(caught.value)
    assert "environment" in str(caught.value)


def test_the_sdk_credentials_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(
        f"[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n"
        "[ci]\nsecret_id = AKIDci\nsecret_key = ci-key\ntoken = ci-token\n",
        encoding="utf-8",
    )
    default = load_credentials_file(path)
    assert (default.secret_id, default.secret_key, default.token) == (SECRET_ID, SECRET_KEY, None)
    assert str(path) in default.source
    ci = load_credentials_file(path, profile="ci")
    assert (ci.secret_id, ci.token) == ("AKIDci", "ci-token")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[other]\nsecret_id = a\nsecret_key = b\n", r"no \[default\] section \(sections: other\)"),
        ("[default]\nsecret_id = a\n", "needs secret_id and secret_key"),
        (f"secret_key = {SECRET_KEY}\n", "not an INI file"),
    ],
)
def test_a_bad_credentials_file_says_what_is_wrong_without_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "credentials"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        load_credentials_file(path)
    assert SECRET_KEY not in str(caught.value)


def test_a_missing_credentials_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials_file(tmp_path / "nope")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"region": "guangzhou"}, "--region"),
        ({"region": ""}, "--region"),
        ({"scheme": "ftp"}, "--tencentcloud-scheme"),
        ({"endpoint": "https://tke.example.com"}, "--tencentcloud-endpoint"),
        ({"endpoint": "tke.example.com/path"}, "--tencentcloud-endpoint"),
        ({"request_timeout_seconds": 0}, "timeout"),
        ({"max_attempts": 0}, "max attempts"),
        ({"vpc_id": " "}, "--vpc-id"),
    ],
)
def test_settings_are_validated(changes: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"region": "ap-guangzhou", **changes}
    with pytest.raises(ConfigError, match=message):
        TencentCloudSettings(**values)


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        (None, "tke.tencentcloudapi.com"),
        ("tke.ap-shanghai.tencentcloudapi.com", "tke.ap-shanghai.tencentcloudapi.com"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
    ],
)
def test_the_endpoint_defaults_to_the_public_one(endpoint: str | None, host: str) -> None:
    assert TencentCloudSettings(region="ap-guangzhou", endpoint=endpoint).host == host


def test_expiry_is_a_week_after_creation_in_the_example() -> None:
    cache = observed_from_api(FULL)
    assert cache.created_at is not None
    assert cache.expires_at == cache.created_at + timedelta(days=cache.retention_days)

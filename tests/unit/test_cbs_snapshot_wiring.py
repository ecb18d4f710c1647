"""Where the snapshot checks go and when they are on: endpoints, verdicts, the CLI's wiring.

The lookup's calls are tested against the emulator
(tests/integration/test_tencent_snapshots.py); here the pure parts: the CBS
endpoint a setting gives, the verdict of one `Snapshot`, and which backend and
flags turn the checks on, as the commands build their provider.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.cbs.v20170312", reason="needs the extra 'tencent'")

from gitsync import cli, wiring
from gitsync.config import CommandSettings
from gitsync.errors import ConfigError
from gitsync.model import ObservedCache, ObservedState, SnapshotCheck
from gitsync.providers.snapshots import SnapshotChecked
from gitsync.providers.tencentcloud import TencentCloudProvider, TencentCloudSettings
from gitsync.providers.tencentcloud.snapshots import CbsSnapshotLookup, verdict_for

REGION = "ap-guangzhou"
KEYS = {"TENCENTCLOUD_SECRET_ID": "AKIDplantedUnit0001", "TENCENTCLOUD_SECRET_KEY": "plantedKey01"}


@pytest.mark.parametrize(
    ("endpoint", "cbs_endpoint", "host"),
    [
        (None, None, "cbs.tencentcloudapi.com"),
        ("tke.internal.tencentcloudapi.com", None, "cbs.internal.tencentcloudapi.com"),
        ("tke.ap-guangzhou.tencentcloudapi.com", None, "cbs.ap-guangzhou.tencentcloudapi.com"),
        ("127.0.0.1:8443", None, "127.0.0.1:8443"),  # a gateway or test server: both APIs
        ("gateway.example.com", None, "gateway.example.com"),
        ("tke.internal.tencentcloudapi.com", "10.0.0.7:443", "10.0.0.7:443"),
        (None, "cbs.internal.tencentcloudapi.com", "cbs.internal.tencentcloudapi.com"),
    ],
)
def test_the_cbs_endpoint_follows_the_tke_endpoint_unless_given(
    endpoint: str | None, cbs_endpoint: str | None, host: str
) -> None:
    settings = TencentCloudSettings(region=REGION, endpoint=endpoint, cbs_endpoint=cbs_endpoint)
    assert settings.cbs_host == host


@pytest.mark.parametrize("bad", ["https://cbs.tencentcloudapi.com", "cbs.example.com/path", " "])
def test_a_cbs_endpoint_with_a_scheme_or_path_is_refused_naming_the_flag(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^--tencentcloud-cbs-endpoint: .* must be HOST"):
        TencentCloudSettings(region=REGION, cbs_endpoint=bad)


def test_the_verdict_of_one_snapshot() -> None:
    assert verdict_for("snap-1", None).result is SnapshotCheck.MISSING
    assert verdict_for("snap-1", None).detail == "is gone (DescribeSnapshots)"
    assert verdict_for("snap-1", {"SnapshotState": "NORMAL"}).result is SnapshotCheck.OK
    recycled = verdict_for("snap-1", {"SnapshotState": "TORECYCLE"})
    assert recycled.result is SnapshotCheck.DAMAGED
    assert recycled.problem == (
        "snapshot snap-1 is TORECYCLE, due to be recycled (the account is in arrears)"
        " (DescribeSnapshots)"
    )
    with pytest.raises(ValueError, match="no SnapshotState"):
        verdict_for("snap-1", {"SnapshotId": "snap-1"})


# ------------------------------------------------------------------------ the CLI wiring


class Plain:
    """A provider that is not Tencent's: the operator's ImageCache objects, say."""

    name = "kubernetes"

    def __init__(self) -> None:
        self.closed = False

    def observe(self) -> ObservedState:
        return ObservedState(caches=())

    def create(self, spec: object, *, owner: str) -> ObservedCache:
        raise AssertionError("not called")

    def update(self, spec: object, current: ObservedCache) -> ObservedCache:
        raise AssertionError("not called")

    def delete(self, current: ObservedCache) -> None:
        raise AssertionError("not called")

    def close(self) -> None:
        self.closed = True


def parsed(*flags: str) -> object:
    return cli.build_parser().parse_args(["plan", *flags])


def checks(args: object, env: Mapping[str, str], plain: Plain) -> object:
    """The kubernetes provider `plain` as the commands wire it, with these flags and env."""
    settings = CommandSettings(flags=vars(args), env=env, config_path=None)
    credentials = cli.TencentCredentials(settings, env)
    return wiring.kubernetes_snapshot_checks(plain, settings=settings, credentials=credentials)  # type: ignore[arg-type]


def wired(flags: tuple[str, ...], env: Mapping[str, str]) -> tuple[object, Plain]:
    plain = Plain()
    return checks(parsed(*flags), env, plain), plain


def test_kubernetes_with_a_region_and_credentials_checks_snapshots_in_cbs() -> None:
    provider, plain = wired(
        ("--region", REGION, "--snapshot-check-interval", "30m"), {**KEYS, "HOME": "/nonexistent"}
    )

    assert isinstance(provider, SnapshotChecked)
    assert provider.provider is plain
    assert provider.name == "kubernetes"
    assert isinstance(provider._lookup, CbsSnapshotLookup)
    assert provider._lookup.host == "cbs.tencentcloudapi.com"
    assert provider._interval == 1800


def test_kubernetes_reads_the_region_from_the_environment_and_a_credentials_file(
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\nsecret_id = AKIDfile0001\nsecret_key = fileKey0001\n")

    provider, _ = wired(
        ("--tencentcloud-credentials-file", str(credentials)), {"TENCENTCLOUD_REGION": REGION}
    )

    assert isinstance(provider, SnapshotChecked)


@pytest.mark.parametrize(
    ("flags", "env", "missing"),
    [
        (("--region", REGION), {}, "the credentials"),
        ((), KEYS, "the region"),
    ],
    ids=["region-only", "credentials-only"],
)
def test_kubernetes_with_half_of_what_the_checks_need_warns_and_does_not_check(
    flags: tuple[str, ...],
    env: Mapping[str, str],
    missing: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gitsync.cli"):
        provider, plain = wired(flags, env)

    assert provider is plain
    assert "snapshot checks are off: on the kubernetes backend they need both" in caplog.text
    assert f"{missing} is missing" in caplog.text


def test_kubernetes_without_tencent_settings_or_with_a_zero_interval_does_not_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # ~/.tencentcloud/credentials alone does not turn the checks on: only explicit ones do.
    home = tmp_path / "home"
    (home / ".tencentcloud").mkdir(parents=True)
    (home / ".tencentcloud" / "credentials").write_text(
        "[default]\nsecret_id = AKIDhome0001\nsecret_key = homeKey0001\n"
    )
    with caplog.at_level(logging.WARNING, logger="gitsync.cli"):
        nothing, plain = wired((), {"HOME": str(home)})
        off, other = wired(("--region", REGION, "--snapshot-check-interval", "0"), KEYS)

    assert nothing is plain
    assert off is other
    assert caplog.text == ""


def test_a_bad_interval_names_the_flag_and_closes_the_provider() -> None:
    plain = Plain()
    args = parsed("--region", REGION, "--snapshot-check-interval", "soon")

    with pytest.raises(ConfigError, match=r"^--snapshot-check-interval: 'soon' is not a duration"):
        checks(args, KEYS, plain)

    assert plain.closed


def tencent(*flags: str, env: Mapping[str, str] = KEYS) -> object:
    args = cli.build_parser().parse_args(["plan", "--provider", "tencentcloud", *flags])
    settings = CommandSettings(flags=vars(args), env=env, config_path=None)
    return wiring.tencent_provider(settings, credentials=cli.TencentCredentials(settings, env))


def test_the_tencentcloud_backend_checks_snapshots_every_hour_by_default() -> None:
    provider = tencent(
        "--region", REGION, "--tencentcloud-endpoint", "tke.internal.tencentcloudapi.com"
    )

    assert isinstance(provider, SnapshotChecked)
    assert isinstance(provider.provider, TencentCloudProvider)
    assert provider._interval == 3600
    assert provider._lookup.host == "cbs.internal.tencentcloudapi.com"
    provider.close()


def test_the_snapshot_check_settings_come_from_flags_and_the_environment() -> None:
    env = {**KEYS, "GITSYNC_SNAPSHOT_CHECK_INTERVAL": "10m"}
    provider = tencent("--region", REGION, "--tencentcloud-cbs-endpoint", "127.0.0.1:9443", env=env)

    assert isinstance(provider, SnapshotChecked)
    assert provider._interval == 600
    assert provider._lookup.host == "127.0.0.1:9443"
    provider.close()


def test_a_zero_interval_turns_the_checks_off_on_the_tencentcloud_backend() -> None:
    provider = tencent("--region", REGION, "--snapshot-check-interval", "0")

    assert isinstance(provider, TencentCloudProvider)
    provider.close()

"""Helpers for tests that drive TencentCloudProvider against the TKE emulator.

Test modules define their own fixtures on top of `running_emulator` and
`provider_for` (pytest collects fixtures from the test module, so importing a
fixture function would need a noqa; a context manager does not).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))  # tests/tke_emulator.py, also in pytest's importlib mode

from tke_emulator import TkeEmulator  # noqa: E402  # needs the sys.path line above

from gitsync.model import CacheSpec, ObservedCache  # noqa: E402
from gitsync.providers.snapshots import SnapshotChecked  # noqa: E402
from gitsync.providers.tencentcloud import (  # noqa: E402  # after the emulator on purpose
    TencentCloudCredentials,
    TencentCloudProvider,
    TencentCloudSettings,
)
from gitsync.providers.tencentcloud.snapshots import CbsSnapshotLookup  # noqa: E402

# Planted secrets: tests assert that none of them ever shows up in logs or messages.
SECRET_ID = "AKIDplantedGitsyncSecretId0001"
SECRET_KEY = "plantedGitsyncSecretKey0001XYZ"
REGISTRY_PASSWORD = "plantedRegistryPassword0001"
REGION = "ap-guangzhou"
VPC_ID = "vpc-gitsync1"
SUBNET_ID = "subnet-gitsync1"
SECURITY_GROUPS = ("sg-gitsync1",)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")

# Fast figures for tests: short emulator builds, tiny retry delays.
FAST = {
    "request_timeout_seconds": 5.0,
    "retry_base_seconds": 0.005,
    "retry_max_seconds": 0.02,
    "throttle_retry_after_seconds": 0.005,
    "delete_batch_window_seconds": 0.01,
}


@contextmanager
def running_emulator(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[TkeEmulator]:
    """A started emulator that knows the planted secrets; stopped afterwards."""
    for name in PROXY_VARIABLES:
        # The SDK reads HTTP(S)_PROXY itself; a proxy must not sit between a test and 127.0.0.1.
        monkeypatch.delenv(name, raising=False)
    options.setdefault("ready_after", 0.1)
    options.setdefault("region", REGION)
    emulator = TkeEmulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, **options)
    with emulator:
        yield emulator


def provider_for(
    emulator: TkeEmulator,
    *,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    **settings: Any,
) -> TencentCloudProvider:
    values: dict[str, Any] = {
        "region": REGION,
        "endpoint": emulator.endpoint,
        "scheme": "http",
        "vpc_id": VPC_ID,
        "subnet_id": SUBNET_ID,
        "security_group_ids": SECURITY_GROUPS,
        **FAST,
    }
    values.update(settings)
    return TencentCloudProvider(
        settings=TencentCloudSettings(**values),
        credentials=TencentCloudCredentials(secret_id=secret_id, secret_key=secret_key),
        clock=clock,
        sleep=sleep,
    )


def settings_for(emulator: TkeEmulator, **settings: Any) -> TencentCloudSettings:
    """Test settings pointed at the emulator: its CBS-only listener for DescribeSnapshots."""
    values: dict[str, Any] = {
        "region": REGION,
        "endpoint": emulator.endpoint,
        "cbs_endpoint": emulator.cbs_endpoint,
        "scheme": "http",
        "vpc_id": VPC_ID,
        "subnet_id": SUBNET_ID,
        "security_group_ids": SECURITY_GROUPS,
        **FAST,
    }
    values.update(settings)
    return TencentCloudSettings(**values)


def lookup_for(
    emulator: TkeEmulator,
    *,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    sleep: Callable[[float], None] = time.sleep,
    **settings: Any,
) -> CbsSnapshotLookup:
    """A CBS snapshot lookup against the emulator, with the planted secrets."""
    return CbsSnapshotLookup(
        settings=settings_for(emulator, **settings),
        credentials=TencentCloudCredentials(secret_id=secret_id, secret_key=secret_key),
        sleep=sleep,
    )


def checked_provider_for(
    emulator: TkeEmulator,
    *,
    interval_seconds: float = 3600.0,
    clock: Callable[[], float] = time.time,
    **settings: Any,
) -> SnapshotChecked:
    """The TKE provider with its snapshots checked in CBS, as `gitsync` wires it."""
    return SnapshotChecked(
        provider_for(emulator, clock=clock, **settings),
        lookup=lookup_for(emulator, **settings),
        interval_seconds=interval_seconds,
        clock=clock,
    )


def write_pull_secret(
    secrets_dir: Path,
    name: str,
    *,
    registry: str,
    username: str = "robot",
    password: str = REGISTRY_PASSWORD,
) -> None:
    """A kubernetes.io/dockerconfigjson Secret file, as `kubectl get secret -o json` prints it."""
    namespace, _, secret = name.partition("/")
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}})
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }
    folder = secrets_dir / namespace
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{secret}.json").write_text(json.dumps(manifest), encoding="utf-8")


def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll until `condition()` holds; fail (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


class ManualClock:
    """A clock tests move by hand, shared by the emulator and the provider."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(name: str, *images: str, **fields: object) -> CacheSpec:
    """A desired cache for the provider tests: nginx unless images are given."""
    return CacheSpec(name=name, images=images or ("nginx:1.27.2",), **fields)  # type: ignore[arg-type]


def one(provider: TencentCloudProvider, name: str) -> ObservedCache:
    """The one cache of that name the provider lists (fails if there are none or several)."""
    found = [c for c in provider.observe().caches if c.name == name]
    assert len(found) == 1, found
    return found[0]

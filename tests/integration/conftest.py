"""Fixtures: real docker-registry processes (anonymous, htpasswd Basic, token Bearer) on loopback.

All three registries share one filesystem storage: images are pushed once,
with skopeo, to the anonymous registry and read through whichever auth
variant a test needs. The Bearer variant is the registry's own `auth: token`
mode trusting a token server written in the tests (RS256 JWTs signed by a
self-signed certificate in `rootcertbundle`), so the whole challenge, token
and JWT check is the real protocol, not a stand-in.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Test modules here import the helpers as `oci_images`; make that work in
# pytest's importlib mode too, which does not put test folders on sys.path.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    REGISTRY_BINARY,
    BearerSetup,
    OciLayout,
    Pusher,
    RegistryProcess,
    TokenServer,
    htpasswd_available,
    write_htpasswd,
)


def _require_tools() -> None:
    if not os.access(REGISTRY_BINARY, os.X_OK):
        pytest.skip(
            f"{REGISTRY_BINARY} is missing: install Debian's docker-registry package"
            " (CI's .ci/run does)"
        )
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is missing: install Debian's skopeo package (CI's .ci/run does)")


@pytest.fixture(scope="session")
def registry_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry-storage")


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, registry_storage: Path
) -> Iterator[RegistryProcess]:
    """An anonymous docker-registry on 127.0.0.1 (delete enabled), for the whole session."""
    _require_tools()
    process = RegistryProcess(
        storage=registry_storage, workdir=tmp_path_factory.mktemp("registry-anon")
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def basic_registry(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryProcess,
    registry_storage: Path,
) -> Iterator[RegistryProcess]:
    """The same storage behind htpasswd Basic auth (user BASIC_USER)."""
    if not htpasswd_available():
        pytest.skip("needs the 'bcrypt' Python module or apache2-utils' htpasswd")
    workdir = tmp_path_factory.mktemp("registry-basic")
    htpasswd = workdir / "htpasswd"
    write_htpasswd(htpasswd, {BASIC_USER: BASIC_PASSWORD})
    process = RegistryProcess(
        storage=registry_storage,
        workdir=workdir,
        auth={"htpasswd": {"realm": "gitsync-test", "path": str(htpasswd)}},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def bearer_registry(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryProcess,
    registry_storage: Path,
) -> Iterator[BearerSetup]:
    """The same storage behind token auth, with a token server that wants Basic credentials."""
    pytest.importorskip("cryptography", reason="the test token server signs JWTs with it")
    workdir = tmp_path_factory.mktemp("registry-bearer")
    with TokenServer(workdir=workdir, users={BASIC_USER: BASIC_PASSWORD}) as tokens:
        process = RegistryProcess(
            storage=registry_storage, workdir=workdir, auth=tokens.registry_auth()
        )
        process.start()
        try:
            yield BearerSetup(registry=process, tokens=tokens)
        finally:
            process.stop()


@pytest.fixture
def pusher(tmp_path: Path, registry: RegistryProcess) -> Pusher:
    return Pusher(layout=OciLayout(tmp_path / "layout"), registry=registry)


@pytest.fixture
def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    """A sleep that records the delays it was asked for instead of waiting."""
    delays: list[float] = []
    return delays, delays.append

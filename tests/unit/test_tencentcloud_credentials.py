"""Where the Tencent Cloud backend finds its credentials (settings.resolve_credentials), and
that only a command that needs Tencent Cloud loads the SDK. No server involved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from gitsync.errors import ConfigError
from gitsync.providers.tencentcloud import resolve_credentials

SECRET_ID = "AKIDresolveSecretId00000000001"
SECRET_KEY = "resolveSecretKey0000000000001"
ENV = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}


def write_credentials(path: Path, *, secret_id: str, profile: str = "default") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[{profile}]\nsecret_id = {secret_id}\nsecret_key = {SECRET_KEY}\n", encoding="utf-8"
    )
    return path


def test_the_credentials_file_wins_over_the_environment(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "ci.ini", secret_id="AKIDfromFile", profile="ci")

    found = resolve_credentials(credentials_file=path, profile="ci", env=ENV, default_file=True)

    assert found is not None
    assert found.secret_id == "AKIDfromFile"
    assert found.source == f"credentials file {path} [ci]"


def test_the_environment_comes_next_with_its_session_token(tmp_path: Path) -> None:
    write_credentials(tmp_path / ".tencentcloud" / "credentials", secret_id="AKIDfromHome")
    env = {**ENV, "TENCENTCLOUD_SESSION_TOKEN": "token-1", "HOME": str(tmp_path)}

    found = resolve_credentials(
        credentials_file=None, profile="default", env=env, default_file=True
    )

    assert found is not None
    assert (found.secret_id, found.secret_key, found.token) == (SECRET_ID, SECRET_KEY, "token-1")
    assert found.source == "environment (TENCENTCLOUD_SECRET_ID/KEY)"


def test_half_an_environment_pair_is_reported_not_skipped(tmp_path: Path) -> None:
    write_credentials(tmp_path / ".tencentcloud" / "credentials", secret_id="AKIDfromHome")
    env = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "HOME": str(tmp_path)}

    with pytest.raises(ConfigError, match="secret key from environment") as caught:
        resolve_credentials(credentials_file=None, profile="default", env=env, default_file=True)
    assert SECRET_ID not in str(caught.value)


def test_the_home_file_is_read_only_when_the_caller_allows_it(tmp_path: Path) -> None:
    home_file = write_credentials(tmp_path / ".tencentcloud" / "credentials", secret_id="AKIDhome")
    env = {"HOME": str(tmp_path)}

    allowed = resolve_credentials(
        credentials_file=None, profile="default", env=env, default_file=True
    )
    refused = resolve_credentials(
        credentials_file=None, profile="default", env=env, default_file=False
    )

    assert allowed is not None
    assert allowed.secret_id == "AKIDhome"
    assert allowed.source == f"credentials file {home_file} [default]"
    assert refused is None


def test_nothing_given_is_none(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}  # no ~/.tencentcloud/credentials there

    assert (
        resolve_credentials(credentials_file=None, profile="default", env=env, default_file=True)
        is None
    )


def test_a_named_credentials_file_that_is_missing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_credentials(
            credentials_file=tmp_path / "nope", profile="default", env=ENV, default_file=True
        )


def test_validate_does_not_load_the_sdk(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: web\n"
        "spec:\n  images:\n  - busybox:1.36.1\n",
        encoding="utf-8",
    )
    script = f"""
import sys
from gitsync import cli
code = cli.main(["validate", {str(tmp_path)!r}], env={{}})
loaded = sorted(m for m in sys.modules if m == "tencentcloud" or m.startswith("tencentcloud."))
print(code, loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr

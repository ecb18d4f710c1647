"""Settings precedence: flag > GITSYNC_* environment > --config file > default."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gitsync.config import env_name, parse_duration, resolve_settings
from gitsync.errors import ConfigError


def test_env_name_follows_the_flag() -> None:
    assert env_name("--max-delete-ratio") == "GITSYNC_MAX_DELETE_RATIO"
    assert env_name("--data-dir") == "GITSYNC_DATA_DIR"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "gitsync.yaml"
    config.write_text("max-delete-ratio: 0.2\ncontroller-id: from-file\nrenew-before: 2d\n")
    env = {"GITSYNC_MAX_DELETE_RATIO": "0.3", "HOME": str(tmp_path)}
    settings = resolve_settings(flags={}, env=env, config_path=config)
    assert settings.max_delete_ratio == 0.3  # env over file
    assert settings.controller_id == "from-file"  # file over default
    assert settings.renew_before == timedelta(days=2)
    settings = resolve_settings(flags={"max_delete_ratio": "0.4"}, env=env, config_path=config)
    assert settings.max_delete_ratio == 0.4  # flag over env
    assert resolve_settings(flags={}, env={"HOME": str(tmp_path)}, config_path=None).provider == (
        "local"
    )


def test_data_dir_defaults_to_xdg(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    assert (
        resolve_settings(flags={}, env=env, config_path=None).data_dir == tmp_path / "xdg/gitsync"
    )


def test_repeatable_flag_and_comma_separated_env(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GITSYNC_INSECURE_REGISTRY": "a:5000, b"}
    assert resolve_settings(flags={}, env=env, config_path=None).insecure_registries == (
        "a:5000",
        "b",
    )
    flags = {"insecure_registry": ["c:1", "d"]}
    assert resolve_settings(flags=flags, env=env, config_path=None).insecure_registries == (
        "c:1",
        "d",
    )


def test_pricing_table_from_config(tmp_path: Path) -> None:
    config = tmp_path / "gitsync.yaml"
    config.write_text("pricing:\n  currency: USD\n")
    settings = resolve_settings(flags={}, env={"HOME": str(tmp_path)}, config_path=config)
    assert settings.prices.currency == "USD"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GITSYNC_PROVIDER": "aws"}, "not one of local, kubernetes, tencentcloud"),
        ({"GITSYNC_MAX_DELETE_RATIO": "lots"}, "--max-delete-ratio"),
        ({"GITSYNC_MAX_DELETE_RATIO": "1.5"}, "between 0 and 1"),
        ({"GITSYNC_RENEW_BEFORE": "soon"}, "--renew-before"),
        ({"GITSYNC_ALLOW_MASS_DELETE": "maybe"}, "not a boolean"),
    ],
)
def test_bad_settings_name_the_flag(env: dict[str, str], needle: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_settings(flags={}, env={"HOME": str(tmp_path), **env}, config_path=None)


def test_bad_config_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"c\.yaml"):
        resolve_settings(flags={}, env={"HOME": str(tmp_path)}, config_path=config)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_settings(flags={}, env={"HOME": str(tmp_path)}, config_path=tmp_path / "none.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("42", 42)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, what="--x").total_seconds() == seconds

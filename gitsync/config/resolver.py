"""One lookup of a setting: flag, then `GITSYNC_<FLAG>`, then the config file, then the default.

A `SettingsResolver` reads the config file when it is made; `CommandSettings`
makes one per command, so the file is read once however many settings the
command resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gitsync.config.values import env_name, parse_duration, split_list
from gitsync.errors import ConfigError
from gitsync.pricing import PriceTable

T = TypeVar("T")


class SettingsResolver:
    """Looks a setting up in flag, environment, config file, then default, in that order."""

    def __init__(
        self, *, flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None
    ) -> None:
        self._flags = flags
        self._env = env
        self._config_path = config_path
        self._file: Mapping[str, Any] = _read_config_file(config_path) if config_path else {}

    @property
    def env(self) -> Mapping[str, str]:
        """The environment, for variables other tools define (KUBECONFIG, TENCENTCLOUD_REGION)."""
        return self._env

    def get(self, flag: str, *, default: T, convert: Callable[[str], T]) -> T:
        key = flag.lstrip("-")
        attr = key.replace("-", "_")
        value = self._flags.get(attr)
        if isinstance(value, str):
            return convert(value)
        if isinstance(value, list):  # repeatable flags (append) arrive as lists
            return convert(",".join(value))
        if value is not None:
            return value  # type: ignore[no-any-return]  # store_true flags arrive as bool
        env_key = env_name(flag)
        if env_key in self._env:
            return _from(env_key, convert, self._env[env_key])
        if key in self._file:
            where = f"{key!r} in config file {self._config_path}"
            return _from(where, convert, str(self._file[key]))
        return default

    def duration(
        self,
        flag: str,
        default: str,
        *,
        allow_zero: bool = False,
        minimum: timedelta | None = None,
    ) -> timedelta:
        """A duration setting (see `parse_duration`); errors name the flag and where it was set."""
        return self.get(
            flag,
            default=parse_duration(default, what=flag, allow_zero=allow_zero, minimum=minimum),
            convert=lambda s: parse_duration(s, what=flag, allow_zero=allow_zero, minimum=minimum),
        )

    def text(self, flag: str, default: str = "") -> str:
        """A setting as written, for flags the caller interprets itself."""
        return str(self.get(flag, default=default, convert=str))

    def listed(self, flag: str) -> tuple[str, ...]:
        """A comma-separated (or repeated) setting; blanks dropped."""
        return split_list(self.text(flag))

    def pricing(self) -> PriceTable:
        table = self._file.get("pricing")
        if table is None:
            return PriceTable()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{self._config_path}: 'pricing' must be a mapping of unit prices")
        return PriceTable.from_mapping(table, source=f"{self._config_path}: pricing")


def _from(where: str, convert: Callable[[str], T], text: str) -> T:
    """`convert(text)`; a ConfigError also says which variable or file gave the value."""
    try:
        return convert(text)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set by {where})") from exc


def _read_config_file(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must be a mapping of flag names to values")
    return data

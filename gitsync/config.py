"""Controller settings: flags, `GITSYNC_*` environment variables and an optional config file.

Precedence is the one operators know from Flux and kubectl: a flag beats its
environment variable, which beats the config file, which beats the default.
Only this module and `cli` see flags and the environment; everything below
receives a frozen `Settings` or plain keyword arguments, so tests never patch
`os.environ`.

The config file is YAML whose keys are the long flag names without dashes in
front (`max-delete-ratio: 0.3`), plus a `pricing:` table (see `pricing.PriceTable`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gitsync.errors import ConfigError
from gitsync.pricing import PriceTable

PROVIDERS = ("local", "kubernetes", "tencentcloud")
ENV_PREFIX = "GITSYNC_"

T = TypeVar("T")


def env_name(flag: str) -> str:
    """`--max-delete-ratio` reads `GITSYNC_MAX_DELETE_RATIO`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "gitsync"


def parse_duration(text: str, *, what: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d`, or a bare number of seconds, like Flux's intervals."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip()
    try:
        if raw and raw[-1] in units:
            return timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
        return timedelta(seconds=float(raw))
    except ValueError as exc:
        raise ConfigError(
            f"{what}: {text!r} is not a duration; use a number with s, m, h or d (e.g. 60s, 2d)"
        ) from exc


def parse_bool(text: str, *, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not a boolean; use true or false")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the controller needs to know, resolved once at start-up."""

    provider: str = "local"
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    controller_id: str = "gitsync"
    max_delete_ratio: float = 0.5
    allow_mass_delete: bool = False
    renew_before: timedelta | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    # local backend
    platform: str = "linux/amd64"
    secrets_dir: Path | None = None
    docker_config: Path | None = None
    insecure_registries: tuple[str, ...] = ()


class SettingsResolver:
    """Looks a setting up in flag, environment, config file, then default, in that order."""

    def __init__(
        self, *, flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None
    ) -> None:
        self._flags = flags
        self._env = env
        self._config_path = config_path
        self._file: Mapping[str, Any] = _read_config_file(config_path) if config_path else {}

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
            return convert(self._env[env_key])
        if key in self._file:
            return convert(str(self._file[key]))
        return default

    def text(self, flag: str, default: str = "") -> str:
        """A setting as written, for flags the caller interprets itself."""
        return str(self.get(flag, default=default, convert=str))

    def pricing(self) -> PriceTable:
        table = self._file.get("pricing")
        if table is None:
            return PriceTable()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{self._config_path}: 'pricing' must be a mapping of unit prices")
        return PriceTable.from_mapping(table, source=f"{self._config_path}: pricing")


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


def resolve_settings(
    *, flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None
) -> Settings:
    r = SettingsResolver(flags=flags, env=env, config_path=config_path)
    provider = r.get("--provider", default="local", convert=str)
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    ratio = r.get("--max-delete-ratio", default=0.5, convert=_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"--max-delete-ratio: {ratio} must be between 0 and 1")
    renew = r.get(
        "--renew-before",
        default=None,
        convert=lambda s: parse_duration(s, what="--renew-before"),
    )
    return Settings(
        provider=provider,
        data_dir=Path(r.get("--data-dir", default=str(default_data_dir(env)), convert=str)),
        controller_id=r.get("--controller-id", default="gitsync", convert=str),
        max_delete_ratio=ratio,
        allow_mass_delete=r.get(
            "--allow-mass-delete",
            default=False,
            convert=lambda s: parse_bool(s, what=env_name("--allow-mass-delete")),
        ),
        renew_before=renew,
        prices=r.pricing(),
        platform=r.text("--platform", "linux/amd64"),
        secrets_dir=optional_path(r.text("--secrets-dir")),
        docker_config=optional_path(r.text("--docker-config")) or _default_docker_config(env),
        insecure_registries=tuple(r.get("--insecure-registry", default=(), convert=_split_list)),
    )


def optional_path(text: str) -> Path | None:
    """An empty setting means 'not set'; `~` expands as in a shell."""
    return Path(text).expanduser() if text else None


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _default_docker_config(env: Mapping[str, str]) -> Path | None:
    """Where docker keeps registry logins: $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    folder = env.get("DOCKER_CONFIG")
    base = Path(folder) if folder else Path(env.get("HOME", "~")).expanduser() / ".docker"
    candidate = base / "config.json"
    return candidate if candidate.is_file() else None


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(f"--max-delete-ratio: {text!r} is not a number between 0 and 1") from exc

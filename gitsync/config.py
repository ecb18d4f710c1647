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

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
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


_NS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "\N{MICRO SIGN}s": 10**3,
    "\N{GREEK SMALL LETTER MU}s": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}
# Longest units first, so `ms` is not read as `m` followed by a stray `s`.
_DURATION_PART = re.compile(
    r"(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?P<unit>"
    + "|".join(sorted(_NS_PER_UNIT, key=len, reverse=True))
    + ")"
)
_BARE_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# A century: far beyond any interval or timeout anyone means, and far inside what
# timedelta, datetime arithmetic and threading waits (about 292 years) can hold,
# jitter included.
MAX_DURATION = timedelta(days=36500)
_MAX_NS = MAX_DURATION // timedelta(microseconds=1) * 1000
_DURATION_HINT = "use a number and a unit (ns, us, ms, s, m, h, d), e.g. 90s, 1h30m, 500ms, 2d"


def parse_duration(
    text: str,
    *,
    what: str,
    allow_zero: bool = False,
    minimum: timedelta | None = None,
) -> timedelta:
    """A length of time as Go's `time.ParseDuration` (and so Flux) writes it, plus days.

    `90s`, `1h30m`, `1.5h`, `500ms`, `2d`, `1d12h`; a bare number is seconds, as
    gitsync always accepted. Negative values, `inf`, `nan`, values past
    `MAX_DURATION` and (unless `allow_zero`) zero are errors naming `what`, the
    flag. Sub-microsecond remainders round up, so a non-zero duration never
    becomes zero.
    """
    raw = text.strip()
    shown = repr(raw if len(raw) <= 40 else raw[:37] + "...")
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    nanoseconds = _duration_ns(body)
    if nanoseconds is None:
        raise ConfigError(f"{what}: {shown} is not a duration; {_DURATION_HINT}")
    if raw.startswith("-") and nanoseconds > 0:
        raise ConfigError(f"{what}: {shown} is negative; use a positive duration, e.g. 60s")
    if nanoseconds > _MAX_NS:
        raise ConfigError(
            f"{what}: {shown} is too long; the most gitsync accepts is "
            f"{format_duration(MAX_DURATION)} (100 years)"
        )
    if nanoseconds == 0 and not allow_zero:
        raise ConfigError(f"{what}: {shown} is zero; use a positive duration, e.g. 60s")
    value = timedelta(microseconds=math.ceil(nanoseconds / 1000))
    if minimum is not None and value < minimum and not (allow_zero and nanoseconds == 0):
        raise ConfigError(f"{what}: {shown} is too short; use at least {format_duration(minimum)}")
    return value


def _duration_ns(body: str) -> Fraction | None:
    """Nanoseconds in an unsigned duration, or None when it is not one."""
    if _BARE_SECONDS.fullmatch(body):
        return _decimal(body) * _NS_PER_UNIT["s"]
    total, position = Fraction(0), 0
    while position < len(body):
        part = _DURATION_PART.match(body, position)
        if part is None or not (part["whole"] or part["fraction"]):
            return None  # also refuses a lone "." and a unit without a number
        number = _decimal(part.group(0)[: part.start("unit") - part.start()])
        total += number * _NS_PER_UNIT[part["unit"]]
        if total > _MAX_NS:
            return total  # too long already; no need to read a pathological rest
        position = part.end()
    return total if position > 0 else None


def _decimal(text: str) -> Fraction:
    """`12.5` exactly; digits past the 18th of the fraction are below a nanosecond."""
    whole, _, fraction = text.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > 24:  # larger than any duration gitsync accepts, in any unit
        return Fraction(10**24)
    fraction = fraction[:18]
    value = Fraction(int(whole or "0"))
    if fraction:
        value += Fraction(int(fraction), 10 ** len(fraction))
    return value


def format_duration(value: timedelta) -> str:
    """The shortest Go-style text for `value`: `1h30m`, `2d`, `1.5s`, `500ms`."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    if micros < 10**6:
        return f"{sign}{micros // 1000}ms" if micros % 1000 == 0 else f"{sign}{micros}us"
    days, micros = divmod(micros, 86400 * 10**6)
    hours, micros = divmod(micros, 3600 * 10**6)
    minutes, micros = divmod(micros, 60 * 10**6)
    seconds, micros = divmod(micros, 10**6)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if seconds or micros:
        fraction = f".{micros:06d}".rstrip("0") if micros else ""
        text += f"{seconds}{fraction}s"
    return sign + text


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
    # Zero is fine: rebuild at expiry, as without the flag.
    renew = r.get(
        "--renew-before",
        default=None,
        convert=lambda s: parse_duration(s, what="--renew-before", allow_zero=True),
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

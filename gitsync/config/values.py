"""The words of a setting: durations as Go and Flux write them, booleans, lists, paths.

Pure functions from text to values; each error names the flag (`what`) so the
resolver can add where the value was set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Final

from gitsync.errors import ConfigError
from gitsync.timeparse import go_duration_ns

PROVIDERS = ("local", "kubernetes", "tencentcloud")
ENV_PREFIX = "GITSYNC_"


def env_name(flag: str) -> str:
    """`--max-delete-ratio` reads `GITSYNC_MAX_DELETE_RATIO`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "gitsync"


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
    nanoseconds = go_duration_ns(body, limit=_MAX_NS)  # the one reader: gitsync.timeparse
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


_RATE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_rate(text: str, *, what: str) -> int:
    """Bytes per second: a positive whole number with an optional K, M or G (1024-based)."""
    raw = text.strip()
    number = raw.rstrip("KMGkmg")
    unit = raw[len(number) :].upper()
    if not number.isdigit() or unit not in _RATE_UNITS or int(number) == 0:
        raise ConfigError(
            f"{what} {raw!r}: expected bytes per second as a positive whole number,"
            " optionally followed by K, M or G (1024-based), e.g. 50M"
        )
    return int(number) * _RATE_UNITS[unit]


def parse_bool(text: str, *, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not a boolean; use true or false")


def optional_path(text: str) -> Path | None:
    """An empty setting means 'not set'; `~` expands as in a shell."""
    return Path(text).expanduser() if text else None


def split_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen: {text!r} is not HOST:PORT, e.g. 127.0.0.1:9108")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_secret(path: str, *, what: str) -> str | None:
    """The content of a secret's file, stripped; None when no file is set."""
    if not path:
        return None
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value

"""Settings precedence: flag > GITSYNC_* environment > --config file > default."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gitsync.config import (
    MAX_DURATION,
    SettingsResolver,
    env_name,
    format_duration,
    parse_duration,
    resolve_settings,
)
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


# ------------------------------------------------------------------ durations

GO_FORMS = [
    ("90s", timedelta(seconds=90)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("500ms", timedelta(milliseconds=500)),
    ("2d", timedelta(days=2)),
    ("1.5h", timedelta(hours=1, minutes=30)),
    ("2m30s", timedelta(minutes=2, seconds=30)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("1h0m0s", timedelta(hours=1)),  # what Go's Duration.String() prints
    ("300us", timedelta(microseconds=300)),
    ("300\N{MICRO SIGN}s", timedelta(microseconds=300)),
    ("300\N{GREEK SMALL LETTER MU}s", timedelta(microseconds=300)),
    ("1500ns", timedelta(microseconds=2)),  # below a microsecond rounds up
    ("1ns", timedelta(microseconds=1)),  # never down to zero
    (".5s", timedelta(milliseconds=500)),
    ("5.s", timedelta(seconds=5)),
    ("+5s", timedelta(seconds=5)),
    ("1s1s", timedelta(seconds=2)),  # Go adds repeated units
    ("0.000000001h", timedelta(microseconds=4)),  # 3.6 µs, rounded up
    ("  45s\n", timedelta(seconds=45)),  # an environment variable with a newline
    ("42", timedelta(seconds=42)),  # bare seconds, as gitsync always took
    ("1.5", timedelta(seconds=1.5)),
    ("36500d", timedelta(days=36500)),  # the maximum
]


@pytest.mark.parametrize(("text", "expected"), GO_FORMS)
def test_durations_take_go_and_flux_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text, what="--x") == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-5s", "'-5s' is negative"),
        ("-1h30m", "is negative"),
        ("-0.5", "is negative"),
        ("inf", "'inf' is not a duration"),
        ("-inf", "is not a duration"),
        ("nan", "'nan' is not a duration"),
        ("infs", "is not a duration"),
        ("1e3", "is not a duration"),  # float syntax is not a duration
        ("", "is not a duration"),
        ("s", "is not a duration"),
        (".s", "is not a duration"),
        (".", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("1H", "is not a duration"),  # units are lower-case, as in Go
        ("1mo", "is not a duration"),
        ("1w", "is not a duration"),
        ("1.2.3s", "is not a duration"),
        ("--5s", "is not a duration"),
        ("1_000s", "is not a duration"),
        ("\N{ARABIC-INDIC DIGIT ONE}s", "is not a duration"),  # \d would take it
        ("36500d1ns", "too long; the most gitsync accepts is 36500d"),
        ("876001h", "too long"),
        ("9" * 400 + "h", "too long"),
        ("9" * 5000, "too long"),  # past int()'s digit limit, still just "too long"
        ("0", "'0' is zero"),
        ("0s", "is zero"),
        ("0h0m", "is zero"),
        ("-0s", "is zero"),
    ],
)
def test_bad_durations_name_the_flag(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^--interval: ") as caught:
        parse_duration(text, what="--interval")
    assert needle in str(caught.value)
    assert len(str(caught.value)) < 200  # a pathological value is not echoed in full


def test_zero_only_where_the_flag_allows_it() -> None:
    assert parse_duration("0s", what="--grace", allow_zero=True) == timedelta(0)
    assert parse_duration("0", what="--grace", allow_zero=True) == timedelta(0)
    with pytest.raises(ConfigError, match="negative"):
        parse_duration("-1s", what="--grace", allow_zero=True)


def test_a_minimum_is_checked_and_named() -> None:
    one = timedelta(seconds=1)
    assert parse_duration("1s", what="--interval", minimum=one) == one
    with pytest.raises(ConfigError, match=r"--interval: '999ms' is too short; use at least 1s"):
        parse_duration("999ms", what="--interval", minimum=one)
    with pytest.raises(ConfigError, match="is zero"):
        parse_duration("0s", what="--interval", minimum=one)


UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
UNITS["d"] = 24 * UNITS["h"]


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS))),
        min_size=1,
        max_size=6,
    )
)
def test_any_sum_of_units_is_its_total(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    nanoseconds = sum(n * UNITS[unit] for n, unit in parts)
    expected = timedelta(microseconds=-(-nanoseconds // 1000))  # rounded up
    if nanoseconds == 0:
        with pytest.raises(ConfigError, match="is zero"):
            parse_duration(text, what="--x")
    elif expected > MAX_DURATION:
        with pytest.raises(ConfigError, match="too long"):
            parse_duration(text, what="--x")
    else:
        assert parse_duration(text, what="--x") == expected
        with pytest.raises(ConfigError, match="negative"):
            parse_duration("-" + text, what="--x")


@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=MAX_DURATION))
def test_format_and_parse_round_trip(value: timedelta) -> None:
    assert parse_duration(format_duration(value), what="--x") == value


@given(st.text(max_size=30))
def test_any_text_is_a_duration_in_range_or_a_config_error(text: str) -> None:
    message = ""
    try:
        value = parse_duration(text, what="--x", allow_zero=True)
    except ConfigError as exc:  # never anything else: no ValueError, OverflowError...
        message = str(exc)
    if message:
        assert message.startswith("--x: ")
    else:
        assert timedelta(0) <= value <= MAX_DURATION


@given(st.floats(allow_nan=True, allow_infinity=True))
@example(-0.0)
@example(0.0)
@example(1.5)
@example(math.inf)
@example(1e16)
@example(-1.0)
@example(3153600000.0)
def test_numbers_from_a_yaml_config_are_seconds_or_refused(number: float) -> None:
    # A config file's `interval: 1.5` or `.inf` arrives as a float, and is read as str(float).
    text = str(number)
    plain = math.isfinite(number) and "e" not in text and number >= 0  # -0.0 is zero
    if plain and number <= MAX_DURATION.total_seconds():
        value = parse_duration(text, what="--x", allow_zero=True)
        assert abs(value.total_seconds() - number) <= 1e-6
    else:
        with pytest.raises(ConfigError, match=r"^--x: "):
            parse_duration(text, what="--x", allow_zero=True)


def test_format_duration_is_short() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=1, seconds=1.5)) == "1d1.5s"
    assert format_duration(timedelta(milliseconds=500)) == "500ms"
    assert format_duration(timedelta(microseconds=1500)) == "1500us"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(seconds=-5)) == "-5s"


# --------------------------------------------- durations from env and config file


def test_duration_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    config = tmp_path / "gitsync.yaml"
    config.write_text("interval: .inf\ngrace: 1h30m\n")
    from_file = SettingsResolver(flags={}, env={}, config_path=config)
    with pytest.raises(ConfigError) as caught:
        from_file.duration("--interval", "60s")
    assert str(caught.value) == (
        "--interval: 'inf' is not a duration; use a number and a unit (ns, us, ms, s, m, h, d),"
        f" e.g. 90s, 1h30m, 500ms, 2d (set by 'interval' in config file {config})"
    )
    assert from_file.duration("--grace", "1h") == timedelta(hours=1, minutes=30)
    from_env = SettingsResolver(flags={}, env={"GITSYNC_INTERVAL": "-5s"}, config_path=config)
    with pytest.raises(ConfigError, match=r"is negative.*\(set by GITSYNC_INTERVAL\)$"):
        from_env.duration("--interval", "60s")
    from_flag = SettingsResolver(flags={"interval": "0s"}, env={}, config_path=config)
    with pytest.raises(ConfigError, match=r"^--interval: '0s' is zero; use a positive duration"):
        from_flag.duration("--interval", "60s")
    assert SettingsResolver(flags={}, env={}, config_path=None).duration(
        "--timeout", "10m"
    ) == timedelta(minutes=10)


def test_renew_before_takes_go_forms_and_zero(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    settings = resolve_settings(flags={"renew_before": "1d12h"}, env=env, config_path=None)
    assert settings.renew_before == timedelta(days=1, hours=12)
    settings = resolve_settings(flags={"renew_before": "0s"}, env=env, config_path=None)
    assert settings.renew_before == timedelta(0)
    for bad in ("-1d", "inf", "nan", "99999999d"):
        with pytest.raises(ConfigError, match=r"--renew-before: .*\(set by GITSYNC_RENEW_BEFORE\)"):
            resolve_settings(flags={}, env={**env, "GITSYNC_RENEW_BEFORE": bad}, config_path=None)

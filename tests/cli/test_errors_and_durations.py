"""No command prints a traceback, and every duration flag takes Go/Flux forms.

`main()` is called in-process where a dependency must be made to raise (a
monkeypatch cannot cross into a child); the rest runs `python -m gitsync` as a
process, as users and CI do.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gitsync import cli, specs

PROCESS_TIMEOUT = 60


def gitsync(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitsync", *args],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------- unexpected exceptions


@pytest.fixture
def broken_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate`'s loader fails with a bug, as a library might, with a two-line message."""

    def explode(*args: object, **kwargs: object) -> specs.LoadResult:
        raise ValueError("cannot happen:\n  second line")

    monkeypatch.setattr(specs, "load_repository", explode)


@pytest.mark.usefixtures("broken_loader")
def test_an_unexpected_exception_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["validate", str(tmp_path)], env={})

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == (
        "gitsync validate: unexpected error: ValueError: cannot happen: second line"
        " (run with --debug for the traceback)\n"
    )


@pytest.mark.usefixtures("broken_loader")
@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--debug", "validate"], {}),
        (["validate", "--debug"], {}),
        (["validate"], {"GITSYNC_DEBUG": "1"}),
        (["validate"], {"GITSYNC_DEBUG": "true"}),
    ],
    ids=["global-flag", "flag-after-command", "env-1", "env-true"],
)
def test_debug_adds_the_traceback(
    argv: list[str], env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([*argv, str(tmp_path)], env=env)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "in explode" in err
    assert err.endswith(
        "gitsync validate: unexpected error: ValueError: cannot happen: second line\n"
    )


@pytest.mark.usefixtures("broken_loader")
def test_debug_off_by_default_and_when_false(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for env in ({}, {"GITSYNC_DEBUG": "0"}, {"GITSYNC_DEBUG": "false"}):
        assert cli.main(["validate", str(tmp_path)], env=env) == 1
        assert "Traceback" not in capsys.readouterr().err


def test_a_bad_gitsync_debug_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", str(tmp_path)], env={"GITSYNC_DEBUG": "maybe"}) == 2
    assert capsys.readouterr().err == (
        "gitsync validate: GITSYNC_DEBUG: 'maybe' is not a boolean; use true or false\n"
    )


@pytest.mark.parametrize(
    "case",
    [
        (KeyboardInterrupt(), 130, ""),
        (BrokenPipeError(32, "Broken pipe"), 1, ""),
        (OSError(28, "No space left on device"), 1, "unexpected error: OSError: [Errno 28]"),
        (RuntimeError(), 1, "unexpected error: RuntimeError (run with --debug"),
    ],
    ids=["ctrl-c", "broken-pipe", "oserror", "no-message"],
)
def test_other_exceptions_end_quietly(
    case: tuple[BaseException, int, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raised, code, line = case

    def explode(*args: object, **kwargs: object) -> specs.LoadResult:
        raise raised

    monkeypatch.setattr(specs, "load_repository", explode)

    assert cli.main(["validate", str(tmp_path)], env={}) == code

    err = capsys.readouterr().err
    assert "Traceback" not in err
    if line:
        assert err.startswith(f"gitsync validate: {line}")
        assert err.count("\n") == 1
    else:
        assert err == ""


def test_gitsync_errors_keep_their_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", str(tmp_path / "missing")], env={}) == 2  # ConfigError
    assert capsys.readouterr().err.startswith("gitsync validate: no such file or directory")


@pytest.mark.parametrize(
    "argv",
    [
        ["nope"],
        ["apply", "--wait=yes"],
        ["apply", "--timeout"],
        ["run", "--interval"],
        [],
    ],
)
def test_argparse_errors_stay_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv, env={})
    assert caught.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_an_unexpected_error_in_a_real_process(tmp_path: Path) -> None:
    """A data dir whose state.db is not SQLite: the local store raises sqlite3.DatabaseError,
    which nothing translates (if that is ever translated into a GitSyncError, pick another
    real fault here: the point is the process boundary, not this fault)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.db").write_bytes(b"not a database, just text\n" * 10)

    done = gitsync("status", "--data-dir", str(data), cwd=tmp_path)
    debug = gitsync("status", "--data-dir", str(data), cwd=tmp_path, env={"GITSYNC_DEBUG": "1"})

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "gitsync status: unexpected error: DatabaseError: file is not a database"
        " (run with --debug for the traceback)\n"
    )
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "sqlite3.DatabaseError: file is not a database" in debug.stderr
    assert debug.stderr.endswith(
        "gitsync status: unexpected error: DatabaseError: file is not a database\n"
    )


# ------------------------------------------------------------------ durations


def wait_until_serving(process: subprocess.Popen[str], url: str, log: Path) -> None:
    """Until `url` answers 200; fails at the deadline or when the process exits early."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310  # loopback
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gitsync run did not serve {url} within {PROCESS_TIMEOUT} s")
        time.sleep(0.1)


def test_run_with_interval_1h30m_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gitsync", "run",
                "--repo", str(repo),
                "--interval", "1h30m",
                "--listen", f"127.0.0.1:{port}",
                "--data-dir", str(tmp_path / "data"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )  # fmt: skip
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/healthz", log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert "gitsync_source_interval_seconds 5400.0" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=PROCESS_TIMEOUT) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("args", "env", "config", "needle"),
    [
        (["--interval", "-5s"], {}, "", "--interval: '-5s' is negative"),
        (["--interval=-5s"], {}, "", "--interval: '-5s' is negative"),
        (["--interval", "inf"], {}, "", "--interval: 'inf' is not a duration"),
        (["--interval", "nan"], {}, "", "--interval: 'nan' is not a duration"),
        (["--interval", "0s"], {}, "", "--interval: '0s' is zero"),
        (["--interval", "500ms"], {}, "", "--interval: '500ms' is too short; use at least 1s"),
        (["--interval", "99999999999h"], {}, "", "--interval: '99999999999h' is too long"),
        ([], {"GITSYNC_INTERVAL": "inf"}, "", "(set by GITSYNC_INTERVAL)"),
        ([], {}, "interval: .inf\n", "'interval' in config file"),
        ([], {}, "interval: -90\n", "--interval: '-90' is negative"),
    ],
    ids=[
        "negative",
        "negative-with-equals",
        "inf",
        "nan",
        "zero",
        "below-1s",
        "overflow",
        "env",
        "config-inf",
        "config-negative",
    ],
)
def test_run_refuses_a_bad_interval_naming_the_flag(
    args: list[str], env: dict[str, str], config: str, needle: str, tmp_path: Path
) -> None:
    extra = list(args)
    if config:
        (tmp_path / "gitsync.yaml").write_text(config)
        extra += ["--config", str(tmp_path / "gitsync.yaml")]
    done = gitsync(
        "run", "--repo", str(tmp_path), "--data-dir", str(tmp_path / "d"), *extra,
        cwd=tmp_path, env=env,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert done.stderr.startswith("gitsync run: --interval: ")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["gc", "--grace", "1h30m"], 0, ""),
        (["gc", "--grace", "0"], 0, ""),  # drop every unreferenced blob now
        (["gc", "--grace", "-1h"], 2, "gitsync gc: --grace: '-1h' is negative"),
        (["gc", "--grace", "inf"], 2, "gitsync gc: --grace: 'inf' is not a duration"),
        (["apply", "--timeout", "0s"], 2, "gitsync apply: --timeout: '0s' is zero"),
        (["apply", "--timeout", "nan"], 2, "gitsync apply: --timeout: 'nan' is not"),
        (["apply", "--timeout", "-1m"], 2, "gitsync apply: --timeout: '-1m' is negative"),
        (["plan", "--renew-before", "inf"], 2, "gitsync plan: --renew-before: 'inf' is not"),
        (["plan", "--renew-before", "-2d"], 2, "gitsync plan: --renew-before: '-2d' is negative"),
        # Flags with no default: the value given is what the error names.
        (["run", "--liveness-timeout", "0s"], 2, "gitsync run: --liveness-timeout: '0s' is zero"),
        (["run", "--refresh-interval", "0s"], 2, "gitsync run: --refresh-interval: '0s' is zero"),
        (["suggest", "--since", "0s"], 2, "gitsync suggest: --since: '0s' is zero"),
    ],
)
def test_other_duration_flags(
    argv: list[str],
    code: int,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"HOME": str(tmp_path), "GITSYNC_DATA_DIR": str(tmp_path / "data")}
    assert cli.main([*argv, "--repo", str(tmp_path)] if argv[0] != "gc" else argv, env=env) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if needle:
        assert err.startswith(needle)


def test_duration_flags_read_env_and_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gitsync.yaml"
    config.write_text("grace: 1d12h\ntimeout: -5s\n")
    env = {"HOME": str(tmp_path), "GITSYNC_DATA_DIR": str(tmp_path / "data")}

    assert cli.main(["gc", "--config", str(config)], env=env) == 0
    assert cli.main(["gc"], env={**env, "GITSYNC_GRACE": "1e9"}) == 2
    assert "(set by GITSYNC_GRACE)" in capsys.readouterr().err
    assert cli.main(["apply", "--config", str(config), "--repo", str(tmp_path)], env=env) == 2
    assert capsys.readouterr().err == (
        f"gitsync apply: --timeout: '-5s' is negative; use a positive duration, e.g. 60s"
        f" (set by 'timeout' in config file {config})\n"
    )

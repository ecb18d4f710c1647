"""The `gitsync` command: parses flags, calls the wiring, formats results, maps them to exit codes.

Each command parses its flags into one `config.CommandSettings` (the config
file is read once), asks `gitsync.wiring` for the provider, reconciler or
daemon, and prints. Heavy modules are imported inside the command that needs
them, so `gitsync validate` starts fast: it is the command CI runs on every
pull request.

Exit codes: 0 success, 1 failure or invalid input, 2 usage error (and, for
`plan --detailed-exitcode`, 2 = changes). `apply` exits 0 once the provider has
accepted every action, as `kubectl apply` does; `apply --wait` waits for Ready
caches, as `helm upgrade --wait` does. No command prints a traceback: an
unexpected exception is one line naming the command and the error, exit 1
(`--debug` or GITSYNC_DEBUG=1 adds the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gitsync.cli.apply import cmd_apply
from gitsync.cli.base import (
    EXIT_FAILED,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    TencentCredentials,
)
from gitsync.cli.commands import (
    cmd_export,
    cmd_gc,
    cmd_match,
    cmd_plan,
    cmd_run,
    cmd_status,
    cmd_validate,
)
from gitsync.cli.parser import build_parser
from gitsync.cli.suggest import cmd_suggest
from gitsync.config import env_name, parse_bool
from gitsync.errors import ConfigError, GitSyncError, PermanentError

__all__ = ["COMMANDS", "TencentCredentials", "build_parser", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "run": cmd_run,
    "suggest": cmd_suggest,
    "status": cmd_status,
    "gc": cmd_gc,
    "match": cmd_match,
    "export": cmd_export,
}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environment: Mapping[str, str] = os.environ if env is None else env
    parser = build_parser()
    args: Any = parser.parse_args(argv)
    command = f"gitsync {args.command}"
    try:
        debug = bool(args.debug) or parse_bool(
            environment.get(env_name("--debug"), ""), what=env_name("--debug")
        )
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args, environment)
    except KeyboardInterrupt:
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except BrokenPipeError:
        _silence_stdout()  # the reader went away (`| head`): nothing left to say
        return EXIT_FAILED
    except Exception as exc:  # an unexpected one is a bug: one line, not a traceback
        message, code = _explain(exc, debug=debug)
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{command}: {message}", file=sys.stderr)
        return code


def _explain(exc: Exception, *, debug: bool) -> tuple[str, int]:
    """What to say about an exception that ended a command, and the exit code."""
    if isinstance(exc, ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, PermanentError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, GitSyncError):
        return f"{exc} (temporary; try again)", EXIT_FAILED
    detail = " ".join(str(exc).split())  # one line, whatever the message holds
    hint = "" if debug else " (run with --debug for the traceback)"
    return (
        f"unexpected error: {type(exc).__name__}{': ' + detail if detail else ''}{hint}",
        EXIT_FAILED,
    )


def _silence_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass

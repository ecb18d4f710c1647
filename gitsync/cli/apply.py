"""`gitsync apply`: one pass, then (with --wait) wait for Ready caches, as `helm upgrade --wait`
does; signals end the wait cleanly."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING

from gitsync.config import CommandSettings, format_duration
from gitsync.model import CacheStatus, ObservedCache

if TYPE_CHECKING:
    from gitsync.reconciler import PassResult

from gitsync.cli.base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    SYNCHRONOUS_PROVIDERS,
    checkout,
    command_settings,
    open_provider,
    progress_printer,
)


def cmd_apply(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import logs, wiring
    from gitsync.datadir import DataDirLock
    from gitsync.reconciler import cache_states, desired_names

    settings = command_settings(args, env)
    common = settings.common
    wait, timeout = settings.apply.wait, settings.apply.timeout  # checked even without --wait
    logs.configure(stream=sys.stderr, json_format=not sys.stderr.isatty())
    with DataDirLock(common.data_dir), checkout(settings) as (tree, revision):
        provider = open_provider(settings, env, writable=True, on_progress=progress_printer())
        try:
            result = wiring.reconciler(common, provider).reconcile(tree=tree, revision=revision)
        finally:
            provider.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if not _accepted(result) or result.plan is None:
        return EXIT_FAILED
    at = revision or "the working tree"
    names = desired_names(result.plan)
    if result.observed_after is not None:
        states = cache_states(result.observed_after, names, owner=common.controller_id)
    elif common.provider in SYNCHRONOUS_PROVIDERS:  # the reconciler logged why
        print("gitsync apply: applied, but the caches cannot be read back", file=sys.stderr)
        return EXIT_FAILED
    else:  # unknown until the next observation; --wait makes it
        states = dict.fromkeys(names)
    finished = _finished(states, synchronous=common.provider in SYNCHRONOUS_PROVIDERS, at=at)
    if finished is not None:
        return finished
    building = _not_ready(states)
    if not wait:
        print(
            f"applied at {at}; still building: {_listing(states, building)} "
            "(gitsync apply --wait waits until they are Ready)"
        )
        return EXIT_OK
    return _wait_for_ready(settings, env, states=states, timeout=timeout, at=at)


def _finished(
    states: Mapping[str, ObservedCache | None], *, synchronous: bool, at: str
) -> int | None:
    """The exit code when the caches' states settle it; None while they are still building."""
    from gitsync.reconciler import BROKEN  # keep `validate` fast

    broken = [c for c in states.values() if c is not None and c.status in BROKEN]
    building = _not_ready(states)
    if broken:
        _print_broken(broken)
        return EXIT_FAILED
    if not building:
        print(f"converged at {at}")
        return EXIT_OK
    if synchronous:  # the pass built them: a cache not Ready now is not coming
        print(f"gitsync apply: not converged: {_listing(states, building)}", file=sys.stderr)
        return EXIT_FAILED
    return None


def _accepted(result: PassResult) -> bool:
    """Valid, not refused, and every action taken by the provider; prints why not."""
    from gitsync.reports import diagnostic_line

    for d in result.diagnostics:
        if d.severity.value == "error":
            print(diagnostic_line(d), file=sys.stderr)
    if result.error:
        print(f"gitsync apply: {result.error}", file=sys.stderr)
        return False
    held = [o.action.name for o in result.outcomes if not o.ok]
    if held:  # backoff held an action back: the revision is not applied in full
        print(f"gitsync apply: not applied yet: {', '.join(held)}", file=sys.stderr)
        return False
    return result.valid


def _not_ready(states: Mapping[str, ObservedCache | None]) -> list[str]:
    return [n for n, c in states.items() if c is None or c.status is not CacheStatus.READY]


def _listing(states: Mapping[str, ObservedCache | None], names: Sequence[str]) -> str:
    """`web (Pending), api (not listed yet)`."""
    return ", ".join(
        f"{n} ({c.status.value if (c := states.get(n)) is not None else 'not listed yet'})"
        for n in names
    )


def _print_broken(broken: Sequence[ObservedCache]) -> None:
    for cache in broken:
        warnings = [e for e in cache.events if e.type == "Warning"]
        why = f": {warnings[-1].reason}: {warnings[-1].message}" if warnings else ""
        print(f"gitsync apply: cache {cache.name} is {cache.status.value}{why}", file=sys.stderr)


def _wait_for_ready(
    settings: CommandSettings,
    env: Mapping[str, str],
    *,
    states: Mapping[str, ObservedCache | None],
    timeout: timedelta,
    at: str,
) -> int:
    """`apply --wait` after an accepted pass; the data dir is not held while waiting."""
    from gitsync.reconciler import WaitOutcome, wait_until_ready

    provider = open_provider(settings, env, writable=False)
    try:
        with _stop_on_signals() as stop:
            # Said once the handlers are in place: from here a signal ends the wait cleanly.
            print(
                f"applied at {at}; waiting up to {format_duration(timeout)} for "
                f"{_listing(states, _not_ready(states))}",
                file=sys.stderr,
                flush=True,
            )
            waited = wait_until_ready(
                provider=provider,
                names=list(states),
                owner=settings.common.controller_id,
                timeout_seconds=timeout.total_seconds(),
                sleep=stop.event.wait,
                on_progress=_wait_progress(states),
            )
    finally:
        provider.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if waited.outcome is WaitOutcome.READY:
        print(f"converged at {at}")
        return EXIT_OK
    if waited.outcome is WaitOutcome.FAILED:
        _print_broken(waited.failed)
        return EXIT_FAILED
    left = _listing(waited.caches, waited.building)
    if waited.outcome is WaitOutcome.STOPPED:
        signum = stop.signum or signal.SIGTERM
        print(
            f"gitsync apply: stopped by {signal.Signals(signum).name} while waiting; "
            f"the provider keeps building {left}",
            file=sys.stderr,
        )
        return EXIT_SIGNAL_BASE + signum
    last_error = f"; last error: {waited.error}" if waited.error else ""
    print(
        f"gitsync apply: timed out after {format_duration(timeout)} waiting for {left}{last_error}",
        file=sys.stderr,
    )
    return EXIT_FAILED


class _Stop:
    """Set by SIGTERM or SIGINT while `apply --wait` waits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    """SIGTERM and Ctrl-C end the wait between two polls instead of killing the process."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach only the main thread; nothing to install
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_progress(
    initial: Mapping[str, ObservedCache | None],
) -> Callable[[Mapping[str, ObservedCache | None], float], None]:
    """One rewritten line on a terminal; otherwise a line per status change (CI logs)."""
    tty = sys.stderr.isatty()
    shown = {n: c.status.value if c is not None else "" for n, c in initial.items()}

    def show(states: Mapping[str, ObservedCache | None], elapsed: float) -> None:
        if tty:
            waiting = _not_ready(states)
            ready = len(states) - len(waiting)
            line = f"  {ready}/{len(states)} Ready after {elapsed:.0f}s"
            line += f"; waiting for {_listing(states, waiting)}" if waiting else ""
            width = shutil.get_terminal_size().columns - 1
            sys.stderr.write(f"\r{line[:width]}\x1b[K")
            sys.stderr.flush()
            return
        for name, cache in states.items():
            status = cache.status.value if cache is not None else ""
            if status and shown.get(name) != status:
                print(f"  {name}: {status} after {elapsed:.0f}s", file=sys.stderr)
            shown[name] = status

    return show

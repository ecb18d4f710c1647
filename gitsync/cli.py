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
import re
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gitsync import __version__, wiring
from gitsync.config import CommandSettings, TencentSettings, env_name, format_duration, parse_bool
from gitsync.errors import ConfigError, GitSyncError, PermanentError
from gitsync.model import CacheStatus, ObservedCache

if TYPE_CHECKING:
    from gitsync.providers.base import Provider
    from gitsync.reconciler import PassResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHANGES = 2
EXIT_NO_MATCH = 3
EXIT_SIGNAL_BASE = 128  # killed by signal N: 128 + N, as shells report it

# Backends whose create and update return once the cache is built; the others
# (an operator, the cloud) accept the change and build it afterwards.
SYNCHRONOUS_PROVIDERS = frozenset({"local"})


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options (each also reads GITSYNC_<FLAG>)")
    group.add_argument(
        "--provider",
        choices=("local", "kubernetes", "tencentcloud"),
        help="where caches live (default: local)",
    )
    group.add_argument("--data-dir", help="state and blobs (default: $XDG_DATA_HOME/gitsync)")
    group.add_argument("--config", help="YAML file of settings keyed by flag name")
    group.add_argument(
        "--controller-id", help="ownership tag of caches this controller manages (default: gitsync)"
    )


def _add_policy(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("safety")
    group.add_argument(
        "--max-delete-ratio",
        help="refuse plans deleting more than this share of owned caches (default: 0.5)",
    )
    group.add_argument(
        "--allow-mass-delete",
        action="store_true",
        default=None,
        help="apply plans that the mass-delete guard would refuse",
    )
    group.add_argument(
        "--renew-before",
        help="recreate a cache this long before it expires, e.g. 1d (default: never)",
    )


def _add_local(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local backend")
    group.add_argument("--platform", help="platform picked from multi-arch images (linux/amd64)")
    group.add_argument(
        "--secrets-dir",
        help="folder of dockerconfigjson Secrets for imagePullSecrets: NAMESPACE/NAME.yaml",
    )
    group.add_argument("--docker-config", help="docker config.json with registry logins")
    group.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST[:PORT]",
        help="allow plain HTTP to this registry (loopback registries always may)",
    )


def _add_kubernetes(parser: argparse.ArgumentParser, *, daemon: bool) -> None:
    group = parser.add_argument_group("kubernetes backend (in-cluster config by default)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    group.add_argument("--context", help="kubeconfig context")
    if not daemon:
        return
    group.add_argument("--namespaces", help="pods to observe, comma-separated (default: all)")
    group.add_argument(
        "--leader-elect", help="true: only the holder of a Lease reconciles (for replicas)"
    )
    group.add_argument("--leader-election-namespace", help="namespace of the Lease")
    group.add_argument("--leader-election-name", help="name of the Lease (gitsync-leader)")
    group.add_argument("--leader-election-identity", help="this replica's name (pod name)")
    group.add_argument("--cache-hit-reasons", help="pod event reasons meaning a cache hit")
    group.add_argument("--cache-partial-reasons", help="event reasons meaning a partial hit")
    group.add_argument("--cache-miss-reasons", help="event reasons meaning a miss")
    group.add_argument("--image-pull-reasons", help="event reasons meaning an image pull")


def _add_tencent(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tencentcloud backend (credentials: TENCENTCLOUD_SECRET_ID/KEY or a credentials file)"
    )
    group.add_argument("--region", help="TKE region, e.g. ap-guangzhou")
    group.add_argument("--vpc-id", help="VPC of the instance that builds a cache")
    group.add_argument("--subnet-id", help="subnet of the instance that builds a cache")
    group.add_argument("--security-group-id", action="append", help="repeatable")
    group.add_argument(
        "--registry-http-endpoint", action="append", help="registries spoken to over plain HTTP"
    )
    group.add_argument(
        "--registry-skip-verify", action="append", help="registries whose TLS is not verified"
    )
    group.add_argument("--tencentcloud-endpoint", help="API endpoint HOST[:PORT] (private or test)")
    group.add_argument("--tencentcloud-scheme", choices=("http", "https"), default=None)
    group.add_argument("--tencentcloud-credentials-file", help="the SDK's INI credentials file")
    group.add_argument("--tencentcloud-profile", help="profile in that file (default: default)")
    group.add_argument(
        "--tencentcloud-cbs-endpoint",
        help="CBS API endpoint HOST[:PORT] for the snapshot checks (default: cbs.… beside a"
        " tke.… --tencentcloud-endpoint, else that endpoint, else cbs.tencentcloudapi.com)",
    )
    checks = parser.add_argument_group(
        "snapshot checks (tencentcloud; kubernetes given --region and Tencent Cloud credentials)"
    )
    checks.add_argument(
        "--snapshot-check-interval",
        help="look up the snapshot behind each Ready cache at most this often, e.g. 30m;"
        " 0 turns the checks off (default: 1h)",
    )


def _add_repo(parser: argparse.ArgumentParser, *, default_note: str) -> None:
    parser.add_argument("--repo", help=f"repository folder or URL ({default_note})")
    parser.add_argument("--path", help="only this folder of the repository")


_DEBUG_HELP = "on an unexpected error, show the traceback (also GITSYNC_DEBUG=1)"


class _Parser(argparse.ArgumentParser):
    """argparse, but `--interval -5s` hands `-5s` to the flag, whose check explains it.

    argparse takes only plain negative numbers (`-5`, `-0.5`) as values; `-5s`
    would be an unknown option and `--interval` would "expect one argument".
    No gitsync option starts with a dash and a digit, so nothing is shadowed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?[0-9]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gitsync",
        description="A Git repository as the single source of truth for container-image caches.",
    )
    parser.add_argument("--version", action="version", version=f"gitsync {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="validate ImageCache files (exit 0 valid, 1 invalid, 2 usage)",
        description="Validate ImageCache YAML files or directories (default: .).",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")
    validate.add_argument("--format", choices=("text", "json", "github"), default=None)

    plan = commands.add_parser(
        "plan",
        help="show what apply would change, its cost, and whether the images fit",
        description=(
            "Compare a revision of the cache repository with the provider's caches. The "
            "caches the plan builds are checked against their imageCacheSize, from the "
            "registries' manifests (exit 1 when one cannot fit)."
        ),
    )
    _add_repo(plan, default_note="default: .")
    plan.add_argument("--revision", help="commit, branch or tag (default: the working tree)")
    plan.add_argument("--format", choices=("text", "markdown", "json"), default=None)
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        default=None,
        help="exit 0 when nothing changes, 2 when something would (1 still wins)",
    )
    plan.add_argument(
        "--no-size-check",
        action="store_true",
        default=None,
        help="do not read the images' manifests to check that they fit imageCacheSize",
    )

    apply = commands.add_parser(
        "apply",
        help="one reconcile pass, then exit (0 applied, 1 failed)",
        description=(
            "Bring the provider's caches to a revision of the repository, once. On the "
            "kubernetes and tencentcloud backends the caches build after apply returns: "
            "exit 0 means every change was accepted; --wait waits until they are Ready."
        ),
    )
    _add_repo(apply, default_note="default: .")
    apply.add_argument("--revision", help="commit, branch or tag (default: the working tree)")
    apply.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="wait until every cache of the revision is Ready; exit 1 if one fails or at --timeout",
    )
    apply.add_argument("--timeout", help="how long --wait waits, e.g. 90s, 1h30m (default: 10m)")

    run = commands.add_parser(
        "run",
        help="the daemon: keep the caches equal to Git",
        description="Fetch, validate, plan and apply on every interval, webhook or change.",
    )
    _add_repo(run, default_note="required")
    run.add_argument("--branch", help="branch, tag or commit to follow (default: main)")
    run.add_argument("--interval", help="poll interval, e.g. 60s, 5m (default: 60s)")
    run.add_argument("--listen", help="HTTP address (default: 127.0.0.1:9108)")
    run.add_argument(
        "--liveness-timeout",
        help="/healthz fails when one pass runs longer than this, e.g. 10m "
        "(default: the larger of 3 intervals and 5m)",
    )
    run.add_argument("--webhook-secret-file", help="enables /hooks/*: the shared secret")
    run.add_argument("--git-token-file", help="HTTPS token for the repository")
    run.add_argument("--git-ssh-key", help="SSH private key for the repository")
    run.add_argument("--git-known-hosts", help="known_hosts file; host keys are checked strictly")
    run.add_argument("--log-level", help="debug, info, warning, error (default: info)")
    run.add_argument("--log-format", choices=("auto", "json", "text"), default=None)

    status = commands.add_parser("status", help="caches, status, expiry, revision, last error")
    status.add_argument("--format", choices=("text", "json"), default=None)

    match = commands.add_parser(
        "match", help="which cache a pod with these images would use (0 match, 3 none)"
    )
    match.add_argument("images", nargs="+", metavar="IMAGE")
    match.add_argument("--cache", help="manual match: a cache name or imc-… id")
    match.add_argument("--format", choices=("text", "json"), default=None)

    export = commands.add_parser("export", help="write a cache's images as an OCI image layout")
    export.add_argument("name", metavar="NAME", help="cache name or imc-… id")
    export.add_argument("--dest", help="oci:DIR")
    export.add_argument(
        "--link",
        action="store_true",
        default=None,
        help="hard-link blobs when DIR is on the data dir's file system",
    )

    gc = commands.add_parser(
        "gc", help="drop blobs no snapshot references and no running pull holds (local backend)"
    )
    gc.add_argument(
        "--grace", help="also keep blobs written or reused less than this ago, e.g. 1h (default: 0)"
    )

    for sub in (validate, plan, apply, run, status, match, export, gc):
        # Also after the command; SUPPRESS keeps the subcommand from resetting a global --debug.
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    for sub in (plan, apply, run, status, gc, match, export):
        _add_common(sub)
    for sub in (plan, apply, run):
        _add_policy(sub)
    for sub in (plan, apply, run, status, gc, export):
        _add_local(sub)  # plan: the size check reads manifests with these registry settings
    for sub in (plan, apply, run, status, match):
        _add_tencent(sub)
        _add_kubernetes(sub, daemon=sub is run)
    return parser


def _config_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    text = getattr(args, "config", None) or env.get(env_name("--config"), "")
    return Path(text) if text else None


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> CommandSettings:
    """This command's settings: flag, GITSYNC_<FLAG>, --config (read once), then default."""
    return CommandSettings(flags=vars(args), env=env, config_path=_config_path(args, env))


class _TencentCredentials:
    """The Tencent Cloud credential chain, as `wiring.CredentialChain` asks for it."""

    def __init__(self, settings: CommandSettings, env: Mapping[str, str]) -> None:
        self._settings = settings
        self._env = env

    @property
    def explicit(self) -> bool:
        return bool(
            self._env.get("TENCENTCLOUD_SECRET_ID")
            or self._env.get("TENCENTCLOUD_SECRET_KEY")
            or self._settings.tencent.credentials_file
        )

    def __call__(self, tc: Any, *, default_file: bool) -> Any:
        return _tencent_credentials(
            self._settings.tencent, self._env, tc, default_file=default_file
        )


def _tencent_credentials(
    tencent: TencentSettings, env: Mapping[str, str], tc: Any, *, default_file: bool
) -> Any:
    """TencentCloudCredentials from --tencentcloud-credentials-file, the environment or, when
    `default_file`, ~/.tencentcloud/credentials; None when none is given."""
    secret_id, secret_key = env.get("TENCENTCLOUD_SECRET_ID"), env.get("TENCENTCLOUD_SECRET_KEY")
    credentials_file = tencent.credentials_file
    home_file = Path(env.get("HOME", "~")).expanduser() / ".tencentcloud" / "credentials"
    profile = tencent.profile
    if credentials_file:
        return tc.load_credentials_file(Path(credentials_file), profile=profile)
    if secret_id or secret_key:
        return tc.TencentCloudCredentials(
            secret_id=secret_id or "",
            secret_key=secret_key or "",
            token=env.get("TENCENTCLOUD_SESSION_TOKEN") or None,
            source="environment (TENCENTCLOUD_SECRET_ID/KEY)",
        )
    if default_file and home_file.is_file():
        return tc.load_credentials_file(home_file, profile=profile)
    return None


def _open_provider(
    settings: CommandSettings,
    env: Mapping[str, str],
    *,
    writable: bool,
    on_progress: Callable[[Any], None] | None = None,
) -> Provider:
    return wiring.open_provider(
        settings,
        credentials=_TencentCredentials(settings, env),
        writable=writable,
        on_progress=on_progress,
    )


# ------------------------------------------------------------------ commands


def cmd_validate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import reports, specs  # keep `--help` fast

    output_format = _settings(args, env).text("--format", "text")
    if output_format not in reports.DIAGNOSTIC_FORMATS:
        raise ConfigError(
            f"--format: {output_format!r} is not one of {', '.join(reports.DIAGNOSTIC_FORMATS)}"
        )
    paths = [Path(p) for p in (args.paths or ["."])]
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        raise ConfigError(f"no such file or directory: {', '.join(missing)}")
    result = specs.load_repository(paths, root=Path.cwd())
    text = reports.format_diagnostics(
        result.diagnostics,
        output_format=output_format,
        files=result.files,
        documents=result.documents,
        caches=len(result.caches),
    )
    if text:
        print(text)
    return EXIT_OK if result.ok else EXIT_FAILED


def _progress_printer() -> Callable[[Any], None] | None:
    """A one-line progress bar on a terminal; None (plain log lines) otherwise."""
    if not sys.stderr.isatty():
        return None

    def show(event: Any) -> None:
        done, total = getattr(event, "bytes_done", 0), getattr(event, "bytes_total", 0) or 1
        layers = f"{getattr(event, 'layers_done', 0)}/{getattr(event, 'layers_total', 0)}"
        width = 30
        filled = min(width, int(width * done / total))
        sys.stderr.write(
            f"\r  [{'#' * filled}{'.' * (width - filled)}] {done / 2**20:8.1f} MiB  "
            f"layers {layers}  {getattr(event, 'image', '')[:40]:<40}"
        )
        sys.stderr.flush()

    return show


@contextmanager
def _checkout(settings: CommandSettings) -> Iterator[tuple[Path, str | None]]:
    """The folder of the requested revision (or the working tree) and its commit id."""
    from gitsync.sources import git  # keep `validate` fast

    source = settings.source(default_repo=".")
    repo, revision, subpath = source.repo, source.revision, source.path
    with tempfile.TemporaryDirectory(prefix="gitsync-") as scratch:
        if revision or not Path(repo).is_dir():
            checkout = git.export_revision(
                repo=repo, revision=revision or "HEAD", dest=Path(scratch) / "tree"
            )
        else:
            checkout = git.Checkout(path=Path(repo), revision=git.head_revision(Path(repo)))
        target = checkout.path / subpath if subpath else checkout.path
        if not target.is_dir():
            raise ConfigError(f"--path: {subpath!r} is not a folder of {repo}")
        yield target, checkout.revision


def cmd_plan(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import planning, reports, specs  # keep `validate` fast
    from gitsync.controller_record import RecordFile
    from gitsync.reconciler import keep_names

    settings = _settings(args, env)
    common = settings.common
    output_format = settings.plan.format
    if output_format not in reports.PLAN_FORMATS:
        raise ConfigError(
            f"--format: {output_format!r} is not one of {', '.join(reports.PLAN_FORMATS)}"
        )
    with _checkout(settings) as (tree, revision):
        result = specs.load_repository([tree], root=tree)
    if not result.ok:
        text = reports.format_diagnostics(
            [d for d in result.diagnostics if d.severity.value == "error"],
            output_format="text",
            files=result.files,
            documents=result.documents,
            caches=len(result.caches),
        )
        print(
            f"gitsync plan: revision {revision or '(working tree)'} is invalid; "
            f"nothing would be applied:\n{text}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    observed = wiring.observe(settings, credentials=_TencentCredentials(settings, env))
    policy = planning.PlanPolicy(
        controller_id=common.controller_id,
        now=datetime.now(UTC),
        max_delete_ratio=common.max_delete_ratio,
        allow_mass_delete=common.allow_mass_delete,
        renew_before=common.renew_before,
        keep=keep_names(RecordFile(common.data_dir).load(), observed),
    )
    the_plan = planning.plan(
        result.desired(revision), observed, policy=policy, prices=common.prices
    )
    sizes = wiring.size_report(settings, the_plan)
    print(
        reports.format_plan(
            the_plan, output_format=output_format, provider=common.provider, sizes=sizes
        )
    )
    if sizes.has_errors:  # a cache that cannot hold its images fails after billing its build
        return EXIT_FAILED
    if settings.plan.detailed_exitcode:
        return EXIT_CHANGES if the_plan.has_changes else EXIT_OK
    return EXIT_OK


def cmd_apply(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import logs
    from gitsync.datadir import DataDirLock
    from gitsync.reconciler import cache_states, desired_names

    settings = _settings(args, env)
    common = settings.common
    wait, timeout = settings.apply.wait, settings.apply.timeout  # checked even without --wait
    logs.configure(stream=sys.stderr, json_format=not sys.stderr.isatty())
    with DataDirLock(common.data_dir), _checkout(settings) as (tree, revision):
        provider = _open_provider(settings, env, writable=True, on_progress=_progress_printer())
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
    for d in result.diagnostics:
        if d.severity.value == "error":
            print(f"{d.location}: error: {d.message} [{d.rule}]", file=sys.stderr)
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

    provider = _open_provider(settings, env, writable=False)
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


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import reports
    from gitsync.controller_record import RecordFile

    settings = _settings(args, env)
    common = settings.common
    output_format = settings.text("--format", "text")
    record = RecordFile(common.data_dir).load()
    view = reports.StatusView(
        provider=common.provider,
        controller_id=common.controller_id,
        applied_revision=record.applied_revision,
        newest_revision=record.newest_revision,
        spec_valid=record.spec_valid,
        last_error=record.last_error,
        diagnostics=record.diagnostics,
        caches=wiring.observe(settings, credentials=_TencentCredentials(settings, env)).caches,
    )
    print(reports.format_status(view, output_format=output_format))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync.providers.base import CollectsGarbage, innermost

    settings = _settings(args, env)
    if settings.common.provider != "local":
        raise ConfigError("gc: only the local backend keeps blobs; use --provider local")
    # 0 (the default): leases alone protect pulls in progress; a grace keeps young blobs too.
    grace = settings.resolver.duration("--grace", "0", allow_zero=True)
    provider = innermost(_open_provider(settings, env, writable=False))
    try:
        if not isinstance(provider, CollectsGarbage):
            raise ConfigError("gc: only the local backend keeps blobs")
        done = provider.gc(grace_seconds=grace.total_seconds())
    finally:
        provider.close()
    print(
        f"removed {done.removed_blobs} blobs ({done.freed_bytes / 2**20:.1f} MiB), "
        f"kept {done.kept_blobs} ({done.leased_blobs} held by running pulls); "
        f"removed {done.removed_temp_files} stale temporary files; "
        f"dropped {done.dropped_leases} dead leases"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import logs
    from gitsync.datadir import DataDirLock

    settings = _settings(args, env)
    common = settings.common
    logs.configure(level=settings.logging.level, json_format=settings.logging.json_format)
    heartbeat = wiring.heartbeat(settings)  # every setting of run checked before the lock
    with DataDirLock(common.data_dir):
        # Bytes pulled are progress: a long first pull must not fail the liveness probe.
        provider = _open_provider(
            settings, env, writable=True, on_progress=lambda _step: heartbeat.progress()
        )
        try:
            daemon = wiring.daemon(settings, provider=provider, heartbeat=heartbeat)
            signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
            signal.signal(signal.SIGINT, lambda *_: daemon.stop())
            daemon.run()
        finally:
            provider.close()
    return EXIT_OK


def cmd_match(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import json

    from gitsync import matching
    from gitsync.providers.base import SuggestsCache, innermost

    settings = _settings(args, env)
    output_format = settings.text("--format", "text")
    manual = settings.text("--cache") or None
    provider = _open_provider(settings, env, writable=False)
    try:
        caches = provider.observe().caches
        cloud = None
        suggests = innermost(provider)
        if isinstance(suggests, SuggestsCache) and manual is None:
            # The cloud decides for real pods: show its answer beside ours.
            cloud = suggests.most_suitable(args.images)
    finally:
        provider.close()
    try:
        decision = matching.match(args.images, caches, manual=manual)
    except ValueError as exc:  # an ImageRefError is a ValueError
        raise ConfigError(str(exc)) from exc
    if output_format == "json":
        report = decision.to_json()
        if cloud is not None:
            report["cloud"] = {"id": cloud[0], "reason": cloud[1]}
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{decision.result.value}: {decision.cache or '-'} ({decision.cache_id or '-'}): "
            f"{decision.reason}"
        )
        for c in decision.candidates:
            print(
                f"  {c.name}  exact={c.exact} partial={c.partial} "
                f"imageCacheSize={c.image_cache_size_gib}"
            )
        if cloud is not None:
            print(f"cloud: {cloud[0] or 'no cache'}: {cloud[1]}")
    return EXIT_NO_MATCH if decision.result is matching.MatchResult.MISS else EXIT_OK


def cmd_export(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync.providers.local.export import export_cache, parse_dest

    settings = _settings(args, env)
    dest = parse_dest(settings.text("--dest"))
    provider = _open_provider(settings, env, writable=False)
    try:
        store = wiring.image_store(provider)
        if store is None:
            raise ConfigError(
                "export: only the local backend holds image content; use --provider local"
            )
        done = export_cache(provider=store, name=args.name, dest=dest, link=bool(args.link))
    finally:
        provider.close()
    for image in done.images:
        print(f"{image.ref_name}  {image.manifest_digest}")
    print(
        f"exported {len(done.images)} images of {done.cache} to oci:{done.dest}: "
        f"{done.blobs_copied} blobs copied ({done.bytes_copied / 2**20:.1f} MiB), "
        f"{done.blobs_linked} linked, {done.blobs_present} already there, "
        f"in {done.seconds:.2f} s"
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "run": cmd_run,
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

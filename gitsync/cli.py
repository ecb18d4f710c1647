"""The `gitsync` command: parses flags, wires the layers together, maps outcomes to exit codes.

This is the only module (with `config`) that reads flags and the environment.
Heavy backends are imported inside the branch that needs them, so
`gitsync validate` starts fast: it is the command CI runs on every pull request.

Exit codes: 0 success, 1 failure or invalid input, 2 usage error (and, for
`plan --detailed-exitcode`, 2 = changes). `apply` exits 0 once the provider has
accepted every action, as `kubectl apply` does; `apply --wait` waits for Ready
caches, as `helm upgrade --wait` does. No command prints a traceback: an
unexpected exception is one line naming the command and the error, exit 1
(`--debug` or GITSYNC_DEBUG=1 adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
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

from gitsync import __version__
from gitsync.config import (
    Settings,
    SettingsResolver,
    env_name,
    format_duration,
    optional_path,
    parse_bool,
    resolve_settings,
)
from gitsync.errors import ConfigError, GitSyncError, PermanentError
from gitsync.model import ActionKind, CacheStatus, ObservedCache, ObservedState, Plan

if TYPE_CHECKING:
    from gitsync.daemon import Daemon
    from gitsync.metrics import DaemonMetrics
    from gitsync.providers.base import Provider
    from gitsync.providers.local.scrub import Scrubber
    from gitsync.reconciler import PassResult, Reconciler
    from gitsync.sizing import SizeReport

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
    # The scrub (local backend): re-hash the store's blobs at a bounded rate.
    run.add_argument(
        "--scrub-interval",
        help="local backend: re-hash every served blob this often, e.g. 24h (default: 24h; 0: off)",
    )
    run.add_argument(
        "--scrub-rate",
        help="local backend: bytes per second the scrub reads, e.g. 50M, 1G (default: 50M)",
    )
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


def _flag(args: argparse.Namespace, env: Mapping[str, str], name: str, default: str) -> str:
    """A command's own setting: flag, then GITSYNC_<FLAG>, then --config, then `default`."""
    resolver = SettingsResolver(flags=vars(args), env=env, config_path=_config_path(args, env))
    return resolver.text(f"--{name}", default)


def _duration(
    args: argparse.Namespace,
    env: Mapping[str, str],
    name: str,
    default: str,
    *,
    allow_zero: bool = False,
    minimum: timedelta | None = None,
) -> timedelta:
    """A duration setting (`90s`, `1h30m`, `2d`); a bad one names the flag and its source."""
    resolver = SettingsResolver(flags=vars(args), env=env, config_path=_config_path(args, env))
    return resolver.duration(f"--{name}", default, allow_zero=allow_zero, minimum=minimum)


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    return resolve_settings(flags=vars(args), env=env, config_path=_config_path(args, env))


# ------------------------------------------------------------------ commands


def cmd_validate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import reports, specs  # noqa: PLC0415  # keep `--help` fast

    output_format = _flag(args, env, "format", "text")
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


def _open_provider(
    args: argparse.Namespace,
    env: Mapping[str, str],
    settings: Settings,
    *,
    writable: bool,
    progress: bool = False,
    on_progress: Callable[[Any], None] | None = None,
) -> Provider:
    """The chosen backend; heavy SDKs load only here, when that backend is chosen.

    `progress` draws a bar on a terminal; `on_progress` hears of every step instead.
    """
    if settings.provider == "local":
        from gitsync.providers.local.provider import LocalProvider  # noqa: PLC0415  # lazy

        return LocalProvider(
            data_dir=settings.data_dir,
            platform=settings.platform,
            secrets_dir=settings.secrets_dir,
            docker_config=settings.docker_config,
            insecure_registries=settings.insecure_registries,
            writable=writable,
            on_progress=_progress_printer() if progress else on_progress,
        )
    if settings.provider == "tencentcloud":
        return _tencent_provider(args, env, settings)
    if settings.provider == "kubernetes":
        from gitsync.providers.kubernetes import KubernetesProvider  # noqa: PLC0415  # lazy

        provider = KubernetesProvider.from_config(
            kubeconfig=_kubeconfig(args, env), context=_flag(args, env, "context", "") or None
        )
        return _kubernetes_snapshot_checks(args, env, provider)
    raise ConfigError(
        f"--provider {settings.provider}: this backend is not available yet in gitsync "
        f"{__version__}; use --provider local or tencentcloud"
    )


def _tencent_module() -> Any:
    try:
        from gitsync.providers import tencentcloud  # noqa: PLC0415  # heavy SDK, lazy
    except ImportError as exc:
        raise ConfigError(
            "--provider tencentcloud needs the Tencent Cloud SDK: pip install 'gitsync[tencent]'"
        ) from exc
    return tencentcloud


def _tencent_region(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    return _flag(args, env, "region", "") or env.get("TENCENTCLOUD_REGION", "")


def _tencent_credentials(
    args: argparse.Namespace, env: Mapping[str, str], tc: Any, *, default_file: bool
) -> Any:
    """TencentCloudCredentials from --tencentcloud-credentials-file, the environment or, when
    `default_file`, ~/.tencentcloud/credentials; None when none is given."""
    secret_id, secret_key = env.get("TENCENTCLOUD_SECRET_ID"), env.get("TENCENTCLOUD_SECRET_KEY")
    credentials_file = _flag(args, env, "tencentcloud-credentials-file", "")
    home_file = Path(env.get("HOME", "~")).expanduser() / ".tencentcloud" / "credentials"
    profile = _flag(args, env, "tencentcloud-profile", "default")
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


def _snapshot_check_interval(args: argparse.Namespace, env: Mapping[str, str]) -> timedelta:
    """--snapshot-check-interval: 1h unless told; 0 turns the snapshot checks off."""
    return _duration(
        args, env, "snapshot-check-interval", "1h", allow_zero=True, minimum=timedelta(seconds=1)
    )


def _snapshot_checked(
    provider: Provider, *, tc_settings: Any, credentials: Any, interval: timedelta
) -> Provider:
    """`provider` with the CBS snapshot behind each Ready cache looked up (providers.snapshots).

    Closes `provider` when the checks cannot be set up, so the caller has nothing to undo.
    """
    from gitsync.providers.snapshots import SnapshotChecked  # noqa: PLC0415

    try:
        try:
            from gitsync.providers.tencent_snapshots import (  # noqa: PLC0415  # heavy SDK
                CbsSnapshotLookup,
            )
        except ImportError as exc:
            raise ConfigError(
                "snapshot checks need the Tencent Cloud CBS SDK (tencentcloud-sdk-python-cbs):"
                " pip install 'gitsync[tencent]', or turn them off with"
                " --snapshot-check-interval 0"
            ) from exc
        lookup = CbsSnapshotLookup(settings=tc_settings, credentials=credentials)
    except BaseException:
        provider.close()
        raise
    return SnapshotChecked(provider, lookup=lookup, interval_seconds=interval.total_seconds())


def _tencent_provider(
    args: argparse.Namespace, env: Mapping[str, str], settings: Settings
) -> Provider:
    tc = _tencent_module()

    def listed(name: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in _flag(args, env, name, "").split(",") if p.strip())

    region = _tencent_region(args, env)
    if not region:
        raise ConfigError("--provider tencentcloud needs --region (e.g. ap-guangzhou)")
    credentials = _tencent_credentials(args, env, tc, default_file=True)
    if credentials is None:
        raise ConfigError(
            "--provider tencentcloud needs credentials: set TENCENTCLOUD_SECRET_ID and "
            "TENCENTCLOUD_SECRET_KEY, or --tencentcloud-credentials-file"
        )
    interval = _snapshot_check_interval(args, env)
    tc_settings = tc.TencentCloudSettings(
        region=region,
        vpc_id=_flag(args, env, "vpc-id", "") or None,
        subnet_id=_flag(args, env, "subnet-id", "") or None,
        security_group_ids=listed("security-group-id"),
        registry_http_endpoints=listed("registry-http-endpoint"),
        registry_skip_verify=listed("registry-skip-verify"),
        endpoint=_flag(args, env, "tencentcloud-endpoint", "") or None,
        scheme=_flag(args, env, "tencentcloud-scheme", "https"),
        cbs_endpoint=_flag(args, env, "tencentcloud-cbs-endpoint", "") or None,
        secrets_dir=settings.secrets_dir,
    )
    provider: Provider = tc.TencentCloudProvider(settings=tc_settings, credentials=credentials)
    if not interval:
        return provider
    return _snapshot_checked(
        provider, tc_settings=tc_settings, credentials=credentials, interval=interval
    )


def _kubernetes_snapshot_checks(
    args: argparse.Namespace, env: Mapping[str, str], provider: Provider
) -> Provider:
    """The operator's caches are TKE caches too: check their CBS snapshots when gitsync can.

    On when gitsync is given both a region (--region or TENCENTCLOUD_REGION) and
    explicit credentials (TENCENTCLOUD_SECRET_ID and _KEY, or
    --tencentcloud-credentials-file; not ~/.tencentcloud/credentials, which a
    cluster user may hold for other reasons), unless --snapshot-check-interval is
    0; it then needs the Tencent Cloud SDK. Given only one of the two, the checks
    stay off with a warning. Closes `provider` when the settings are wrong.
    """
    try:
        interval = _snapshot_check_interval(args, env)
        region = _tencent_region(args, env)
        explicit = bool(
            env.get("TENCENTCLOUD_SECRET_ID")
            or env.get("TENCENTCLOUD_SECRET_KEY")
            or _flag(args, env, "tencentcloud-credentials-file", "")
        )
        if not interval or not (region or explicit):
            return provider
        if not (region and explicit):
            logging.getLogger("gitsync.cli").warning(
                "snapshot checks are off: on the kubernetes backend they need both --region"
                " and Tencent Cloud credentials (TENCENTCLOUD_SECRET_ID/KEY or"
                " --tencentcloud-credentials-file); %s is missing",
                "the region" if not region else "the credentials",
            )
            return provider
        try:
            tc = _tencent_module()
        except ConfigError as exc:
            raise ConfigError(
                "snapshot checks on the kubernetes backend (--region and Tencent Cloud"
                " credentials are set) need the Tencent Cloud SDK: pip install"
                " 'gitsync[tencent]', or --snapshot-check-interval 0"
            ) from exc
        credentials = _tencent_credentials(args, env, tc, default_file=False)
        tc_settings = tc.TencentCloudSettings(
            region=region,
            endpoint=_flag(args, env, "tencentcloud-endpoint", "") or None,
            scheme=_flag(args, env, "tencentcloud-scheme", "https"),
            cbs_endpoint=_flag(args, env, "tencentcloud-cbs-endpoint", "") or None,
        )
    except BaseException:
        provider.close()
        raise
    return _snapshot_checked(
        provider, tc_settings=tc_settings, credentials=credentials, interval=interval
    )


def _kubeconfig(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    return optional_path(_flag(args, env, "kubeconfig", "") or env.get("KUBECONFIG", ""))


def _attach_kubernetes(daemon: Daemon, args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """The pod observer and, with --leader-elect, the Lease: the in-cluster extras of run."""
    from gitsync.leader import LeaderElector, default_identity  # noqa: PLC0415
    from gitsync.observers.kubernetes import (  # noqa: PLC0415
        LookupReasons,
        PodLookupTracker,
        PodObserver,
    )
    from gitsync.providers.kubernetes import load_api_client  # noqa: PLC0415

    def listed(name: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in _flag(args, env, name, "").split(",") if p.strip())

    api = load_api_client(
        kubeconfig=_kubeconfig(args, env), context=_flag(args, env, "context", "") or None
    )
    defaults = LookupReasons()
    reasons = LookupReasons(
        hit=listed("cache-hit-reasons") or defaults.hit,
        partial=listed("cache-partial-reasons") or defaults.partial,
        miss=listed("cache-miss-reasons") or defaults.miss,
        pulling=listed("image-pull-reasons") or defaults.pulling,
    )

    def cache_name(cache_id: str) -> str | None:
        return next((c.name for c in daemon.current_caches() if c.cache_id == cache_id), None)

    tracker = PodLookupTracker(recorder=daemon.usage, reasons=reasons, resolve_cache=cache_name)
    daemon.observer = PodObserver(api_client=api, tracker=tracker, namespaces=listed("namespaces"))
    if _flag(args, env, "leader-elect", "false").lower() in ("1", "true", "yes"):
        namespace = _flag(args, env, "leader-election-namespace", "")
        if not namespace:
            raise ConfigError("--leader-elect needs --leader-election-namespace (the pod's own)")
        daemon.attach_leader(
            LeaderElector(
                api_client=api,
                namespace=namespace,
                name=_flag(args, env, "leader-election-name", "gitsync-leader"),
                identity=_flag(args, env, "leader-election-identity", "") or default_identity(),
                on_started_leading=daemon.on_started_leading,
                on_stopped_leading=daemon.on_stopped_leading,
            )
        )


def _observe(args: argparse.Namespace, env: Mapping[str, str], settings: Settings) -> ObservedState:
    if settings.provider == "local" and not (settings.data_dir / "state.db").exists():
        return ObservedState(caches=())  # nothing was ever created here; create nothing
    provider = _open_provider(args, env, settings, writable=False)
    try:
        return provider.observe()
    finally:
        provider.close()


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
def _checkout(
    args: argparse.Namespace, env: Mapping[str, str]
) -> Iterator[tuple[Path, str | None]]:
    """The folder of the requested revision (or the working tree) and its commit id."""
    from gitsync.sources import git  # noqa: PLC0415  # keep `validate` fast

    repo = _flag(args, env, "repo", ".")
    revision = _flag(args, env, "revision", "")
    subpath = _flag(args, env, "path", "")
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
    from gitsync import planning, reports, specs  # noqa: PLC0415  # keep `validate` fast
    from gitsync.controller_record import RecordFile  # noqa: PLC0415
    from gitsync.reconciler import keep_names  # noqa: PLC0415

    settings = _settings(args, env)
    output_format = _flag(args, env, "format", "text")
    if output_format not in reports.PLAN_FORMATS:
        raise ConfigError(
            f"--format: {output_format!r} is not one of {', '.join(reports.PLAN_FORMATS)}"
        )
    with _checkout(args, env) as (tree, revision):
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
    observed = _observe(args, env, settings)
    policy = planning.PlanPolicy(
        controller_id=settings.controller_id,
        now=datetime.now(UTC),
        max_delete_ratio=settings.max_delete_ratio,
        allow_mass_delete=settings.allow_mass_delete,
        renew_before=settings.renew_before,
        keep=keep_names(RecordFile(settings.data_dir).load(), observed),
    )
    the_plan = planning.plan(
        result.desired(revision), observed, policy=policy, prices=settings.prices
    )
    sizes = _size_check(args, env, settings, the_plan)
    print(
        reports.format_plan(
            the_plan, output_format=output_format, provider=settings.provider, sizes=sizes
        )
    )
    if sizes.has_errors:  # a cache that cannot hold its images fails after billing its build
        return EXIT_FAILED
    if _flag(args, env, "detailed-exitcode", "").lower() in ("1", "true"):
        return EXIT_CHANGES if the_plan.has_changes else EXIT_OK
    return EXIT_OK


def _size_check(
    args: argparse.Namespace, env: Mapping[str, str], settings: Settings, the_plan: Plan
) -> SizeReport:
    """Check the caches the plan builds against their imageCacheSize (see `gitsync.sizing`).

    Unchanged caches are not checked: nothing is built for them. The manifests
    are read with the registry settings of the local backend (docker config,
    --secrets-dir, --insecure-registry, --platform) whatever the provider, plus
    the tencentcloud backend's --registry-http-endpoint registries.
    """
    from gitsync import sizing  # noqa: PLC0415

    if parse_bool(_flag(args, env, "no-size-check", "false"), what="--no-size-check"):
        return sizing.SizeReport(off="--no-size-check")
    builds = (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.RECREATE)
    specs = [a.desired for a in the_plan.actions if a.kind in builds and a.desired is not None]
    if not specs:
        return sizing.SizeReport()
    from gitsync.providers.local.imagesizes import ImageSizeResolver  # noqa: PLC0415
    from gitsync.providers.local.provider import STORE_DIR  # noqa: PLC0415

    http_endpoints = [
        p.strip() for p in _flag(args, env, "registry-http-endpoint", "").split(",") if p.strip()
    ]
    with ImageSizeResolver(
        store_root=settings.data_dir / STORE_DIR,
        platform=settings.platform,
        docker_config=settings.docker_config,
        secrets_dir=settings.secrets_dir,
        insecure_registries=(*settings.insecure_registries, *http_endpoints),
    ) as resolver:
        facts = resolver.facts(specs)
    return sizing.SizeReport(
        caches=tuple(sizing.check_cache(spec, facts[spec.name]) for spec in specs)
    )


def _reconciler(settings: Settings, provider: Provider) -> Reconciler:
    from gitsync.controller_record import RecordFile  # noqa: PLC0415
    from gitsync.reconciler import ReconcilePolicy, Reconciler  # noqa: PLC0415

    return Reconciler(
        provider=provider,
        records=RecordFile(settings.data_dir),
        policy=ReconcilePolicy(
            controller_id=settings.controller_id,
            max_delete_ratio=settings.max_delete_ratio,
            allow_mass_delete=settings.allow_mass_delete,
            renew_before=settings.renew_before,
        ),
        prices=settings.prices,
    )


def cmd_apply(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import logs  # noqa: PLC0415
    from gitsync.datadir import DataDirLock  # noqa: PLC0415
    from gitsync.reconciler import cache_states, desired_names  # noqa: PLC0415

    settings = _settings(args, env)
    wait = parse_bool(_flag(args, env, "wait", "false"), what="--wait")
    timeout = _duration(args, env, "timeout", "10m")  # checked even without --wait
    logs.configure(stream=sys.stderr, json_format=not sys.stderr.isatty())
    with DataDirLock(settings.data_dir), _checkout(args, env) as (tree, revision):
        provider = _open_provider(args, env, settings, writable=True, progress=True)
        try:
            result = _reconciler(settings, provider).reconcile(tree=tree, revision=revision)
        finally:
            provider.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if not _accepted(result) or result.plan is None:
        return EXIT_FAILED
    at = revision or "the working tree"
    names = desired_names(result.plan)
    if result.observed_after is not None:
        states = cache_states(result.observed_after, names, owner=settings.controller_id)
    elif settings.provider in SYNCHRONOUS_PROVIDERS:  # the reconciler logged why
        print("gitsync apply: applied, but the caches cannot be read back", file=sys.stderr)
        return EXIT_FAILED
    else:  # unknown until the next observation; --wait makes it
        states = dict.fromkeys(names)
    finished = _finished(states, synchronous=settings.provider in SYNCHRONOUS_PROVIDERS, at=at)
    if finished is not None:
        return finished
    building = _not_ready(states)
    if not wait:
        print(
            f"applied at {at}; still building: {_listing(states, building)} "
            "(gitsync apply --wait waits until they are Ready)"
        )
        return EXIT_OK
    return _wait_for_ready(args, env, settings, states=states, timeout=timeout, at=at)


def _finished(
    states: Mapping[str, ObservedCache | None], *, synchronous: bool, at: str
) -> int | None:
    """The exit code when the caches' states settle it; None while they are still building."""
    from gitsync.reconciler import BROKEN  # noqa: PLC0415  # keep `validate` fast

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
    args: argparse.Namespace,
    env: Mapping[str, str],
    settings: Settings,
    *,
    states: Mapping[str, ObservedCache | None],
    timeout: timedelta,
    at: str,
) -> int:
    """`apply --wait` after an accepted pass; the data dir is not held while waiting."""
    from gitsync.reconciler import WaitOutcome, wait_until_ready  # noqa: PLC0415

    provider = _open_provider(args, env, settings, writable=False)
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
                owner=settings.controller_id,
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
    from gitsync import reports  # noqa: PLC0415
    from gitsync.controller_record import RecordFile  # noqa: PLC0415

    settings = _settings(args, env)
    output_format = _flag(args, env, "format", "text")
    record = RecordFile(settings.data_dir).load()
    view = reports.StatusView(
        provider=settings.provider,
        controller_id=settings.controller_id,
        applied_revision=record.applied_revision,
        newest_revision=record.newest_revision,
        spec_valid=record.spec_valid,
        last_error=record.last_error,
        diagnostics=record.diagnostics,
        caches=_observe(args, env, settings).caches,
    )
    print(reports.format_status(view, output_format=output_format))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync.providers.local.provider import LocalProvider  # noqa: PLC0415

    settings = _settings(args, env)
    if settings.provider != "local":
        raise ConfigError("gc: only the local backend keeps blobs; use --provider local")
    # 0 (the default): leases alone protect pulls in progress; a grace keeps young blobs too.
    grace = _duration(args, env, "grace", "0", allow_zero=True)
    provider = _open_provider(args, env, settings, writable=False)
    try:
        if not isinstance(provider, LocalProvider):
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
    from prometheus_client import disable_created_metrics  # noqa: PLC0415

    from gitsync import logs  # noqa: PLC0415
    from gitsync.daemon import Daemon  # noqa: PLC0415
    from gitsync.datadir import DataDirLock  # noqa: PLC0415
    from gitsync.liveness import Heartbeat, default_timeout  # noqa: PLC0415
    from gitsync.metrics import DaemonMetrics, ExpositionRegistry  # noqa: PLC0415
    from gitsync.sources import open_source  # noqa: PLC0415
    from gitsync.sources.git import GitCredentials  # noqa: PLC0415

    settings = _settings(args, env)
    log_format = _flag(args, env, "log-format", "auto")
    logs.configure(
        level=_flag(args, env, "log-level", "info"),
        json_format=None if log_format == "auto" else log_format == "json",
    )
    repo = _flag(args, env, "repo", "")
    if not repo:
        raise ConfigError("run: --repo is required (a repository URL or folder)")
    interval = _duration(args, env, "interval", "60s", minimum=timedelta(seconds=1))
    host, port = _listen_address(_flag(args, env, "listen", "127.0.0.1:9108"))
    heartbeat = Heartbeat(
        timeout_seconds=(
            _duration(args, env, "liveness-timeout", "", minimum=timedelta(seconds=1))
            if _flag(args, env, "liveness-timeout", "")
            else timedelta(seconds=default_timeout(interval.total_seconds()))
        ).total_seconds()
    )
    branch = _flag(args, env, "branch", "main")
    credentials = GitCredentials(
        https_token=_read_secret(_flag(args, env, "git-token-file", ""), what="--git-token-file"),
        ssh_key_path=optional_path(_flag(args, env, "git-ssh-key", "")),
        known_hosts_path=optional_path(_flag(args, env, "git-known-hosts", "")),
    )
    secret = _read_secret(_flag(args, env, "webhook-secret-file", ""), what="--webhook-secret-file")
    with DataDirLock(settings.data_dir):
        # Bytes pulled are progress: a long first pull must not fail the liveness probe.
        provider = _open_provider(
            args, env, settings, writable=True, on_progress=lambda _step: heartbeat.progress()
        )
        try:
            # *_created series double the body for nothing we alert on; untyped upstream.
            disable_created_metrics()  # type: ignore[no-untyped-call]
            registry = ExpositionRegistry()
            metrics = DaemonMetrics(registry=registry, version=__version__)
            scrubber = _scrubber(args, env, provider, metrics)
            daemon = Daemon(
                source=open_source(
                    url=repo,
                    ref=branch,
                    path=_flag(args, env, "path", "") or None,
                    cache_dir=settings.data_dir / "source",
                    credentials=credentials,
                ),
                reconciler=_reconciler(settings, provider),
                registry=registry,
                metrics=metrics,
                interval_seconds=interval.total_seconds(),
                host=host,
                port=port,
                branch=branch,
                webhook_secret=secret.encode() if secret else None,
                version=__version__,
                heartbeat=heartbeat,
            )
            if settings.provider == "kubernetes":
                _attach_kubernetes(daemon, args, env)
            signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
            signal.signal(signal.SIGINT, lambda *_: daemon.stop())
            if scrubber is not None:
                scrubber.start()
            try:
                daemon.run()
            finally:
                if scrubber is not None:
                    scrubber.stop()
        finally:
            provider.close()
    return EXIT_OK


# ----------------------------------------------------------- the scrub (local backend)

_RATE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _scrub_rate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """--scrub-rate: bytes per second, a whole number with an optional K, M or G (binary)."""
    text = _flag(args, env, "scrub-rate", "50M").strip()
    number, unit = text.rstrip("KMGkmg"), text[len(text.rstrip("KMGkmg")) :].upper()
    if not number.isdigit() or unit not in _RATE_UNITS or int(number) == 0:
        raise ConfigError(
            f"--scrub-rate {text!r}: expected bytes per second as a positive whole number,"
            " optionally followed by K, M or G (1024-based), e.g. 50M"
        )
    return int(number) * _RATE_UNITS[unit]


def _scrubber(
    args: argparse.Namespace, env: Mapping[str, str], provider: Provider, metrics: DaemonMetrics
) -> Scrubber | None:
    """The local backend's scrub thread, unless --scrub-interval is 0 or the backend is another."""
    from gitsync.providers.local.provider import LocalProvider  # noqa: PLC0415
    from gitsync.providers.local.scrub import Scrubber  # noqa: PLC0415

    interval = _duration(
        args, env, "scrub-interval", "24h", allow_zero=True, minimum=timedelta(minutes=1)
    )
    rate = _scrub_rate(args, env)
    if not isinstance(provider, LocalProvider) or not interval.total_seconds():
        return None
    return Scrubber(
        provider,
        interval_seconds=interval.total_seconds(),
        rate_bytes=rate,
        on_bytes=metrics.scrub_bytes.inc,
    )


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen: {text!r} is not HOST:PORT, e.g. 127.0.0.1:9108")
    return host.strip("[]") or "127.0.0.1", int(port)


def _read_secret(path: str, *, what: str) -> str | None:
    if not path:
        return None
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


def cmd_match(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import json  # noqa: PLC0415

    from gitsync import matching  # noqa: PLC0415

    settings = _settings(args, env)
    output_format = _flag(args, env, "format", "text")
    manual = _flag(args, env, "cache", "") or None
    provider = _open_provider(args, env, settings, writable=False)
    try:
        caches = provider.observe().caches
        cloud = None
        if settings.provider == "tencentcloud" and manual is None:
            # The cloud decides for real pods: show its answer beside ours.
            cloud = provider.most_suitable(args.images)  # type: ignore[attr-defined]
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
    from gitsync.providers.local.export import export_cache, parse_dest  # noqa: PLC0415
    from gitsync.providers.local.provider import LocalProvider  # noqa: PLC0415

    settings = _settings(args, env)
    dest = parse_dest(_flag(args, env, "dest", ""))
    provider = _open_provider(args, env, settings, writable=False)
    try:
        if not isinstance(provider, LocalProvider):
            raise ConfigError(
                "export: only the local backend holds image content; use --provider local"
            )
        done = export_cache(provider=provider, name=args.name, dest=dest, link=bool(args.link))
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

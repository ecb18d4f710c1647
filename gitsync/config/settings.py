"""Typed, frozen settings, one dataclass per part of the program, and how each is resolved.

`Settings` is what every command shares; `CommandSettings` resolves the other
parts on first use, from one `SettingsResolver`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from gitsync.config.resolver import SettingsResolver
from gitsync.config.values import (
    PROVIDERS,
    default_data_dir,
    env_name,
    listen_address,
    optional_path,
    parse_bool,
    parse_duration,
    parse_rate,
    read_secret,
    split_list,
)
from gitsync.errors import ConfigError
from gitsync.pricing import PriceTable

T = TypeVar("T")


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


def resolve_settings(
    *, flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None
) -> Settings:
    return _settings(SettingsResolver(flags=flags, env=env, config_path=config_path))


def _settings(r: SettingsResolver) -> Settings:
    env = r.env
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
        insecure_registries=tuple(r.get("--insecure-registry", default=(), convert=split_list)),
    )


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


# ------------------------------------------------------------------ the parts


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Where the specs come from: `--repo`, `--path`, and `--revision` (plan, apply) or
    `--branch` (run)."""

    repo: str
    path: str = ""
    revision: str = ""
    branch: str = "main"


@dataclass(frozen=True, slots=True)
class GitSettings:
    """How `run` authenticates to its repository; the token is read from its file."""

    https_token: str | None = field(default=None, repr=False)
    ssh_key_path: Path | None = None
    known_hosts_path: Path | None = None


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"  # auto, json, text

    @property
    def json_format(self) -> bool | None:
        """None: JSON unless the stream is a terminal (see `logs.configure`)."""
        return None if self.format == "auto" else self.format == "json"


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """`gitsync run`'s loop and listener."""

    interval: timedelta
    host: str
    port: int
    liveness_timeout: timedelta | None  # None: the default for the interval (gitsync.liveness)
    webhook_secret: bytes | None = field(default=None, repr=False)
    # The local backend's scrub: re-hash every served blob this often (0: off), this fast.
    scrub_interval: timedelta = timedelta(hours=24)
    scrub_rate: int = 50 * 1024**2


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """`gitsync plan`'s output; --no-size-check is `CommandSettings.size_check`, read only
    when the plan builds something."""

    format: str = "text"
    detailed_exitcode: bool = False


@dataclass(frozen=True, slots=True)
class SuggestSettings:
    """`gitsync suggest`: the window it reads, what it writes and where it pushes.

    The branch to push is `--branch` on the command line, resolved as the
    setting `push-branch` (GITSYNC_PUSH_BRANCH), so a config file's `branch`,
    which names the branch `run` tracks, can never be taken for it. The
    tracked branch is `--tracked-branch`, else that `branch` setting.
    """

    since: timedelta = timedelta(days=7)
    min_misses: int = 3
    format: str = "text"
    write: bool = False
    push: bool = False
    push_branch: str = ""
    tracked_branch: str = "main"


@dataclass(frozen=True, slots=True)
class ObservationSettings:
    """Where `run` keeps the lookups it sees, for how long, and how often it suggests."""

    retention: timedelta = timedelta(days=30)
    max_rows: int = 2_000_000
    suggest_interval: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class AutomationSettings:
    """`run`'s refresh of moving tags and its automation branch (issue: drift and policies).

    `refresh_interval` None: caches resolve their tags only when annotated
    gitsync.io/refresh. `branch` "": no automation branch. Writing the tracked
    branch itself (Flux's full automation) needs `allow_push_to_tracked`.
    """

    refresh_interval: timedelta | None = None
    branch: str = ""
    with_suggestions: bool = False
    allow_push_to_tracked: bool = False


@dataclass(frozen=True, slots=True)
class ApplySettings:
    wait: bool = False
    timeout: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """The kubernetes backend, and `run`'s pod observer and leader election.

    An empty reason list means the observer's defaults (`LookupReasons`). Nothing
    here is checked: `plan` and `status` read the connection settings of a
    config file that `run` shares, and only `run` elects a leader.
    """

    kubeconfig: Path | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    leader_elect: bool = False
    leader_election_namespace: str = ""
    leader_election_name: str = "gitsync-leader"
    leader_election_identity: str | None = None
    cache_hit_reasons: tuple[str, ...] = ()
    cache_partial_reasons: tuple[str, ...] = ()
    cache_miss_reasons: tuple[str, ...] = ()
    image_pull_reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TencentSettings:
    """The tencentcloud backend's flags (the credentials come from the chain in `cli`).

    `region` falls back to TENCENTCLOUD_REGION, as the SDK's tools do.
    """

    region: str = ""
    vpc_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    registry_http_endpoints: tuple[str, ...] = ()
    registry_skip_verify: tuple[str, ...] = ()
    endpoint: str | None = None
    scheme: str = "https"
    cbs_endpoint: str | None = None
    credentials_file: str = ""
    profile: str = "default"


class CommandSettings:
    """The settings of one command: one resolver (the config file read once), parts on demand.

    Each part is resolved the first time it is asked for and kept, so its
    errors surface where the command first needs it, as they always did, and
    a command never trips over a setting it does not use.
    """

    def __init__(
        self, *, flags: Mapping[str, Any], env: Mapping[str, str], config_path: Path | None
    ) -> None:
        self.resolver = SettingsResolver(flags=flags, env=env, config_path=config_path)
        self._parts: dict[str, Any] = {}

    def _part(self, name: str, resolve: Callable[[SettingsResolver], T]) -> T:
        if name not in self._parts:
            self._parts[name] = resolve(self.resolver)
        return self._parts[name]  # type: ignore[no-any-return]

    def text(self, flag: str, default: str = "") -> str:
        """A command's own setting that needs no part of its own (`--format`, `--dest`)."""
        return self.resolver.text(flag, default)

    @property
    def common(self) -> Settings:
        return self._part("common", _settings)

    @property
    def logging(self) -> LoggingSettings:
        return self._part("logging", _logging)

    @property
    def daemon(self) -> DaemonSettings:
        return self._part("daemon", _daemon)

    @property
    def git(self) -> GitSettings:
        return self._part("git", _git)

    @property
    def webhook_secret(self) -> bytes | None:
        """--webhook-secret-file's content; None leaves /hooks/* off."""
        return self._part("webhook_secret", _webhook_secret)

    @property
    def plan(self) -> PlanSettings:
        return self._part("plan", _plan)

    @property
    def size_check(self) -> bool:
        """False with --no-size-check: plan reads no manifests."""
        return self._part("size_check", _size_check)

    @property
    def suggest(self) -> SuggestSettings:
        return self._part("suggest", _suggest)

    @property
    def observations(self) -> ObservationSettings:
        return self._part("observations", _observations)

    @property
    def automation(self) -> AutomationSettings:
        return self._part("automation", _automation)

    @property
    def apply(self) -> ApplySettings:
        return self._part("apply", _apply)

    @property
    def kubernetes(self) -> KubernetesSettings:
        return self._part("kubernetes", _kubernetes)

    @property
    def tencent(self) -> TencentSettings:
        return self._part("tencent", _tencent)

    @property
    def snapshot_check_interval(self) -> timedelta:
        """--snapshot-check-interval: 1h unless told; 0 turns the snapshot checks off."""
        return self._part("snapshot_check_interval", _snapshot_check_interval)

    def source(self, *, default_repo: str) -> SourceSettings:
        """`default_repo` "": --repo is required (run); "." the working tree (plan, apply)."""
        return self._part("source", lambda r: _source(r, default_repo=default_repo))


def _source(r: SettingsResolver, *, default_repo: str) -> SourceSettings:
    repo = r.text("--repo", default_repo)
    if not repo:
        raise ConfigError("run: --repo is required (a repository URL or folder)")
    return SourceSettings(
        repo=repo,
        path=r.text("--path"),
        revision=r.text("--revision"),
        branch=r.text("--branch", "main"),
    )


def _logging(r: SettingsResolver) -> LoggingSettings:
    return LoggingSettings(
        format=r.text("--log-format", "auto"), level=r.text("--log-level", "info")
    )


def _daemon(r: SettingsResolver) -> DaemonSettings:
    interval = r.duration("--interval", "60s", minimum=timedelta(seconds=1))
    host, port = listen_address(r.text("--listen", "127.0.0.1:9108"))
    liveness = (
        r.duration("--liveness-timeout", "5m", minimum=timedelta(seconds=1))
        if r.text("--liveness-timeout")
        else None
    )
    return DaemonSettings(
        interval=interval,
        host=host,
        port=port,
        liveness_timeout=liveness,
        scrub_interval=r.duration(
            "--scrub-interval", "24h", allow_zero=True, minimum=timedelta(minutes=1)
        ),
        scrub_rate=parse_rate(r.text("--scrub-rate", "50M"), what="--scrub-rate"),
    )


def _git(r: SettingsResolver) -> GitSettings:
    return GitSettings(
        https_token=read_secret(r.text("--git-token-file"), what="--git-token-file"),
        ssh_key_path=optional_path(r.text("--git-ssh-key")),
        known_hosts_path=optional_path(r.text("--git-known-hosts")),
    )


def _webhook_secret(r: SettingsResolver) -> bytes | None:
    secret = read_secret(r.text("--webhook-secret-file"), what="--webhook-secret-file")
    return secret.encode() if secret else None


def _plan(r: SettingsResolver) -> PlanSettings:
    return PlanSettings(
        format=r.text("--format", "text"),
        # As it always was: only 1 and true ask for it; other words mean no.
        detailed_exitcode=r.text("--detailed-exitcode").lower() in ("1", "true"),
    )


def _size_check(r: SettingsResolver) -> bool:
    return not parse_bool(r.text("--no-size-check", "false"), what="--no-size-check")


SUGGEST_FORMATS = ("text", "json", "markdown", "diff")


def _suggest(r: SettingsResolver) -> SuggestSettings:
    output_format = r.text("--format", "text")
    if output_format not in SUGGEST_FORMATS:
        raise ConfigError(f"--format: {output_format!r} is not one of {', '.join(SUGGEST_FORMATS)}")
    min_misses = r.get("--min-misses", default=3, convert=_positive_int("--min-misses"))
    push = parse_bool(r.text("--push", "false"), what="--push")
    push_branch = r.text("--push-branch")
    tracked = r.text("--tracked-branch") or r.text("--branch", "main")
    if push and not push_branch:
        raise ConfigError("--push needs --branch NAME: the branch the suggestions go to")
    if push_branch and push_branch == tracked:
        raise ConfigError(
            f"--branch {push_branch}: that is the branch gitsync run tracks; suggestions go to a"
            " branch of their own, for review"
        )
    return SuggestSettings(
        since=r.duration("--since", "7d", minimum=timedelta(minutes=1)),
        min_misses=min_misses,
        format=output_format,
        write=parse_bool(r.text("--write", "false"), what="--write"),
        push=push,
        push_branch=push_branch,
        tracked_branch=tracked,
    )


def _observations(r: SettingsResolver) -> ObservationSettings:
    return ObservationSettings(
        retention=r.duration("--observation-retention", "30d", minimum=timedelta(hours=1)),
        max_rows=r.get(
            "--observation-max-rows",
            default=2_000_000,
            convert=_positive_int("--observation-max-rows"),
        ),
        suggest_interval=r.duration(
            "--suggest-interval", "10m", allow_zero=True, minimum=timedelta(seconds=1)
        ),
    )


def _automation(r: SettingsResolver) -> AutomationSettings:
    refresh = (
        r.duration("--refresh-interval", "1h", minimum=timedelta(seconds=1))
        if r.text("--refresh-interval")
        else None
    )
    branch = r.text("--automation-branch")
    allow = parse_bool(r.text("--allow-push-to-tracked", "false"), what="--allow-push-to-tracked")
    tracked = r.text("--branch", "main")
    if branch and branch == tracked and not allow:
        raise ConfigError(
            f"--automation-branch {branch}: that is the branch gitsync run tracks; pushing"
            " image bumps straight to it needs --allow-push-to-tracked"
        )
    with_suggestions = parse_bool(
        r.text("--automation-suggestions", "false"), what="--automation-suggestions"
    )
    if with_suggestions and not branch:
        raise ConfigError("--automation-suggestions needs --automation-branch NAME")
    return AutomationSettings(
        refresh_interval=refresh,
        branch=branch,
        with_suggestions=with_suggestions,
        allow_push_to_tracked=allow,
    )


def _positive_int(flag: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError as exc:
            raise ConfigError(f"{flag}: {text!r} is not a whole number") from exc
        if value < 1:
            raise ConfigError(f"{flag}: {value} must be at least 1")
        return value

    return convert


def _apply(r: SettingsResolver) -> ApplySettings:
    wait = parse_bool(r.text("--wait", "false"), what="--wait")
    return ApplySettings(wait=wait, timeout=r.duration("--timeout", "10m"))


def _kubernetes(r: SettingsResolver) -> KubernetesSettings:
    return KubernetesSettings(
        kubeconfig=optional_path(r.text("--kubeconfig") or r.env.get("KUBECONFIG", "")),
        context=r.text("--context") or None,
        namespaces=r.listed("--namespaces"),
        leader_elect=r.text("--leader-elect", "false").lower() in ("1", "true", "yes"),
        leader_election_namespace=r.text("--leader-election-namespace"),
        leader_election_name=r.text("--leader-election-name", "gitsync-leader"),
        leader_election_identity=r.text("--leader-election-identity") or None,
        cache_hit_reasons=r.listed("--cache-hit-reasons"),
        cache_partial_reasons=r.listed("--cache-partial-reasons"),
        cache_miss_reasons=r.listed("--cache-miss-reasons"),
        image_pull_reasons=r.listed("--image-pull-reasons"),
    )


def _tencent(r: SettingsResolver) -> TencentSettings:
    return TencentSettings(
        region=r.text("--region") or r.env.get("TENCENTCLOUD_REGION", ""),
        vpc_id=r.text("--vpc-id") or None,
        subnet_id=r.text("--subnet-id") or None,
        security_group_ids=r.listed("--security-group-id"),
        registry_http_endpoints=r.listed("--registry-http-endpoint"),
        registry_skip_verify=r.listed("--registry-skip-verify"),
        endpoint=r.text("--tencentcloud-endpoint") or None,
        scheme=r.text("--tencentcloud-scheme", "https"),
        cbs_endpoint=r.text("--tencentcloud-cbs-endpoint") or None,
        credentials_file=r.text("--tencentcloud-credentials-file"),
        profile=r.text("--tencentcloud-profile", "default"),
    )


def _snapshot_check_interval(r: SettingsResolver) -> timedelta:
    return r.duration(
        "--snapshot-check-interval", "1h", allow_zero=True, minimum=timedelta(seconds=1)
    )

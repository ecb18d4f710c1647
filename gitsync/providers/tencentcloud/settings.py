"""Where the Tencent Cloud APIs are, how to call them, and with whose credentials.

Everything here is read once at start-up and checked then, so a wrong region,
endpoint or credentials file is a `ConfigError` naming the flag or the file
before any call is made. No SDK is involved: the transport turns these into the
SDK's credential and profile objects.

Credentials come from, in this order (`resolve_credentials`):
`--tencentcloud-credentials-file` (with `--tencentcloud-profile`), then
TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY (and
TENCENTCLOUD_SESSION_TOKEN), then, when the caller allows it,
`~/.tencentcloud/credentials`, the file the SDK and tccli use. The values
never appear in a repr or a message.
"""

from __future__ import annotations

import configparser
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gitsync.errors import ConfigError

__all__ = [
    "CHINA_STANDARD_TIME_HOURS",
    "DEFAULT_CBS_ENDPOINT",
    "DEFAULT_ENDPOINT",
    "SERVICE",
    "TencentCloudCredentials",
    "TencentCloudSettings",
    "load_credentials_file",
    "resolve_credentials",
]

SERVICE = "tke"
DEFAULT_ENDPOINT = "tke.tencentcloudapi.com"
DEFAULT_CBS_ENDPOINT = "cbs.tencentcloudapi.com"  # the snapshot checks' DescribeSnapshots
CHINA_STANDARD_TIME_HOURS = 8.0
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
_ENDPOINT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class TencentCloudCredentials:
    """A CAM secret id and key (and a session token for temporary credentials).

    The values never appear in a repr or a message; `source` says where they
    came from ("environment", "credentials file …") so errors can point there.
    """

    secret_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "explicit credentials"

    def __post_init__(self) -> None:
        for label, value in (("secret id", self.secret_id), ("secret key", self.secret_key)):
            if not value or not value.strip():
                raise ConfigError(
                    f"Tencent Cloud {label} from {self.source} is empty; set"
                    " TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY or use a credentials file"
                )
            if value.strip() != value or any(c.isspace() for c in value):
                raise ConfigError(
                    f"Tencent Cloud {label} from {self.source} contains whitespace;"
                    " copy it again without spaces or line breaks"
                )

    def secrets(self) -> tuple[str, ...]:
        """The values to scrub from any text that leaves the provider."""
        return tuple(v for v in (self.secret_id, self.secret_key, self.token) if v)


def load_credentials_file(path: Path, *, profile: str = "default") -> TencentCloudCredentials:
    """Read the SDK's INI credentials file (`~/.tencentcloud/credentials`).

    Format, as the SDK's `ProfileCredential` reads it::

        [default]
        secret_id = AKID...
        secret_key = ...
        token = ...        # optional, for temporary credentials
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with Path(path).open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"Tencent Cloud credentials file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Tencent Cloud credentials file {path}: {exc}") from exc
    except configparser.Error:
        # configparser quotes the offending line, which may hold the key: say where only.
        raise ConfigError(
            f"Tencent Cloud credentials file {path} is not an INI file with a [{profile}]"
            " section holding secret_id and secret_key"
        ) from None
    if not parser.has_section(profile):
        sections = ", ".join(parser.sections()) or "none"
        raise ConfigError(
            f"Tencent Cloud credentials file {path} has no [{profile}] section"
            f" (sections: {sections})"
        )
    section = parser[profile]
    secret_id = section.get("secret_id", "").strip().strip('"')
    secret_key = section.get("secret_key", "").strip().strip('"')
    token = section.get("token", "").strip().strip('"') or None
    if not secret_id or not secret_key:
        raise ConfigError(
            f"Tencent Cloud credentials file {path}: [{profile}] needs secret_id and secret_key"
        )
    return TencentCloudCredentials(
        secret_id=secret_id,
        secret_key=secret_key,
        token=token,
        source=f"credentials file {path} [{profile}]",
    )


@dataclass(frozen=True, slots=True)
class TencentCloudSettings:
    """Where and how to reach the TKE API, and what every new cache gets.

    `vpc_id` and `subnet_id` are required to create caches (the API builds
    them on a container instance in that subnet); reading (`plan`, `status`,
    `match`) works without them. `endpoint` is HOST[:PORT] without a scheme,
    for a private endpoint or a test server; `scheme` is `https` unless told.
    `cbs_endpoint` is where the snapshot checks call CBS (see `cbs_host`).
    Retry figures apply inside one call; the reconciler backs off across passes.
    """

    region: str
    vpc_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    registry_http_endpoints: tuple[str, ...] = ()
    registry_skip_verify: tuple[str, ...] = ()
    endpoint: str | None = None
    scheme: str = "https"
    cbs_endpoint: str | None = None
    request_timeout_seconds: float = 30.0
    secrets_dir: Path | None = None
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 10.0
    throttle_retry_after_seconds: float = 1.0
    delete_batch_window_seconds: float = 0.05
    naive_time_offset_hours: float = CHINA_STANDARD_TIME_HOURS

    def __post_init__(self) -> None:
        if not _REGION.fullmatch(self.region or ""):
            raise ConfigError(
                f"--region: {self.region!r} is not a Tencent Cloud region; use e.g. ap-guangzhou"
            )
        if self.scheme not in ("http", "https"):
            raise ConfigError(f"--tencentcloud-scheme: {self.scheme!r} must be http or https")
        for flag, endpoint, example in (
            ("--tencentcloud-endpoint", self.endpoint, "tke.internal.tencentcloudapi.com"),
            ("--tencentcloud-cbs-endpoint", self.cbs_endpoint, "cbs.internal.tencentcloudapi.com"),
        ):
            if endpoint is not None and not _ENDPOINT.fullmatch(endpoint):
                raise ConfigError(
                    f"{flag}: {endpoint!r} must be HOST[:PORT] without a scheme or path,"
                    f" e.g. {example} or 127.0.0.1:8080"
                )
        positive = {
            "request timeout": self.request_timeout_seconds,
            "retry base": self.retry_base_seconds,
            "retry maximum": self.retry_max_seconds,
        }
        for label, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"Tencent Cloud {label}: {value} must be a positive number")
        if self.max_attempts < 1:
            raise ConfigError(f"Tencent Cloud max attempts: {self.max_attempts} must be at least 1")
        if self.throttle_retry_after_seconds < 0 or self.delete_batch_window_seconds < 0:
            raise ConfigError(
                "Tencent Cloud retry-after and delete batch window must not be negative"
            )
        for flag, text in (("--vpc-id", self.vpc_id), ("--subnet-id", self.subnet_id)):
            if text is not None and not text.strip():
                raise ConfigError(f"{flag}: must not be empty; omit it to only read caches")

    @property
    def host(self) -> str:
        return self.endpoint or DEFAULT_ENDPOINT

    @property
    def cbs_host(self) -> str:
        """Where DescribeSnapshots goes: `cbs_endpoint`; else `cbs.X` beside a `tke.X` endpoint
        (`tke.internal.tencentcloudapi.com` → `cbs.internal.tencentcloudapi.com`); else the
        same custom endpoint (a gateway or test server that serves both APIs); else
        cbs.tencentcloudapi.com."""
        if self.cbs_endpoint:
            return self.cbs_endpoint
        if self.endpoint is None:
            return DEFAULT_CBS_ENDPOINT
        if self.endpoint.startswith(f"{SERVICE}."):
            return "cbs." + self.endpoint.removeprefix(f"{SERVICE}.")
        return self.endpoint


def resolve_credentials(
    *,
    credentials_file: Path | None,
    profile: str,
    env: Mapping[str, str],
    default_file: bool,
) -> TencentCloudCredentials | None:
    """The credentials gitsync was given, or None when none are.

    `credentials_file` (--tencentcloud-credentials-file) wins; then the
    environment's TENCENTCLOUD_SECRET_ID / _KEY (one of them set is enough to
    choose this source, so a missing half is reported, not skipped); then, only
    when `default_file`, `$HOME/.tencentcloud/credentials` if it exists. The
    kubernetes backend passes `default_file=False`: a cluster user may hold that
    file for other reasons, and it must not turn the snapshot checks on.
    """
    if credentials_file is not None:
        return load_credentials_file(credentials_file, profile=profile)
    secret_id, secret_key = env.get("TENCENTCLOUD_SECRET_ID"), env.get("TENCENTCLOUD_SECRET_KEY")
    if secret_id or secret_key:
        return TencentCloudCredentials(
            secret_id=secret_id or "",
            secret_key=secret_key or "",
            token=env.get("TENCENTCLOUD_SESSION_TOKEN") or None,
            source="environment (TENCENTCLOUD_SECRET_ID/KEY)",
        )
    home_file = Path(env.get("HOME", "~")).expanduser() / ".tencentcloud" / "credentials"
    if default_file and home_file.is_file():
        return load_credentials_file(home_file, profile=profile)
    return None

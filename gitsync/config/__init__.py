"""Controller settings: flags, `GITSYNC_*` environment variables and an optional config file.

Precedence is the one operators know from Flux and kubectl: a flag beats its
environment variable, which beats the config file, which beats the default.
Only this module reads flags and the environment (`cli` hands it both, plus
the Tencent credential chain, which reads TENCENTCLOUD_SECRET_ID/KEY);
everything below receives frozen settings or plain keyword arguments, so tests
never patch `os.environ`.

`Settings` holds what every command shares (provider, data dir, policy, the
local backend's registry settings). The parts only some commands need
(`KubernetesSettings`, `TencentSettings`, `GitSettings`, ...) are resolved by
`CommandSettings`, which reads the config file once per command and resolves
each part on first use: a command never fails over a setting it does not
read, and a part's errors come where the command first needs it.

The config file is YAML whose keys are the long flag names without dashes in
front (`max-delete-ratio: 0.3`), plus a `pricing:` table (see `pricing.PriceTable`).
"""

from gitsync.config.resolver import SettingsResolver
from gitsync.config.settings import (
    ApplySettings,
    CommandSettings,
    DaemonSettings,
    GitSettings,
    KubernetesSettings,
    LoggingSettings,
    PlanSettings,
    Settings,
    SourceSettings,
    TencentSettings,
    resolve_settings,
)
from gitsync.config.values import (
    ENV_PREFIX,
    MAX_DURATION,
    PROVIDERS,
    default_data_dir,
    env_name,
    format_duration,
    listen_address,
    optional_path,
    parse_bool,
    parse_duration,
    read_secret,
    split_list,
)

__all__ = [
    "ENV_PREFIX",
    "MAX_DURATION",
    "PROVIDERS",
    "ApplySettings",
    "CommandSettings",
    "DaemonSettings",
    "GitSettings",
    "KubernetesSettings",
    "LoggingSettings",
    "PlanSettings",
    "Settings",
    "SettingsResolver",
    "SourceSettings",
    "TencentSettings",
    "default_data_dir",
    "env_name",
    "format_duration",
    "listen_address",
    "optional_path",
    "parse_bool",
    "parse_duration",
    "read_secret",
    "resolve_settings",
    "split_list",
]

"""What every command shares: exit codes, its settings, its provider, its checkout."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitsync.config import CommandSettings, TencentSettings, env_name
from gitsync.errors import ConfigError

if TYPE_CHECKING:
    from gitsync.providers.base import Provider
    from gitsync.specs import LoadResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHANGES = 2
EXIT_NO_MATCH = 3
EXIT_SIGNAL_BASE = 128  # killed by signal N: 128 + N, as shells report it

# Backends whose create and update return once the cache is built; the others
# (an operator, the cloud) accept the change and build it afterwards.
SYNCHRONOUS_PROVIDERS = frozenset({"local"})


def _config_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    text = getattr(args, "config", None) or env.get(env_name("--config"), "")
    return Path(text) if text else None


def command_settings(args: argparse.Namespace, env: Mapping[str, str]) -> CommandSettings:
    """This command's settings: flag, GITSYNC_<FLAG>, --config (read once), then default."""
    return CommandSettings(flags=vars(args), env=env, config_path=_config_path(args, env))


class TencentCredentials:
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
    """The provider package's credential chain, fed from the settings; None when none is given."""
    return tc.resolve_credentials(
        credentials_file=Path(tencent.credentials_file) if tencent.credentials_file else None,
        profile=tencent.profile,
        env=env,
        default_file=default_file,
    )


def open_provider(
    settings: CommandSettings,
    env: Mapping[str, str],
    *,
    writable: bool,
    on_progress: Callable[[Any], None] | None = None,
) -> Provider:
    from gitsync import wiring  # not at the top: `validate` needs none of it

    return wiring.open_provider(
        settings,
        credentials=TencentCredentials(settings, env),
        writable=writable,
        on_progress=on_progress,
    )


def progress_printer() -> Callable[[Any], None] | None:
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


def error_text(loaded: LoadResult) -> str:
    """The errors of a loaded repository, as `validate` prints them, for a refusal message."""
    from gitsync import reports

    return reports.format_diagnostics(
        [d for d in loaded.diagnostics if d.severity.value == "error"],
        output_format="text",
        files=loaded.files,
        documents=loaded.documents,
        caches=len(loaded.caches),
    )


@contextmanager
def checkout(settings: CommandSettings) -> Iterator[tuple[Path, str | None]]:
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

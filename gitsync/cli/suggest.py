"""`gitsync suggest`: the cache changes the recorded lookups call for, shown, written or pushed.

The command only composes: the observation store gives the evidence, the
engine (`gitsync.suggest.engine`, pure) decides, the reports render, the
edits (`gitsync.suggest.edits`) change the YAML text surgically, and
`gitsync.sources.gitwrite` commits and pushes. What it guarantees on the way:

* an invalid repository is reported like `plan` reports it (exit 1) and
  nothing is written;
* the edited tree is validated with gitsync's own loader before a byte is
  written, and each file is replaced atomically (write beside, then rename),
  so a file is either as it was or as proposed, never half-written;
* an unreachable registry leaves a new cache without a size, said so in the
  suggestion, instead of failing the command.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync.cli.base import (
    EXIT_FAILED,
    EXIT_OK,
    TencentCredentials,
    command_settings,
    error_text,
)
from gitsync.errors import ConfigError, SpecError

if TYPE_CHECKING:
    from gitsync.config import CommandSettings
    from gitsync.model import CacheSpec
    from gitsync.sources.git import GitCredentials
    from gitsync.sources.gitwrite import TrackedTip
    from gitsync.suggest.model import Suggestion


@dataclass(frozen=True, slots=True)
class _Tree:
    """The repository as the suggestions read it."""

    root: Path  # the repository's top folder (paths of edits are relative to it)
    specs: Path  # root / --path
    revision: str | None
    base: TrackedTip | None  # what --push builds on (the tracked tip, fetched), else None


def cmd_suggest(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import specs
    from gitsync.suggest import reports

    settings = command_settings(args, env)
    wanted = settings.suggest  # flags checked before anything is read
    source = settings.source(default_repo=".")
    local = Path(source.repo).is_dir()
    if wanted.write and not local:
        raise ConfigError(
            f"--write edits a working tree, and --repo {source.repo} is not a folder;"
            " use --push --branch NAME to propose the change on the remote"
        )
    now = time.time()
    with _checkout(settings, local=local) as tree:
        loaded = specs.load_repository([tree.specs], root=tree.root)
        if not loaded.ok:
            text = error_text(loaded)
            print(
                f"gitsync suggest: revision {tree.revision or '(working tree)'} is invalid;"
                f" nothing suggested or written:\n{text}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        found = _suggestions(settings, env, desired=loaded.desired(tree.revision).caches, now=now)
        window = wanted.since.total_seconds()
        changes = _changes(tree, found) if _edits_needed(wanted) and found else {}
        if changes:
            _check_edited(tree, changes)
        if wanted.format == "diff":
            sys.stdout.write(_unified_diff(tree.root, changes))
        else:
            print(
                reports.format_suggestions(
                    found,
                    output_format=wanted.format,
                    window_seconds=window,
                    since=now - window,
                    until=now,
                    currency=settings.common.prices.currency,
                )
            )
        if wanted.write and changes:
            _write(Path(source.repo), changes)
            print(f"wrote {len(changes)} file(s) in {source.repo}", file=sys.stderr)
        if wanted.push:
            _push(settings, changes=changes, suggestions=found)
    return EXIT_OK


# --------------------------------------------------------------------- reading


@contextmanager
def _checkout(settings: CommandSettings, *, local: bool) -> Iterator[_Tree]:
    """The working tree (a folder, no --push), else the tracked branch's tip."""
    from gitsync.sources import git

    source = settings.source(default_repo=".")
    wanted = settings.suggest
    if local and not wanted.push:
        root = Path(source.repo)
        yield _Tree(
            root=root,
            specs=_subfolder(root, source.path),
            revision=git.head_revision(root) if (root / ".git").exists() else None,
            base=None,
        )
        return
    with tempfile.TemporaryDirectory(prefix="gitsync-suggest-") as scratch:
        base = _fetch_base(settings) if wanted.push else None
        revision = base.commit if base is not None else wanted.tracked_branch
        where = str(base.git_dir) if base is not None else source.repo
        checkout = git.export_revision(repo=where, revision=revision, dest=Path(scratch) / "tree")
        yield _Tree(
            root=checkout.path,
            specs=_subfolder(checkout.path, source.path),
            revision=checkout.revision,
            base=base,
        )


def _subfolder(root: Path, path: str) -> Path:
    target = root / path if path else root
    if not target.is_dir():
        raise ConfigError(f"--path: {path!r} is not a folder of the repository")
    return target


def _suggestions(
    settings: CommandSettings, env: Mapping[str, str], *, desired: Sequence[CacheSpec], now: float
) -> tuple[Suggestion, ...]:
    from gitsync import wiring  # here: `validate` must not load the wiring (test_validate)
    from gitsync.observations.store import ObservationStore
    from gitsync.suggest import engine
    from gitsync.suggest.model import SuggestionKind, SuggestOptions

    wanted, common = settings.suggest, settings.common
    window = wanted.since.total_seconds()
    with ObservationStore.open_readonly(common.data_dir / wiring.OBSERVATIONS_FILE) as store:
        evidence = store.evidence(since=now - window, until=now)
    observed = wiring.observe(settings, credentials=TencentCredentials(settings, env)).caches
    options = SuggestOptions(now=now, window_seconds=window, min_misses=wanted.min_misses)
    bumps = _policy_bumps(settings, desired)
    found = engine.suggest(
        evidence=evidence,
        desired=desired,
        observed=observed,
        prices=common.prices,
        options=options,
        policy_bumps=bumps,
    )
    sized = (SuggestionKind.NEW_CACHE, SuggestionKind.ADD_IMAGE)
    images = sorted({i for s in found if s.kind in sized for i in s.images})
    if not images or not settings.size_check:
        return found
    return engine.suggest(
        evidence=evidence,
        desired=desired,
        observed=observed,
        prices=common.prices,
        options=options,
        sizes=wiring.image_sizes(settings, images),
        policy_bumps=bumps,
    )


def _policy_bumps(
    settings: CommandSettings, desired: Sequence[CacheSpec]
) -> tuple[Suggestion, ...]:
    """Bump-tag suggestions of the `# gitsync:` policies, from the registries' tag lists."""
    with_policies = [spec for spec in desired if spec.image_policies]
    if not with_policies:
        return ()
    from gitsync.providers.local.tags import PolicyResolver

    common = settings.common
    with PolicyResolver(
        docker_config=common.docker_config,
        secrets_dir=common.secrets_dir,
        insecure_registries=(
            *common.insecure_registries,
            *settings.tencent.registry_http_endpoints,
        ),
        prices=common.prices,
    ) as resolver:
        return resolver.suggestions(with_policies)


# --------------------------------------------------------------------- editing


def _edits_needed(wanted: object) -> bool:
    return bool(
        getattr(wanted, "write", False)
        or getattr(wanted, "push", False)
        or getattr(wanted, "format", "") == "diff"
    )


def _changes(tree: _Tree, found: Sequence[Suggestion]) -> dict[str, str | None]:
    """New text by repository-relative path (None: delete the file); skipped edits said why."""
    from gitsync.suggest import edits

    cache_files = {s.location.path for s in found if s.location is not None} | {
        s.file for s in found if s.file
    }
    existing = sorted(
        p.relative_to(tree.root).as_posix()
        for p in tree.root.rglob("*")
        if ".git" not in p.relative_to(tree.root).parts
    )
    files = {
        p: (tree.root / p).read_text(encoding="utf-8")
        for p in sorted(cache_files)
        if (tree.root / p).is_file()
    }
    style = {
        p: (tree.root / p).read_text(encoding="utf-8")
        for p in existing
        if p.endswith((".yaml", ".yml")) and (tree.root / p).is_file()
    }
    result = edits.apply_suggestions(files, found, style_from=style, existing_paths=existing)
    for outcome in result.outcomes:
        if not outcome.applied:
            print(f"not written: {outcome.detail}", file=sys.stderr)
    return dict(result.changes)


def _check_edited(tree: _Tree, changes: Mapping[str, str | None]) -> None:
    """Validate the edited tree in a scratch copy; refuse (exit 1, nothing written) if invalid."""
    from gitsync.suggest.validation import validate_edited

    loaded = validate_edited(
        root=tree.root,
        changes=changes,
        paths=(tree.specs.relative_to(tree.root).as_posix() or ".",),
    )
    if loaded.ok:
        return
    text = error_text(loaded)
    # A bug worth reporting (edits are checked one by one): exit 1, nothing written.
    raise SpecError(f"the edited repository would not validate, so nothing was written:\n{text}")


def _unified_diff(root: Path, changes: Mapping[str, str | None]) -> str:
    out: list[str] = []
    for path in sorted(changes):
        before_path = root / path
        before = before_path.read_text(encoding="utf-8") if before_path.is_file() else ""
        after = changes[path] or ""
        out.extend(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"a/{path}" if before_path.is_file() else "/dev/null",
                tofile=f"b/{path}" if changes[path] is not None else "/dev/null",
            )
        )
    return "".join(out)


def _write(root: Path, changes: Mapping[str, str | None]) -> None:
    """Each file replaced atomically: written beside it, flushed, renamed over it."""
    for path, text in sorted(changes.items()):
        target = root / path
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if target.exists():
                shutil.copymode(target, temp)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


# --------------------------------------------------------------------- pushing


SUGGEST_GIT_DIR = "suggest-git"  # under --data-dir: the clone cache of a --repo URL


def _credentials(settings: CommandSettings) -> GitCredentials:
    from gitsync.sources.git import GitCredentials

    git = settings.git
    return GitCredentials(
        https_token=git.https_token,
        ssh_key_path=git.ssh_key_path,
        known_hosts_path=git.known_hosts_path,
    )


def _fetch_base(settings: CommandSettings) -> TrackedTip:
    from gitsync.sources import gitwrite

    source = settings.source(default_repo=".")
    return gitwrite.fetch_tracked(
        repo=source.repo,
        tracked_branch=settings.suggest.tracked_branch,
        work_dir=settings.common.data_dir / SUGGEST_GIT_DIR,
        credentials=_credentials(settings),
    )


def _push(
    settings: CommandSettings,
    *,
    changes: Mapping[str, str | None],
    suggestions: Sequence[Suggestion],
) -> None:
    from gitsync.sources import gitwrite

    source, wanted = settings.source(default_repo="."), settings.suggest
    done = gitwrite.publish(
        repo=source.repo,
        tracked_branch=wanted.tracked_branch,
        branch=wanted.push_branch,
        changes=changes,
        message=_commit_message(suggestions),
        work_dir=settings.common.data_dir / SUGGEST_GIT_DIR,
        credentials=_credentials(settings),
    )
    if done.empty:
        print(
            f"nothing to push: {done.branch} would equal {wanted.tracked_branch}", file=sys.stderr
        )
    elif done.unchanged:
        print(f"{done.remote} {done.branch} already holds these suggestions", file=sys.stderr)
    else:
        print(
            f"pushed {done.branch} ({done.commit[:12]}) to {done.remote}, one commit on"
            f" {wanted.tracked_branch}; kept in {done.local_ref}",
            file=sys.stderr,
        )


def _commit_message(suggestions: Sequence[Suggestion]) -> str:
    from gitsync.suggest.engine import seconds_text

    lines = [f"gitsync suggest: {len(suggestions)} cache change(s) from observed pulls", ""]
    for s in suggestions:
        change = ", ".join(s.images) if s.images else ""
        if s.from_images:
            change = ", ".join(
                f"{a} -> {b}" for a, b in zip(s.from_images, s.to_images, strict=False)
            )
        elif s.to_size_gib is not None and s.from_size_gib is not None:
            change = f"imageCacheSize {s.from_size_gib} -> {s.to_size_gib} GiB"
        lines.append(
            f"- {s.kind.value} {s.cache}: {change} (saves {seconds_text(s.saved_seconds_per_day)}"
            f" a day, {s.monthly_cost:+.2f} a month)"
        )
        lines.append(f"  {s.reason}")
    return "\n".join(lines) + "\n"

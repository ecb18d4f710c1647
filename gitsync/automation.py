"""The automation branch: the image-policy bumps as one commit on the tracked branch, pushed.

`gitsync run --automation-branch NAME` keeps branch NAME equal to "the tracked
branch, plus the bumps the image policies call for now" (and, with
`--automation-suggestions`, plus the suggestions of `gitsync suggest`), so a
reviewer merges one commit and the caches follow. Flux's image automation does
this for workloads; here it is for image caches.

Each round, on a thread of its own:

1. take the pending bumps (and suggestions) from injected callables: the
   policy engine and the suggestion loop own those decisions;
2. fetch the tracked branch's tip (`gitsync.sources.gitwrite.fetch_tracked`);
   when neither the tip nor the inputs moved since the last good round, stop
   there: nothing can have changed, so nothing is written;
3. export that commit, apply the suggestions to the files they name with
   `gitsync.suggest.edits` (surgical: comments and `# gitsync:` markers stay),
   and load the edited tree with gitsync's own loader, so an invalid tree is
   never pushed;
4. `publish` with `delete_when_empty`: one commit on the tip, force-pushed with
   a lease (rewritten when the tip or the bumps move), nothing pushed when the
   remote already holds that tree on that tip, and the branch deleted when
   nothing is pending. With `allow_push_to_tracked` and the tracked branch as
   NAME, the push is a plain fast-forward of the tracked branch.

Why a thread of its own: a push can take the git deadline (two minutes) and a
remote can be down for hours; the reconcile loop must not wait on either.
A failed round (the fetch, the edit check, a rejected or unreachable push) is
logged with git's reason, counted, and retried with backoff
(`gitsync.backoff`), whatever `poke()` asks meanwhile; a success returns to
the interval. Nothing secret reaches the commit, the logs, the status or the
metrics: the git errors are scrubbed where they are raised, and what this
module writes goes through the same scrubber with the token and the URL's
userinfo.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from gitsync import imageref, reports
from gitsync.backoff import backoff_delay
from gitsync.errors import ConfigError, GitSyncError, ImageRefError, SpecError
from gitsync.metrics.automation import AutomationMetrics
from gitsync.sources import gitwrite
from gitsync.sources.base import check_subpath, subtree
from gitsync.sources.credentials import GitCredentials, Scrubber, redact_url, split_userinfo
from gitsync.sources.git import GIT_TIMEOUT_SECONDS, export_revision
from gitsync.sources.gitwrite import PublishResult, TrackedTip
from gitsync.specs import YAML_SUFFIXES
from gitsync.suggest.edits import EditOutcome, EditResult, apply_suggestions
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.validation import validate_edited
from gitsync.wakeable import WakeableThread

__all__ = [
    "AUTOMATION_GIT_DIR",
    "AutomationBranch",
    "AutomationStatus",
    "Pending",
    "RoundResult",
    "commit_message",
]

log = logging.getLogger("gitsync.automation")

AUTOMATION_GIT_DIR = "automation-git"  # under --data-dir: the clone cache of a --repo URL
RETRY_BASE_SECONDS = 10.0  # the first retry after a failed round
RETRY_CAP_SECONDS = 900.0  # backoff doubles up to this

# What the callables give: the pending changes, or None while they are not known yet (before
# the first listing of the registries), so that a daemon starting never deletes the branch.
Pending = Callable[[], Sequence[Suggestion] | None]
# (tracked tip, or "" when nothing is pending; what of the inputs changes the commit)
_Key = tuple[str, Hashable] | None


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round did."""

    result: str  # pushed, deleted, unchanged or failed (gitsync.metrics.automation)
    detail: str  # one line for the log and the status: what was done, or why it failed
    commit: str | None = None  # the branch's commit after the round; None when there is none
    tracked_commit: str | None = None  # the tracked tip the round built on, when fetched
    applied: tuple[str, ...] = ()  # each edit on the branch, "file:line: old → new"
    skipped: tuple[str, ...] = ()  # each suggestion left out, and why


@dataclass(frozen=True, slots=True)
class AutomationStatus:
    """The automation branch as the daemon last saw it, for the status endpoint."""

    branch: str
    tracked_branch: str
    pending_bumps: int
    failures: int  # failed rounds in a row; 0 after a good one
    last: RoundResult | None  # None before the first round
    next_round_seconds: float  # until the next round is due (0: due now)


class AutomationBranch(WakeableThread):
    """Keeps branch `branch` of `repo` equal to `tracked_branch` plus the pending bumps.

    `bumps` gives the image-policy bump-tag suggestions pending now, and
    `suggestions` (optional) the suggestions of `gitsync suggest`; either gives
    None while it is not known yet, and the round then writes nothing. Their files
    are relative to `path`, the folder of the repository the specs are read
    from (gitsync run's --path), as the daemon's specs name them. `clock` is
    monotonic seconds, for the schedule only. `run_round()` does one round on
    the caller's thread; `start()` runs them every `interval_seconds` (sooner
    on `poke()`, later after a failure) until `stop()`.
    """

    def __init__(
        self,
        *,
        repo: str,
        tracked_branch: str,
        branch: str,
        work_dir: Path,
        bumps: Pending,
        interval_seconds: float,
        suggestions: Pending | None = None,
        path: str = "",
        credentials: GitCredentials | None = None,
        allow_push_to_tracked: bool = False,
        metrics: AutomationMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        retry_cap_seconds: float = RETRY_CAP_SECONDS,
        rng: random.Random | None = None,
        git_timeout_seconds: float = GIT_TIMEOUT_SECONDS,
    ) -> None:
        branch = branch.removeprefix("refs/heads/")
        if branch == tracked_branch and not allow_push_to_tracked:
            raise ConfigError(
                f"automation branch {branch!r} is the tracked branch; pushing image bumps"
                " straight to it needs --allow-push-to-tracked"
            )
        for value, what in (
            (interval_seconds, "interval"),
            (retry_base_seconds, "retry base"),
            (retry_cap_seconds, "retry cap"),
            (git_timeout_seconds, "git timeout"),
        ):
            if not value > 0:
                raise ConfigError(f"automation branch {what} must be positive seconds: {value}")
        self._repo = repo
        self._tracked = tracked_branch
        self._branch = branch
        self._work_dir = work_dir
        self._bumps = bumps
        self._suggestions = suggestions
        self._path = check_subpath(path or None) or ""
        self._credentials = credentials
        self._allow_tracked = allow_push_to_tracked
        self._metrics = metrics
        self._timeout = git_timeout_seconds
        secrets = [split_userinfo(repo)[2]]
        if credentials is not None:
            secrets.append(credentials.https_token)
        self._scrub = Scrubber(secrets)
        self._shown_repo = redact_url(repo)
        self._round_lock = threading.Lock()  # one round at a time: publish's work dir is ours
        self._lock = threading.Lock()  # the schedule and the status
        self._schedule = _Schedule(
            interval=interval_seconds,
            base=retry_base_seconds,
            cap=retry_cap_seconds,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311  # jitter, nothing cryptographic
        )
        self._done: _Key = None  # (tip, inputs) of the last good round
        self._pending = 0
        self._last: RoundResult | None = None
        super().__init__(name="gitsync-automation")

    # ------------------------------------------------------------------ the thread

    def poke(self) -> None:
        """Run a round soon (after a pass, or when the bumps changed); a backoff still holds."""
        with self._lock:
            self._schedule.poked = True
        super().poke()

    def due_in(self) -> float:
        """Seconds until the next round is due; 0 when it is due now."""
        with self._lock:
            return self._schedule.due_in()

    def status(self) -> AutomationStatus:
        due = self.due_in()
        with self._lock:
            return AutomationStatus(
                branch=self._branch,
                tracked_branch=self._tracked,
                pending_bumps=self._pending,
                failures=self._schedule.failures,
                last=self._last,
                next_round_seconds=due,
            )

    def _run(self) -> None:
        while self.sleep(self.due_in()):
            if self.due_in() == 0.0:
                self.run_round()

    # ------------------------------------------------------------------ one round

    def run_round(self) -> RoundResult:
        """One round on the caller's thread; what goes wrong is logged and returned, not raised."""
        with self._round_lock:
            with self._lock:
                self._schedule.poked = False
            key: _Key = None
            try:
                done, key = self._round()
            except (GitSyncError, OSError) as exc:
                done = RoundResult(result="failed", detail=self._scrub(str(exc)))
            except Exception as exc:  # a bug here must not stop the thread, nor the daemon
                log.exception("automation branch %s: the round failed", self._branch)
                done = RoundResult(result="failed", detail=f"{type(exc).__name__} (a bug)")
            return self._finish(done, key)

    def _round(self) -> tuple[RoundResult, _Key]:
        """The round's result, and the key an identical next round is recognised by."""
        bumps = self._bumps()
        extra = self._suggestions() if self._suggestions is not None else ()
        if bumps is None or extra is None:
            waiting = RoundResult(
                result="unchanged", detail="the pending changes are not known yet"
            )
            return waiting, None
        with self._lock:
            self._pending = len(bumps)
        if self._metrics is not None:
            self._metrics.set_pending(len(bumps))
        wanted = (*bumps, *_without(extra, bumps))
        inputs = tuple(_edit_key(s) for s in wanted)
        if not wanted:
            if self._done == ("", inputs) or self._branch == self._tracked:  # nothing to delete
                return RoundResult(result="unchanged", detail="nothing pending"), ("", inputs)
            published = self._publish({}, "gitsync: no image bumps pending\n")
            return _outcome(published, nothing="nothing pending"), ("", inputs)
        tip = gitwrite.fetch_tracked(
            repo=self._repo,
            tracked_branch=self._tracked,
            work_dir=self._work_dir,
            credentials=self._credentials,
            timeout_seconds=self._timeout,
        )
        key = (tip.commit, inputs)
        if self._done == key and self._last is not None:
            return replace(self._last, result="unchanged", detail="nothing moved"), key
        changes, outcomes = self._edited(tip, wanted)
        applied = tuple(o for o in outcomes if o.applied)
        published = self._publish(changes, commit_message(applied, tracked=self._tracked))
        skipped = tuple(self._scrub(o.detail) for o in outcomes if not o.applied)
        nothing = f"{len(skipped)} left out, the first: {skipped[0]}" if skipped else ""
        nothing = f"nothing to change on {self._tracked}" + (f" ({nothing})" if nothing else "")
        done = _outcome(published, nothing=nothing)
        applied_details = tuple(self._scrub(o.detail) for o in applied)
        return replace(done, applied=applied_details, skipped=skipped), key

    def _edited(
        self, tip: TrackedTip, wanted: Sequence[Suggestion]
    ) -> tuple[dict[str, str | None], tuple[EditOutcome, ...]]:
        """The suggestions applied to the tip's files, checked by loading the edited tree."""
        with tempfile.TemporaryDirectory(prefix="gitsync-automation-") as scratch:
            checkout = export_revision(
                repo=str(tip.git_dir), revision=tip.commit, dest=Path(scratch) / "tree"
            )
            root = subtree(
                checkout.path, self._path or None, revision=tip.commit, url=self._shown_repo
            )
            result = _apply(root, wanted)
            for outcome in result.skipped:
                log.warning(
                    "automation branch %s: left out: %s", self._branch, self._scrub(outcome.detail)
                )
            if result.changes:
                _check_valid(root, result.changes)
        prefix = f"{self._path}/" if self._path else ""
        return {prefix + p: text for p, text in result.changes.items()}, result.outcomes

    def _publish(self, changes: dict[str, str | None], message: str) -> PublishResult:
        return gitwrite.publish(
            repo=self._repo,
            tracked_branch=self._tracked,
            branch=self._branch,
            changes=changes,
            message=message,
            work_dir=self._work_dir,
            credentials=self._credentials,
            allow_tracked=self._allow_tracked,
            delete_when_empty=True,
            timeout_seconds=self._timeout,
        )

    def _finish(self, done: RoundResult, key: _Key) -> RoundResult:
        """Count the round, log it, and schedule the next: the interval, or a backoff."""
        failed = done.result == "failed"
        with self._lock:
            delay = self._schedule.finished(failed=failed)
            self._done = None if failed else key  # after a failure, retry in full
            failures = self._schedule.failures
            self._last = done
        if self._metrics is not None:
            self._metrics.record(done.result)
        if failed:
            log.warning(
                "automation branch %s of %s: round failed (%d in a row), retrying in %.1f s: %s",
                self._branch,
                self._shown_repo,
                failures,
                delay,
                done.detail,
            )
        elif done.result != "unchanged":
            log.info("automation branch %s: %s", self._branch, done.detail)
        return done


class _Schedule:
    """When the next round is due: the interval after a good round, a backoff after a failed
    one; a poke makes it due now, unless a backoff holds. The caller holds the lock."""

    def __init__(
        self,
        *,
        interval: float,
        base: float,
        cap: float,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._interval, self._base, self._cap = interval, base, cap
        self._clock, self._rng = clock, rng
        self._next_at = clock()  # the first round is due at once
        self.failures = 0  # failed rounds in a row
        self.poked = False

    def due_in(self) -> float:
        if self.poked and self.failures == 0:
            return 0.0
        return max(0.0, self._next_at - self._clock())

    def finished(self, *, failed: bool) -> float:
        """Schedule the next round after this one; the delay until it."""
        if failed:
            self.failures += 1
            delay = backoff_delay(self.failures, base=self._base, cap=self._cap, rng=self._rng)
        else:
            self.failures = 0
            delay = self._interval
        self._next_at = self._clock() + delay
        return delay


def _outcome(published: PublishResult, *, nothing: str) -> RoundResult:
    """What a publish did, as a round's result (its remote is already safe to show)."""
    where = f"{published.branch} on {published.remote}"
    if published.deleted:
        result, detail, commit = "deleted", f"{nothing}: deleted {where}", None
    elif published.empty:
        result, detail, commit = "unchanged", f"{nothing}: {where} not written", None
    elif published.unchanged:
        result, detail = "unchanged", f"{where} already holds {published.commit[:12]}"
        commit = published.commit
    else:
        result, detail = "pushed", f"pushed {where} ({published.commit[:12]})"
        commit = published.commit
    return RoundResult(
        result=result, detail=detail, commit=commit, tracked_commit=published.tracked_commit
    )


# ---------------------------------------------------------------------- the edits


def _apply(root: Path, wanted: Sequence[Suggestion]) -> EditResult:
    named = sorted({p for s in wanted if (p := _file_of(s)) is not None})
    existing = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )
    files = {p: _read(root, p) for p in named if p in existing}
    style = (
        {p: _read(root, p) for p in existing if p.endswith(YAML_SUFFIXES)}
        if any(s.kind is SuggestionKind.NEW_CACHE for s in wanted)
        else {}
    )
    return apply_suggestions(files, wanted, style_from=style, existing_paths=existing)


def _file_of(suggestion: Suggestion) -> str | None:
    path = suggestion.file or (suggestion.location.path if suggestion.location else None)
    if path is None:
        return None
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        return None  # apply_suggestions reports it as not read
    return pure.as_posix()


def _read(root: Path, relative: str) -> str:
    target = root / relative
    if not target.resolve().is_relative_to(root.resolve()):
        raise SpecError(f"{relative}: a link out of the repository; gitsync does not edit it")
    return target.read_bytes().decode("utf-8")  # bytes: CRLF stays CRLF


def _check_valid(root: Path, changes: Mapping[str, str | None]) -> None:
    loaded = validate_edited(root=root, changes=changes)
    if loaded.ok:
        return
    text = reports.format_diagnostics(
        loaded.errors,
        output_format="text",
        files=loaded.files,
        documents=loaded.documents,
        caches=len(loaded.caches),
    )
    raise SpecError(f"the edited tree would not validate, so nothing was pushed:\n{text}")


def _edit_key(suggestion: Suggestion) -> Hashable:
    """What of a suggestion changes the commit: not its evidence counts, which move every round."""
    s = suggestion
    return (
        s.kind.value,
        s.cache,
        _file_of(s),
        s.images,
        s.from_images,
        s.to_images,
        s.from_size_gib,
        s.to_size_gib,
        s.from_digests,
        s.to_digests,
        s.policy,
    )


def _without(extra: Sequence[Suggestion], bumps: Sequence[Suggestion]) -> tuple[Suggestion, ...]:
    """`gitsync suggest`'s suggestions, less those the bumps already make (the same bump twice
    would be reported as not applied the second time)."""
    made = {(b.kind, b.cache, b.from_images, b.to_images) for b in bumps}
    return tuple(s for s in extra if (s.kind, s.cache, s.from_images, s.to_images) not in made)


# ---------------------------------------------------------------------- the message


def commit_message(applied: Sequence[EditOutcome], *, tracked: str) -> str:
    """One line per change: a bump with its old and new tag and digest, a suggestion with why."""
    bumps = [o.suggestion for o in applied if o.suggestion.policy is not None]
    others = [o.suggestion for o in applied if o.suggestion.policy is None]
    counts = []
    if bumps:
        counts.append(f"{len(bumps)} image bump{'s' if len(bumps) != 1 else ''}")
    if others:
        counts.append(f"{len(others)} suggestion{'s' if len(others) != 1 else ''}")
    title = f"gitsync: {' and '.join(counts) or 'no changes'} on {tracked}"
    lines = [title, ""]
    for bump in bumps:
        lines.extend(_bump_lines(bump))
    for other in others:
        lines.append(f"- {other.kind.value} {other.cache}: {_change_text(other)}")
        lines.append(f"  {other.reason}")
    lines += [
        "",
        f"Kept by gitsync run --automation-branch: rewritten when {tracked} moves or the",
        "pending changes do, deleted when nothing is pending.",
    ]
    return "\n".join(lines) + "\n"


def _bump_lines(bump: Suggestion) -> list[str]:
    lines = []
    for i, (old, new) in enumerate(zip(bump.from_images, bump.to_images, strict=False)):
        name, old_tag, new_tag = _tags(old, new)
        lines.append(f"- {bump.cache}: {name} {old_tag} -> {new_tag} (policy {bump.policy})")
        lines.append(f"  from {_nth(bump.from_digests, i)}")
        lines.append(f"  to   {_nth(bump.to_digests, i)}")
    return lines


def _tags(old: str, new: str) -> tuple[str, str, str]:
    """(repository, old tag, new tag); the references as given when they do not parse."""
    try:
        before, after = imageref.parse(old), imageref.parse(new)
    except ImageRefError:
        return old, "", new
    if before.name != after.name:
        return "", str(before), str(after)
    return before.name, before.tag or before.reference, after.tag or after.reference


def _nth(digests: Sequence[str], i: int) -> str:
    return digests[i] if i < len(digests) and digests[i] else "digest unknown"


def _change_text(s: Suggestion) -> str:
    if s.from_images:
        return ", ".join(f"{a} -> {b}" for a, b in zip(s.from_images, s.to_images, strict=False))
    if s.from_size_gib is not None and s.to_size_gib is not None:
        return f"imageCacheSize {s.from_size_gib} -> {s.to_size_gib} GiB"
    return ", ".join(s.images)

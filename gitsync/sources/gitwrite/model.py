"""The values a publish takes and gives back: who commits, what was done, what was fetched.

Plain frozen data, below every step, so the plumbing (which stamps the
committer), the publishing steps (which build the result) and the entry points
share one definition without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gitsync.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GitIdentity:
    """A commit's author or committer."""

    name: str
    email: str

    def __post_init__(self) -> None:
        for value, what in ((self.name, "name"), (self.email, "email")):
            if not value.strip() or any(c in value for c in "<>\n\r\0"):
                raise ConfigError(
                    f"git author {what} {value!r} must be non-empty, on one line, "
                    "without '<' or '>' (for example: Jane Doe <jane@example.com>)"
                )

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


DEFAULT_IDENTITY = GitIdentity(name="gitsync", email="gitsync@noreply.invalid")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What `publish` did."""

    branch: str
    commit: str  # what refs/heads/<branch> holds now; the tracked tip when `empty`
    tracked_commit: str  # the tracked branch's tip the commit sits on
    pushed: bool  # the remote branch was written (or deleted)
    unchanged: bool  # the remote branch already held this tree on this parent
    empty: bool  # the changes leave the tracked tip's tree as it is: no commit
    deleted: bool  # `empty`, and the remote branch was deleted (delete_when_empty)
    remote: str  # the remote, safe to show
    local_ref: str  # where the commit is kept: "refs/heads/NAME in PATH"


@dataclass(frozen=True, slots=True)
class TrackedTip:
    """The tracked branch's tip as fetched: the commit, and the repository that now holds it."""

    commit: str
    git_dir: Path

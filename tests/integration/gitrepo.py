"""`git`: run git in a test repository with a fixed identity, and return what it printed.

Every integration test that builds a repository of specs needs the same call;
this is it, once. `check=True`: a git command that fails fails the test.
`isolate_git` keeps the user's and the system's git configuration out of a
test that runs gitsync's own git calls, and `watch_git_calls` records each git
process a gitsync module starts (to check that no secret reaches an argv).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def isolate_git(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """No user or system git config, a fixed identity, no proxy for 127.0.0.1.

    Returns the (empty) global config file, for a test that needs to add to it.
    """
    global_config = home / ".gitconfig"
    global_config.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name, value in {
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }.items():
        monkeypatch.setenv(name, value)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return global_config


@dataclass
class Call:
    """One git process a module started: its argv and environment."""

    argv: list[str]
    env: dict[str, str]

    @property
    def command(self) -> str:
        """The git subcommand: the first word after `git` and its `-c` pairs."""
        words = iter(self.argv[1:])
        for word in words:
            if word == "-c":
                next(words)
                continue
            return word
        return ""


def watch_git_calls(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Call]:
    """Every process `module._run` starts from now on, in order (it still runs)."""
    recorded: list[Call] = []
    real_run = module._run

    def spy(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        recorded.append(Call(argv=list(argv), env=dict(kwargs["env"])))
        return real_run(argv, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "_run", spy)
    return recorded


@dataclass
class BareRemote:
    """A bare repository standing in for a git host: where branches are, and their tips."""

    bare: Path

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def tip(self, branch: str) -> str:
        return git("rev-parse", f"refs/heads/{branch}", cwd=self.bare)

    def branches(self) -> set[str]:
        return set(
            git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=self.bare).split()
        )

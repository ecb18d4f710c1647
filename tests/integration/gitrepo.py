"""`git`: run git in a test repository with a fixed identity, and return what it printed.

Every integration test that builds a repository of specs needs the same call;
this is it, once. `check=True`: a git command that fails fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


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

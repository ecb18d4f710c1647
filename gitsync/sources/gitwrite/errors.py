"""What can go wrong when gitsync writes a branch, by whether a retry helps.

Apart from the steps that raise them so that a caller (the CLI, an automation
branch) can catch them without importing the git machinery, and so that the
tree drawn in `gitsync.errors` has one place to point at. A push's errors carry
where the local commit stays, since that commit outlives a failed push.
"""

from __future__ import annotations

from gitsync.errors import ConfigError, PermanentError
from gitsync.sources.base import SourceUnavailable


class ProtectedBranchError(ConfigError):
    """The branch to write is one gitsync must leave alone.

    The tracked branch (unless explicitly allowed), a branch checked out in the
    local repository, or a local branch holding commits gitsync did not make.
    """


class PushRejectedError(PermanentError):
    """The remote refused the push: a hook, a protected branch, the credentials.

    The commit stays on `local_ref` (`refs/heads/NAME in PATH`).
    """

    def __init__(self, message: str, *, commit: str, local_ref: str) -> None:
        super().__init__(message)
        self.commit = commit
        self.local_ref = local_ref


class PushUnavailableError(SourceUnavailable):
    """The push did not reach the remote: the network, a timeout, a 5xx; retry later.

    The commit stays on `local_ref`.
    """

    def __init__(self, message: str, *, commit: str, local_ref: str) -> None:
        super().__init__(message)
        self.commit = commit
        self.local_ref = local_ref

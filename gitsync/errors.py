"""The exception tree, and the retry policy each branch carries.

Like kopf, an error says by its class whether trying again can help, so the
reconciler decides backoff from the type alone and never parses messages::

    GitSyncError
     ├── TemporaryError      the same call may succeed later: back off and retry
     │    ├── sources.base.SourceUnavailable            the remote did not answer
     │    │    └── sources.gitwrite.errors.PushUnavailableError
     │    │                                             a push that did not reach the remote
     │    ├── controller_record.RecordSaveError         the record could not be saved
     │    ├── providers.local.state.DataDiskError       the data disk refused a write
     │    │    └── DiskFullError                        … because it is full
     │    ├── observations.store.ObservationDiskError   lookups could not be read or written
     │    ├── providers.local.registryretry.OperationCancelledError
     │    │                                             stopped because a sibling failed
     │    ├── providers.tencentcloud.TencentCloudTransientError
     │    │                                             throttled, or the cloud erred
     │    └── providers.tencentcloud.TencentCloudResponseError
     │                                                  an answer that cannot be read
     └── PermanentError      the same input fails the same way: report, do not retry
          ├── ConfigError    flags, environment or config file are wrong (exit 2)
          │    └── sources.gitwrite.errors.ProtectedBranchError
          │                                             a branch gitsync must not write
          ├── ImageRefError  an image reference breaks the distribution grammar
          ├── policies.PolicyError  a `# gitsync:` marker, range or regex that cannot be read
          ├── SpecError      a spec repository cannot be loaded at all
          ├── sources.base.SourceError                  a revision or path that is wrong
          ├── sources.gitwrite.errors.PushRejectedError the remote refused a pushed branch
          ├── datadir.DataDirBusyError                  another gitsync holds the data dir
          ├── providers.credentials.CredentialError     a docker config or pull secret
          │    └── PullSecretNotFoundError
          ├── providers.local.auth.TokenError           a registry token exchange failed
          ├── providers.local.oci.RegistryError         what a registry answered
          │    ├── registryhttp.AuthenticationError, AccessDeniedError, NotFoundError
          │    └── oci.ManifestError
          │         └── PlatformNotFoundError
          ├── providers.local.blobs.BlobStoreError
          │    ├── InvalidDigestError
          │    └── BlobNotFoundError
          ├── providers.local.blobs.DigestMismatchError, SizeMismatchError
          ├── providers.local.pull.SizeLimitExceededError, LayerVerificationError,
          │   UnsupportedLayerError
          ├── providers.local.export.ExportError
          ├── providers.local.leases.LeaseError
          ├── providers.local.state.SchemaVersionError  a data dir from a newer gitsync
          ├── observations.store.ObservationStoreError  not (or no longer) an observations file
          └── providers.tencentcloud.TencentCloudAPIError
               ├── TencentCloudAuthError
               ├── TencentCloudInvalidParameterError
               └── TencentCloudNotFoundError

The base classes live here; each subclass lives beside the boundary that
raises it, where a foreign error (an SDK's, an OSError, sqlite3's) is
translated with `raise ... from exc`. A few private exceptions stay inside
their module as control flow (the YAML loader's, the HTTP transport's) and
never cross it. `tests/unit/test_errors.py` holds this drawing to the code.

Messages say what failed, where, and what would be valid. They never carry
credentials: callers pass names of secrets, not their values.
"""

from __future__ import annotations


class GitSyncError(Exception):
    """Base of every error gitsync raises on purpose."""


class TemporaryError(GitSyncError):
    """May succeed if retried later; `retry_after` is a hint in seconds, if known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(GitSyncError):
    """Retrying with the same input cannot help; a human has to change something."""


class ConfigError(PermanentError):
    """Controller settings are invalid: a flag, an environment variable or the config file."""


class ImageRefError(PermanentError, ValueError):
    """An image reference does not follow the distribution reference grammar."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"invalid image reference {reference!r}: {reason}")
        self.reference = reference
        self.reason = reason


class SpecError(PermanentError):
    """A spec path cannot be read at all (missing, not a file or directory)."""

"""Tencent Cloud API errors and what they mean to gitsync: retry later, or report and stop.

Kept apart from the transport (as httpx keeps `_exceptions.py` apart from
`_transports`) so the classification is pure: a Code string in, a
`gitsync.errors` exception out, no SDK involved. The transport reads the code
from the answer (or from the SDK's exception) and raises what `classify_error`
returns, `from` the SDK's exception when there is one; the provider and the
snapshot lookup only ever see this tree:

* `TencentCloudTransientError` (a `TemporaryError`): throttling, the cloud's
  own internal errors, network failures. `throttled` says the call was refused
  before it ran, so even a create may be sent again.
* `TencentCloudResponseError` (a `TemporaryError`): an answer that is not an
  API envelope at all (a gateway's page, a cut-off body), never a success.
* `TencentCloudAPIError` (a `PermanentError`) and its kinds: credentials
  (`TencentCloudAuthError`), the request (`TencentCloudInvalidParameterError`),
  a named resource (`TencentCloudNotFoundError`). Messages carry the Code,
  Message and RequestId, and a hint for the codes a user can fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitsync.errors import GitSyncError, PermanentError, TemporaryError

__all__ = [
    "TencentCloudAPIError",
    "TencentCloudAuthError",
    "TencentCloudInvalidParameterError",
    "TencentCloudNotFoundError",
    "TencentCloudResponseError",
    "TencentCloudTransientError",
    "classify_error",
    "malformed",
]

# Codes that say "not now" rather than "never". Throttling rejects before running;
# the others may or may not have run (see `TencentCloudProvider._create`). Other
# InternalError.* sub-codes of TKE name configuration problems (CIDR conflicts,
# quotas, balance, CAM) that retrying cannot fix, so they are permanent.
_THROTTLE_PREFIX = "RequestLimitExceeded"
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalError.UnexpectedInternal",
        "InternalError.UnexceptedInternal",  # sic: TKE documents both spellings
        "InternalError.Db",
        "InternalError.DbAffectivedRows",
        "InternalError.CmdTimeout",
        "InternalError.ComponentClientHttp",
        "InternalError.ComponentClinetHttp",  # sic
        "InternalError.KubeClientConnection",
        "InternalError.KubernetesInternal",
        "InternalError.MarketInternalServerError",
        "InternalError.TaskAlreadyRunning",
        "InternalError.VPCUnexpectedError",
        "InternalError.VstationError",
        "InternalError.WhitelistUnexpectedError",
        "FailedOperation.TaskAlreadyRunning",
        "FailedOperation.KubeClientConnection",
        "ResourceUnavailable",
        "ResourceInsufficient",
        "ResourcesSoldOut",
        "ClientNetworkError",  # the SDK's code for connection errors and timeouts
        "ServerNetworkError",  # the SDK's code for a non-200 HTTP answer
    }
)
_TRANSIENT_PREFIXES = ("ResourceUnavailable.", "ResourceInsufficient.")
_AUTH_CODES = frozenset(
    {
        "InvalidCredential",  # the SDK's code for an empty or malformed secret
        "InternalError.CamNoAuth",
        "FailedOperation.CamNoAuth",
        "InternalError.AccountUserNotAuthenticated",
        "FailedOperation.AccountUserNotAuthenticated",
    }
)
_AUTH_PREFIXES = ("AuthFailure", "UnauthorizedOperation")
_PARAMETER_PREFIXES = ("InvalidParameter", "MissingParameter", "UnknownParameter")
_NOT_FOUND_PREFIX = "ResourceNotFound"


class TencentCloudAPIError(PermanentError):
    """A Tencent Cloud API (TKE, or CBS for snapshot checks) refused a call for good.

    The message carries the API's Code, Message and RequestId (what Tencent
    support asks for), never the caller's credentials; `api` names the service
    ("TKE", "CBS").
    """

    def __init__(
        self,
        *,
        action: str,
        code: str,
        message: str,
        request_id: str | None,
        hint: str = "",
        api: str = "TKE",
    ) -> None:
        super().__init__(_api_message(action, code, message, request_id, hint, api=api))
        self.api = api
        self.action = action
        self.code = code
        self.api_message = message
        self.request_id = request_id


class TencentCloudAuthError(TencentCloudAPIError):
    """Wrong, expired or unauthorised credentials (AuthFailure*, UnauthorizedOperation*)."""


class TencentCloudInvalidParameterError(TencentCloudAPIError):
    """The request itself is wrong (InvalidParameter*, MissingParameter, UnknownParameter)."""


class TencentCloudNotFoundError(TencentCloudAPIError):
    """A named resource does not exist (ResourceNotFound*)."""


class TencentCloudTransientError(TemporaryError):
    """Throttling, an internal error of the cloud, or a network failure: try again later."""

    def __init__(
        self,
        *,
        action: str,
        code: str,
        message: str,
        request_id: str | None,
        retry_after: float | None = None,
        api: str = "TKE",
    ) -> None:
        super().__init__(
            _api_message(action, code, message, request_id, "", api=api), retry_after=retry_after
        )
        self.api = api
        self.action = action
        self.code = code
        self.api_message = message
        self.request_id = request_id

    @property
    def throttled(self) -> bool:
        """True when the API rejected the call before running it (safe to repeat any call)."""
        return self.code.startswith(_THROTTLE_PREFIX)


class TencentCloudResponseError(TemporaryError):
    """The answer could not be read as a Tencent Cloud API response: never taken for a success.

    Temporary, because a proxy or gateway in the way (an HTML error page, a
    truncated body) is the usual cause; a wrong `--tencentcloud-endpoint` (or
    `--tencentcloud-cbs-endpoint`) shows up here too, so the message names the
    endpoint.
    """


def _api_message(
    action: str, code: str, message: str, request_id: str | None, hint: str, *, api: str = "TKE"
) -> str:
    text = f"{api} {action} failed: {code}: {message or '(no message)'}"
    text += f" (RequestId {request_id})" if request_id else " (no RequestId)"
    return text + (f"; {hint}" if hint else "")


_HINTS = {
    "AuthFailure.SecretIdNotFound": "check TENCENTCLOUD_SECRET_ID or the credentials file",
    "AuthFailure.SignatureFailure": "check TENCENTCLOUD_SECRET_KEY or the credentials file",
    "AuthFailure.SignatureExpire": (
        "the local clock differs from the API's by more than 5 minutes; sync it with NTP"
    ),
    "AuthFailure.InvalidAuthorization": "the Authorization header is malformed (a proxy?)",
    "UnsupportedRegion": "check --region",
}


def _hint(code: str, action: str, api: str = "TKE") -> str:
    if code in _HINTS:
        return _HINTS[code]
    if code.startswith("AuthFailure.Token"):
        return "the temporary token is missing, malformed or expired"
    if code.startswith("UnauthorizedOperation") or code.endswith("CamNoAuth"):
        return f"grant the CAM user or role permission for {api.lower()}:{action}"
    return ""


def classify_error(
    *,
    action: str,
    code: str,
    message: str,
    request_id: str | None,
    throttle_retry_after: float | None = 1.0,
    api: str = "TKE",
) -> GitSyncError:
    """The gitsync error for an API error `code`: transient ones back off, the rest are reported.

    The codes are Tencent Cloud's common ones (AuthFailure*, RequestLimitExceeded,
    InternalError, ...) plus TKE's own; `api` only names the service in messages.
    """
    if code.startswith(_THROTTLE_PREFIX):
        # The documented limits are per second (20/s for DescribeImageCaches and DescribeSnapshots).
        return TencentCloudTransientError(
            action=action,
            code=code,
            message=message,
            request_id=request_id,
            retry_after=throttle_retry_after,
            api=api,
        )
    if code in _TRANSIENT_CODES or code.startswith(_TRANSIENT_PREFIXES):
        return TencentCloudTransientError(
            action=action, code=code, message=message, request_id=request_id, api=api
        )
    kind: type[TencentCloudAPIError] = TencentCloudAPIError
    if code in _AUTH_CODES or code.startswith(_AUTH_PREFIXES):
        kind = TencentCloudAuthError
    elif code.startswith(_PARAMETER_PREFIXES):
        kind = TencentCloudInvalidParameterError
    elif code.startswith(_NOT_FOUND_PREFIX):
        kind = TencentCloudNotFoundError
    return kind(
        action=action,
        code=code,
        message=message,
        request_id=request_id,
        hint=_hint(code, action, api),
        api=api,
    )


def malformed(
    api: str, action: str, what: str, response: Mapping[str, Any]
) -> TencentCloudResponseError:
    """A well-formed envelope whose content is not what `action` returns: never a success."""
    request_id = response.get("RequestId")
    return TencentCloudResponseError(
        f"{api} {action}: the answer has {what} (RequestId {request_id}); refusing to"
        " take it for a success"
    )

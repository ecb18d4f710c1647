"""Signed calls to a Tencent Cloud API, read strictly, retried, and kept free of secrets.

The one place that touches the SDK's network code: TKE (the provider) and CBS
(the snapshot lookup) both call through `TencentCloudAPI`, so both get the
same rules. Like httpx's transports, it turns whatever the layer below raises
(the SDK's `TencentCloudSDKException`, requests' `OSError`s, a body that is not
JSON) into this package's error tree (`errors.py`), `from` the original, and
hands callers only the `Response` object of a success.

* **Errors are read from the body, never from the SDK alone.** The SDK looks
  for an error only when `Content-Type` is exactly `application/json` (or
  `text/plain`); any other type, say `application/json; charset=utf-8` from a
  gateway, makes it deserialise the error envelope into an empty response
  model, and an empty `DescribeImageCaches` would look like "no caches" and
  plan a create for every spec. So every call goes through `client.call` (the
  SDK's generic signed POST, TC3-HMAC-SHA256 with the service in the
  credential scope) and the raw body is checked here: a JSON object with
  `Response.RequestId` and no `Response.Error`. Anything else is an error.
* **Retries inside the call.** Throttling is retried always (it is refused
  before it runs); other transient errors only for idempotent calls, a few
  times with exponential backoff and jitter.
* **Credentials never leak.** The secret id and key live only in the SDK's
  credential object; messages built from API text are scrubbed of them; the
  SDK's own logger, which dumps whole requests (the `Authorization` header,
  request bodies with registry passwords) at DEBUG, is filtered to WARNING and
  above.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tencentcloud.common import credential as tc_credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from gitsync.backoff import backoff_delay
from gitsync.errors import GitSyncError
from gitsync.providers.tencentcloud.errors import (
    TencentCloudResponseError,
    TencentCloudTransientError,
    classify_error,
    malformed,
)
from gitsync.providers.tencentcloud.settings import TencentCloudCredentials, TencentCloudSettings

__all__ = ["SDK_LOGGER", "TencentCloudAPI"]

# One logger for the whole backend, as before the package was split.
log = logging.getLogger("gitsync.providers.tencentcloud")

SDK_LOGGER = "tencentcloud_sdk_common"
_SNIPPET = 200  # characters of an unreadable body quoted in an error


class _SdkLogGuard(logging.Filter):
    """Keeps the SDK's request dumps out of logs and scrubs secrets from what remains.

    The SDK logs every request at DEBUG with its headers (the Authorization
    header names the secret id) and body (registry passwords): those records
    are dropped; anything at WARNING or above passes with known secrets masked.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Sequence[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        with self._lock:
            secrets = tuple(self._secrets)
        message = record.getMessage()
        scrubbed = _scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SDK_LOG_GUARD = _SdkLogGuard()
logging.getLogger(SDK_LOGGER).addFilter(_SDK_LOG_GUARD)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# ----------------------------------------------------------------------- calls


class _ClientPool:
    """SDK clients handed out one per concurrent call.

    An SDK client wraps one `requests.Session`, which is not documented as
    thread-safe; the reconciler's workers are short-lived threads, so clients
    are pooled rather than kept per thread (that would leak one per pass).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def client(self) -> Iterator[Any]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._factory()
            with self._lock:
                self._all.append(client)
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            clients, self._all, self._idle = self._all, [], []
        for client in clients:
            # The SDK has no close(); its session sits at client.request.conn._session.
            session = getattr(
                getattr(getattr(client, "request", None), "conn", None), "_session", None
            )
            if session is not None:
                session.close()


class TencentCloudAPI:
    """Signed calls to one Tencent Cloud service (TKE, CBS), read strictly and retried.

    The TKE provider and the CBS snapshot check both call through this, so both
    follow this module's rules: every call is the SDK's generic signed
    POST (`client.call`, TC3-HMAC-SHA256, the service in the credential scope),
    the raw body is checked here (a `Response` with a `RequestId`, no `Error`),
    throttling and transient errors are retried inside the call with exponential
    backoff and jitter, and the caller's secrets are scrubbed from every message.
    `api` names the service in messages ("TKE", "CBS"); `host` is its endpoint.
    """

    def __init__(
        self,
        *,
        api: str,
        client_class: Callable[[Any, str, Any], Any],
        host: str,
        settings: TencentCloudSettings,
        credentials: TencentCloudCredentials,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.host = host
        self.settings = settings
        self._secrets = credentials.secrets()
        _SDK_LOG_GUARD.add(self._secrets)
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311  # retry jitter, not cryptography
        self._rng_lock = threading.Lock()
        sdk_credential = tc_credential.Credential(
            credentials.secret_id, credentials.secret_key, credentials.token
        )
        http = HttpProfile(
            protocol=settings.scheme,
            endpoint=host,
            reqMethod="POST",
            reqTimeout=settings.request_timeout_seconds,
        )
        profile = ClientProfile(signMethod="TC3-HMAC-SHA256", httpProfile=http, language="en-US")
        self._pool = _ClientPool(lambda: client_class(sdk_credential, settings.region, profile))

    def close(self) -> None:
        self._pool.close()

    def scrub(self, text: str) -> str:
        """`text` with the caller's secret id, key and token masked."""
        return _scrub(text, self._secrets)

    def call(self, action: str, params: Mapping[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """One action, retried a few times: when throttled, or transient and idempotent."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._call_once(action, params)
            except TencentCloudTransientError as exc:
                if attempt == attempts or not (idempotent or exc.throttled):
                    raise
                delay = self._retry_delay(attempt, exc.retry_after)
                log.info(
                    "%s %s: %s (RequestId %s); attempt %d of %d in %.2f s",
                    self.api,
                    action,
                    exc.code,
                    exc.request_id or "none",
                    attempt + 1,
                    attempts,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        with self._rng_lock:
            delay = backoff_delay(
                attempt,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_max_seconds,
                rng=self._rng,
            )
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_max_seconds))
        return delay

    def _call_once(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._pool.client() as client:
            try:
                body = client.call(action, dict(params))
            except TencentCloudSDKException as exc:
                raise self._sdk_error(action, exc) from exc
            except (ValueError, KeyError, TypeError) as exc:
                # The SDK parsed an application/json body that is not an API envelope.
                raise TencentCloudResponseError(
                    f"{self.api} {action}: {self.host} answered with a body that is not a"
                    f" {self.api} API response ({type(exc).__name__})"
                ) from exc
            except OSError as exc:
                # requests' errors are OSErrors: a body cut off mid-way (ChunkedEncodingError),
                # a reset. Temporary, like the SDK's own ClientNetworkError.
                raise TencentCloudResponseError(
                    f"{self.api} {action}: the connection to {self.host} failed mid-answer"
                    f" ({type(exc).__name__}); retrying later"
                ) from exc
        return self._envelope(action, body)

    def _envelope(self, action: str, body: object) -> dict[str, Any]:
        """The `Response` object of a success, or the error the body describes."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
        try:
            data = json.loads(text)
        except ValueError:
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered with a body that is not JSON"
                f' (starts {self._snippet(text)!r}); expected {{"Response": {{…}}}}'
            ) from None
        response = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(response, dict):
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered JSON without a Response object"
                f" (starts {self._snippet(text)!r})"
            )
        request_id = response.get("RequestId")
        request_id = request_id if isinstance(request_id, str) and request_id else None
        error = response.get("Error")
        if error is not None:
            code = error.get("Code") if isinstance(error, dict) else None
            message = error.get("Message") if isinstance(error, dict) else None
            raise classify_error(
                action=action,
                code=code if isinstance(code, str) and code else "UnknownError",
                message=self.scrub(message if isinstance(message, str) else ""),
                request_id=request_id,
                throttle_retry_after=self.settings.throttle_retry_after_seconds,
                api=self.api,
            )
        if request_id is None:
            raise TencentCloudResponseError(
                f"{self.api} {action}: {self.host} answered without a RequestId, which every"
                " Tencent Cloud API response carries; refusing to take it for a success"
            )
        return response

    def _sdk_error(self, action: str, exc: TencentCloudSDKException) -> GitSyncError:
        code = str(exc.code or "ClientError")
        raw = exc.message
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
        if code == "ServerNetworkError":
            # A non-200 answer: a gateway's page, or an envelope that names the real code.
            try:
                return self._envelope_error(action, message)
            except TencentCloudResponseError:
                message = f"HTTP status other than 200, body starts {self._snippet(message)!r}"
        return classify_error(
            action=action,
            code=code,
            message=self.scrub(message)[: _SNIPPET * 2],
            request_id=exc.requestId if isinstance(exc.requestId, str) else None,
            throttle_retry_after=self.settings.throttle_retry_after_seconds,
            api=self.api,
        )

    def _envelope_error(self, action: str, text: str) -> GitSyncError:
        try:
            self._envelope(action, text)
        except GitSyncError as exc:
            if isinstance(exc, TencentCloudResponseError):
                raise
            return exc
        raise TencentCloudResponseError(
            f"{self.api} {action}: a non-200 answer held a success envelope"
        )

    def malformed(self, action: str, what: str, response: Mapping[str, Any]) -> GitSyncError:
        """The error for an envelope without what `action` must return."""
        return malformed(self.api, action, what, response)

    def _snippet(self, text: str) -> str:
        return self.scrub(text[:_SNIPPET])

"""When a registry request is tried again, and how long it waits first.

Why apart from the session: the policy is arithmetic and waiting, and both the
session's request loop (connection errors, 429 and 5xx) and the client's
re-reads of a body that broke off mid-way spend from it. One operation has one
budget of attempts (`Attempts`) whichever of them spends it, so a flaky
registry cannot multiply the tries. What remains failing after the budget is a
`TemporaryError` (carrying the registry's Retry-After, if any); a TLS
certificate that does not verify is a `PermanentError` at once, since trying
again cannot fix it.

Waits honour `Retry-After` (seconds or an HTTP date, capped), else exponential
backoff with equal jitter (`gitsync.backoff`). A wait is cut short by the
pull's cancel event and then raises `OperationCancelledError`, so a cancelled
pull never sits out a backoff.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx

from gitsync.backoff import backoff_ceiling, equal_jitter
from gitsync.errors import PermanentError, TemporaryError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class OperationCancelledError(TemporaryError):
    """The caller cancelled the operation (another part of the pull failed, or a stop).

    Temporary: nothing was wrong with this part, so the next pass may well succeed.
    """


class Attempts:
    """A shared budget of attempts for one logical operation (connect and body retries)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def next(self) -> bool:
        self.used += 1
        return self.used <= self.limit


class RetryPolicy:
    """Backoff, Retry-After and cancellable waits; thread-safe (the jitter's rng is locked).

    `sleep` None waits on the cancel event (or `time.sleep` without one); tests
    inject a recording sleep and a seeded `rng`.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._rng_lock = threading.Lock()

    def attempts(self) -> Attempts:
        """A fresh budget for one operation."""
        return Attempts(self.max_attempts)

    def backoff(self, attempt: int) -> float:
        # The doubling stops at 2^30 (attempt 31), as it always has here.
        ceiling = backoff_ceiling(min(attempt, 31), base=self._backoff_base, cap=self._backoff_max)
        with self._rng_lock:
            return equal_jitter(ceiling, rng=self._rng)

    def pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelledError("cancelled")
        if self._sleep is not None:
            self._sleep(seconds)
        elif cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)
        if cancel is not None and cancel.is_set():
            raise OperationCancelledError("cancelled")

    def retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        seconds: float | None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()  # an HTTP date is wall-clock by nature
        return max(0.0, min(seconds, self._max_retry_after))

    def give_up_or_wait(
        self,
        attempts: Attempts,
        where: str,
        *,
        exc: Exception | None,
        response: httpx.Response | None,
        cancel: threading.Event | None,
    ) -> None:
        """Raise when trying again cannot help or the budget is spent; else wait for the next."""
        retry_after = self.retry_after(response) if response is not None else None
        if exc is not None:
            cert_error = _certificate_error(exc)
            if cert_error is not None:
                raise PermanentError(
                    f"{where}: TLS certificate verification failed ({cert_error});"
                    " if the registry serves plain HTTP, list it as an insecure registry"
                ) from exc
        if attempts.used >= attempts.limit:
            cause = (
                f"HTTP {response.status_code}"
                if response is not None
                else f"{type(exc).__name__}: {exc}"
            )
            error = TemporaryError(
                f"{where} failed after {attempts.used} attempts: {cause}", retry_after=retry_after
            )
            if exc is not None:
                raise error from exc
            raise error
        delay = retry_after if retry_after is not None else self.backoff(attempts.used)
        self.pause(delay, cancel)


def _certificate_error(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen)
        seen = seen.__cause__ or seen.__context__
    return None

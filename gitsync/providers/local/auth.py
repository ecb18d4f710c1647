"""The registry token dance: which `Authorization` header a request carries.

Why a separate module: how a Bearer token is obtained and cached is policy
that unit tests can pin down without a server. `registryhttp.py` owns the
sockets and `registryretry.py` the retries; this module decides what the
`Authorization` header says. The
credentials it spends come from `gitsync.providers.credentials` (docker
configs and pull secrets), which all three backends share.

Bearer tokens
-------------
`TokenCache` keys tokens by (realm, service, scope) and keeps each until the
injected clock passes `expires_in` (default 60 s, as the distribution token
spec says) counted from when the token was received; the server's
`issued_at` is ignored so clock skew between hosts cannot matter.
`Authenticator` remembers each registry's last challenge so that later
requests send a token up front instead of paying a 401 round trip each time.

Credential values never appear in messages or reprs: errors name where a
credential came from (a file, a secret), never what it is.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gitsync.errors import PermanentError, TemporaryError
from gitsync.providers.credentials import Credential, CredentialStore

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, distribution's token spec default for expires_in


class TokenError(PermanentError):
    """The token server refused or answered nonsense; retrying the same way cannot help."""


# -- WWW-Authenticate and tokens -----------------------------------------------

_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: a scheme and its parameters."""

    scheme: str  # lower-case: "basic" or "bearer"
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse `Bearer realm="…",service="…",scope="…"` (several challenges allowed)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if match is None:
            break
        scheme = match.group(1).lower()
        rest = rest[match.end() :]
        params: list[tuple[str, str]] = []
        while True:
            param = _CHALLENGE_PARAM.match(rest)
            if param is None:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.append((param.group(1).lower(), value))
            rest = rest[param.end() :]
        challenges.append(Challenge(scheme=scheme, params=tuple(params)))
        rest = rest.lstrip(", ")
    return challenges


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: float  # on the cache's clock


TokenKey = tuple[str, str, str]  # realm, service, scope


class TokenCache:
    """Bearer tokens by (realm, service, scope), valid until `expires_in` runs out."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, Token] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> Token | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and self._clock() >= token.expires_at:
                del self._tokens[key]
                return None
            return token

    def put(self, key: TokenKey, value: str, *, expires_in: float) -> Token:
        token = Token(value=value, expires_at=self._clock() + expires_in)
        with self._lock:
            self._tokens[key] = token
        return token

    def invalidate(self, key: TokenKey, value: str | None = None) -> None:
        """Forget a token (only if it is still `value`, when given)."""
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and (value is None or current.value == value):
                del self._tokens[key]


Send = Callable[[httpx.Request], httpx.Response]
"""Sends a request with the caller's retries; returns any final response, raises TemporaryError."""


class Authenticator:
    """Chooses the Authorization header per (registry, repository); thread-safe.

    `send` performs token requests through the registry client's retrying
    transport. Tokens are fetched once per key even when many workers ask at
    the same moment.
    """

    def __init__(
        self,
        *,
        credentials: CredentialStore | None = None,
        token_cache: TokenCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Send,
    ) -> None:
        self._credentials = credentials or CredentialStore()
        self._tokens = token_cache or TokenCache(clock=clock)
        self._send = send
        self._challenges: dict[str, Challenge] = {}
        self._guard = threading.Lock()
        self._key_locks: dict[TokenKey, threading.Lock] = {}

    @property
    def token_cache(self) -> TokenCache:
        return self._tokens

    def credential_for(self, registry: str, repository: str) -> Credential | None:
        return self._credentials.lookup(registry, repository)

    def authorization(self, registry: str, repository: str) -> str | None:
        """The header to send now, from what this registry asked before (None: anonymous)."""
        with self._guard:
            challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credential = self.credential_for(registry, repository)
            return credential.basic_header() if credential else None
        if challenge.scheme == "bearer":
            return "Bearer " + self._bearer_token(challenge, registry, repository)
        return None

    def on_unauthorized(
        self, registry: str, repository: str, header: str | None, *, sent: str | None
    ) -> bool:
        """Learn from a 401; True if a retry will send something new.

        `sent` is the Authorization header that was rejected, so a cached token
        that the registry no longer accepts is dropped and fetched again.
        """
        challenges = parse_www_authenticate(header or "")
        usable = [c for c in challenges if c.scheme in {"bearer", "basic"}]
        if not usable:
            return False
        challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
        with self._guard:
            previous = self._challenges.get(registry)
            self._challenges[registry] = challenge
        if challenge.scheme == "basic":
            credential = self.credential_for(registry, repository)
            if credential is None:
                return False
            return sent != credential.basic_header()
        key = self._token_key(challenge, registry, repository)
        if sent is not None and sent.startswith("Bearer "):
            self._tokens.invalidate(key, sent.removeprefix("Bearer "))
            return True
        return previous != challenge or sent is None

    @staticmethod
    def _token_key(challenge: Challenge, registry: str, repository: str) -> TokenKey:
        realm = challenge.get("realm")
        if not realm:
            raise TokenError(f"registry {registry} sent a Bearer challenge without a realm")
        return (realm, challenge.get("service") or "", f"repository:{repository}:pull")

    def _bearer_token(self, challenge: Challenge, registry: str, repository: str) -> str:
        key = self._token_key(challenge, registry, repository)
        token = self._tokens.get(key)
        if token is not None:
            return token.value
        with self._guard:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one fetch per key; the others wait and find it cached
            token = self._tokens.get(key)
            if token is not None:
                return token.value
            value, expires_in = self._fetch_token(key, registry, repository)
            return self._tokens.put(key, value, expires_in=expires_in).value

    def _fetch_token(self, key: TokenKey, registry: str, repository: str) -> tuple[str, float]:
        realm, service, scope = key
        params = {"scope": scope}
        if service:
            params["service"] = service
        headers = {}
        credential = self.credential_for(registry, repository)
        if credential is not None:
            headers["Authorization"] = credential.basic_header()
        try:
            request = httpx.Request("GET", realm, params=params, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise TokenError(f"registry {registry} names an invalid token realm {realm!r}") from exc
        response = self._send(request)
        try:
            body = response.read()
        finally:
            response.close()
        who = f"token server {realm} (registry {registry}, {scope})"
        if response.status_code in {401, 403}:
            cred = f"the credentials from {credential.source}" if credential else "anonymous access"
            raise TokenError(f"{who} refused {cred} with HTTP {response.status_code}")
        if response.status_code >= 500:
            raise TemporaryError(f"{who} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise TokenError(f"{who} answered HTTP {response.status_code}; expected 200")
        try:
            data = json.loads(body)
            value = data.get("token") or data.get("access_token")
            expires_in = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as exc:
            raise TokenError(f"{who} answered with a body that is not token JSON") from exc
        if not isinstance(value, str) or not value:
            raise TokenError(f"{who} answered without 'token' or 'access_token'")
        return value, max(expires_in, 0.0)

"""Registry credentials and the token dance, kept apart from HTTP transport.

Why a separate module: credentials come from files people edit by hand (a
docker `config.json`, Kubernetes pull secrets exported to a folder), and the
rules for which credential goes to which registry, and how a Bearer token is
obtained and cached, are policy that unit tests can pin down without a server.
`registry.py` owns the sockets and retries; this module decides what the
`Authorization` header says.

Where credentials come from
---------------------------
* `CredentialStore.from_docker_config(path)`: `{"auths": {KEY: {"auth": base64(user:pass)}
  | {"username": ..., "password": ...}}}`. `credsStore`/`credHelpers` name
  external programs; gitsync does not run them (say so to the user instead).
* Kubernetes pull secrets in a *secrets dir*, named as in a spec's
  `imagePullSecrets` (`namespace/name`; a bare `name` means namespace `default`)::

      <secrets-dir>/<namespace>/<name>.json    # or .yaml / .yml
      # a Secret manifest, as `kubectl get secret -o json|yaml` prints it:
      # type kubernetes.io/dockerconfigjson with data[".dockerconfigjson"]
      # (base64) or stringData[".dockerconfigjson"] (plain JSON); the legacy
      # kubernetes.io/dockercfg with ".dockercfg" (the bare auths map) works too.

Registry keys are matched like the kubelet does: the scheme and `/v1/`-style
suffixes are ignored, `index.docker.io`, `registry-1.docker.io` and
`docker.io` are one registry, a key may carry a path prefix
(`registry.example.com/team` applies to `team/...` only; the longest prefix
wins) and a `*.` wildcard for one host label.

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

import base64
import binascii
import fnmatch
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from gitsync.errors import PermanentError, TemporaryError

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, distribution's token spec default for expires_in
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKERCFG_TYPE = "kubernetes.io/dockercfg"
DEFAULT_NAMESPACE = "default"
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_SUFFIXES = (".json", ".yaml", ".yml")


class CredentialError(PermanentError):
    """A credential file or pull secret cannot be used as it is."""


class PullSecretNotFoundError(CredentialError):
    """No file in the secrets dir holds the named pull secret."""


class TokenError(PermanentError):
    """The token server refused or answered nonsense; retrying the same way cannot help."""


# -- credentials ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """A username and secret for one registry, and where it was read from (for messages)."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Entry:
    host: str  # normalised host[:port], may start with "*."
    path: str  # repository path prefix, "" for the whole registry
    credential: Credential


def normalize_registry(registry: str) -> str:
    """`docker.io`'s aliases to `docker.io`, other hosts lower-cased; no scheme or path."""
    host = registry.strip().lower()
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host)
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _split_key(key: str) -> tuple[str, str]:
    """A config key (`https://host:port/v1/`, `host/team`) as (host, path prefix)."""
    text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key.strip())
    host, _, path = text.partition("/")
    path = path.strip("/")
    if re.fullmatch(r"v[12](/.*)?", path) or path in {"v1", "v2"}:
        path = ""  # docker's "https://index.docker.io/v1/" names the registry, not a path
    return normalize_registry(host), path


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    if "*" not in pattern:
        return False
    # A wildcard stands for exactly one label, as the kubelet's keyring matches.
    pattern_labels, host_labels = pattern.split("."), host.split(".")
    return len(pattern_labels) == len(host_labels) and all(
        fnmatch.fnmatchcase(h, p) for p, h in zip(pattern_labels, host_labels, strict=True)
    )


class CredentialStore:
    """Immutable set of credentials; `lookup` picks the most specific match.

    Earlier entries win over later ones with the same specificity, so merging
    pull secrets before the docker config makes the secrets take precedence.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self._entries: tuple[_Entry, ...] = tuple(entries)

    def __repr__(self) -> str:
        hosts = sorted({f"{e.host}/{e.path}".rstrip("/") for e in self._entries})
        return f"CredentialStore({hosts})"

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def single(cls, registry: str, credential: Credential) -> CredentialStore:
        host, path = _split_key(registry)
        return cls([_Entry(host, path, credential)])

    def merged(self, *others: CredentialStore) -> CredentialStore:
        entries = list(self._entries)
        for other in others:
            entries.extend(other._entries)
        return CredentialStore(entries)

    def lookup(self, registry: str, repository: str = "") -> Credential | None:
        host = normalize_registry(registry)
        best: _Entry | None = None
        for entry in self._entries:
            if not _host_matches(entry.host, host):
                continue
            if entry.path and not (
                repository == entry.path or repository.startswith(entry.path + "/")
            ):
                continue
            if best is None or _specificity(entry) > _specificity(best):
                best = entry
        return best.credential if best is not None else None

    @classmethod
    def from_auths(cls, auths: Mapping[str, Any], *, source: str) -> CredentialStore:
        """From the `auths` map of a docker config (or a legacy `.dockercfg`)."""
        entries: list[_Entry] = []
        for key, value in auths.items():
            if not isinstance(value, Mapping):
                raise CredentialError(f"{source}: entry {key!r} must be an object with 'auth'")
            credential = _credential_from_auth_entry(value, key=key, source=source)
            if credential is None:
                continue  # e.g. only an identitytoken: nothing usable for Basic or token auth
            host, path = _split_key(str(key))
            entries.append(_Entry(host, path, credential))
        return cls(entries)

    @classmethod
    def from_docker_config_data(cls, data: Mapping[str, Any], *, source: str) -> CredentialStore:
        """From a parsed docker `config.json` / `.dockerconfigjson` document."""
        auths = data.get("auths", {})
        if not isinstance(auths, Mapping):
            raise CredentialError(f"{source}: 'auths' must be an object mapping registries")
        return cls.from_auths(auths, source=source)

    @classmethod
    def from_docker_config(cls, path: Path) -> CredentialStore:
        """From a docker `config.json`; a missing file means no credentials."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise CredentialError(f"cannot read docker config {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CredentialError(
                f"docker config {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})"
            ) from exc
        if not isinstance(data, Mapping):
            raise CredentialError(f"docker config {path} must be a JSON object with 'auths'")
        return cls.from_docker_config_data(data, source=f"docker config {path}")


def _specificity(entry: _Entry) -> tuple[int, int, int]:
    return ("*" not in entry.host, len(entry.path.split("/")) if entry.path else 0, len(entry.host))


def _credential_from_auth_entry(
    value: Mapping[str, Any], *, key: str, source: str
) -> Credential | None:
    where = f"{source} ({key})"
    auth = value.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialError(
                f"{source}: 'auth' of {key!r} is not base64 of 'username:password'"
            ) from exc
        username, colon, password = decoded.partition(":")
        if not colon:
            raise CredentialError(
                f"{source}: 'auth' of {key!r} decodes without ':'; expected 'username:password'"
            )
        return Credential(username=username, password=password, source=where)
    user, secret = value.get("username"), value.get("password")
    if isinstance(user, str) and isinstance(secret, str) and user:
        return Credential(username=user, password=secret, source=where)
    return None


# -- pull secrets in a folder --------------------------------------------------


def split_secret_name(name: str) -> tuple[str, str]:
    """`namespace/name` (or `name`, namespace `default`) checked against Kubernetes names."""
    namespace, slash, secret = name.partition("/")
    if not slash:
        namespace, secret = DEFAULT_NAMESPACE, name
    if not _DNS1123_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise CredentialError(
            f"pull secret {name!r}: namespace {namespace!r} is not a DNS-1123 label"
            " (lower-case letters, digits and '-', at most 63); write 'namespace/name'"
        )
    if not _DNS1123_SUBDOMAIN.fullmatch(secret) or len(secret) > 253:
        raise CredentialError(
            f"pull secret {name!r}: name {secret!r} is not a DNS-1123 subdomain"
            " (lower-case letters, digits, '-' and '.'); write 'namespace/name'"
        )
    return namespace, secret


def secret_file(secrets_dir: Path, name: str) -> Path:
    """The file holding pull secret `name`, or PullSecretNotFoundError listing what was tried."""
    namespace, secret = split_secret_name(name)
    folder = Path(secrets_dir) / namespace
    tried = [folder / f"{secret}{suffix}" for suffix in _SECRET_SUFFIXES]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise PullSecretNotFoundError(
        f"pull secret {name!r} not found: none of {', '.join(str(p) for p in tried)} exists;"
        f" export it with `kubectl get secret -n {namespace} {secret} -o yaml`"
    )


def load_pull_secret(secrets_dir: Path, name: str) -> CredentialStore:
    """Credentials from one `kubernetes.io/dockerconfigjson` secret file."""
    path = secret_file(secrets_dir, name)
    where = f"pull secret {name} ({path})"
    try:
        text = path.read_text(encoding="utf-8")
        # A secret is a few hundred bytes: the pure-Python safe loader is fast enough.
        document = yaml.safe_load(text) if path.suffix != ".json" else json.loads(text)
    except OSError as exc:
        raise CredentialError(f"{where}: cannot be read: {exc.strerror}") from exc
    except (ValueError, yaml.YAMLError) as exc:
        # Never the parser's own message: it quotes the offending line, which in a Secret
        # may be the password itself. The position is enough to find the mistake.
        raise CredentialError(
            f"{where}: cannot be read as a Secret manifest ({_where_in_text(exc)})"
        ) from None
    if not isinstance(document, Mapping):
        raise CredentialError(f"{where}: expected a Kubernetes Secret manifest (kind: Secret)")
    return credentials_from_secret(document, where=where)


def credentials_from_secret(document: Mapping[str, Any], *, where: str) -> CredentialStore:
    """A Secret (a file's manifest or the API's object) of a pull-secret type as credentials."""
    if document.get("kind", "Secret") != "Secret":
        raise CredentialError(f"{where}: expected a Kubernetes Secret manifest (kind: Secret)")
    secret_type = document.get("type")
    if secret_type == DOCKERCONFIGJSON_TYPE:
        key = ".dockerconfigjson"
    elif secret_type == DOCKERCFG_TYPE:
        key = ".dockercfg"
    else:
        raise CredentialError(
            f"{where}: type is {secret_type!r}; a pull secret has type {DOCKERCONFIGJSON_TYPE!r}"
        )
    payload = _secret_value(document, key, where=where)
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise CredentialError(f"{where}: {key} is not valid JSON") from exc
    if not isinstance(data, Mapping):
        raise CredentialError(f"{where}: {key} must be a JSON object")
    if key == ".dockercfg":
        return CredentialStore.from_auths(data, source=where)
    return CredentialStore.from_docker_config_data(data, source=where)


def _where_in_text(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{getattr(exc, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}"
    line = getattr(exc, "lineno", None)  # json.JSONDecodeError
    return f"invalid JSON at line {line}" if line else type(exc).__name__


def load_pull_secrets(secrets_dir: Path, names: Iterable[str]) -> CredentialStore:
    """Credentials from several secrets, the first named winning on equal matches."""
    return CredentialStore().merged(*(load_pull_secret(secrets_dir, n) for n in names))


def _secret_value(document: Mapping[str, Any], key: str, *, where: str) -> str:
    string_data = document.get("stringData") or {}
    if isinstance(string_data, Mapping) and isinstance(string_data.get(key), str):
        return str(string_data[key])
    data = document.get("data") or {}
    encoded = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(encoded, str):
        raise CredentialError(f"{where}: no data[{key!r}] or stringData[{key!r}]")
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise CredentialError(f"{where}: data[{key!r}] is not base64-encoded UTF-8") from exc


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

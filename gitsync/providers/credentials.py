"""Registry credentials: docker configs and Kubernetes pull secrets, for every backend.

Why a module of its own, outside any backend: the local store, the Kubernetes
backend (pull secrets read from the cluster) and the Tencent Cloud backend
(pull secrets sent with a cache) all read the same files and Secrets, by the
same rules, and none of those backends may import another. What a registry
then does with a credential (Basic, or a Bearer token bought with it) is the
local registry client's business (`providers/local/auth.py`).

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

Credential values never appear in messages or reprs: errors name where a
credential came from (a file, a secret), never what it is.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitsync.errors import PermanentError

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


def plan_credentials(
    *, docker_config: Path | None, secrets_dir: Path | None, secret_names: Iterable[str]
) -> CredentialStore:
    """What a read of a cache's images uses: the docker config's logins, then each of the
    cache's pull secrets that exists (a missing one is skipped: the build pulls without it
    too). For reads that must not fail on a secret (sizes, tag digests, tag lists)."""
    credentials = (
        CredentialStore.from_docker_config(docker_config)
        if docker_config is not None
        else CredentialStore()
    )
    if secrets_dir is None:
        return credentials
    for name in secret_names:
        try:
            credentials = credentials.merged(load_pull_secret(secrets_dir, name))
        except PullSecretNotFoundError:
            continue
    return credentials


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

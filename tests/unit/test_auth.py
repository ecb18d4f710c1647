"""Credentials from docker configs and pull secrets, WWW-Authenticate, and the token cache."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from gitsync.errors import TemporaryError
from gitsync.providers.credentials import (
    Credential,
    CredentialError,
    CredentialStore,
    PullSecretNotFoundError,
    load_pull_secret,
    load_pull_secrets,
    secret_file,
)
from gitsync.providers.local.auth import (
    Authenticator,
    TokenCache,
    TokenError,
    parse_www_authenticate,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _docker_config(tmp_path: Path, auths: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths, "credsStore": "desktop"}))
    return path


def test_docker_config_keys_are_normalised(tmp_path: Path) -> None:
    path = _docker_config(
        tmp_path,
        {
            "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpass")},
            "http://127.0.0.1:5000": {"username": "loc", "password": "p:with:colons"},
            "quay.io": {"auth": _b64("quser:qpass")},
            "ghcr.io": {"identitytoken": "only-a-token"},
        },
    )
    store = CredentialStore.from_docker_config(path)
    hub = store.lookup("docker.io", "library/nginx")
    assert hub is not None
    assert (hub.username, hub.password) == ("hubuser", "hubpass")
    assert store.lookup("registry-1.docker.io") == hub
    local = store.lookup("127.0.0.1:5000")
    assert local is not None
    assert local.password == "p:with:colons"
    assert store.lookup("127.0.0.1:5001") is None
    assert store.lookup("QUAY.IO") is not None
    assert store.lookup("ghcr.io") is None  # an identity token alone is not usable here
    assert str(path) in hub.source


def test_missing_docker_config_means_no_credentials(tmp_path: Path) -> None:
    assert len(CredentialStore.from_docker_config(tmp_path / "absent.json")) == 0


def test_broken_docker_config_says_where(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"x.io": {"auth": "not base64!"}}}')
    with pytest.raises(CredentialError, match=r"x\.io.*base64"):
        CredentialStore.from_docker_config(path)
    path.write_text("{not json")
    with pytest.raises(CredentialError, match=r"not valid JSON"):
        CredentialStore.from_docker_config(path)


def test_path_prefix_and_wildcard_pick_the_most_specific(tmp_path: Path) -> None:
    path = _docker_config(
        tmp_path,
        {
            "registry.example.com": {"auth": _b64("all:1")},
            "registry.example.com/team": {"auth": _b64("team:2")},
            "*.example.com": {"auth": _b64("wild:3")},
        },
    )
    store = CredentialStore.from_docker_config(path)

    def user(registry: str, repository: str) -> str | None:
        credential = store.lookup(registry, repository)
        return credential.username if credential else None

    assert user("registry.example.com", "team/api") == "team"
    assert user("registry.example.com", "teamx/api") == "all"
    assert user("registry.example.com", "other/api") == "all"
    assert user("mirror.example.com", "x") == "wild"
    assert user("a.b.example.com", "x") is None  # a wildcard is one label
    assert user("example.com", "x") is None


def test_credential_values_never_show_in_repr() -> None:
    credential = Credential(username="u", password="hunter2", source="somewhere")
    store = CredentialStore.single("r.io", credential)
    assert "hunter2" not in repr(credential)
    assert "hunter2" not in repr(store)
    assert credential.basic_header() == "Basic " + _b64("u:hunter2")


def _secret(data: dict[str, object], *, string: bool = False) -> dict[str, object]:
    payload = json.dumps(data)
    document: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "x"},
    }
    if string:
        document["stringData"] = {".dockerconfigjson": payload}
    else:
        document["data"] = {".dockerconfigjson": _b64(payload)}
    return document


def test_pull_secrets_in_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "team-a").mkdir()
    (tmp_path / "default").mkdir()
    (tmp_path / "team-a" / "regcred.json").write_text(
        json.dumps(_secret({"auths": {"r.example.com": {"auth": _b64("a:1")}}}))
    )
    (tmp_path / "default" / "other.yaml").write_text(
        yaml.safe_dump(_secret({"auths": {"r.example.com": {"auth": _b64("b:2")}}}, string=True))
    )
    (tmp_path / "team-a" / "legacy.yml").write_text(
        yaml.safe_dump(
            {
                "kind": "Secret",
                "type": "kubernetes.io/dockercfg",
                "data": {".dockercfg": _b64(json.dumps({"old.io": {"auth": _b64("c:3")}}))},
            }
        )
    )
    a = load_pull_secret(tmp_path, "team-a/regcred").lookup("r.example.com")
    assert a is not None
    assert a.username == "a"
    assert "team-a/regcred" in a.source
    b = load_pull_secret(tmp_path, "other").lookup("r.example.com")  # namespace "default"
    assert b is not None
    assert b.username == "b"
    legacy = load_pull_secret(tmp_path, "team-a/legacy").lookup("old.io")
    assert legacy is not None
    assert legacy.password == "3"
    both = load_pull_secrets(tmp_path, ["default/other", "team-a/regcred"])
    first = both.lookup("r.example.com")
    assert first is not None
    assert first.username == "b"  # the first named secret wins


def test_missing_and_invalid_pull_secrets(tmp_path: Path) -> None:
    with pytest.raises(PullSecretNotFoundError) as info:
        secret_file(tmp_path, "ns/absent")
    message = str(info.value)
    assert str(tmp_path / "ns" / "absent.json") in message
    assert "absent.yaml" in message
    for bad in ("../etc/passwd", "ns/../../x", "NS/name", "ns/na me"):
        with pytest.raises(CredentialError):
            secret_file(tmp_path, bad)
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "opaque.json").write_text(
        json.dumps({"kind": "Secret", "type": "Opaque", "data": {}})
    )
    with pytest.raises(CredentialError, match=r"type is 'Opaque'.*dockerconfigjson"):
        load_pull_secret(tmp_path, "ns/opaque")


def test_parse_www_authenticate() -> None:
    (bearer,) = parse_www_authenticate(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull",error="invalid_token"'
    )
    assert bearer.scheme == "bearer"
    assert bearer.get("realm") == "https://auth.example.com/token"
    assert bearer.get("service") == "registry.example.com"
    assert bearer.get("scope") == "repository:team/app:pull"
    (basic,) = parse_www_authenticate('Basic realm="Registry Realm"')
    assert basic.scheme == "basic"
    assert basic.get("realm") == "Registry Realm"
    assert parse_www_authenticate("") == []


def test_token_cache_honours_expires_in() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    key = ("https://auth/token", "svc", "repository:a:pull")
    cache.put(key, "t1", expires_in=60)
    now[0] = 159.9
    token = cache.get(key)
    assert token is not None
    assert token.value == "t1"
    now[0] = 160.0
    assert cache.get(key) is None
    cache.put(key, "t2", expires_in=60)
    cache.invalidate(key, "not-current")
    assert cache.get(key) is not None
    cache.invalidate(key, "t2")
    assert cache.get(key) is None


class _TokenEndpoint:
    """A send() stand-in for the token server: answers JSON, records requests."""

    def __init__(self, *responses: tuple[int, dict[str, object]]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return httpx.Response(status, json=body, request=request)


CHALLENGE = 'Bearer realm="https://auth.example.com/token",service="reg"'


def test_authenticator_bearer_flow_caches_per_scope_and_expires() -> None:
    now = [0.0]
    endpoint = _TokenEndpoint((200, {"token": "tok-1", "expires_in": 300}))
    credentials = CredentialStore.single(
        "reg.example.com", Credential(username="u", password="p", source="s")
    )
    auth = Authenticator(credentials=credentials, clock=lambda: now[0], send=endpoint)
    assert auth.authorization("reg.example.com", "team/app") is None  # no challenge yet
    assert auth.on_unauthorized("reg.example.com", "team/app", CHALLENGE, sent=None)
    assert auth.authorization("reg.example.com", "team/app") == "Bearer tok-1"
    assert auth.authorization("reg.example.com", "team/app") == "Bearer tok-1"
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    assert request.url.params["scope"] == "repository:team/app:pull"
    assert request.url.params["service"] == "reg"
    assert request.headers["Authorization"] == "Basic " + _b64("u:p")
    auth.authorization("reg.example.com", "team/other")  # another scope, another token
    assert len(endpoint.requests) == 2
    now[0] = 301.0
    auth.authorization("reg.example.com", "team/app")
    assert len(endpoint.requests) == 3


def test_authenticator_drops_a_rejected_token() -> None:
    endpoint = _TokenEndpoint((200, {"access_token": "stale"}), (200, {"token": "fresh"}))
    auth = Authenticator(send=endpoint)
    auth.on_unauthorized("r.io", "a", CHALLENGE, sent=None)
    assert auth.authorization("r.io", "a") == "Bearer stale"
    assert auth.on_unauthorized("r.io", "a", CHALLENGE, sent="Bearer stale")
    assert auth.authorization("r.io", "a") == "Bearer fresh"


def test_authenticator_basic_without_credentials_cannot_retry() -> None:
    auth = Authenticator(send=_TokenEndpoint((200, {})))
    assert auth.on_unauthorized("r.io", "a", 'Basic realm="x"', sent=None) is False
    assert auth.on_unauthorized("r.io", "a", None, sent=None) is False


def test_token_server_errors() -> None:
    refused = Authenticator(send=_TokenEndpoint((401, {})))
    refused.on_unauthorized("r.io", "a", CHALLENGE, sent=None)
    with pytest.raises(TokenError, match=r"refused anonymous access with HTTP 401"):
        refused.authorization("r.io", "a")
    down = Authenticator(send=_TokenEndpoint((502, {})))
    down.on_unauthorized("r.io", "a", CHALLENGE, sent=None)
    with pytest.raises(TemporaryError):
        down.authorization("r.io", "a")
    empty = Authenticator(send=_TokenEndpoint((200, {"expires_in": 5})))
    empty.on_unauthorized("r.io", "a", CHALLENGE, sent=None)
    with pytest.raises(TokenError, match="without 'token'"):
        empty.authorization("r.io", "a")

"""The registry client against a real docker-registry: resolve, platforms, auth, retries."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    BearerSetup,
    CountingTransport,
    Fault,
    FaultProxy,
    Pusher,
    RegistryProcess,
    small_layer,
)

from gitsync.errors import TemporaryError
from gitsync.imageref import parse
from gitsync.providers.credentials import (
    Credential,
    CredentialStore,
    load_pull_secret,
)
from gitsync.providers.local.auth import TokenError
from gitsync.providers.local.blobs import DigestMismatchError
from gitsync.providers.local.oci import OCI_INDEX, OCI_MANIFEST, Platform, PlatformNotFoundError
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryhttp import AuthenticationError, NotFoundError

pytestmark = pytest.mark.registry

Sleep = tuple[list[float], Callable[[float], None]]


def test_resolve_tag_keeps_exact_manifest_bytes(pusher: Pusher) -> None:
    repo = pusher.repo("plain")
    image = pusher.push_image(repo, [small_layer("r1"), small_layer("r2")])
    with RegistryClient() as client:
        resolved = client.resolve(parse(f"{pusher.registry.host}/{repo}:v1"))
    assert resolved.manifest.data == image.manifest
    assert resolved.manifest.digest == image.manifest_digest
    assert resolved.manifest.media_type == OCI_MANIFEST
    assert resolved.index is None
    assert resolved.config.digest == image.config_digest
    assert [d.digest for d in resolved.layers] == [layer.digest for layer in image.layers]


def test_multi_arch_index_picks_the_platform(pusher: Pusher) -> None:
    repo = pusher.repo("multi")
    index_digest, built = pusher.push_index(
        repo,
        [
            ("linux/amd64", [small_layer("amd")]),
            ("linux/arm64/v8", [small_layer("arm64")]),
            ("linux/arm/v7", [small_layer("armv7")]),
        ],
    )
    ref = parse(f"{pusher.registry.host}/{repo}:v1")
    with RegistryClient() as client:
        default = client.resolve(ref)
        arm64 = client.resolve(ref, platform=Platform.parse("linux/arm64"))
        arm64_v8 = client.resolve(ref, platform=Platform.parse("linux/arm64/v8"))
        arm = client.resolve(ref, platform=Platform.parse("linux/arm"))
        with pytest.raises(PlatformNotFoundError, match=r"linux/s390x.*linux/amd64"):
            client.resolve(ref, platform=Platform.parse("linux/s390x"))
    assert default.index is not None
    assert default.index.digest == index_digest
    assert default.index.media_type == OCI_INDEX
    assert default.manifest.digest == built["linux/amd64"].manifest_digest
    assert arm64.manifest.digest == built["linux/arm64/v8"].manifest_digest
    assert arm64_v8.manifest.digest == arm64.manifest.digest
    assert arm.manifest.digest == built["linux/arm/v7"].manifest_digest


def test_pull_by_digest_is_verified(pusher: Pusher) -> None:
    repo = pusher.repo("bydigest")
    image = pusher.push_image(repo, [small_layer("d1")])
    other = pusher.push_image(pusher.repo("other"), [small_layer("d2")])
    host = pusher.registry.host
    with RegistryClient() as client:
        manifest = client.get_manifest(parse(f"{host}/{repo}@{image.manifest_digest}"))
        assert manifest.data == image.manifest
        # The registry does not have `other` in this repository: a 404 naming it.
        with pytest.raises(NotFoundError, match=rf"{repo}@{other.manifest_digest}.*404"):
            client.get_manifest(parse(f"{host}/{repo}@{other.manifest_digest}"))


def test_missing_repository_is_a_permanent_not_found(registry: RegistryProcess) -> None:
    with RegistryClient() as client, pytest.raises(NotFoundError) as info:
        client.resolve(parse(f"{registry.host}/no/such-repo:v1"))
    assert "no/such-repo" in str(info.value)
    assert registry.host in str(info.value)


def _dockerconfigjson_secret(secrets_dir: Path, registry: str) -> None:
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    config = {"auths": {f"http://{registry}": {"auth": auth}}}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": "team-a"},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
    (secrets_dir / "team-a").mkdir(parents=True)
    (secrets_dir / "team-a" / "regcred.json").write_text(json.dumps(secret))


def test_basic_auth_from_a_dockerconfigjson_secret(
    tmp_path: Path, pusher: Pusher, basic_registry: RegistryProcess
) -> None:
    repo = pusher.repo("basic")
    image = pusher.push_image(repo, [small_layer("b1")])
    ref = parse(f"{basic_registry.host}/{repo}:v1")
    with RegistryClient() as anonymous, pytest.raises(AuthenticationError) as info:
        anonymous.resolve(ref)
    assert "no credentials" in str(info.value)

    _dockerconfigjson_secret(tmp_path / "secrets", basic_registry.host)
    credentials = load_pull_secret(tmp_path / "secrets", "team-a/regcred")
    transport = CountingTransport()
    with RegistryClient(credentials=credentials, transport=transport) as client:
        resolved = client.resolve(ref)
        config = client.fetch_blob_bytes(ref, resolved.config)
    assert resolved.manifest.digest == image.manifest_digest
    assert json.loads(config)["rootfs"]["diff_ids"] == [image.layers[0].diff_id]
    # One anonymous 401, then every request carries Basic auth up front.
    auths = [auth for _, _, auth in transport.requests]
    assert auths[0] is None
    assert all(a is not None and a.startswith("Basic ") for a in auths[1:])
    assert len(auths) == 3


def test_wrong_basic_password_is_rejected_without_leaking_it(
    pusher: Pusher, basic_registry: RegistryProcess
) -> None:
    repo = pusher.repo("basicbad")
    pusher.push_image(repo, [small_layer("bb")])
    wrong = CredentialStore.single(
        basic_registry.host,
        Credential(username=BASIC_USER, password="not-the-password", source="test config"),
    )
    with RegistryClient(credentials=wrong) as client, pytest.raises(AuthenticationError) as info:
        client.resolve(parse(f"{basic_registry.host}/{repo}:v1"))
    assert "test config" in str(info.value)
    assert "not-the-password" not in str(info.value)


def test_bearer_token_is_fetched_once_reused_and_renewed_after_expiry(
    pusher: Pusher, bearer_registry: BearerSetup
) -> None:
    repo = pusher.repo("bearer")
    image = pusher.push_image(repo, [small_layer("t1"), small_layer("t2")])
    host = bearer_registry.registry.host
    tokens = bearer_registry.tokens
    credentials = CredentialStore.single(
        host, Credential(username=BASIC_USER, password=BASIC_PASSWORD, source="test")
    )
    now = [1000.0]
    ref = parse(f"{host}/{repo}:v1")
    before = tokens.count()
    with RegistryClient(credentials=credentials, clock=lambda: now[0]) as client:
        resolved = client.resolve(ref)
        for layer in resolved.layers:
            client.fetch_blob_bytes(ref, layer)
        assert tokens.count() - before == 1  # one token for manifest, config and both layers
        scopes = {r["scope"] for r in tokens.requests[before:]}
        assert scopes == {f"repository:{repo}:pull"}

        now[0] += tokens.expires_in + 1  # past expires_in on the client's clock
        again = client.resolve(ref)
        assert tokens.count() - before == 2
    assert again.manifest.digest == resolved.manifest.digest == image.manifest_digest


def test_bearer_without_credentials_names_the_token_server(
    pusher: Pusher, bearer_registry: BearerSetup
) -> None:
    repo = pusher.repo("bearer-anon")
    pusher.push_image(repo, [small_layer("ta")])
    host = bearer_registry.registry.host
    with RegistryClient() as client, pytest.raises(TokenError, match=r"anonymous access.*401"):
        client.resolve(parse(f"{host}/{repo}:v1"))


def test_429_with_retry_after_then_success(pusher: Pusher, no_sleep: Sleep) -> None:
    repo = pusher.repo("ratelimit")
    image = pusher.push_image(repo, [small_layer("rl")])
    delays, sleep = no_sleep
    with FaultProxy(pusher.registry.host) as proxy:
        proxy.faults.append(
            Fault(f"/v2/{repo}/manifests/", status=429, headers={"Retry-After": "7"}, times=2)
        )
        with RegistryClient(sleep=sleep) as client:
            resolved = client.resolve(parse(f"{proxy.host}/{repo}:v1"))
        assert proxy.hits[f"/v2/{repo}/manifests/v1"] == 3
    assert resolved.manifest.digest == image.manifest_digest
    assert delays == [7.0, 7.0]  # Retry-After honoured, not the exponential backoff


def test_persistent_5xx_becomes_a_temporary_error(pusher: Pusher, no_sleep: Sleep) -> None:
    repo = pusher.repo("flaky")
    pusher.push_image(repo, [small_layer("fl")])
    delays, sleep = no_sleep
    with FaultProxy(pusher.registry.host) as proxy:
        proxy.faults.append(Fault(f"/v2/{repo}/manifests/", status=503, times=None))
        with (
            RegistryClient(sleep=sleep, max_attempts=4, backoff_base=1.0) as client,
            pytest.raises(TemporaryError, match=r"after 4 attempts: HTTP 503"),
        ):
            client.resolve(parse(f"{proxy.host}/{repo}:v1"))
        assert proxy.hits[f"/v2/{repo}/manifests/v1"] == 4
    # Exponential with jitter: each delay within [ceiling/2, ceiling] of 1, 2, 4 s.
    assert len(delays) == 3
    for delay, ceiling in zip(delays, (1.0, 2.0, 4.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_manifest_whose_bytes_do_not_match_the_requested_digest(
    pusher: Pusher, registry: RegistryProcess
) -> None:
    repo = pusher.repo("badmanifest")
    image = pusher.push_image(repo, [small_layer("bm")])
    # Rewrite the stored manifest with other bytes of the same length.
    data_path = registry.blob_data_path(image.manifest_digest)
    tampered = image.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":2 ')
    assert len(tampered) == len(image.manifest)
    data_path.write_bytes(tampered)
    with RegistryClient() as client, pytest.raises(DigestMismatchError) as info:
        client.get_manifest(parse(f"{registry.host}/{repo}@{image.manifest_digest}"))
    assert image.manifest_digest in str(info.value)


def test_scheme_rules() -> None:
    insecure = ["registry.lan:5000", "10.1.0.0/16"]
    with RegistryClient(insecure_registries=insecure) as client:
        assert client.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert client.base_url("127.3.4.5") == "http://127.3.4.5"
        assert client.base_url("localhost:5000") == "http://localhost:5000"
        assert client.base_url("[::1]:5000") == "http://[::1]:5000"
        assert client.base_url("registry.lan:5000") == "http://registry.lan:5000"
        assert client.base_url("registry.lan") == "https://registry.lan"
        assert client.base_url("10.0.0.8:5000") == "https://10.0.0.8:5000"
        assert client.base_url("10.1.2.3:5000") == "http://10.1.2.3:5000"
        assert client.base_url("docker.io") == "https://registry-1.docker.io"

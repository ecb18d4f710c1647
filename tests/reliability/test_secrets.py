"""Planted secrets must never come out of gitsync: not in logs, metrics, status, events,
exception messages, the controller record or the state database.

Every secret here is marked (`GSPLANT…`, or the TKE fixtures' `planted…`
values), so a scan can find it in any output, raw or in the encodings that
credentials travel in (base64 of `user:password`, as in docker's `auth`
field and HTTP Basic auth). Each scenario also proves that its secret was
really used: a pull with the right password succeeded, the git server saw the
token, the emulator received the registry password. A scan that finds nothing
only means something if the secrets went through the code.

Scenarios:

* `gitsync run` on the local backend, logging at debug level, with a
  Basic-auth registry (one password in a dockerconfigjson pull secret, one in
  a docker config.json, a wrong one that makes a pull fail), a git remote over
  HTTP that wants a token (and rejects it for a while), signed and forged
  webhooks; then `gitsync status` and `gitsync plan` with the token in the URL;
* `gitsync apply`, `status` and `plan` on the tencentcloud backend against the
  TKE emulator, with TENCENTCLOUD_SECRET_ID/KEY, a registry password in a pull
  secret, and a wrong secret key that makes the API refuse;
* a malformed pull secret file (a typo next to the password).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultproxy import (
    DaemonProcess,
    GitHttpServer,
    GitRepo,
    cache_doc,
    caches_by_name,
    gitsync,
    sign,
)
from oci_images import Pusher, RegistryProcess, htpasswd_available, small_layer, write_htpasswd

PASSWORD_PULL_SECRET = "GSPLANT-regpass-pullsecret-41c7e0"
PASSWORD_DOCKER_CONFIG = "GSPLANT-regpass-dockerconfig-9d02aa"
PASSWORD_WRONG = "GSPLANT-regpass-wrong-5e11bd"
PASSWORD_MALFORMED = "GSPLANT-regpass-malformed-0b7f"
GIT_TOKEN = "GSPLANT-gittoken-77ab3c91"
WEBHOOK_SECRET = "GSPLANT-whsec-1f2e8d40"
USERS = {"alice": PASSWORD_PULL_SECRET, "bob": PASSWORD_DOCKER_CONFIG}


@dataclass(frozen=True)
class Planted:
    name: str
    value: str
    user: str | None = None  # for the base64 user:password form

    def forms(self) -> dict[str, str]:
        forms = {"raw": self.value, "base64": base64.b64encode(self.value.encode()).decode()}
        if self.user is not None:
            pair = f"{self.user}:{self.value}".encode()
            forms["base64 user:password"] = base64.b64encode(pair).decode()
        return forms


def scan(outputs: Mapping[str, str | bytes], planted: list[Planted]) -> list[str]:
    """Every (secret, form, output) where a planted secret shows up."""
    found: list[str] = []
    for where, text in outputs.items():
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        for secret in planted:
            for form, value in secret.forms().items():
                if value.encode() in data:
                    found.append(f"{secret.name} ({form}) in {where}")
    return found


def data_dir_outputs(data: Path) -> dict[str, bytes]:
    """Every file gitsync wrote under its data dir, and state.db's rows as SQL text."""
    outputs: dict[str, bytes] = {}
    for path in sorted(data.rglob("*")):
        if path.is_file() and not path.is_symlink():
            outputs[f"file {path.relative_to(data)}"] = path.read_bytes()
    if (data / "state.db").exists():
        with sqlite3.connect(f"file:{data / 'state.db'}?mode=ro", uri=True) as db:
            outputs["state.db dump"] = "\n".join(db.iterdump()).encode()
    return outputs


def docker_config_json(auths: Mapping[str, tuple[str, str]]) -> str:
    return json.dumps(
        {
            "auths": {
                host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
                for host, (user, password) in auths.items()
            }
        }
    )


def write_pull_secret(secrets: Path, name: str, auths: Mapping[str, tuple[str, str]]) -> None:
    """A kubernetes.io/dockerconfigjson Secret, as `kubectl get secret -o yaml` shows it."""
    namespace, _, secret = name.partition("/")
    payload = base64.b64encode(docker_config_json(auths).encode()).decode()
    (secrets / namespace).mkdir(parents=True, exist_ok=True)
    (secrets / namespace / f"{secret}.yaml").write_text(
        "apiVersion: v1\nkind: Secret\n"
        f"metadata:\n  name: {secret}\n  namespace: {namespace}\n"
        "type: kubernetes.io/dockerconfigjson\n"
        f"data:\n  .dockerconfigjson: {payload}\n"
    )


@pytest.fixture
def auth_registry(
    tmp_path: Path, registry_storage: Path, registry: RegistryProcess
) -> Iterator[RegistryProcess]:
    """The session registry's storage behind htpasswd Basic auth with marked passwords."""
    if not htpasswd_available():
        pytest.skip("needs the 'bcrypt' Python module or apache2-utils' htpasswd")
    workdir = tmp_path / "auth-registry"
    workdir.mkdir()
    write_htpasswd(workdir / "htpasswd", USERS)
    process = RegistryProcess(
        storage=registry_storage,
        workdir=workdir,
        auth={"htpasswd": {"realm": "gitsync-secrets", "path": str(workdir / "htpasswd")}},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_no_secret_leaks_from_the_daemon_on_the_local_backend(
    tmp_path: Path, pusher: Pusher, auth_registry: RegistryProcess
) -> None:
    port = auth_registry.port
    names = [pusher.repo("private") for _ in range(3)]
    for name in names:
        pusher.push_image(name, [small_layer(name)])
    secrets = tmp_path / "secrets"
    write_pull_secret(secrets, "team/alice", {f"127.0.0.1:{port}": ("alice", PASSWORD_PULL_SECRET)})
    write_pull_secret(secrets, "team/wrong", {f"127.0.0.1:{port}": ("alice", PASSWORD_WRONG)})
    docker_config = tmp_path / "docker-config.json"
    docker_config.write_text(
        docker_config_json({f"localhost:{port}": ("bob", PASSWORD_DOCKER_CONFIG)})
    )
    (tmp_path / "git-token").write_text(GIT_TOKEN + "\n")
    (tmp_path / "webhook-secret").write_text(WEBHOOK_SECRET + "\n")

    repo = GitRepo(tmp_path / "git")
    repo.write(
        "caches.yaml",
        cache_doc(
            "via-pull-secret", [f"127.0.0.1:{port}/{names[0]}:v1"], pull_secrets=["team/alice"]
        )
        + cache_doc("via-docker-config", [f"localhost:{port}/{names[1]}:v1"])
        + cache_doc(
            "wrong-password", [f"127.0.0.1:{port}/{names[2]}:v1"], pull_secrets=["team/wrong"]
        ),
    )
    repo.commit("three private caches")
    data = tmp_path / "data"
    outputs: dict[str, str | bytes] = {}
    with GitHttpServer(repo.root, token=GIT_TOKEN) as git_server:
        url = git_server.url("remote.git")
        daemon = DaemonProcess(
            args=[
                "--repo", url,
                "--interval", "1s",
                "--log-level", "debug",
                "--git-token-file", str(tmp_path / "git-token"),
                "--webhook-secret-file", str(tmp_path / "webhook-secret"),
                "--secrets-dir", str(secrets),
                "--docker-config", str(docker_config),
            ],
            data_dir=data,
            log_path=tmp_path / "daemon.log",
        )  # fmt: skip
        try:
            daemon.start()
            status = daemon.wait_for(
                "two Ready caches and one that failed to authenticate",
                lambda s: (
                    {n: c["status"] for n, c in caches_by_name(s).items()}
                    == {
                        "via-pull-secret": "Ready",
                        "via-docker-config": "Ready",
                        "wrong-password": "Failed",
                    }
                ),
            )
            failed = caches_by_name(status)["wrong-password"]
            assert any(e["reason"] == "AuthFailed" for e in failed["events"]), failed["events"]
            assert git_server.seen_tokens[GIT_TOKEN] >= 1  # the token was really used

            # Webhooks: a signed one, forged ones, and a GitLab token that starts with the secret.
            body = json.dumps({"ref": "refs/heads/main"}).encode()
            assert daemon.hook(WEBHOOK_SECRET) == 202
            for headers in (
                {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign("guess", body)},
                {"X-GitHub-Event": "push", "X-Hub-Signature-256": WEBHOOK_SECRET},
            ):
                answer = daemon.post("/hooks/github", content=body, headers=headers)
                assert answer.status_code == 401
                outputs[f"webhook answer {headers['X-Hub-Signature-256'][:12]}"] = answer.text
            answer = daemon.post(
                "/hooks/gitlab", content=body, headers={"X-Gitlab-Token": WEBHOOK_SECRET + "x"}
            )
            assert answer.status_code == 401
            outputs["gitlab answer"] = answer.text

            # The token stops working for a while: fetches fail, with git's own messages.
            errors = daemon.metrics()["gitsync_source_fetch_errors_total"]
            git_server.token = "GSPLANT-rotated-token-not-given-to-gitsync"
            deadline = time.monotonic() + 20
            while daemon.metrics()["gitsync_source_fetch_errors_total"] < errors + 2:
                assert time.monotonic() < deadline, "fetches never failed with a rejected token"
                time.sleep(0.2)
            git_server.token = GIT_TOKEN

            outputs["GET /metrics"] = daemon.get("/metrics").text
            outputs["GET /api/v1/status"] = daemon.get("/api/v1/status").text
            outputs["GET /readyz"] = daemon.get("/readyz").text
            assert daemon.stop() == 0
        finally:
            daemon.close()
        outputs["daemon log"] = daemon.log_path.read_bytes()

        for args, expected in (
            (["status", "--format", "json"], 0),
            (["status"], 0),
            # A token in the URL, as people paste it: it is used, and must not come back out.
            (["plan", "--repo", url.replace("http://", f"http://x-access-token:{GIT_TOKEN}@"),
              "--revision", "main", "--format", "json"], 0),
            (["plan", "--repo", url.replace("http://", "http://x-access-token:wrong@"),
              "--revision", "main"], 1),
        ):  # fmt: skip
            done = gitsync(*args, "--data-dir", str(data))
            assert done.returncode == expected, f"{args}: {done.stderr}"
            outputs[f"gitsync {' '.join(args[:3])} stdout"] = done.stdout
            outputs[f"gitsync {' '.join(args[:3])} stderr"] = done.stderr
    outputs.update(data_dir_outputs(data))

    planted = [
        Planted("registry password in a pull secret", PASSWORD_PULL_SECRET, "alice"),
        Planted("registry password in docker config.json", PASSWORD_DOCKER_CONFIG, "bob"),
        Planted("wrong registry password", PASSWORD_WRONG, "alice"),
        Planted("git token", GIT_TOKEN, "x-access-token"),
        Planted("webhook secret", WEBHOOK_SECRET),
    ]
    assert scan(outputs, planted) == []
    assert len(outputs) > 15  # logs, endpoints, CLI output, every data-dir file, the database


TKE_WRONG_KEY = "plantedWrongSecretKeyGSPLANT0002"
TKE_WRONG_ID = "AKIDplantedWrongSecretIdGSPLANT3"


def test_no_secret_leaks_from_the_tencentcloud_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")
    from tke_fixtures import (  # noqa: PLC0415  # the SDK is optional
        REGION,
        REGISTRY_PASSWORD,
        SECRET_ID,
        SECRET_KEY,
        SUBNET_ID,
        VPC_ID,
        running_emulator,
    )

    secrets = tmp_path / "secrets"
    write_pull_secret(secrets, "team/tcr", {"ccr.ccs.tencentyun.com": ("robot", REGISTRY_PASSWORD)})
    repo = GitRepo(tmp_path / "git")
    repo.write(
        "caches.yaml",
        cache_doc("public", ["nginx:1.27.2"])
        + cache_doc(
            "private", ["ccr.ccs.tencentyun.com/team/api:1.0.0"], pull_secrets=["team/tcr"]
        ),
    )
    repo.commit("two cloud caches")
    data = tmp_path / "data"
    outputs: dict[str, str | bytes] = {}
    with running_emulator(monkeypatch) as emulator:
        common = [
            "--provider", "tencentcloud",
            "--region", REGION,
            "--vpc-id", VPC_ID,
            "--subnet-id", SUBNET_ID,
            "--tencentcloud-endpoint", emulator.endpoint,
            "--tencentcloud-scheme", "http",
            "--data-dir", str(data),
        ]  # fmt: skip
        good = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
        runs = {
            # The first apply creates the caches and exits 0 while they still build (Pending);
            # the second waits until they are Ready.
            "apply": (["apply", "--repo", str(repo.work), "--secrets-dir", str(secrets)], good, 0),
            "apply again": (
                ["apply", "--repo", str(repo.work), "--secrets-dir", str(secrets), "--wait"],
                good,
                0,
            ),
            "status json": (["status", "--format", "json"], good, 0),
            "plan": (["plan", "--repo", str(repo.work), "--format", "json"], good, 0),
            "apply, wrong key": (
                ["apply", "--repo", str(repo.work), "--secrets-dir", str(secrets)],
                {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": TKE_WRONG_KEY},
                1,
            ),
            "status, wrong id": (
                ["status", "--format", "json"],
                {"TENCENTCLOUD_SECRET_ID": TKE_WRONG_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY},
                None,
            ),
        }
        for label, (args, env, expected) in runs.items():
            done = gitsync(*args, *common, env=env)
            if expected is not None:
                assert done.returncode == expected, f"{label}: {done.stderr}"
            outputs[f"{label} stdout"] = done.stdout
            outputs[f"{label} stderr"] = done.stderr
        assert "AuthFailure" in outputs["apply, wrong key stderr"]  # the refusal was reported
        private = next(c for c in emulator.caches() if c["ImageCacheName"] == "private")
        sent = emulator.stored(private["ImageCacheId"])["credentials"]
        assert [c.get("Password") for c in sent] == [REGISTRY_PASSWORD]  # really sent
        outputs["DescribeImageCaches as the API answers it"] = json.dumps(emulator.caches())
    outputs.update(data_dir_outputs(data))

    planted = [
        Planted("TENCENTCLOUD_SECRET_ID", SECRET_ID),
        Planted("TENCENTCLOUD_SECRET_KEY", SECRET_KEY),
        Planted("wrong TENCENTCLOUD_SECRET_KEY", TKE_WRONG_KEY),
        Planted("wrong TENCENTCLOUD_SECRET_ID", TKE_WRONG_ID),
        Planted("registry password for TKE", REGISTRY_PASSWORD, "robot"),
    ]
    assert scan(outputs, planted) == []


def test_a_malformed_pull_secret_does_not_leak_its_password(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets" / "team"
    secrets.mkdir(parents=True)
    # A hand-written Secret with stringData and a missing comma right after the password.
    (secrets / "typo.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: typo, namespace: team}\n"
        "type: kubernetes.io/dockerconfigjson\nstringData:\n"
        '  .dockerconfigjson: {"auths": {"localhost:5000": {"username": "alice",'
        f' "password": "{PASSWORD_MALFORMED}" "email": "a@example.invalid"}}}}}}\n'
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "caches.yaml").write_text(
        cache_doc("typo", ["localhost:5000/team/api:1.0.0"], pull_secrets=["team/typo"])
    )
    data = tmp_path / "data"
    applied = gitsync(
        "apply", "--repo", str(repo), "--data-dir", str(data),
        "--secrets-dir", str(tmp_path / "secrets"),
    )  # fmt: skip
    assert applied.returncode == 1
    status = gitsync("status", "--format", "json", "--data-dir", str(data))
    events = caches_by_name(json.loads(status.stdout))["typo"]["events"]
    assert any("cannot be read as a Secret manifest" in e["message"] for e in events), events
    outputs: dict[str, str | bytes] = {
        "apply stderr": applied.stderr,
        "apply stdout": applied.stdout,
        "status": status.stdout,
        **data_dir_outputs(data),
    }
    assert scan(outputs, [Planted("malformed pull secret's password", PASSWORD_MALFORMED)]) == []

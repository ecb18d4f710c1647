"""`gitsync … --provider tencentcloud` as processes, end to end, against the TKE emulator.

Why processes: the unit and integration tests of the provider call it in-process
with test settings (tiny retry delays). This file runs the real entry point,
`python -m gitsync`, with the flags and environment a user gives it
(`--tencentcloud-endpoint 127.0.0.1:PORT --tencentcloud-scheme http`,
`TENCENTCLOUD_SECRET_ID/KEY`), so flag parsing, credential loading, the
provider's default retry figures, exit codes and what reaches the terminal are
covered too. The emulator runs in this process on a free loopback port and
checks every TC3-HMAC-SHA256 signature the SDK makes in the child process.

The module converges one git repository once (`converged`, with 30% of API calls
throttled) and the tests read it: `apply --wait` creates the caches, which are
Pending for `READY_AFTER` seconds, and polls through the throttling until they
are Ready. A call throttled more often than the provider retries fails that
`apply` (exit 1), so the loop repeats it, bounded. tests/integration/test_apply_wait.py
covers `apply` without `--wait` (exit 0 while Pending) and `--wait`'s other exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("tencentcloud.tke.v20180525", reason="needs the extra 'tencent'")

from gitrepo import git
from tke_fixtures import (  # type: ignore[attr-defined]  # tke_fixtures re-exports it
    PROXY_VARIABLES,
    REGION,
    SECRET_ID,
    SECRET_KEY,
    TkeEmulator,
)

pytestmark = pytest.mark.slow  # a dozen `python -m gitsync` processes, ~1 s each

VPC_ID = "vpc-1"
SUBNET_ID = "subnet-1"
READY_AFTER = 1.0  # seconds a create stays Pending in the emulator
THROTTLE = 0.3
# The emulator's throttling is seeded, so runs repeat. Seed 9 throttles 3 of the first
# 10 calls, as 30% should; the default seed 0 throttles only 1 of them.
THROTTLE_SEED = 9
APPLY_DEADLINE_SECONDS = 90.0
MAX_APPLIES = 20
WRONG_KEY = "wrongPlantedSecretKey0002XYZ"
WRONG_ID = "AKIDwrongPlantedSecretId0002"
# One distinct image per cache, so the cloud's choice in `match` is unambiguous.
CACHES = {
    "web": ("nginx:1.27.2", "busybox:1.36.1"),
    "api": ("registry.example.com/team/api:1.4.0",),
    "tools": ("alpine:3.20.3", "busybox:1.36.1"),
}
CACHE_DOC = """\
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: {name}
spec:
  images: [{images}]
  imageCacheSize: 20
"""


@dataclass(frozen=True)
class Converged:
    """The emulator, the repository and what the `apply` loop did to converge it."""

    tke: TkeEmulator
    repo: Path
    data: Path
    head: str
    applies: tuple[subprocess.CompletedProcess[str], ...]
    calls_during_apply: dict[str, int]
    throttled_during_apply: int


def make_repo(root: Path) -> str:
    """A git repository of CACHES, one file each under caches/; returns HEAD."""
    (root / "caches").mkdir(parents=True)
    for name, images in CACHES.items():
        text = CACHE_DOC.format(name=name, images=", ".join(images))
        (root / "caches" / f"{name}.yaml").write_text(text, encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-qm", "three caches", cwd=root)
    return git("rev-parse", "HEAD", cwd=root)


def child_env(*, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> dict[str, str]:
    """This environment without settings that would change the child's behaviour, plus the keys."""
    dropped = ("GITSYNC_", "TENCENTCLOUD_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in PROXY_VARIABLES and k.lower() != "no_proxy"
    }
    env["TENCENTCLOUD_SECRET_ID"] = secret_id
    env["TENCENTCLOUD_SECRET_KEY"] = secret_key
    return env


def gitsync(
    command: str,
    *args: str,
    tke: TkeEmulator,
    data: Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m gitsync COMMAND --provider tencentcloud …` pointed at the emulator."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gitsync",
            command,
            "--provider",
            "tencentcloud",
            "--region",
            REGION,
            "--tencentcloud-endpoint",
            tke.endpoint,
            "--tencentcloud-scheme",
            "http",
            "--data-dir",
            str(data),
            *args,
        ],
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply(
    tke: TkeEmulator, repo: Path, data: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return gitsync(
        "apply",
        "--vpc-id",
        VPC_ID,
        "--subnet-id",
        SUBNET_ID,
        "--repo",
        str(repo),
        *args,
        tke=tke,
        data=data,
        env=env,
    )


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converged]:
    root = tmp_path_factory.mktemp("tke-cli")
    repo = root / "repo"
    head = make_repo(repo)
    # No proxy variables to remove here: only the children speak to the emulator (child_env).
    with TkeEmulator(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        region=REGION,
        ready_after=READY_AFTER,
        seed=THROTTLE_SEED,
    ) as tke:
        tke.throttle(THROTTLE)
        runs: list[subprocess.CompletedProcess[str]] = []
        deadline = time.monotonic() + APPLY_DEADLINE_SECONDS
        while len(runs) < MAX_APPLIES and time.monotonic() < deadline:
            runs.append(apply(tke, repo, root / "data", "--wait", "--timeout", "60s"))
            if runs[-1].returncode == 0:
                break
        counts = dict(tke.counts())
        throttled = sum(1 for c in tke.calls if c.error == "RequestLimitExceeded")
        # The read-only commands below run unthrottled: each of their calls is retried
        # at most 5 times in one process, and no loop repeats them.
        tke.throttle(0.0)
        yield Converged(
            tke=tke,
            repo=repo,
            data=root / "data",
            head=head,
            applies=tuple(runs),
            calls_during_apply=counts,
            throttled_during_apply=throttled,
        )


def status_json(converged: Converged) -> dict[str, object]:
    done = gitsync("status", "--format", "json", tke=converged.tke, data=converged.data)
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


# ------------------------------------------------------------------------- apply


def test_apply_converges_a_git_repository_through_30_percent_throttling(
    converged: Converged,
) -> None:
    runs = converged.applies
    last = runs[-1]
    assert last.returncode == 0, f"not converged after {len(runs)} applies:\n" + "\n---\n".join(
        f"exit {r.returncode}\n{r.stdout}{r.stderr}" for r in runs
    )
    assert f"converged at {converged.head}" in last.stdout
    for earlier in runs[:-1]:  # throttled past the retries: exit 1, never a crash
        assert earlier.returncode == 1
        assert "Traceback" not in earlier.stderr
    assert "Traceback" not in last.stderr
    # The throttling was real, and it cost no duplicate: one cache per name, built once.
    assert converged.throttled_during_apply > 0
    cloud = converged.tke.caches()
    assert sorted(c["ImageCacheName"] for c in cloud) == sorted(CACHES)
    created = [
        c
        for c in converged.tke.calls
        if c.action == "CreateImageCache" and c.error is None and c.params
    ]
    assert sorted(str(c.params["ImageCacheName"]) for c in created) == sorted(CACHES)
    for call in created:
        assert call.params["VpcId"] == VPC_ID
        assert call.params["SubnetId"] == SUBNET_ID
        assert call.params["Images"] == list(CACHES[str(call.params["ImageCacheName"])])
    # apply used only the actions that read and change caches, nothing else.
    assert set(converged.calls_during_apply) <= {
        "DescribeImageCaches",
        "CreateImageCache",
        "UpdateImageCache",
        "DeleteImageCaches",
    }


def test_another_apply_after_convergence_changes_nothing(converged: Converged) -> None:
    converged.tke.reset_calls()

    done = apply(converged.tke, converged.repo, converged.data)

    assert done.returncode == 0, done.stderr
    assert f"converged at {converged.head}" in done.stdout
    # A no-change pass is describes only: one page for three caches.
    assert converged.tke.counts() == {"DescribeImageCaches": 1}


# ------------------------------------------------------------------ status, plan


def test_status_lists_the_caches_ready_and_managed(converged: Converged) -> None:
    status = status_json(converged)

    assert status["provider"] == "tencentcloud"
    assert status["appliedRevision"] == converged.head
    assert status["lastError"] is None
    caches = status["caches"]
    assert isinstance(caches, list)
    by_name = {c["name"]: c for c in caches}
    assert sorted(by_name) == sorted(CACHES)
    ids = {c["ImageCacheName"]: c["ImageCacheId"] for c in converged.tke.caches()}
    for name, images in CACHES.items():
        cache = by_name[name]
        assert cache["status"] == "Ready"
        assert cache["managed"] is True
        assert cache["id"] == ids[name]
        assert cache["images"] == list(images)
        assert cache["imageCacheSize"] == 20
        assert cache["snapshotId"]
        assert any(e["reason"] == "Created" for e in cache["events"])


def test_plan_after_convergence_has_nothing_to_do(converged: Converged) -> None:
    done = gitsync(
        "plan",
        "--repo",
        str(converged.repo),
        "--detailed-exitcode",
        tke=converged.tke,
        data=converged.data,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 to create, 0 to update, 0 to recreate, 0 to delete" in done.stdout
    assert f"{len(CACHES)} unchanged" in done.stdout


def test_plan_shows_a_change_to_the_repository_with_exit_code_2(converged: Converged) -> None:
    # A new commit in a copy, so the module's repository stays converged for the other tests.
    copy = converged.repo.parent / "repo-changed"
    git("clone", "-q", str(converged.repo), str(copy), cwd=converged.repo.parent)
    doc = CACHE_DOC.format(name="db", images="postgres:16.4")
    (copy / "caches" / "db.yaml").write_text(doc, encoding="utf-8")
    git("add", ".", cwd=copy)
    git("commit", "-qm", "a fourth cache", cwd=copy)
    converged.tke.reset_calls()

    done = gitsync(
        "plan",
        "--repo",
        str(copy),
        "--detailed-exitcode",
        "--format",
        "json",
        tke=converged.tke,
        data=converged.data,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["summary"]["create"] == 1
    assert [a["name"] for a in plan["actions"] if a["action"] == "create"] == ["db"]
    assert set(converged.tke.counts()) == {"DescribeImageCaches"}  # planning writes nothing


# ------------------------------------------------------------------------- match


def test_match_prints_the_clouds_answer_beside_its_own(converged: Converged) -> None:
    ids = {c["ImageCacheName"]: c["ImageCacheId"] for c in converged.tke.caches()}
    converged.tke.reset_calls()

    text = gitsync("match", "alpine:3.20.3", tke=converged.tke, data=converged.data)
    as_json = gitsync(
        "match", "alpine:3.20.3", "--format", "json", tke=converged.tke, data=converged.data
    )

    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"hit: tools ({ids['tools']})")
    assert f"cloud: {ids['tools']}: TKE picked tools ({ids['tools']}, Ready)" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert (report["result"], report["cache"], report["id"]) == ("hit", "tools", ids["tools"])
    assert report["cloud"]["id"] == ids["tools"]
    asked = [c.params for c in converged.tke.calls if c.action == "GetMostSuitableImageCache"]
    assert asked == [{"Images": ["alpine:3.20.3"]}] * 2


def test_match_of_an_uncached_image_is_a_miss_on_both_sides(converged: Converged) -> None:
    done = gitsync("match", "redis:7.4.1", tke=converged.tke, data=converged.data)

    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("miss:")
    assert "cloud: no cache: TKE has no image cache for 1 image" in done.stdout


# ------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class WrongCredentials:
    secret_id: str
    secret_key: str
    code: str  # the API's error code
    hint: str  # what gitsync tells the user to check


@pytest.mark.parametrize(
    "wrong",
    [
        WrongCredentials(
            SECRET_ID, WRONG_KEY, "AuthFailure.SignatureFailure", "check TENCENTCLOUD_SECRET_KEY"
        ),
        WrongCredentials(
            WRONG_ID, SECRET_KEY, "AuthFailure.SecretIdNotFound", "check TENCENTCLOUD_SECRET_ID"
        ),
    ],
    ids=["wrong-key", "wrong-id"],
)
def test_wrong_credentials_fail_clearly_without_showing_any_secret(
    converged: Converged, tmp_path: Path, wrong: WrongCredentials
) -> None:
    code, hint = wrong.code, wrong.hint
    env = child_env(secret_id=wrong.secret_id, secret_key=wrong.secret_key)
    data = tmp_path / "data"
    converged.tke.reset_calls()

    applied = apply(converged.tke, converged.repo, data, env=env)
    status = gitsync("status", tke=converged.tke, data=data, env=env)

    for done in (applied, status):
        assert done.returncode == 1, done.stdout + done.stderr
        assert code in done.stderr
        assert hint in done.stderr
        assert "RequestId" in done.stderr  # what Tencent support asks for
        assert "Traceback" not in done.stderr
    assert "gitsync apply: cannot observe the tencentcloud provider:" in applied.stderr
    assert f"gitsync status: TKE DescribeImageCaches failed: {code}" in status.stderr
    # Refused at the first call: nothing was created with bad credentials.
    assert {c.action for c in converged.tke.calls} == {"DescribeImageCaches"}
    assert all(c.error == code for c in converged.tke.calls)
    # No secret, right or wrong, on the terminal or in the data dir's record.
    stored = "".join(p.read_text(encoding="utf-8") for p in data.rglob("*") if p.is_file())
    assert code in stored  # the record keeps the error for `status` and the metrics
    shown = applied.stdout + applied.stderr + status.stdout + status.stderr + stored
    for secret in {SECRET_ID, SECRET_KEY, wrong.secret_id, wrong.secret_key}:
        assert secret not in shown


# ------------------------------------------------- the cloud documentation's samples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cache-repo" / "caches"
SAMPLES = ("cloud-doc-basic.yaml", "cloud-doc-full.yaml")
FLAG_GROUP = "sg-flagdefault1"
SPEC_GROUP = "sg-1cghhuuu"


@pytest.fixture
def fresh_tke() -> Iterator[TkeEmulator]:
    """An unthrottled emulator of its own, with quick builds, for one test."""
    with TkeEmulator(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        region=REGION,
        ready_after=0.3,
        security_groups=(FLAG_GROUP, SPEC_GROUP),
    ) as tke:
        yield tke


def samples_repo(root: Path, *, groups: bool = False) -> Path:
    """A plain folder holding the two samples as examples/ ships them (`groups`: with one added)."""
    repo = root / "repo"
    repo.mkdir()
    for name in SAMPLES:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        if groups:
            text += f"  securityGroupIds: [{SPEC_GROUP}]\n"
        (repo / name).write_text(text, encoding="utf-8")
    return repo


def apply_until_done(tke: TkeEmulator, repo: Path, data: Path) -> None:
    """`apply --security-group-id FLAG_GROUP` until it exits 0; fail (not hang) if it never does."""
    runs: list[subprocess.CompletedProcess[str]] = []
    while len(runs) < 10:
        runs.append(
            gitsync(
                "apply",
                "--vpc-id",
                VPC_ID,
                "--subnet-id",
                SUBNET_ID,
                "--security-group-id",
                FLAG_GROUP,
                "--repo",
                str(repo),
                tke=tke,
                data=data,
            )
        )
        if runs[-1].returncode == 0:
            return
        time.sleep(0.3)  # the emulator's builds finish on its own clock
    pytest.fail("apply never converged:\n" + "\n".join(r.stdout + r.stderr for r in runs))


def created(tke: TkeEmulator) -> dict[str, dict[str, object]]:
    """CreateImageCache's accepted parameters, by cache name."""
    return {
        str(c.params["ImageCacheName"]): c.params
        for c in tke.calls
        if c.action == "CreateImageCache" and c.error is None
    }


def test_the_documented_samples_send_the_eip_and_the_default_security_group(
    fresh_tke: TkeEmulator, tmp_path: Path
) -> None:
    repo = samples_repo(tmp_path)
    apply_until_done(fresh_tke, repo, tmp_path / "data")

    sent = created(fresh_tke)
    assert set(sent) == {"imagecache-sample", "imagecache-sample-full"}
    full, basic = sent["imagecache-sample-full"], sent["imagecache-sample"]
    # The second sample's annotation: '{"InternetMaxBandwidthOut":2}'.
    assert full["AutoCreateEip"] is True
    assert full["AutoCreateEipAttribute"] == {"InternetMaxBandwidthOut": 2}
    assert not {"AutoCreateEip", "AutoCreateEipAttribute", "ExistedEipId"} & set(basic)
    # Neither sample names security groups: --security-group-id is the default.
    assert full["SecurityGroupIds"] == basic["SecurityGroupIds"] == [FLAG_GROUP]

    # Applied and Ready: planning again finds nothing, and writes nothing.
    fresh_tke.reset_calls()
    again = gitsync(
        "plan", "--repo", str(repo), "--detailed-exitcode", tke=fresh_tke, data=tmp_path / "data"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 unchanged" in again.stdout
    assert set(fresh_tke.counts()) == {"DescribeImageCaches"}


def test_security_groups_in_the_samples_beat_the_flag(
    fresh_tke: TkeEmulator, tmp_path: Path
) -> None:
    repo = samples_repo(tmp_path, groups=True)
    apply_until_done(fresh_tke, repo, tmp_path / "data")

    sent = created(fresh_tke)
    assert {name: params["SecurityGroupIds"] for name, params in sent.items()} == {
        "imagecache-sample": [SPEC_GROUP],
        "imagecache-sample-full": [SPEC_GROUP],
    }
    assert sent["imagecache-sample-full"]["AutoCreateEipAttribute"] == {
        "InternetMaxBandwidthOut": 2
    }
    again = gitsync(
        "plan", "--repo", str(repo), "--detailed-exitcode", tke=fresh_tke, data=tmp_path / "data"
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_changed_eip_annotation_is_planned_as_a_recreate_that_says_why(
    fresh_tke: TkeEmulator, tmp_path: Path
) -> None:
    repo = samples_repo(tmp_path)
    data = tmp_path / "data"
    apply_until_done(fresh_tke, repo, data)
    full = repo / "cloud-doc-full.yaml"
    full.write_text(
        full.read_text(encoding="utf-8").replace(
            '{"InternetMaxBandwidthOut":2}', '{"InternetMaxBandwidthOut":5}'
        ),
        encoding="utf-8",
    )

    text = gitsync("plan", "--repo", str(repo), "--detailed-exitcode", tke=fresh_tke, data=data)
    assert text.returncode == 2, text.stdout + text.stderr
    assert "0 to update, 1 to recreate" in text.stdout
    assert "recreate imagecache-sample-full" in " ".join(text.stdout.split())
    as_json = gitsync("plan", "--repo", str(repo), "--format", "json", tke=fresh_tke, data=data)
    assert as_json.returncode == 0, as_json.stderr
    [action] = [a for a in json.loads(as_json.stdout)["actions"] if a["action"] != "noop"]
    assert action["action"] == "recreate"
    assert action["reason"].endswith("UpdateImageCache cannot change the EIP settings: recreated")
    assert action["changes"] == [
        {
            "field": "metadata.annotations.eks.tke.cloud.tencent.com/eip-attributes",
            "before": '{"InternetMaxBandwidthOut":2}',
            "after": '{"InternetMaxBandwidthOut":5}',
        }
    ]
    assert action["cost"]["oneOff"] > 0  # a new build

    fresh_tke.reset_calls()
    apply_until_done(fresh_tke, repo, data)
    counts = fresh_tke.counts()
    assert (counts["CreateImageCache"], counts["DeleteImageCaches"]) == (1, 1)
    assert "UpdateImageCache" not in counts
    assert created(fresh_tke)["imagecache-sample-full"]["AutoCreateEipAttribute"] == {
        "InternetMaxBandwidthOut": 5
    }

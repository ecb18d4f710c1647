"""gitsync's metrics, alert rules and dashboards against a real Prometheus scraping a real daemon.

promtool's unit tests (test_promtool.py) feed the rules hand-written series;
they cannot tell whether the series gitsync really exposes have the names,
labels and values the rules expect. Here the whole chain is real: `gitsync
run` (local backend) follows a bare git remote and pulls from Debian's
docker-registry; Debian's `prometheus` scrapes its /metrics every second and
evaluates manifests/prometheus/gitsync-rules.yaml every second; the test only
talks HTTP to both.

The situations are driven, not faked: a cache with `retentionDays: 1`
(expires within 3 days), a cache whose registry is unreachable (missing and
failed), an invalid commit pushed with a signed webhook, and pulls through the
daemon's `/v2/` mirror plus match requests (a storm of misses, so the hit
ratio is low while there is traffic). One thing cannot happen in a minute: a
cache that has served nobody for 7 days; for that the test backdates one
cache's creation time in the daemon's SQLite state, as an operator's week
would have.

Alerts have `for:` durations of minutes, so the real rule file is asserted
*pending*; a copy with every `for:` rewritten to 0s (generated in tmp, loaded
by the same Prometheus, marked with a `rule_copy` label) is asserted *firing*.
Each alert also stays silent for the caches it must not name.

Then every PromQL expression of the dashboards and rules (from
tests/unit/test_dashboards.py's `all_promql_expressions()`) goes through
Prometheus's `/api/v1/query`: it must not error, and it must return data,
except the few listed in EXPECTED_EMPTY with the reason why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from gitrepo import git
from oci_images import OciLayout, Pusher, RegistryProcess, free_port, small_layer

UNIT_TESTS = Path(__file__).resolve().parents[1] / "unit"
if str(UNIT_TESTS) not in sys.path:
    # all_promql_expressions() lives beside the dashboard lint; tests/ is not a package.
    sys.path.insert(0, str(UNIT_TESTS))
from test_dashboards import PromQLExpression, all_promql_expressions  # noqa: E402  # path above

pytestmark = [pytest.mark.registry, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests" / "prometheus" / "gitsync-rules.yaml"
PROMETHEUS_BINARY = "/usr/bin/prometheus"
SECRET = "whsec-prometheus-test-5d1e"
COPY_LABEL = "for-0s"  # value of the `rule_copy` label on the alerts of the for: 0s copy
UNREACHABLE_IMAGE = "127.0.0.1:9/x:v1"  # discard port: nothing listens, connection refused
MISSES = 300  # > 0.1 lookups/s over the 30 minutes GitSyncCacheHitRateLow looks at
WAIT_SECONDS = 40
T = TypeVar("T")

# Expressions that legitimately return nothing while the test runs, and why.
EXPECTED_EMPTY = {
    "gitsync-rules.yaml: gitsync.alerts alert GitSyncSourceStale": (
        "the daemon fetched its source seconds ago; stale means 3 poll intervals without one"
    ),
    "gitsync-rules.yaml: gitsync.alerts alert GitSyncReconcileFailing": (
        "needs `gitsync_build_info offset 15m`, and this Prometheus holds one minute of data"
    ),
    "gitsync-rules.yaml: gitsync.alerts alert GitSyncCacheSavedNothing": (
        "needs `gitsync_cache_desired offset 7d`, and this Prometheus holds one minute of data"
    ),
    "gitsync-overview.json: panel 26 'Time saved against cost, by cache' target C": (
        "cost per saved hour leaves out caches that saved nothing, and no hit here has"
        " recorded saved seconds (UsageMetrics.record_saved)"
    ),
}


# ------------------------------------------------------------------------------ processes


def cache_doc(name: str, *images: str, retention_days: int = 0, size_gib: int = 20) -> str:
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\nspec:\n  images: [{', '.join(images)}]\n"
        f"  imageCacheSize: {size_gib}\n  retentionDays: {retention_days}\n"
    )


def wait_until(what: str, probe: Callable[[], T | None], *, seconds: float) -> T:
    """Poll `probe` until it returns something other than None (or fail, saying what)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if the process has not exited within 20 s; returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class GitSync:
    """`gitsync run` as a process, with its bare remote and a working clone."""

    process: subprocess.Popen[bytes]
    base: str
    work: Path
    data: Path
    log: Path

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(self.base + "/api/v1/status", timeout=5).json())

    def caches(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.status()["caches"]}

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        revision = git("rev-parse", "HEAD", cwd=self.work)
        body = json.dumps({"ref": "refs/heads/main", "after": revision}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            self.base + "/hooks/github",
            content=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
            timeout=5,
        )
        assert answer.status_code == 202, answer.text
        return revision


def start_gitsync(root: Path, *, port: int) -> GitSync:
    bare, work, data = root / "remote.git", root / "work", root / "data"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=root)
    git("clone", "-q", str(bare), str(work), cwd=root)
    git("checkout", "-q", "-b", "main", cwd=work)
    secret_file = root / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    log = root / "gitsync.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gitsync", "run",
                "--repo", f"file://{bare}",
                "--branch", "main",
                "--interval", "3600s",  # every pass after the first comes from a webhook
                "--listen", f"127.0.0.1:{port}",
                "--webhook-secret-file", str(secret_file),
                "--data-dir", str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    return GitSync(process, f"http://127.0.0.1:{port}", work, data, log)


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.base}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def rules(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every rule by (group name, rule name)."""
        return {
            (group["name"], rule["name"]): rule
            for group in self.api("rules")["groups"]
            for rule in group["rules"]
        }


def for_zero_copy(rules_text: str) -> str:
    """The alert groups of the rule file with every `for:` at 0s, renamed and labelled apart."""
    rules = yaml.safe_load(rules_text)
    groups = []
    for group in rules["groups"]:
        alerts = [rule for rule in group["rules"] if "alert" in rule]
        if not alerts:
            continue  # a second copy of a recording rule would write the same series twice
        for rule in alerts:
            rule["for"] = "0s"
            rule["labels"] = {**rule.get("labels", {}), "rule_copy": COPY_LABEL}
        groups.append({**group, "name": f"{group['name']}.{COPY_LABEL}", "rules": alerts})
    assert groups, f"no alerts in {RULES}"
    return yaml.safe_dump({"groups": groups}, sort_keys=False)


def start_prometheus(root: Path, *, target: str) -> Prometheus:
    copy = root / "gitsync-rules-for-0s.yaml"
    copy.write_text(for_zero_copy(RULES.read_text(encoding="utf-8")), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES), str(copy)],
        "scrape_configs": [{"job_name": "gitsync", "static_configs": [{"targets": [target]}]}],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = root / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS_BINARY,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Prometheus(process, f"http://127.0.0.1:{port}", log)


# ------------------------------------------------------------------------------- the scene


@dataclass
class Scene:
    gitsync: GitSync
    prometheus: Prometheus
    images: dict[str, str]  # role → image reference in the test registry


def _ready(url: str, alive: Callable[[], None]) -> bool | None:
    alive()
    try:
        return True if httpx.get(url, timeout=2).status_code == 200 else None
    except httpx.TransportError:
        return None


def _pull(scene: Scene, image: str, client: httpx.Client) -> int:
    """A pull of `image`'s manifest through the daemon's mirror, as skopeo starts one."""
    name, tag = image.split("/", 1)[1].rsplit(":", 1)
    answer = client.get(
        f"{scene.gitsync.base}/v2/{name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    return answer.status_code


def _match(scene: Scene, images: list[str], client: httpx.Client) -> str:
    answer = client.post(f"{scene.gitsync.base}/api/v1/match", json={"images": images})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess) -> Iterator[Scene]:
    if not os.access(PROMETHEUS_BINARY, os.X_OK):
        pytest.skip(
            f"{PROMETHEUS_BINARY} is missing: install Debian's prometheus package"
            " (CI's .ci/run does)"
        )
    root = tmp_path_factory.mktemp("prometheus-scene")
    pusher = Pusher(layout=OciLayout(root / "layout"), registry=registry)
    images: dict[str, str] = {}
    for role in ("web", "tools"):
        repo = pusher.repo(f"prom-{role}")
        pusher.push_image(repo, [small_layer(f"prometheus-{role}")])
        images[role] = f"{registry.host}/{repo}:v1"
    images["never-cached"] = f"{registry.host}/{pusher.repo('prom-nowhere')}:v1"

    port = free_port()
    gitsync = start_gitsync(root, port=port)
    prometheus = start_prometheus(root, target=f"127.0.0.1:{port}")
    scene = Scene(gitsync, prometheus, images)
    try:
        _drive(scene)
        yield scene
    finally:
        prometheus_exit = stop(prometheus.process)
        gitsync_exit = stop(gitsync.process)
    assert gitsync_exit == 0, gitsync.log.read_text()[-3000:]
    assert prometheus_exit == 0, prometheus.log.read_text()[-3000:]


def _drive(scene: Scene) -> None:
    gitsync, images = scene.gitsync, scene.images
    caches = gitsync.work / "caches"
    caches.mkdir()
    (caches / "web.yaml").write_text(cache_doc("web", images["web"], retention_days=1))
    (caches / "tools.yaml").write_text(cache_doc("tools", images["tools"]))
    (caches / "broken.yaml").write_text(cache_doc("broken", UNREACHABLE_IMAGE))
    git("add", "-A", cwd=gitsync.work)
    git("commit", "-qm", "three caches", cwd=gitsync.work)
    git("push", "-q", "origin", "HEAD:main", cwd=gitsync.work)
    applied = git("rev-parse", "HEAD", cwd=gitsync.work)

    wait_until(
        "gitsync /readyz", lambda: _ready(gitsync.base + "/readyz", gitsync.alive), seconds=30
    )
    wanted = {"web": "Ready", "tools": "Ready", "broken": "Failed"}
    wait_until(
        f"caches {wanted}",
        lambda: True if {n: c["status"] for n, c in gitsync.caches().items()} == wanted else None,
        seconds=30,
    )

    # A week without a pod, compressed: `tools` was created 8 days ago and never matched.
    eight_days_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="seconds")
    with sqlite3.connect(gitsync.data / "state.db") as db:
        changed = db.execute(
            "UPDATE caches SET created_at = ? WHERE name = 'tools'", (eight_days_ago,)
        ).rowcount
    assert changed == 1

    # An invalid commit: never applied, and the metric says so.
    (caches / "bad.yaml").write_text(cache_doc("bad", images["web"], size_gib=5))
    invalid = gitsync.push("imageCacheSize under the minimum")

    def seen_invalid() -> dict[str, Any] | None:
        status = gitsync.status()
        return status if status["newestRevision"] == invalid else None

    status = wait_until("the invalid revision", seen_invalid, seconds=30)
    assert status["specValid"] is False
    assert status["appliedRevision"] == applied

    prometheus = scene.prometheus
    wait_until(
        "Prometheus /-/ready",
        lambda: _ready(prometheus.base + "/-/ready", prometheus.alive),
        seconds=30,
    )

    # Traffic, in two rounds: rate() sees only increases after a series' first scrape.
    with httpx.Client(timeout=5) as client:
        assert _pull(scene, images["web"], client) == 200  # hit
        assert _pull(scene, images["never-cached"], client) == 404  # miss
        assert _match(scene, [images["web"], images["never-cached"]], client) == "partial"
        wait_until(
            "the first lookups in Prometheus",
            lambda: True if len(prometheus.query("gitsync_cache_lookups_total")) == 3 else None,
            seconds=WAIT_SECONDS,
        )
        for _ in range(3):
            assert _pull(scene, images["web"], client) == 200
            assert _match(scene, [images["web"], images["never-cached"]], client) == "partial"
        for _ in range(MISSES):  # a pull storm of images no cache holds
            assert _pull(scene, images["never-cached"], client) == 404


# ----------------------------------------------------------------------------------- tests

# Per alert, the caches (label `cache`) it must name; an alert without a cache label: {None}.
EXPECTED_ALERTS: dict[str, set[str | None]] = {
    "GitSyncCacheExpiringSoon": {"web"},  # retentionDays: 1; tools never expires
    "GitSyncCacheMissing": {"broken"},
    "GitSyncCacheFailed": {"broken"},
    "GitSyncSpecInvalid": {None},
    "GitSyncCacheHitRateLow": {None},
    "GitSyncCacheUnused": {"tools"},  # web was pulled, broken is new
}
QUIET_ALERTS = ("GitSyncSourceStale", "GitSyncReconcileFailing", "GitSyncCacheSavedNothing")


def _alerting(rules: dict[tuple[str, str], dict[str, Any]], group: str, state: str) -> bool:
    for name, caches in EXPECTED_ALERTS.items():
        rule = rules[(group, name)]
        if rule["state"] != state:
            return False
        if {a["labels"].get("cache") for a in rule["alerts"]} != caches:
            return False
    return True


@pytest.fixture(scope="module")
def alerting_rules(scene: Scene) -> dict[tuple[str, str], dict[str, Any]]:
    """The rules once every expected alert is pending (real file) and firing (the copy)."""

    def settled() -> dict[tuple[str, str], dict[str, Any]] | None:
        scene.prometheus.alive()
        scene.gitsync.alive()
        rules = scene.prometheus.rules()
        pending = _alerting(rules, "gitsync.alerts", "pending")
        firing = _alerting(rules, f"gitsync.alerts.{COPY_LABEL}", "firing")
        return rules if pending and firing else None

    try:
        return wait_until("the alerts to settle", settled, seconds=WAIT_SECONDS)
    except AssertionError:
        states = {
            f"{group}/{name}": (rule["state"], [a["labels"] for a in rule["alerts"]])
            for (group, name), rule in scene.prometheus.rules().items()
            if "alerts" in rule
        }
        raise AssertionError(json.dumps(states, indent=1)) from None


def test_prometheus_scrapes_gitsync_cleanly(scene: Scene) -> None:
    targets = scene.prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets] == [
        ("gitsync", "up", "")
    ]
    up = scene.prometheus.query('up{job="gitsync"}')
    assert [float(s["value"][1]) for s in up] == [1.0]


def test_every_rule_evaluates_without_error(
    scene: Scene, alerting_rules: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for (group, name), rule in alerting_rules.items():
        assert rule["health"] == "ok", (group, name, rule.get("lastError"))
    names = {name for (group, name) in alerting_rules if group == "gitsync.alerts"}
    assert names == set(EXPECTED_ALERTS) | set(QUIET_ALERTS)


def test_alerts_of_the_rule_file_go_pending_for_the_right_caches(
    alerting_rules: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name, caches in EXPECTED_ALERTS.items():
        rule = alerting_rules[("gitsync.alerts", name)]
        assert rule["state"] == "pending", (name, rule)
        assert {a["labels"].get("cache") for a in rule["alerts"]} == caches, name
        assert {a["state"] for a in rule["alerts"]} == {"pending"}, name
    for name in QUIET_ALERTS:
        rule = alerting_rules[("gitsync.alerts", name)]
        assert (rule["state"], rule["alerts"]) == ("inactive", []), name


def test_alerts_fire_once_their_for_has_passed(
    alerting_rules: dict[tuple[str, str], dict[str, Any]],
) -> None:
    alerts = {
        name: rule["alerts"]
        for (group, name), rule in alerting_rules.items()
        if group == f"gitsync.alerts.{COPY_LABEL}"
    }
    for name in EXPECTED_ALERTS:
        assert {a["state"] for a in alerts[name]} == {"firing"}, name
        for alert in alerts[name]:
            assert alert["labels"]["severity"] in {"critical", "warning", "info"}
            assert alert["labels"]["job"] == "gitsync"
            assert alert["annotations"]["runbook_url"].endswith("#" + name.lower())
            assert "{{" not in alert["annotations"]["description"], alert
    for name in QUIET_ALERTS:
        assert alerts[name] == [], name

    (expiring,) = alerts["GitSyncCacheExpiringSoon"]
    time_left = float(expiring["value"])
    assert 0 < time_left <= 86400  # retentionDays: 1, created seconds ago
    assert "expires in" in expiring["annotations"]["description"]
    (failed,) = alerts["GitSyncCacheFailed"]
    assert failed["labels"]["status"] == "Failed"
    (invalid,) = alerts["GitSyncSpecInvalid"]
    assert "has 1 error(s)" in " ".join(invalid["annotations"]["description"].split())
    (unused,) = alerts["GitSyncCacheUnused"]
    assert unused["labels"]["last_matched"] == "never"
    assert 7 * 86400 < float(unused["value"]) < 9 * 86400
    (low,) = alerts["GitSyncCacheHitRateLow"]
    assert 0 < float(low["value"]) < 0.5


def _expressions() -> list[PromQLExpression]:
    return all_promql_expressions(rate_interval="1m")


def test_the_expression_list_covers_dashboards_and_rules() -> None:
    origins = [e.origin for e in _expressions()]
    assert any(o.startswith("gitsync-overview.json:") for o in origins)
    assert sum(o.startswith("gitsync-rules.yaml:") for o in origins) >= 14
    assert set(EXPECTED_EMPTY) <= set(origins)


@pytest.mark.parametrize("expression", _expressions(), ids=lambda e: e.origin)
def test_expression_parses_and_returns_data(
    scene: Scene,
    alerting_rules: dict[tuple[str, str], dict[str, Any]],
    expression: PromQLExpression,
) -> None:
    del alerting_rules  # only for its wait: the traffic has reached Prometheus
    result = scene.prometheus.query(expression.query)  # asserts status "success"
    if expression.origin in EXPECTED_EMPTY:
        assert result == [], f"{expression.origin}: {EXPECTED_EMPTY[expression.origin]}"
    else:
        assert result, f"{expression.origin} returned no data:\n{expression.query}"


def _values(scene: Scene, expr: str) -> dict[str, float]:
    return {
        json.dumps(sample["metric"], sort_keys=True): float(sample["value"][1])
        for sample in scene.prometheus.query(expr)
    }


def test_recorded_series_hold_the_values_the_traffic_implies(
    scene: Scene, alerting_rules: dict[tuple[str, str], dict[str, Any]]
) -> None:
    del alerting_rules
    (ratio,) = _values(scene, "gitsync:cache_lookups:hit_ratio_rate5m").values()
    assert 0 < ratio < 0.5  # 3 hits among 3 + 3 partials + 300 misses after the first scrape
    by_result = {
        json.loads(k)["result"]: v
        for k, v in _values(scene, "gitsync:cache_lookups:rate5m").items()
    }
    assert set(by_result) == {"hit", "partial", "miss"}
    assert by_result["miss"] > by_result["hit"] > 0
    p95 = _values(scene, 'gitsync:startup_seconds:p95_rate5m{result="hit"}')
    assert len(p95) == 1
    assert all(math.isfinite(v) and v > 0 for v in p95.values())
    monthly = {
        json.loads(k)["cache"]: (json.loads(k)["currency"], v)
        for k, v in _values(scene, "gitsync:cache_cost:monthly").items()
    }
    assert set(monthly) == {"web", "tools", "broken"}
    assert {currency for currency, _ in monthly.values()} == {"CNY"}  # the default price table
    assert monthly["web"][1] > 0
    assert monthly["tools"][1] > 0
    (total,) = _values(scene, "gitsync:cost:monthly").values()
    assert total == pytest.approx(sum(v for _, v in monthly.values()))
    # web was pulled: its saved-seconds series exists from its first lookup.
    saved = {
        json.loads(k)["cache"]: v
        for k, v in _values(scene, "gitsync:cache_saved_seconds:rate1h").items()
    }
    assert "web" in saved
    assert all(math.isfinite(v) and v >= 0 for v in saved.values())
    kinds = {json.loads(k)["kind"] for k in _values(scene, "gitsync_suggestions")}
    assert kinds == {"add-image", "new-cache", "bump-tag", "remove-cache", "resize"}

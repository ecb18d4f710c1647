"""Tags from a real docker-registry: list_tags' pagination, and image policies turned into bumps.

The registry is Debian's docker-registry (tests/integration/conftest.py); tags are
pushed with skopeo. The issue's case is here as it will run in the daemon: a
cache of `api:1.4.0   # gitsync: semver=~1.4`, read from YAML, with tags 1.4.0,
1.4.3 and 1.5.0 in the registry, is proposed 1.4.3 (not 1.5.0) with the digests
the registry serves for both tags.

Debian's docker-registry (distribution 2.8) answers every tag in one page,
whatever `n` and `last` say; distribution 3, Docker Hub and Harbor page them.
So pagination is tested through `Paginating`, a front that applies `n` and
`last` to the real registry's list and links the next page as distribution 3
does (`Link: </v2/<name>/tags/list?n=2&last=b>; rel="next"`), and each page is
still the real registry's answer, auth and all.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from oci_images import (
    BASIC_PASSWORD,
    BASIC_USER,
    BearerSetup,
    BuiltImage,
    Fault,
    FaultProxy,
    Pusher,
    RegistryProcess,
    free_port,
    small_layer,
)

from gitsync import specs
from gitsync.imageref import parse
from gitsync.model import CacheSpec
from gitsync.pricing import PriceTable
from gitsync.providers.credentials import Credential, CredentialStore
from gitsync.providers.local.oci import RegistryError
from gitsync.providers.local.registry import RegistryClient
from gitsync.providers.local.registryhttp import NotFoundError
from gitsync.providers.local.tags import PolicyResolver
from gitsync.suggest.edits import apply_suggestions
from gitsync.suggest.model import SuggestionKind

pytestmark = pytest.mark.registry

Sleep = tuple[list[float], Callable[[float], None]]


def _push_tags(pusher: Pusher, repo: str, tags: list[str]) -> dict[str, BuiltImage]:
    """Each tag a different image, so that each has a digest of its own."""
    return {tag: pusher.push_image(repo, [small_layer(f"{repo}-{tag}")], tag=tag) for tag in tags}


def _load(tmp_path: Path, text: str) -> tuple[CacheSpec, ...]:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "cache.yaml").write_text(text, encoding="utf-8")
    result = specs.load_repository([repo], root=repo)
    assert result.ok, result.diagnostics
    return result.caches


def _cache(name: str, images: str, *, secrets: str = "") -> str:
    pull = f"  imagePullSecrets: [{secrets}]\n" if secrets else ""
    return (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
        f"metadata:\n  name: {name}\n  annotations:\n    gitsync.io/refresh: 10s\n"
        f"spec:\n  images:{images}\n{pull}"
    )


# -- list_tags ------------------------------------------------------------------------


class _PaginatingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        front: Paginating = self.server.front  # type: ignore[attr-defined]
        url = httpx.URL(self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream = front.client.get(url.path, headers=headers)  # every tag, in one page
        link = None
        body = upstream.content
        if url.path.endswith("/tags/list") and upstream.status_code == 200:
            size = int(url.params.get("n", "1000"))
            after = url.params.get("last", "")
            rest = sorted(t for t in upstream.json()["tags"] or [] if t > after)
            page = rest[:size]
            body = json.dumps({"name": upstream.json()["name"], "tags": page}).encode()
            if len(rest) > size:
                link = f'<{url.path}?n={size}&last={page[-1]}>; rel="next"'
        self.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        if link is not None:
            self.send_header("Link", link)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Paginating:
    """A front for the real registry that pages its tag lists (see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.client = httpx.Client(base_url=f"http://{upstream}", timeout=30)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PaginatingHandler)
        self._server.front = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Paginating:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.client.close()


def test_the_registry_answers_one_page_and_list_tags_reads_it(pusher: Pusher) -> None:
    repo = pusher.repo("onepage")
    _push_tags(pusher, repo, ["a", "b", "c"])
    with FaultProxy(pusher.registry.host) as proxy, RegistryClient() as client:
        listed = client.list_tags(parse(f"{proxy.host}/{repo}"), page_size=2)
    assert sorted(listed) == ["a", "b", "c"]  # distribution 2.8 ignores n: one page
    assert [path for path in proxy.hits if "/tags/list" in path] == [f"/v2/{repo}/tags/list?n=2"]


def test_list_tags_follows_the_next_links_page_by_page(pusher: Pusher, no_sleep: Sleep) -> None:
    repo = pusher.repo("paged")
    tags = ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "latest"]
    _push_tags(pusher, repo, tags)
    delays, sleep = no_sleep
    with (
        Paginating(pusher.registry.host) as pages_front,
        FaultProxy(pages_front.host) as proxy,
        RegistryClient(sleep=sleep) as client,
    ):
        # The second page fails once with a 503: retried, not restarted or lost.
        proxy.faults.append(Fault(path_contains="last=1.1.0", status=503))
        listed = client.list_tags(parse(f"{proxy.host}/{repo}:ignored"), page_size=2)
    assert sorted(listed) == sorted(tags)
    assert len(listed) == len(set(listed))
    pages = [path for path in proxy.hits if "/tags/list" in path]
    assert len(pages) == 3  # n=2: 2 + 2 + 1
    assert all("n=2" in path for path in pages)
    assert sum("last=" in path for path in pages) == 2
    assert proxy.applied == [(next(p for p in pages if "last=1.1.0" in p), "status")]
    assert len(delays) == 1  # the 503's backoff


def test_list_tags_in_one_page_when_the_page_is_large_enough(pusher: Pusher) -> None:
    repo = pusher.repo("onepage")
    _push_tags(pusher, repo, ["a", "b", "c"])
    with FaultProxy(pusher.registry.host) as proxy, RegistryClient() as client:
        listed = client.list_tags(parse(f"{proxy.host}/{repo}"))
    assert sorted(listed) == ["a", "b", "c"]
    assert [path for path in proxy.hits if "/tags/list" in path] == [f"/v2/{repo}/tags/list?n=100"]


def test_list_tags_of_a_missing_repository_is_not_found(registry: RegistryProcess) -> None:
    with RegistryClient() as client, pytest.raises(NotFoundError) as info:
        client.list_tags(parse(f"{registry.host}/no-such-repository"))
    assert "tags of" in str(info.value)
    assert "no-such-repository" in str(info.value)


def test_list_tags_with_bearer_auth_asks_for_pull_scope(
    pusher: Pusher, bearer_registry: BearerSetup
) -> None:
    repo = pusher.repo("bearertags")
    _push_tags(pusher, repo, ["1.0.0", "1.0.1", "1.0.2"])
    host = bearer_registry.registry.host
    credentials = CredentialStore.single(
        host, Credential(username=BASIC_USER, password=BASIC_PASSWORD, source="test")
    )
    before = bearer_registry.tokens.count()
    with RegistryClient(credentials=credentials) as client:
        listed = client.list_tags(parse(f"{host}/{repo}"), page_size=1)
    assert sorted(listed) == ["1.0.0", "1.0.1", "1.0.2"]
    scopes = {r["scope"] for r in bearer_registry.tokens.requests[before:]}
    assert scopes == {f"repository:{repo}:pull"}
    assert bearer_registry.tokens.count() - before == 1  # one token serves every page


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A registry stand-in whose tag pages misbehave, as `mode` says."""

    mode = "other-origin"

    def do_GET(self) -> None:
        pages = {
            "other-origin": (
                {"tags": ["a"]},
                '<http://127.0.0.2:1/v2/x/tags/list?last=a>; rel="next"',
            ),
            "loop": ({"tags": ["a"]}, '</v2/x/tags/list?n=100>; rel="next"'),
            "not-a-list": ({"tags": "a, b"}, None),
            "null": ({"name": "x", "tags": None}, None),
        }
        body, link = pages[self.mode]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if link is not None:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("other-origin", "the next page's link leaves"),
        ("loop", "points back to a page already read"),
        ("not-a-list", "something other than a tag list"),
    ],
)
def test_misbehaving_tag_pages_are_registry_errors(
    hostile: str, mode: str, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Hostile, "mode", mode)
    with RegistryClient(max_attempts=1) as client, pytest.raises(RegistryError) as info:
        client.list_tags(parse(f"{hostile}/x"))
    assert fragment in str(info.value)


def test_a_repository_whose_tags_were_deleted_lists_none(
    hostile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Hostile, "mode", "null")
    with RegistryClient() as client:
        assert client.list_tags(parse(f"{hostile}/x")) == ()


# -- PolicyResolver ----------------------------------------------------------------------


def test_semver_policy_proposes_the_newest_patch_not_the_next_minor(
    pusher: Pusher, tmp_path: Path
) -> None:
    repo = pusher.repo("api")
    built = _push_tags(pusher, repo, ["1.4.0", "1.4.3", "1.5.0"])
    host = pusher.registry.host
    (cache,) = _load(
        tmp_path, _cache("api", f"\n    - {host}/{repo}:1.4.0   # gitsync: semver=~1.4")
    )
    with PolicyResolver() as resolver:
        (suggestion,) = resolver.suggestions([cache])
    assert suggestion.kind is SuggestionKind.BUMP_TAG
    assert suggestion.cache == "api"
    assert suggestion.policy == "semver=~1.4"
    assert suggestion.from_images == (f"{host}/{repo}:1.4.0",)
    assert suggestion.to_images == (f"{host}/{repo}:1.4.3",)
    assert suggestion.from_digests == (built["1.4.0"].manifest_digest,)
    assert suggestion.to_digests == (built["1.4.3"].manifest_digest,)
    assert (suggestion.file, suggestion.location) == ("cache.yaml", cache.location)
    assert (suggestion.saved_seconds_per_day, suggestion.monthly_cost) == (0.0, 0.0)
    assert suggestion.evidence.misses == 0
    assert "semver=~1.4" in suggestion.reason
    assert "1.4.3, newer than 1.4.0" in suggestion.reason

    # What the automation branch will commit: the line moves to 1.4.3, the marker stays,
    # and the edited tree still validates with the same policy on the new tag.
    text = (tmp_path / "repo" / "cache.yaml").read_text(encoding="utf-8")
    edited = apply_suggestions({"cache.yaml": text}, [suggestion]).changes["cache.yaml"]
    assert edited is not None
    assert f"    - {host}/{repo}:1.4.3   # gitsync: semver=~1.4\n" in edited
    assert edited.replace(":1.4.3 ", ":1.4.0 ") == text
    (after,) = _load(tmp_path, edited)
    assert after.image_policies == ((f"{host}/{repo}:1.4.3", "semver=~1.4"),)
    with PolicyResolver() as resolver:
        assert resolver.suggestions([after]) == ()  # nothing newer now


def test_up_to_date_lines_and_other_policies(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("web")
    built = _push_tags(
        pusher, repo, ["20261130-ff00", "20261201-ab12", "1.4.3", "main-a", "main-b"]
    )
    host = pusher.registry.host
    images = (
        f"\n    - {host}/{repo}:20261130-ff00   # gitsync: numerical filter=^(\\d{{8}})-"
        f"\n    - {host}/{repo}:main-b   # gitsync: alphabetical filter=^main-(.*)$"
        f"\n    - '{host}/{repo}:1.4.3@{built['1.4.3'].manifest_digest}'   # gitsync: semver=~1.4"
    )
    (cache,) = _load(tmp_path, _cache("web", images))
    with PolicyResolver(prices=PriceTable()) as resolver:
        suggestions = resolver.suggestions([cache])
    (suggestion,) = suggestions  # main-b and 1.4.3 are already the newest
    assert suggestion.to_images == (f"{host}/{repo}:20261201-ab12",)
    assert suggestion.policy == r"numerical filter=^(\d{8})-"
    assert suggestion.monthly_cost > 0  # an update rebuilds the cache: a billed build


def test_a_tag_and_digest_line_moves_both(pusher: Pusher, tmp_path: Path) -> None:
    repo = pusher.repo("pinned")
    built = _push_tags(pusher, repo, ["2.0.0", "2.1.0"])
    host = pusher.registry.host
    old = f"{host}/{repo}:2.0.0@{built['2.0.0'].manifest_digest}"
    (cache,) = _load(tmp_path, _cache("pinned", f"\n    - {old}   # gitsync: semver=^2"))
    with PolicyResolver() as resolver:
        (suggestion,) = resolver.suggestions([cache])
    new_digest = built["2.1.0"].manifest_digest
    assert suggestion.to_images == (f"{host}/{repo}:2.1.0@{new_digest}",)
    assert (suggestion.from_digests, suggestion.to_digests) == (
        (built["2.0.0"].manifest_digest,),
        (new_digest,),
    )


def test_each_repository_is_listed_once_with_the_pull_secrets_of_a_cache_that_has_them(
    pusher: Pusher, basic_registry: RegistryProcess, tmp_path: Path
) -> None:
    repo = pusher.repo("private")
    _push_tags(pusher, repo, ["1.0.0", "1.0.1"])  # the same storage serves basic_registry
    secrets = tmp_path / "secrets"
    (secrets / "team").mkdir(parents=True)
    auth = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    config = json.dumps({"auths": {basic_registry.host: {"auth": auth}}}).encode()
    (secrets / "team/regcred.yaml").write_text(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\n"
        f"data:\n  .dockerconfigjson: {base64.b64encode(config).decode()}\n"
    )
    image = f"{basic_registry.host}/{repo}:1.0.0"
    text = (
        _cache("a-without", f"\n    - {image}   # gitsync: semver=~1.0")
        + "---\n"
        + _cache("b-with", f"\n    - {image}   # gitsync: semver=^1", secrets="team/regcred")
    )
    caches = _load(tmp_path, text)
    with PolicyResolver(secrets_dir=secrets) as resolver:
        suggestions = resolver.suggestions(caches)
    # Both caches get the bump: the tags listed with b's secret serve a's line too.
    assert [(s.cache, s.to_images) for s in suggestions] == [
        ("a-without", (f"{basic_registry.host}/{repo}:1.0.1",)),
        ("b-with", (f"{basic_registry.host}/{repo}:1.0.1",)),
    ]
    assert all(BASIC_PASSWORD not in s.reason for s in suggestions)


def test_registry_failures_give_no_suggestion_and_a_logged_reason(
    pusher: Pusher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = pusher.repo("flaky")
    _push_tags(pusher, repo, ["1.0.0", "1.0.1"])
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    with FaultProxy(pusher.registry.host) as proxy:
        # Tags list fine, but the new tag's manifest is refused every time.
        proxy.faults.append(Fault(path_contains="/manifests/1.0.1", status=500, times=None))
        text = (
            _cache("down", f"\n    - {down}/{repo}:1.0.0   # gitsync: semver=^1")
            + "---\n"
            + _cache("missing", f"\n    - {proxy.host}/no-such-repo:1.0.0   # gitsync: semver=^1")
            + "---\n"
            + _cache("manifest", f"\n    - {proxy.host}/{repo}:1.0.0   # gitsync: semver=^1")
        )
        caches = _load(tmp_path, text)
        with caplog.at_level(logging.WARNING), PolicyResolver(timeout=2.0, attempts=1) as resolver:
            suggestions = resolver.suggestions(caches)
    assert suggestions == ()
    reasons = {r.cache: r.getMessage() for r in caplog.records}  # type: ignore[attr-defined]
    assert set(reasons) == {"down", "manifest", "missing"}
    assert "its tags could not be listed" in reasons["down"]
    assert "404" in reasons["missing"]
    assert "the manifest of 1.0.0 or 1.0.1 could not be read" in reasons["manifest"]
    assert "HTTP 500" in reasons["manifest"]

"""The match policy, one table row per rule of the cloud's image-cache documentation."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from gitsync.errors import ImageRefError
from gitsync.matching import MatchResult, match, parse_match_request, rank_key
from gitsync.model import CacheStatus, ObservedCache

DAY0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
DIGEST_X = "sha256:" + "a" * 64
DIGEST_Y = "sha256:" + "b" * 64


def cache(
    name: str,
    *images: str,
    status: CacheStatus = CacheStatus.READY,
    size: int = 20,
    day: int = 0,
    cache_id: str | None = None,
) -> ObservedCache:
    return ObservedCache(
        name=name,
        cache_id=cache_id or f"imc-{name[:8]:0<8}",
        status=status,
        images=images,
        image_cache_size_gib=size,
        created_at=DAY0 + timedelta(days=day),
    )


@dataclass(frozen=True)
class Case:
    images: tuple[str, ...]
    caches: tuple[ObservedCache, ...]
    result: MatchResult
    chosen: str | None
    reason: str  # the whole reason, so wording changes are deliberate
    manual: str | None = None


CASES: dict[str, Case] = {
    "exact tag ranks above the same repository under another tag, even when larger": Case(
        images=("nginx:1.27.2",),
        caches=(
            cache("old-tag", "nginx:1.26", size=20),
            cache("right-tag", "nginx:1.27.2", size=40),
        ),
        result=MatchResult.HIT,
        chosen="right-tag",
        reason="the image is exact; most exact images of 2 candidates",
    ),
    "among exact caches the smaller imageCacheSize wins, even when older": Case(
        images=("nginx:1.27.2",),
        caches=(
            cache("big", "nginx:1.27.2", size=50, day=5),
            cache("small", "nginx:1.27.2", size=20, day=1),
        ),
        result=MatchResult.HIT,
        chosen="small",
        reason="the image is exact; smallest of 2 candidates",
    ),
    "same size: the newer cache wins": Case(
        images=("nginx:1.27.2",),
        caches=(cache("older", "nginx:1.27.2", day=1), cache("newer", "nginx:1.27.2", day=2)),
        result=MatchResult.HIT,
        chosen="newer",
        reason="the image is exact; newest of 2 candidates",
    ),
    "two caches of nginx:latest created at different times: the newer one": Case(
        images=("nginx",),
        caches=(
            cache("latest-monday", "docker.io/library/nginx:latest", day=0),
            cache("latest-friday", "nginx:latest", day=4),
        ),
        result=MatchResult.HIT,
        chosen="latest-friday",
        reason="the image is exact; newest of 2 candidates",
    ),
    "a pod with several images: the cache holding all of them, though larger": Case(
        images=("nginx:1.27.2", "redis:7", "busybox:1.36"),
        caches=(
            cache("web", "nginx:1.27.2", size=20),
            cache("stack", "busybox:1.36", "redis:7", "nginx:1.27.2", size=60),
            cache("cache", "redis:7", "busybox:1.36", size=30),
        ),
        result=MatchResult.HIT,
        chosen="stack",
        reason="all 3 images exact; most exact images of 3 candidates",
    ),
    "several images, equally exact: more under another tag wins over smaller": Case(
        images=("nginx:1.27.2", "redis:7"),
        caches=(
            cache("nginx-only", "nginx:1.27.2", "busybox", size=20),
            cache("with-redis-6", "nginx:1.27.2", "redis:6", size=40),
        ),
        result=MatchResult.PARTIAL,
        chosen="with-redis-6",
        reason=(
            "1 of 2 images exact, 1 under another tag (redis:7); "
            "most images under another tag of 2 candidates"
        ),
    ),
    "one exact image beats two under another tag": Case(
        images=("nginx:1.27.2", "redis:7"),
        caches=(
            cache("other-tags", "nginx:1.26", "redis:6"),
            cache("one-exact", "nginx:1.27.2"),
        ),
        result=MatchResult.PARTIAL,
        chosen="one-exact",
        reason="1 of 2 images exact; missing: redis:7; most exact images of 2 candidates",
    ),
    "only another tag of the repository is cached: partial": Case(
        images=("nginx:1.27.2",),
        caches=(cache("web", "nginx:1.26"), cache("db", "postgres:16")),
        result=MatchResult.PARTIAL,
        chosen="web",
        reason="0 of 1 images exact, 1 under another tag (nginx:1.27.2); only candidate",
    ),
    "Failed, Pending, Updating and UpdateFailed caches are never chosen": Case(
        images=("nginx:1.27.2",),
        caches=(
            cache("failed", "nginx:1.27.2", status=CacheStatus.FAILED, size=20),
            cache("pending", "nginx:1.27.2", status=CacheStatus.PENDING, size=20),
            cache("updating", "nginx:1.27.2", status=CacheStatus.UPDATING, size=20),
            cache("update-failed", "nginx:1.27.2", status=CacheStatus.UPDATE_FAILED, size=20),
            cache("ready-but-other-tag", "nginx:1.26", size=100),
        ),
        result=MatchResult.PARTIAL,
        chosen="ready-but-other-tag",
        reason="0 of 1 images exact, 1 under another tag (nginx:1.27.2); only candidate",
    ),
    "nothing Ready holds it: a miss that names the caches that are not Ready": Case(
        images=("nginx:1.27.2", "redis:7"),
        caches=(
            cache("failed", "nginx:1.27.2", status=CacheStatus.FAILED),
            cache("pending", "redis:6", status=CacheStatus.PENDING),
            cache("unrelated", "postgres:16"),
        ),
        result=MatchResult.MISS,
        chosen=None,
        reason=(
            "no Ready cache holds any of the 2 images "
            "(failed is Failed; pending is Pending; only Ready caches serve pods)"
        ),
    ),
    "no caches at all": Case(
        images=("nginx",),
        caches=(),
        result=MatchResult.MISS,
        chosen=None,
        reason="no Ready cache holds the image",
    ),
    "the same path on another registry is another repository": Case(
        images=("nginx:1.27.2",),
        caches=(cache("mirror", "registry.example.com/library/nginx:1.27.2"),),
        result=MatchResult.MISS,
        chosen=None,
        reason="no Ready cache holds the image",
    ),
    "spellings normalise: index.docker.io/library/nginx is nginx": Case(
        images=("index.docker.io/library/nginx:1.27.2",),
        caches=(cache("web", "nginx:1.27.2"),),
        result=MatchResult.HIT,
        chosen="web",
        reason="the image is exact; only candidate",
    ),
    "a digest matches the same digest under any tag": Case(
        images=(f"nginx@{DIGEST_X}",),
        caches=(cache("pinned", f"nginx:1.27.2@{DIGEST_X}"),),
        result=MatchResult.HIT,
        chosen="pinned",
        reason="the image is exact; only candidate",
    ),
    "a tag matches a cache that pinned that tag to a digest": Case(
        images=("nginx:1.27.2",),
        caches=(cache("pinned", f"nginx:1.27.2@{DIGEST_X}"),),
        result=MatchResult.HIT,
        chosen="pinned",
        reason="the image is exact; only candidate",
    ),
    "different digests of one tag never match exactly": Case(
        images=(f"nginx:1.27.2@{DIGEST_Y}",),
        caches=(cache("pinned", f"nginx:1.27.2@{DIGEST_X}"),),
        result=MatchResult.PARTIAL,
        chosen="pinned",
        reason=(
            f"0 of 1 images exact, 1 under another tag (nginx:1.27.2@{DIGEST_Y}); only candidate"
        ),
    ),
    "a digest asked against a tag only: the digest the tag resolved to is unknown here": Case(
        images=(f"nginx@{DIGEST_X}",),
        caches=(cache("tagged", "nginx:1.27.2"),),
        result=MatchResult.PARTIAL,
        chosen="tagged",
        reason=f"0 of 1 images exact, 1 under another tag (nginx@{DIGEST_X}); only candidate",
    ),
    "an image written twice counts once": Case(
        images=("nginx", "docker.io/library/nginx:latest", "redis:7"),
        caches=(cache("both", "nginx:latest", "redis:7"),),
        result=MatchResult.HIT,
        chosen="both",
        reason="all 2 images exact; only candidate",
    ),
    "equal in every rule: name decides, whatever the provider's order": Case(
        images=("nginx:1.27.2",),
        caches=(cache("zeta", "nginx:1.27.2"), cache("alpha", "nginx:1.27.2")),
        result=MatchResult.HIT,
        chosen="alpha",
        reason="the image is exact; first by name and id of 2 candidates, equal in all else",
    ),
    "manual match is used as given although another cache is better": Case(
        images=("nginx:1.27.2", "redis:7"),
        caches=(
            cache("complete", "nginx:1.27.2", "redis:7"),
            cache("chosen", "nginx:1.27.2", size=30),
        ),
        manual="chosen",
        result=MatchResult.PARTIAL,
        chosen="chosen",
        reason="manual match: 1 of 2 images exact; missing: redis:7",
    ),
    "manual match to a cache lacking every image says which are missing": Case(
        images=("nginx:1.27.2", "redis:7"),
        caches=(cache("db", "postgres:16"),),
        manual="db",
        result=MatchResult.MISS,
        chosen="db",
        reason="manual match: 0 of 2 images exact; missing: nginx:1.27.2, redis:7",
    ),
    "manual match by imc- id": Case(
        images=("nginx:1.27.2",),
        caches=(
            cache("web", "nginx:1.27.2", cache_id="imc-aaaa1111"),
            cache("web-copy", "nginx:1.27.2", cache_id="imc-bbbb2222", size=10),
        ),
        manual="imc-aaaa1111",
        result=MatchResult.HIT,
        chosen="web",
        reason="manual match: the image is exact",
    ),
    "manual match to a Failed cache is a miss that says why": Case(
        images=("nginx:1.27.2",),
        caches=(
            cache("broken", "nginx:1.27.2", status=CacheStatus.FAILED, cache_id="imc-broken01"),
        ),
        manual="broken",
        result=MatchResult.MISS,
        chosen="broken",
        reason=(
            "manual match: cache broken (imc-broken01) is Failed, not Ready, so it serves no pod"
            " (it would hold 1 of 1 images exact)"
        ),
    ),
    "manual match to a cache that does not exist": Case(
        images=("nginx:1.27.2",),
        caches=(cache("web", "nginx:1.27.2"), cache("db", "postgres:16")),
        manual="imc-nothere1",
        result=MatchResult.MISS,
        chosen=None,
        reason="manual match: no cache is named or has id 'imc-nothere1' (caches: db, web)",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_match_policy(case: Case) -> None:
    decision = match(case.images, case.caches, manual=case.manual)

    assert decision.result is case.result
    assert decision.cache == case.chosen
    assert decision.reason == case.reason
    assert decision.manual is (case.manual is not None)
    if case.chosen is not None:
        chosen = next(c for c in case.caches if c.name == case.chosen)
        assert decision.cache_id == chosen.cache_id
    else:
        assert decision.cache_id is None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_answer_does_not_depend_on_the_order_caches_are_listed(case: Case) -> None:
    answers = {
        (d.result, d.cache, d.reason, d.candidates)
        for order in itertools.permutations(case.caches)
        for d in [match(case.images, order, manual=case.manual)]
    }
    assert len(answers) == 1


def test_json_has_exactly_the_designed_shape_and_ranks_every_candidate() -> None:
    caches = (
        cache("stack", "nginx:1.27.2", "redis:7", size=40, cache_id="imc-stack001", day=3),
        cache("web", "nginx:1.27.2", size=20, cache_id="imc-web00001", day=2),
        cache("web-big", "nginx:1.27.2", size=30, cache_id="imc-webbig01", day=4),
        cache("redis6", "redis:6", size=20, cache_id="imc-redis601"),
        cache("unrelated", "postgres:16"),
        cache("failed", "nginx:1.27.2", "redis:7", status=CacheStatus.FAILED, size=20),
    )
    decision = match(["nginx:1.27.2", "redis:7"], caches)

    document = json.loads(json.dumps(decision.to_json()))
    assert document == {
        "result": "hit",
        "cache": "stack",
        "id": "imc-stack001",
        "reason": "all 2 images exact; most exact images of 4 candidates",
        "candidates": [
            {
                "name": "stack",
                "exact": 2,
                "partial": 0,
                "imageCacheSize": 40,
                "createdAt": "2026-11-23T03:00:00Z",
            },
            {
                "name": "web",
                "exact": 1,
                "partial": 0,
                "imageCacheSize": 20,
                "createdAt": "2026-11-22T03:00:00Z",
            },
            {
                "name": "web-big",
                "exact": 1,
                "partial": 0,
                "imageCacheSize": 30,
                "createdAt": "2026-11-24T03:00:00Z",
            },
            {
                "name": "redis6",
                "exact": 0,
                "partial": 1,
                "imageCacheSize": 20,
                "createdAt": "2026-11-20T03:00:00Z",
            },
        ],
    }
    assert decision.exact_images == ("nginx:1.27.2", "redis:7")
    assert decision.missing_images == ()


def test_partial_decision_partitions_the_images_as_written() -> None:
    caches = (cache("web", "nginx:1.26", "docker.io/library/redis:7"),)
    decision = match(["nginx:1.27.2", "redis:7", "busybox"], caches)

    assert decision.result is MatchResult.PARTIAL
    assert decision.exact_images == ("redis:7",)
    assert decision.partial_images == ("nginx:1.27.2",)
    assert decision.missing_images == ("busybox",)
    assert decision.images == ("nginx:1.27.2", "redis:7", "busybox")


def test_a_cache_created_at_unknown_time_ranks_as_the_oldest() -> None:
    unknown = ObservedCache(
        name="a-unknown",
        cache_id="imc-unknown1",
        status=CacheStatus.READY,
        images=("nginx",),
        created_at=None,
    )
    known = cache("b-known", "nginx", day=0)
    decision = match(["nginx"], [unknown, known])

    assert decision.cache == "b-known"
    assert decision.candidates[1].to_json()["createdAt"] is None
    assert rank_key(known) < rank_key(unknown)


def test_a_cache_image_that_does_not_parse_matches_nothing() -> None:
    decision = match(["nginx"], [cache("odd", "Not A Reference", "nginx")])
    assert decision.result is MatchResult.HIT


@pytest.mark.parametrize(
    ("images", "error"),
    [
        (["Nginx:1.27"], ImageRefError),
        (["nginx:"], ImageRefError),
        ([], ValueError),
        ("nginx", TypeError),
    ],
)
def test_bad_requests_raise_with_the_reason(images: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        match(images, [cache("web", "nginx")])  # type: ignore[arg-type]  # wrong types on purpose


def test_parse_match_request_takes_images_and_an_optional_cache() -> None:
    assert parse_match_request({"images": ["nginx", "redis:7"]}) == (("nginx", "redis:7"), None)
    assert parse_match_request({"images": ["nginx"], "cache": "imc-aaaa1111"}) == (
        ("nginx",),
        "imc-aaaa1111",
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, '"images" must be a non-empty list'),
        ({"images": []}, '"images" must be a non-empty list'),
        ({"images": "nginx"}, '"images" must be a non-empty list'),
        ({"images": ["nginx", 3]}, '"images" must be a non-empty list'),
        ({"images": ["nginx"] * 257}, "at most 256"),
        ({"images": ["nginx"], "cache": ""}, '"cache" must be a cache name'),
        ({"images": ["nginx"], "cache": 7}, '"cache" must be a cache name'),
        ({"images": ["nginx"], "caches": "web"}, "unknown field"),
    ],
)
def test_parse_match_request_says_what_would_be_valid(
    body: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_match_request(body)

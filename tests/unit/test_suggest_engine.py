"""The suggest engine's rules, each with its edges, and properties over random evidence."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitsync import pricing, sizing
from gitsync.imageref import normalize, parse
from gitsync.model import (
    ActionKind,
    CacheSpec,
    CacheStatus,
    ObservedCache,
    SourceLocation,
)
from gitsync.observations.model import CacheUse, Evidence, ImageEvidence, StartGroup
from gitsync.pricing import PriceTable
from gitsync.sizing import ImageFacts, ImageOutcome, LayerFacts, SizeModel, Unresolved
from gitsync.suggest.engine import rank_key, suggest
from gitsync.suggest.model import (
    Suggestion,
    SuggestionEvidence,
    SuggestionKind,
    SuggestOptions,
)

GIB = 1024**3
DAY = 86400.0
NOW = 1_800_000_000.0
WEEK = 7 * DAY
SINCE = NOW - WEEK
OPTIONS = SuggestOptions(now=NOW)
PRICES = PriceTable()
# Round figures: usable 90 %, 20 % headroom -> 0.72 GiB of images per GiB of cache;
# an unknown layer expands 2× (low) to 4× (high), no extra for file-system blocks.
MODEL = SizeModel(
    low_ratio=2.0, high_ratio=4.0, disk_factor=1.0, usable_fraction=0.9, min_headroom=0.2
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

Kind = SuggestionKind


def ie(
    image: str,
    *,
    hits: int = 0,
    partials: int = 0,
    misses: int = 0,
    pods: int | None = None,
    seconds: float | None = None,
    last_at: float = NOW - 60,
    first_at: float = SINCE + 60,
    caches: tuple[str, ...] = (),
) -> ImageEvidence:
    """An image's evidence; `seconds` is the mean of its (all timed) misses."""
    timed = misses if seconds is not None else 0
    return ImageEvidence(
        image=normalize(image),
        hits=hits,
        partials=partials,
        misses=misses,
        pods=hits + partials + misses if pods is None else pods,
        miss_seconds=(seconds or 0.0) * timed,
        timed_misses=timed,
        first_at=first_at,
        last_at=last_at,
        caches=caches,
    )


def group(*images: str, count: int = 1) -> StartGroup:
    return StartGroup(images=frozenset(normalize(i) for i in images), count=count)


def evidence(
    *images: ImageEvidence,
    groups: Sequence[StartGroup] = (),
    caches: Mapping[str, CacheUse] | None = None,
    first_at: float | None = SINCE - DAY,
) -> Evidence:
    return Evidence(
        since=SINCE,
        until=NOW,
        images=tuple(images),
        caches=dict(caches or {}),
        groups=tuple(groups),
        lookups=sum(i.hits + i.partials + i.misses for i in images),
        first_at=first_at,
    )


def spec(
    name: str, *images: str, size: int = 20, path: str | None = None, prune: bool = True
) -> CacheSpec:
    return CacheSpec(
        name=name,
        images=images,
        image_cache_size_gib=size,
        prune=prune,
        location=SourceLocation(path or f"caches/{name}.yaml", 1, 1),
    )


def ready(
    name: str,
    *images: str,
    size: int = 20,
    created: float = SINCE - DAY,
    status: CacheStatus = CacheStatus.READY,
    prune: bool = True,
    content: int | None = None,
) -> ObservedCache:
    return ObservedCache(
        name=name,
        cache_id=f"imc-{name}",
        status=status,
        images=images,
        image_cache_size_gib=size,
        created_at=datetime.fromtimestamp(created, UTC),
        prune=prune,
        content_bytes=content,
        owner="gitsync",
    )


def run(
    ev: Evidence,
    desired: Sequence[CacheSpec] = (),
    observed: Sequence[ObservedCache] = (),
    *,
    options: SuggestOptions = OPTIONS,
    sizes: Mapping[str, ImageOutcome] | None = None,
    policy_bumps: Sequence[Suggestion] = (),
) -> tuple[Suggestion, ...]:
    return suggest(
        evidence=ev,
        desired=desired,
        observed=observed,
        prices=PRICES,
        options=options,
        sizes=sizes,
        size_model=MODEL,
        policy_bumps=policy_bumps,
    )


def facts(compressed_gib: float) -> ImageFacts:
    digest = f"sha256:{abs(hash(compressed_gib)):064x}"[:71]
    return ImageFacts(layers=(LayerFacts(digest, round(compressed_gib * GIB)),))


def only(suggestions: tuple[Suggestion, ...], kind: SuggestionKind) -> Suggestion:
    found = [s for s in suggestions if s.kind is kind]
    assert len(found) == 1, suggestions
    return found[0]


# ------------------------------------------------------------------ new-cache, min_misses


def test_nothing_below_min_misses_and_a_new_cache_at_it() -> None:
    assert run(evidence(ie("redis:7", misses=2))) == ()
    (s,) = run(evidence(ie("redis:7", misses=3)))
    assert s.kind is Kind.NEW_CACHE
    assert s.images == ("docker.io/library/redis:7",)
    assert s.cache == "redis"
    assert s.evidence == SuggestionEvidence(misses=3, pods=3)


def test_min_misses_is_an_option() -> None:
    options = SuggestOptions(now=NOW, min_misses=1)
    assert [s.kind for s in run(evidence(ie("redis:7", misses=1)), options=options)] == [
        Kind.NEW_CACHE
    ]


def test_partial_of_a_repository_no_desired_cache_holds_counts_as_a_miss() -> None:
    # The provider's cache "old" (not in Git any more) served partials: still unserved.
    (s,) = run(evidence(ie("redis:7", misses=2, partials=1, caches=("old",))))
    assert s.kind is Kind.NEW_CACHE
    assert s.evidence.partials == 1


def test_hits_do_not_count_toward_min_misses() -> None:
    assert run(evidence(ie("redis:7", hits=10, misses=2))) == ()


def test_an_image_a_desired_cache_holds_is_never_suggested_even_if_it_missed() -> None:
    # The cache may still be building: nothing to change in Git.
    ev = evidence(ie("nginx:1.27", misses=9))
    assert run(ev, [spec("web", "nginx:1.27")]) == ()
    # Spelled differently in Git, the same image.
    assert run(ev, [spec("web", "docker.io/library/nginx:1.27")]) == ()


def test_an_image_with_no_group_gets_its_own_cache_and_the_reason_says_so() -> None:
    (s,) = run(evidence(ie("redis:7", misses=3)))
    assert "no start-group information" in s.reason


def test_an_image_always_started_alone_gets_its_own_cache() -> None:
    (s,) = run(evidence(ie("redis:7", misses=3), groups=[group("redis:7", count=3)]))
    assert s.kind is Kind.NEW_CACHE
    assert "no image it starts with is in a cache" in s.reason


def test_images_started_together_with_no_cache_become_one_new_cache() -> None:
    ev = evidence(
        ie("team/api:2", misses=4),
        ie("redis:7", misses=5),
        ie("busybox:1", misses=3),
        groups=[group("team/api:2", "redis:7", count=3), group("busybox:1", count=3)],
    )
    result = run(ev)
    # Equal value (no timing): by name.
    assert [(s.kind, s.cache, s.images) for s in result] == [
        (Kind.NEW_CACHE, "busybox", ("docker.io/library/busybox:1",)),
        # Named after the most missed image, which comes first.
        (Kind.NEW_CACHE, "redis", ("docker.io/library/redis:7", "docker.io/team/api:2")),
    ]
    assert "started together 3 times" in result[1].reason
    # Starts that pulled either image, each counted once; more than one image's pulls.
    assert result[1].evidence.pods == 5


def test_groups_join_transitively() -> None:
    # a+b start together and b+c: a pod uses one cache, so all three share one.
    ev = evidence(
        ie("a:1", misses=3),
        ie("b:1", misses=3),
        ie("c:1", misses=3),
        groups=[group("a:1", "b:1"), group("b:1", "c:1")],
    )
    (s,) = run(ev)
    assert len(s.images) == 3


def test_group_partner_below_min_misses_stays_out() -> None:
    ev = evidence(ie("a:1", misses=3), ie("b:1", misses=2), groups=[group("a:1", "b:1", count=2)])
    (s,) = run(ev)
    assert s.images == ("docker.io/library/a:1",)


# ------------------------------------------------------------------------- add-image


def test_missed_image_goes_into_the_cache_its_start_partners_use() -> None:
    ev = evidence(
        ie("web/app:3", hits=6),
        ie("redis:7", misses=4),
        groups=[group("web/app:3", "redis:7", count=4)],
        caches={"web": CacheUse("web", hits=6)},
    )
    (s,) = run(ev, [spec("web", "web/app:3"), spec("other", "nginx:1")])
    assert s.kind is Kind.ADD_IMAGE
    assert s.cache == "web"
    assert s.images == ("docker.io/library/redis:7",)
    assert s.file == "caches/web.yaml"
    assert s.location == SourceLocation("caches/web.yaml", 1, 1)
    assert "started together with images cache web holds 4 times" in s.reason


def test_several_images_for_one_cache_are_one_suggestion() -> None:
    ev = evidence(
        ie("web/app:3", hits=6),
        ie("redis:7", misses=4),
        ie("memcached:1", misses=3),
        groups=[group("web/app:3", "redis:7", "memcached:1", count=3)],
    )
    (s,) = run(ev, [spec("web", "web/app:3")])
    assert s.kind is Kind.ADD_IMAGE
    assert s.images == ("docker.io/library/memcached:1", "docker.io/library/redis:7")


def test_partner_held_under_another_tag_still_names_the_cache() -> None:
    # The pod partial-matched web (app:2 against app:1): it used web, so redis belongs there.
    ev = evidence(
        ie("web/app:2", partials=1, caches=("web",)),
        ie("redis:7", misses=3),
        groups=[group("web/app:2", "redis:7", count=3)],
    )
    result = run(ev, [spec("web", "web/app:1")])
    assert [(s.kind, s.cache) for s in result] == [(Kind.ADD_IMAGE, "web")]


def test_an_image_assigned_in_one_round_pulls_its_partners_in_the_next() -> None:
    ev = evidence(
        ie("web/app:3", hits=3),
        ie("b:1", misses=3),
        ie("a:1", misses=3),
        groups=[group("a:1", "b:1"), group("b:1", "web/app:3")],
    )
    (s,) = run(ev, [spec("web", "web/app:3")])
    assert s.kind is Kind.ADD_IMAGE
    assert s.images == ("docker.io/library/a:1", "docker.io/library/b:1")


def test_most_starts_win_and_a_tie_goes_by_name() -> None:
    base = [ie("x/one:1", hits=5), ie("x/two:1", hits=5), ie("redis:7", misses=5)]
    caches = [spec("zeta", "x/one:1"), spec("alpha", "x/two:1")]
    more_zeta = evidence(
        *base, groups=[group("x/one:1", "redis:7", count=3), group("x/two:1", "redis:7", count=2)]
    )
    assert run(more_zeta, caches)[0].cache == "zeta"
    tie = evidence(
        *base, groups=[group("x/one:1", "redis:7", count=2), group("x/two:1", "redis:7", count=2)]
    )
    assert run(tie, caches)[0].cache == "alpha"


# -------------------------------------------------------------------------- bump-tag


def test_pods_running_another_tag_move_the_cache_to_it() -> None:
    ev = evidence(
        ie("app:1.4"),
        ie("app:1.5", partials=3, caches=("web",)),
        caches={"web": CacheUse("web", partials=3)},
    )
    (s,) = run(ev, [spec("web", "app:1.4", "redis:7")])
    assert s.kind is Kind.BUMP_TAG
    assert s.cache == "web"
    assert s.from_images == ("docker.io/library/app:1.4",)
    assert s.to_images == ("docker.io/library/app:1.5",)
    assert s.images == ("docker.io/library/app:1.5", "docker.io/library/redis:7")
    assert s.file == "caches/web.yaml"
    assert s.evidence.partials == 3
    assert "which got no hit" in s.reason


def test_bump_needs_min_misses_partials_and_misses_together() -> None:
    desired = [spec("web", "app:1.4")]
    assert run(evidence(ie("app:1.5", partials=1, misses=1)), desired) == ()
    (s,) = run(evidence(ie("app:1.5", partials=1, misses=2)), desired)
    assert s.kind is Kind.BUMP_TAG


def test_old_tag_still_hit_adds_the_new_tag_beside_it() -> None:
    ev = evidence(ie("app:1.4", hits=2), ie("app:1.5", partials=3, caches=("web",)))
    (s,) = run(ev, [spec("web", "app:1.4")])
    assert s.kind is Kind.ADD_IMAGE
    assert s.images == ("docker.io/library/app:1.5",)
    assert "still got 2 hits" in s.reason
    assert "rather than replacing it" in s.reason


def test_old_tag_hit_only_before_the_new_tag_appeared_is_bumped() -> None:
    # The workload moved on: the old tag's last hit came before the new tag's first pull.
    old = ie("app:1.4", hits=2, last_at=SINCE + 3600)
    new = ie("app:1.5", partials=3, first_at=SINCE + 7200, caches=("web",))
    (s,) = run(evidence(old, new), [spec("web", "app:1.4")])
    assert s.kind is Kind.BUMP_TAG
    assert s.from_images == ("docker.io/library/app:1.4",)
    assert s.to_images == ("docker.io/library/app:1.5",)


def test_several_new_tags_the_most_pulled_wins() -> None:
    ev = evidence(ie("app:1.5", partials=3), ie("app:1.6", partials=5))
    (s,) = run(ev, [spec("web", "app:1.4")])
    assert s.to_images == ("docker.io/library/app:1.6",)
    assert "app:1.5 ×3" in s.reason


def test_several_new_tags_equally_pulled_the_most_recent_wins() -> None:
    ev = evidence(
        ie("app:1.5", partials=3, last_at=NOW - 10), ie("app:1.6", partials=3, last_at=NOW - 99)
    )
    (s,) = run(ev, [spec("web", "app:1.4")])
    assert s.to_images == ("docker.io/library/app:1.5",)


def test_bump_only_in_the_cache_that_served_the_partials() -> None:
    ev = evidence(ie("app:1.5", partials=4, caches=("web",)))
    result = run(ev, [spec("web", "app:1.4"), spec("batch", "app:1.3")])
    assert [(s.kind, s.cache) for s in result] == [(Kind.BUMP_TAG, "web")]


def test_bump_in_every_cache_of_the_repository_when_the_evidence_names_none() -> None:
    ev = evidence(ie("app:1.5", misses=4))
    result = run(ev, [spec("web", "app:1.4"), spec("batch", "app:1.3")])
    assert sorted((s.kind, s.cache) for s in result) == [
        (Kind.BUMP_TAG, "batch"),
        (Kind.BUMP_TAG, "web"),
    ]


def test_a_cache_holding_two_tags_bumps_the_one_without_hits() -> None:
    ev = evidence(ie("app:1.3", hits=4), ie("app:1.5", partials=3))
    (s,) = run(ev, [spec("web", "app:1.3", "app:1.4")])
    assert s.kind is Kind.BUMP_TAG
    assert s.from_images == ("docker.io/library/app:1.4",)


def test_bump_and_group_adds_to_one_cache_are_one_add_image() -> None:
    ev = evidence(
        ie("app:1.4", hits=1),
        ie("app:1.5", partials=3, caches=("web",)),
        ie("redis:7", misses=3),
        groups=[group("app:1.5", "redis:7", count=3)],
    )
    (s,) = run(ev, [spec("web", "app:1.4")])
    assert s.kind is Kind.ADD_IMAGE
    assert s.images == ("docker.io/library/app:1.5", "docker.io/library/redis:7")
    assert "still got 1 hit" in s.reason
    assert "started together" in s.reason


# ---------------------------------------------------------------------- remove-cache


def idle() -> tuple[list[CacheSpec], list[ObservedCache]]:
    return [spec("old", "legacy:1", size=50)], [ready("old", "legacy:1", size=50)]


def test_a_cache_ready_all_window_without_a_hit_is_removed() -> None:
    desired, observed = idle()
    (s,) = run(evidence(), desired, observed)
    assert s.kind is Kind.REMOVE_CACHE
    assert s.cache == "old"
    assert s.saved_seconds_per_day == 0.0
    expected = pricing.action_cost(
        ActionKind.DELETE, desired=None, observed=observed[0], prices=PRICES
    )
    assert s.monthly_cost == pytest.approx(expected.monthly)
    assert s.monthly_cost < 0
    assert s.images == ("docker.io/library/legacy:1",)
    assert s.file == "caches/old.yaml"
    assert "Ready for the whole 7 days" in s.reason


def test_no_removal_when_the_store_does_not_reach_back_to_the_window_start() -> None:
    desired, observed = idle()
    assert run(evidence(first_at=SINCE + 1), desired, observed) == ()
    assert run(evidence(first_at=None), desired, observed) == ()
    assert [s.kind for s in run(evidence(first_at=SINCE), desired, observed)] == [Kind.REMOVE_CACHE]


def test_no_removal_of_a_cache_created_inside_the_window_or_not_ready() -> None:
    desired, _ = idle()
    assert run(evidence(), desired, [ready("old", created=SINCE + 1)]) == ()
    assert [s.kind for s in run(evidence(), desired, [ready("old", created=SINCE)])] == [
        Kind.REMOVE_CACHE
    ]
    assert run(evidence(), desired, [ready("old", status=CacheStatus.UPDATING)]) == ()
    assert run(evidence(), desired, []) == ()
    unknown_age = replace(ready("old"), created_at=None)
    assert run(evidence(), desired, [unknown_age]) == ()


def test_no_removal_after_a_hit_or_a_partial() -> None:
    desired, observed = idle()
    assert run(evidence(caches={"old": CacheUse("old", hits=1)}), desired, observed) == ()
    assert run(evidence(caches={"old": CacheUse("old", partials=1)}), desired, observed) == ()


def test_no_removal_when_pruning_is_disabled_in_git_or_on_the_provider() -> None:
    desired, observed = idle()
    assert run(evidence(), [replace(desired[0], prune=False)], observed) == ()
    assert run(evidence(), desired, [replace(observed[0], prune=False)]) == ()


def test_no_removal_of_a_cache_another_suggestion_changes() -> None:
    ev = evidence(ie("legacy:2", misses=3))
    desired, observed = idle()
    assert [s.kind for s in run(ev, desired, observed)] == [Kind.BUMP_TAG]


# ----------------------------------------------------------------------------- sizes


def test_new_cache_size_is_what_the_size_check_asks_for() -> None:
    ev = evidence(ie("redis:7", misses=3))
    (s,) = run(ev, sizes={normalize("redis:7"): facts(10)})
    # 10 GiB compressed kept + 40 GiB expanded (4×) = 50 GiB; 50 / 0.72 -> 70 GiB.
    assert s.to_size_gib == 70
    fit = sizing.check_cache(
        CacheSpec(name="x", images=s.images), {s.images[0]: facts(10)}, model=MODEL
    )
    assert s.to_size_gib == MODEL.size_for(fit.needed_high)
    assert "50.0 GiB on disk" in s.size_note


def test_new_cache_shared_layers_count_once() -> None:
    shared = facts(10)
    ev = evidence(ie("a:1", misses=3), ie("b:1", misses=3), groups=[group("a:1", "b:1")])
    (s,) = run(ev, sizes={normalize("a:1"): shared, normalize("b:1"): shared})
    assert s.to_size_gib == 70


def test_new_cache_size_unknown_names_the_image_and_why() -> None:
    ev = evidence(ie("a:1", misses=3), ie("b:1", misses=3), groups=[group("a:1", "b:1")])
    sizes = {normalize("a:1"): facts(1), normalize("b:1"): Unresolved("registry said 401")}
    (s,) = run(ev, sizes=sizes)
    assert s.to_size_gib is None
    assert "b:1: registry said 401" in s.size_note
    assert "a:1" not in s.size_note
    (s,) = run(ev, sizes={normalize("a:1"): facts(1)})
    assert "b:1: not looked up" in s.size_note


def test_without_sizes_a_new_cache_has_no_size_and_says_so() -> None:
    (s,) = run(evidence(ie("redis:7", misses=3)))
    assert s.to_size_gib is None
    assert "not looked up" in s.size_note
    # Priced at the default size the spec gets without imageCacheSize.
    expected = pricing.action_cost(
        ActionKind.CREATE,
        desired=CacheSpec(name="redis", images=s.images),
        observed=None,
        prices=PRICES,
    )
    assert s.monthly_cost == pytest.approx(expected.monthly)


def test_new_cache_too_large_for_any_cache_has_no_size() -> None:
    (s,) = run(evidence(ie("huge:1", misses=3)), sizes={normalize("huge:1"): facts(6000)})
    assert s.to_size_gib is None
    assert "split" in s.size_note


def test_a_cache_too_small_for_its_images_grows() -> None:
    ev = evidence(ie("big:1", misses=6, seconds=30.0))
    observed = [ready("data", "big:1", size=20, status=CacheStatus.FAILED)]
    (s,) = run(
        ev, [spec("data", "big:1", size=20)], observed, sizes={normalize("big:1"): facts(10)}
    )
    assert s.kind is Kind.RESIZE
    assert (s.from_size_gib, s.to_size_gib) == (20, 70)
    assert s.saved_seconds_per_day == pytest.approx(6 / 7 * 30.0)
    resized = spec("data", "big:1", size=70)
    expected = pricing.action_cost(
        ActionKind.UPDATE, desired=resized, observed=observed[0], prices=PRICES
    )
    assert s.monthly_cost == pytest.approx(expected.monthly)


def test_a_cache_far_larger_than_it_needs_shrinks() -> None:
    sizes = {normalize("small:1"): facts(1)}  # needs 5 GiB: the minimum, 20 GiB, holds it
    ev = evidence(ie("small:1", hits=3), caches={"c": CacheUse("c", hits=3)})
    (s,) = run(ev, [spec("c", "small:1", size=41)], sizes=sizes)
    assert (s.kind, s.from_size_gib, s.to_size_gib) == (Kind.RESIZE, 41, 20)
    assert s.saved_seconds_per_day == 0.0
    # Against the spec where no cache is observed: a smaller snapshot, and one rebuild.
    expected = pricing.action_cost(
        ActionKind.UPDATE,
        desired=spec("c", "small:1", size=20),
        observed=ready("c", "small:1", size=41),
        prices=PRICES,
    )
    assert s.monthly_cost == pytest.approx(expected.monthly)
    assert s.monthly_cost != 0
    # Twice the size it needs is not "far larger".
    assert run(ev, [spec("c", "small:1", size=40)], sizes=sizes) == ()


def test_no_shrink_when_a_size_is_unknown_and_no_resize_without_sizes() -> None:
    ev = evidence(caches={"c": CacheUse("c", hits=3)})
    desired = [spec("c", "small:1", "other:1", size=400)]
    assert run(ev, desired, sizes={normalize("small:1"): facts(1)}) == ()
    assert run(ev, desired) == ()


def test_resize_counts_the_images_the_other_suggestions_add() -> None:
    ev = evidence(
        ie("app:1", hits=3),
        ie("big:1", misses=3),
        groups=[group("app:1", "big:1", count=3)],
        caches={"web": CacheUse("web", hits=3)},
    )
    sizes = {normalize("app:1"): facts(1), normalize("big:1"): facts(10)}
    result = run(ev, [spec("web", "app:1")], sizes=sizes)
    assert [s.kind for s in result] == [Kind.ADD_IMAGE, Kind.RESIZE]
    resize = result[1]
    assert resize.to_size_gib == MODEL.size_for(
        sizing.check_cache(
            CacheSpec(name="web", images=(normalize("app:1"), normalize("big:1"))),
            sizes,
            model=MODEL,
        ).needed_high
    )
    assert "other suggestions" in resize.reason


# ----------------------------------------------------------------------------- names


def test_new_cache_name_does_not_clash_with_desired_observed_or_files() -> None:
    ev = evidence(ie("redis:7", misses=3))
    assert run(ev, [spec("redis", "nginx:1")])[0].cache == "redis-2"
    assert run(ev, [], [ready("redis")])[0].cache == "redis-2"
    # Another cache already lives in caches/redis.yaml.
    (s,) = run(ev, [spec("cache-for-redis", "nginx:1", path="caches/redis.yaml")])
    assert (s.cache, s.file) == ("redis-2", "caches/redis-2.yaml")


def test_two_new_caches_from_repositories_of_one_name_get_distinct_names() -> None:
    ev = evidence(ie("a.example.com/app:1", misses=3), ie("b.example.com/x/app:1", misses=4))
    names = sorted(s.cache for s in run(ev))
    assert names == ["app", "app-2"]


def test_name_is_a_dns_label_of_at_most_63_characters() -> None:
    long_name = "registry.example.com/team/" + "my_very.long__component-" * 5 + "x:1"
    ev = evidence(ie(long_name, misses=3))
    (s,) = run(ev, [spec(("my-very-long-component-" * 5)[:63].rstrip("-"), "nginx:1")])
    assert len(s.cache) <= 63
    assert DNS_LABEL.fullmatch(s.cache)
    assert s.cache.endswith("-2")


# ------------------------------------------------------------------------------ files


def test_new_cache_file_goes_where_the_closest_repository_is_kept() -> None:
    desired = [
        spec("api", "registry.example.com/team-a/api:1", path="team-a/api.yaml"),
        spec("web", "nginx:1", path="shared/web.yaml"),
        spec("db", "postgres:16", path="shared/db.yaml"),
    ]
    ev = evidence(ie("registry.example.com/team-a/worker:1", misses=3))
    assert run(ev, desired)[0].file == "team-a/worker.yaml"
    # Nothing shares a registry: the directory with most cache files.
    ev = evidence(ie("quay.io/org/tool:1", misses=3))
    assert run(ev, desired)[0].file == "shared/tool.yaml"


def test_new_cache_file_at_the_root_without_any_cache_file() -> None:
    assert run(evidence(ie("redis:7", misses=3)))[0].file == "redis.yaml"


# ---------------------------------------------------------------------- value and cost


def test_saved_seconds_from_the_mean_observed_miss() -> None:
    (s,) = run(evidence(ie("redis:7", misses=7, partials=7, seconds=12.0)))
    assert s.saved_seconds_per_day == pytest.approx(14 / 7 * 12.0)
    assert s.evidence.observed_seconds == pytest.approx(12.0)
    assert "mean of 7 timed misses" in s.reason
    assert "in the last 7 days" in s.reason.lower()


def test_saved_seconds_from_the_size_when_no_miss_was_timed() -> None:
    sizes = {normalize("redis:7"): facts(1)}
    (s,) = run(evidence(ie("redis:7", misses=7)), sizes=sizes)
    assert s.saved_seconds_per_day == pytest.approx(GIB / PRICES.pull_bytes_per_second)
    assert "no timing observed" in s.reason


def test_saved_seconds_zero_without_timing_or_size() -> None:
    (s,) = run(evidence(ie("redis:7", misses=7)))
    assert s.saved_seconds_per_day == 0.0
    assert "no timing observed" in s.reason


def test_add_image_costs_what_rebuilding_the_cache_costs() -> None:
    ev = evidence(
        ie("web/app:3", hits=6),
        ie("redis:7", misses=4),
        groups=[group("web/app:3", "redis:7", count=4)],
    )
    desired = [spec("web", "web/app:3", size=30)]
    observed = [ready("web", "web/app:3", size=30, content=3 * GIB)]
    (s,) = run(ev, desired, observed)
    expected = pricing.action_cost(
        ActionKind.UPDATE,
        desired=replace(desired[0], images=("web/app:3", normalize("redis:7"))),
        observed=observed[0],
        prices=PRICES,
    )
    assert s.monthly_cost == pytest.approx(expected.monthly)
    # Without an observed copy, priced against the spec as if it ran.
    (s2,) = run(ev, desired)
    assert s2.monthly_cost > 0


def test_evidence_sums_over_the_images() -> None:
    ev = evidence(
        ie("a:1", misses=3, partials=1, seconds=10.0, pods=4),
        ie("b:1", misses=5, seconds=20.0, pods=5),
        groups=[group("a:1", "b:1", count=4), group("b:1", count=1)],
    )
    (s,) = run(ev)
    assert s.evidence == SuggestionEvidence(
        hits=0, partials=1, misses=8, pods=5, observed_seconds=pytest.approx((30 + 100) / 8)
    )


# --------------------------------------------------------------------------- ranking


def ranked_scenario() -> tuple[Evidence, list[CacheSpec], list[ObservedCache]]:
    ev = evidence(
        ie("redis:7", misses=7, seconds=10.0),
        ie("memcached:1", misses=7, seconds=30.0),
        ie("zeta:1", misses=3),
        ie("alpha:1", misses=3),
        ie("app:1.5", partials=7, misses=7, seconds=5.0),
        ie("web/app:3", hits=1),
        groups=[group("web/app:3", "redis:7")],
        caches={"web": CacheUse("web", hits=1)},
    )
    desired = [
        spec("web", "web/app:3"),
        spec("svc", "app:1.4"),
        spec("small", "legacy:1", size=20),
        spec("big", "legacy:2", size=200),
    ]
    observed = [ready("small", size=20), ready("big", size=200), ready("web"), ready("svc")]
    return ev, desired, observed


def test_ranked_by_seconds_saved_removals_last_by_money() -> None:
    ev, desired, observed = ranked_scenario()
    result = run(ev, desired, observed)
    assert [(s.kind, s.cache) for s in result] == [
        (Kind.NEW_CACHE, "memcached"),  # 7 × 30 s / 7 days = 30 s/day
        (Kind.ADD_IMAGE, "web"),  # 10 s/day
        (Kind.BUMP_TAG, "svc"),  # 14 × 5 / 7 = 10 s/day: tie, by kind
        (Kind.NEW_CACHE, "alpha"),  # 0 s/day: tie, by cache name
        (Kind.NEW_CACHE, "zeta"),
        (Kind.REMOVE_CACHE, "big"),  # saves most money
        (Kind.REMOVE_CACHE, "small"),
    ]
    assert result == tuple(sorted(result, key=rank_key))


def test_order_does_not_depend_on_the_input_order() -> None:
    ev, desired, observed = ranked_scenario()
    expected = run(ev, desired, observed)
    rng = random.Random(15)
    for _ in range(20):
        shuffled = replace(
            ev,
            images=tuple(rng.sample(ev.images, len(ev.images))),
            groups=tuple(rng.sample(ev.groups, len(ev.groups))),
        )
        got = run(shuffled, rng.sample(desired, len(desired)), rng.sample(observed, len(observed)))
        assert got == expected


# ---------------------------------------------------------------------- policy bumps


def policy_bump(to: str, *, cache: str = "svc", old: str = "app:1.4") -> Suggestion:
    return Suggestion(
        kind=Kind.BUMP_TAG,
        cache=cache,
        reason="Policy semver-minor: app has a newer minor.",
        evidence=SuggestionEvidence(),
        saved_seconds_per_day=0.0,
        monthly_cost=1.0,
        from_images=(normalize(old),),
        to_images=(normalize(to),),
        policy="semver-minor",
    )


def test_policy_bumps_pass_through() -> None:
    p = policy_bump("app:1.6", cache="other")
    assert run(evidence(), policy_bumps=[p]) == (p,)


def test_policy_bump_of_the_same_image_merges_into_the_observed_bump() -> None:
    ev = evidence(ie("app:1.5", partials=3))
    (same,) = run(ev, [spec("svc", "app:1.4")], policy_bumps=[policy_bump("app:1.5")])
    assert same.kind is Kind.BUMP_TAG
    assert same.policy == "semver-minor"
    assert same.evidence.partials == 3
    assert "proposes the same" in same.reason
    (other,) = run(ev, [spec("svc", "app:1.4")], policy_bumps=[policy_bump("app:1.6")])
    assert other.to_images == (normalize("app:1.5"),)
    assert "proposes app:1.6 instead" in other.reason


def test_policy_suggestions_must_be_bumps() -> None:
    with pytest.raises(ValueError, match="bump-tag"):
        run(evidence(), policy_bumps=[replace(policy_bump("app:1.6"), kind=Kind.RESIZE)])


# --------------------------------------------------------------------------- inputs


def test_evidence_outside_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        run(replace(evidence(), since=SINCE - DAY))
    with pytest.raises(ValueError, match="window"):
        run(replace(evidence(), until=NOW + DAY))


@pytest.mark.parametrize(
    "options",
    [
        SuggestOptions(now=NOW, min_misses=0),
        SuggestOptions(now=NOW, window_seconds=0),
        SuggestOptions(now=NOW, window_seconds=math.inf),
    ],
)
def test_options_out_of_range_are_refused(options: SuggestOptions) -> None:
    with pytest.raises(ValueError, match="must be"):
        run(evidence(), options=options)


def test_a_reference_that_does_not_parse_is_left_out() -> None:
    ev = evidence(ie("redis:7", misses=3))
    result = run(ev, [spec("broken", "Not A Ref!", "redis:6")])
    assert [s.kind for s in result] == [Kind.BUMP_TAG]
    assert result[0].images == ("Not A Ref!", normalize("redis:7"))


# ------------------------------------------------------------------------ properties

POOL = ("app:1", "app:2", "app:3", "redis:7", "redis:6", "nginx:1", "a.io/x/app:1", "busybox:1")
NAMES = ("app", "redis", "web", "app-2", "cache")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Evidence, list[CacheSpec], list[ObservedCache]]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    desired = [
        spec(name, *draw(st.lists(st.sampled_from(POOL), unique=True, min_size=1, max_size=3)))
        for name in names
    ]
    observed_names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
    observed = [ready(name) for name in observed_names]
    images = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))
    items = [
        ie(
            image,
            hits=draw(st.integers(0, 3)),
            partials=draw(st.integers(0, 3)),
            misses=draw(st.integers(0, 5)),
        )
        for image in images
    ]
    groups = [
        group(*members, count=draw(st.integers(1, 3)))
        for members in draw(
            st.lists(st.lists(st.sampled_from(POOL), unique=True, min_size=1, max_size=3))
        )
    ]
    return evidence(*items, groups=groups), desired, observed


def holds(cache: CacheSpec, image: str) -> bool:
    return normalize(image) in {normalize(i) for i in cache.images}


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_no_suggestion_adds_an_image_a_cache_already_holds(
    scenario: tuple[Evidence, list[CacheSpec], list[ObservedCache]],
) -> None:
    ev, desired, observed = scenario
    by_name = {c.name: c for c in desired}
    for s in run(ev, desired, observed):
        if s.kind is Kind.ADD_IMAGE:
            assert not any(holds(by_name[s.cache], i) for i in s.images)
        if s.kind is Kind.NEW_CACHE:
            assert not any(holds(c, i) for c in desired for i in s.images)
        if s.kind is Kind.BUMP_TAG:
            assert not any(holds(by_name[s.cache], i) for i in s.to_images)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_new_cache_names_and_files_are_valid_and_unique(
    scenario: tuple[Evidence, list[CacheSpec], list[ObservedCache]],
) -> None:
    ev, desired, observed = scenario
    new = [s for s in run(ev, desired, observed) if s.kind is Kind.NEW_CACHE]
    taken = {c.name for c in desired} | {c.name for c in observed}
    files = {c.location.path for c in desired if c.location}
    names = [s.cache for s in new]
    assert len(set(names)) == len(names)
    for s in new:
        assert DNS_LABEL.fullmatch(s.cache)
        assert len(s.cache) <= 63
        assert s.cache not in taken
        assert s.file not in files
        assert s.file is not None
        assert s.file.endswith(f"{s.cache}.yaml")


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_every_unserved_image_of_an_unheld_repository_lands_in_exactly_one_cache(
    scenario: tuple[Evidence, list[CacheSpec], list[ObservedCache]],
) -> None:
    ev, desired, observed = scenario
    held_repos = {parse(i).name for c in desired for i in c.images}
    expected = sorted(
        e.image
        for e in ev.images
        if e.partials + e.misses >= OPTIONS.min_misses and parse(e.image).name not in held_repos
    )
    placed = sorted(
        image
        for s in run(ev, desired, observed)
        if s.kind in {Kind.ADD_IMAGE, Kind.NEW_CACHE}
        for image in s.images
        if parse(image).name not in held_repos
    )
    assert placed == expected


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_answer_does_not_depend_on_input_order(
    scenario: tuple[Evidence, list[CacheSpec], list[ObservedCache]], rng: random.Random
) -> None:
    ev, desired, observed = scenario
    shuffled = replace(
        ev,
        images=tuple(rng.sample(ev.images, len(ev.images))),
        groups=tuple(rng.sample(ev.groups, len(ev.groups))),
    )
    assert run(shuffled, rng.sample(desired, len(desired)), observed[::-1]) == run(
        ev, desired, observed
    )

"""`gitsync.policyloop`: how often policy images are listed, and what the loop keeps and tells."""

from __future__ import annotations

from collections.abc import Sequence

from gitsync.model import CacheSpec, SourceLocation
from gitsync.policyloop import DEFAULT_POLICY_INTERVAL_SECONDS, PolicyLoop, policy_interval
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind

MARKED = (("registry.example.com/api:1.4.0", "semver=~1.4"),)


def spec(name: str, *, refresh: float | None = None, marked: bool = True) -> CacheSpec:
    return CacheSpec(
        name=name,
        images=("registry.example.com/api:1.4.0",),
        refresh_seconds=refresh,
        image_policies=MARKED if marked else (),
        location=SourceLocation(path=f"caches/{name}.yaml", line=1, column=1),
    )


def bump(to: str) -> Suggestion:
    return Suggestion(
        kind=SuggestionKind.BUMP_TAG,
        cache="api",
        reason="semver=~1.4 allows a newer tag",
        evidence=SuggestionEvidence(),
        saved_seconds_per_day=0.0,
        monthly_cost=0.0,
        from_images=("registry.example.com/api:1.4.0",),
        to_images=(to,),
        policy="semver=~1.4",
    )


def test_the_shortest_refresh_of_a_cache_with_policies_sets_the_interval() -> None:
    specs = [spec("a", refresh=600), spec("b", refresh=30), spec("c", refresh=5, marked=False)]
    assert policy_interval(specs, default_seconds=3600) == 30  # c has no policy
    assert policy_interval([spec("a")], default_seconds=120) == 120
    assert policy_interval([spec("a"), spec("z", refresh=0)], default_seconds=None) == (
        DEFAULT_POLICY_INTERVAL_SECONDS
    )


def test_latest_is_none_until_listed_and_listeners_hear_of_changes_only() -> None:
    answers = [
        (bump("registry.example.com/api:1.4.3"),),
        (bump("registry.example.com/api:1.4.3"),),
        (),
    ]
    asked: list[Sequence[CacheSpec]] = []

    def resolve(specs: Sequence[CacheSpec]) -> tuple[Suggestion, ...]:
        asked.append(specs)
        return answers.pop(0)

    heard: list[int] = []
    loop = PolicyLoop(
        resolve=resolve,
        desired=lambda: (spec("api"), spec("plain", marked=False)),
        default_interval_seconds=None,
    )
    loop.listen(lambda: heard.append(1))
    assert loop.latest() is None  # not listed yet: not "nothing pending"

    first = loop.check()
    assert loop.latest() == first
    assert len(first) == 1
    assert [s.name for s in asked[0]] == ["api"]  # only caches with policies are listed
    loop.check()  # the same bumps: no news
    assert loop.check() == ()
    assert loop.latest() == ()
    assert len(heard) == 2  # the first answer, and the bump going away

"""The remove-cache rule: a cache Ready for the whole window that served no pull in it.

Apart from the other rules because it reads other evidence (how far back the
store reaches, the observed copies' status, age and prune annotation) and
rests on an absence: "no hit" may only mean "not recorded yet", so it is
proposed only when the store saw the whole window, and never for a cache a
person pinned (`gitsync.io/prune: disabled`).
"""

from __future__ import annotations

from gitsync import pricing
from gitsync.model import ActionKind, CacheStatus
from gitsync.reports import _money
from gitsync.suggest.context import _Context, _stand_in_key
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.value import _evidence, _file
from gitsync.suggest.wording import _window


def _removals(ctx: _Context, *, changed: set[str]) -> list[Suggestion]:
    first = ctx.evidence.first_at
    if first is None or first > ctx.since:
        return []  # the store has not seen the whole window: "no hit" may be "not recorded"
    result: list[Suggestion] = []
    for cache in ctx.caches:
        spec = cache.spec
        if spec.name in changed or not spec.prune:
            continue
        copies = ctx.copies.get(spec.name, ())
        if any(not copy.prune for copy in copies):
            continue
        ready = [
            (created, copy)
            for copy in copies
            if copy.status is CacheStatus.READY
            and (created := copy.created_at) is not None
            and created.timestamp() <= ctx.since
        ]
        use = ctx.evidence.caches.get(spec.name)
        if not ready or (use is not None and (use.hits or use.partials)):
            continue
        created, observed = min(ready, key=lambda pair: _stand_in_key(pair[1]))
        cost = pricing.action_cost(
            ActionKind.DELETE, desired=None, observed=observed, prices=ctx.prices
        )
        saved_money = _money(-cost.monthly, ctx.prices.currency, signed=False)
        reason = (
            f"Cache {spec.name} was Ready for the whole {_window(ctx)} (created"
            f" {created.date().isoformat()}) and served no pull in it (0 hits, 0 partials);"
            f" removing it saves {saved_money} a month of snapshot storage."
        )
        images = tuple(text for text, _ in cache.refs)
        result.append(
            Suggestion(
                kind=SuggestionKind.REMOVE_CACHE,
                cache=spec.name,
                reason=reason,
                evidence=_evidence(ctx, images),
                saved_seconds_per_day=0.0,
                monthly_cost=cost.monthly,
                images=images,
                location=spec.location,
                file=_file(spec),
            )
        )
    return result

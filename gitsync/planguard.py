"""The plan's policy, order, cost and mass-delete guard, apart from the per-cache decision.

`planning.plan` decides per cache what to do (see its module docstring for
the rules); this module holds what applies to the plan as a whole: the
`PlanPolicy` it is given, the order of its actions (`ACTION_ORDER`, then name,
then cache id), each action's cost and their sum, and the mass-delete guard.
Pure, as the planner: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from gitsync import pricing
from gitsync.errors import ConfigError
from gitsync.model import Action, ActionKind, CostDelta

ACTION_ORDER: tuple[ActionKind, ...] = (
    ActionKind.CREATE,
    ActionKind.RECREATE,
    ActionKind.UPDATE,
    ActionKind.DELETE,
    ActionKind.NOOP,
)
DUPLICATE_REASON = "duplicate"

_RANK = {kind: rank for rank, kind in enumerate(ACTION_ORDER)}


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """Who we are, what time it is, and how careful to be.

    `now` must be timezone-aware; the planner never reads the clock. `keep`
    holds names whose owned caches must not be deleted when Git no longer
    names them (see the module docstring).
    """

    controller_id: str
    now: datetime
    max_delete_ratio: float = 0.5
    allow_mass_delete: bool = False
    renew_before: timedelta | None = None
    keep: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.controller_id.strip():
            raise ConfigError("--controller-id: must be a non-empty name, e.g. 'gitsync'")
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            # A naive time compared with the providers' aware times would raise
            # later, far from the cause; this is a wiring bug, not user input.
            raise ValueError(f"PlanPolicy.now must be timezone-aware (UTC), got {self.now!r}")
        ratio = self.max_delete_ratio
        if not math.isfinite(ratio) or not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"--max-delete-ratio: {ratio} must be between 0 and 1")
        if self.renew_before is not None and self.renew_before < timedelta(0):
            raise ConfigError(
                f"--renew-before: {self.renew_before} must not be negative; use e.g. 2d, or omit it"
            )


def is_duplicate_delete(action: Action) -> bool:
    """True for a delete that removes an extra cache of a name, not a cache Git dropped."""
    return action.kind is ActionKind.DELETE and action.reason.startswith(DUPLICATE_REASON)


# --- ordering, cost, guard ------------------------------------------------------


def _action_key(action: Action) -> tuple[int, str, str]:
    cache_id = action.observed.cache_id if action.observed is not None else ""
    return (_RANK[action.kind], action.name, cache_id)


def _with_cost(action: Action, *, prices: pricing.PriceTable, zero: CostDelta) -> Action:
    if action.cost is not None and action.cost.currency == prices.currency:
        return action  # a remembered no-op, costed last time
    if action.kind is ActionKind.NOOP:
        # A no-op moves no money; skipping replace() keeps large no-op plans cheap.
        return Action(
            kind=action.kind,
            name=action.name,
            reason=action.reason,
            desired=action.desired,
            observed=action.observed,
            changes=action.changes,
            cost=zero,
        )
    cost = pricing.action_cost(
        action.kind, desired=action.desired, observed=action.observed, prices=prices
    )
    return replace(action, cost=cost)


def _total(actions: Sequence[Action], *, currency: str) -> CostDelta:
    hourly = one_off = 0.0
    for action in actions:
        if action.cost is not None:
            hourly += action.cost.hourly
            one_off += action.cost.one_off
    return CostDelta(currency=currency, hourly=hourly, one_off=one_off)


def _refusal(actions: Sequence[Action], *, owned: int, policy: PlanPolicy) -> str | None:
    deletes = sorted(
        a.name for a in actions if a.kind is ActionKind.DELETE and not is_duplicate_delete(a)
    )
    if policy.allow_mass_delete or owned == 0 or not deletes:
        return None
    count = len(deletes)
    shown = ", ".join(deletes[:5]) + (", ..." if count > 5 else "")
    hint = (
        "; a wrong --repo, branch or path looks exactly like this. If it is intended, pass"
        " --allow-mass-delete, or raise --max-delete-ratio"
    )
    if count == owned:
        return (
            f"refused: the plan deletes all {_plural(owned, 'cache')} this controller owns"
            f" ({shown}){hint}"
        )
    if count / owned > policy.max_delete_ratio:
        return (
            f"refused: the plan deletes {count} of {_plural(owned, 'owned cache')}"
            f" ({count / owned:.0%}: {shown}), more than --max-delete-ratio"
            f" {policy.max_delete_ratio:g} allows{hint}"
        )
    return None


# --- small helpers --------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    # Providers should report aware times; a naive one is taken to be UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(count: int, noun: str) -> str:
    # Only regular nouns pass through here (cache, day, hour, ...).
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_UNITS: Mapping[str, int] = {"day": 86400, "hour": 3600, "minute": 60, "second": 1}


def _human(span: timedelta) -> str:
    """`1 day 6 hours`: the largest non-zero unit and the next one, rounded down."""
    seconds = int(span.total_seconds())
    if seconds <= 0:
        return "under 1 second"
    units = list(_UNITS.items())
    for index, (unit, size) in enumerate(units):
        if seconds >= size:
            parts = [_plural(seconds // size, unit)]
            if index + 1 < len(units):
                next_unit, next_size = units[index + 1]
                amount = seconds % size // next_size
                if amount:
                    parts.append(_plural(amount, next_unit))
            return " ".join(parts)
    raise AssertionError("unreachable: seconds >= 1 always matches the last unit")

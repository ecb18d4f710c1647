"""The planner: desired caches from Git + caches the provider holds -> an ordered Plan.

It is a pure function (no I/O, no clock: `PlanPolicy.now` is injected), so
`gitsync plan` in CI, the daemon and the tests all get the same answer from the
same input, and every safety rule can be tested exhaustively here instead of
against a cloud account. The rules, in the order a reviewer needs them:

* **Ownership.** A cache is ours when `observed.owner == policy.controller_id`.
  Only owned caches are ever updated, recreated or deleted. A spec whose name
  is taken by a cache we do not own gets no action but a notice ("in the way":
  delete that cache or rename the spec); caches we do not own and Git does not
  name are none of our business and are ignored silently.
* **Compare by name.** Fields compared: images (as a set of normalised
  references, so `nginx` equals `docker.io/library/nginx:latest`; a reference
  that does not parse is compared as written), imageCacheSize, retentionDays,
  imagePullSecrets (as a set) and the prune annotation; then, only where the
  provider keeps them (`ObservedState.fields`, see `model.ProviderFields`),
  securityGroupIds (in order: it is the order the instance gets them in),
  metadata.labels, metadata.annotations (every one but gitsync.io/prune), and
  the EIP annotation by meaning (`{"InternetMaxBandwidthOut":2}` equals
  `{ "InternetMaxBandwidthOut": 2 }`). A field the provider does not keep is
  never compared, since it would differ on every pass. A difference is an
  UPDATE listing each changed field under its YAML name (a change of a label
  or an annotation alone is one too); no difference is a NOOP.
* **Rebuild.** A cache that is Failed or UpdateFailed (also one whose
  snapshot a check found gone or damaged: the reason is then the check's,
  "snapshot snap-… is gone (DescribeSnapshots)"), has expired
  (`expires_at <= now`), or is inside its renewal window (`expires_at -
  renew_before <= now`) is RECREATEd with the desired spec. The window is at
  most half the cache's retention period, so a `renew_before` longer than the
  retention cannot rebuild a fresh cache on every pass. So is a cache whose
  change touches a field the provider cannot update in place (the TKE API's
  UpdateImageCache has no EIP fields): the reason ends with the provider's
  "… cannot change …: recreated". A Pending or Updating cache whose spec
  matches is a NOOP: the build is in progress.
* **Create and delete.** A spec with no cache is a CREATE. An owned cache no
  spec names is a DELETE, unless its name is in `policy.keep` (the reconciler
  fills it from the last applied revision's `gitsync.io/prune: disabled`
  specs and from the provider's own annotation); then it stays, with a
  "kept: pruning disabled" notice. Every cache of a kept name stays,
  duplicates included.
* **Duplicates.** A provider may report two owned caches of one name (a crash
  between "create" and "record"). The newest by `created_at` (unknown counts
  as oldest; ties broken by the larger `cache_id`) is the one compared with
  Git; the others are DELETEd with a reason starting with "duplicate". Those
  deletes restore an invariant rather than remove anything Git asked for, so
  they do not count toward the mass-delete guard, and the guard counts owned
  caches by distinct name.
* **Mass-delete guard.** With `owned` owned names and `deletes` non-duplicate
  deletes, the plan is refused when `deletes == owned` (all of them: deleting
  the only owned cache is refused too, since an emptied or mistyped repository
  path looks exactly like that) or `deletes / owned > max_delete_ratio`,
  unless `allow_mass_delete`. A refused plan still lists its actions so
  `gitsync plan` can show them; executors apply none of it.
* **Moved tags.** Given the digests the daemon last resolved (`tags`), a Ready
  cache that follows its tags (gitsync.io/refresh) and holds another digest
  for one of them is an UPDATE, "tag moved: <image> <old> → <new>", with Git
  unchanged, priced as the rebuild it is (one build instance); a pinning
  provider is given the image pinned, `repo:tag@sha256:…`, and its pin
  compares equal to the bare tag in Git. The rules are in
  `gitsync.digests`; without `tags` (`gitsync plan`) nothing is followed.
* **Order.** Creates, then recreates, then updates, then deletes, then noops;
  by name within each kind, then by cache id. Deletes come after creates and
  rebuilds so that a pass interrupted half-way leaves extra caches (money)
  rather than missing ones (slow pod starts).

Costs come from `pricing.action_cost`; `Plan.cost` is their sum, in order.

Policy, order, cost and the guard are in `planguard`; this module decides per
cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gitsync import digests, imageref, pricing
from gitsync.digests import TagDigests
from gitsync.errors import ImageRefError
from gitsync.model import (
    ANNOTATIONS_FIELD,
    CLASSIC_FIELDS,
    EIP_FIELD,
    LABELS_FIELD,
    PRUNE_FIELD,
    SECURITY_GROUPS_FIELD,
    Action,
    ActionKind,
    CacheSpec,
    CacheStatus,
    CostDelta,
    DesiredState,
    EipAttributes,
    FieldChange,
    ObservedCache,
    ObservedState,
    Pairs,
    Plan,
    PlanNotice,
    ProviderFields,
    Severity,
)
from gitsync.planguard import (
    ACTION_ORDER,
    DUPLICATE_REASON,
    PlanPolicy,
    _action_key,
    _human,
    _iso,
    _plural,
    _refusal,
    _total,
    _utc,
    _with_cost,
    is_duplicate_delete,
)

__all__ = [
    "ACTION_ORDER",
    "DUPLICATE_REASON",
    "PRUNE_FIELD",
    "PlanPolicy",
    "is_duplicate_delete",
    "plan",
    "spec_changes",
]
KEPT_MESSAGE = "kept: pruning disabled"
IN_THE_WAY = "in the way"

_BROKEN = frozenset({CacheStatus.FAILED, CacheStatus.UPDATE_FAILED})
_IN_PROGRESS = frozenset({CacheStatus.PENDING, CacheStatus.UPDATING})
_MINUS = "\N{MINUS SIGN}"
_ARROW = "\N{RIGHTWARDS ARROW}"
_EPOCH = datetime.min.replace(tzinfo=UTC)


class NoopMemo:
    """Remembers no-op actions between plans, keyed by the very spec and cache objects.

    The daemon re-plans 10,000 caches when one file changes; the loader and the
    local store hand back the *same* objects for everything unchanged, so an
    identity check finds the no-ops of the last plan. Caches that can expire are
    never remembered, since the clock alone can change their action. The plan
    is exactly the one computed without the memo.
    """

    def __init__(self) -> None:
        self._noops: dict[str, tuple[CacheSpec, ObservedCache, Action]] = {}

    def get(self, spec: CacheSpec, cache: ObservedCache) -> Action | None:
        known = self._noops.get(spec.name)
        if known is not None and known[0] is spec and known[1] is cache:
            return known[2]
        return None

    def remember(self, actions: Sequence[Action]) -> None:
        self._noops = {
            a.name: (a.desired, a.observed, a)
            for a in actions
            if a.kind is ActionKind.NOOP
            and a.desired is not None
            and a.observed is not None
            and a.observed.expires_at is None
        }


def plan(
    desired: DesiredState,
    observed: ObservedState,
    *,
    policy: PlanPolicy,
    prices: pricing.PriceTable,
    memo: NoopMemo | None = None,
    tags: TagDigests | None = None,
) -> Plan:
    """The ordered actions (with costs and notices) that bring `observed` to `desired`.

    `tags`: the digests the daemon's refresher last resolved, for the caches that
    follow their tags (see "Moved tags" in the module docstring).
    """
    specs = _index_desired(desired.caches)
    owned, foreign = _split_observed(observed.caches, controller_id=policy.controller_id)
    fields = observed.fields
    actions: list[Action] = []
    notices: list[PlanNotice] = []
    for name in sorted(specs.keys() | owned.keys() | foreign.keys()):
        spec = specs.get(name)
        mine = owned.get(name, ())
        if spec is not None:
            if mine:
                known = memo.get(spec, mine[0]) if memo is not None else None
                action = known or _compare(spec, mine[0], policy=policy, fields=fields)
                if tags is not None:
                    action = _followed(action, tags, fields=fields, prices=prices)
                actions.append(action)
                if len(mine) > 1:
                    actions.extend(_duplicate_deletes(mine))
            elif name in foreign:
                notices.append(_in_the_way(name, foreign[name], policy=policy))
            else:
                create = Action(
                    kind=ActionKind.CREATE, name=name, reason="not in provider", desired=spec
                )
                if tags is not None:
                    create = digests.follow(create, tags, fields=fields)
                actions.append(create)
        elif mine:
            if name in policy.keep:
                notices.append(_kept(name, mine))
            else:
                actions.append(
                    Action(kind=ActionKind.DELETE, name=name, reason="not in Git", observed=mine[0])
                )
                actions.extend(_duplicate_deletes(mine))
        # Foreign caches Git does not name are not ours: nothing to say.

    actions.sort(key=_action_key)
    zero = CostDelta(currency=prices.currency)
    costed = tuple(_with_cost(action, prices=prices, zero=zero) for action in actions)
    if memo is not None:
        memo.remember(costed)
    return Plan(
        actions=costed,
        cost=_total(costed, currency=prices.currency),
        notices=tuple(sorted(notices, key=lambda n: (n.name, n.message))),
        refused=_refusal(costed, owned=len(owned), policy=policy),
        revision=desired.revision,
    )


def _followed(
    action: Action, tags: TagDigests, *, fields: ProviderFields, prices: pricing.PriceTable
) -> Action:
    """`digests.follow`, priced: a no-op that became a rebuild for a moved tag pulls again,
    which its spec, unchanged, does not show, so it costs what a rebuild costs."""
    followed = digests.follow(action, tags, fields=fields)
    if action.kind is ActionKind.NOOP and followed.kind is ActionKind.UPDATE:
        cost = pricing.action_cost(
            ActionKind.RECREATE, desired=followed.desired, observed=followed.observed, prices=prices
        )
        followed = replace(followed, cost=cost)
    return followed


# --- grouping -----------------------------------------------------------------


def _index_desired(caches: Sequence[CacheSpec]) -> dict[str, CacheSpec]:
    specs: dict[str, CacheSpec] = {}
    for spec in caches:
        if spec.name in specs:
            # Validation rejects duplicate names; reaching here is a wiring bug.
            raise ValueError(
                f"desired state names cache {spec.name!r} twice; specs validation should have"
                " rejected the revision"
            )
        specs[spec.name] = spec
    return specs


def _split_observed(
    caches: Iterable[ObservedCache], *, controller_id: str
) -> tuple[dict[str, list[ObservedCache]], dict[str, list[ObservedCache]]]:
    """Owned and foreign caches by name: owned newest first (the match), foreign by id."""
    owned: dict[str, list[ObservedCache]] = {}
    foreign: dict[str, list[ObservedCache]] = {}
    for cache in caches:
        bucket = owned if cache.owner == controller_id else foreign
        bucket.setdefault(cache.name, []).append(cache)
    # Almost every name has one cache: only the rare duplicates need sorting.
    for group in owned.values():
        if len(group) > 1:
            group.sort(key=_age_key, reverse=True)
    for group in foreign.values():
        if len(group) > 1:
            group.sort(key=lambda c: c.cache_id)
    return owned, foreign


def _age_key(cache: ObservedCache) -> tuple[datetime, str]:
    """Sorts oldest first: an unknown creation time counts as the oldest."""
    created = _EPOCH if cache.created_at is None else _utc(cache.created_at)
    return (created, cache.cache_id)


def _duplicate_deletes(owned: Sequence[ObservedCache]) -> list[Action]:
    keeper = owned[0]
    return [
        Action(
            kind=ActionKind.DELETE,
            name=extra.name,
            reason=f"{DUPLICATE_REASON} of {keeper.cache_id}, the newest cache named {extra.name}",
            observed=extra,
        )
        for extra in owned[1:]
    ]


def _in_the_way(name: str, foreign: Sequence[ObservedCache], *, policy: PlanPolicy) -> PlanNotice:
    holders = ", ".join(
        f"{c.cache_id} ("
        + ("no owner" if c.owner is None else f"owned by controller {c.owner!r}")
        + ")"
        for c in foreign
    )
    return PlanNotice(
        name=name,
        message=(
            f"{IN_THE_WAY}: Git wants cache {name!r}, but the provider already has a cache of"
            f" that name that controller {policy.controller_id!r} does not own: {holders};"
            " gitsync will not create, change or delete it. Delete that cache in the provider,"
            " or rename the spec in Git"
        ),
        severity=Severity.WARNING,
    )


def _kept(name: str, owned: Sequence[ObservedCache]) -> PlanNotice:
    ids = ", ".join(c.cache_id for c in owned)
    return PlanNotice(
        name=name,
        message=(
            f"{KEPT_MESSAGE}: {name!r} ({ids}) is no longer in Git but gitsync.io/prune: disabled"
            " keeps it; delete it in the provider when it is no longer needed"
        ),
        severity=Severity.INFO,
    )


# --- comparing one cache --------------------------------------------------------


def _compare(
    spec: CacheSpec, cache: ObservedCache, *, policy: PlanPolicy, fields: ProviderFields
) -> Action:
    if (
        cache.status is CacheStatus.READY
        and spec.images == cache.images
        and spec.image_cache_size_gib == cache.image_cache_size_gib
        and spec.retention_days == cache.retention_days
        and spec.image_pull_secrets == cache.image_pull_secrets
        and spec.prune == cache.prune
        and (fields.kept == CLASSIC_FIELDS or _extras_equal(spec, cache, fields.kept))
        and _expiry_reason(cache, policy=policy) is None
    ):
        # The common case at 10,000 caches: written exactly as stored. Equal as written
        # implies equal normalised, so the slower comparison below cannot differ.
        return Action(
            kind=ActionKind.NOOP, name=spec.name, reason="up to date", desired=spec, observed=cache
        )
    changes, summaries = _field_changes(spec, cache, kept=fields.kept)
    rebuild: list[str] = []
    if cache.status in _BROKEN:
        # A check that found the snapshot gone says so; "status Failed" would hide why.
        rebuild.append(cache.snapshot_problem or f"status {cache.status}")
    expiry = _expiry_reason(cache, policy=policy)
    if expiry is not None:
        rebuild.append(expiry)
    # Fields the provider cannot change in place: only a new cache gets them.
    fixed = _unique(
        fields.reason(c.field)
        for c in changes
        if c.field != PRUNE_FIELD and c.field not in fields.updatable
    )
    recreated = [f"{why}: recreated" for why in fixed]
    in_progress = f" (while {cache.status})" if cache.status in _IN_PROGRESS else ""
    if rebuild or fixed:
        kind = ActionKind.RECREATE
        reason = "; ".join([*rebuild, *summaries, *recreated]) + ("" if rebuild else in_progress)
    elif changes:
        kind, reason = ActionKind.UPDATE, "; ".join(summaries) + in_progress
    elif cache.status in _IN_PROGRESS:
        kind, reason = ActionKind.NOOP, f"in progress: status {cache.status}"
    else:
        kind, reason = ActionKind.NOOP, "up to date"
    return Action(
        kind=kind,
        name=spec.name,
        reason=reason,
        desired=spec,
        observed=cache,
        changes=tuple(changes),
    )


def spec_changes(
    spec: CacheSpec, cache: ObservedCache, *, fields: ProviderFields
) -> tuple[FieldChange, ...]:
    """The fields in which `cache` differs from `spec`, compared as `plan` compares them.

    Only the fields a provider keeps (`fields.kept`), and the prune annotation;
    empty when the cache already holds the spec. Status and expiry are not looked
    at: a provider asks this to tell an UPDATE from a RECREATE of an equal spec.
    """
    return tuple(_field_changes(spec, cache, kept=fields.kept)[0])


def _extras_equal(spec: CacheSpec, cache: ObservedCache, kept: frozenset[str]) -> bool:
    """The fields beyond the classic ones, where kept, equal as written (the fast path)."""
    return (
        (SECURITY_GROUPS_FIELD not in kept or spec.security_group_ids == cache.security_group_ids)
        and (LABELS_FIELD not in kept or spec.labels == cache.labels)
        and (ANNOTATIONS_FIELD not in kept or spec.annotations == cache.annotations)
        and (EIP_FIELD not in kept or spec.eip == cache.eip)
    )


def _field_changes(
    spec: CacheSpec, cache: ObservedCache, *, kept: frozenset[str]
) -> tuple[list[FieldChange], list[str]]:
    """The differing fields, and one human summary per field, in YAML field order."""
    changes: list[FieldChange] = []
    summaries: list[str] = []

    want = _image_keys(spec.images)
    # A pin the provider was given to follow a tag (`repo:tag@sha256:…`) is that tag.
    have = digests.unpinned(_image_keys(cache.images), want.keys())
    if want.keys() != have.keys():
        added = sorted(want[k] for k in want.keys() - have.keys())
        removed = sorted(have[k] for k in have.keys() - want.keys())
        changes.append(
            FieldChange("images", before=_sorted_set(cache.images), after=_sorted_set(spec.images))
        )
        summaries.append("images: " + _plus_minus(added, removed))

    for yaml_name, before, after in (
        ("imageCacheSize", cache.image_cache_size_gib, spec.image_cache_size_gib),
        ("retentionDays", cache.retention_days, spec.retention_days),
    ):
        if before != after:
            changes.append(FieldChange(yaml_name, before=before, after=after))
            summaries.append(f"{yaml_name}: {before} {_ARROW} {after}")

    if set(spec.image_pull_secrets) != set(cache.image_pull_secrets):
        added = sorted(set(spec.image_pull_secrets) - set(cache.image_pull_secrets))
        removed = sorted(set(cache.image_pull_secrets) - set(spec.image_pull_secrets))
        changes.append(
            FieldChange(
                "imagePullSecrets",
                before=_sorted_set(cache.image_pull_secrets),
                after=_sorted_set(spec.image_pull_secrets),
            )
        )
        summaries.append("imagePullSecrets: " + _plus_minus(added, removed))

    if SECURITY_GROUPS_FIELD in kept and spec.security_group_ids != cache.security_group_ids:
        old, new = cache.security_group_ids, spec.security_group_ids
        changes.append(FieldChange(SECURITY_GROUPS_FIELD, before=old, after=new))
        summaries.append(f"{SECURITY_GROUPS_FIELD}: {_listed(old)} {_ARROW} {_listed(new)}")

    for name, want_pairs, have_pairs in (
        (LABELS_FIELD, spec.labels, cache.labels),
        (ANNOTATIONS_FIELD, spec.annotations, cache.annotations),
    ):
        if name in kept and dict(want_pairs) != dict(have_pairs):
            changes.append(
                FieldChange(name, before=_assignments(have_pairs), after=_assignments(want_pairs))
            )
            summaries.append(f"{name}: {_map_diff(dict(want_pairs), dict(have_pairs))}")

    if EIP_FIELD in kept and spec.eip != cache.eip:
        was_eip, now_eip = _eip_value(cache.eip), _eip_value(spec.eip)
        changes.append(FieldChange(EIP_FIELD, before=was_eip, after=now_eip))
        summaries.append(f"{EIP_FIELD}: {was_eip or '(none)'} {_ARROW} {now_eip or '(none)'}")

    if spec.prune != cache.prune:
        # The provider carries the annotation (a label or tag), so a cache stays
        # protected after its spec leaves Git: it must follow the spec.
        was, now = _prune_value(cache.prune), _prune_value(spec.prune)
        changes.append(FieldChange(PRUNE_FIELD, before=was, after=now))
        summaries.append(f"{PRUNE_FIELD}: {was} {_ARROW} {now}")
    return changes, summaries


def _assignments(pairs: Pairs) -> tuple[str, ...]:
    return tuple(f"{key}={value}" for key, value in sorted(pairs))


def _map_diff(want: Mapping[str, str], have: Mapping[str, str]) -> str:
    """`+team=web −tier` for added or changed, and removed keys; long values cut short."""
    added = sorted(f"{k}={_clip(v)}" for k, v in want.items() if have.get(k) != v)
    removed = sorted(
        k if k not in want else f"{k}={_clip(have[k])}" for k in have if have[k] != want.get(k)
    )
    return _plus_minus(added, removed)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _eip_value(eip: EipAttributes | None) -> str | None:
    return None if eip is None else str(eip)


def _listed(values: Sequence[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _prune_value(prune: bool) -> str:
    return "enabled" if prune else "disabled"


def _image_keys(images: Iterable[str]) -> dict[str, str]:
    """Normalised reference -> the spelling as written (the smallest, if several)."""
    keys: dict[str, str] = {}
    for written in sorted(images, reverse=True):
        try:
            key = imageref.normalize(written)
        except ImageRefError:
            # Validation reports bad references; here they still compare as written.
            key = written
        keys[key] = written
    return keys


def _sorted_set(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _plus_minus(added: Sequence[str], removed: Sequence[str]) -> str:
    return " ".join([*(f"+{a}" for a in added), *(f"{_MINUS}{r}" for r in removed)])


def _expiry_reason(cache: ObservedCache, *, policy: PlanPolicy) -> str | None:
    if cache.expires_at is None:
        return None
    expires, now = _utc(cache.expires_at), _utc(policy.now)
    if expires <= now:
        return f"expired {_iso(expires)}"
    if policy.renew_before is None:
        return None
    lead, note = policy.renew_before, ""
    if cache.retention_days > 0:
        half = timedelta(days=cache.retention_days) / 2
        if half < lead:
            lead = half
            note = f" (at most half of its {_plural(cache.retention_days, 'day')} retention)"
    if expires - lead > now:
        return None
    return f"expires in {_human(expires - now)}, renewing {_human(lead)} before{note}"

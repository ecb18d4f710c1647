"""Properties of the planner over random states: convergence, ownership, the guard, determinism.

States mix owned, unowned, other-owned, kept, expired, failed, in-progress and
duplicate caches over a small pool of names and images (including spellings
that normalise to the same reference and one that does not parse), so that
collisions between all of those are common rather than rare.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gitsync import imageref
from gitsync.errors import ImageRefError
from gitsync.model import (
    CLASSIC_FIELDS,
    EIP_FIELD,
    SECURITY_GROUPS_FIELD,
    SPEC_FIELDS,
    ActionKind,
    CacheSpec,
    CacheStatus,
    DesiredState,
    EipAttributes,
    ObservedCache,
    ObservedState,
    Plan,
    ProviderFields,
)
from gitsync.planning import ACTION_ORDER, PlanPolicy, is_duplicate_delete, plan
from gitsync.pricing import PriceTable

ME = "gitsync"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
PRICES = PriceTable()
NAMES = ("a", "b", "c", "d", "e", "f")
SETTINGS = settings(max_examples=300, deadline=None)


@dataclass(frozen=True, slots=True)
class Scenario:
    desired: DesiredState
    observed: ObservedState
    policy: PlanPolicy


# Hypothesis spends more time drawing than the planner spends planning, so
# the spec fields are drawn as one pick from their product rather than one by
# one, and every strategy is built once, here.
IMAGE_SETS = (
    ("nginx",),
    ("docker.io/library/nginx:latest",),
    ("nginx:1.27",),
    ("nginx", "redis:7"),
    ("docker.io/library/redis:7", "docker.io/library/nginx:latest"),
    ("busybox@sha256:" + "a" * 64,),
    ("Not A Ref!",),
    ("Not A Ref!", "nginx:1.27"),
)
SECRET_SETS = ((), ("ns/a",), ("ns/b", "ns/a"), ("ns/a", "ns/b", "ns/a"))
FIELDS = tuple(
    itertools.product(IMAGE_SETS, (20, 30), (0, 1, 7), SECRET_SETS)
)  # (images, imageCacheSize, retentionDays, imagePullSecrets)

# Labels, annotations, security groups and the EIP, drawn as one pick too.
METADATA = tuple(
    itertools.product(
        ((), (("team", "web"),), (("team", "api"), ("tier", "edge"))),  # labels
        ((), (("note", "x"),)),  # annotations
        ((), ("sg-a",), ("sg-b", "sg-a")),  # securityGroupIds
        (None, EipAttributes(), EipAttributes(internet_max_bandwidth_out=2)),  # the EIP
    )
)
# What providers keep: the local store (classic), Kubernetes (all, all in place), TKE.
PROVIDER_FIELDS = (
    ProviderFields(),
    ProviderFields(kept=SPEC_FIELDS, updatable=SPEC_FIELDS),
    ProviderFields(
        kept=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, EIP_FIELD},
        updatable=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD},
    ),
)

fields_st = st.sampled_from(FIELDS)
metadata_st = st.sampled_from(METADATA)
provider_fields_st = st.sampled_from(PROVIDER_FIELDS)
names_st = st.sampled_from(NAMES)
desired_names_st = st.lists(names_st, unique=True, max_size=len(NAMES))
status_st = st.sampled_from((CacheStatus.READY,) * 3 + tuple(CacheStatus))  # mostly Ready
owner_st = st.sampled_from((ME, ME, ME, None, "other-controller"))
created_st = st.sampled_from((None, *(NOW - timedelta(hours=h) for h in (1, 5, 48, 400))))
expires_st = st.sampled_from(
    (None, None, None, *(NOW + timedelta(hours=h) for h in (-48, -1, 0, 1, 11, 30, 47, 200)))
)
content_st = st.sampled_from((None, 0, 1, 3 * 1024**3 + 1, 40 * 1024**3))
ratio_st = st.sampled_from((0.0, 0.25, 0.5, 0.75, 1.0))
renew_st = st.sampled_from((None, *(timedelta(hours=h) for h in (0, 6, 24, 48, 96))))
keep_st = st.lists(names_st, max_size=3).map(frozenset)
count_st = st.integers(min_value=0, max_value=8)


@st.composite
def specs_st(draw: st.DrawFn) -> tuple[CacheSpec, ...]:
    specs = []
    for name in sorted(draw(desired_names_st)):
        images, size, retention, secrets = draw(fields_st)
        labels, annotations, groups, eip = draw(metadata_st)
        specs.append(
            CacheSpec(
                name=name,
                images=images,
                image_cache_size_gib=size,
                retention_days=retention,
                image_pull_secrets=secrets,
                labels=labels,
                annotations=annotations,
                security_group_ids=groups,
                eip=eip,
            )
        )
    return tuple(specs)


@st.composite
def observed_st(draw: st.DrawFn, specs: tuple[CacheSpec, ...]) -> tuple[ObservedCache, ...]:
    by_name = {spec.name: spec for spec in specs}
    caches = []
    for index in range(draw(count_st)):
        name = draw(names_st)
        images, size, retention, secrets = draw(fields_st)
        labels, annotations, groups, eip = draw(metadata_st)
        spec = by_name.get(name)
        if spec is not None and draw(st.booleans()):
            # Often the provider already holds what Git asks for (noops, expiry, failures).
            images, size = spec.images, spec.image_cache_size_gib
            retention, secrets = spec.retention_days, spec.image_pull_secrets
            if draw(st.booleans()):
                labels, annotations = spec.labels, spec.annotations
                groups, eip = spec.security_group_ids, spec.eip
        caches.append(
            ObservedCache(
                name=name,
                cache_id=f"imc-{index:03d}",  # providers hand out unique ids
                status=draw(status_st),
                images=images,
                image_cache_size_gib=size,
                retention_days=retention,
                image_pull_secrets=secrets,
                owner=draw(owner_st),
                created_at=draw(created_st),
                expires_at=draw(expires_st),
                content_bytes=draw(content_st),
                labels=labels,
                annotations=annotations,
                security_group_ids=groups,
                eip=eip,
            )
        )
    return tuple(caches)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    policy = PlanPolicy(
        controller_id=ME,
        now=NOW,
        max_delete_ratio=draw(ratio_st),
        allow_mass_delete=draw(st.booleans()),
        renew_before=draw(renew_st),
        keep=draw(keep_st),
    )
    specs = draw(specs_st())
    return Scenario(
        desired=DesiredState(caches=specs, revision="rev"),
        observed=ObservedState(caches=draw(observed_st(specs)), fields=draw(provider_fields_st)),
        policy=policy,
    )


def run(s: Scenario) -> Plan:
    return plan(s.desired, s.observed, policy=s.policy, prices=PRICES)


def provider_spelling(image: str) -> str:
    """Providers may report references in full (`docker.io/library/nginx:latest`)."""
    try:
        return imageref.normalize(image)
    except ImageRefError:
        return image


def fresh(spec: CacheSpec, *, cache_id: str, fields: ProviderFields) -> ObservedCache:
    """What a provider holds right after building `spec`: Ready, ours, a new expiry.

    It reports back only the fields it keeps; the others come back empty.
    """
    kept = fields.kept
    return ObservedCache(
        name=spec.name,
        cache_id=cache_id,
        status=CacheStatus.READY,
        images=tuple(provider_spelling(image) for image in spec.images),
        image_cache_size_gib=spec.image_cache_size_gib,
        retention_days=spec.retention_days,
        image_pull_secrets=spec.image_pull_secrets,
        owner=ME,
        created_at=NOW,
        expires_at=NOW + timedelta(days=spec.retention_days) if spec.retention_days else None,
        prune=spec.prune,
        labels=spec.labels if "metadata.labels" in kept else (),
        annotations=spec.annotations if "metadata.annotations" in kept else (),
        security_group_ids=spec.security_group_ids if SECURITY_GROUPS_FIELD in kept else (),
        eip=spec.eip if EIP_FIELD in kept else None,
    )


def apply(result: Plan, observed: ObservedState) -> ObservedState:
    """A perfect executor: every action succeeds exactly as planned."""
    caches = {c.cache_id: c for c in observed.caches}
    for number, action in enumerate(result.actions):
        if action.kind is ActionKind.NOOP:
            continue
        if action.observed is not None:
            del caches[action.observed.cache_id]
        if action.kind is ActionKind.DELETE:
            continue
        assert action.desired is not None
        # An update changes the cache in place; create and recreate build a new one.
        cache_id = (
            action.observed.cache_id
            if action.kind is ActionKind.UPDATE and action.observed is not None
            else f"new-{number:03d}"
        )
        caches[cache_id] = fresh(action.desired, cache_id=cache_id, fields=observed.fields)
    return ObservedState(caches=tuple(caches.values()), fields=observed.fields)


def owned_names(s: Scenario) -> set[str]:
    return {c.name for c in s.observed.caches if c.owner == ME}


# --- (a) convergence ------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_applying_a_plan_then_planning_again_changes_nothing(s: Scenario) -> None:
    first = run(s)
    if first.refused is not None:
        assert not s.policy.allow_mass_delete
        return
    after = apply(first, s.observed)
    second = plan(s.desired, after, policy=s.policy, prices=PRICES)
    assert second.refused is None
    assert second.changes == (), [(a.kind, a.name, a.reason) for a in second.changes]
    # Whatever was in the way, or kept, still is, and still says so.
    assert second.notices == first.notices


# --- (b) ownership --------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_foreign_and_kept_caches_are_never_touched(s: Scenario) -> None:
    result = run(s)
    desired_names = {c.name for c in s.desired.caches}
    kept = s.policy.keep - desired_names
    owned = owned_names(s)
    for action in result.changes:
        if action.observed is not None:
            assert action.observed.owner == ME, action
            assert action.name not in kept, action
        if action.kind is ActionKind.CREATE:
            # Never a second cache next to one in the way, nor next to our own.
            assert not any(c.name == action.name for c in s.observed.caches), action
    for name in desired_names:
        blocked = name not in owned and any(c.name == name for c in s.observed.caches)
        if blocked:
            assert any(
                n.name == name and n.message.startswith("in the way") for n in result.notices
            )
    for name in kept & owned:
        assert any(
            n.name == name and n.message.startswith("kept: pruning disabled")
            for n in result.notices
        )


# --- (c) the mass-delete guard -------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_the_mass_delete_guard_holds(s: Scenario) -> None:
    result = run(s)
    owned = len(owned_names(s))
    deletes = [a for a in result.actions if a.kind is ActionKind.DELETE]
    counted = sum(not is_duplicate_delete(a) for a in deletes)
    ratio = s.policy.max_delete_ratio
    if result.refused is not None:
        assert not s.policy.allow_mass_delete
        assert counted > 0
        assert counted == owned or counted / owned > ratio
        assert str(counted) in result.refused
        assert "--allow-mass-delete" in result.refused
    elif not s.policy.allow_mass_delete and counted:
        assert counted < owned
        assert counted / owned <= ratio
    # Duplicates are every owned cache beyond the newest, for names not kept.
    desired_names = {c.name for c in s.desired.caches}
    expected_duplicates = 0
    for name in owned_names(s):
        if name in s.policy.keep and name not in desired_names:
            continue
        expected_duplicates += (
            sum(1 for c in s.observed.caches if c.name == name and c.owner == ME) - 1
        )
    assert sum(is_duplicate_delete(a) for a in deletes) == expected_duplicates


# --- (d) determinism, order, cost -------------------------------------------------------


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_gives_the_same_plan_whatever_the_order(s: Scenario, rnd: random.Random) -> None:
    first = run(s)
    assert run(s) == first
    observed = list(s.observed.caches)
    desired = list(s.desired.caches)
    rnd.shuffle(observed)
    rnd.shuffle(desired)
    shuffled = plan(
        DesiredState(caches=tuple(desired), revision=s.desired.revision),
        ObservedState(caches=tuple(observed), fields=s.observed.fields),
        policy=s.policy,
        prices=PRICES,
    )
    assert shuffled == first


@SETTINGS
@given(scenarios())
def test_actions_are_in_documented_order_and_costs_add_up(s: Scenario) -> None:
    result = run(s)
    keys = [
        (ACTION_ORDER.index(a.kind), a.name, a.observed.cache_id if a.observed else "")
        for a in result.actions
    ]
    assert keys == sorted(keys)
    assert all(a.cost is not None and a.cost.currency == PRICES.currency for a in result.actions)
    hourly = sum(a.cost.hourly for a in result.actions if a.cost)
    one_off = sum(a.cost.one_off for a in result.actions if a.cost)
    assert result.cost.hourly == hourly
    assert result.cost.one_off == one_off
    assert result.revision == "rev"
    # Every desired name is accounted for: an action, or a notice saying why not.
    for spec in s.desired.caches:
        assert any(a.name == spec.name and a.desired == spec for a in result.actions) or any(
            n.name == spec.name for n in result.notices
        )


@SETTINGS
@given(scenarios())
def test_an_update_never_changes_a_field_the_provider_cannot_update(s: Scenario) -> None:
    fields = s.observed.fields
    for action in run(s).changes:
        changed = {c.field for c in action.changes} - {"metadata.annotations.gitsync.io/prune"}
        assert changed <= fields.kept, action
        if action.kind is ActionKind.UPDATE:
            assert changed <= fields.updatable, action
        elif action.kind is ActionKind.RECREATE and not changed <= fields.updatable:
            assert action.observed is not None
            ends = ("recreated", f"recreated (while {action.observed.status})")
            assert action.reason.endswith(ends), action

"""The planner, one rule at a time, with small hand-made states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gitsync.errors import ConfigError
from gitsync.model import (
    ANNOTATIONS_FIELD,
    CLASSIC_FIELDS,
    EIP_FIELD,
    LABELS_FIELD,
    SECURITY_GROUPS_FIELD,
    SPEC_FIELDS,
    ActionKind,
    CacheSpec,
    CacheStatus,
    DesiredState,
    EipAttributes,
    FieldChange,
    ObservedCache,
    ObservedState,
    Plan,
    ProviderFields,
    Severity,
)
from gitsync.planning import (
    ACTION_ORDER,
    DUPLICATE_REASON,
    PlanPolicy,
    is_duplicate_delete,
    plan,
)
from gitsync.pricing import PriceTable, action_cost

ME = "gitsync-prod"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
PRICES = PriceTable()
MINUS = "\N{MINUS SIGN}"
ARROW = "\N{RIGHTWARDS ARROW}"


def spec(name: str, *images: str, **fields: object) -> CacheSpec:
    return CacheSpec(name=name, images=images or ("nginx:1.27",), **fields)  # type: ignore[arg-type]


def cache(name: str, *images: str, cache_id: str | None = None, **fields: object) -> ObservedCache:
    values: dict[str, object] = {"status": CacheStatus.READY, "owner": ME}
    values.update(fields)
    return ObservedCache(
        name=name,
        cache_id=cache_id or f"imc-{name}",
        images=images or ("nginx:1.27",),
        **values,  # type: ignore[arg-type]
    )


def run(
    desired: list[CacheSpec],
    observed: list[ObservedCache],
    *,
    revision: str | None = "rev1",
    prices: PriceTable = PRICES,
    fields: ProviderFields | None = None,
    **policy: object,
) -> Plan:
    settings: dict[str, object] = {"controller_id": ME, "now": NOW}
    settings.update(policy)
    return plan(
        DesiredState(caches=tuple(desired), revision=revision),
        ObservedState(caches=tuple(observed), fields=fields or ProviderFields()),
        policy=PlanPolicy(**settings),  # type: ignore[arg-type]
        prices=prices,
    )


def only(result: Plan) -> tuple[ActionKind, str, str]:
    assert len(result.actions) == 1, result.actions
    action = result.actions[0]
    return action.kind, action.name, action.reason


# --- create, noop, update -----------------------------------------------------


def test_missing_cache_is_created() -> None:
    result = run([spec("web")], [])
    assert only(result) == (ActionKind.CREATE, "web", "not in provider")
    assert result.actions[0].desired == spec("web")
    assert result.actions[0].observed is None
    assert result.has_changes
    assert result.refused is None


def test_equal_cache_is_noop() -> None:
    result = run([spec("web", retention_days=7)], [cache("web", retention_days=7)])
    assert only(result) == (ActionKind.NOOP, "web", "up to date")
    assert not result.has_changes


def test_images_compare_normalised_and_as_sets() -> None:
    result = run(
        [spec("web", "nginx", "redis:7")],
        [cache("web", "docker.io/library/redis:7", "docker.io/library/nginx:latest")],
    )
    assert only(result)[0] is ActionKind.NOOP


def test_unparsable_image_compares_as_written() -> None:
    same = run([spec("web", "Not A Ref!")], [cache("web", "Not A Ref!")])
    assert only(same)[0] is ActionKind.NOOP
    different = run([spec("web", "Not A Ref!")], [cache("web", "not-a-ref!")])
    kind, _, reason = only(different)
    assert kind is ActionKind.UPDATE
    assert reason == f"images: +Not A Ref! {MINUS}not-a-ref!"


def test_image_change_is_update_with_plus_minus_reason() -> None:
    result = run([spec("web", "nginx:1.27", "redis:7")], [cache("web", "redis:7", "nginx:1.26")])
    kind, name, reason = only(result)
    assert (kind, name) == (ActionKind.UPDATE, "web")
    assert reason == f"images: +nginx:1.27 {MINUS}nginx:1.26"
    assert result.actions[0].changes == (
        FieldChange("images", before=("nginx:1.26", "redis:7"), after=("nginx:1.27", "redis:7")),
    )


@pytest.mark.parametrize(
    ("desired_fields", "observed_fields", "change", "summary"),
    [
        (
            {"image_cache_size_gib": 30},
            {"image_cache_size_gib": 20},
            FieldChange("imageCacheSize", before=20, after=30),
            f"imageCacheSize: 20 {ARROW} 30",
        ),
        (
            {"retention_days": 7},
            {"retention_days": 0},
            FieldChange("retentionDays", before=0, after=7),
            f"retentionDays: 0 {ARROW} 7",
        ),
        (
            {"image_pull_secrets": ("ns/b", "ns/a")},
            {"image_pull_secrets": ("ns/c", "ns/a")},
            FieldChange("imagePullSecrets", before=("ns/a", "ns/c"), after=("ns/a", "ns/b")),
            f"imagePullSecrets: +ns/b {MINUS}ns/c",
        ),
    ],
)
def test_each_field_change_is_an_update(
    desired_fields: dict[str, Any],
    observed_fields: dict[str, Any],
    change: FieldChange,
    summary: str,
) -> None:
    result = run([spec("web", **desired_fields)], [cache("web", **observed_fields)])
    assert only(result) == (ActionKind.UPDATE, "web", summary)
    assert result.actions[0].changes == (change,)


def test_pull_secrets_compare_as_sets() -> None:
    result = run(
        [spec("web", image_pull_secrets=("ns/a", "ns/b", "ns/a"))],
        [cache("web", image_pull_secrets=("ns/b", "ns/a"))],
    )
    assert only(result)[0] is ActionKind.NOOP


def test_several_changed_fields_are_listed_in_yaml_order() -> None:
    result = run(
        [spec("web", "nginx:2", image_cache_size_gib=40, retention_days=3)],
        [cache("web", "nginx:1", image_cache_size_gib=20, retention_days=1)],
    )
    kind, _, reason = only(result)
    assert kind is ActionKind.UPDATE
    assert [c.field for c in result.actions[0].changes] == [
        "images",
        "imageCacheSize",
        "retentionDays",
    ]
    assert reason == (
        f"images: +nginx:2 {MINUS}nginx:1; imageCacheSize: 20 {ARROW} 40;"
        f" retentionDays: 1 {ARROW} 3"
    )


# --- recreate -----------------------------------------------------------------


def test_expired_cache_is_recreated() -> None:
    expired = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    result = run([spec("web")], [cache("web", expires_at=expired)])
    assert only(result) == (ActionKind.RECREATE, "web", "expired 2026-11-20T03:00:00Z")
    assert result.actions[0].desired == spec("web")
    assert result.actions[0].observed == cache("web", expires_at=expired)


def test_cache_expiring_exactly_now_counts_as_expired() -> None:
    result = run([spec("web")], [cache("web", expires_at=NOW)])
    assert only(result)[0] is ActionKind.RECREATE


def test_expiry_in_other_timezone_is_shown_in_utc() -> None:
    cet = datetime(2026, 11, 20, 5, 0, tzinfo=timezone(timedelta(hours=1)))
    result = run([spec("web")], [cache("web", expires_at=cet)])
    assert only(result)[2] == "expired 2026-11-20T04:00:00Z"


def test_naive_observed_expiry_is_taken_as_utc() -> None:
    result = run([spec("web")], [cache("web", expires_at=datetime(2026, 11, 22, 2, 0))])
    assert only(result) == (ActionKind.RECREATE, "web", "expired 2026-11-22T02:00:00Z")


def test_not_yet_expired_cache_without_renewal_is_noop() -> None:
    result = run([spec("web")], [cache("web", expires_at=NOW + timedelta(seconds=1))])
    assert only(result)[0] is ActionKind.NOOP


def test_cache_inside_renewal_window_is_recreated() -> None:
    result = run(
        [spec("web", retention_days=7)],
        [cache("web", retention_days=7, expires_at=NOW + timedelta(days=1))],
        renew_before=timedelta(days=2),
    )
    assert only(result) == (
        ActionKind.RECREATE,
        "web",
        "expires in 1 day, renewing 2 days before",
    )


def test_cache_outside_renewal_window_is_noop() -> None:
    result = run(
        [spec("web", retention_days=7)],
        [cache("web", retention_days=7, expires_at=NOW + timedelta(days=2, seconds=1))],
        renew_before=timedelta(days=2),
    )
    assert only(result) == (ActionKind.NOOP, "web", "up to date")


def test_renewal_window_is_at_most_half_the_retention() -> None:
    # A 1-day retention with renew_before 2 days would otherwise rebuild a
    # fresh cache on every pass; the window shrinks to 12 hours.
    fresh = cache("web", retention_days=1, expires_at=NOW + timedelta(hours=23))
    kind, _, _ = only(run([spec("web", retention_days=1)], [fresh], renew_before=timedelta(days=2)))
    assert kind is ActionKind.NOOP
    late = cache("web", retention_days=1, expires_at=NOW + timedelta(hours=11, minutes=30))
    kind, _, reason = only(
        run([spec("web", retention_days=1)], [late], renew_before=timedelta(days=2))
    )
    assert kind is ActionKind.RECREATE
    assert reason == (
        "expires in 11 hours 30 minutes, renewing 12 hours before"
        " (at most half of its 1 day retention)"
    )


@pytest.mark.parametrize("status", [CacheStatus.FAILED, CacheStatus.UPDATE_FAILED])
def test_failed_cache_is_recreated(status: CacheStatus) -> None:
    result = run([spec("web")], [cache("web", status=status)])
    assert only(result) == (ActionKind.RECREATE, "web", f"status {status.value}")


def test_failed_cache_reason_is_readable() -> None:
    result = run([spec("web")], [cache("web", status=CacheStatus.FAILED)])
    assert only(result)[2] == "status Failed"


def test_recreate_also_lists_spec_changes() -> None:
    result = run(
        [spec("web", "nginx:1.27")],
        [cache("web", "nginx:1.26", status=CacheStatus.FAILED, expires_at=NOW)],
    )
    kind, _, reason = only(result)
    assert kind is ActionKind.RECREATE
    assert reason == (
        f"status Failed; expired 2026-11-22T03:00:00Z; images: +nginx:1.27 {MINUS}nginx:1.26"
    )
    assert [c.field for c in result.actions[0].changes] == ["images"]


@pytest.mark.parametrize("status", [CacheStatus.PENDING, CacheStatus.UPDATING])
def test_build_in_progress_with_matching_spec_is_noop(status: CacheStatus) -> None:
    result = run([spec("web")], [cache("web", status=status)])
    assert only(result) == (ActionKind.NOOP, "web", f"in progress: status {status.value}")


def test_build_in_progress_with_different_spec_is_update() -> None:
    result = run(
        [spec("web", image_cache_size_gib=30)],
        [cache("web", status=CacheStatus.PENDING, image_cache_size_gib=20)],
    )
    assert only(result) == (
        ActionKind.UPDATE,
        "web",
        f"imageCacheSize: 20 {ARROW} 30 (while Pending)",
    )


# --- labels, annotations, security groups, the EIP: what the provider keeps ---------

# Like the Kubernetes backend: the operator takes every field, so every field updates.
EVERYTHING = ProviderFields(kept=SPEC_FIELDS, updatable=SPEC_FIELDS)
# Like the Tencent Cloud backend: no labels, the EIP only at creation.
CLOUD = ProviderFields(
    kept=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, EIP_FIELD},
    updatable=CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD},
    why_not=((EIP_FIELD, "UpdateImageCache cannot change the EIP settings"),),
)
EIP2 = EipAttributes(internet_max_bandwidth_out=2)


def test_a_label_change_alone_is_an_update_that_says_so() -> None:
    result = run(
        [spec("web", labels=(("team", "web"), ("tier", "edge")))],
        [cache("web", labels=(("team", "api"), ("tier", "edge")))],
        fields=EVERYTHING,
    )
    assert only(result) == (ActionKind.UPDATE, "web", f"metadata.labels: +team=web {MINUS}team=api")
    assert result.actions[0].changes == (
        FieldChange(
            LABELS_FIELD, before=("team=api", "tier=edge"), after=("team=web", "tier=edge")
        ),
    )


def test_an_annotation_change_alone_is_an_update_that_says_so() -> None:
    want = (("note", "x" * 100), ("owner", "platform"))
    result = run(
        [spec("web", annotations=want)],
        [cache("web", annotations=(("owner", "web"), ("stale", "yes")))],
        fields=EVERYTHING,
    )
    kind, _, reason = only(result)
    assert kind is ActionKind.UPDATE
    assert reason == (
        f"metadata.annotations: +note={'x' * 59}\N{HORIZONTAL ELLIPSIS} +owner=platform"
        f" {MINUS}owner=web {MINUS}stale"
    )
    assert result.actions[0].changes[0].field == ANNOTATIONS_FIELD
    assert result.actions[0].changes[0].after == ("note=" + "x" * 100, "owner=platform")


def test_a_security_group_change_is_an_update_and_order_counts() -> None:
    result = run(
        [spec("web", security_group_ids=("sg-b", "sg-a"))],
        [cache("web", security_group_ids=("sg-a", "sg-b"))],
        fields=CLOUD,
    )
    assert only(result) == (
        ActionKind.UPDATE,
        "web",
        f"securityGroupIds: [sg-a, sg-b] {ARROW} [sg-b, sg-a]",
    )
    assert result.actions[0].changes == (
        FieldChange(SECURITY_GROUPS_FIELD, before=("sg-a", "sg-b"), after=("sg-b", "sg-a")),
    )


def test_an_eip_change_the_provider_cannot_update_is_a_recreate_that_says_why() -> None:
    result = run([spec("web", eip=EIP2)], [cache("web", eip=None)], fields=CLOUD)
    kind, _, reason = only(result)
    assert kind is ActionKind.RECREATE
    assert reason == (
        f'{EIP_FIELD}: (none) {ARROW} {{"InternetMaxBandwidthOut":2}};'
        " UpdateImageCache cannot change the EIP settings: recreated"
    )
    assert result.actions[0].changes == (
        FieldChange(EIP_FIELD, before=None, after='{"InternetMaxBandwidthOut":2}'),
    )
    # A recreate costs a new build, like any other.
    cost = result.actions[0].cost
    assert cost is not None
    assert cost.one_off > 0
    assert cost == action_cost(
        ActionKind.RECREATE,
        desired=result.actions[0].desired,
        observed=result.actions[0].observed,
        prices=PRICES,
    )


def test_the_eip_compares_by_meaning_and_removing_it_recreates_too() -> None:
    same = run([spec("web", eip=EIP2)], [cache("web", eip=EIP2)], fields=CLOUD)
    assert only(same) == (ActionKind.NOOP, "web", "up to date")
    removed = run([spec("web")], [cache("web", eip=EipAttributes())], fields=CLOUD)
    kind, _, reason = only(removed)
    assert kind is ActionKind.RECREATE
    assert reason.startswith(f"{EIP_FIELD}: {{}} {ARROW} (none);")


def test_an_updatable_and_a_fixed_change_together_recreate_while_building() -> None:
    result = run(
        [spec("web", "redis:7", eip=EIP2)],
        [cache("web", status=CacheStatus.UPDATING)],
        fields=CLOUD,
    )
    kind, _, reason = only(result)
    assert kind is ActionKind.RECREATE
    assert reason == (
        f"images: +redis:7 {MINUS}nginx:1.27; {EIP_FIELD}: (none) {ARROW}"
        ' {"InternetMaxBandwidthOut":2}; UpdateImageCache cannot change the EIP settings:'
        " recreated (while Updating)"
    )


def test_a_failed_cache_with_a_fixed_change_names_both_reasons() -> None:
    result = run([spec("web", eip=EIP2)], [cache("web", status=CacheStatus.FAILED)], fields=CLOUD)
    kind, _, reason = only(result)
    assert kind is ActionKind.RECREATE
    assert reason.startswith("status Failed; ")
    assert reason.endswith("UpdateImageCache cannot change the EIP settings: recreated")


def test_fields_the_provider_does_not_keep_are_never_compared() -> None:
    """A provider that cannot report a field would otherwise plan an update on every pass."""
    desired = spec(
        "web",
        labels=(("team", "web"),),
        annotations=(("note", "x"),),
        security_group_ids=("sg-a",),
        eip=EIP2,
    )
    for fields in (ProviderFields(), CLOUD):
        observed = cache(
            "web",
            security_group_ids=desired.security_group_ids if fields is CLOUD else (),
            eip=EIP2 if fields is CLOUD else None,
        )
        assert only(run([desired], [observed], fields=fields))[0] is ActionKind.NOOP


def test_a_kept_field_that_cannot_update_and_has_no_reason_gets_a_generic_one() -> None:
    fields = ProviderFields(kept=CLASSIC_FIELDS | {LABELS_FIELD})
    result = run([spec("web", labels=(("a", "b"),))], [cache("web")], fields=fields)
    kind, _, reason = only(result)
    assert kind is ActionKind.RECREATE
    assert reason.endswith(f"the provider cannot change {LABELS_FIELD} in place: recreated")


def test_provider_fields_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="unknown"):
        ProviderFields(kept=CLASSIC_FIELDS | {"spec.typo"})
    with pytest.raises(ValueError, match="updatable only if it is kept"):
        ProviderFields(updatable=CLASSIC_FIELDS | {LABELS_FIELD})
    with pytest.raises(ValueError, match="classic fields"):
        ProviderFields(kept=frozenset({"images"}), updatable=frozenset({"images"}))


# --- ownership ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "described"), [(None, "no owner"), ("gitsync-dev", "owned by controller")]
)
def test_foreign_cache_in_the_way_gets_a_notice_and_no_action(
    owner: str | None, described: str
) -> None:
    foreign = cache("web", "redis:6", owner=owner, cache_id="imc-x")
    result = run([spec("web")], [foreign])
    assert result.actions == ()
    assert len(result.notices) == 1
    notice = result.notices[0]
    assert notice.name == "web"
    assert notice.severity is Severity.WARNING
    assert notice.message.startswith("in the way:")
    assert "imc-x" in notice.message
    assert described in notice.message
    assert "Delete that cache" in notice.message
    assert "rename the spec" in notice.message


def test_foreign_caches_not_in_git_are_ignored_silently() -> None:
    result = run(
        [],
        [cache("theirs", owner=None), cache("other", owner="someone-else")],
    )
    assert result.actions == ()
    assert result.notices == ()
    assert result.refused is None


def test_owned_cache_is_matched_even_when_a_foreign_one_shares_its_name() -> None:
    result = run(
        [spec("web", image_cache_size_gib=30)],
        [cache("web", owner=None, cache_id="imc-a"), cache("web", cache_id="imc-b")],
    )
    kind, _, _ = only(result)
    assert kind is ActionKind.UPDATE
    assert result.actions[0].observed is not None
    assert result.actions[0].observed.cache_id == "imc-b"
    assert result.notices == ()


# --- delete and keep ----------------------------------------------------------------


def test_owned_cache_not_in_git_is_deleted() -> None:
    result = run([spec("a"), spec("b")], [cache("a"), cache("b"), cache("old")])
    deletes = [a for a in result.actions if a.kind is ActionKind.DELETE]
    assert [(a.name, a.reason) for a in deletes] == [("old", "not in Git")]
    assert deletes[0].observed == cache("old")
    assert deletes[0].desired is None
    assert result.refused is None


def test_kept_cache_is_not_deleted_and_gets_a_notice() -> None:
    result = run([spec("a")], [cache("a"), cache("old")], keep=frozenset({"old"}))
    assert [a.kind for a in result.actions] == [ActionKind.NOOP]
    assert len(result.notices) == 1
    assert result.notices[0].name == "old"
    assert result.notices[0].message.startswith("kept: pruning disabled")
    assert result.notices[0].severity is Severity.INFO


def test_keep_does_not_stop_updates_of_caches_still_in_git() -> None:
    result = run([spec("a", image_cache_size_gib=40)], [cache("a")], keep=frozenset({"a"}))
    assert only(result)[0] is ActionKind.UPDATE
    assert result.notices == ()


# --- duplicates -----------------------------------------------------------------------


def test_duplicates_keep_the_newest_and_delete_the_others() -> None:
    old = cache("web", cache_id="imc-old", created_at=NOW - timedelta(days=2))
    new = cache("web", cache_id="imc-new", created_at=NOW - timedelta(days=1))
    unknown = cache("web", cache_id="imc-zzz", created_at=None)
    result = run([spec("web")], [old, unknown, new])
    assert [(a.kind, a.observed.cache_id if a.observed else None) for a in result.actions] == [
        (ActionKind.DELETE, "imc-old"),
        (ActionKind.DELETE, "imc-zzz"),
        (ActionKind.NOOP, "imc-new"),
    ]
    for action in result.actions[:2]:
        assert action.reason.startswith(DUPLICATE_REASON)
        assert "imc-new" in action.reason
        assert is_duplicate_delete(action)
    assert not is_duplicate_delete(result.actions[2])
    # One owned name, no deletes Git asked for: the guard has nothing to say.
    assert result.refused is None


def test_duplicate_tie_on_created_at_is_broken_by_cache_id() -> None:
    same = NOW - timedelta(days=1)
    a = cache("web", cache_id="imc-a", created_at=same)
    b = cache("web", cache_id="imc-b", created_at=same)
    for order in ([a, b], [b, a]):
        result = run([spec("web")], order)
        kept = [x for x in result.actions if x.kind is ActionKind.NOOP]
        assert kept[0].observed == b


def test_duplicates_of_a_name_dropped_from_git_are_all_deleted_but_count_once() -> None:
    result = run(
        [spec("a"), spec("b")],
        [
            cache("a"),
            cache("b"),
            cache("gone", cache_id="imc-1", created_at=NOW - timedelta(hours=2)),
            cache("gone", cache_id="imc-2", created_at=NOW - timedelta(hours=1)),
        ],
    )
    deletes = [a for a in result.actions if a.kind is ActionKind.DELETE]
    assert [(a.observed.cache_id if a.observed else "", a.reason) for a in deletes] == [
        ("imc-1", f"{DUPLICATE_REASON} of imc-2, the newest cache named gone"),
        ("imc-2", "not in Git"),
    ]
    # 1 of 3 owned names: under the default ratio.
    assert result.refused is None


def test_kept_name_keeps_its_duplicates_too() -> None:
    result = run(
        [],
        [cache("old", cache_id="imc-1"), cache("old", cache_id="imc-2")],
        keep=frozenset({"old"}),
    )
    assert result.actions == ()
    assert "imc-1" in result.notices[0].message
    assert "imc-2" in result.notices[0].message


def test_duplicate_desired_names_are_a_wiring_bug() -> None:
    with pytest.raises(ValueError, match="names cache 'web' twice"):
        run([spec("web"), spec("web", "redis")], [])


# --- mass-delete guard --------------------------------------------------------


def test_deleting_the_only_owned_cache_is_refused() -> None:
    result = run([], [cache("solo")])
    assert result.refused is not None
    assert "all 1 cache" in result.refused
    assert "--allow-mass-delete" in result.refused
    assert "--max-delete-ratio" in result.refused
    # The actions are still there for `gitsync plan` to show.
    assert only(result)[:2] == (ActionKind.DELETE, "solo")


def test_deleting_all_owned_caches_is_refused_even_with_ratio_one() -> None:
    result = run([], [cache("a"), cache("b")], max_delete_ratio=1.0)
    assert result.refused is not None
    assert "all 2 caches" in result.refused
    assert "a, b" in result.refused


def test_deleting_half_is_allowed_at_the_default_ratio() -> None:
    result = run([spec("a"), spec("b")], [cache("a"), cache("b"), cache("c"), cache("d")])
    assert sum(a.kind is ActionKind.DELETE for a in result.actions) == 2
    assert result.refused is None


def test_deleting_more_than_the_ratio_is_refused_with_the_numbers() -> None:
    result = run([spec("a")], [cache("a"), cache("b"), cache("c"), cache("d")])
    assert result.refused is not None
    assert "3 of 4 owned caches" in result.refused
    assert "75%" in result.refused
    assert "--max-delete-ratio 0.5" in result.refused
    assert "--allow-mass-delete" in result.refused
    assert [a.name for a in result.actions if a.kind is ActionKind.DELETE] == ["b", "c", "d"]


def test_lower_ratio_refuses_smaller_deletions() -> None:
    observed = [cache("a"), cache("b"), cache("c"), cache("d")]
    desired = [spec("a"), spec("b"), spec("c")]
    assert run(desired, observed, max_delete_ratio=0.25).refused is None
    assert run(desired, observed, max_delete_ratio=0.2).refused is not None


def test_allow_mass_delete_lifts_the_guard() -> None:
    result = run([], [cache("a"), cache("b")], allow_mass_delete=True)
    assert result.refused is None
    assert [a.kind for a in result.actions] == [ActionKind.DELETE, ActionKind.DELETE]


def test_kept_and_foreign_caches_do_not_trigger_the_guard() -> None:
    result = run(
        [],
        [cache("kept"), cache("theirs", owner=None)],
        keep=frozenset({"kept"}),
    )
    assert result.actions == ()
    assert result.refused is None


def test_kept_caches_count_as_owned_for_the_ratio() -> None:
    # 1 delete of 2 owned names (one kept) is 50%: allowed, and not "all".
    result = run([], [cache("a"), cache("kept")], keep=frozenset({"kept"}))
    assert only(result)[:2] == (ActionKind.DELETE, "a")
    assert result.refused is None


def test_empty_everything_is_an_empty_plan() -> None:
    result = run([], [])
    assert result.actions == ()
    assert result.refused is None
    assert (result.cost.hourly, result.cost.one_off) == (0.0, 0.0)


# --- order, cost, revision ------------------------------------------------------------


def test_actions_are_ordered_creates_recreates_updates_deletes_noops() -> None:
    desired = [
        spec("n2"),
        spec("c2"),
        spec("u1", image_cache_size_gib=30),
        spec("r2"),
        spec("n1"),
        spec("c1"),
        spec("r1"),
        spec("u2", retention_days=3),
    ]
    observed = [
        cache("d2"),
        cache("u2"),
        cache("n1"),
        cache("r1", status=CacheStatus.FAILED),
        cache("u1"),
        cache("r2", expires_at=NOW - timedelta(hours=1)),
        cache("d1"),
        cache("n2"),
        *[cache(f"z{i}") for i in range(4)],  # keep deletes under the ratio
    ]
    desired += [spec(f"z{i}") for i in range(4)]
    result = run(desired, observed)
    assert result.refused is None
    assert [(a.kind, a.name) for a in result.actions] == [
        (ActionKind.CREATE, "c1"),
        (ActionKind.CREATE, "c2"),
        (ActionKind.RECREATE, "r1"),
        (ActionKind.RECREATE, "r2"),
        (ActionKind.UPDATE, "u1"),
        (ActionKind.UPDATE, "u2"),
        (ActionKind.DELETE, "d1"),
        (ActionKind.DELETE, "d2"),
        (ActionKind.NOOP, "n1"),
        (ActionKind.NOOP, "n2"),
        *[(ActionKind.NOOP, f"z{i}") for i in range(4)],
    ]
    assert ACTION_ORDER == (
        ActionKind.CREATE,
        ActionKind.RECREATE,
        ActionKind.UPDATE,
        ActionKind.DELETE,
        ActionKind.NOOP,
    )
    assert result.changes == result.actions[:8]


def test_notices_are_sorted_by_name() -> None:
    result = run(
        [spec("b"), spec("a")],
        [cache("b", owner=None), cache("a", owner=None), cache("k")],
        keep=frozenset({"k"}),
    )
    assert [n.name for n in result.notices] == ["a", "b", "k"]


def test_every_action_carries_its_cost_and_the_plan_sums_them() -> None:
    prices = PriceTable(currency="USD", snapshot_per_gib_hour=0.01, instance_per_hour=1.0)
    result = run(
        [
            spec("new", image_cache_size_gib=40),
            spec("same"),
            spec("grow", image_cache_size_gib=60),
            spec("keep1"),
            spec("keep2"),
        ],
        [
            cache("same"),
            cache("grow", image_cache_size_gib=20, content_bytes=5 * 1024**3),
            cache("gone", image_cache_size_gib=30),
            cache("keep1"),
            cache("keep2"),
        ],
        prices=prices,
    )
    assert result.refused is None
    by_name = {a.name: a for a in result.actions}
    for action in result.actions:
        assert action.cost == action_cost(
            action.kind, desired=action.desired, observed=action.observed, prices=prices
        )
    assert by_name["same"].cost is not None
    assert (by_name["same"].cost.hourly, by_name["same"].cost.one_off) == (0.0, 0.0)
    new_cost, gone_cost = by_name["new"].cost, by_name["gone"].cost
    assert new_cost is not None
    assert gone_cost is not None
    assert new_cost.hourly == pytest.approx(40 * 0.01)
    assert gone_cost.hourly == pytest.approx(-30 * 0.01)
    # "grow" keeps its images, so its 5 GiB content stays: no standing change.
    grow_cost = by_name["grow"].cost
    assert grow_cost is not None
    assert grow_cost.hourly == pytest.approx(0.0)
    assert grow_cost.one_off > 0
    assert result.cost.currency == "USD"
    assert result.cost.hourly == pytest.approx(sum(a.cost.hourly for a in result.actions if a.cost))
    assert result.cost.one_off == pytest.approx(
        sum(a.cost.one_off for a in result.actions if a.cost)
    )
    assert result.cost.hourly == pytest.approx(0.1)
    assert result.cost.monthly == pytest.approx(0.1 * 730 + result.cost.one_off)


def test_revision_is_carried_through() -> None:
    assert run([spec("a")], [], revision="3f9c0a1").revision == "3f9c0a1"
    assert run([spec("a")], [], revision=None).revision is None


# --- policy validation ----------------------------------------------------------------


def test_policy_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PlanPolicy(controller_id=ME, now=datetime(2026, 11, 22, 3, 0))


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_policy_rejects_ratio_outside_zero_to_one(ratio: float) -> None:
    with pytest.raises(ConfigError, match="--max-delete-ratio"):
        PlanPolicy(controller_id=ME, now=NOW, max_delete_ratio=ratio)


def test_policy_rejects_negative_renew_before() -> None:
    with pytest.raises(ConfigError, match="--renew-before"):
        PlanPolicy(controller_id=ME, now=NOW, renew_before=timedelta(hours=-1))


def test_policy_rejects_empty_controller_id() -> None:
    with pytest.raises(ConfigError, match="--controller-id"):
        PlanPolicy(controller_id=" ", now=NOW)

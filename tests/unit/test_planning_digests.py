"""The planner's moved-tag decision (`gitsync.digests`), one rule at a time, and the status rows.

Hand-made states: a cache holding a digest for `app:1`, the digest the
refresher last resolved, and the provider's way of following (rebuild from
the tag, or pin).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from gitsync import digests, reports
from gitsync.digests import ResolvedDigest, TagDigests
from gitsync.model import (
    ActionKind,
    CacheSpec,
    CacheStatus,
    DesiredState,
    ObservedCache,
    ObservedState,
    ProviderFields,
)
from gitsync.planning import NoopMemo, PlanPolicy, plan, spec_changes
from gitsync.pricing import PriceTable, action_cost
from gitsync.providers.base import KUBERNETES_FIELDS, LOCAL_FIELDS

ME = "gitsync"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
BUILT = NOW - timedelta(hours=2)
OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
APP = "registry.example.com/team/app:1"
KEY = "registry.example.com/team/app:1"
PINNING = ProviderFields(pins_digests=True)
ARROW = "\N{RIGHTWARDS ARROW}"


def spec(*images: str, refresh: float | None = 3600.0, **fields: object) -> CacheSpec:
    return CacheSpec(
        name="web",
        images=images or (APP,),
        refresh_seconds=refresh,
        **fields,  # type: ignore[arg-type]
    )


def held(*images: str, digest: str = OLD, **fields: object) -> ObservedCache:
    """A Ready cache of the local kind: its snapshot recorded `digest` for each image."""
    written = images or (APP,)
    values: dict[str, object] = {
        "status": CacheStatus.READY,
        "owner": ME,
        "image_digests": tuple((image, digest) for image in written),
        "image_digests_at": BUILT,
    }
    values.update(fields)
    return ObservedCache(name="web", cache_id="imc-web", images=written, **values)  # type: ignore[arg-type]


def tags(digest: str = NEW, *, at: datetime = NOW, every_cache: bool = False) -> TagDigests:
    return TagDigests(
        resolved=MappingProxyType({KEY: ResolvedDigest(digest=digest, at=at)}),
        every_cache=every_cache,
    )


def one(
    desired: CacheSpec | None,
    observed: ObservedCache | None,
    found: TagDigests | None,
    *,
    fields: ProviderFields = LOCAL_FIELDS,
    memo: NoopMemo | None = None,
):  # type: ignore[no-untyped-def]
    the_plan = plan(
        DesiredState(caches=(desired,) if desired else ()),
        ObservedState(caches=(observed,) if observed else (), fields=fields),
        policy=PlanPolicy(controller_id=ME, now=NOW),
        prices=PriceTable(),
        memo=memo,
        tags=found,
    )
    (action,) = the_plan.actions
    return action


# ------------------------------------------------------------- rebuilding from the tag


def test_a_moved_tag_is_an_update_that_names_image_old_and_new_digest() -> None:
    desired = spec()
    action = one(desired, held(), tags())
    assert action.kind is ActionKind.UPDATE
    assert action.reason == f"tag moved: {APP} {OLD} {ARROW} {NEW}"
    assert action.desired == desired  # Git's spec: the local store pulls the tag again
    assert action.changes == ()  # nothing in Git differs
    # Priced as the rebuild it is, though the spec shows no change: one build instance.
    assert action.cost is not None
    assert (
        action.cost.one_off
        == action_cost(
            ActionKind.RECREATE, desired=desired, observed=held(), prices=PriceTable()
        ).one_off
    )
    assert action.cost.one_off > 0


def test_the_same_digest_is_up_to_date() -> None:
    assert one(spec(), held(digest=NEW), tags()).kind is ActionKind.NOOP


def test_a_resolution_from_before_the_snapshot_says_nothing_about_it() -> None:
    # The tag moved after the refresher asked and before the cache was (re)built: the
    # cache holds newer content than the resolution, which must not rebuild it.
    stale = tags(OLD, at=BUILT - timedelta(seconds=1))
    assert one(spec(), held(digest=NEW), stale).kind is ActionKind.NOOP
    same_second = tags(OLD, at=BUILT)
    assert one(spec(), held(digest=NEW), same_second).kind is ActionKind.NOOP


def test_only_following_caches_are_rebuilt() -> None:
    assert one(spec(refresh=None), held(), tags()).kind is ActionKind.NOOP
    assert one(spec(refresh=None), held(), tags(every_cache=True)).kind is ActionKind.UPDATE
    # gitsync.io/refresh: 0 turns a cache off even when --refresh-interval is set.
    assert one(spec(refresh=0.0), held(), tags(every_cache=True)).kind is ActionKind.NOOP


def test_without_digests_nothing_is_followed() -> None:
    assert one(spec(), held(), None).kind is ActionKind.NOOP
    assert one(spec(), held(), TagDigests()).kind is ActionKind.NOOP


def test_an_image_given_by_digest_never_moves() -> None:
    pinned_image = f"registry.example.com/team/app@{OLD}"
    desired = spec(pinned_image)
    cache = held(pinned_image)
    found = TagDigests(
        resolved=MappingProxyType(
            {f"registry.example.com/team/app@{OLD}": ResolvedDigest(NEW, NOW)}
        )
    )
    assert one(desired, cache, found).kind is ActionKind.NOOP


def test_a_build_in_progress_is_left_alone() -> None:
    for status in (CacheStatus.UPDATING, CacheStatus.PENDING):
        action = one(spec(), held(status=status), tags())
        assert action.kind is ActionKind.NOOP
        assert action.reason == f"in progress: status {status}"


def test_an_unknown_held_digest_rebuilds_nothing_on_the_local_store() -> None:
    assert one(spec(), held(image_digests=()), tags()).kind is ActionKind.NOOP


def test_another_change_keeps_its_kind_and_also_names_the_move() -> None:
    action = one(spec(image_cache_size_gib=40), held(), tags())
    assert action.kind is ActionKind.UPDATE
    assert action.reason == f"imageCacheSize: 20 {ARROW} 40; tag moved: {APP} {OLD} {ARROW} {NEW}"
    failed = one(spec(), held(status=CacheStatus.FAILED), tags())
    assert failed.kind is ActionKind.RECREATE
    assert failed.reason.startswith("status Failed")


def test_a_remembered_no_op_still_sees_the_move() -> None:
    memo = NoopMemo()
    desired, cache = spec(), held()
    assert one(desired, cache, tags(OLD), memo=memo).kind is ActionKind.NOOP
    assert one(desired, cache, tags(NEW), memo=memo).kind is ActionKind.UPDATE


# ---------------------------------------------------------------------- pinning


def test_a_pinning_provider_gets_the_moved_image_pinned_while_git_keeps_the_tag() -> None:
    cache = held(f"{APP}@{OLD}", image_digests=(), image_digests_at=None)
    action = one(spec(), cache, tags(), fields=KUBERNETES_FIELDS)
    assert action.kind is ActionKind.UPDATE
    assert action.reason == f"tag moved: {APP} {OLD} {ARROW} {NEW}"
    assert action.desired is not None
    assert action.desired.images == (f"{APP}@{NEW}",)


def test_a_pin_reads_as_the_bare_tag_so_there_is_no_fight() -> None:
    pinned_cache = held(f"{APP}@{NEW}", image_digests=(), image_digests_at=None)
    assert one(spec(), pinned_cache, tags(), fields=PINNING).kind is ActionKind.NOOP
    # Without digests to follow (`gitsync plan`, or refresh off) the pin is still no change.
    assert one(spec(), pinned_cache, None, fields=PINNING).kind is ActionKind.NOOP
    assert spec_changes(spec(), pinned_cache, fields=PINNING) == ()


def test_a_pin_git_did_not_ask_for_is_a_change() -> None:
    fields = PINNING
    other_tag = held(f"registry.example.com/team/app:2@{NEW}", image_digests=())
    assert [c.field for c in spec_changes(spec(), other_tag, fields=fields)] == ["images"]
    git_pins = spec(f"{APP}@{OLD}")
    cache_pins = held(f"{APP}@{NEW}", image_digests=())
    assert [c.field for c in spec_changes(git_pins, cache_pins, fields=fields)] == ["images"]
    bare_cache = held(APP, image_digests=())
    assert [c.field for c in spec_changes(git_pins, bare_cache, fields=fields)] == ["images"]


def test_a_pinning_provider_with_an_unknown_digest_is_pinned_once() -> None:
    bare = held(image_digests=(), image_digests_at=None)
    action = one(spec(), bare, tags(), fields=PINNING)
    assert action.kind is ActionKind.UPDATE
    assert action.reason == f"follow tag {APP}: the digest the cache holds is unknown; pinning it"
    assert action.desired is not None
    assert action.desired.images == (f"{APP}@{NEW}",)


def test_a_pinning_provider_builds_pinned() -> None:
    created = one(spec(), None, tags(), fields=PINNING)
    assert created.kind is ActionKind.CREATE
    assert created.desired is not None
    assert created.desired.images == (f"{APP}@{NEW}",)
    assert created.reason == "not in provider"
    local = one(spec(), None, tags())
    assert local.desired is not None
    assert local.desired.images == (APP,)
    resized = one(
        spec(image_cache_size_gib=40),
        held(f"{APP}@{NEW}", image_digests=()),
        tags(),
        fields=PINNING,
    )
    assert resized.kind is ActionKind.UPDATE
    assert resized.desired is not None
    assert resized.desired.images == (f"{APP}@{NEW}",)


def test_pin_keeps_the_spelling_and_writes_an_implicit_tag() -> None:
    assert digests.pin("nginx", NEW) == f"nginx:latest@{NEW}"
    assert digests.pin("team/api:1.4", NEW) == f"team/api:1.4@{NEW}"
    assert digests.pin("localhost:5000/x", NEW) == f"localhost:5000/x:latest@{NEW}"
    cache = held(digests.pin("nginx", NEW), image_digests=())
    assert digests.held_digests(cache) == {"docker.io/library/nginx:latest": NEW}


def test_the_provider_record_wins_over_a_pin() -> None:
    cache = held(f"{APP}@{OLD}", image_digests=((APP, NEW),))
    assert digests.held_digests(cache) == {KEY: NEW}


# ----------------------------------------------------------------------- status


def test_status_rows_show_held_and_resolved_with_the_time() -> None:
    pinned_image = f"registry.example.com/team/db@{OLD}"
    cache = held(APP, pinned_image, image_digests=((APP, OLD), (pinned_image, OLD)))
    failing = ResolvedDigest(digest=NEW, at=NOW, error="503", failed_at=NOW + timedelta(hours=1))
    rows = digests.status_rows(cache, {KEY: failing})
    assert rows == [
        {
            "image": APP,
            "held": OLD,
            "resolved": NEW,
            "resolvedAt": "2026-11-22T03:00:00Z",
            "error": "503",
        },
        {"image": pinned_image, "held": OLD, "resolved": None, "resolvedAt": None, "error": None},
    ]
    view = reports.StatusView(
        provider="local",
        controller_id=ME,
        applied_revision="abc",
        newest_revision="abc",
        spec_valid=True,
        last_error=None,
        diagnostics=(),
        caches=(cache,),
        resolved={KEY: failing},
    )
    (entry,) = reports.status_dict(view)["caches"]  # type: ignore[misc]
    assert entry["imageDigests"] == rows
    text = reports.format_status(view, output_format="text")
    assert f"web    {APP}" in text
    assert f"{OLD}  {NEW} at 2026-11-22T03:00:00Z (last try failed: 503)" in text
    without = reports.format_status(replace(view, resolved=None), output_format="text")
    assert f"{OLD}  -" in without

"""Cost model: every figure below is worked out by hand from the billing rules."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from gitsync.errors import ConfigError
from gitsync.model import HOURS_PER_MONTH, ActionKind, CacheSpec, CacheStatus, ObservedCache
from gitsync.pricing import (
    GIB,
    PriceTable,
    action_cost,
    creation_cost,
    pod_disk_cost,
    pull_hours,
    snapshot_cost_per_hour,
    snapshot_size_gib,
)

# Round numbers so the expected values can be checked with pencil and paper.
PRICES = PriceTable(
    currency="USD",
    instance_per_hour=0.5,
    disk_per_gib_hour=0.01,
    snapshot_per_gib_hour=0.001,
    creation_overhead_minutes=6.0,
    pull_bytes_per_second=100_000_000.0,
    assumed_pull_minutes=12.0,
)


def observed(
    *, size: int = 50, content: int | None = None, images: tuple[str, ...] = ("a:1",)
) -> ObservedCache:
    return ObservedCache(
        name="web",
        cache_id="imc-1",
        status=CacheStatus.READY,
        images=images,
        image_cache_size_gib=size,
        content_bytes=content,
        owner="gitsync",
    )


def spec(*, size: int = 50, images: tuple[str, ...] = ("a:1",)) -> CacheSpec:
    return CacheSpec(name="web", images=images, image_cache_size_gib=size)


# --- defaults ---------------------------------------------------------------


def test_default_table_is_cny_with_positive_prices() -> None:
    table = PriceTable()
    assert table.currency == "CNY"
    # 2 vCPU + 4 GiB at roughly 0.12 and 0.03 per hour.
    assert table.instance_per_hour == pytest.approx(2 * 0.12 + 4 * 0.03)
    # Snapshot storage is cheaper than a live disk of the same size.
    assert 0 < table.snapshot_per_gib_hour < table.disk_per_gib_hour


# --- snapshot ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, 50),  # unknown: imageCacheSize is the upper bound
        (0, 0),
        (1, 1),  # rounded up to whole GiB
        (GIB, 1),
        (GIB + 1, 2),
        (3 * GIB, 3),
    ],
)
def test_snapshot_size_uses_content_rounded_up_else_disk_size(
    content: int | None, expected: int
) -> None:
    assert snapshot_size_gib(size_gib=50, content_bytes=content) == expected


def test_snapshot_cost_per_hour_by_disk_size_when_content_unknown() -> None:
    # 50 GiB * 0.001 = 0.05 per hour
    assert snapshot_cost_per_hour(size_gib=50, content_bytes=None, prices=PRICES) == pytest.approx(
        0.05
    )


def test_snapshot_cost_per_hour_by_content_when_known() -> None:
    # 5 GiB + 1 byte rounds to 6 GiB: 6 * 0.001 = 0.006 per hour
    assert snapshot_cost_per_hour(
        size_gib=50, content_bytes=5 * GIB + 1, prices=PRICES
    ) == pytest.approx(0.006)


# --- creation ---------------------------------------------------------------


def test_pull_hours_with_unknown_content_is_overhead_plus_assumed_pull() -> None:
    # (6 + 12) minutes = 0.3 hours
    assert pull_hours(content_bytes=None, prices=PRICES) == pytest.approx(0.3)


def test_pull_hours_with_known_content_is_overhead_plus_transfer_time() -> None:
    # 36e9 bytes at 1e8 B/s = 360 s = 6 min; + 6 min overhead = 12 min = 0.2 h
    assert pull_hours(content_bytes=36_000_000_000, prices=PRICES) == pytest.approx(0.2)


def test_creation_cost_is_instance_plus_temporary_disk_for_the_pull_time() -> None:
    # (0.5 + 50 GiB * 0.01) = 1.0 per hour
    assert creation_cost(size_gib=50, content_bytes=None, prices=PRICES) == pytest.approx(0.3)
    assert creation_cost(size_gib=50, content_bytes=36_000_000_000, prices=PRICES) == pytest.approx(
        0.2
    )
    # (0.5 + 150 * 0.01) = 2.0 per hour * 0.3 h
    assert creation_cost(size_gib=150, content_bytes=None, prices=PRICES) == pytest.approx(0.6)


# --- use --------------------------------------------------------------------


def test_pod_disk_cost_is_capacity_times_run_time() -> None:
    # 40 GiB * 0.01 * 2.5 h = 1.0
    assert pod_disk_cost(40, 2.5, prices=PRICES) == pytest.approx(1.0)
    assert pod_disk_cost(40, 0.0, prices=PRICES) == 0.0


# --- actions ----------------------------------------------------------------


def test_create_adds_snapshot_hourly_and_one_creation() -> None:
    cost = action_cost(ActionKind.CREATE, desired=spec(size=50), observed=None, prices=PRICES)
    assert cost.currency == "USD"
    assert cost.hourly == pytest.approx(0.05)
    assert cost.one_off == pytest.approx(0.3)
    # 0.05 * 730 + 0.3
    assert cost.monthly == pytest.approx(0.05 * HOURS_PER_MONTH + 0.3)
    assert cost.monthly == pytest.approx(36.8)


def test_delete_removes_the_observed_snapshot_hourly_cost() -> None:
    cost = action_cost(
        ActionKind.DELETE, desired=None, observed=observed(content=3 * GIB), prices=PRICES
    )
    assert cost.hourly == pytest.approx(-0.003)
    assert cost.one_off == 0.0
    assert cost.monthly == pytest.approx(-0.003 * 730)


def test_delete_of_cache_with_unknown_content_removes_its_disk_size_bound() -> None:
    cost = action_cost(ActionKind.DELETE, desired=None, observed=observed(size=80), prices=PRICES)
    assert cost.hourly == pytest.approx(-0.08)


@pytest.mark.parametrize("kind", [ActionKind.UPDATE, ActionKind.RECREATE])
def test_rebuild_with_same_images_reuses_known_content(kind: ActionKind) -> None:
    # Same images: the snapshot stays 3 GiB, so no standing change; the
    # re-pull runs a 100 GiB temporary disk: (0.5 + 1.0) per hour for
    # 6 min + 3 GiB / 1e8 B/s.
    content = 3 * GIB
    cost = action_cost(
        kind, desired=spec(size=100), observed=observed(size=50, content=content), prices=PRICES
    )
    hours = (6 + content / 1e8 / 60) / 60
    assert cost.hourly == pytest.approx(0.0)
    assert cost.one_off == pytest.approx(1.5 * hours)


@pytest.mark.parametrize("kind", [ActionKind.UPDATE, ActionKind.RECREATE])
def test_rebuild_with_new_images_prices_the_new_snapshot_at_its_disk_size(
    kind: ActionKind,
) -> None:
    cost = action_cost(
        kind,
        desired=spec(size=100, images=("b:2",)),
        observed=observed(size=50, content=3 * GIB),
        prices=PRICES,
    )
    # new 100 GiB bound - old 3 GiB content = 97 * 0.001
    assert cost.hourly == pytest.approx(0.097)
    # (0.5 + 100 * 0.01) * 0.3 h
    assert cost.one_off == pytest.approx(0.45)


def test_an_update_of_metadata_alone_runs_no_build_and_costs_nothing() -> None:
    # Labels, annotations and retention change no byte of the snapshot.
    desired = replace(
        spec(),
        labels=(("team", "web"),),
        annotations=(("example.com/owner", "web"),),
        retention_days=30,
    )
    cost = action_cost(
        ActionKind.UPDATE, desired=desired, observed=observed(content=3 * GIB), prices=PRICES
    )
    assert (cost.hourly, cost.one_off) == (0.0, 0.0)


@pytest.mark.parametrize(
    "changed",
    [
        {"image_pull_secrets": ("ns/key",)},
        {"security_group_ids": ("sg-1",)},
        {"image_cache_size_gib": 60},
        {"images": ("a:2",)},
    ],
)
def test_an_update_of_what_the_build_uses_is_priced_as_a_build(changed: dict[str, Any]) -> None:
    cost = action_cost(
        ActionKind.UPDATE,
        desired=replace(spec(), **changed),
        observed=observed(content=3 * GIB),
        prices=PRICES,
    )
    assert cost.one_off > 0


def test_noop_costs_nothing() -> None:
    cost = action_cost(ActionKind.NOOP, desired=spec(), observed=observed(), prices=PRICES)
    assert (cost.currency, cost.hourly, cost.one_off, cost.monthly) == ("USD", 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("kind", "with_desired", "with_observed", "needs"),
    [
        (ActionKind.DELETE, True, False, "observed"),
        (ActionKind.CREATE, False, False, "desired"),
        (ActionKind.UPDATE, True, False, "observed"),
        (ActionKind.RECREATE, False, True, "desired"),
    ],
)
def test_action_cost_rejects_missing_sides(
    kind: ActionKind, with_desired: bool, with_observed: bool, needs: str
) -> None:
    with pytest.raises(ValueError, match=needs):
        action_cost(
            kind,
            desired=spec() if with_desired else None,
            observed=observed() if with_observed else None,
            prices=PRICES,
        )


# --- config -----------------------------------------------------------------


def test_from_mapping_reads_dashed_and_underscored_keys_and_keeps_defaults() -> None:
    table = PriceTable.from_mapping(
        {"currency": "USD", "disk-per-gib-hour": 0.002, "snapshot_per_gib_hour": 1},
        source="gitsync.yaml: pricing",
    )
    assert table.currency == "USD"
    assert table.disk_per_gib_hour == 0.002
    assert table.snapshot_per_gib_hour == 1.0
    assert isinstance(table.snapshot_per_gib_hour, float)
    assert table.instance_per_hour == PriceTable().instance_per_hour


def test_from_mapping_of_nothing_is_the_default_table() -> None:
    assert PriceTable.from_mapping({}, source="x") == PriceTable()


def test_from_mapping_unknown_key_names_source_key_and_valid_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        PriceTable.from_mapping({"disk-per-gb-hour": 0.1}, source="gitsync.yaml: pricing")
    message = str(caught.value)
    assert message.startswith("gitsync.yaml: pricing:")
    assert "'disk-per-gb-hour'" in message
    assert "disk-per-gib-hour" in message
    assert "snapshot-per-gib-hour" in message
    assert "currency" in message


@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, True, "0.5", None, [1]])
def test_from_mapping_rejects_non_positive_or_non_numeric_prices(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        PriceTable.from_mapping({"instance-per-hour": value}, source="cfg.yaml: pricing")
    message = str(caught.value)
    assert "cfg.yaml: pricing" in message
    assert "instance-per-hour" in message
    assert "number" in message


@pytest.mark.parametrize("value", ["", "   ", 42, None])
def test_from_mapping_rejects_bad_currency(value: object) -> None:
    with pytest.raises(ConfigError, match=r"cfg: 'currency' must be a non-empty string"):
        PriceTable.from_mapping({"currency": value}, source="cfg")


def test_from_mapping_rejects_a_key_given_in_both_spellings() -> None:
    with pytest.raises(ConfigError, match=r"'assumed-pull-minutes' is given twice"):
        PriceTable.from_mapping(
            {"assumed-pull-minutes": 3, "assumed_pull_minutes": 4}, source="cfg"
        )


def test_price_table_is_frozen() -> None:
    table = PriceTable()
    with pytest.raises(AttributeError):
        table.currency = "USD"  # type: ignore[misc]

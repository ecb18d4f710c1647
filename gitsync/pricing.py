"""What a cache costs, from the cloud's billing rules: pure arithmetic, no I/O.

A plan that looks harmless in Git ("bump imageCacheSize to 200") can move real
money, so every plan carries a cost delta that a reviewer sees in the pull
request. The rules follow how Tencent Cloud bills ImageCache:

* **Creation** (one-off): while the images are pulled, the cloud runs a
  temporary 2 vCPU / 4 GiB instance with a temporary cloud disk of
  `imageCacheSize` GiB. Cost = (instance/h + size * disk/GiB·h) * pull hours.
  Pull hours = `creation_overhead_minutes` (boot, snapshot) plus the pull
  itself: content bytes / `pull_bytes_per_second` when the content size is
  known, else `assumed_pull_minutes`. The overhead is always added.
* **Snapshot** (standing): the cache is a disk snapshot billed in GiB-hours
  (capacity times duration) for as long as the cache exists. The billed size is the *content*
  (expanded image bytes, rounded up to whole GiB) when a provider reported it,
  else `imageCacheSize` as an upper bound, since a snapshot cannot hold more
  than its disk. Estimates for caches not built yet are therefore pessimistic.
* **Use**: every pod that starts from the cache gets a cloud disk of
  `imageCacheSize` GiB, billed for the pod's run time (`pod_disk_cost`).

Only the standing snapshot cost and the creation one-off are changed by a
plan; the per-pod disk cost depends on traffic, so it is reported by metrics,
not by plans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from gitsync.errors import ConfigError
from gitsync.model import ActionKind, CacheSpec, CostDelta, ObservedCache
from gitsync.units import GIB

__all__ = [
    "GIB",
    "PriceTable",
    "action_cost",
    "creation_cost",
    "pod_disk_cost",
    "pull_hours",
    "snapshot_cost_per_hour",
    "snapshot_size_gib",
]


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Unit prices and timing assumptions of the cost model.

    The defaults are rough approximations of Tencent Cloud's public
    pay-as-you-go list prices for Guangzhou (ap-guangzhou) as published around
    2024, written down in November 2026. They are not authoritative and drift
    with every price change or discount: override them in the config file's
    `pricing:` table (see `from_mapping`).

    * `instance_per_hour`: the temporary 2 vCPU / 4 GiB creation instance,
      about 2 * 0.12 (vCPU·h) + 4 * 0.03 (GiB·h) = 0.36.
    * `disk_per_gib_hour`: premium cloud disk, about 0.0007 per GiB·h.
    * `snapshot_per_gib_hour`: snapshot storage, about 0.12 per GiB·month,
      i.e. 0.12 / 730 ≈ 0.000165 per GiB·h (free tiers are ignored).
    * `creation_overhead_minutes`, `pull_bytes_per_second`,
      `assumed_pull_minutes`: the pull-time estimate (module docstring).
    """

    currency: str = "CNY"
    instance_per_hour: float = 0.36
    disk_per_gib_hour: float = 0.0007
    snapshot_per_gib_hour: float = 0.000165
    creation_overhead_minutes: float = 5.0
    pull_bytes_per_second: float = 50_000_000.0
    assumed_pull_minutes: float = 10.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str) -> PriceTable:
        """Build a table from a config mapping; missing keys keep their defaults.

        Keys are the field names written with dashes, like the rest of the
        config file (`disk-per-gib-hour`); the underscore spelling is accepted
        too. `currency` is a non-empty string; every other value a finite,
        positive number (booleans and strings are refused, so a quoted "0.5"
        in YAML is caught rather than guessed at). Errors raise ConfigError
        naming `source`, the key, and what would be valid.
        """
        numeric = [f.name for f in fields(cls) if f.name != "currency"]
        valid = ", ".join(_dashed(name) for name in ["currency", *numeric])
        values: dict[str, object] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key != "currency" and key not in numeric:
                raise ConfigError(f"{source}: unknown key {raw_key!r}; valid keys are {valid}")
            if key in values:
                raise ConfigError(
                    f"{source}: {_dashed(key)!r} is given twice (with dashes and underscores);"
                    " keep one"
                )
            values[key] = _check_value(key, value, source=source)
        return cls(**values)  # type: ignore[arg-type]  # each value was checked against its field


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _check_value(key: str, value: object, *, source: str) -> object:
    if key == "currency":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{source}: 'currency' must be a non-empty string like CNY or USD, got {value!r}"
            )
        return value.strip()
    # bool is an int subclass; `true` as a price is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{source}: {_dashed(key)!r} must be a positive number, got {type(value).__name__}"
            f" {value!r}"
        )
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(
            f"{source}: {_dashed(key)!r} must be a finite number greater than 0, got {value!r}"
        )
    return number


def snapshot_size_gib(*, size_gib: int, content_bytes: int | None) -> int:
    """GiB the snapshot is billed for: content rounded up when known, else the disk size."""
    if content_bytes is None:
        return size_gib
    return math.ceil(max(content_bytes, 0) / GIB)


def snapshot_cost_per_hour(
    *, size_gib: int, content_bytes: int | None, prices: PriceTable
) -> float:
    """Standing cost of one cache's snapshot per hour (see `snapshot_size_gib`)."""
    billed = snapshot_size_gib(size_gib=size_gib, content_bytes=content_bytes)
    return billed * prices.snapshot_per_gib_hour


def pull_hours(*, content_bytes: int | None, prices: PriceTable) -> float:
    """Estimated hours the creation instance runs: overhead plus the pull itself."""
    if content_bytes is None:
        pull_minutes = prices.assumed_pull_minutes
    else:
        pull_minutes = max(content_bytes, 0) / prices.pull_bytes_per_second / 60.0
    return (prices.creation_overhead_minutes + pull_minutes) / 60.0


def creation_cost(*, size_gib: int, content_bytes: int | None, prices: PriceTable) -> float:
    """One-off cost of building a cache: instance plus temporary disk for the pull time."""
    hourly = prices.instance_per_hour + size_gib * prices.disk_per_gib_hour
    return hourly * pull_hours(content_bytes=content_bytes, prices=prices)


def pod_disk_cost(size_gib: int, pod_hours: float, *, prices: PriceTable) -> float:
    """What one pod started from a cache pays for its `size_gib` disk over `pod_hours`."""
    return size_gib * prices.disk_per_gib_hour * pod_hours


def action_cost(
    kind: ActionKind,
    *,
    desired: CacheSpec | None,
    observed: ObservedCache | None,
    prices: PriceTable,
) -> CostDelta:
    """The cost one planned action moves.

    * create: + the new snapshot per hour, + one creation;
    * delete: - the observed snapshot per hour;
    * update, recreate: new - old snapshot per hour, + one creation (an update
      pulls the images again);
    * an update that changes nothing the build uses (labels, annotations,
      `retentionDays`): nothing, since no build instance runs and the snapshot
      stays as it is;
    * noop: nothing.

    The content size of a cache not built yet is unknown, except when its
    image list is the same as the observed cache's (a recreate after expiry, a
    change of retention or secrets): then the observed content size is the
    best estimate, so renewing a cache does not look like it grows to its
    full `imageCacheSize`.
    """
    if kind is ActionKind.NOOP:
        return CostDelta(currency=prices.currency)
    if kind is ActionKind.DELETE:
        if observed is None:
            raise ValueError("action_cost: a delete needs the observed cache it removes")
        return CostDelta(currency=prices.currency, hourly=-_observed_hourly(observed, prices))
    if desired is None:
        raise ValueError(f"action_cost: a {kind} needs the desired spec it builds")
    if kind is ActionKind.CREATE:
        content: int | None = None
        old_hourly = 0.0
    else:
        if observed is None:
            raise ValueError(f"action_cost: a {kind} needs the observed cache it replaces")
        if kind is ActionKind.UPDATE and not _rebuilds(desired, observed):
            return CostDelta(currency=prices.currency)
        content = observed.content_bytes if _same_images(desired, observed) else None
        old_hourly = _observed_hourly(observed, prices)
    size = desired.image_cache_size_gib
    new_hourly = snapshot_cost_per_hour(size_gib=size, content_bytes=content, prices=prices)
    return CostDelta(
        currency=prices.currency,
        hourly=new_hourly - old_hourly,
        one_off=creation_cost(size_gib=size, content_bytes=content, prices=prices),
    )


def _observed_hourly(observed: ObservedCache, prices: PriceTable) -> float:
    return snapshot_cost_per_hour(
        size_gib=observed.image_cache_size_gib,
        content_bytes=observed.content_bytes,
        prices=prices,
    )


def _rebuilds(desired: CacheSpec, observed: ObservedCache) -> bool:
    """Whether an update pulls again: the build's inputs changed, not just its metadata.

    Pull secrets and security groups only matter to the build instance; a change
    of them alone is priced as a build too, since an overestimate is the safe
    side of a cost shown for review.
    """
    return (
        not _same_images(desired, observed)
        or desired.image_cache_size_gib != observed.image_cache_size_gib
        or set(desired.image_pull_secrets) != set(observed.image_pull_secrets)
        or set(desired.security_group_ids) != set(observed.security_group_ids)
    )


def _same_images(desired: CacheSpec, observed: ObservedCache) -> bool:
    # Spelling as written is enough: this only picks the better estimate, and
    # keeping pricing on model and errors alone keeps it trivially pure.
    return set(desired.images) == set(observed.images)

"""Pure data shared by every layer: specs from Git, caches a provider holds, plans.

Everything here is a frozen dataclass or an enum, with no I/O and no behaviour
beyond derived properties, so that the planner can be a pure function and the
providers can translate their own wire formats into one vocabulary.

Names follow the cloud's ImageCache resource: `images`, `image_cache_size_gib`
(`imageCacheSize`), `retention_days` (`retentionDays`), `image_pull_secrets`
(`imagePullSecrets`); statuses are the five the cloud documents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

API_VERSION = "eks.cloud.tencent.com/v1"
KIND = "ImageCache"
DEFAULT_IMAGE_CACHE_SIZE_GIB = 20
MIN_IMAGE_CACHE_SIZE_GIB = 20
MAX_IMAGE_CACHE_SIZE_GIB = 32000
DEFAULT_RETENTION_DAYS = 0
PRUNE_ANNOTATION = "gitsync.io/prune"
PRUNE_DISABLED = "disabled"
HOURS_PER_MONTH = 730.0  # 365 × 24 / 12, the month cloud price lists use


class CacheStatus(enum.StrEnum):
    """The cloud's cache lifecycle; only READY can serve pods."""

    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"
    UPDATING = "Updating"
    UPDATE_FAILED = "UpdateFailed"


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where something was written: a path relative to the repository, 1-based line and column."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of validation: where, how bad, which rule, and what would be valid."""

    location: SourceLocation
    severity: Severity
    rule: str
    message: str
    field: str | None = None  # dotted path in the document, e.g. "spec.imageCacheSize"


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One desired cache, as a validated ImageCache document in Git describes it."""

    name: str
    images: tuple[str, ...]
    image_cache_size_gib: int = DEFAULT_IMAGE_CACHE_SIZE_GIB
    retention_days: int = DEFAULT_RETENTION_DAYS
    image_pull_secrets: tuple[str, ...] = ()
    prune: bool = True  # False when annotated gitsync.io/prune: disabled
    location: SourceLocation | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """An event like the cloud's: Type Normal/Warning, Reason, Message, with a count."""

    type: str
    reason: str
    message: str
    count: int = 1
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class ObservedCache:
    """A cache as a provider holds it now, whoever created it.

    `owner` is the controller id found in the provider's ownership tag or
    label; None means gitsync did not create it and must never change it.
    `prune` travels with the cache (an annotation, label or tag), so a cache
    stays protected after its spec has left Git.
    """

    name: str
    cache_id: str
    status: CacheStatus
    images: tuple[str, ...]
    image_cache_size_gib: int = DEFAULT_IMAGE_CACHE_SIZE_GIB
    retention_days: int = DEFAULT_RETENTION_DAYS
    image_pull_secrets: tuple[str, ...] = ()
    owner: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_matched_at: datetime | None = None
    snapshot_id: str | None = None
    content_bytes: int | None = None
    events: tuple[CacheEvent, ...] = ()
    prune: bool = True  # False when the provider's copy carries gitsync.io/prune: disabled


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The caches one Git revision asks for, sorted by name."""

    caches: tuple[CacheSpec, ...]
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedState:
    """Every cache the provider reports, owned or not."""

    caches: tuple[ObservedCache, ...]


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RECREATE = "recreate"  # expired, about to expire, or failed: build anew
    DELETE = "delete"
    NOOP = "noop"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One spec field whose value differs between Git and the provider."""

    field: str
    before: object
    after: object


@dataclass(frozen=True, slots=True)
class CostDelta:
    """Money a plan moves, in the price table's currency.

    `hourly` is the change in standing cost (snapshots); `one_off` is what the
    plan spends once (creation instances and temporary disks).
    """

    currency: str
    hourly: float = 0.0
    one_off: float = 0.0

    @property
    def monthly(self) -> float:
        return self.hourly * HOURS_PER_MONTH + self.one_off


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan, with the reason a human reads in a pull request."""

    kind: ActionKind
    name: str
    reason: str
    desired: CacheSpec | None = None
    observed: ObservedCache | None = None
    changes: tuple[FieldChange, ...] = ()
    cost: CostDelta | None = None


@dataclass(frozen=True, slots=True)
class PlanNotice:
    """Something the planner chose not to do, and why: an unowned cache in the way, a kept cache."""

    name: str
    message: str
    severity: Severity = Severity.WARNING


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered actions that bring the provider to the desired state.

    When `refused` is set, a safety rule stopped the plan: executors apply
    none of it, and the reason is reported instead.
    """

    actions: tuple[Action, ...]
    cost: CostDelta
    notices: tuple[PlanNotice, ...] = ()
    refused: str | None = None
    revision: str | None = None

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind is not ActionKind.NOOP)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

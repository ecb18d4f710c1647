"""Pure data shared by every layer: specs from Git, caches a provider holds, plans.

Everything here is a frozen dataclass or an enum, with no I/O and no behaviour
beyond derived properties, so that the planner can be a pure function and the
providers can translate their own wire formats into one vocabulary.

Names follow the cloud's ImageCache resource: `images`, `image_cache_size_gib`
(`imageCacheSize`), `retention_days` (`retentionDays`), `image_pull_secrets`
(`imagePullSecrets`), `security_group_ids` (`securityGroupIds`); statuses are
the five the cloud documents. Labels and annotations travel with a spec, since
the operator reads some of them (`eks.tke.cloud.tencent.com/eip-attributes`
gives the build instance a public IP); `eip` is that annotation, parsed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

API_VERSION = "eks.cloud.tencent.com/v1"
KIND = "ImageCache"
DEFAULT_IMAGE_CACHE_SIZE_GIB = 20
MIN_IMAGE_CACHE_SIZE_GIB = 20
MAX_IMAGE_CACHE_SIZE_GIB = 32000
DEFAULT_RETENTION_DAYS = 0
MAX_RETENTION_DAYS = 3650  # the imc-operator's CRD: retentionDays maximum
PRUNE_ANNOTATION = "gitsync.io/prune"
PRUNE_DISABLED = "disabled"
# The annotation the cloud's documented ImageCache sample uses to give the build
# instance a public IP: "" or a JSON object of CreateImageCache's EipAttribute fields.
EIP_ATTRIBUTES_ANNOTATION = "eks.tke.cloud.tencent.com/eip-attributes"
# Metadata gitsync writes for itself on the objects it owns (the Kubernetes backend):
# a spec in Git may not set these, or it would claim or disown caches.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
OWNER_LABEL = "gitsync.io/owner"
APPLIED_METADATA_ANNOTATION = "gitsync.io/applied-metadata"
RESERVED_LABELS = frozenset({MANAGED_BY_LABEL, OWNER_LABEL})
RESERVED_ANNOTATIONS = frozenset({APPLIED_METADATA_ANNOTATION})
HOURS_PER_MONTH = 730.0  # 365 × 24 / 12, the month cloud price lists use


class CacheStatus(enum.StrEnum):
    """The cloud's cache lifecycle; only READY can serve pods."""

    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"
    UPDATING = "Updating"
    UPDATE_FAILED = "UpdateFailed"


class SnapshotCheck(enum.StrEnum):
    """What a look at the snapshot behind a Ready cache found.

    A provider that can look snapshots up (CBS on Tencent Cloud) reports a cache
    whose snapshot is DAMAGED or MISSING as Failed, with `snapshot_problem` set,
    so the planner rebuilds it.
    """

    OK = "ok"  # there, in a state new disks can be made from
    DAMAGED = "damaged"  # there, but not usable (being made, copied, recycled, ...)
    MISSING = "missing"  # gone


@dataclass(frozen=True, slots=True)
class SnapshotVerdict:
    """One check of one snapshot: what was found and, unless OK, why in words.

    `detail` completes "snapshot <id> …" and names where it was looked up:
    "is gone (DescribeSnapshots)".
    """

    snapshot_id: str
    result: SnapshotCheck
    detail: str = ""

    @property
    def problem(self) -> str | None:
        """`snapshot snap-… is gone (DescribeSnapshots)`; None when the snapshot is fine."""
        if self.result is SnapshotCheck.OK:
            return None
        return f"snapshot {self.snapshot_id} {self.detail or self.result.value}"


@dataclass(frozen=True, slots=True)
class SnapshotCheckCounts:
    """Snapshot checks a provider has made since it was opened, by result: running totals.

    Totals rather than per-observation counts, so a reader that sees only some
    observations (the daemon keeps the last one of a pass) still counts every
    check; a smaller total than last seen means the provider was opened anew.
    """

    ok: int = 0
    damaged: int = 0
    missing: int = 0

    def get(self, result: SnapshotCheck) -> int:
        return {
            SnapshotCheck.OK: self.ok,
            SnapshotCheck.DAMAGED: self.damaged,
            SnapshotCheck.MISSING: self.missing,
        }[result]

    def plus(self, verdicts: Iterable[SnapshotVerdict]) -> SnapshotCheckCounts:
        added = dict.fromkeys(SnapshotCheck, 0)
        for verdict in verdicts:
            added[verdict.result] += 1
        return SnapshotCheckCounts(
            ok=self.ok + added[SnapshotCheck.OK],
            damaged=self.damaged + added[SnapshotCheck.DAMAGED],
            missing=self.missing + added[SnapshotCheck.MISSING],
        )


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


Pairs = tuple[tuple[str, str], ...]  # a label or annotation map, sorted by key: hashable


@dataclass(frozen=True, slots=True)
class EipAttributes:
    """The EIP a cache's build instance gets: CreateImageCache's `AutoCreateEipAttribute`.

    Present (even with every field None, which asks for the cloud's defaults)
    means `AutoCreateEip`; a cache without the annotation has `eip=None`. The
    field names are the SDK's `EipAttribute`: DeletePolicy ("Never" keeps the
    EIP after the instance is gone), InternetServiceProvider (line: BGP, CMCC,
    CTCC, CUCC), InternetMaxBandwidthOut (Mbps).
    """

    delete_policy: str | None = None
    internet_service_provider: str | None = None
    internet_max_bandwidth_out: int | None = None

    def api(self) -> dict[str, str | int]:
        """The `EipAttribute` object, with only the fields that are set."""
        values = {
            "DeletePolicy": self.delete_policy,
            "InternetServiceProvider": self.internet_service_provider,
            "InternetMaxBandwidthOut": self.internet_max_bandwidth_out,
        }
        return {key: value for key, value in values.items() if value is not None}

    def __str__(self) -> str:
        """The annotation value, canonical: compact JSON in the SDK's field order."""
        return json.dumps(self.api(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One desired cache, as a validated ImageCache document in Git describes it.

    `annotations` holds every annotation but gitsync.io/prune, which is
    `prune`, and kubectl's last-applied-configuration; the EIP annotation is
    also in `eip`, parsed, because providers that cannot keep annotations
    compare its meaning rather than its spelling.
    """

    name: str
    images: tuple[str, ...]
    image_cache_size_gib: int = DEFAULT_IMAGE_CACHE_SIZE_GIB
    retention_days: int = DEFAULT_RETENTION_DAYS
    image_pull_secrets: tuple[str, ...] = ()
    prune: bool = True  # False when annotated gitsync.io/prune: disabled
    location: SourceLocation | None = field(default=None, compare=False)
    security_group_ids: tuple[str, ...] = ()
    labels: Pairs = ()
    annotations: Pairs = ()
    eip: EipAttributes | None = None
    # gitsync.io/refresh: how often the daemon resolves the tags to digests (None: the
    # --refresh-interval default, which is off unless set). Compared: a change re-plans.
    refresh_seconds: float | None = None
    # `# gitsync: …` markers at the end of image lines: (image as written, marker text
    # after "gitsync:"), validated (rule image-policy); see gitsync.policies.
    image_policies: Pairs = field(default=(), compare=False)


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
    # Set when a check found the snapshot behind the cache gone or damaged
    # (`SnapshotVerdict.problem`); the cache is then Failed and this is why.
    snapshot_problem: str | None = None
    # What the provider keeps of these depends on it: see `ProviderFields`.
    security_group_ids: tuple[str, ...] = ()
    labels: Pairs = ()
    annotations: Pairs = ()
    eip: EipAttributes | None = None
    # What the cache holds, where the provider knows it: (image as written, the digest its
    # reference resolved to when the content was pulled: the index's, else the manifest's),
    # and when that was (the local backend's snapshot). Empty and None elsewhere; a pin
    # written in `images` (`repo:tag@sha256:…`) says it too (see `gitsync.digests`).
    image_digests: Pairs = ()
    image_digests_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The caches one Git revision asks for, sorted by name."""

    caches: tuple[CacheSpec, ...]
    revision: str | None = None


# Spec fields by the names a plan shows them under (the YAML names).
IMAGES_FIELD = "images"
SIZE_FIELD = "imageCacheSize"
RETENTION_FIELD = "retentionDays"
PULL_SECRETS_FIELD = "imagePullSecrets"
SECURITY_GROUPS_FIELD = "securityGroupIds"
LABELS_FIELD = "metadata.labels"
ANNOTATIONS_FIELD = "metadata.annotations"  # all of them but gitsync.io/prune
EIP_FIELD = f"metadata.annotations.{EIP_ATTRIBUTES_ANNOTATION}"  # that one, by meaning
PRUNE_FIELD = f"metadata.annotations.{PRUNE_ANNOTATION}"
CLASSIC_FIELDS = frozenset({IMAGES_FIELD, SIZE_FIELD, RETENTION_FIELD, PULL_SECRETS_FIELD})
SPEC_FIELDS = CLASSIC_FIELDS | {SECURITY_GROUPS_FIELD, LABELS_FIELD, ANNOTATIONS_FIELD, EIP_FIELD}


@dataclass(frozen=True, slots=True)
class ProviderFields:
    """Which spec fields a provider keeps (and reports back), and which it changes in place.

    The planner compares only `kept` fields: one the provider cannot report
    would differ on every pass. A change to a kept field outside `updatable`
    is planned as a RECREATE, and `why_not` says why in the plan ("UpdateImageCache
    cannot change the EIP settings"). The prune annotation is always kept and
    updatable: every provider carries it. The default is what every provider
    kept before labels, annotations and security groups were modelled.
    `pins_digests` says how the provider follows a moved tag (`gitsync.digests`).
    """

    kept: frozenset[str] = CLASSIC_FIELDS
    updatable: frozenset[str] = CLASSIC_FIELDS
    why_not: Pairs = ()  # field -> why it cannot change in place
    # How a cache follows a tag that moved (gitsync.io/refresh): False, the provider
    # rebuilds from the tag and records the digest it got (the local store); True, it is
    # given the images pinned, `repo:tag@sha256:…`, a change of `images` its backend
    # rebuilds for, and reports the pin back, which is how gitsync knows what it holds.
    pins_digests: bool = False

    def __post_init__(self) -> None:
        # Declarations are code, not input: a wrong one is a bug worth failing on at once.
        unknown = sorted((self.kept | self.updatable | {f for f, _ in self.why_not}) - SPEC_FIELDS)
        if unknown:
            raise ValueError(f"ProviderFields: unknown {unknown}; known: {sorted(SPEC_FIELDS)}")
        if not CLASSIC_FIELDS <= self.updatable <= self.kept:
            raise ValueError(
                "ProviderFields: every provider keeps and updates the classic fields"
                f" {sorted(CLASSIC_FIELDS)}, and a field can be updatable only if it is kept"
            )

    def reason(self, name: str) -> str:
        """Why a change of `name` rebuilds the cache."""
        for known, why in self.why_not:
            if known == name:
                return why
        return f"the provider cannot change {name} in place"


@dataclass(frozen=True, slots=True)
class ObservedState:
    """Every cache the provider reports, owned or not, and what the provider keeps of a spec.

    `snapshot_checks` is None for a provider that checks no snapshots; else its
    running totals as of this observation. Two states that differ only there are
    equal: a check that found nothing new changes nothing to plan.
    """

    caches: tuple[ObservedCache, ...]
    fields: ProviderFields = ProviderFields()
    snapshot_checks: SnapshotCheckCounts | None = field(default=None, compare=False)


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RECREATE = "recreate"  # expired, about to expire, failed, or a change not made in place
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

"""Rendering of diagnostics and plans for people and for tools: pure text in, text out.

The CLI and the HTTP API print what these functions return, so the formats are
defined once. Text and JSON shapes here are contracts (docs/architecture.md): CI jobs grep
`path:line:col: severity: message [rule]` and tools parse the JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gitsync.digests import ResolvedDigest, status_rows
from gitsync.model import (
    HOURS_PER_MONTH,
    Action,
    ActionKind,
    CostDelta,
    Diagnostic,
    ObservedCache,
    Plan,
    Severity,
)

if TYPE_CHECKING:
    from gitsync import sizing  # plans only: `validate`, which prints diagnostics, never loads it

DIAGNOSTIC_FORMATS = ("text", "json", "github")
PLAN_FORMATS = ("text", "markdown", "json")

_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
_SYMBOL = {
    ActionKind.CREATE: "+",
    ActionKind.UPDATE: "~",
    ActionKind.RECREATE: "±",
    ActionKind.DELETE: "-",
    ActionKind.NOOP: "=",
}
_KIND_ORDER = (
    ActionKind.CREATE,
    ActionKind.UPDATE,
    ActionKind.RECREATE,
    ActionKind.DELETE,
    ActionKind.NOOP,
)


# ---------------------------------------------------------------- diagnostics


def diagnostic_line(diagnostic: Diagnostic) -> str:
    """`path:line:col: severity: message [rule]`, the line editors and CI logs understand."""
    return (
        f"{diagnostic.location}: {diagnostic.severity.value}: "
        f"{diagnostic.message} [{diagnostic.rule}]"
    )


def _github_escape(text: str, *, property_value: bool = False) -> str:
    # Workflow commands treat %, CR and LF specially; properties also : and ,.
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def github_annotation(diagnostic: Diagnostic) -> str:
    loc = diagnostic.location
    return (
        f"::{_GITHUB_LEVEL[diagnostic.severity]} "
        f"file={_github_escape(loc.path, property_value=True)},"
        f"line={loc.line},col={loc.column},"
        f"title={_github_escape(diagnostic.rule, property_value=True)}"
        f"::{_github_escape(diagnostic.message)}"
    )


def diagnostic_dict(diagnostic: Diagnostic) -> dict[str, object]:
    loc = diagnostic.location
    return {
        "path": loc.path,
        "line": loc.line,
        "column": loc.column,
        "severity": diagnostic.severity.value,
        "rule": diagnostic.rule,
        "message": diagnostic.message,
        "field": diagnostic.field,
    }


def format_diagnostics(
    diagnostics: Sequence[Diagnostic],
    *,
    output_format: str,
    files: int,
    documents: int,
    caches: int,
) -> str:
    """The whole output of `gitsync validate` in one of DIAGNOSTIC_FORMATS."""
    errors = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    if output_format == "json":
        return json.dumps(
            {
                "valid": errors == 0,
                "files": files,
                "documents": documents,
                "caches": caches,
                "diagnostics": [diagnostic_dict(d) for d in diagnostics],
            },
            indent=2,
        )
    if output_format == "github":
        return "\n".join(github_annotation(d) for d in diagnostics)
    counts = Counter(d.severity for d in diagnostics)
    lines = [diagnostic_line(d) for d in diagnostics]
    verdict = "invalid" if errors else "valid"
    lines.append(
        f"{verdict}: {caches} caches in {documents} documents, {files} files; "
        f"{counts[Severity.ERROR]} errors, {counts[Severity.WARNING]} warnings"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------- plans


def _money(value: float, currency: str, *, signed: bool = True) -> str:
    sign = "+" if signed and value > 0 else ""
    return f"{sign}{value:,.2f} {currency}"


def _value(value: object) -> str:
    if isinstance(value, tuple | list | frozenset | set):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _change_text(action: Action) -> str:
    # A recreate's reason lists every change and says why it cannot be made in place.
    if action.changes and action.kind is not ActionKind.RECREATE:
        return "; ".join(
            f"{c.field}: {_value(c.before)} → {_value(c.after)}" for c in action.changes
        )
    return action.reason


def _summary_counts(plan: Plan) -> Counter[ActionKind]:
    return Counter(a.kind for a in plan.actions)


def _summary_sentence(plan: Plan) -> str:
    counts = _summary_counts(plan)
    return (
        f"{counts[ActionKind.CREATE]} to create, {counts[ActionKind.UPDATE]} to update, "
        f"{counts[ActionKind.RECREATE]} to recreate, {counts[ActionKind.DELETE]} to delete, "
        f"{counts[ActionKind.NOOP]} unchanged"
    )


def _cost_sentence(cost: CostDelta) -> str:
    return (
        f"standing {_money(cost.hourly * HOURS_PER_MONTH, cost.currency)}/month; "
        f"one-off {_money(cost.one_off, cost.currency)}"
    )


def _row_costs(action: Action, currency: str) -> tuple[str, str]:
    """The action's standing change per month and its one-off cost, each under its own name."""
    cost = action.cost or CostDelta(currency=currency)
    return (
        _money(cost.hourly * HOURS_PER_MONTH, cost.currency),
        _money(cost.one_off, cost.currency),
    )


def _plan_text(plan: Plan, *, provider: str, sizes: sizing.SizeReport | None) -> str:
    revision = f" at {plan.revision[:12]}" if plan.revision else ""
    lines = [f"Plan{revision} against provider {provider}: {_summary_sentence(plan)}."]
    changes = plan.changes
    if changes:
        lines.append("")
        width = max(len(a.name) for a in changes)
        costs = [_row_costs(a, plan.cost.currency) for a in changes]
        monthly_width = max(len(m) for m, _ in costs)
        once_width = max(len(o) for _, o in costs)
        for action, (monthly, once) in zip(changes, costs, strict=True):
            lines.append(
                f"  {_SYMBOL[action.kind]} {action.kind.value:<8} {action.name:<{width}}  "
                f"monthly {monthly:>{monthly_width}}  one-off {once:>{once_width}}  "
                f"{_change_text(action)}"
            )
    for notice in plan.notices:
        lines.append(f"  ! {notice.name}: {notice.message}")
    if sizes is not None:
        lines += _sizes_text(sizes)
    lines.append("")
    lines.append(f"Cost delta: {_cost_sentence(plan.cost)}")
    if plan.refused:
        lines.append(f"REFUSED: {plan.refused}")
    return "\n".join(lines)


_SIZE_SCOPE = "the caches this plan creates, updates or recreates; unchanged caches are not checked"


def _span(low: int, high: int) -> str:
    from gitsync.sizing import format_bytes  # noqa: PLC0415  # see the imports

    if low == high:
        return format_bytes(low)
    return f"{format_bytes(low)}–{format_bytes(high)}"


def _size_row(fit: sizing.CacheFit) -> tuple[str, ...]:
    """One cache's line of the size table; `-` where no image could be read."""
    from gitsync.sizing import format_bytes  # noqa: PLC0415  # see the imports

    images = str(fit.images) if not fit.skipped else f"{fit.resolved_images}/{fit.images}"
    read = fit.resolved_images > 0
    return (
        fit.name,
        images,
        format_bytes(fit.compressed_bytes) if read else "-",
        _span(fit.expanded_low, fit.expanded_high) + (" exact" if fit.exact else " est.")
        if read
        else "-",
        _span(fit.needed_low, fit.needed_high) if read else "-",
        f"{fit.size_gib} GiB",
        format_bytes(fit.usable_bytes),
        f"{fit.headroom:.0%}" if read else "-",
        fit.fit.value,
    )


_SIZE_HEADER = (
    "cache",
    "images",
    "compressed",
    "expanded",
    "on disk",
    "size",
    "usable",
    "headroom",
    "fit",
)


def _assumptions(model: sizing.SizeModel) -> str:
    return (
        f"usable = {model.usable_fraction:.0%} of imageCacheSize; on disk = compressed +"
        f" expanded (× {model.disk_factor:g} for the high end); expanded, where the local store"
        f" has not pulled a layer, = compressed × {model.low_ratio:g} to {model.high_ratio:g};"
        f" error when the low end cannot fit, warning under {model.min_headroom:.0%} headroom"
        " at the high end"
    )


def _sizes_text(sizes: sizing.SizeReport) -> list[str]:
    if sizes.off is not None:
        return ["", f"Size check: off ({sizes.off})."]
    if not sizes.caches:
        return []
    rows = [tuple(h.upper() for h in _SIZE_HEADER), *(_size_row(c) for c in sizes.caches)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_SIZE_HEADER))]
    lines = ["", f"Size check of {_SIZE_SCOPE}:"]
    lines += [
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines += [f"  {diagnostic_line(d)}" for d in sizes.diagnostics]
    lines.append(f"  ({_assumptions(sizes.model)})")
    return lines


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_MD_MARK = {
    Severity.ERROR: ":x:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}


def _sizes_markdown(sizes: sizing.SizeReport) -> list[str]:
    if sizes.off is not None:
        return [f"**Size check:** off ({_md_cell(sizes.off)}).", ""]
    if not sizes.caches:
        return []
    lines = [
        f"**Size check** of {_SIZE_SCOPE}:",
        "",
        "| " + " | ".join(_SIZE_HEADER) + " |",
        "|---|" + "---:|" * (len(_SIZE_HEADER) - 2) + "---|",
    ]
    for fit in sizes.caches:
        name, *cells = _size_row(fit)
        lines.append(f"| `{_md_cell(name)}` | " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines.append("")
    for d in sizes.diagnostics:
        lines.append(
            f"- {_MD_MARK[d.severity]} **{d.severity.value}** `{_md_cell(str(d.location))}`: "
            f"{_md_cell(d.message)} [{d.rule}]"
        )
    lines += ["", f"<sub>{_md_cell(_assumptions(sizes.model))}</sub>", ""]
    return lines


def _plan_markdown(plan: Plan, *, provider: str, sizes: sizing.SizeReport | None) -> str:
    revision = f" for `{plan.revision[:12]}`" if plan.revision else ""
    lines = [f"### gitsync plan{revision} ({provider})", "", f"**{_summary_sentence(plan)}**", ""]
    if plan.refused:
        lines += [f"> [!CAUTION]\n> **Refused:** {_md_cell(plan.refused)}", ""]
    if sizes is not None and sizes.has_errors:
        lines += ["> [!CAUTION]\n> **Size check failed:** a cache cannot hold its images.", ""]
    changes = plan.changes
    if changes:
        lines += [
            "| | action | cache | details | monthly | one-off |",
            "|---|---|---|---|---:|---:|",
        ]
        for action in changes:
            monthly, once = _row_costs(action, plan.cost.currency)
            lines.append(
                f"| {_SYMBOL[action.kind]} | {action.kind.value} | `{_md_cell(action.name)}` "
                f"| {_md_cell(_change_text(action))} | {monthly} | {once} |"
            )
        lines.append("")
    else:
        lines += ["No changes: the caches match Git.", ""]
    for notice in plan.notices:
        lines.append(f"- :warning: `{_md_cell(notice.name)}`: {_md_cell(notice.message)}")
    if plan.notices:
        lines.append("")
    if sizes is not None:
        lines += _sizes_markdown(sizes)
    lines.append(f"**Cost delta:** {_cost_sentence(plan.cost)}")
    return "\n".join(lines)


def cost_dict(cost: CostDelta) -> dict[str, object]:
    return {
        "currency": cost.currency,
        "hourly": round(cost.hourly, 6),
        "oneOff": round(cost.one_off, 6),
        "monthly": round(cost.monthly, 6),  # standing for a month plus the one-off
        "standingMonthly": round(cost.hourly * HOURS_PER_MONTH, 6),
    }


def size_check_dict(sizes: sizing.SizeReport) -> dict[str, object]:
    """The `sizeCheck` member of `gitsync plan --format json` (add, never rename)."""
    model = sizes.model
    return {
        "enabled": sizes.off is None,
        "off": sizes.off,
        "ok": not sizes.has_errors,
        "scope": _SIZE_SCOPE,
        "assumptions": {
            "usableFraction": model.usable_fraction,
            "diskFactor": model.disk_factor,
            "lowRatio": model.low_ratio,
            "highRatio": model.high_ratio,
            "minHeadroom": model.min_headroom,
            "keepsCompressed": model.keeps_compressed,
        },
        "caches": [
            {
                "name": c.name,
                "imageCacheSize": c.size_gib,
                "images": c.images,
                "resolvedImages": c.resolved_images,
                "layers": c.layers,
                "compressedBytes": c.compressed_bytes,
                "expandedBytes": c.expanded_high,
                "expandedBytesMin": c.expanded_low,
                "exact": c.exact,
                "neededBytes": c.needed_high,
                "neededBytesMin": c.needed_low,
                "usableBytes": c.usable_bytes,
                "headroom": round(c.headroom, 4),
                "fit": c.fit.value,
                "skipped": [{"image": i, "reason": r} for i, r in c.skipped],
            }
            for c in sizes.caches
        ],
        "diagnostics": [diagnostic_dict(d) for d in sizes.diagnostics],
    }


def plan_dict(
    plan: Plan, *, provider: str, sizes: sizing.SizeReport | None = None
) -> dict[str, object]:
    counts = _summary_counts(plan)
    return {
        "provider": provider,
        "revision": plan.revision,
        "refused": plan.refused,
        "hasChanges": plan.has_changes,
        "summary": {kind.value: counts[kind] for kind in _KIND_ORDER},
        "actions": [
            {
                "action": a.kind.value,
                "name": a.name,
                "reason": a.reason,
                "changes": [
                    {"field": c.field, "before": _jsonable(c.before), "after": _jsonable(c.after)}
                    for c in a.changes
                ],
                "cost": cost_dict(a.cost) if a.cost else None,
            }
            for a in plan.actions
        ],
        "notices": [
            {"name": n.name, "severity": n.severity.value, "message": n.message}
            for n in plan.notices
        ],
        "cost": cost_dict(plan.cost),
        "sizeCheck": size_check_dict(sizes) if sizes is not None else None,
    }


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | list | frozenset | set):
        return sorted(str(v) for v in value) if isinstance(value, frozenset | set) else list(value)
    return value


def format_plan(
    plan: Plan, *, output_format: str, provider: str, sizes: sizing.SizeReport | None = None
) -> str:
    """The output of `gitsync plan` in one of PLAN_FORMATS; `sizes` adds the size check."""
    if output_format == "json":
        return json.dumps(plan_dict(plan, provider=provider, sizes=sizes), indent=2)
    if output_format == "markdown":
        return _plan_markdown(plan, provider=provider, sizes=sizes)
    return _plan_text(plan, provider=provider, sizes=sizes)


# --------------------------------------------------------------------- status


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cache_dict(
    cache: ObservedCache,
    *,
    controller_id: str,
    resolved: Mapping[str, ResolvedDigest] | None = None,
) -> dict[str, object]:
    """One cache in the `gitsync status --format json` shape (add, never rename)."""
    return {
        "name": cache.name,
        "id": cache.cache_id,
        "status": cache.status.value,
        "managed": cache.owner == controller_id,
        "images": list(cache.images),
        "imageCacheSize": cache.image_cache_size_gib,
        "retentionDays": cache.retention_days,
        "imagePullSecrets": list(cache.image_pull_secrets),
        "contentBytes": cache.content_bytes,
        "snapshotId": cache.snapshot_id,
        "createdAt": _iso(cache.created_at),
        "expiresAt": _iso(cache.expires_at),
        "lastMatchedAt": _iso(cache.last_matched_at),
        "prune": cache.prune,
        "events": [
            {
                "type": e.type,
                "reason": e.reason,
                "message": e.message,
                "count": e.count,
                "firstTimestamp": _iso(e.first_timestamp),
                "lastTimestamp": _iso(e.last_timestamp),
            }
            for e in cache.events
        ],
        "imageDigests": status_rows(cache, resolved),
    }


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything `gitsync status` shows, gathered by the caller from provider and record.

    `resolved` is the daemon's refresher's record (`DigestRefresher.resolved()`):
    canonical image → what its tag was last resolved to; None where no refresher
    runs (the `status` command).
    """

    provider: str
    controller_id: str
    applied_revision: str | None
    newest_revision: str | None
    spec_valid: bool
    last_error: str | None
    diagnostics: tuple[str, ...]
    caches: tuple[ObservedCache, ...]
    resolved: Mapping[str, ResolvedDigest] | None = None


def status_dict(view: StatusView) -> dict[str, object]:
    return {
        "provider": view.provider,
        "appliedRevision": view.applied_revision,
        "newestRevision": view.newest_revision,
        "specValid": view.spec_valid,
        "lastError": view.last_error,
        "diagnostics": list(view.diagnostics),
        "caches": [
            cache_dict(c, controller_id=view.controller_id, resolved=view.resolved)
            for c in view.caches
        ],
    }


def _size(num: int | None) -> str:
    if num is None:
        return "-"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_status(view: StatusView, *, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(status_dict(view), indent=2)
    lines = [
        f"provider: {view.provider}",
        f"applied revision: {view.applied_revision or '-'}",
    ]
    if view.newest_revision and view.newest_revision != view.applied_revision:
        lines.append(f"newest revision: {view.newest_revision} (valid: {view.spec_valid})")
    if view.last_error:
        lines.append(f"last error: {view.last_error}")
    if not view.caches:
        lines.append("no caches")
        return "\n".join(lines)
    rows = [("NAME", "ID", "STATUS", "IMAGES", "SIZE", "CONTENT", "EXPIRES", "MANAGED")]
    for c in view.caches:
        rows.append(
            (
                c.name,
                c.cache_id,
                c.status.value,
                str(len(c.images)),
                f"{c.image_cache_size_gib} GiB",
                _size(c.content_bytes),
                _iso(c.expires_at) or "never",
                "yes" if c.owner == view.controller_id else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for c in view.caches:
        warnings = [e for e in c.events if e.type == "Warning"]
        if warnings:
            last = warnings[-1]
            lines.append(f"  {c.name}: {last.reason}: {last.message}")
    lines += _digest_lines(view)
    return "\n".join(lines)


def _digest_lines(view: StatusView) -> list[str]:
    """`cache  image  held  resolved`, for the images whose digest is known either way."""
    rows = [("CACHE", "IMAGE", "HOLDS", "RESOLVED")]
    for c in view.caches:
        for row in status_rows(c, view.resolved):
            if row["held"] is None and row["resolved"] is None and row.get("error") is None:
                continue
            resolved = "-"
            if row["resolved"] is not None:
                resolved = f"{row['resolved']} at {row['resolvedAt']}"
            if row.get("error"):
                resolved += f" (last try failed: {row['error']})"
            rows.append((c.name, str(row["image"]), str(row["held"] or "-"), resolved))
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["", "Image digests (held by the cache / its tag last resolved):"] + [
        "  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    ]

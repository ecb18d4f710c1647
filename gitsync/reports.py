"""Rendering of diagnostics and plans for people and for tools: pure text in, text out.

The CLI and the HTTP API print what these functions return, so the formats are
defined once. Text and JSON shapes here are contracts (docs/architecture.md): CI jobs grep
`path:line:col: severity: message [rule]` and tools parse the JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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
    if action.changes:
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
        f"{_money(cost.monthly, cost.currency)}/month "
        f"(standing {_money(cost.hourly * HOURS_PER_MONTH, cost.currency)}/month, "
        f"one-off {_money(cost.one_off, cost.currency)})"
    )


def _plan_text(plan: Plan, *, provider: str) -> str:
    revision = f" at {plan.revision[:12]}" if plan.revision else ""
    lines = [f"Plan{revision} against provider {provider}: {_summary_sentence(plan)}."]
    changes = plan.changes
    if changes:
        lines.append("")
        width = max(len(a.name) for a in changes)
        for action in changes:
            detail = _change_text(action)
            lines.append(
                f"  {_SYMBOL[action.kind]} {action.kind.value:<8} {action.name:<{width}}  {detail}"
            )
    for notice in plan.notices:
        lines.append(f"  ! {notice.name}: {notice.message}")
    lines.append("")
    lines.append(f"Cost delta: {_cost_sentence(plan.cost)}")
    if plan.refused:
        lines.append(f"REFUSED: {plan.refused}")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plan_markdown(plan: Plan, *, provider: str) -> str:
    revision = f" for `{plan.revision[:12]}`" if plan.revision else ""
    lines = [f"### gitsync plan{revision} ({provider})", "", f"**{_summary_sentence(plan)}**", ""]
    if plan.refused:
        lines += [f"> [!CAUTION]\n> **Refused:** {_md_cell(plan.refused)}", ""]
    changes = plan.changes
    if changes:
        lines += ["| | action | cache | details | monthly cost |", "|---|---|---|---|---:|"]
        for action in changes:
            cost = action.cost or CostDelta(currency=plan.cost.currency)
            lines.append(
                f"| {_SYMBOL[action.kind]} | {action.kind.value} | `{_md_cell(action.name)}` "
                f"| {_md_cell(_change_text(action))} | {_money(cost.monthly, cost.currency)} |"
            )
        lines.append("")
    else:
        lines += ["No changes: the caches match Git.", ""]
    for notice in plan.notices:
        lines.append(f"- :warning: `{_md_cell(notice.name)}`: {_md_cell(notice.message)}")
    if plan.notices:
        lines.append("")
    lines.append(f"**Cost delta:** {_cost_sentence(plan.cost)}")
    return "\n".join(lines)


def cost_dict(cost: CostDelta) -> dict[str, object]:
    return {
        "currency": cost.currency,
        "hourly": round(cost.hourly, 6),
        "oneOff": round(cost.one_off, 6),
        "monthly": round(cost.monthly, 6),
    }


def plan_dict(plan: Plan, *, provider: str) -> dict[str, object]:
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
    }


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | list | frozenset | set):
        return sorted(str(v) for v in value) if isinstance(value, frozenset | set) else list(value)
    return value


def format_plan(plan: Plan, *, output_format: str, provider: str) -> str:
    """The output of `gitsync plan` in one of PLAN_FORMATS."""
    if output_format == "json":
        return json.dumps(plan_dict(plan, provider=provider), indent=2)
    if output_format == "markdown":
        return _plan_markdown(plan, provider=provider)
    return _plan_text(plan, provider=provider)


# --------------------------------------------------------------------- status


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cache_dict(cache: ObservedCache, *, controller_id: str) -> dict[str, object]:
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
    }


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything `gitsync status` shows, gathered by the caller from provider and record."""

    provider: str
    controller_id: str
    applied_revision: str | None
    newest_revision: str | None
    spec_valid: bool
    last_error: str | None
    diagnostics: tuple[str, ...]
    caches: tuple[ObservedCache, ...]


def status_dict(view: StatusView) -> dict[str, object]:
    return {
        "provider": view.provider,
        "appliedRevision": view.applied_revision,
        "newestRevision": view.newest_revision,
        "specValid": view.spec_valid,
        "lastError": view.last_error,
        "diagnostics": list(view.diagnostics),
        "caches": [cache_dict(c, controller_id=view.controller_id) for c in view.caches],
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
    return "\n".join(lines)

"""The Grafana dashboard-linter's conventions, as pytest checks over dashboards/*.json.

The linter itself (grafana/dashboard-linter, Go) cannot be installed here, so
its rules that matter to us are written out below. They keep a dashboard
portable and honest: it runs against whichever Prometheus the `datasource`
variable picks (no hard-coded data source uid), every query narrows to the
chosen `job` and `instance`, rates use `$__rate_interval` (so a scrape gap
never empties a panel), counters are only read through rate()/increase(),
and every panel says what it shows (a description) and in what (a unit).

One exception, and only one: per-image figures (the most missed images) are
never metric labels, so the daemon serves them as JSON at /api/v1/suggestions.
A panel may read that through the Infinity data source plugin
(yesoreyeram-infinity-datasource), picked by a second data source variable,
`infinity`, whose URL is the daemon's address: the panel holds only the
relative path (an endpoint of DAEMON_API_URLS) and says in its description
that it needs the plugin and the daemon's address.

Checking selectors needs to know where they are in a query, so the module has
a small PromQL scanner: enough to find every vector selector, its matchers,
its range and the function that encloses it. It is not a parser and does not
validate PromQL; `promtool` and the integration test against a real
Prometheus do that, with the expressions that `all_promql_expressions()`
gathers from the dashboards and the rule file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
RULES = ROOT / "manifests" / "prometheus" / "gitsync-rules.yaml"

DATASOURCE_REFS = frozenset({"$datasource", "${datasource}"})
# The daemon's JSON API through the Infinity plugin: the one other data source allowed.
INFINITY_PLUGIN = "yesoreyeram-infinity-datasource"
INFINITY_REFS = frozenset({"$infinity", "${infinity}"})
DAEMON_API_URLS = frozenset({"/api/v1/suggestions"})
MIN_SCHEMA_VERSION = 36
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
AGGREGATORS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
)

# Exposed names of docs/architecture.md's metric contract (counters get `_total`,
# histograms `_bucket`/`_sum`/`_count`), plus the gauge the rules can use
# when gitsync exposes it (gitsync_source_interval_seconds, proposed).
CONTRACT_METRICS = frozenset(
    {
        "gitsync_build_info",
        "gitsync_pricing_info",
        "gitsync_source_last_fetch_success_timestamp_seconds",
        "gitsync_source_fetch_duration_seconds_bucket",
        "gitsync_source_fetch_duration_seconds_sum",
        "gitsync_source_fetch_duration_seconds_count",
        "gitsync_source_fetch_errors_total",
        "gitsync_source_interval_seconds",
        "gitsync_spec_valid",
        "gitsync_spec_diagnostics",
        "gitsync_applied_revision_info",
        "gitsync_reconcile_duration_seconds_bucket",
        "gitsync_reconcile_duration_seconds_sum",
        "gitsync_reconcile_duration_seconds_count",
        "gitsync_reconciles_total",
        "gitsync_triggers_total",
        "gitsync_webhook_requests_total",
        "gitsync_last_reconcile_success_timestamp_seconds",
        "gitsync_cache_info",
        "gitsync_cache_desired",
        "gitsync_cache_ready",
        "gitsync_cache_expiry_timestamp_seconds",
        "gitsync_cache_created_timestamp_seconds",
        "gitsync_cache_last_matched_timestamp_seconds",
        "gitsync_cache_capacity_bytes",
        "gitsync_cache_content_bytes",
        "gitsync_cache_images",
        "gitsync_cache_lookups_total",
        "gitsync_startup_seconds_bucket",
        "gitsync_startup_seconds_sum",
        "gitsync_startup_seconds_count",
        "gitsync_cache_cost_per_hour",
        "gitsync_cost_total",
        "gitsync_snapshot_checks_total",
        "gitsync_scrub_bytes_total",
        "gitsync_cache_saved_seconds_total",
        "gitsync_suggestions",
        "gitsync_automation_pushes_total",
        "gitsync_automation_pending_bumps",
        "gitsync_image_digest_checks_total",
        "gitsync_image_digest_changes_total",
    }
)


# --------------------------------------------------------------------- PromQL scanner


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, matchers, range, string, number, var, lparen, rparen, comma, op
    text: str


@dataclass(frozen=True, slots=True)
class Selector:
    """One vector selector: `name{matchers}[range]`, and the calls around it (innermost first)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]
    range: str | None
    enclosing: tuple[str, ...]

    def has_matcher(self, label: str, op: str, values: frozenset[str]) -> bool:
        return any(m[0] == label and m[1] == op and m[2] in values for m in self.matchers)


_SIMPLE = [
    ("number", re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*")),
    ("ident", re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")),
    ("var", re.compile(r"\$\{\w+\}|\$\w+")),
    ("op", re.compile(r"==|!=|<=|>=|=~|!~|[-+*/%^<>=@]")),
]
_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(?:,|$)"""
)


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal that opens at `start`."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string at {start} in {text!r}")


def _block_end(text: str, start: int, close: str) -> int:
    """Index just past the `close` that ends the block opening at `start`, skipping strings."""
    i = start + 1
    while i < len(text):
        if text[i] in "\"'`":
            i = _string_end(text, i)
            continue
        if text[i] == close:
            return i + 1
        i += 1
    raise ValueError(f"unclosed {text[start]!r} at {start} in {text!r}")


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif char in "\"'`":
            end = _string_end(expr, i)
            tokens.append(Token("string", expr[i:end]))
            i = end
        elif char in "{[":
            end = _block_end(expr, i, "}" if char == "{" else "]")
            tokens.append(Token("matchers" if char == "{" else "range", expr[i + 1 : end - 1]))
            i = end
        elif char in "(),":
            tokens.append(Token({"(": "lparen", ")": "rparen", ",": "comma"}[char], char))
            i += 1
        else:
            for kind, pattern in _SIMPLE:
                match = pattern.match(expr, i)
                if match:
                    tokens.append(Token(kind, match.group()))
                    i = match.end()
                    break
            else:
                raise ValueError(f"unexpected {char!r} at {i} in {expr!r}")
    return tokens


def parse_matchers(text: str) -> tuple[tuple[str, str, str], ...]:
    matchers: list[tuple[str, str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _MATCHER.match(text, position)
        if match is None:
            raise ValueError(f"cannot read label matchers {text!r} at {position}")
        matchers.append((match.group(1), match.group(2), match.group(3)[1:-1]))
        position = match.end()
    return tuple(matchers)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr`, with the function calls that enclose it."""
    tokens = tokenize(expr)
    found: list[Selector] = []
    # One entry per open parenthesis: the function or aggregation it belongs
    # to, "" for plain grouping parentheses, "<labels>" for by/on lists.
    stack: list[str] = []
    pending_aggregation = ""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "lparen":
            opener = _opener(tokens, i, pending_aggregation)
            if opener == pending_aggregation:
                pending_aggregation = ""
            stack.append(opener)
        elif token.kind == "rparen" and stack:
            stack.pop()
        elif stack and stack[-1] == "<labels>":
            pass  # label names of by (…) / on (…), not selectors
        elif token.kind == "ident" and _is_aggregation(tokens, i):
            pending_aggregation = token.text  # its "(" comes after by (…)
        elif token.kind == "ident" and _names_a_selector(tokens, i):
            matchers: tuple[tuple[str, str, str], ...] = ()
            after = i + 1
            if after < len(tokens) and tokens[after].kind == "matchers":
                matchers = parse_matchers(tokens[after].text)
                after += 1
            found.append(_selector(token.text, matchers, tokens, after, stack))
            i = after
            continue
        elif token.kind == "matchers":
            matchers = parse_matchers(token.text)
            names = [m[2] for m in matchers if m[0] == "__name__" and m[1] == "="]
            found.append(_selector(names[0] if names else "", matchers, tokens, i + 1, stack))
        i += 1
    return found


def _opener(tokens: list[Token], index: int, pending_aggregation: str) -> str:
    """What the "(" at `index` belongs to: a function, a label list, or nothing."""
    previous = tokens[index - 1] if index > 0 else None
    if previous is not None and previous.kind == "ident":
        return "<labels>" if previous.text in GROUPING else previous.text
    if previous is not None and previous.kind == "rparen" and pending_aggregation:
        return pending_aggregation  # sum by (le) (...)
    return ""


def _is_aggregation(tokens: list[Token], index: int) -> bool:
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    return (
        tokens[index].text in AGGREGATORS and following is not None and following.text in GROUPING
    )


def _names_a_selector(tokens: list[Token], index: int) -> bool:
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    if tokens[index].text.lower() in KEYWORDS:
        return False
    if following is not None and following.kind == "lparen":
        return False  # a function name: its "(" records it
    # After `offset` comes a duration, never a selector.
    return not (index > 0 and tokens[index - 1].text == "offset")


def _selector(
    name: str,
    matchers: tuple[tuple[str, str, str], ...],
    tokens: list[Token],
    after: int,
    stack: list[str],
) -> Selector:
    has_range = after < len(tokens) and tokens[after].kind == "range"
    return Selector(
        name=name,
        matchers=matchers,
        range=tokens[after].text.strip() if has_range else None,
        enclosing=tuple(entry for entry in reversed(stack) if entry),
    )


# ------------------------------------------------------------------ walking dashboards


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: a dashboard is a JSON object"
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels") or [])


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.where} [{self.rule}]: {self.message}"


def _panel_name(panel: dict[str, Any]) -> str:
    return f"panel {panel.get('id')} {panel.get('title', '<untitled>')!r}"


def _is_datasource_ref(value: object) -> bool:
    if isinstance(value, str):
        return value in DATASOURCE_REFS
    if isinstance(value, dict):
        return value.get("type") == "prometheus" and value.get("uid") in DATASOURCE_REFS
    return False


def _is_api_ref(value: object) -> bool:
    """The Infinity data source variable: panels that read the daemon's JSON API."""
    return (
        isinstance(value, dict)
        and value.get("type") == INFINITY_PLUGIN
        and value.get("uid") in INFINITY_REFS
    )


def _hard_coded_datasources(node: object, path: str) -> Iterator[str]:
    """JSON paths of every `datasource` reference that is not one of the two variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            # Grafana's built-in annotation source is the one fixed uid allowed.
            builtin = isinstance(value, dict) and value.get("uid") == "-- Grafana --"
            variable = _is_datasource_ref(value) or _is_api_ref(value)
            hard_coded = value is not None and not builtin and not variable
            if key == "datasource" and hard_coded:
                yield here
            yield from _hard_coded_datasources(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _hard_coded_datasources(item, f"{path}[{index}]")


def lint_dashboard(dashboard: dict[str, Any], *, name: str) -> list[Problem]:
    """Every breach of the linter conventions in one dashboard (see the module docstring)."""
    problems: list[Problem] = []
    for where, rule, message in (
        *_lint_header(dashboard),
        *_lint_templating(dashboard),
        *(
            (path, "panel-datasource-rule", "data source must be ${datasource}, not hard-coded")
            for path in _hard_coded_datasources(dashboard, "$")
        ),
    ):
        problems.append(Problem(f"{name}: {where}", rule, message))
    ids: set[object] = set()
    for panel in walk_panels(dashboard.get("panels", [])):
        if panel.get("id") in ids:
            problems.append(Problem(f"{name}: {_panel_name(panel)}", "panel-id", "ids repeat"))
        ids.add(panel.get("id"))
        problems.extend(_lint_panel(panel, where=f"{name}: {_panel_name(panel)}"))
    return problems


def _lint_header(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    if not dashboard.get("title"):
        yield "dashboard", "dashboard-title", "needs a title"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", str(dashboard.get("uid", ""))):
        yield "dashboard", "dashboard-uid", "needs a stable uid of [a-z0-9-], at most 40 chars"
    if dashboard.get("editable") is not False:
        yield "dashboard", "dashboard-editable", "set editable: false (provisioned, in Git)"
    schema = dashboard.get("schemaVersion")
    if not isinstance(schema, int) or schema < MIN_SCHEMA_VERSION:
        yield "dashboard", "dashboard-schema", f"schemaVersion {schema!r} < {MIN_SCHEMA_VERSION}"


def _lint_templating(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    datasource_vars = [v for v in variables.values() if v.get("type") == "datasource"]
    source = variables.get("datasource") or {}
    api = variables.get("infinity")
    allowed = 2 if api is not None else 1
    if len(datasource_vars) != allowed or (source.get("type"), source.get("query")) != (
        "datasource",
        "prometheus",
    ):
        yield (
            "templating",
            "template-datasource-rule",
            "needs exactly one variable `datasource` of type datasource, query prometheus"
            f" (and at most `infinity`, query {INFINITY_PLUGIN})",
        )
    if api is not None and (api.get("type"), api.get("query")) != ("datasource", INFINITY_PLUGIN):
        yield (
            "templating",
            "template-datasource-rule",
            f"variable `infinity` must be of type datasource, query {INFINITY_PLUGIN}",
        )
    panels = walk_panels(dashboard.get("panels", []))
    if api is None and any(_is_api_ref(panel.get("datasource")) for panel in panels):
        yield (
            "templating",
            "template-datasource-rule",
            "a panel reads ${infinity}, but there is no variable `infinity`",
        )
    for label in ("job", "instance"):
        variable = variables.get(label) or {}
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if (
            variable.get("type") != "query"
            or not _is_datasource_ref(variable.get("datasource"))
            or not re.fullmatch(rf"label_values\(.+,\s*{label}\s*\)", str(query or ""))
        ):
            yield (
                "templating",
                f"template-{label}-rule",
                f"needs a query variable `{label}`: label_values(…, {label}) on $datasource",
            )
        elif variable.get("refresh") != 2:
            yield (
                "templating",
                "template-on-time-change-reload-rule",
                f"variable `{label}` must refresh on time range change (refresh: 2)",
            )


def _lint_panel(panel: dict[str, Any], *, where: str) -> list[Problem]:
    problems: list[Problem] = []
    if not panel.get("title"):
        problems.append(Problem(where, "panel-title-description-rule", "needs a title"))
    if panel.get("type") == "row":
        return problems  # rows hold panels; they show no data themselves
    if not str(panel.get("description", "")).strip():
        problems.append(Problem(where, "panel-title-description-rule", "needs a description"))
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not isinstance(unit, str) or not unit:
        problems.append(Problem(where, "panel-units-rule", "needs fieldConfig.defaults.unit"))
    if _is_api_ref(panel.get("datasource")):
        return problems + _lint_api_panel(panel, where=where)
    if not _is_datasource_ref(panel.get("datasource")):
        problems.append(Problem(where, "panel-datasource-rule", "must be ${datasource}"))
    targets = panel.get("targets") or []
    if not targets:
        problems.append(Problem(where, "panel-targets", "a panel with no query shows nothing"))
    for target in targets:
        problems.extend(_lint_target(target, where=where))
    return problems


def _lint_api_panel(panel: dict[str, Any], *, where: str) -> list[Problem]:
    """A panel on the daemon's JSON API: GET of a known endpoint, by a path relative to the
    `infinity` data source's URL (the daemon's address), and a description that says so."""
    problems: list[Problem] = []
    description = str(panel.get("description", ""))
    for needed in (INFINITY_PLUGIN, "daemon's address"):
        if needed not in description:
            problems.append(
                Problem(where, "panel-api-rule", f"the description must name {needed!r}")
            )
    targets = panel.get("targets") or []
    if not targets:
        problems.append(Problem(where, "panel-targets", "a panel with no query shows nothing"))
    for target in targets:
        here = f"{where} target {target.get('refId', '?')}"
        if not _is_api_ref(target.get("datasource")):
            problems.append(Problem(here, "target-datasource-rule", "must be ${infinity}"))
        url = target.get("url")
        if url not in DAEMON_API_URLS:
            problems.append(
                Problem(
                    here,
                    "panel-api-rule",
                    f"url {url!r} must be one of {sorted(DAEMON_API_URLS)}, relative: the"
                    " daemon's address is the data source's URL",
                )
            )
        method = (target.get("url_options") or {}).get("method")
        shape = (target.get("type"), target.get("source"), method)
        if shape != ("json", "url", "GET"):
            problems.append(
                Problem(here, "panel-api-rule", f"must GET JSON from the url, not {shape}")
            )
        if "expr" in target:
            problems.append(Problem(here, "panel-api-rule", "an API target has no PromQL"))
    return problems


def _lint_target(target: dict[str, Any], *, where: str) -> list[Problem]:
    problems: list[Problem] = []
    here = f"{where} target {target.get('refId', '?')}"
    if not _is_datasource_ref(target.get("datasource")):
        problems.append(Problem(here, "target-datasource-rule", "must be ${datasource}"))
    expr = target.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        problems.append(Problem(here, "target-expr", "needs a PromQL expr"))
        return problems
    try:
        found = selectors(expr)
    except ValueError as exc:
        return [*problems, Problem(here, "target-promql", str(exc))]
    for selector in found:
        shown = selector.name or "{…}"
        for label in ("job", "instance"):
            if not selector.has_matcher(label, "=~", frozenset({f"${label}", f"${{{label}}}"})):
                problems.append(
                    Problem(here, f"target-{label}-rule", f'{shown} needs {label}=~"${label}"')
                )
        innermost = selector.enclosing[0] if selector.enclosing else None
        if selector.name.endswith(COUNTER_SUFFIXES) and innermost not in RATE_FUNCTIONS:
            problems.append(
                Problem(
                    here,
                    "target-counter-agg-rule",
                    f"counter {shown} must be read through rate() or increase(), "
                    f"not {innermost or 'bare'}",
                )
            )
        if innermost in RATE_FUNCTIONS and selector.range != "$__rate_interval":
            problems.append(
                Problem(
                    here,
                    "target-rate-interval-rule",
                    f"{innermost}({shown}[{selector.range}]) must use [$__rate_interval]",
                )
            )
    return problems


# ------------------------------------------------------------- every PromQL expression


@dataclass(frozen=True, slots=True)
class PromQLExpression:
    """One expression of a dashboard or the rule file: where it is, as written, runnable."""

    origin: str
    raw: str
    query: str  # Grafana variables replaced, ready for Prometheus's /api/v1/query


def grafana_to_promql(expr: str, *, rate_interval: str = "1m") -> str:
    """Replace the Grafana variables our dashboards use by values Prometheus accepts."""
    query = expr.replace("${__rate_interval}", rate_interval)
    query = query.replace("$__rate_interval", rate_interval)
    for variable in ("job", "instance"):
        query = query.replace(f"${{{variable}}}", ".+").replace(f"${variable}", ".+")
    return query


def all_promql_expressions(*, rate_interval: str = "1m") -> list[PromQLExpression]:
    """Every PromQL expression in dashboards/*.json and the plain rule file.

    Dashboard targets and the selectors inside template-variable
    label_values(…) queries; every record and alert `expr` of the rules
    (prometheusrule.yaml holds the same rules, checked by test_rules_sync).
    `query` has $job/$instance as `.+` and $__rate_interval as `rate_interval`.
    """
    found: list[PromQLExpression] = []

    def add(origin: str, raw: str) -> None:
        found.append(
            PromQLExpression(
                origin=origin, raw=raw, query=grafana_to_promql(raw, rate_interval=rate_interval)
            )
        )

    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", str(query or ""))
            if variable.get("type") == "query" and match:
                add(f"{path.name}: variable {variable.get('name')}", match.group(1))
        for panel in walk_panels(dashboard.get("panels", [])):
            for target in panel.get("targets") or []:
                if isinstance(target.get("expr"), str) and target["expr"].strip():
                    origin = f"{path.name}: {_panel_name(panel)} target {target.get('refId')}"
                    add(origin, target["expr"])
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            kind, name = ("alert", rule["alert"]) if "alert" in rule else ("record", rule["record"])
            add(f"{RULES.name}: {group['name']} {kind} {name}", rule["expr"])
    return found


# ------------------------------------------------------------------------------ tests


def test_there_is_an_overview_dashboard() -> None:
    names = [path.name for path in dashboard_files()]
    assert "gitsync-overview.json" in names, names


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_follows_the_linter_conventions(path: Path) -> None:
    problems = lint_dashboard(load_dashboard(path), name=path.name)
    assert not problems, "\n".join(str(p) for p in problems)


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_uid_is_its_file_name(path: Path) -> None:
    # A stable uid keeps links and provisioning intact across edits; tying it
    # to the file name also keeps two dashboards from sharing one.
    assert load_dashboard(path)["uid"] == path.stem


def test_overview_has_the_rows_and_panels_the_issue_asks_for() -> None:
    dashboard = load_dashboard(DASHBOARDS / "gitsync-overview.json")
    rows: dict[str, list[str]] = {}
    current = ""
    for panel in walk_panels(dashboard["panels"]):
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = []
        else:
            queries = " ".join(t.get("expr") or t["url"] for t in panel["targets"])
            rows.setdefault(current, []).append(queries)
    assert list(rows) == ["Sync", "Caches", "Use", "Cost", "What to cache next"]
    wanted = {
        "Sync": [
            "gitsync_applied_revision_info",
            "gitsync_spec_valid",
            "gitsync_reconciles_total",
            "gitsync_reconcile_duration_seconds_bucket",
            "gitsync_source_last_fetch_success_timestamp_seconds",
        ],
        "Caches": [
            "gitsync_cache_info",
            "gitsync_cache_ready",
            "gitsync_cache_expiry_timestamp_seconds",
            "gitsync_cache_last_matched_timestamp_seconds",
        ],
        "Use": ["gitsync_cache_lookups_total", "gitsync_startup_seconds_bucket"],
        "Cost": ["gitsync_cache_cost_per_hour", "730 *"],
        "What to cache next": [
            "gitsync:cache_saved_seconds:rate1h",
            "gitsync:cache_cost:monthly",
            "gitsync_cache_saved_seconds_total",
            "gitsync_suggestions",
            "/api/v1/suggestions",
        ],
    }
    for row, needles in wanted.items():
        text = " ".join(rows[row])
        missing = [needle for needle in needles if needle not in text]
        assert not missing, f"row {row} has no panel using {missing}"


def test_every_expression_uses_only_contract_metrics() -> None:
    records = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    unknown = [
        f"{expression.origin}: {selector.name}"
        for expression in all_promql_expressions()
        for selector in selectors(expression.raw)
        if selector.name not in CONTRACT_METRICS | records
    ]
    assert not unknown, "names outside the metric contract:\n" + "\n".join(unknown)


def test_rules_read_counters_only_through_rate_or_increase() -> None:
    bad = [
        f"{expression.origin}: {selector.name} under {selector.enclosing[:1] or 'nothing'}"
        for expression in all_promql_expressions()
        if "gitsync-rules.yaml" in expression.origin
        for selector in selectors(expression.raw)
        if selector.name.endswith(COUNTER_SUFFIXES)
        and (not selector.enclosing or selector.enclosing[0] not in RATE_FUNCTIONS)
    ]
    assert not bad, "\n".join(bad)


def test_all_promql_expressions_covers_dashboards_and_rules() -> None:
    expressions = all_promql_expressions(rate_interval="2m")
    origins = " ".join(e.origin for e in expressions)
    targets = sum(
        "expr" in target  # the API tables' targets hold a URL, not PromQL
        for path in dashboard_files()
        for panel in walk_panels(load_dashboard(path)["panels"])
        for target in panel.get("targets") or []
    )
    rules = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"])
    variables = 2  # label_values of job and instance in the overview
    assert len(expressions) == targets + rules + variables
    assert "alert GitSyncCacheUnused" in origins
    assert "record gitsync:cache_lookups:hit_ratio_rate5m" in origins
    assert "variable instance" in origins
    for expression in expressions:
        assert "$" not in expression.query, expression
    rated = [e for e in expressions if "$__rate_interval" in e.raw]
    assert rated
    assert all("[2m]" in e.query for e in rated)


# ---------------------------------------------------- the checks themselves, on bad input


def test_selectors_finds_names_matchers_ranges_and_enclosing_calls() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (result, le) (rate(a_bucket{job=~"$job"}[5m])))'
        ' / on (instance) group_left () b{x="}[("} offset 5m'
        ' or label_replace(c, "dst", "v", "", "") or {__name__="d"}'
    )
    found = {s.name: s for s in selectors(expr)}
    assert set(found) == {"a_bucket", "b", "c", "d"}
    assert found["a_bucket"].enclosing == ("rate", "sum", "histogram_quantile")
    assert found["a_bucket"].range == "5m"
    assert found["a_bucket"].matchers == (("job", "=~", "$job"),)
    assert found["b"].matchers == (("x", "=", "}[("),)
    assert found["b"].enclosing == ()
    assert found["c"].enclosing == ("label_replace",)


def _good_dashboard() -> dict[str, Any]:
    sel = 'job=~"$job", instance=~"$instance"'
    source = {"type": "prometheus", "uid": "${datasource}"}
    api = {"type": INFINITY_PLUGIN, "uid": "${infinity}"}
    return {
        "uid": "probe",
        "title": "probe",
        "editable": False,
        "schemaVersion": 39,
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "job",
                    "type": "query",
                    "datasource": source,
                    "query": "label_values(up, job)",
                    "refresh": 2,
                },
                {
                    "name": "instance",
                    "type": "query",
                    "datasource": source,
                    "query": 'label_values(up{job=~"$job"}, instance)',
                    "refresh": 2,
                },
                {"name": "infinity", "type": "datasource", "query": INFINITY_PLUGIN},
            ]
        },
        "panels": [
            {
                "type": "row",
                "id": 1,
                "title": "Row",
                "collapsed": True,
                "panels": [
                    {
                        "type": "timeseries",
                        "id": 2,
                        "title": "Rate",
                        "description": "a rate",
                        "datasource": source,
                        "fieldConfig": {"defaults": {"unit": "ops"}},
                        "targets": [
                            {
                                "refId": "A",
                                "datasource": source,
                                "expr": f"sum(rate(x_total{{{sel}}}[$__rate_interval]))",
                            }
                        ],
                    },
                    {
                        "type": "table",
                        "id": 3,
                        "title": "Missed",
                        "description": f"needs {INFINITY_PLUGIN} and the daemon's address",
                        "datasource": api,
                        "fieldConfig": {"defaults": {"unit": "short"}},
                        "targets": [
                            {
                                "refId": "A",
                                "datasource": api,
                                "type": "json",
                                "source": "url",
                                "url": "/api/v1/suggestions",
                                "url_options": {"method": "GET"},
                                "root_selector": "missed",
                            }
                        ],
                    },
                ],
            }
        ],
    }


def test_lint_passes_a_conforming_dashboard() -> None:
    assert lint_dashboard(_good_dashboard(), name="probe.json") == []


@pytest.mark.parametrize(
    ("breakage", "rule"),
    [
        (lambda d: d.update(editable=True), "dashboard-editable"),
        (lambda d: d.update(schemaVersion=27), "dashboard-schema"),
        (lambda d: d["templating"]["list"].pop(0), "template-datasource-rule"),
        (lambda d: d["templating"]["list"].pop(1), "template-job-rule"),
        (lambda d: d["templating"]["list"][2].update(refresh=1), "template-on-time-change-reload"),
        (lambda d: _inner(d).pop("description"), "panel-title-description-rule"),
        (lambda d: _inner(d)["fieldConfig"]["defaults"].pop("unit"), "panel-units-rule"),
        (lambda d: _inner(d).update(datasource={"uid": "P1809F7CD0C75ACF3"}), "panel-datasource"),
        (lambda d: _target(d).update(datasource="Prometheus"), "target-datasource-rule"),
        (lambda d: _expr(d, "sum(rate(x_total{job=~'$job'}[$__rate_interval]))"), "instance-rule"),
        (lambda d: _expr(d, 'rate(x_total{job="a", instance=~"$instance"}[1m])'), "job-rule"),
        (lambda d: _expr(d, 'rate(x_total{job=~"$job",instance=~"$instance"}[5m])'), "interval"),
        (lambda d: _expr(d, 'sum(x_total{job=~"$job",instance=~"$instance"})'), "counter-agg"),
        (lambda d: _expr(d, 'x_bucket{job=~"$job",instance=~"$instance"}'), "counter-agg"),
    ],
)
def test_lint_reports_each_breach_by_panel_and_rule(breakage: Any, rule: str) -> None:
    dashboard = _good_dashboard()
    breakage(dashboard)
    problems = lint_dashboard(dashboard, name="probe.json")
    assert any(rule in p.rule for p in problems), problems
    nested = [p for p in problems if "panel" in p.where and "Rate" in p.where]
    if rule.startswith(("panel-t", "panel-u", "target", "instance", "job", "interval", "counter")):
        assert nested, f"the report names no panel: {problems}"


def _inner(dashboard: dict[str, Any]) -> dict[str, Any]:
    panel: dict[str, Any] = dashboard["panels"][0]["panels"][0]
    return panel


def _target(dashboard: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = _inner(dashboard)["targets"][0]
    return target


def _expr(dashboard: dict[str, Any], expr: str) -> None:
    _target(dashboard)["expr"] = expr


def _api_panel(dashboard: dict[str, Any]) -> dict[str, Any]:
    panel: dict[str, Any] = dashboard["panels"][0]["panels"][1]
    return panel


def _api_target(dashboard: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = _api_panel(dashboard)["targets"][0]
    return target


@pytest.mark.parametrize(
    ("breakage", "rule"),
    [
        (lambda d: _api_panel(d).update(description="a table"), "panel-api-rule"),
        (lambda d: _api_panel(d)["fieldConfig"]["defaults"].pop("unit"), "panel-units-rule"),
        (lambda d: _api_target(d).update(url="http://10.0.0.7:9108/api/v1/suggestions"), "api"),
        (lambda d: _api_target(d).update(url="/api/v1/status"), "panel-api-rule"),
        (lambda d: _api_target(d)["url_options"].update(method="POST"), "panel-api-rule"),
        (lambda d: _api_target(d).update(type="csv"), "panel-api-rule"),
        (lambda d: _api_target(d).update(expr="up"), "panel-api-rule"),
        (lambda d: _api_target(d)["datasource"].update(uid="P0"), "target-datasource-rule"),
        (lambda d: _api_panel(d)["datasource"].update(uid="P0"), "panel-datasource"),
        (lambda d: d["templating"]["list"].pop(3), "template-datasource-rule"),
        (lambda d: d["templating"]["list"][3].update(query="loki"), "template-datasource-rule"),
        (
            lambda d: d["templating"]["list"].append(
                {"name": "logs", "type": "datasource", "query": "loki"}
            ),
            "template-datasource-rule",
        ),
    ],
)
def test_lint_allows_the_daemon_api_only_as_the_exception_says(breakage: Any, rule: str) -> None:
    dashboard = _good_dashboard()
    breakage(dashboard)
    problems = lint_dashboard(dashboard, name="probe.json")
    assert any(rule in p.rule for p in problems), problems
    if rule.startswith(("panel-api", "panel-u", "target")):
        assert any("Missed" in p.where for p in problems), f"no panel named: {problems}"

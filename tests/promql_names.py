"""PromQL in Grafana dashboards: plain-PromQL substitution, metric names, targets.

Dashboards hold PromQL with Grafana variables (``$__rate_interval``, ``$pod``,
``${model:regex}``), which no PromQL parser accepts. `substitute` replaces them with
plain values; `metric_names` parses the result with ``promql-parser`` and walks
the AST for every vector selector's metric name; `dashboard_exprs` lists every
query a dashboard file runs (panel targets, rows included, and query variables).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import promql_parser

GRAFANA_VARIABLES: Final[Mapping[str, str]] = {
    # Grafana built-ins: durations (and their numeric forms) that parse as PromQL
    "__rate_interval": "5m",
    "__rate_interval_ms": "300000",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    # dashboard variables: multi-value with All = ".*", used in regex matchers
    "namespace": ".*",
    "pod": ".*",
    "model": ".*",
    "datasource": "prometheus",
}
"""Value each Grafana variable takes when a dashboard query is checked offline."""

USER_VARIABLE_DEFAULT: Final = ".*"
"""Value of a dashboard variable not in `GRAFANA_VARIABLES` (its All value)."""

_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}"  # ${name} or ${name:format}
    r"|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]"  # [[name]] (deprecated syntax)
    r"|\$(?P<plain>\w+)"  # $name
)
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$",
    re.DOTALL,
)
_LABEL_VALUES_BARE = re.compile(r"^\s*label_values\(\s*[a-zA-Z_]\w*\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)
_NON_PROMQL = re.compile(r"^\s*(label_names|metrics)\(")


def substitute(expr: str, variables: Mapping[str, str] = GRAFANA_VARIABLES) -> str:
    """Replace Grafana variables in a query so that it is plain PromQL.

    Handles ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``. Dashboard
    variables missing from ``variables`` become `USER_VARIABLE_DEFAULT` (``.*``,
    the All value of a regex matcher); unknown Grafana built-ins (``$__...``) are
    an error, as no safe value can be guessed for them.

    Args:
        expr: A PromQL query as written in a dashboard.
        variables: Value of each variable, by name without the ``$``.

    Returns:
        The query with every variable replaced.

    Raises:
        ValueError: If the query uses an unknown Grafana built-in variable.
    """

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bracketed"] or match["plain"]
        if name in variables:
            return variables[name]
        if name.startswith("__"):
            raise ValueError(f"unknown Grafana built-in ${name} in {expr!r}")
        return USER_VARIABLE_DEFAULT

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Names of the metrics every vector selector of a PromQL query reads.

    A selector's name is its metric name, or its ``__name__="..."`` matcher.

    Args:
        expr: Plain PromQL (see `substitute`).

    Returns:
        The metric names, e.g. ``{"up"}`` for ``sum(rate(up[5m]))``.

    Raises:
        ValueError: If the query does not parse, or a selector has no fixed
            metric name (e.g. ``{__name__=~"synthguard_.*"}``); the message
            quotes the query.
    """
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        raise ValueError(f"cannot parse PromQL {expr!r}: {exc}") from exc
    found: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.add(_selector_name(node, expr))

    promql_parser.walk(ast, visit)
    return found


def _selector_name(node: promql_parser.VectorSelector, expr: str) -> str:
    if node.name:
        return node.name
    for matcher in node.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    raise ValueError(f"selector {node} has no fixed metric name in {expr!r}")


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """Every PromQL query a dashboard file runs, with where it comes from.

    Covers the targets of every panel (panels nested in collapsed rows too),
    Prometheus annotations, and query variables. A ``label_values(selector,
    label)`` variable contributes its selector (e.g. ``synthguard_build_info``),
    which is plain PromQL; ``label_values(label)``, ``label_names()`` and
    ``metrics()`` name no metric and are skipped; ``query_result(expr)``
    contributes ``expr``.

    Args:
        path: A Grafana dashboard JSON file.

    Returns:
        ``(panel title, expr)`` pairs; variables appear as ``"variable $name"``
        and annotations as ``"annotation <name>"``. Expressions are as written
        (Grafana variables not substituted).
    """
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        title = str(panel.get("title", ""))
        found.extend(
            (title, target["expr"])
            for target in panel.get("targets", [])
            if target.get("expr")
        )
    for note in dashboard.get("annotations", {}).get("list", []):
        if note.get("expr"):
            found.append((f"annotation {note.get('name', '')}", note["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        expr = _variable_promql(_variable_query(variable))
        if expr is not None:
            found.append((f"variable ${variable.get('name', '')}", expr))
    return found


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, depth first: rows, then panels inside rows.

    Args:
        dashboard: A parsed Grafana dashboard.

    Yields:
        Each panel (row panels included), in file order.
    """
    stack: list[dict[str, Any]] = list(reversed(dashboard.get("panels", [])))
    while stack:
        panel = stack.pop()
        yield panel
        stack.extend(reversed(panel.get("panels", [])))


def _variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query", "")
    if isinstance(query, Mapping):
        query = query.get("query", "")
    return str(query or variable.get("definition", ""))


def _variable_promql(query: str) -> str | None:
    if not query.strip() or _NON_PROMQL.match(query) or _LABEL_VALUES_BARE.match(query):
        return None
    if match := _LABEL_VALUES.match(query):
        return match["selector"].strip()
    if match := _QUERY_RESULT.match(query):
        return match["expr"].strip()
    return query

"""The Grafana dashboards under deploy/grafana against the exported metric names.

Offline: each dashboard's PromQL is made plain (`promql_names.substitute`), parsed
with ``promql-parser`` and every metric it reads must be one the worker exports
(`stream.names`, as `stream.metrics.StreamMetrics` registers it), one the feedback
learner exports (``LEARNER_METRIC_*``, as `stream.learner.LearnerMetrics` registers
it), one Triton Inference Server 2.51 exports, or ``up``. Conventions checked as well: provisioning
ready (``id`` null, stable ``uid``), one ``$datasource`` variable that every query
uses, no ``__inputs`` from a UI export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from observability import (
    ALLOWED_OUTSIDE_WORKER,
    DASHBOARD_DIR,
    GPU_ONLY,
    LEARNER_FAMILIES,
    TRITON_METRICS,
    WORKER_FAMILIES,
    dashboard_metrics,
    family,
    learner_samples,
    sample_names,
)
from prometheus_client import CollectorRegistry
from promql_names import dashboard_exprs, iter_panels, metric_names, substitute

from stream import names
from stream.metrics import StreamMetrics

DASHBOARDS: Final = sorted(DASHBOARD_DIR.glob("*.json"))
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
MAX_UID_CHARS: Final = 40  # Grafana's limit on dashboard uids


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def walk_json(node: object, where: str = "") -> Iterator[tuple[str, str, object]]:
    """Every (path, key, value) of a JSON document, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield where, key, value
            yield from walk_json(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_json(value, f"{where}[{i}]")


def test_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} >= {
        "synthguard-overview.json",
        "synthguard-triton.json",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_provisioning_ready(path: Path) -> None:
    dash = load(path)
    assert dash["id"] is None
    uid = dash["uid"]
    assert isinstance(uid, str)
    assert 0 < len(uid) <= MAX_UID_CHARS
    assert uid == path.stem, "uid follows the file name, so it stays stable"
    assert dash["title"]
    assert dash["schemaVersion"] == 39
    assert "synthguard" in dash["tags"]
    assert dash["refresh"]
    assert dash["time"]["from"]
    assert dash["time"]["to"]


def test_uids_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_datasource_variable(path: Path) -> None:
    variables = load(path)["templating"]["list"]
    ds = [v for v in variables if v["name"] == "datasource"]
    assert len(ds) == 1
    assert ds[0]["type"] == "datasource"
    assert ds[0]["query"] == "prometheus"
    for var in variables:
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_exported_datasource_inputs(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "__inputs" not in text
    assert "DS_PROMETHEUS" not in text
    for where, key, value in walk_json(load(path)):
        assert not (key == "datasource" and value is None), where
        assert key != "__inputs", where


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_the_datasource_variable(path: Path) -> None:
    for panel in iter_panels(load(path)):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, panel["title"]
            assert target.get("expr"), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_title_and_position(path: Path) -> None:
    ids: list[int] = []
    for panel in iter_panels(load(path)):
        assert panel.get("title"), panel
        pos = panel.get("gridPos")
        assert pos is not None, panel["title"]
        assert {"h", "w", "x", "y"} <= pos.keys(), panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        ids.append(panel["id"])
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_do_not_overlap(path: Path) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in load(path)["panels"]:  # top level: rows are laid out in line
        pos = panel["gridPos"]
        for y in range(pos["y"], pos["y"] + pos["h"]):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], (
                    f"panel {other} overlaps {panel['title']!r}"
                )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expr_parses(path: Path) -> None:
    exprs = dashboard_exprs(path)
    assert exprs
    for title, expr in exprs:
        plain = substitute(expr)
        assert "$" not in plain, (title, plain)
        assert metric_names(plain), f"{title}: {expr} reads no metric"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_metrics_are_known(path: Path) -> None:
    unknown = {
        name: sorted(titles)
        for name, titles in dashboard_metrics(path).items()
        if name not in ALLOWED_OUTSIDE_WORKER
        and family(name) not in WORKER_FAMILIES | LEARNER_FAMILIES
    }
    assert not unknown, f"metrics neither in stream.names nor Triton's: {unknown}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_worker_metrics_have_the_exported_type(path: Path) -> None:
    # e.g. no ``_bucket`` of a counter, no ``_info`` of a gauge
    exported = sample_names(StreamMetrics(CollectorRegistry()).registry.collect())
    wrong = {
        name: sorted(titles)
        for name, titles in dashboard_metrics(path).items()
        if name.startswith(names.PREFIX)
        and family(name) not in LEARNER_FAMILIES
        and name not in exported
    }
    assert not wrong, f"not exposed by StreamMetrics: {wrong}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_learner_metrics_have_the_exported_type(path: Path) -> None:
    # e.g. no ``_total`` of the bank-rows gauge
    exported = learner_samples()
    wrong = {
        name: sorted(titles)
        for name, titles in dashboard_metrics(path).items()
        if family(name) in LEARNER_FAMILIES and name not in exported
    }
    assert not wrong, f"not exposed by LearnerMetrics: {wrong}"


def test_learner_families_are_what_the_learner_registers() -> None:
    # a LEARNER_METRIC_* the learner never registers, or one it registers unnamed
    assert {family(name) for name in learner_samples()} == LEARNER_FAMILIES
    exported = sample_names(StreamMetrics(CollectorRegistry()).registry.collect())
    assert not learner_samples() & exported, "the worker and learner share a name"


def test_overview_covers_every_worker_family() -> None:
    used = {
        family(name)
        for name in dashboard_metrics(DASHBOARD_DIR / "synthguard-overview.json")
    }
    assert not WORKER_FAMILIES - used


def test_overview_covers_every_learner_family() -> None:
    used = {
        family(name)
        for name in dashboard_metrics(DASHBOARD_DIR / "synthguard-overview.json")
    }
    assert not LEARNER_FAMILIES - used


def test_learner_panels_do_not_filter_by_worker_pod() -> None:
    # $pod lists worker pods (synthguard_build_info); the learner exports no build
    # info, so a pod matcher would hide it whenever a worker pod is selected
    for title, expr in dashboard_exprs(DASHBOARD_DIR / "synthguard-overview.json"):
        if any(family(n) in LEARNER_FAMILIES for n in metric_names(substitute(expr))):
            assert "$pod" not in expr, title
            assert "${pod" not in expr, title
            assert '"$namespace"' in expr, title


def test_triton_dashboard_covers_triton_metrics() -> None:
    used = set(dashboard_metrics(DASHBOARD_DIR / "synthguard-triton.json"))
    assert not (TRITON_METRICS | GPU_ONLY) - used


def test_substitute_makes_plain_promql() -> None:
    expr = (
        'sum by (le) (rate(m_bucket{namespace=~"$namespace",pod=~"${pod}",'
        'model=~"${model:regex}",x=~"[[custom]]"}[$__rate_interval]))'
    )
    assert substitute(expr) == (
        'sum by (le) (rate(m_bucket{namespace=~".*",pod=~".*",'
        'model=~".*",x=~".*"}[5m]))'
    )
    assert substitute("rate(m[$__interval]) * $__range_s") == "rate(m[1m]) * 3600"


def test_substitute_rejects_unknown_builtin() -> None:
    with pytest.raises(ValueError, match=r"\$__nope"):
        substitute("rate(m[$__nope])")


def test_metric_names_walks_the_whole_ast() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m]))) / on() "
        'group_left count(b{x="1"}) + max_over_time((c - d offset 1h)[1h:1m]) '
        'and {__name__="e"} unless -f'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d", "e", "f"}


def test_metric_names_reports_the_expression() -> None:
    with pytest.raises(ValueError, match="cannot parse PromQL") as info:
        metric_names("sum(rate(up[$__rate_interval]))")
    assert "$__rate_interval" in str(info.value)
    with pytest.raises(ValueError, match="no fixed metric name"):
        metric_names('{__name__=~"synthguard_.*"}')


def test_dashboard_exprs_reads_rows_and_variables(tmp_path: Path) -> None:
    dash = {
        "panels": [
            {"type": "timeseries", "title": "top", "targets": [{"expr": "a"}]},
            {
                "type": "row",
                "title": "collapsed",
                "collapsed": True,
                "panels": [{"title": "nested", "targets": [{"expr": "b"}, {}]}],
            },
        ],
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "pod",
                    "type": "query",
                    "query": {"query": 'label_values(c{ns=~"$ns", x="1"}, pod)'},
                },
                {"name": "ns", "type": "query", "query": "label_values(namespace)"},
                {"name": "q", "type": "query", "query": "query_result(topk(3, d))"},
                {"name": "m", "type": "query", "query": "metrics(synthguard_.*)"},
            ]
        },
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dash), encoding="utf-8")
    assert dashboard_exprs(path) == [
        ("top", "a"),
        ("nested", "b"),
        ("variable $pod", 'c{ns=~"$ns", x="1"}'),
        ("variable $q", "topk(3, d)"),
    ]

"""deploy/components/monitoring: every alert and dashboard query parses as PromQL and reads only
metrics the daemon exports, under the names Prometheus gives them (counters end in _total,
histograms are read as _bucket/_sum/_count)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from reconciler.metrics import Metrics

promql = pytest.importorskip("promql_parser", reason="needs the dev extra (promql-parser)")

FOLDER = Path(__file__).resolve().parent.parent / "deploy" / "components" / "monitoring"
RULES = yaml.safe_load((FOLDER / "prometheusrule.yaml").read_text())
DASHBOARD = json.loads((FOLDER / "dashboard.json").read_text())
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
    return names


def alerts() -> list[dict]:
    return [r for g in RULES["spec"]["groups"] for r in g["rules"]]


def queries() -> list[tuple[str, str]]:
    out = [(f"alert {r['alert']}", r["expr"]) for r in alerts()]
    out += [(f"panel {p['title']!r}", t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(kaito_gitops_\w+)\{", str(promql.parse(expr))))  # selectors print as name{...}


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[q[0] for q in queries()])
def test_every_query_parses_and_reads_exported_metrics(where, expr):
    names = metric_names(expr)
    assert names, f"{where} reads no kaito-gitops metric"
    assert names <= exported(), f"{where}: not exported by the daemon: {sorted(names - exported())}"


def test_the_alerts_cover_what_operators_asked_for():
    read = {n for r in alerts() for n in metric_names(r["expr"])}
    assert {
        "kaito_gitops_pass_failures_total",
        "kaito_gitops_workspaces_in_backoff",
        "kaito_gitops_webhook_requests_total",
        "kaito_gitops_workspace_condition",
    } <= read
    conditions = {c for r in alerts() for c in re.findall(r'condition="(\w+)"', r["expr"])}
    assert {"InferenceReady", "ResourceReady"} <= conditions  # not serving; node pool stuck


def test_every_alert_can_be_routed_and_read():
    for r in alerts():
        assert re.fullmatch(r"KaitoGitops[A-Za-z]+", r["alert"])
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]


def test_the_dashboard_is_importable():
    assert DASHBOARD["uid"] == "kaito-gitops" and DASHBOARD["panels"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in DASHBOARD["panels"])
    assert [v["name"] for v in DASHBOARD["templating"]["list"]] == ["datasource"]

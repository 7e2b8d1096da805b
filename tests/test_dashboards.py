"""The shipped Grafana dashboard (dashboards/xinf-watch.json) is well formed and only asks for what
xinf-watch exports.

- Structure: schema version, the `datasource`/`instance`/`source`/`key` variables, the rows in
  order, every panel with a title, a description, the datasource variable and targets; unique
  panel ids; grid positions inside the 24 columns and not overlapping.
- Metrics: every metric name in every query (panel targets, annotations, variable queries) is one
  the README's Metrics table lists (histograms as their _bucket/_sum/_count series) or a recording
  rule of rules/prometheus/; every label in a selector, `by (...)`, `without (...)` or a legend
  belongs to a metric the query uses; every selector filters on `instance=~"$instance"`.
- PromQL: with Grafana's variables replaced the way Grafana does it, every query is written as a
  recording rule and checked by the real `promtool check rules`; then `promtool test rules`
  evaluates every query against series with the README's metric names, labels and label values,
  and each must return data (a typo in a label value, `outcome="deny"`, returns nothing).
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tools import require_program

from xinf_watch.model import KeyState, Outcome

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "xinf-watch.json"
DASHBOARD_README = ROOT / "dashboards" / "README.md"
README = ROOT / "README.md"
RULES_DIR = ROOT / "rules" / "prometheus"

ROWS = ["Overview", "Keys", "Scopes", "Latency", "xinf-watch health"]
# Labels Prometheus attaches to every scraped series, whatever the exporter says.
TARGET_LABELS = {"instance", "job"}

# Grafana's variables as Grafana substitutes them: a multi-value selection becomes a regex group.
VARIABLES = {
    "instance": "(gw-1:9877|gw-2:9877)",
    "source": "(gateway)",
    "key": "(alice|unknown)",
    "__rate_interval": "5m",
    "__interval": "5m",
    "__range": "1h",
}


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Metric:
    name: str  # as in the exposition (counters with _total)
    type: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    values: dict[str, tuple[str, ...]]  # label values the README enumerates


def readme_metrics() -> dict[str, Metric]:
    """The README's Metrics table, one entry per metric name (a row may name several)."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, Metric] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or "`xinf_" not in cells[0]:
            continue
        names, kind, label_cell = cells
        values = {
            label: tuple(re.findall(r"`([^`]+)`", inside))
            for label, inside in re.findall(r"([a-z_]+)\s*\(([^)]*)\)", label_cell)
            if "`" in inside
        }
        labels = tuple(
            part.strip() for part in re.sub(r"\([^)]*\)", "", label_cell).split(",")
            if re.fullmatch(r"[a-z_]+", part.strip())
        )
        for name in re.findall(r"`(xinf_[a-z0-9_]+)`", names):
            metrics[name] = Metric(name, kind.split()[0], labels, values)
    return metrics


def exposed_series() -> dict[str, tuple[str, ...]]:
    """Series names a scrape can return, with their labels (histograms as their three series)."""
    series: dict[str, tuple[str, ...]] = {}
    for m in readme_metrics().values():
        if m.type == "histogram":
            series[m.name + "_bucket"] = (*m.labels, "le")
            series[m.name + "_sum"] = m.labels
            series[m.name + "_count"] = m.labels
        else:
            series[m.name] = m.labels
    return series


def recording_rules() -> set[str]:
    names: set[str] = set()
    for path in RULES_DIR.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


# --------------------------------------------------------------------------- the dashboard


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def content_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


@dataclass(frozen=True)
class Query:
    where: str  # for messages: panel title and refId, annotation or variable name
    name: str  # a recording-rule-safe identifier
    expr: str
    legend: str = ""


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression in the dashboard: panel targets, annotations, and the selector
    inside each variable's label_values(...)."""
    found: list[Query] = []
    for panel in content_panels(dashboard):
        for t in panel["targets"]:
            found.append(Query(f"panel {panel['title']!r} target {t['refId']}",
                               f"dashboard:panel{panel['id']}:{t['refId']}", t["expr"],
                               t.get("legendFormat", "")))
    for i, annotation in enumerate(dashboard["annotations"]["list"]):
        if "expr" in annotation:
            legend = annotation.get("titleFormat", "") + annotation.get("textFormat", "")
            found.append(Query(f"annotation {annotation['name']!r}", f"dashboard:annotation{i}",
                               annotation["expr"], legend))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            selector, label = label_values(var["definition"])
            found.append(Query(f"variable {var['name']!r}", f"dashboard:variable_{var['name']}", selector,
                               "{{" + label + "}}"))
    return found


def label_values(definition: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", definition)
    assert match, f"not a label_values(selector, label) query: {definition}"
    return match[1], match[2]


def substitute(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        assert name in VARIABLES, f"unknown variable ${name} in {expr}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# --------------------------------------------------------------------------- PromQL, lightly parsed

STRING = r'"(?:[^"\\]|\\.)*"'
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Identifiers that are metric names: not functions, keywords, labels, strings or durations."""
    s = re.sub(STRING, '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        if m[2] is None and m[1] not in KEYWORDS:
            names.add(m[1])
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matchers inside the braces or '') for every vector selector."""
    s = re.sub(STRING, lambda m: "\0" * len(m[0]), expr)  # keep offsets, hide strings
    found = []
    for m in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", s):
        if m[1] in metric_names(expr):
            braces = expr[m.start(2) + 1:m.end(2) - 1] if m[2] else ""
            found.append((m[1], braces))
    return found


def matcher_labels(braces: str) -> list[str]:
    return re.findall(rf"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*{STRING}", braces)


def grouping_labels(expr: str) -> list[str]:
    s = re.sub(STRING, '""', expr)
    labels: list[str] = []
    for inside in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        labels += [part.strip() for part in inside.split(",") if part.strip()]
    return labels


# --------------------------------------------------------------------------- structure


def test_dashboard_loads() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "xinf-watch"
    assert dashboard["title"]
    assert dashboard.get("id") is None, "an exported dashboard carries no database id"


def test_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["definition"] == "label_values(xinf_watch_build_info, instance)"
    assert label_values(variables["key"]["definition"])[0].startswith("xinf_requests_total")
    assert label_values(variables["key"]["definition"])[1] == "key"
    assert label_values(variables["source"]["definition"])[1] == "source"
    for name in ("instance", "source", "key"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["multi"] and var["includeAll"], name
        assert var["datasource"]["uid"] == "${datasource}", name
        # "All" as a regex matching every value, also those the variable's query has not seen (a
        # registry key never used has no xinf_requests_total series but must show in the key tables)
        assert var["allValue"] == ".*", name
        assert var["query"]["query"] == var["definition"], name


def test_rows_in_order() -> None:
    dashboard = load_dashboard()
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ROWS
    assert dashboard["panels"][0]["type"] == "row", "every panel belongs to a row"
    for row in rows:
        assert row["gridPos"]["x"] == 0 and row["gridPos"]["w"] == 24, row["title"]
        assert row["collapsed"] == bool(row.get("panels")), row["title"]


def test_every_panel_has_title_description_datasource_and_targets() -> None:
    for panel in content_panels(load_dashboard()):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        assert panel.get("title", "").strip(), where
        assert len(panel.get("description", "")) >= 80, f"{where}: say what to do when it looks wrong"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("targets"), where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for t in panel["targets"]:
            assert t.get("expr", "").strip(), where
            assert t["datasource"]["uid"] == "${datasource}", where


def test_annotations_use_the_datasource_variable() -> None:
    for annotation in load_dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"]["uid"] == "${datasource}", annotation["name"]


def test_panel_ids_unique() -> None:
    ids = [p["id"] for p in all_panels(load_dashboard())]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_grid_positions_fit_and_do_not_overlap() -> None:
    panels = list(all_panels(load_dashboard()))
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} is wider than the 24 grid columns"
    for a, b in itertools.combinations(panels, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
        assert apart, f"{a['title']!r} {ga} overlaps {b['title']!r} {gb}"


def test_dashboard_readme_documents_rows_and_variables() -> None:
    text = DASHBOARD_README.read_text()
    for title in ROWS:
        assert title in text, f"dashboards/README.md does not describe the {title!r} row"
    for var in load_dashboard()["templating"]["list"]:
        assert f"`{var['name']}`" in text, f"dashboards/README.md does not describe ${var['name']}"


# --------------------------------------------------------------------------- metrics and labels


def test_readme_table_is_parsed() -> None:
    metrics = readme_metrics()
    assert metrics["xinf_requests_total"].labels == ("source", "key", "scope", "outcome")
    assert metrics["xinf_request_duration_seconds"].type == "histogram"
    assert metrics["xinf_watch_lines_total"].values["result"] == ("parsed", "unparsed", "skipped")
    assert metrics["xinf_watch_outbox_pending"].labels == ()
    assert {"xinf_watch_batch_duration_seconds_total", "xinf_watch_batches_total"} <= metrics.keys()
    for m in metrics.values():
        assert m.type in {"counter", "gauge", "histogram"}, m
        assert (m.type == "counter") == m.name.endswith("_total"), m


def test_queries_use_only_listed_metrics() -> None:
    allowed = exposed_series().keys() | recording_rules()
    for q in queries(load_dashboard()):
        used = metric_names(q.expr)
        assert used, f"{q.where}: no metric in {q.expr}"
        assert used <= allowed, f"{q.where} uses metrics the README does not list: {used - allowed}"


def test_queries_use_only_labels_of_their_metrics() -> None:
    series = exposed_series()
    for q in queries(load_dashboard()):
        used = metric_names(q.expr)
        for name, braces in selectors(q.expr):
            own = set(series.get(name, ())) | TARGET_LABELS
            for label in matcher_labels(braces):
                assert label in own, f"{q.where}: {name} has no label {label!r}"
        known = set().union(*(series.get(n, ()) for n in used)) | TARGET_LABELS
        for label in grouping_labels(q.expr) + re.findall(r"\{\{\s*(\w+)\s*\}\}", q.legend):
            assert label in known, f"{q.where}: no metric of {sorted(used)} has a label {label!r}"


def test_every_selector_filters_by_instance() -> None:
    for q in queries(load_dashboard()):
        if q.where == "variable 'instance'":
            continue  # it is what lists the instances
        for name, braces in selectors(q.expr):
            assert 'instance=~"$instance"' in braces, f"{q.where}: {name} is not filtered by $instance"


def test_metric_selectors_filter_by_source_and_key_where_they_have_them() -> None:
    series = exposed_series()
    for q in queries(load_dashboard()):
        if q.where.startswith("variable"):
            continue
        for name, braces in selectors(q.expr):
            labels = series.get(name, ())
            if "source" in labels:
                assert 'source=~"$source"' in braces, f"{q.where}: {name} is not filtered by $source"
            if "key" in labels:
                assert 'key=~"$key"' in braces, f"{q.where}: {name} is not filtered by $key"


def test_substitution_leaves_no_variable() -> None:
    for q in queries(load_dashboard()):
        assert "$" not in substitute(q.expr), q.where


# --------------------------------------------------------------------------- promtool


def promtool() -> str:
    return require_program("promtool")


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    found = queries(load_dashboard())
    rules = {"groups": [{"name": "xinf-watch-dashboard", "rules": [
        {"record": q.name, "expr": substitute(q.expr)} for q in found
    ]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    done = run_promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    failing = [q.where for q in found if f'"{q.name}"' in done.stdout + done.stderr]
    assert done.returncode == 0, f"invalid PromQL in {failing}:\n{done.stdout}{done.stderr}"
    assert f"SUCCESS: {len(found)} rules found" in done.stdout, done.stdout


def synthetic_series() -> list[dict[str, str]]:
    """One input series per combination of a few label values for every README metric, on two
    instances, counters growing by 1 per minute: what a small fleet would expose."""
    vocabulary: dict[str, tuple[str, ...]] = {
        "source": ("gateway",),
        "key": ("alice", "unknown", "none"),
        "scope": ("models:read", "admin", "webui"),
        "outcome": tuple(o.value for o in Outcome),
        "state": tuple(s.value for s in KeyState if s not in (KeyState.UNKNOWN, KeyState.NONE)),
        "owner": ("alice",),
        "rule": ("denied-burst",),
        "severity": ("critical",),
        "target": ("ops", "alertmanager"),
        "version": ("0.1.0",),
    }
    out = []
    for m in readme_metrics().values():
        domains = [m.values.get(label) or vocabulary[label] for label in m.labels]
        for instance in ("gw-1:9877", "gw-2:9877"):
            for combo in itertools.product(*domains):
                labels = dict(zip(m.labels, combo, strict=True), instance=instance, job="xinf-watch")
                if m.type == "histogram":
                    for i, le in enumerate(("0.1", "1.0", "+Inf"), start=1):
                        out.append(series(m.name + "_bucket", {**labels, "le": le}, f"0+{i}x60"))
                    out.append(series(m.name + "_sum", labels, "0+0.5x60"))
                    out.append(series(m.name + "_count", labels, "0+3x60"))
                elif m.type == "counter":
                    out.append(series(m.name, labels, "0+1x60"))
                else:
                    out.append(series(m.name, labels, "1000x60" if "timestamp" in m.name else "1x60"))
    return out


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ",".join(f'{k}={json.dumps(v)}' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def test_queries_return_data(tmp_path: Path) -> None:
    found = queries(load_dashboard())
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": synthetic_series(),
            "promql_expr_test": [
                {"expr": f"absent({substitute(q.expr)})", "eval_time": "60m", "exp_samples": []}
                for q in found
            ],
        }],
    }
    (tmp_path / "dashboard.test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = run_promtool("test", "rules", "dashboard.test.yml", cwd=tmp_path)
    # promtool quotes each failing expression the way JSON does
    output = done.stdout + done.stderr
    failing = [q.where for q in found if json.dumps(f"absent({substitute(q.expr)})") in output]
    assert done.returncode == 0, f"no data (or an error) from {failing}:\n{done.stdout}{done.stderr}"

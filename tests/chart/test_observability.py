"""deploy/prometheus/alerts.yaml, the chart's PrometheusRule and deploy/grafana/outbox-relay.json:
they parse, they use only the relay's real metric names, and the chart renders the same rules."""

from __future__ import annotations

import json
import re

from helpers import MINIMAL, REPO, find, helm_error, load_yaml, merge, render

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "outbox-relay.json"

# The relay's metrics: the contract's (CONTRACT.md) and the extra ones.
CONTRACT_METRICS = {
    "outbox_relay_lag_seconds": "gauge",
    "outbox_relay_pending_events": "gauge",
    "outbox_relay_delivered_total": "counter",
    "outbox_relay_publish_errors_total": "counter",
    "outbox_relay_dead_lettered_total": "counter",
    "outbox_relay_publish_duration_seconds": "histogram",
}
EXTRA_METRICS = {
    "outbox_relay_dead_letter_events": "gauge",
    "outbox_relay_leader": "gauge",
    "outbox_relay_ready": "gauge",
    "outbox_relay_reconnects_total": "counter",
    "outbox_relay_last_delivery_timestamp_seconds": "gauge",
    "outbox_relay_batch_size": "histogram",
    "outbox_relay_db_query_duration_seconds": "histogram",
    "outbox_relay_lanes_owned": "gauge",
    "outbox_relay_lanes_unowned": "gauge",
    "outbox_relay_rebalances_total": "counter",
}
# Gauges each replica samples for its own lanes only (0 on a replica without lanes): the outbox's
# value is the sum over replicas (counts) or the max (lag), never one replica's.
SUMMED_GAUGES = {"outbox_relay_pending_events", "outbox_relay_dead_letter_events"}
MAXED_GAUGES = {"outbox_relay_lag_seconds"}
METRICS = CONTRACT_METRICS | EXTRA_METRICS
SERIES = set(METRICS) | {
    f"{name}{suffix}"
    for name, kind in METRICS.items()
    if kind == "histogram"
    for suffix in ("_bucket", "_sum", "_count")
}

PROMQL_WORDS = {
    # aggregations, functions and keywords used (or likely to be) in our queries
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "and", "or",
    "unless", "bool", "rate", "irate", "increase", "delta", "histogram_quantile", "absent",
    "absent_over_time", "max_over_time", "min_over_time", "avg_over_time", "clamp_min",
    "clamp_max", "time", "vector", "scalar", "topk", "offset",
    # Grafana template query function
    "label_values",
}
LABELS = {"namespace", "job", "pod", "instance", "le", "query", "target", "sink", "kind"}


def identifiers(expr: str) -> set[str]:
    """Metric names (and anything else that is not PromQL or a known label) in an expression."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [5m], [$__rate_interval]
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return words - PROMQL_WORDS - LABELS


def metric_names(expr: str) -> set[str]:
    return {w for w in identifiers(expr) if w.startswith("outbox_relay_")}


def test_identifier_check_catches_unknown_names():
    assert identifiers('sum by (job) (rate(outbox_relay_delivered_total{job=~"$job"}[5m]))') == {
        "outbox_relay_delivered_total"
    }
    assert identifiers("up == 0") == {"up"}
    assert identifiers("outbox_relay_lag > 1") - SERIES == {"outbox_relay_lag"}


# ---- alert rules -------------------------------------------------------------------------------


def deploy_rules() -> list[dict]:
    doc = load_yaml(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_file_parses_and_every_rule_is_complete():
    doc = load_yaml(ALERTS.read_text())
    assert [g["name"] for g in doc["groups"]] == ["outbox-relay"]
    for rule in deploy_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"OutboxRelay[A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_alerts_use_only_known_metrics():
    used = set()
    for rule in deploy_rules():
        names = identifiers(rule["expr"])
        assert names <= SERIES, f"{rule['alert']}: unknown names {names - SERIES}"
        assert names, f"{rule['alert']} references no metric"
        used |= names
    assert used >= {
        "outbox_relay_lag_seconds",
        "outbox_relay_leader",
        "outbox_relay_dead_lettered_total",
        "outbox_relay_ready",
        "outbox_relay_publish_errors_total",
    }


def test_required_alerts_exist():
    rules = {r["alert"]: r for r in deploy_rules()}
    lag = rules["OutboxRelayLagHigh"]
    assert "outbox_relay_lag_seconds" in lag["expr"] and "> 60" in lag["expr"] and lag["for"] == "5m"
    leader = rules["OutboxRelayNoLeader"]
    assert re.search(r"sum by \(namespace, job\) \(outbox_relay_leader\) == 0", leader["expr"])
    assert leader["for"] == "2m"
    assert "increase(outbox_relay_dead_lettered_total" in rules["OutboxRelayDeadLettersGrowing"]["expr"]
    not_ready = rules["OutboxRelayNotReady"]
    assert not_ready["expr"] == "outbox_relay_ready == 0" and not_ready["for"] == "5m"
    assert "outbox_relay_publish_errors_total" in rules["OutboxRelayPublishErrorsHigh"]["expr"]
    unowned = rules["OutboxRelayLanesUnowned"]
    assert unowned["expr"] == "max by (namespace, job) (outbox_relay_lanes_unowned) > 0"
    assert unowned["for"] == "2m" and unowned["labels"]["severity"] == "critical"


def test_lane_and_sink_wording():
    rules = {r["alert"]: r for r in deploy_rules()}
    unowned = " ".join(rules["OutboxRelayLanesUnowned"]["annotations"]["description"].split())
    assert "not relayed" in unowned and "`outbox-relay status` shows the lane map" in unowned
    assert "{{ $labels.namespace }}/{{ $labels.job }}" in unowned
    no_leader = " ".join(rules["OutboxRelayNoLeader"]["annotations"]["description"].split())
    assert "owns lanes" in no_leader and "single mode" in no_leader and "leader lock" in no_leader
    not_ready = " ".join(rules["OutboxRelayNotReady"]["annotations"]["description"].split())
    assert "every sink" in not_ready and "the broker" not in not_ready
    for rule in rules.values():
        text = " ".join(rule["annotations"].values())
        assert "active relay" not in text, f"{rule['alert']}: every replica relays in lanes mode"


def aggregations(expr: str) -> list[tuple[str, str]]:
    """(operator, grouping labels) of every `op by (...)` in an expression."""
    return [
        (op, " ".join(labels.split()))
        for op, labels in re.findall(r"\b(sum|max|min|avg|count) by \(([^)]*)\)", expr)
    ]


def test_rules_aggregate_per_job_over_sinks_and_replicas():
    # Counters carry `sink` (and `kind`), gauges come once per replica: an alert about a job must
    # group by (namespace, job) only, so it sums over sinks and never splits or double-counts.
    for rule in deploy_rules():
        expr = rule["expr"]
        for op, labels in aggregations(expr):
            assert labels == "namespace, job", f"{rule['alert']}: {op} by ({labels})"
        assert "sink" not in identifiers(expr) | set(re.findall(r"\w+", expr)), rule["alert"]
        for name in metric_names(expr):
            if METRICS.get(name) == "counter":
                # sum by (namespace, job) (rate(x[5m])) / (increase(...)): summed over sinks.
                pattern = rf"sum by \(namespace, job\) \((rate|increase)\({name}\["
                uses = len(re.findall(rf"{name}\b", expr))
                assert len(re.findall(pattern, expr)) == uses, (rule["alert"], name)
            if name in SUMMED_GAUGES:
                assert re.search(rf"sum by \(namespace, job\) \({name}\b", expr), (rule["alert"], name)
            if name in MAXED_GAUGES or name == "outbox_relay_lanes_unowned":
                assert re.search(rf"max by \(namespace, job\) \({name}\b", expr), (rule["alert"], name)
    errors = {r["alert"]: r for r in deploy_rules()}["OutboxRelayPublishErrorsHigh"]["expr"]
    assert aggregations(errors) == [("sum", "namespace, job")] * 4


def normalized(node):
    """Folds whitespace in strings so a reflowed line does not count as a difference."""
    if isinstance(node, dict):
        return {k: normalized(v) for k, v in node.items()}
    if isinstance(node, list):
        return [normalized(v) for v in node]
    if isinstance(node, str):
        return " ".join(node.split())
    return node


def chart_rule(values: dict) -> dict:
    return find(render(merge(MINIMAL, values)), "PrometheusRule")


def test_chart_renders_the_same_rules_as_deploy():
    chart_groups = chart_rule({"prometheusRule": {"enabled": True}})["spec"]["groups"]
    deploy_groups = load_yaml(ALERTS.read_text())["groups"]
    assert normalized(chart_groups) == normalized(deploy_groups), (
        "charts/outbox-relay/templates/_rules.tpl and deploy/prometheus/alerts.yaml differ: "
        "change both together"
    )


def test_chart_alert_thresholds_come_from_values():
    rule = chart_rule(
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prom"},
                "lagHigh": {"thresholdSeconds": 300, "for": "15m", "severity": "critical"},
                "publishErrors": {"ratio": 0.2},
                "absent": {"enabled": False},
                "lanesUnowned": {"for": "5m", "severity": "warning"},
            }
        }
    )
    assert rule["metadata"]["labels"]["release"] == "prom"
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert "OutboxRelayAbsent" not in rules
    lag = rules["OutboxRelayLagHigh"]
    assert lag["expr"].endswith("> 300") and lag["for"] == "15m"
    assert lag["labels"]["severity"] == "critical"
    assert "threshold 300s" in lag["annotations"]["description"]
    errors = rules["OutboxRelayPublishErrorsHigh"]
    assert errors["expr"].split()[-2:] == [">", "0.2"]
    assert "threshold 20%" in errors["annotations"]["description"]
    unowned = rules["OutboxRelayLanesUnowned"]
    assert unowned["for"] == "5m" and unowned["labels"]["severity"] == "warning"
    assert "no owner for 5 minutes" in " ".join(unowned["annotations"]["description"].split())


def test_chart_lanes_unowned_alert_can_be_disabled():
    rule = chart_rule({"prometheusRule": {"enabled": True, "lanesUnowned": {"enabled": False}}})
    names = [r["alert"] for r in rule["spec"]["groups"][0]["rules"]]
    assert "OutboxRelayLanesUnowned" not in names and "OutboxRelayNoLeader" in names


def test_chart_rejects_a_bad_lanes_unowned_value():
    for bad in ({"severity": "page"}, {"for": "two minutes"}, {"threshold": 1}):
        error = helm_error(render, merge(MINIMAL, {"prometheusRule": {"lanesUnowned": bad}}))
        assert "at '/prometheusRule/lanesUnowned" in error, error


def test_prometheus_templates_survive_helm():
    # {{ $labels.x }} must reach Prometheus verbatim, not be eaten by Helm's own templating.
    rules = chart_rule({"prometheusRule": {"enabled": True}})["spec"]["groups"][0]["rules"]
    descriptions = " ".join(r["annotations"]["description"] for r in rules)
    assert "{{ $labels.namespace }}/{{ $labels.job }}" in descriptions
    assert "{{ $value | humanizeDuration }}" in descriptions


# ---- dashboard ---------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_dashboard_parses_and_is_well_formed():
    dash = dashboard()
    assert dash["uid"] == "outbox-relay" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job"}
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_uses_only_known_metrics_and_shows_the_contract_ones():
    used = set()
    for expr in dashboard_queries(dashboard()):
        names = identifiers(expr)
        assert names <= SERIES, f"unknown names {names - SERIES} in {expr}"
        used |= {re.sub(r"_(bucket|sum|count)$", "", n) if n not in METRICS else n for n in names}
    missing = set(METRICS) - used
    assert not missing, f"metrics without a panel: {missing}"


def test_counters_are_only_used_through_rate_or_increase():
    # A raw counter value is meaningless on a graph or in an alert (it resets on restart).
    exprs = dashboard_queries(dashboard()) + [r["expr"] for r in deploy_rules()]
    for name, metric_kind in METRICS.items():
        if metric_kind != "counter":
            continue
        for expr in exprs:
            for match in re.finditer(rf"{name}\b", expr):
                before = expr[: match.start()]
                assert re.search(r"(rate|increase)\($", before.rstrip()), (name, expr)


def panels_by_title(dash: dict) -> dict[str, dict]:
    return {p["title"]: p for p in dash["panels"] if p["type"] != "row"}


def test_dashboard_shows_lanes():
    panels = panels_by_title(dashboard())
    owned = [t["expr"] for t in panels["Lanes owned per pod"]["targets"]]
    assert any(re.search(r"by \(pod\) \(outbox_relay_lanes_owned\b", e) for e in owned), owned
    for title in ("Unowned lanes",):
        assert any("outbox_relay_lanes_unowned" in t["expr"] for t in panels[title]["targets"])
    rebalances = [t["expr"] for t in panels["Rebalances / s"]["targets"]]
    assert any(re.search(r"rate\(outbox_relay_rebalances_total\b", e) for e in rebalances)


def test_dashboard_shows_delivered_and_errors_by_sink():
    panels = panels_by_title(dashboard())
    for title, metric in (
        ("Delivered / s by sink", "outbox_relay_delivered_total"),
        ("Publish errors / s and dead-lettered by sink", "outbox_relay_publish_errors_total"),
    ):
        target = next(t for t in panels[title]["targets"] if metric in t["expr"])
        groups = [labels for _, labels in aggregations(target["expr"])]
        assert groups and all("sink" in labels.split(", ") for labels in groups), target["expr"]
        assert "{{sink}}" in target["legendFormat"]


def test_dashboard_aggregates_per_lane_gauges_over_replicas():
    # Each replica samples its own lanes: pending and dead letters add up, lag is the worst one.
    for expr in dashboard_queries(dashboard()):
        for name in metric_names(expr) & (SUMMED_GAUGES | MAXED_GAUGES):
            op = "sum" if name in SUMMED_GAUGES else "max"
            assert re.search(rf"\b{op}(?: by \([^)]*\))? ?\({name}\b", expr), (name, expr)


def test_dashboard_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]

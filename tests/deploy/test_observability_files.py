"""deploy/observability: Prometheus scrape config, rules, Alertmanager, Grafana. No Prometheus or
Grafana runs in CI, so what is checked is what can go wrong in the files: they parse, every
PromQL expression parses (promql-parser, Prometheus's grammar), every metric and label they name
is one the services export (read from the code), every service is scraped, and the alerts
carry R15's three levels with the R14 figures among them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import selectors, unknown_references
from zhongshu.cli import services

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy/observability"
PROMETHEUS = HERE / "prometheus.yml"
RULES = sorted((HERE / "rules").glob("*.yml"))
DASHBOARDS = sorted((HERE / "grafana/dashboards").glob("*.json"))
LEVELS = {"warning", "error", "critical"}
# Grafana's variables, replaced by what Prometheus would get.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$service": ".*"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in load(path)["groups"] for rule in group["rules"]]


def recorded() -> frozenset[str]:
    return frozenset(rule["record"] for rule in rules() if "record" in rule)


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        found += [grafana_expr(t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        # label_values(<selector>, label): the selector is PromQL.
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
        assert inner, variable["definition"]
        found.append(inner.group(1))
    return found


def test_every_file_parses() -> None:
    yaml_files = [p for p in HERE.rglob("*.yml")]
    assert len(yaml_files) >= 5
    for path in yaml_files:
        assert isinstance(load(path), dict), path
    for path in [*DASHBOARDS, *(HERE / "targets").glob("*.json*")]:
        json.loads(path.read_text())
    assert RULES
    assert DASHBOARDS


def test_every_rule_expression_parses_and_names_only_what_the_services_export() -> None:
    problems = []
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        problems += [f"{name}: {p}" for p in unknown_references(rule["expr"], recorded())]
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_parses_and_names_only_what_the_services_export() -> None:
    problems = []
    for path in DASHBOARDS:
        for expr in dashboard_exprs(json.loads(path.read_text())):
            problems += [f"{path.name}: {p}" for p in unknown_references(expr, recorded())]
    assert not problems, "\n".join(problems)


def test_a_misspelt_metric_or_label_is_caught() -> None:
    assert unknown_references("rate(zhongshu_consumer_pendng[5m])") == [
        "zhongshu_consumer_pendng is exported by no service"
    ]
    assert unknown_references('zhongshu_consumer_pending{consumr="x"}') == [
        "zhongshu_consumer_pending has no label 'consumr'"
    ]
    with pytest.raises(ValueError, match="parenthesis"):
        list(selectors("sum(rate(zhongshu_consumer_pending[5m])"))


def test_every_alert_has_a_level_of_r15_and_a_summary() -> None:
    found = alerts()
    assert found
    for name, rule in found.items():
        assert rule["labels"]["level"] in LEVELS, name
        assert rule["labels"]["severity"] == rule["labels"]["level"], name
        assert rule["annotations"]["summary"], name
    assert {rule["labels"]["level"] for rule in found.values()} == LEVELS


def test_the_alerts_cover_r14_and_the_watchdogs_conditions() -> None:
    found = alerts()
    by_level = {
        level: {n for n, r in found.items() if r["labels"]["level"] == level} for level in LEVELS
    }
    assert {
        "ZhongshuCpuHigh",
        "ZhongshuMemoryHigh",
        "ZhongshuDiskHigh",
        "ZhongshuConsumerBacklogGrowing",
    } <= by_level["warning"]
    assert {
        "ZhongshuServiceDown",
        "ZhongshuDeadLettered",
        "ZhongshuLlmFailing",
        "ZhongshuPlatformCredentialsRefused",
    } <= by_level["error"]
    assert {"ZhongshuWebhookSignatureBurst", "ZhongshuUnknownApp"} <= by_level["critical"]
    # R14: inference P99 under 500 ms, and the API success rate.
    p99 = found["ZhongshuInferenceP99Slow"]["expr"]
    assert re.sub(r"\s+", "", p99) == re.sub(
        r"\s+",
        "",
        "histogram_quantile(0.99, sum by (le) "
        "(rate(zhongshu_agent_inference_seconds_bucket[5m]))) > 0.5",
    )
    assert "< 0.99" in found["ZhongshuApiSuccessLow"]["expr"]
    for name in ("ZhongshuCpuHigh", "ZhongshuMemoryHigh", "ZhongshuDiskHigh"):
        assert found[name]["expr"].strip().endswith("> 0.7"), name
        assert found[name]["for"] == "5m", name


def test_every_service_is_scraped_on_its_side_port() -> None:
    config = load(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = {
        group["labels"]["service"]: group["targets"] for group in jobs["zhongshu"]["static_configs"]
    }
    compose = load(ROOT / "deploy/compose/compose.yaml")["services"]
    runs = {n for n, s in compose.items() if list(s.get("command", [])[:1]) == ["run"]}
    assert set(services.names()) <= set(static), "a service zhongshu up starts is not scraped"
    assert runs <= set(static), "a service compose runs is not scraped"
    port = compose["router"]["environment"]["ZHONGSHU_HEALTH_PORT"]
    for name, targets in static.items():
        assert targets == [f"{name}:{port}"], name
    for job in jobs.values():
        assert job.get("honor_labels") is True, job["job_name"]  # keep the metrics' `service`
    assert all(path.startswith("rules/") for path in config["rule_files"])


def test_kubernetes_discovery_keeps_only_annotated_pods_of_the_hub() -> None:
    job = {j["job_name"]: j for j in load(PROMETHEUS)["scrape_configs"]}["zhongshu-kubernetes"]
    keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {r["source_labels"][0] for r in keeps} == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
    }
    [address] = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    joined = "10.1.2.3:9999;8000"  # the pod's address and its annotation, as Prometheus joins them
    assert re.fullmatch(address["regex"], joined)
    assert re.sub(address["regex"], address["replacement"].replace("$", "\\"), joined) == (
        "10.1.2.3:8000"
    )
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert "service" in targets


def test_alertmanager_routes_each_level_to_a_webhook() -> None:
    config = load(HERE / "alertmanager.yml")
    receivers = {r["name"]: r for r in config["receivers"]}
    routed = {}
    for route in config["route"]["routes"]:
        [matcher] = route["matchers"]
        level = re.fullmatch(r'level="(\w+)"', matcher)
        assert level, matcher
        routed[level.group(1)] = route["receiver"]
    assert set(routed) == LEVELS
    for receiver in routed.values():
        assert receivers[receiver]["webhook_configs"][0]["url"].startswith("http")
    assert config["route"]["receiver"] in receivers


def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource_they_use() -> None:
    [source] = load(HERE / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    [provider] = load(HERE / "grafana/provisioning/dashboards/zhongshu.yml")["providers"]
    assert provider["options"]["path"].endswith("/zhongshu")
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == source["uid"], panel["title"]
                assert panel["targets"], panel["title"]


def test_the_dashboard_shows_every_r14_figure() -> None:
    [dashboard] = [json.loads(p.read_text()) for p in DASHBOARDS if p.stem == "zhongshu-r14"]
    names = {
        s.name for expr in dashboard_exprs(dashboard) for s in selectors(expr) if s.name is not None
    }
    assert {
        "zhongshu_agent_inference_seconds_bucket",  # inference P50/P99
        "zhongshu_consumer_pending",  # backlog per consumer
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_io_read_bytes_total",
        "process_io_write_bytes_total",
        "zhongshu_gateway_requests_total",  # API success rate
        "zhongshu_webhook_requests_total",
        "zhongshu_platform_requests_total",  # platform-send success rate
        "zhongshu_alerts_active",  # alerts by level
    } <= names


def source_strings(pattern: str, *folders: str) -> set[str]:
    """The first string argument of every match of ``pattern`` in the folders' Python files."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(pattern, path.read_text()))
    return found


def test_the_label_values_the_rules_match_are_ones_the_code_produces() -> None:
    """A renamed refusal reason or outcome would silence an alert without breaking its PromQL."""
    from zhongshu.platforms.observe import OUTCOMES

    reasons = source_strings(
        r'(?:Rejected\(\s*\d+,\s*|SignatureInvalid\()"([^"]+)"',
        "libs/runtime/src",
        "services/ingress-feishu/src",
        "services/ingress-dingtalk/src",
    )
    assert {"bad signature", "unknown app"} <= reasons
    expected = {
        ("zhongshu_ingress_rejected_total", "reason"): reasons,
        ("zhongshu_platform_requests_total", "outcome"): set(OUTCOMES),
        ("zhongshu_agent_inference_seconds_count", "outcome"): {"ok", "error"},
    }
    exprs = [rule["expr"] for rule in rules()]
    exprs += [e for path in DASHBOARDS for e in dashboard_exprs(json.loads(path.read_text()))]
    checked = set()
    for expr in exprs:
        for selector in selectors(expr):
            for (name, label), allowed in expected.items():
                if selector.name == name and selector.values(label):
                    checked.add((name, label))
                    unknown = selector.values(label) - allowed
                    assert not unknown, f"{name}{{{label}}}: {unknown} never produced"
    assert checked == set(expected)

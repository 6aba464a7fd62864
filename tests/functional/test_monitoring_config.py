"""The monitoring of the compose stack, checked without Docker: Prometheus scrapes the
worker where it serves metrics, the rule files are there, and every metric the rules
and the dashboard use is one the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream.monitoring.metrics import WorkerMetrics
from tests.functional.compose_files import (
    DEPLOY,
    ROOT,
    environment,
    load_yaml,
    worker_metrics_port,
)

# Series Prometheus makes itself rather than scraping them from the worker.
PROMETHEUS_BUILTINS = {"up"}


def test_worker_metrics_are_reachable_on_the_network_and_published_on_loopback(services):
    worker = services["worker"]
    env = environment(worker)
    port = worker_metrics_port(services)
    assert env["TRIBUTARY_METRICS_ADDRESS"] == "0.0.0.0"  # inside the container, for Prometheus
    assert f"127.0.0.1:{port}:{port}" in [str(p) for p in worker["ports"]]
    assert f":{port}/metrics" in " ".join(worker["healthcheck"]["test"])


# -- Prometheus and Grafana ---------------------------------------------------------------


def _mounted(service: dict, target: str) -> Path:
    """The repository path mounted at `target` in a service."""
    for volume in service.get("volumes", []):
        source, mount, *_ = str(volume).split(":")
        if mount == target and source.startswith("./"):
            return ROOT / source
    raise AssertionError(f"nothing from the repository is mounted at {target}")


def _in_container(service: dict, path: str) -> Path:
    """The repository file behind a path inside the container, through its bind mounts."""
    for volume in service.get("volumes", []):
        source, mount, *_ = str(volume).split(":")
        if source.startswith("./") and (path == mount or path.startswith(mount.rstrip("/") + "/")):
            return ROOT / source / path[len(mount):].lstrip("/")
    raise AssertionError(f"{path} is not mounted from the repository")


@pytest.fixture(scope="module")
def prometheus_config(services) -> dict:
    return load_yaml(_mounted(services["prometheus"], "/etc/prometheus") / "prometheus.yml")


def test_prometheus_scrapes_the_worker_on_its_metrics_port(services, prometheus_config):
    port = worker_metrics_port(services)
    targets = set()
    for job in prometheus_config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{host}:{dns['port']}" for host in dns["names"]}
    assert f"worker:{port}" in targets


def test_prometheus_rule_files_are_in_the_repository(services, prometheus_config):
    assert prometheus_config["rule_files"]
    for path in prometheus_config["rule_files"]:
        assert _in_container(services["prometheus"], path).is_file(), path


def _worker_metric_names() -> set[str]:
    names = set()
    for family in WorkerMetrics(registry=CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def _rules(services, prometheus_config) -> list[dict]:
    rules = []
    for path in prometheus_config["rule_files"]:
        for group in load_yaml(_in_container(services["prometheus"], path))["groups"]:
            rules += group["rules"]
    return rules


def _dashboard_expressions() -> list[str]:
    expressions = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            expressions += [t["expr"] for t in panel.get("targets", [])]
    return expressions


def _series_used(expression: str) -> set[str]:
    """Metric and recorded-series names in a PromQL expression (ours all start `tributary`;
    the process metrics `process_`)."""
    return set(re.findall(r"\b(?:tributary|process)[_:][A-Za-z0-9_:]*", expression)) | {
        name for name in PROMETHEUS_BUILTINS if re.search(rf"\b{name}\b\s*[{{\[(]", expression)
    }


def test_rules_and_dashboard_use_only_metrics_the_worker_exports(services, prometheus_config):
    exported = _worker_metric_names()
    rules = _rules(services, prometheus_config)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    expressions = [rule["expr"] for rule in rules] + _dashboard_expressions()
    for expression in expressions:
        for name in _series_used(expression):
            assert name in exported | recorded | PROMETHEUS_BUILTINS, f"{name!r} (in {expression!r}) is not exported"


def test_rules_cover_stalls_errors_drift_and_a_missing_model(services, prometheus_config):
    alerts = [rule for rule in _rules(services, prometheus_config) if "alert" in rule]
    used = set().union(*(_series_used(rule["expr"]) for rule in alerts))
    recorded = {r["record"]: r["expr"] for r in _rules(services, prometheus_config) if "record" in r}
    for name in list(used):
        if name in recorded:
            used |= _series_used(recorded[name])
    assert {"tributary_events_consumed_total", "tributary_dead_letters_total", "tributary_drift_reports_total",
            "tributary_model_info"} <= used


def test_dashboard_shows_throughput_latency_alerts_dead_letters_drift_batches_and_model(services):
    used = set().union(*(_series_used(e) for e in _dashboard_expressions()))
    assert {"tributary_events_consumed_total", "tributary_end_to_end_latency_seconds_bucket", "tributary_alerts_total",
            "tributary_dead_letters_total", "tributary_drift_statistic", "tributary_batch_size_bucket",
            "tributary_model_info"} <= used
    latency = [e for e in _dashboard_expressions() if "tributary_end_to_end_latency_seconds_bucket" in e]
    assert {"0.5", "0.95", "0.99"} <= {re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in latency}


def test_dashboard_shows_lag_labelled_performance_the_offset_guard_and_the_process():
    used = set().union(*(_series_used(e) for e in _dashboard_expressions()))
    assert {"tributary_consumer_lag_offsets", "tributary_commit_lag_offsets", "tributary_labelled_performance",
            "tributary_events_held_back_total", "tributary_offset_watch_seeks_total", "process_cpu_seconds_total",
            "process_resident_memory_bytes"} <= used


def test_every_dashboard_query_can_be_narrowed_to_chosen_workers():
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "instance"]
        assert variable["includeAll"] and variable["multi"]
        for expression in _dashboard_expressions():
            selectors = re.findall(r"\b(?:tributary|process|up)[_A-Za-z0-9]*(\{[^}]*\})?", expression)
            assert selectors and all('instance=~"$instance"' in s for s in selectors), expression


def test_grafana_provisioning_points_at_the_dashboards_and_the_prometheus_service(services):
    grafana = services["grafana"]
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    datasources = [d for f in (provisioning / "datasources").glob("*.yml") for d in load_yaml(f)["datasources"]]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    uid = datasources[0]["uid"]
    providers = [p for f in (provisioning / "dashboards").glob("*.yml") for p in load_yaml(f)["providers"]]
    for provider in providers:
        assert any(_in_container(grafana, provider["options"]["path"]).glob("*.json"))
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid, panel["title"]
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(grafana, home).is_file()


# -- GPU override -----------------------------------------------------------------------------



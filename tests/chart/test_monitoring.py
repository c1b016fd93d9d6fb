"""The chart's PrometheusRule and Grafana dashboard against a real Prometheus.

The alerting rules are loaded as prometheus-operator would load them, and an Endpoint
alarm finds them by name and sees them fire for the green revision only, through the
operator's own Prometheus client. Every dashboard query must parse in Prometheus and read
only metrics of the documented contract (docs/runtime-metrics.md, operator metrics).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from chart.helm_kit import MONITORING, ROOT, merge, one, render, run
from fleetshift_devcluster.cluster import free_port
from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator import metrics as operator_metrics
from fleetshift_operator.alarms.prometheus import Prometheus

FAST_RULES = {
    "prometheusRule": {
        "errorBudgetBurn": {"longWindow": "10s", "shortWindow": "5s", "for": "0s"},
        "highErrorRate": {"window": "10s", "for": "0s"},
        "highLatencyP99": {"window": "10s", "for": "0s", "seconds": 0.05},
    }
}
LABELS = {"namespace": "ml", "endpoint": "churn", "variant": "main"}
GREEN, BLUE = "green1", "blue1"


class FleetTraffic(Collector):
    """Runtime metrics of two fleets: blue healthy, green with 40% 5xx and slow answers.

    Counters grow with wall time, so Prometheus sees steady rates without a thread.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        elapsed = time.monotonic() - self.started
        names = [*LABELS, "revision", "model"]
        invocations = CounterMetricFamily("fleetshift_invocations", "", labels=names)
        errors = CounterMetricFamily("fleetshift_invocation_5xx_errors", "", labels=names)
        for revision, error_share in ((BLUE, 0.0), (GREEN, 0.4)):
            values = [*LABELS.values(), revision, "model"]
            invocations.add_metric(values, 20 * elapsed)
            errors.add_metric(values, 20 * elapsed * error_share)
        latency = HistogramMetricFamily(
            "fleetshift_model_latency_seconds", "", labels=[*LABELS, "revision"]
        )
        for revision, seconds in ((BLUE, 0.002), (GREEN, 0.2)):
            count = 20 * elapsed
            buckets = [(str(le), count if seconds <= le else 0.0) for le in (0.005, 0.1, 0.25)]
            latency.add_metric(
                [*LABELS.values(), revision], [*buckets, ("+Inf", count)], count * seconds
            )
        yield invocations
        yield errors
        yield latency


@pytest.fixture
def rules_prometheus(
    tmp_path: Path, prometheus_factory: Callable[[dict[str, object]], LocalPrometheus]
) -> Iterator[Prometheus]:
    """Prometheus loading the chart's rules and scraping two fleets' runtime metrics."""
    registry = CollectorRegistry()
    registry.register(FleetTraffic())
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    rule = one(render(merge(MONITORING, FAST_RULES)), "PrometheusRule")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "runtime",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
            ],
        }
    )
    yield Prometheus(prometheus.url)
    server.shutdown()


def test_default_rules_pass_promtool(tmp_path: Path) -> None:
    rule = one(render(MONITORING), "PrometheusRule")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    output = run(["promtool", "check", "rules", str(rules)])
    assert "SUCCESS: 6 rules found" in output


@pytest.mark.parametrize(
    "alert",
    ["ModelEndpointErrorBudgetBurn", "ModelEndpointHighErrorRate", "ModelEndpointHighLatencyP99"],
)
def test_endpoint_alarms_find_the_rules_by_name_and_they_fire_for_green_only(
    rules_prometheus: Prometheus, alert: str
) -> None:
    assert rules_prometheus.alert_rule_exists(alert)
    green = {"namespace": "ml", "endpoint": "churn", "revision": GREEN}
    blue = {**green, "revision": BLUE}
    firing = wait_for(
        lambda: rules_prometheus.firing(alert, green),
        timeout=60,
        interval=1,
        message=f"{alert} firing for the green revision",
    )
    assert {series["metric"]["revision"] for series in firing} == {GREEN}
    assert rules_prometheus.firing(alert, blue) == []


def _dashboard() -> dict[str, Any]:
    path = ROOT / "charts" / "fleetshift" / "dashboards" / "fleetshift-rollouts.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", variable["definition"])
            assert inner, variable["definition"]
            queries.append(inner.group(1))
    return queries


def _as_prometheus_sees_it(query: str) -> str:
    """Grafana's variables replaced as Grafana would, with 'All' selected."""
    return (
        query.replace("$namespace", ".*")
        .replace("$endpoint", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "30s")
    )


def test_every_dashboard_query_parses_in_prometheus(
    tmp_path: Path, prometheus_factory: Callable[[dict[str, object]], LocalPrometheus]
) -> None:
    server = prometheus_factory({"global": {"scrape_interval": "15s"}})
    queries = _queries(_dashboard())
    assert len(queries) >= 12
    for query in queries:
        url = f"{server.url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": _as_prometheus_sees_it(query)}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert json.load(answer)["status"] == "success", query


def test_dashboard_reads_only_documented_metrics() -> None:
    documented = set(
        re.findall(r"`(fleetshift_[a-z0-9_]+)`", (ROOT / "docs" / "runtime-metrics.md").read_text())
    )
    documented |= set(re.findall(r"(fleetshift_operator_[a-z_]+)", operator_metrics.__doc__ or ""))
    used = {
        re.sub(r"_bucket$", "", name)
        for query in _queries(_dashboard())
        for name in re.findall(r"fleetshift_[a-z0-9_]+", query)
    }
    assert used <= documented, f"undocumented metrics: {used - documented}"
    for needed in (
        "fleetshift_invocations_total",
        "fleetshift_invocation_4xx_errors_total",
        "fleetshift_invocation_5xx_errors_total",
        "fleetshift_model_latency_seconds",
        "fleetshift_operator_green_traffic_percent",
    ):
        assert needed in used


def test_helm_renders_the_rules_with_custom_thresholds() -> None:
    values = merge(MONITORING, {"prometheusRule": {"highErrorRate": {"percent": 2.5}}})
    rule = one(render(values), "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["ModelEndpointHighErrorRate"].rstrip().endswith(">= 2.5")

"""Prometheus metrics on their own port change as traffic flows (the alarms' contract)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from support.runtime_kit import RuntimeProcess, TrainedModel, csv_body

LABELS = {
    "namespace": "shop",
    "endpoint": "churn",
    "variant": "AllTraffic",
    "revision": "3",
}
DOCUMENTED = Path(__file__).parents[2] / "docs" / "runtime-metrics.md"


def test_metrics_are_on_their_own_port_not_the_api(churn_server: RuntimeProcess) -> None:
    assert httpx.get(churn_server.metrics_url).status_code == 200
    assert httpx.get(f"{churn_server.url}/metrics").status_code == 404


def test_every_metric_carries_the_pod_labels_from_the_environment(
    churn_server: RuntimeProcess,
) -> None:
    fleetshift = [
        (name, dict(labels))
        for (name, labels) in churn_server.metrics()
        if name.startswith("fleetshift_")
    ]
    assert fleetshift
    for name, labels in fleetshift:
        for key, value in LABELS.items():
            assert labels.get(key) == value, (name, labels)


def test_invocations_and_latencies_count_after_traffic(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    def read() -> dict[str, float]:
        return {
            "invocations": churn_server.metric(
                "fleetshift_invocations_total", model="model", **LABELS
            ),
            "4xx": churn_server.metric("fleetshift_invocation_4xx_errors_total", **LABELS),
            "5xx": churn_server.metric("fleetshift_invocation_5xx_errors_total", **LABELS),
            "model_latency": churn_server.metric(
                "fleetshift_model_latency_seconds_count", **LABELS
            ),
            "overhead": churn_server.metric("fleetshift_overhead_latency_seconds_count", **LABELS),
        }

    before = read()
    for _ in range(5):
        ok = httpx.post(
            f"{churn_server.url}/invocations",
            content=csv_body(churn_model.rows[:2]),
            headers={"Content-Type": "text/csv"},
        )
        assert ok.status_code == 200
    for _ in range(2):
        bad = httpx.post(
            f"{churn_server.url}/invocations", content=b"1,2", headers={"Content-Type": "text/csv"}
        )
        assert bad.status_code == 400
    after = read()
    assert after["invocations"] - before["invocations"] == 7
    assert after["4xx"] - before["4xx"] == 2
    assert after["5xx"] == before["5xx"]
    assert after["model_latency"] - before["model_latency"] == 5
    assert after["overhead"] - before["overhead"] == 7
    assert churn_server.metric("fleetshift_inflight_requests", **LABELS) == 0


def test_model_latency_is_within_the_histogram_buckets(churn_server: RuntimeProcess) -> None:
    total = churn_server.metric("fleetshift_model_latency_seconds_sum", **LABELS)
    count = churn_server.metric("fleetshift_model_latency_seconds_count", **LABELS)
    assert count > 0
    assert 0 < total / count < 1.0


def test_model_load_time_and_loaded_models_are_reported(churn_server: RuntimeProcess) -> None:
    assert churn_server.metric("fleetshift_model_load_seconds_count", model="model") == 1
    assert churn_server.metric("fleetshift_model_load_seconds_sum", model="model") > 0
    assert churn_server.metric("fleetshift_loaded_models", **LABELS) == 1


def test_every_exported_metric_is_documented(churn_server: RuntimeProcess) -> None:
    documented = set(re.findall(r"`(fleetshift_[a-z0-9_]+)`", DOCUMENTED.read_text()))
    exported = {name for (name, _) in churn_server.metrics() if name.startswith("fleetshift_")}
    families = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in exported}
    for family in families:
        assert family in documented or f"{family}_total" in documented, family

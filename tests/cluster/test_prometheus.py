"""A real Prometheus scrapes a real exporter and answers PromQL through prometheus-api-client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fleetshift_devcluster.cluster import free_port
from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_devcluster.wait import wait_for


@pytest.fixture
def exporter() -> Iterator[tuple[int, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge("fleetshift_smoke_value", "A value the test sets", ["fleet"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, gauge
    server.shutdown()
    thread.join(timeout=5)


def test_prometheus_scrapes_an_exporter_and_answers_promql(
    exporter: tuple[int, Gauge],
    prometheus_factory: Callable[[dict[str, object]], LocalPrometheus],
) -> None:
    port, gauge = exporter
    gauge.labels(fleet="green").set(42)
    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "smoke", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            ],
        }
    )
    client = PrometheusConnect(url=prometheus.url, disable_ssl=True)

    def scraped_value() -> float | None:
        result = client.custom_query('fleetshift_smoke_value{fleet="green"}')
        return float(result[0]["value"][1]) if result else None

    assert wait_for(scraped_value, timeout=30, message="scraped value") == 42.0

    gauge.labels(fleet="green").set(7)
    assert wait_for(lambda: scraped_value() == 7.0, timeout=30, message="new value scraped")

    prometheus.stop()
    assert not prometheus.running()
    assert prometheus.port_free()

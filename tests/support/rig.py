"""The rig of the tests that judge real metrics: the traffic simulator (``support.traffic``),
a real Prometheus scraping it, and the operator reading that Prometheus.

Each test module names its own fixture with :func:`rig_fixture` (its endpoint, its request
rate, its alerting rules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_api_client import PrometheusConnect

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.prometheus import LocalPrometheus
from support.operator_process import OperatorProcess
from support.traffic import TrafficSimulator

PrometheusFactory = Callable[[dict[str, object]], LocalPrometheus]
"""The ``prometheus_factory`` fixture: starts a Prometheus with the given config."""


def scrape_config(target: str, rule_files: list[str] | None = None) -> dict[str, object]:
    """A Prometheus config that scrapes ``target`` every second and evaluates every second
    (the ``rule_files`` too, when given)."""
    config: dict[str, object] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
    }
    if rule_files is not None:
        config["rule_files"] = rule_files
    config["scrape_configs"] = [
        {"job_name": "fleetshift", "static_configs": [{"targets": [target]}]}
    ]
    return config


@dataclasses.dataclass
class Rig:
    """The simulated traffic, the Prometheus that scrapes it, and the operator that reads it."""

    traffic: TrafficSimulator
    prometheus: LocalPrometheus
    operator: OperatorProcess

    def query(self, promql: str) -> float | None:
        """The first value of an instant ``promql`` query, or ``None`` when it has none."""
        client = PrometheusConnect(url=self.prometheus.url, disable_ssl=True)
        result = client.custom_query(promql)
        return float(result[0]["value"][1]) if result else None


def rig_fixture(
    name: str,
    endpoint: str,
    *,
    requests_per_second: float = 50,
    rules: Mapping[str, object] | None = None,
) -> Any:
    """A fixture ``name`` for a test module: traffic to ``endpoint`` in the test's namespace,
    a Prometheus scraping it (evaluating ``rules``, when given), and the operator with
    ``FLEETSHIFT_PROMETHEUS_URL`` set to that Prometheus. The operator and the traffic stop
    after the test; ``prometheus_factory`` stops Prometheus."""

    def rig(
        cluster: LocalCluster,
        namespace: str,
        endpoint_crd: str,
        tmp_path: Path,
        prometheus_factory: PrometheusFactory,
    ) -> Iterator[Rig]:
        traffic = TrafficSimulator(
            cluster.kubeconfig, namespace, endpoint, requests_per_second=requests_per_second
        )
        traffic.start()
        rule_files = None
        if rules is not None:
            rules_file = tmp_path / "rules.yml"
            rules_file.write_text(yaml.safe_dump(rules))
            rule_files = [str(rules_file)]
        prometheus = prometheus_factory(scrape_config(traffic.target, rule_files))
        operator = OperatorProcess(
            cluster.kubeconfig,
            namespace,
            tmp_path / "operator.log",
            extra_env={"FLEETSHIFT_PROMETHEUS_URL": prometheus.url},
        )
        operator.start()
        yield Rig(traffic, prometheus, operator)
        operator.stop()
        traffic.stop()

    return pytest.fixture(name=name)(rig)

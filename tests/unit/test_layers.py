"""Pure modules import no kopf, Kubernetes or HTTP client; the two packages stay apart."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "fleetshift_operator.api",
    "fleetshift_operator.planning.types",
    "fleetshift_operator.planning.names",
    "fleetshift_operator.planning.steps",
    "fleetshift_operator.planning.plan",
    "fleetshift_operator.planning.status",
    "fleetshift_operator.manifests",
    "fleetshift_operator.controls",
    "fleetshift_operator.crd",
    "fleetshift_operator.alarms.base",
    "fleetshift_operator.alarms.semantics",
    "fleetshift_operator.alarms.templates",
    "fleetshift_operator.cli.view",
]
FORBIDDEN = [
    "kopf",
    "lightkube",
    "kubernetes",
    "requests",
    "httpx",
    "prometheus_api_client",
    "aiohttp",
    "fleetshift_runtime",
]


def imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in done.stdout.split()}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module: str) -> None:
    leaked = imported_by(module) & set(FORBIDDEN)
    assert not leaked, f"{module} pulls in {sorted(leaked)}"


def test_the_operator_does_not_import_the_runtime() -> None:
    assert "fleetshift_runtime" not in imported_by("fleetshift_operator.handlers")


@pytest.mark.parametrize(
    "module", ["fleetshift_operator.cli.main", "fleetshift_operator.cli.access"]
)
def test_the_kubectl_plugin_does_not_import_kopf_or_the_runtime(module: str) -> None:
    imported = imported_by(module)
    assert "kopf" not in imported
    assert "fleetshift_runtime" not in imported


def test_the_runtime_does_not_import_the_operator() -> None:
    imported = imported_by("fleetshift_runtime.app")
    assert "fleetshift_operator" not in imported
    assert "kopf" not in imported

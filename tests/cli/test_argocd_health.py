"""The Argo CD health check, in a real Lua, on the hand-written cases of its health_test.yaml.

``health_test.yaml`` and ``testdata/`` follow Argo CD's own layout for resource
customizations, so the same cases would run in Argo CD's test suite. The states
the operator reaches on the local control plane are checked again on the objects
it wrote, in ``test_argocd_health_cluster.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cli.argocd_health import HEALTH_DIR, HEALTH_LUA, ROOT, evaluate_health

CASES: list[dict[str, Any]] = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_of_hand_written_endpoint(case: dict[str, Any]) -> None:
    endpoint = yaml.safe_load((HEALTH_DIR / case["inputPath"]).read_text())

    assert evaluate_health(endpoint) == case["healthStatus"]


def test_every_status_argo_cd_knows_for_a_rollout_is_covered() -> None:
    covered = {c["healthStatus"]["status"] for c in CASES}

    assert covered == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize(
    "phase", ["Creating", "InService", "Updating", "RollingBack", "Failed", "UpdateRollbackFailed"]
)
def test_every_phase_has_a_hand_written_case(phase: str) -> None:
    phases = {
        (yaml.safe_load((HEALTH_DIR / c["inputPath"]).read_text()).get("status") or {}).get("phase")
        for c in CASES
    }

    assert phase in phases


def test_an_unknown_phase_is_unknown_not_healthy() -> None:
    endpoint = {"metadata": {"generation": 1}, "status": {"phase": "Hibernating"}}

    assert evaluate_health(endpoint) == {
        "status": "Unknown",
        "message": "Unknown phase Hibernating",
    }


def test_the_argocd_cm_snippet_carries_the_same_script() -> None:
    config_map = yaml.safe_load((ROOT / "deploy" / "argocd" / "argocd-cm.yaml").read_text())

    script = config_map["data"]["resource.customizations.health.fleetshift.dev_Endpoint"]

    assert config_map["metadata"]["name"] == "argocd-cm"
    assert script == HEALTH_LUA.read_text()


def test_the_applications_install_the_chart_and_an_example() -> None:
    documents = list(
        yaml.safe_load_all((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    )

    sources = {d["metadata"]["name"]: d["spec"]["source"] for d in documents}

    assert all(d["kind"] == "Application" for d in documents)
    assert sources["fleetshift"]["path"] == "charts/fleetshift"
    example = sources["churn"]
    assert (ROOT / example["path"] / example["directory"]["include"]).is_file()

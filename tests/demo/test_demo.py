"""The walkthrough `make demo` tells, run end to end with shorter waits.

Each run starts its own control plane, Prometheus, operator, launcher with one real
runtime process per pod, and load generator, exactly as `make demo` does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource

from fleetshift_devcluster.wait import wait_for

pytestmark = pytest.mark.cluster

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Endpoint = create_namespaced_resource("fleetshift.dev", "v1alpha1", "Endpoint", "endpoints")


def demo_command(output: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "fleetshift_devcluster.demo", "--output", str(output), *flags]


def processes_under(folder: Path) -> list[str]:
    """Processes whose working directory is inside ``folder`` (the demo starts every
    process it owns there)."""
    root = str(folder.resolve())
    found = []
    for process in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = process.info.get("cwd") or ""
        if cwd == root or cwd.startswith(root + "/"):
            found.append(f"{process.info['pid']} {' '.join(process.info['cmdline'] or [])}")
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One full run of the default stories (canary, linear, gates) with short waits."""
    output = tmp_path_factory.mktemp("demo")
    flags = ["--canary-wait", "12", "--linear-wait", "8", "--termination-wait", "4"]
    done = subprocess.run(
        demo_command(output, *flags),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return {"output": output, "done": done}


def scenario(run: dict[str, Any], name: str) -> dict[str, Any]:
    summary = json.loads((run["output"] / "summary.json").read_text())
    return next(s for s in summary["scenarios"] if s["name"] == name)


def test_demo_exits_zero_and_writes_its_summary(demo_run: dict[str, Any]) -> None:
    done = demo_run["done"]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    table = (demo_run["output"] / "summary.md").read_text()
    assert "| canary-rollback | RolledBack |" in table
    assert "| linear-success | Succeeded |" in table


@pytest.mark.parametrize("policy", ["canary", "linear"])
def test_incompatible_model_is_rolled_back_by_its_error_alarms(
    demo_run: dict[str, Any], policy: str
) -> None:
    row = scenario(demo_run, f"{policy}-rollback")
    assert row["outcome"] == "RolledBack"
    # The 5xx threshold or the comparison with blue, whichever breaches first.
    assert row["caught_by"] in {"green-5xx", "not-worse-than-blue"}, row
    # Real traffic reached the bad fleet, every request of it failed, and the alarm saw it.
    assert row["green_requests"] > 0
    assert row["green_errors"] == row["green_requests"]
    assert row["detect_seconds"] is not None and row["detect_seconds"] < 15
    assert row["detection_to_rollback_seconds"] is not None
    assert row["detection_to_rollback_seconds"] < 5


@pytest.mark.parametrize("policy", ["canary", "linear"])
def test_blast_radius_stays_under_the_bound_the_first_share_implies(
    demo_run: dict[str, Any], policy: str
) -> None:
    row = scenario(demo_run, f"{policy}-rollback")
    assert 0 < row["green_requests"] <= row["blast_radius_bound"]


@pytest.mark.parametrize("policy", ["canary", "linear"])
def test_valid_model_succeeds_with_no_errors(demo_run: dict[str, Any], policy: str) -> None:
    row = scenario(demo_run, f"{policy}-success")
    assert row["outcome"] == "Succeeded"
    assert row["green_requests"] > 0
    assert row["green_errors"] == 0
    # The comparison with blue, on the runtimes' own counters, held while the traffic was
    # too thin to tell and let green through once it showed green is not worse.
    compared = row["verdicts"]["not-worse-than-blue"]
    assert "Inconclusive" in compared and compared[-1] == "Healthy", row["verdicts"]
    assert "Breaching" not in compared
    # The capacity gate fit green's load per replica in the canary from the runtimes' own
    # counters and sized green for all of the traffic before the step to 100%.
    assert row["capacity_needed"] is not None and 1 <= row["capacity_needed"] <= 6, row


def test_a_model_whose_answers_moved_is_rolled_back_by_the_drift_gate_without_one_error(
    demo_run: dict[str, Any],
) -> None:
    row = scenario(demo_run, "gates-drift")
    assert row["outcome"] == "RolledBack"
    assert row["caught_by"] == "prediction-drift", row
    # Real traffic reached the shifted fleet, and every answer it gave was a 200 (a request
    # in flight when its rolled-back process stopped may go unanswered; none was a 5xx).
    assert row["green_requests"] > 0
    assert row["green_server_errors"] == 0
    assert row["detect_seconds"] is None, "no failure came before the drift breach"
    assert row["green_requests"] <= row["blast_radius_bound"]
    assert "prediction-drift" in row["reason"]
    # Held while it had too few predictions, then breached; no other alarm ever did.
    assert row["verdicts"]["prediction-drift"] == ["Inconclusive", "Breaching"], row["verdicts"]
    for name in ("green-5xx", "green-p99", "not-worse-than-blue"):
        assert "Breaching" not in row["verdicts"][name], row["verdicts"]


def test_the_valid_model_passes_the_drift_gate_and_is_promoted_only_once_approved(
    demo_run: dict[str, Any],
) -> None:
    row = scenario(demo_run, "gates-approved")
    assert row["outcome"] == "Succeeded", row
    assert row["green_errors"] == 0
    assert row["verdicts"]["prediction-drift"] == ["Inconclusive", "Healthy"], row["verdicts"]
    # The approver answers 503 for its first 10 s; the step to 100% waited for its 200.
    held = row["held_for_approval_seconds"]
    assert held is not None and held >= 10, row
    table = (demo_run["output"] / "summary.md").read_text()
    assert "| rolled back by prediction-drift |" in table
    assert f"| held {held:.1f} s for approval |" in table


def test_every_scenario_has_a_png_timeline(demo_run: dict[str, Any]) -> None:
    for name in [
        "canary-baseline",
        "canary-rollback",
        "canary-success",
        "linear-baseline",
        "linear-rollback",
        "linear-success",
        "gates-baseline",
        "gates-drift",
        "gates-approved",
    ]:
        image = (demo_run["output"] / f"{name}.png").read_bytes()
        assert image.startswith(PNG_MAGIC), name
        assert len(image) > 20_000, f"{name}.png is too small to hold four panels"


def test_no_process_is_left_behind(demo_run: dict[str, Any]) -> None:
    assert processes_under(demo_run["output"] / "work") == []


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    output = tmp_path / "interrupted"
    console = tmp_path / "demo-console.log"
    with console.open("wb") as sink:
        demo = subprocess.Popen(
            demo_command(output, "--canary-wait", "60"), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        kubeconfig = output / "work" / "cluster" / "admin.kubeconfig"

        def serving() -> bool:
            """The baseline endpoint exists and runtime processes serve it."""
            if not kubeconfig.exists() or demo.poll() is not None:
                return False
            try:
                kube = Client(KubeConfig.from_file(kubeconfig))
                kube.get(Endpoint, "churn-canary", namespace="demo")
            except Exception:
                return False
            return any("fleetshift_runtime" in p for p in processes_under(output / "work"))

        wait_for(serving, timeout=240, message="the demo to serve its baseline")
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 130, f"exit {code} after Ctrl-C; the demo printed:\n" + "\n".join(
            console.read_text(errors="replace").splitlines()[-40:]
        )
    finally:
        if demo.poll() is None:
            demo.kill()
    assert processes_under(output / "work") == []

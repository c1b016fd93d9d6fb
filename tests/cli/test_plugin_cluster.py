"""``kubectl fleetshift`` on real canary rollouts driven by the real operator.

Each test runs the installed entry point (``kubectl-fleetshift``) as a separate
process with ``KUBECONFIG`` set, as ``kubectl fleetshift`` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from lightkube import Client

from cli.helpers import (
    NAME,
    PLUGIN,
    create_in_service,
    plugin_env,
    run_plugin,
    spec_with,
    start_plugin,
    start_slow_canary,
    step_of,
    update_until_active,
)
from fleetshift_devcluster import binaries
from fleetshift_devcluster.cluster import CRASHLOOP_IMAGE
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    read_endpoint,
    revision_of,
    set_spec,
    status_of,
)

pytestmark = pytest.mark.cluster


def test_kubectl_finds_the_plugin_and_get_lists_the_endpoint(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    revision = create_in_service(kube, namespace, spec_with())
    kubectl = binaries.ensure((binaries.KUBECTL,))["kubectl"]
    env = plugin_env(kubeconfig)
    env["PATH"] = f"{PLUGIN.parent}{os.pathsep}{env.get('PATH', '')}"

    done = subprocess.run(
        [str(kubectl), "fleetshift", "get", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "REVISION", "GREEN%", "STEP", "AGE", "VARIANTS"]
    assert row.split()[:5] == [NAME, "InService", revision, "0", "-"]
    assert row.split()[-2:] == ["main", "100%"]


def test_get_all_namespaces_adds_the_namespace_column(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())

    done = run_plugin(kubeconfig, "get", "-A")

    assert done.returncode == 0, done.stderr
    assert any(
        line.split()[:3] == [namespace, NAME, "InService"] for line in done.stdout.split("\n")
    )


def test_watch_follows_a_canary_to_success_and_exits_zero(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    update = spec_with("s3://models/churn/v2", wait=4, termination=3)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)
    watch = start_plugin(kubeconfig, "watch", NAME, "-n", namespace, "--interval", "0.5")
    out, err = watch.communicate(timeout=120)

    assert watch.returncode == 0, err + out
    assert f"deploying {green} over {blue}" in out
    assert "Bake step 1/2     [" in out, "a progress bar through the first bake"
    assert "  ▶ Step 1/2   green 25%         baking 4s" in out
    assert "Termination wait  [" in out
    assert f"  green  {green}" in out and "  25%  4/4 Ready" in out
    assert "TrafficShifted" in out
    assert "✓ Succeeded" in out
    assert f"rollout succeeded: InService on {green}" in err


def test_watch_exits_one_when_the_canary_rolls_back(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    set_spec(kube, NAME, namespace, spec_with("s3://models/churn/v2", image=CRASHLOOP_IMAGE))

    watch = start_plugin(kubeconfig, "watch", NAME, "-n", namespace, "--interval", "0.5")
    out, err = watch.communicate(timeout=120)

    assert watch.returncode == 1, err + out
    assert "✗ RolledBack" in out and "CrashLoopBackOff" in out
    assert f"rollout did not succeed: InService on {blue}" in err


def test_watch_gives_up_with_exit_four_after_its_timeout(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())
    set_spec(kube, NAME, namespace, spec_with("s3://models/churn/v2", wait=300))

    done = run_plugin(kubeconfig, "watch", NAME, "-n", namespace, "--timeout", "2")

    assert done.returncode == 4
    assert "still in flight after 2.0s" in done.stderr


def test_status_and_history_after_a_rollout(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    green = update_until_active(
        kube, namespace, spec_with("s3://models/churn/v2", wait=1, termination=1)
    )

    status = run_plugin(kubeconfig, "status", NAME, "-n", namespace)
    history = run_plugin(kubeconfig, "history", NAME, "-n", namespace)

    assert status.returncode == 0, status.stderr
    assert f"{NAME}  InService  serving {green}" in status.stdout
    assert "  variant main: s3://models/churn/v2 x4" in status.stdout
    assert "  Degraded    False   Healthy" in status.stdout
    assert "✓ Succeeded" in status.stdout and "TrafficShifted" in status.stdout
    assert history.returncode == 0, history.stderr
    rows = [line.split()[:4] for line in history.stdout.splitlines()]
    assert rows == [
        ["#", "REVISION", "FROM", "OUTCOME"],
        ["1", blue, "-", "Succeeded"],
        ["2", green, blue, "Succeeded"],
    ]


def test_pause_holds_the_canary_and_resume_lets_it_finish(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())

    paused = run_plugin(kubeconfig, "pause", NAME, "-n", namespace)

    assert paused.returncode == 0, paused.stderr
    assert "paused: InService" in paused.stdout
    update = spec_with("s3://models/churn/v2", wait=2, termination=1)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    # Unpaused, the reconcile that sees every green replica Ready shifts the first step.
    held = wait_for(
        lambda: (
            (s := status_of(kube, NAME, namespace))
            .get("fleets", {})
            .get("green", {})
            .get("readyReplicas")
            == 4
            and s
        ),
        timeout=60,
        message="green fleet Ready",
    )
    assert held["step"]["stage"] == "Provisioning" and held["greenTrafficPercent"] == 0
    listed = run_plugin(kubeconfig, "get", "-n", namespace)
    assert "Provisioning (paused)" in listed.stdout
    shown = run_plugin(kubeconfig, "status", NAME, "-n", namespace)
    assert "PAUSED for" in shown.stdout and "fleetshift.dev/paused=true" in shown.stdout

    resumed = run_plugin(kubeconfig, "resume", NAME, "-n", namespace)

    assert resumed.returncode == 0, resumed.stderr
    assert "fleetshift.dev/paused" not in (
        read_endpoint(kube, NAME, namespace)["metadata"].get("annotations") or {}
    )
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == green,
        timeout=60,
        message="the resumed canary finishes",
    )


def test_promote_skips_the_termination_wait(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())
    update = spec_with("s3://models/churn/v2", wait=1, termination=600)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: step_of(kube, namespace).get("stage") == "TerminationWait",
        timeout=60,
        message="termination wait",
    )

    promoted = run_plugin(kubeconfig, "promote", NAME, "-n", namespace)

    assert promoted.returncode == 0, promoted.stderr
    assert "promote acknowledged: InService" in promoted.stdout
    assert deployments_of(kube, namespace, NAME).keys() == {green}
    spec = read_endpoint(kube, NAME, namespace)["spec"]
    assert spec["deploymentConfig"]["blueGreen"]["terminationWaitSeconds"] == 600, "spec untouched"


def test_abort_rolls_back_and_retry_redeploys(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    green = start_slow_canary(kube, namespace)

    aborted = run_plugin(kubeconfig, "abort", NAME, "-n", namespace)

    assert aborted.returncode == 0, aborted.stderr
    assert "abort acknowledged" in aborted.stdout
    wait_for(
        lambda: deployments_of(kube, namespace, NAME).keys() == {blue},
        timeout=30,
        message="green deleted",
    )
    watch = run_plugin(kubeconfig, "watch", NAME, "-n", namespace)
    assert watch.returncode == 1, "a watch of a rolled-back endpoint reports it"
    history = run_plugin(kubeconfig, "history", NAME, "-n", namespace)
    assert [green, blue, "RolledBack"] == history.stdout.splitlines()[-1].split()[1:4]
    assert "aborted on request" in history.stdout

    retried = run_plugin(kubeconfig, "retry", NAME, "-n", namespace)

    assert retried.returncode == 0, retried.stderr
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("candidateRevision") == green,
        timeout=30,
        message="the rolled-back revision deploys again",
    )


def test_abort_and_promote_refuse_when_no_deployment_is_in_flight(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())

    aborted = run_plugin(kubeconfig, "abort", NAME, "-n", namespace)
    promoted = run_plugin(kubeconfig, "promote", NAME, "-n", namespace)

    assert aborted.returncode == 1 and promoted.returncode == 1
    assert "nothing to abort" in aborted.stderr and "nothing to promote" in promoted.stderr
    annotations = read_endpoint(kube, NAME, namespace)["metadata"].get("annotations") or {}
    assert not {"fleetshift.dev/abort", "fleetshift.dev/promote"} & annotations.keys()


def test_a_missing_endpoint_is_named_in_the_error(
    kubeconfig: Path, namespace: str, endpoint_crd: str
) -> None:
    for command in ("status", "watch", "history", "pause", "abort"):
        done = run_plugin(kubeconfig, command, "nope", "-n", namespace)

        assert done.returncode == 3, command
        assert f'Endpoint "nope" not found in namespace "{namespace}"' in done.stderr, command


def test_promote_shadow_prints_the_change_then_applies_it_and_production_deploys_the_shadows_model(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    spec = spec_with()
    shadow = {
        "name": "next",
        "model": {"uri": "s3://models/churn/v2"},
        "replicas": 1,
        "shadow": {"samplingPercent": 10},
    }
    with_shadow = {**spec, "variants": [*spec["variants"], shadow]}
    first_revision = create_in_service(kube, namespace, with_shadow)
    wait_for(
        lambda: (
            {v["name"]: v.get("phase") for v in status_of(kube, NAME, namespace)["variants"]}
            == {"main": "InService", "next": "InService"}
        ),
        timeout=60,
        message="both variants InService",
    )

    listed = run_plugin(kubeconfig, "get", "-n", namespace).stdout.splitlines()[1]
    assert listed.endswith("main 100%, next shadow 10%")
    stored = read_endpoint(kube, NAME, namespace)["spec"]  # with the API's defaults
    printed = run_plugin(kubeconfig, "promote-shadow", NAME, "next", "-n", namespace)

    assert printed.returncode == 0, printed.stderr
    change = json.loads(printed.stdout)
    (main,) = change["spec"]["variants"]
    assert (main["name"], main["model"], main["replicas"]) == (
        "main",
        stored["variants"][1]["model"],
        4,
    )
    assert read_endpoint(kube, NAME, namespace)["spec"] == stored, "printing changes nothing"

    refused = run_plugin(kubeconfig, "promote-shadow", NAME, "main", "-n", namespace)
    assert refused.returncode == 1
    assert "variant 'main' is not a shadow" in refused.stderr

    applied = run_plugin(kubeconfig, "promote-shadow", NAME, "next", "--apply", "-n", namespace)

    assert applied.returncode == 0, applied.stderr
    promoted_revision = revision_of({"variants": [main]})
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("activeRevision") == promoted_revision
            and status_of(kube, NAME, namespace).get("phase") == "InService"
        ),
        timeout=90,
        message="production deployed the shadow's model through its canary",
    )
    history = status_of(kube, NAME, namespace).get("history") or []
    assert {
        "variant": "main",
        "revision": promoted_revision,
        "fromRevision": first_revision,
        "outcome": "Succeeded",
    }.items() <= history[-1].items(), "a deployment from the old revision, with its guardrails"
    assert set(deployments_of(kube, namespace, NAME)) == {promoted_revision}

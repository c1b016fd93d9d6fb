"""The walkthrough on real pods (``fleetshift-demo --node real``): the canary story on the
session's real node, in this process, as ``make demo NODE=real`` runs it (shorter bakes).

This module sorts before ``test_metrics_server.py`` and ``test_real_node.py``, whose last test
stops the session's cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetshift_devcluster import images, netns
from fleetshift_devcluster.demo.plots import fetch_shadow_series, plot_shadow_scenario
from fleetshift_devcluster.demo.progress import Progress
from fleetshift_devcluster.demo.realnode import RealNodeDemo
from fleetshift_devcluster.demo.story import NAMESPACE, DemoOptions, ScenarioRecord
from fleetshift_devcluster.demo.timeline import ScenarioSummary
from realnode.conftest import RealNode


def _delete_the_demo_namespace(node: RealNode) -> None:
    """Delete the demo's namespace, its Endpoints' finalizers first: the demo has stopped
    its operator, which would have removed them, and the next story needs the namespace
    gone."""
    names = node.kubectl(
        "get", "endpoints.fleetshift.dev", "-n", NAMESPACE, "-o", "name", check=False
    )
    for name in names.split():
        node.kubectl(
            "patch",
            name,
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
    node.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_the_canary_story_runs_on_real_pods_through_kube_proxy(
    real_node: RealNode, tmp_path: Path
) -> None:
    if not images.tarball_path(images.RUNTIME).exists():
        pytest.skip("no runtime image: `make images` builds it")
    options = DemoOptions(
        output=tmp_path / "demo",
        canary_wait=10,
        termination_wait=3,
        rate=40.0,
        policies=("Canary",),
    )
    finished: list[tuple[ScenarioSummary, ScenarioRecord]] = []
    try:
        with netns.entered(real_node.cluster.netns):
            demo = RealNodeDemo(options, real_node.cluster, Progress())
            with demo.running():
                demo.run(lambda summary, record: finished.append((summary, record)))
            answers = demo.loadgen.answers if demo.loadgen is not None else []
    finally:
        _delete_the_demo_namespace(real_node)
    summaries = {summary.name: summary for summary, _ in finished}
    assert [s.outcome for s in summaries.values()] == ["InService", "RolledBack", "Succeeded"]
    # What makes `fleetshift-demo` exit 0: each outcome as the story expects, and no fleet
    # served more than its share allows (a Service without a Ready pod is not called yet).
    assert all(s.as_expected and s.within_bound for s in summaries.values()), summaries
    rollback, success = summaries["canary-rollback"], summaries["canary-success"]
    # Whichever guardrail saw it first: the 5xx share, or green worse than blue.
    assert rollback.reason.startswith(("alarm green-5xx", "alarm not-worse-than-blue")), rollback
    # The incompatible model's pods failed real requests, and only about the canary's share.
    assert rollback.green_errors > 0 and rollback.within_bound, rollback
    assert success.green_requests > 0 and success.green_errors == 0, success
    # Every answer came through kube-proxy and named the fleet that gave it: the baseline's
    # and the valid model's answered 200, the incompatible model's only 5xx.
    answered = [a for a in answers if a.status]
    assert answered and all(a.revision for a in answered)
    ok = {a.revision for a in answered if a.status == 200}
    failed = {a.revision for a in answered if a.status >= 500}
    assert len(ok) == 2 and len(failed) == 1 and not ok & failed, (ok, failed)


def test_the_shadow_story_catches_a_disagreeing_shadow_before_it_serves_a_caller(
    real_node: RealNode, tmp_path: Path
) -> None:
    """``--policies shadow``: production copies every request to the shadow's green fleet,
    compares the answers, and the ``ShadowDisagreement`` alarm rolls the shadow back; no
    caller is answered by it, and the plot shows the paired difference."""
    if not images.tarball_path(images.RUNTIME).exists():
        pytest.skip("no runtime image: `make images` builds it")
    options = DemoOptions(output=tmp_path / "demo", canary_wait=10, rate=40.0, policies=("Shadow",))
    finished: list[tuple[ScenarioSummary, ScenarioRecord]] = []
    try:
        with netns.entered(real_node.cluster.netns):
            demo = RealNodeDemo(options, real_node.cluster, Progress())
            with demo.running():
                demo.run(lambda summary, record: finished.append((summary, record)))
                record = finished[-1][1]
                shadow = fetch_shadow_series(
                    demo.prometheus.url,
                    NAMESPACE,
                    record.scenario.endpoint,
                    record.started,
                    record.finished,
                )
                path = plot_shadow_scenario(
                    record, shadow, tmp_path / "shadow.png", "shadow", options.shadow_threshold
                )
            answers = demo.loadgen.answers if demo.loadgen is not None else []
    finally:
        _delete_the_demo_namespace(real_node)
    summaries = {summary.name: summary for summary, _ in finished}
    assert [s.outcome for s in summaries.values()] == ["InService", "RolledBack"], summaries
    caught = summaries["shadow-caught"]
    assert caught.reason.startswith("alarm shadow-disagreement"), caught
    assert caught.green_requests == 0, "the shadow never answered a caller"
    # Every caller was answered 200 by production's one revision.
    answered = [a for a in answers if a.status]
    assert answered and {a.status for a in answered} == {200}
    assert len({a.revision for a in answered}) == 1
    # The disagreeing revision's copies were compared: its class differed on most rows.
    disagreement = shadow["disagreement"].get(record.candidate)
    assert disagreement is not None, shadow["disagreement"].keys()
    assert max(v for v in disagreement[1] if v == v) >= options.shadow_threshold  # NaN-free
    assert path.stat().st_size > 0

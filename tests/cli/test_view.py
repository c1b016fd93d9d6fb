"""The plugin's text views, table by table, on status objects shaped as the operator writes them.

The objects come from ``deploy/argocd/health/.../testdata`` (the same ones the Argo CD
health check is tested on), with one field changed per case where a case needs it.
"""

from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetshift_operator.cli.view import (
    EVENTS_SHOWN,
    render_history,
    render_status,
    render_table,
    render_watch,
    rollout_in_flight,
    watch_exit_code,
)

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "deploy" / "argocd" / "health" / "fleetshift.dev" / "Endpoint" / "testdata"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def endpoint(name: str, **status: Any) -> dict[str, Any]:
    """A stored Endpoint from the testdata, with ``status`` fields replaced."""
    loaded: dict[str, Any] = yaml.safe_load((TESTDATA / f"{name}.yaml").read_text())
    loaded["status"] = {**loaded.get("status", {}), **status}
    return loaded


def event(reason: str, message: str, when: str, version: int, kind: str = "Normal") -> Any:
    return {
        "reason": reason,
        "message": message,
        "type": kind,
        "lastTimestamp": when,
        "metadata": {"name": f"kopf-event-{version}", "resourceVersion": str(version)},
    }


def lines_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


BAKING_ALARMS = [
    {
        "name": "green-5xx",
        "verdict": "Healthy",
        "value": 0.0,
        "reason": "0.0% of invocations answered 5xx",
        "evaluatedAt": "2026-01-01T00:01:28Z",
    }
]

# (case, endpoint, now, lines the frame must contain exactly)
WATCH_CASES = [
    (
        "bake 24 s into a 60 s step: 40% of the bar",
        endpoint("updating_baking", alarms=BAKING_ALARMS),
        "2026-01-01T00:01:29Z",
        [
            "churn  Updating  deploying 9f8e7d6c5b over 1a2b3c4d5e",
            "Canary 25% → 100% · namespace ml",
            "started 29s ago · deadline in 59m31s",
            "Bake step 1/2     [████████████░░░░░░░░░░░░░░░░░░]  40%  24s of 1m, 36s left",
            "  ✓ Provisioning      green 4/4 Ready",
            "  ▶ Step 1/2   green 25%         baking 60s",
            "  · Step 2/2   green 100%        bake 60s",
            "  · Termination wait             blue kept 120s",
            "  blue   1a2b3c4d5e [███████████████████████░░░░░░░]  75%  4/4 Ready"
            "  churn-main-1a2b3c4d5e",
            "  green  9f8e7d6c5b [████████░░░░░░░░░░░░░░░░░░░░░░]  25%  4/4 Ready"
            "  churn-main-9f8e7d6c5b",
            "  green-5xx         Healthy      value 0        1s ago     0.0% of invocations"
            " answered 5xx",
        ],
    ),
    (
        "termination wait: the bar runs over blue's grace period",
        endpoint(
            "termination_wait",
            step={
                "stage": "TerminationWait",
                "index": 2,
                "total": 2,
                "greenPercent": 100,
                "startedAt": "2026-01-01T00:03:00Z",
                "bakeUntil": "2026-01-01T00:05:00Z",
            },
        ),
        "2026-01-01T00:04:30Z",
        [
            "Termination wait  [███████████████████████░░░░░░░]  75%  1m30s of 2m, 30s left",
            "  ✓ Step 1/2   green 25%",
            "  ✓ Step 2/2   green 100%",
            "  ▶ Termination wait             blue kept 120s",
        ],
    ),
    (
        "paused: the bar stops where the pause began",
        endpoint("updating_paused"),
        "2026-01-01T00:09:00Z",
        [
            "PAUSED for 7m30s: steps are held, alarms still roll back"
            "  (kubectl fleetshift resume churn)",
            "Bake step 1/2     [█████████████░░░░░░░░░░░░░░░░░]  42%  25s of 1m, paused",
        ],
    ),
    (
        "provisioning: the bar counts green's Ready replicas",
        endpoint(
            "provisioning_paused",
            paused=False,
            fleets={
                "blue": {
                    "revision": "1a2b3c4d5e",
                    "deployment": "churn-main-1a2b3c4d5e",
                    "replicas": 4,
                    "readyReplicas": 4,
                    "trafficPercent": 100,
                },
                "green": {
                    "revision": "9f8e7d6c5b",
                    "deployment": "churn-main-9f8e7d6c5b",
                    "replicas": 4,
                    "readyReplicas": 2,
                    "trafficPercent": 0,
                },
            },
        ),
        "2026-01-01T00:01:03Z",
        [
            "Green Ready       [███████████████░░░░░░░░░░░░░░░] 2/4 replicas",
            "  ▶ Provisioning      green 2/4 Ready",
            "  · Step 1/2   green 25%         bake 60s",
        ],
    ),
    (
        "wait over but an alarm is Inconclusive: the step is held",
        endpoint(
            "updating_baking",
            alarms=[
                {
                    **BAKING_ALARMS[0],
                    "verdict": "Inconclusive",
                    "value": None,
                    "reason": "2 of 3 periods have data",
                }
            ],
        ),
        "2026-01-01T00:03:00Z",
        [
            "Bake step 1/2     [██████████████████████████████] 100%"
            "  wait over; held for a Healthy verdict",
            "  green-5xx         Inconclusive value -        1m32s ago  2 of 3 periods have data",
        ],
    ),
    (
        "rolling back: the reason, and blue carries everything",
        endpoint(
            "rolling_back",
            rollbackCause={
                "name": "green-5xx",
                "verdict": "Breaching",
                "value": 12.5,
                "reason": "12.5% of invocations answered 5xx",
                "evaluatedAt": "2026-01-01T00:01:40Z",
            },
        ),
        "2026-01-01T00:01:41Z",
        [
            "churn  RollingBack  deploying 9f8e7d6c5b over 1a2b3c4d5e",
            "  ↩ Rolling back to 1a2b3c4d5e: alarm green-5xx: 12.5% of invocations answered 5xx",
            "  blue   1a2b3c4d5e [██████████████████████████████] 100%  4/4 Ready"
            "  churn-main-1a2b3c4d5e",
            "  rollback cause: alarm green-5xx Breaching (value 12.5): 12.5% of invocations"
            " answered 5xx",
        ],
    ),
    (
        "rolled back: the outcome and the Degraded condition",
        endpoint("rolled_back"),
        "2026-01-01T00:02:30Z",
        [
            "churn  InService  serving 1a2b3c4d5e",
            "✗ RolledBack 30s ago: revision 9f8e7d6c5b — aborted on request",
            "  Degraded: revision 9f8e7d6c5b was rolledback: aborted on request; change the spec"
            " or request a re…",
        ],
    ),
    (
        "succeeded: one fleet, all the traffic",
        endpoint("in_service"),
        "2026-01-01T00:05:10Z",
        [
            "churn  InService  serving 9f8e7d6c5b",
            "  blue   9f8e7d6c5b [██████████████████████████████] 100%  4/4 Ready"
            "  churn-main-9f8e7d6c5b",
            "✓ Succeeded 1m ago: revision 9f8e7d6c5b — all traffic on 9f8e7d6c5b;"
            " 1a2b3c4d5e retired",
        ],
    ),
    (
        "first deployment: the fleet's readiness",
        endpoint("creating"),
        "2026-01-01T00:00:02Z",
        [
            "churn  Creating  creating 1a2b3c4d5e",
            "Fleet Ready       [████████░░░░░░░░░░░░░░░░░░░░░░] 1/4 replicas",
            "  ▶ Provisioning      fleet 1/4 Ready",
        ],
    ),
]


@pytest.mark.parametrize(
    ("case", "endpoint_object", "now", "expected"),
    WATCH_CASES,
    ids=[c[0] for c in WATCH_CASES],
)
def test_watch_frame_shows(
    case: str, endpoint_object: dict[str, Any], now: str, expected: list[str]
) -> None:
    frame = lines_of(render_watch(endpoint_object, now=at(now)))

    missing = [line for line in expected if line not in frame]

    assert not missing, f"{case}: missing {missing}\n--- frame ---\n" + "\n".join(frame)


def test_watch_shows_progress_bar_during_bake_that_fills_as_time_passes() -> None:
    baking = endpoint("updating_baking")
    bars = []
    for second in (5, 35, 65, 95, 125):
        now = at("2026-01-01T00:01:00Z") + datetime.timedelta(seconds=second)
        line = next(line for line in lines_of(render_watch(baking, now=now)) if "Bake step" in line)
        bars.append(line.count("█"))
    assert bars == sorted(bars) and bars[0] == 0 and bars[-1] == 30


def test_watch_shows_only_the_newest_events_oldest_first() -> None:
    events = [
        event("TrafficShifted", f"step {n}", f"2026-01-01T00:01:{n:02d}Z", 100 + n)
        for n in range(10)
    ]
    # two events stamped in the same second keep the API server's write order
    events.append(event("RollbackStarted", "rolling back", "2026-01-01T00:01:09Z", 200, "Warning"))
    frame = lines_of(
        render_watch(
            endpoint("updating_baking"),
            now=at("2026-01-01T00:02:00Z"),
            events=list(reversed(events)),
        )
    )

    shown = [line for line in frame[frame.index("Events") + 1 :]]

    assert len(shown) == EVENTS_SHOWN
    assert shown[-2:] == [
        "     51s  TrafficShifted       step 9",
        "     51s  RollbackStarted      rolling back",
    ]


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
@pytest.mark.parametrize("name", sorted(p.stem for p in TESTDATA.glob("*.yaml")))
def test_every_watch_line_fits_the_width(name: str, width: int) -> None:
    frame = render_watch(
        endpoint(name, alarms=BAKING_ALARMS), now=at("2026-01-01T00:01:30Z"), width=width
    )

    assert max(len(line) for line in lines_of(frame)) <= width


def test_watch_colours_only_when_asked_and_says_the_same_words() -> None:
    rolled_back = endpoint("rolling_back")
    now = at("2026-01-01T00:01:41Z")

    plain = render_watch(rolled_back, now=now)
    coloured = render_watch(rolled_back, now=now, color=True)

    assert "\x1b[" not in plain
    assert "\x1b[31m" in coloured  # RollingBack in red
    assert ANSI.sub("", coloured) == plain


def test_render_watch_is_pure() -> None:
    baking = endpoint("updating_baking", alarms=BAKING_ALARMS)
    before = copy.deepcopy(baking)
    now = at("2026-01-01T00:01:29Z")

    assert render_watch(baking, now=now) == render_watch(baking, now=now)
    assert baking == before


def test_watch_survives_an_endpoint_the_operator_has_not_seen_yet() -> None:
    fresh = {"metadata": {"name": "churn", "namespace": "ml"}, "spec": {}}

    frame = render_watch(fresh, now=at("2026-01-01T00:00:00Z"))

    assert frame.startswith("churn  Pending\nAllAtOnce 100% · namespace ml\n")


@pytest.mark.parametrize(
    ("name", "in_flight", "exit_code"),
    [
        ("no_status", True, None),
        ("creating", True, None),
        ("updating_baking", True, None),
        ("updating_paused", True, None),
        ("spec_not_yet_observed", True, None),
        ("rolling_back", True, None),
        ("update_rollback_failed", True, None),
        ("in_service", False, 0),
        ("in_service_paused", False, 0),
        ("rolled_back", False, 1),
        ("failed", False, 1),
    ],
)
def test_watch_ends_when_nothing_is_in_flight_with_the_rollouts_exit_code(
    name: str, in_flight: bool, exit_code: int | None
) -> None:
    stored = endpoint(name)

    assert rollout_in_flight(stored) is in_flight
    if exit_code is not None:
        assert watch_exit_code(stored) == exit_code


def test_a_pending_retry_request_keeps_the_watch_going() -> None:
    rolled_back = endpoint("rolled_back")
    rolled_back["metadata"]["annotations"] = {"fleetshift.dev/retry": "again"}

    assert rollout_in_flight(rolled_back)


def test_get_table_has_one_row_per_endpoint_and_a_namespace_column_with_all() -> None:
    now = at("2026-01-01T00:10:00Z")
    baking = endpoint("updating_baking")
    baking["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    paused = endpoint("updating_paused")
    paused["metadata"].update(name="fraud", namespace="risk")

    table = lines_of(render_table([baking, paused], now=now, all_namespaces=True))

    assert table == [
        "NAMESPACE   NAME    PHASE      REVISION                  GREEN%   STEP"
        "                  AGE   VARIANTS",
        "ml          churn   Updating   1a2b3c4d5e → 9f8e7d6c5b   25       Baking 1/2"
        "            10m   -",
        "risk        fraud   Updating   1a2b3c4d5e → 9f8e7d6c5b   25       Baking 1/2 (paused)"
        "   -     -",
    ]


def test_history_lists_every_finished_deployment_oldest_first() -> None:
    table = lines_of(render_history(endpoint("rolled_back")))

    assert table == [
        "#   REVISION     FROM         OUTCOME      STARTED                DURATION   REASON",
        "1   1a2b3c4d5e   -            Succeeded    2026-01-01T00:00:00Z   4s"
        "         endpoint created",
        "2   9f8e7d6c5b   1a2b3c4d5e   RolledBack   2026-01-01T00:01:00Z   1m"
        "         aborted on request",
    ]


def test_history_of_a_new_endpoint_says_there_is_none() -> None:
    assert render_history(endpoint("no_status")) == "no finished deployments yet\n"


def test_status_adds_spec_conditions_and_controls_to_the_watch_frame() -> None:
    paused = endpoint("updating_paused", handledActions={"promote": "old"})
    paused["metadata"]["annotations"]["fleetshift.dev/promote"] = "new"

    page = lines_of(render_status(paused, now=at("2026-01-01T00:02:00Z")))

    for line in [
        "  variant main: s3://models/churn/v2 x4",
        "  policy: Canary 25% → 100%, bake 60s, termination wait 120s",
        "  router: Replicas",
        "  Progressing True    Baking                1m55s ago  step 1/2, green 25%",
        "  fleetshift.dev/paused=true",
        "  fleetshift.dev/promote=new (not handled yet)",
        "  1a2b3c4d5e Succeeded  1m56s ago  endpoint created",
    ]:
        assert line in page, "\n".join(page)

"""Webhook gates and notifications: the verdict table, signatures, the payload, and the
planner's worked example (``planning/gates.py``) played against a small in-memory world.

The world answers each webhook the status says is due (``due_calls``), as the reconcile
does, and feeds the answers back as observations; its fleets are Ready at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetshift_operator.api import (
    BlueGreen,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    EndpointStatus,
    ModelSource,
    Rolling,
    TrafficRouting,
    Variant,
    Webhook,
)
from fleetshift_operator.cli.view import render_watch
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.types import Controls, FleetObservation, Observed, Plan
from fleetshift_operator.webhooks.base import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookCall,
    WebhookResult,
    due_calls,
    judge_answer,
    retryable,
    sign,
    verify,
)
from fleetshift_operator.webhooks.http import HttpSender

T0 = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.UTC)
CANARY = TrafficRouting(
    type="Canary",
    canarySize=CapacitySize(type="CapacityPercent", value=25),
    waitIntervalSeconds=60,
)


# -- the verdict table (base.py's module docstring) ------------------------------------


@pytest.mark.parametrize(
    ("status_code", "error", "verdict"),
    [
        (200, None, "Healthy"),
        (204, None, "Healthy"),
        (299, None, "Healthy"),
        (301, None, "Inconclusive"),
        (404, None, "Inconclusive"),
        (409, None, "Inconclusive"),
        (500, None, "Inconclusive"),
        (503, None, "Inconclusive"),
        (None, "timed out after 10s", "Inconclusive"),
        (None, "ConnectionError: refused", "Inconclusive"),
        (None, None, "Inconclusive"),
    ],
)
def test_only_a_2xx_answer_is_healthy(
    status_code: int | None, error: str | None, verdict: str
) -> None:
    assert judge_answer(status_code, error)[0] == verdict


@given(st.one_of(st.none(), st.integers(min_value=100, max_value=599)), st.text(max_size=20))
def test_a_failed_or_missing_answer_is_never_healthy(status_code: int | None, error: str) -> None:
    verdict, reason = judge_answer(status_code, error or None)
    assert (verdict == "Healthy") == (status_code is not None and 200 <= status_code < 300)
    assert verdict in ("Healthy", "Inconclusive")
    assert reason


@pytest.mark.parametrize(
    ("kind", "status_code", "again"),
    [
        ("PreRollout", None, True),
        ("PreRollout", 503, False),
        ("ConfirmPromotion", 200, False),
        ("PostRollout", None, True),
        ("PostRollout", 503, True),
        ("OnRollback", 429, True),
        ("OnRollback", 400, False),
        ("OnRollback", 200, False),
    ],
)
def test_which_attempts_are_retried(kind: Any, status_code: int | None, again: bool) -> None:
    assert retryable(kind, status_code) is again


@given(st.binary(min_size=1, max_size=64), st.integers(0, 2**40), st.binary(max_size=256))
def test_a_signature_verifies_only_its_own_body_and_time(key: bytes, at: int, body: bytes) -> None:
    signature = sign(key, at, body)
    assert signature.startswith("sha256=")
    assert verify(key, str(at), body, signature)
    assert not verify(key, str(at + 1), body, signature)
    assert not verify(key, str(at), body + b" ", signature)
    assert not verify(key + b"x", str(at), body, signature)


# -- the planner, against a small world --------------------------------------------------


def hooks_spec(
    *hooks: Webhook, model: str = "s3://m/v1", rolling: Rolling | None = None
) -> EndpointSpec:
    variant = Variant(name="main", model=ModelSource(uri=model), replicas=4)
    if rolling is not None:
        config = DeploymentConfig(rolling=rolling, webhooks=list(hooks))
    else:
        config = DeploymentConfig(
            blueGreen=BlueGreen(trafficRouting=CANARY, terminationWaitSeconds=0),
            webhooks=list(hooks),
        )
    return EndpointSpec(variants=[variant], deploymentConfig=config)


Answer = Callable[[WebhookCall], WebhookResult]


def answering(codes: dict[str, list[int | None]]) -> tuple[Answer, list[WebhookCall]]:
    """A receiver that answers each webhook with its next code (the last one repeats)."""
    calls: list[WebhookCall] = []

    def answer(call: WebhookCall) -> WebhookResult:
        calls.append(call)
        script = codes.get(call.hook.name, [200])
        code = script[min(len(script) - 1, sum(c.hook.name == call.hook.name for c in calls) - 1)]
        verdict, reason = judge_answer(code, None if code else "refused")
        return WebhookResult(call.hook.name, call.revision, verdict, code, reason)

    return answer, calls


@dataclasses.dataclass
class World:
    spec: EndpointSpec
    answer: Answer
    now: datetime.datetime = T0
    status: EndpointStatus | None = None
    fleets: tuple[FleetObservation, ...] = ()
    controls: Controls = dataclasses.field(default_factory=Controls)
    plans: list[Plan] = dataclasses.field(default_factory=list)

    def tick(self, seconds: float = 1.0, *, deliver: bool = True) -> Plan:
        """One reconcile: call what is due, plan, make the planned fleets Ready at once.
        ``deliver=False``: the operator dies after the calls, before writing status."""
        calls = due_calls(self.spec, self.status, "ml", "churn", self.now)
        results: dict[str, tuple[WebhookResult, ...]] = {}
        for call in calls:
            results[call.variant] = (*results.get(call.variant, ()), self.answer(call))
        observed = Observed(
            endpoint="churn",
            fleets=self.fleets,
            controls=self.controls,
            webhooks=results or None,
        )
        plan = plan_endpoint(self.spec, self.status, observed, self.now)
        if deliver:
            # The status as the apiserver stores it, and as a restarted operator reads it.
            raw = plan.status.model_dump(mode="json", exclude_none=True)
            self.status = EndpointStatus.model_validate(raw)
            self.fleets = tuple(
                FleetObservation(f.variant, f.revision, f.replicas, f.replicas) for f in plan.fleets
            )
            self.plans.append(plan)
        self.now += datetime.timedelta(seconds=seconds)
        return plan

    def run(self, seconds: float, step: float = 1.0) -> None:
        end = self.now + datetime.timedelta(seconds=seconds)
        while self.now < end:
            self.tick(step)

    @property
    def variant(self) -> Any:
        assert self.status is not None
        return self.status.variants[0]

    def hook(self, name: str) -> Any:
        return next(h for h in self.variant.webhooks if h.name == name)

    def green_percent(self) -> int:
        plan = self.plans[-1]
        candidate = self.variant.candidateRevision
        return plan.traffic("main").get(candidate, 0) if candidate else 0


PRE = Webhook(name="smoke", type="PreRollout", url="http://hooks/smoke")
CONFIRM = Webhook(name="approve", type="ConfirmPromotion", url="http://hooks/approve")
POST = Webhook(name="done", type="PostRollout", url="http://hooks/done")
ROLLBACK = Webhook(name="page", type="OnRollback", url="http://hooks/page")


def in_service(world: World) -> World:
    world.run(3)
    assert world.status is not None and world.status.phase == "InService"
    return world


def test_worked_example_pre_rollout_then_a_held_confirm_promotion() -> None:
    """planning/gates.py's worked example, call by call."""
    answer, calls = answering({"approve": [503, 503, 200]})
    world = in_service(World(hooks_spec(PRE, CONFIRM, POST), answer))
    assert calls == [], "a first deployment calls no webhook"
    world.spec = hooks_spec(PRE, CONFIRM, POST, model="s3://m/v2")
    green = calculate_revision(world.spec.variants[0])

    world.tick()  # green provisioning, Ready at once in this world
    world.tick()  # green Ready: PreRollout requested, no traffic yet
    assert world.hook("smoke").state == "Pending" and world.green_percent() == 0
    world.tick()  # smoke called: 200, step 1 (25%)
    assert [c.hook.name for c in calls] == ["smoke"]
    assert world.hook("smoke").state == "Passed" and world.green_percent() == 25

    world.run(59)  # the bake (60 s from step 1): no webhook is called
    assert [c.hook.name for c in calls] == ["smoke"]
    assert not any(h.name == "approve" for h in world.variant.webhooks)
    world.tick(5)  # bake over: approve requested
    assert world.hook("approve").state == "Pending" and world.hook("approve").calls == 0
    world.tick(5)  # approve: 503, held
    world.tick(5)  # approve: 503, held
    held = world.hook("approve")
    assert (held.state, held.verdict, held.statusCode, held.calls) == (
        "Pending",
        "Inconclusive",
        503,
        2,
    )
    assert world.green_percent() == 25
    assert world.status is not None
    progressing = next(c for c in world.status.conditions if c.type == "Progressing")
    assert "waiting for webhook approve (ConfirmPromotion): HTTP 503" in progressing.message
    world.tick(5)  # approve: 200, step 2 (100%)
    assert world.hook("approve").state == "Passed" and world.green_percent() == 100
    world.run(62)  # step 2's bake, no termination wait
    assert world.variant.activeRevision == green
    assert [c.hook.name for c in calls] == ["smoke", "approve", "approve", "approve", "done"]
    assert world.hook("done").state == "Delivered" and world.hook("done").outcome is not None
    assert calls[-1].payload["outcome"].startswith("Succeeded")
    world.run(30)
    assert len(calls) == 5, "nothing is called twice"


def test_a_gate_that_passed_is_not_called_again_after_a_restart() -> None:
    answer, calls = answering({"approve": [503]})
    world = in_service(World(hooks_spec(PRE, CONFIRM), answer))
    world.spec = hooks_spec(PRE, CONFIRM, model="s3://m/v2")
    world.run(3)
    assert world.hook("smoke").state == "Passed"
    # A new operator: a fresh world that starts from the stored status.
    restarted = World(world.spec, answer, world.now, world.status, world.fleets)
    restarted.run(120, step=5)
    assert [c.hook.name for c in calls].count("smoke") == 1
    assert restarted.hook("approve").state == "Pending"


def test_a_gate_that_never_answers_holds_until_the_deadline_rolls_back() -> None:
    answer, calls = answering({"smoke": [None]})
    world = in_service(World(hooks_spec(PRE, ROLLBACK), answer))
    world.spec = hooks_spec(PRE, ROLLBACK, model="s3://m/v2")
    world.run(3590, step=10)
    assert world.green_percent() == 0, "no traffic ever moved to green"
    assert world.hook("smoke").verdict == "Inconclusive"
    world.run(30, step=10)
    last = world.variant.lastDeployment
    assert last.outcome == "RolledBack"
    assert last.reason == (
        "the deployment did not finish before maximumExecutionTimeoutSeconds; "
        "waiting for webhook smoke (PreRollout): no answer: refused"
    ), "the provisioning timeout does not apply once green is Ready"
    assert not any(h.name == "smoke" for h in world.variant.webhooks), "a closed gate goes"
    assert [c.hook.name for c in calls].count("page") == 1
    assert world.hook("page").state == "Delivered"


def test_on_rollback_is_sent_once_and_a_failed_one_is_not_repeated() -> None:
    answer, calls = answering({"page": [500]})
    world = in_service(World(hooks_spec(ROLLBACK, POST), answer))
    world.spec = hooks_spec(ROLLBACK, POST, model="s3://m/v2")
    world.run(3)
    world.controls = Controls(abort="1")
    world.run(20)
    assert [c.hook.name for c in calls] == ["page"]
    page = world.hook("page")
    assert (page.state, page.statusCode, page.outcome) == (
        "Failed",
        500,
        "RolledBack: aborted on request",
    )
    assert calls[0].payload["type"] == "OnRollback"
    assert world.variant.phase == "InService"


def test_a_notification_whose_answer_was_lost_is_sent_again() -> None:
    answer, calls = answering({})
    world = in_service(World(hooks_spec(ROLLBACK), answer))
    world.spec = hooks_spec(ROLLBACK, model="s3://m/v2")
    world.run(3)
    world.controls = Controls(abort="1")
    world.tick()  # rollback decided: page queued
    world.tick(deliver=False)  # page sent, the operator dies before writing status
    world.run(10)
    assert [c.hook.name for c in calls] == ["page", "page"]
    assert calls[0].delivery == calls[1].delivery, "the receiver can tell it is the same"
    assert world.hook("page").state == "Delivered"


def test_a_manual_promote_skips_a_holding_gate() -> None:
    answer, calls = answering({"approve": [503]})
    world = in_service(World(hooks_spec(CONFIRM, POST), answer))
    world.spec = hooks_spec(CONFIRM, POST, model="s3://m/v2")
    world.run(75, step=5)
    assert world.hook("approve").verdict == "Inconclusive"
    world.controls = Controls(promote="1")
    world.run(5)
    assert world.variant.lastDeployment.outcome == "Succeeded"
    assert [h.name for h in world.variant.webhooks] == ["done"]
    assert [c.hook.name for c in calls][-1] == "done"


def test_a_superseded_deployment_stops_asking_and_the_new_revision_asks_its_own() -> None:
    answer, calls = answering({"approve": [503]})
    world = in_service(World(hooks_spec(CONFIRM, ROLLBACK), answer))
    world.spec = hooks_spec(CONFIRM, ROLLBACK, model="s3://m/v2")
    world.run(75, step=5)
    v2 = world.hook("approve").revision
    world.spec = hooks_spec(CONFIRM, ROLLBACK, model="s3://m/v3")
    world.run(75, step=5)
    assert {c.revision for c in calls} == {v2, world.variant.candidateRevision}
    assert [(h.name, h.revision) for h in world.variant.webhooks] == [
        ("approve", world.variant.candidateRevision)
    ], "no notification for a superseded deployment"


def test_an_unreadable_secret_is_an_error_that_holds() -> None:
    def answer(call: WebhookCall) -> WebhookResult:
        return WebhookResult(call.hook.name, call.revision, "Error", None, "no Secret", 0)

    world = in_service(World(hooks_spec(PRE), answer))
    world.spec = hooks_spec(PRE, model="s3://m/v2")
    world.run(30)
    assert world.hook("smoke").verdict == "Error" and world.hook("smoke").state == "Pending"
    assert world.green_percent() == 0


def test_rolling_batches_wait_for_pre_rollout_and_confirm_promotion() -> None:
    rolling = Rolling(
        maximumBatchSize=CapacitySize(type="CapacityPercent", value=50), waitIntervalSeconds=10
    )
    answer, calls = answering({"approve": [503, 200]})
    world = in_service(World(hooks_spec(PRE, CONFIRM, rolling=rolling), answer))
    world.spec = hooks_spec(PRE, CONFIRM, rolling=rolling, model="s3://m/v2")
    world.run(60, step=5)
    assert [c.hook.name for c in calls] == ["smoke", "approve", "approve"]
    assert world.variant.lastDeployment.outcome == "Succeeded"


def test_hooks_removed_from_the_spec_are_forgotten() -> None:
    answer, _ = answering({"approve": [503]})
    world = in_service(World(hooks_spec(CONFIRM), answer))
    world.spec = hooks_spec(CONFIRM, model="s3://m/v2")
    world.run(80, step=5)
    assert world.hook("approve").state == "Pending"
    world.spec = hooks_spec(model="s3://m/v2")
    world.run(10, step=5)
    assert world.variant.webhooks == []
    assert world.variant.lastDeployment.outcome == "Succeeded"


def test_watch_shows_each_webhook_with_its_answer() -> None:
    answer, _ = answering({"approve": [503]})
    world = in_service(World(hooks_spec(PRE, CONFIRM), answer))
    world.spec = hooks_spec(PRE, CONFIRM, model="s3://m/v2")
    world.run(80, step=5)
    assert world.status is not None
    endpoint = {
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": world.spec.model_dump(mode="json", exclude_none=True),
        "status": world.status.model_dump(mode="json", exclude_none=True),
    }
    frame = render_watch(endpoint, now=world.now, width=140)
    assert "Webhooks" in frame
    assert "wait over; held by webhook approve (ConfirmPromotion)" in frame
    line = next(x for x in frame.splitlines() if x.startswith("  approve"))
    assert "ConfirmPromotion" in line and "Pending" in line and "HTTP 503" in line


# -- the HTTP sender, against a real server on 127.0.0.1 ----------------------------------


@dataclasses.dataclass
class Receiver:
    url: str
    codes: list[int]
    seen: list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    seen: list[tuple[dict[str, str], bytes]] = []
    codes: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((dict(self.headers), body))
            self.send_response(codes.pop(0) if codes else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_port}/hook", codes, seen)
    server.shutdown()
    server.server_close()


def call_to(url: str, kind: Any = "PostRollout", retries: int = 2) -> WebhookCall:
    hook = Webhook(name="h", type=kind, url=url, timeoutSeconds=1, retries=retries)
    return WebhookCall("main", hook, "r2", {"deliveryId": "d1", "type": kind, "revision": "r2"})


def test_the_sender_signs_each_call(receiver: Receiver) -> None:
    result = HttpSender(backoff=0.01).send(call_to(receiver.url), b"s3cret", T0)
    assert (result.verdict, result.status_code, result.attempts) == ("Healthy", 200, 1)
    headers, body = receiver.seen[0]
    assert verify(b"s3cret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert headers[TIMESTAMP_HEADER] == str(int(T0.timestamp()))
    assert headers[DELIVERY_HEADER] == "d1"
    assert json.loads(body)["revision"] == "r2"


def test_the_sender_retries_a_busy_receiver_for_a_notification(receiver: Receiver) -> None:
    receiver.codes.extend([503, 503])
    result = HttpSender(backoff=0.01).send(call_to(receiver.url), None, T0)
    assert (result.verdict, result.attempts) == ("Healthy", 3)
    assert SIGNATURE_HEADER not in receiver.seen[0][0]


def test_a_gate_answer_is_not_retried(receiver: Receiver) -> None:
    receiver.codes.append(503)
    result = HttpSender(backoff=0.01).send(call_to(receiver.url, "ConfirmPromotion"), None, T0)
    assert (result.verdict, result.status_code, result.attempts) == ("Inconclusive", 503, 1)


def test_no_answer_is_retried_then_inconclusive() -> None:
    # A port nothing listens on (bound and closed at once).
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = HttpSender(backoff=0.01).send(call_to(f"http://127.0.0.1:{port}/"), None, T0)
    assert (result.verdict, result.status_code, result.attempts) == ("Inconclusive", None, 3)
    assert result.reason.startswith("no answer: ConnectionError")

"""Webhook gates end to end: the real operator on the real local control plane calls a
real HTTP server on 127.0.0.1, while steady traffic follows the Service's EndpointSlices.

The receiver checks the HMAC signature of every call with the key the Endpoint's Secret
holds. ConfirmPromotion answers 503 until the test lets it through; the rollout holds
its canary share meanwhile and completes only after the 200. A rollback sends OnRollback
once. Each test has its own namespace and polls cluster state.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.webhooks.base import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from support.operator_process import (
    EndpointResource,
    OperatorProcess,
    create_serving,
    deployments_of,
    endpoint_manifest,
    revision_of,
    serving_by_revision,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec
from support.traffic import TrafficSimulator

NAME = "churn"
KEY = "s3cret-signing-key"
spec_with = functools.partial(endpoint_spec, termination=1, timeout=1800, wait=2)


@dataclasses.dataclass
class Call:
    path: str
    payload: dict[str, Any]
    headers: dict[str, str]
    signed: bool
    answer: int
    serving: dict[str, int]
    """The Service's Ready endpoints per revision when the call came in."""


class Receiver:
    """The webhook server: answers by path, checks every signature, records every call."""

    def __init__(self, traffic: TrafficSimulator) -> None:
        self.calls: list[Call] = []
        self.confirm_open = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers)
                signed = verify(
                    KEY.encode(),
                    headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    headers.get(SIGNATURE_HEADER, ""),
                )
                answer = 200
                if self.path == "/confirm" and not receiver.confirm_open.is_set():
                    answer = 503
                if not signed:
                    answer = 401
                try:
                    serving = traffic.serving()
                except Exception:
                    serving = {}
                with receiver.lock:
                    receiver.calls.append(
                        Call(self.path, json.loads(body), headers, signed, answer, serving)
                    )
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def to(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]


@dataclasses.dataclass
class Hooks:
    receiver: Receiver
    traffic: TrafficSimulator


@pytest.fixture
def hooks(cluster: LocalCluster, namespace: str, kube: Client) -> Iterator[Hooks]:
    traffic = TrafficSimulator(cluster.kubeconfig, namespace, NAME, requests_per_second=50)
    receiver = Receiver(traffic)
    receiver.thread.start()
    kube.create(
        Secret(metadata=ObjectMeta(name="hooks", namespace=namespace), stringData={"hmac": KEY})
    )
    traffic.start()
    yield Hooks(receiver, traffic)
    traffic.stop()
    receiver.server.shutdown()
    receiver.server.server_close()


def webhooks(url: str) -> list[dict[str, Any]]:
    signed = {"secretRef": {"name": "hooks", "key": "hmac"}, "timeoutSeconds": 5, "retries": 1}
    return [
        {"name": "smoke", "type": "PreRollout", "url": f"{url}/pre", **signed},
        {"name": "approve", "type": "ConfirmPromotion", "url": f"{url}/confirm", **signed},
        {"name": "done", "type": "PostRollout", "url": f"{url}/post", **signed},
        {
            "name": "page",
            "type": "OnRollback",
            "url": f"{url}/rollback",
            "metadata": {"team": "ml-platform"},
            **signed,
        },
    ]


def with_hooks(spec: dict[str, Any], url: str) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["deploymentConfig"]["webhooks"] = webhooks(url)
    return spec


def create_in_service(kube: Client, namespace: str, spec: dict[str, Any]) -> str:
    """Create ``NAME`` from ``spec``; its revision, once InService with every replica serving."""
    return create_serving(kube, NAME, namespace, spec)


def hook_record(kube: Client, namespace: str, name: str) -> dict[str, Any]:
    variant = status_of(kube, NAME, namespace)["variants"][0]
    record: dict[str, Any] = next(h for h in variant.get("webhooks", []) if h["name"] == name)
    return record


def test_confirm_promotion_holds_on_503_and_the_rollout_completes_only_after_200(
    kube: Client, namespace: str, operator_process: OperatorProcess, hooks: Hooks
) -> None:
    receiver = hooks.receiver
    blue = create_in_service(kube, namespace, with_hooks(spec_with(), receiver.url))
    assert receiver.calls == [], "creating an Endpoint calls no webhook"
    update = with_hooks(spec_with("s3://models/churn/v2"), receiver.url)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    # PreRollout: called once green is Ready, before any traffic reaches it.
    pre = wait_for(lambda: receiver.to("/pre"), timeout=60, message="PreRollout called")[0]
    assert pre.serving.get(green, 0) == 0, "green had traffic before PreRollout answered"
    assert pre.payload["type"] == "PreRollout" and pre.payload["revision"] == green
    assert pre.payload["fromRevision"] == blue and pre.payload["traffic"]["green"] == 0
    assert pre.headers[EVENT_HEADER] == "PreRollout" and pre.headers[DELIVERY_HEADER]

    # ConfirmPromotion answers 503: the canary holds its share, and says why.
    wait_for(lambda: len(receiver.to("/confirm")) >= 2, timeout=60, message="two 503s")
    record = wait_for(
        lambda: (r := hook_record(kube, namespace, "approve"))["statusCode"] == 503 and r,
        timeout=10,
        message="the 503 recorded in status",
    )
    assert (record["state"], record["verdict"]) == ("Pending", "Inconclusive")
    assert serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1}
    status = status_of(kube, NAME, namespace)
    assert status["phase"] == "Updating" and status["activeRevision"] == blue
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert "waiting for webhook approve (ConfirmPromotion): HTTP 503" in progressing["message"]
    assert hooks.traffic.served.get(green, 0) > 0, "the canary serves real traffic meanwhile"

    # A restarted operator does not call a PreRollout that already passed.
    operator_process.kill()
    operator_process.start()
    held = len(receiver.to("/confirm"))
    wait_for(
        lambda: len(receiver.to("/confirm")) >= held + 2,
        timeout=60,
        message="the restarted operator keeps asking ConfirmPromotion",
    )
    assert len(receiver.to("/pre")) == 1
    assert deployments_of(kube, namespace, NAME).keys() == {blue, green}

    receiver.confirm_open.set()
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("activeRevision") == green
            and deployments_of(kube, namespace, NAME).keys() == {green}
        ),
        timeout=60,
        message="promoted after the 200, blue retired",
    )
    confirms = receiver.to("/confirm")
    assert [c.answer for c in confirms][-1] == 200
    assert [c.answer for c in confirms].count(200) == 1
    post = wait_for(lambda: receiver.to("/post"), timeout=30, message="PostRollout sent")
    assert post[0].payload["outcome"].startswith("Succeeded")
    wait_for(
        lambda: hook_record(kube, namespace, "done")["state"] == "Delivered",
        timeout=30,
        message="PostRollout recorded as delivered",
    )
    assert len(receiver.to("/post")) == 1
    assert receiver.to("/rollback") == []
    assert all(c.signed for c in receiver.calls), "every call carries a valid signature"


def test_on_rollback_is_sent_once_when_a_rollout_rolls_back(
    kube: Client, namespace: str, operator_process: OperatorProcess, hooks: Hooks
) -> None:
    receiver = hooks.receiver
    blue = create_in_service(kube, namespace, with_hooks(spec_with(), receiver.url))
    bad = with_hooks(
        spec_with("s3://models/churn/v2", image="fleetshift.dev/kwok:crashloop"), receiver.url
    )
    bad_revision = revision_of(bad)

    set_spec(kube, NAME, namespace, bad)

    page = wait_for(lambda: receiver.to("/rollback"), timeout=60, message="OnRollback sent")[0]
    assert page.payload["revision"] == bad_revision and page.payload["fromRevision"] == blue
    assert page.payload["outcome"].startswith("RolledBack: green fleet cannot run")
    assert page.payload["metadata"] == {"team": "ml-platform"}
    assert page.signed
    wait_for(
        lambda: hook_record(kube, namespace, "page")["state"] == "Delivered",
        timeout=30,
        message="OnRollback recorded as delivered",
    )
    assert receiver.to("/pre") == [], "a green that never turned Ready is never offered"

    # Many reconciles later (a whole good deployment), it was still sent once.
    receiver.confirm_open.set()
    good = with_hooks(spec_with("s3://models/churn/v3"), receiver.url)
    set_spec(kube, NAME, namespace, good)
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("activeRevision") == revision_of(good)
            and receiver.to("/post")
        ),
        timeout=90,
        message="the next deployment succeeded",
    )
    assert len(receiver.to("/rollback")) == 1
    assert all(c.signed for c in receiver.calls)


def test_webhook_admission_rules(kube: Client, namespace: str, endpoint_crd: str) -> None:
    """The apiserver rejects webhooks it could never call, with a message that says why."""
    hook = {"name": "a", "type": "PreRollout", "url": "https://hooks.example/a"}
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([hook, hook], "webhook names must be unique"),
        ([{**hook, "url": "ftp://hooks.example/a"}], "spec.deploymentConfig.webhooks[0].url"),
        ([{**hook, "timeoutSeconds": 0}], "timeoutSeconds"),
        ([{**hook, "timeoutSeconds": 61}], "timeoutSeconds"),
        ([{**hook, "retries": 6}], "retries"),
        ([{**hook, "type": "Whenever"}], "Unsupported value"),
        ([{**hook, "name": f"h{i}"} for i in range(11)], "Too many"),
        ([{**hook, "secretRef": {"name": "s"}}], "key"),
    ]
    for index, (hooks_list, message) in enumerate(cases):
        spec = spec_with()
        spec["deploymentConfig"]["webhooks"] = hooks_list
        with pytest.raises(ApiError) as caught:
            kube.create(endpoint_manifest(f"bad-{index}", namespace, spec))
        answer = caught.value.status.message or ""
        assert message in answer, (message, answer)
    spec = spec_with()
    spec["deploymentConfig"]["webhooks"] = webhooks("http://127.0.0.1:9")
    kube.create(endpoint_manifest("good", namespace, spec))
    stored = kube.get(EndpointResource, "good", namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    assert stored["spec"]["deploymentConfig"]["webhooks"][0]["timeoutSeconds"] == 5

"""A gate's receiver that accepts the call and never answers does not hold up a rollback.

The real operator on the local control plane, a real Prometheus scraping the traffic
simulator (``support.rig``), and a ``ConfirmPromotion`` receiver on 127.0.0.1 that accepts
every connection and never writes a byte: each call takes its full ``timeoutSeconds`` times
``1 + retries``. While the gate is being called, green starts failing every request. The
5xx alarm breaches and the deployment rolls back at its next polls, long before the call
gives up; the gate's call never counts as a yes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import Client

from fleetshift_devcluster.wait import wait_for
from support.operator_process import endpoint_manifest, revision_of, set_spec, status_of
from support.rig import Rig, rig_fixture
from support.specs import endpoint_spec, green_5xx_alarm
from support.traffic import Behaviour

NAME = "churn"
CALL_TIMEOUT_SECONDS = 20
RETRIES = 2
"""One call of the gate takes 3 attempts of 20 s (and 1.5 s of back-off): over a minute."""

rig = rig_fixture("rig", NAME, requests_per_second=100)


class SilentReceiver:
    """Accepts connections on 127.0.0.1 and never answers; counts what it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[float] = []
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self.held.append(connection)

    def close(self) -> None:
        self._stop.set()
        for connection in self.held:
            connection.close()
        self.listener.close()


@pytest.fixture
def silent_receiver() -> Iterator[SilentReceiver]:
    receiver = SilentReceiver()
    yield receiver
    receiver.close()


def spec(model: str, port: int) -> dict[str, Any]:
    built = endpoint_spec(
        model,
        replicas=2,
        routing={
            "type": "Canary",
            "canarySize": {"type": "CapacityPercent", "value": 50},
            "waitIntervalSeconds": 2,
        },
        termination=1,
        timeout=1800,
        auto_rollback={"pollIntervalSeconds": 1, "alarms": [green_5xx_alarm(2, 1)]},
    )
    built["deploymentConfig"]["webhooks"] = [
        {
            "name": "approve",
            "type": "ConfirmPromotion",
            "url": f"http://127.0.0.1:{port}/confirm",
            "timeoutSeconds": CALL_TIMEOUT_SECONDS,
            "retries": RETRIES,
        }
    ]
    built["deploymentConfig"]["capacity"] = {"enabled": False}
    return built


def test_a_breach_rolls_back_while_a_gate_receiver_hangs(
    kube: Client, namespace: str, rig: Rig, silent_receiver: SilentReceiver
) -> None:
    base = spec("s3://models/churn/v1", silent_receiver.port)
    update = spec("s3://models/churn/v2", silent_receiver.port)
    green = revision_of(update)
    kube.create(endpoint_manifest(NAME, namespace, base))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="the baseline in service",
    )
    set_spec(kube, NAME, namespace, update)
    wait_for(lambda: silent_receiver.accepted, timeout=90, message="the gate being called")
    rig.traffic.set(green, Behaviour(error_fraction=1.0))
    failing_since = time.monotonic()

    def rolled_back() -> dict[str, Any] | None:
        last = status_of(kube, NAME, namespace).get("lastDeployment") or {}
        return last if last.get("revision") == green and last.get("outcome") else None

    last = wait_for(rolled_back, timeout=90, interval=0.5, message="the deployment's end")
    took = time.monotonic() - failing_since
    assert last["outcome"] == "RolledBack", last
    assert "green-5xx" in last["reason"], last
    # The gate's first call is still in flight (it gives up after over a minute).
    assert took < CALL_TIMEOUT_SECONDS, f"rolled back {took:.1f} s after green began failing"
    (variant,) = status_of(kube, NAME, namespace)["variants"]
    gates = [w for w in variant.get("webhooks") or [] if w["name"] == "approve"]
    assert all(w.get("state") != "Passed" for w in gates), gates
    print(f"rolled back {took:.1f} s after green began failing, the gate's call in flight")

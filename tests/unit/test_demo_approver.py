"""The gates story's approver over real HTTP on loopback: it holds a promotion with 503s
until its delay has passed, approves each revision on its own clock, and refuses a call
whose signature does not verify."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from fleetshift_devcluster.demo.approver import SIGNING_KEY, Approver
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.webhooks.base import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


@pytest.fixture
def approver() -> Iterator[Approver]:
    running = Approver(approve_after=1.0)
    running.start()
    yield running
    running.stop()


def call(approver: Approver, path: str, revision: str, key: str = SIGNING_KEY) -> int:
    body = json.dumps({"type": "ConfirmPromotion", "revision": revision}).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(key.encode(), stamp, body),
    }
    return httpx.post(approver.url(path), content=body, headers=headers, timeout=5).status_code


def test_a_promotion_is_held_with_503s_until_the_delay_has_passed(approver: Approver) -> None:
    assert call(approver, "/confirm", "r1") == 503
    assert call(approver, "/confirm", "r1") == 503
    wait_for(lambda: call(approver, "/confirm", "r1") == 200, timeout=10, interval=0.2)
    held = approver.held_seconds("r1")
    assert held is not None and 1.0 <= held < 3, held
    # Another revision waits its own delay.
    assert call(approver, "/confirm", "r2") == 503
    assert approver.held_seconds("r2") is None


def test_notifications_are_noted_and_a_bad_signature_is_refused(approver: Approver) -> None:
    assert call(approver, "/announce", "r1") == 200
    assert call(approver, "/confirm", "r1", key="not-the-key") == 401
    answers = [(c.path, c.answer, c.signed) for c in approver.calls_about("r1")]
    assert answers == [("/announce", 200, True), ("/confirm", 401, False)]
    # A refused call does not start the approval clock.
    assert approver.held_seconds("r1") is None

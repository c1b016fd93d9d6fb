"""Ctrl-C always stops the demo, even when Python drops the KeyboardInterrupt."""

from __future__ import annotations

import signal
import time

import pytest

from fleetshift_devcluster.demo.stopping import StopRequest


def test_a_dropped_ctrl_c_still_stops_the_next_wait() -> None:
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGINT, None)  # raised where Python may drop it, e.g. a __del__
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stop.pause(30)
    assert time.monotonic() - started < 1, "the wait ends at once"


def test_sigterm_exits_with_143_from_the_next_wait() -> None:
    stop = StopRequest()
    with pytest.raises(SystemExit):
        stop.handle(signal.SIGTERM, None)
    with pytest.raises(SystemExit) as exited:
        stop.pause(30)
    assert exited.value.code == 143


def test_without_a_stop_a_pause_just_waits() -> None:
    stop = StopRequest()
    started = time.monotonic()
    stop.pause(0.05)
    assert time.monotonic() - started >= 0.05
    assert not stop.asked

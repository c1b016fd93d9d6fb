"""Poll state until it holds: the one way tests and tools wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The condition did not hold in time. Carries the last value seen."""


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value, and return that value.

    Exceptions from ``probe`` count as "not yet" and are reported if time runs
    out, so a probe may simply index into an object that does not exist yet.

    >>> wait_for(lambda: 42, timeout=1)
    42
    >>> wait_for(lambda: None, timeout=0.05, interval=0.01, message="never")
    Traceback (most recent call last):
    ...
    fleetshift_devcluster.wait.WaitTimeoutError: never: not true after 0.05s (last value: None)
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except Exception as error:
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"{message}: not true after {timeout}s (last value: {last!r})")
        time.sleep(interval)

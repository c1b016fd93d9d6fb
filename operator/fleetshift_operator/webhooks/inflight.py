"""Webhook calls in flight: a reconcile never waits long for a receiver.

A receiver that takes its time (up to ``timeoutSeconds`` an attempt, ``1 + retries``
attempts) must not hold up the rest of a reconcile: an alarm that breaches meanwhile rolls
the deployment back at its next poll, whatever a gate's receiver is doing. So each due
call runs in a thread of its own pool (apart from the threads that evaluate alarms, which a
few hung receivers would otherwise fill), and a reconcile waits for answers at most
:data:`WAIT_SECONDS`. An answer that comes later is taken by the next reconcile that still
finds the call due; a call is not started again while it is in flight.

Nothing here is rollout state: the status says which calls are due (``base.due_calls``).
An operator that restarts forgets the calls in flight and makes them again, which a gate
does anyway at every poll and a notification may (delivery is at least once, with the same
``X-Fleetshift-Delivery`` id).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence

from fleetshift_operator.webhooks.base import WebhookCall, WebhookResult

WAIT_SECONDS = 1.0
"""How long a reconcile waits for the answers of the calls it finds due: a receiver that
answers within it is recorded in the same reconcile, as if the call were made inline."""

MAX_THREADS = 16
"""Calls in flight at once, over every Endpoint; more wait their turn in the pool."""

Key = tuple[str, str, str]
"""(namespace, endpoint, delivery id)."""


class WebhookCalls:
    """The calls in flight of one operator process.

    >>> import datetime, threading
    >>> from fleetshift_operator.api import Webhook
    >>> hook = Webhook(name="approve", type="ConfirmPromotion", url="http://h/")
    >>> call = WebhookCall("main", hook, "r2", {"deliveryId": "d1"})
    >>> gate = threading.Event()
    >>> def send(c):
    ...     gate.wait(5)
    ...     return WebhookResult(c.hook.name, c.revision, "Healthy", 200)
    >>> calls = WebhookCalls(wait_seconds=0.05)
    >>> asyncio.run(calls.collect("ml", "ep", [call], send))  # started; no answer yet
    []
    >>> calls.in_flight("ml", "ep")
    1
    >>> gate.set()
    >>> answered = asyncio.run(calls.collect("ml", "ep", [call], send))
    >>> [(c.hook.name, r.status_code) for c, r in answered]
    [('approve', 200)]
    >>> calls.in_flight("ml", "ep")
    0
    """

    def __init__(self, wait_seconds: float = WAIT_SECONDS, max_threads: int = MAX_THREADS) -> None:
        self.wait_seconds = wait_seconds
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="fleetshift-webhook"
        )
        self._running: dict[Key, concurrent.futures.Future[WebhookResult]] = {}
        self._lock = threading.Lock()

    async def collect(
        self,
        namespace: str,
        endpoint: str,
        calls: Sequence[WebhookCall],
        send: Callable[[WebhookCall], WebhookResult],
    ) -> list[tuple[WebhookCall, WebhookResult]]:
        """The answers to ``calls`` (the ones due now) that have come: each due call not in
        flight is started with ``send``; then up to ``wait_seconds`` for those not done
        (awaited: no thread waits). A call's answer is given once, and the call is
        forgotten."""
        keys = {(namespace, endpoint, call.delivery): call for call in calls}
        with self._lock:
            for key, call in keys.items():
                if key not in self._running:
                    self._running[key] = self._pool.submit(send, call)
            mine = {key: self._running[key] for key in keys}
            # A call no longer due (its deployment moved on) is forgotten once it ends.
            for key in [k for k in self._running if k[:2] == (namespace, endpoint)]:
                if key not in keys and self._running[key].done():
                    del self._running[key]
        pending = [future for future in mine.values() if not future.done()]
        if pending:
            await asyncio.wait(
                [asyncio.wrap_future(future) for future in pending], timeout=self.wait_seconds
            )
        answers = []
        with self._lock:
            for key, future in mine.items():
                if not future.done():
                    continue
                del self._running[key]
                call = keys[key]
                error = future.exception()
                if error is None:
                    answers.append((call, future.result()))
                else:  # the sender catches what a call can raise; this is a bug's trace
                    reason = f"the call failed: {type(error).__name__}: {error}"
                    answers.append(
                        (call, WebhookResult(call.hook.name, call.revision, "Error", None, reason))
                    )
        return answers

    def in_flight(self, namespace: str, endpoint: str) -> int:
        """Calls of this Endpoint started and not yet collected."""
        with self._lock:
            return sum(1 for key in self._running if key[:2] == (namespace, endpoint))

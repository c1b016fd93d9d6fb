"""Coalesce concurrent requests into one prediction call, without adding latency.

``xgboost``'s ``inplace_predict`` has a fixed cost of ~200 µs per call, whatever the
number of rows; a row costs a few µs. When several requests are ready in the same
event-loop turn, :class:`Batcher` predicts their rows together: the flush runs with
``loop.call_soon``, i.e. right after every request already parsed in this turn, so a
lone request is never delayed waiting for company.

A group of more than ``inline_rows`` rows is predicted in the worker-thread pool
instead: the predict call releases the GIL, and the event loop keeps answering the
probes meanwhile (see ``Runtime`` for bodies parsed off the loop).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .models.base import Model, Predictions, Rows


@dataclass
class _Group:
    model: Model
    rows: int = 0
    items: list[tuple[Rows, asyncio.Future[tuple[Predictions, float]]]] = field(
        default_factory=list
    )


class Batcher:
    """Per event loop: pending rows grouped by model, flushed once per loop turn."""

    def __init__(self, max_rows: int, *, inline_rows: int, executor: Executor) -> None:
        self._max_rows = max_rows
        self._inline_rows = inline_rows
        self._executor = executor
        self._pending: dict[int, _Group] = {}
        self._scheduled = False

    def submit(self, model: Model, rows: Rows) -> asyncio.Future[tuple[Predictions, float]]:
        """Queue ``rows``; the future resolves to (their predictions, model seconds)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Predictions, float]] = loop.create_future()
        key = id(model)
        group = self._pending.get(key)
        if group is None:
            group = self._pending[key] = _Group(model)
        group.items.append((rows, future))
        group.rows += rows.shape[0]
        if group.rows >= self._max_rows:
            del self._pending[key]
            self._predict(group)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for group in pending.values():
            if group.rows <= self._inline_rows:  # the usual case, one call less
                _resolve(group, _run(group))
            else:
                self._predict(group)

    def _predict(self, group: _Group) -> None:
        if group.rows <= self._inline_rows:
            _resolve(group, _run(group))
            return
        loop = asyncio.get_running_loop()
        try:
            outcome = loop.run_in_executor(self._executor, _run, group)
        except RuntimeError as error:  # the pool is shut down: the server is stopping
            _resolve(group, error)
            return
        outcome.add_done_callback(lambda done: _resolve(group, done.result()))


_Outcome = tuple[Predictions, float] | BaseException


def _run(group: _Group) -> _Outcome:
    """Predict a group's rows (on the loop or in a worker thread): the answer or the error."""
    items = group.items
    started = time.perf_counter()
    try:
        matrix = items[0][0] if len(items) == 1 else np.concatenate([rows for rows, _ in items])
        predictions = group.model.predict(matrix)
    except Exception as error:
        return error
    return predictions, time.perf_counter() - started


def _resolve(group: _Group, outcome: _Outcome) -> None:
    """Hand each request its own rows' predictions, or the error (on the loop)."""
    if isinstance(outcome, BaseException):
        for _, future in group.items:
            if not future.done():
                future.set_exception(outcome)
        return
    predictions, elapsed = outcome
    offset = 0
    for rows, future in group.items:
        count = rows.shape[0]
        if not future.done():
            future.set_result((predictions[offset : offset + count], elapsed))
        offset += count

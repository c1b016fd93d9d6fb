"""Data capture's buffer holds at most two objects' worth of bodies, however large the
requests and however slow the destination: what does not fit is dropped and counted, and
every offered record is either kept or counted.

The capture is the runtime's own (``fleetshift_runtime.capture.DataCapture``) writing to a
real folder; only its metrics are a recorder here, to read the counts back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetshift_runtime.capture import Captured, DataCapture, FolderDestination

MAX_OBJECT_BYTES = 64 * 1024


class CountingMetrics:
    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.written = 0

    def capture_dropped(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def capture_written(self, count: int) -> None:
        self.written += count


def record(size: int) -> Captured:
    return Captured(0.0, b"id", "model", b"text/csv", b"1" * size, b"text/csv", b"0")


def capture_into(folder: Path, metrics: CountingMetrics) -> DataCapture:
    return DataCapture(
        FolderDestination(folder),
        metrics,
        {"namespace": "shop", "endpoint": "churn", "variant": "main", "revision": "r1"},
        sampling_percent=100,
        capture_request=True,
        capture_response=True,
        max_records=1000,
        flush_seconds=3600,
        max_object_bytes=MAX_OBJECT_BYTES,
    )


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * MAX_OBJECT_BYTES), max_size=40))
def test_the_buffer_never_holds_more_than_two_objects_of_bodies(sizes: list[int]) -> None:
    metrics = CountingMetrics()
    capture = capture_into(Path("/nonexistent"), metrics)  # nothing is written here
    largest = 0
    for size in sizes:
        capture.offer(b"text/csv", lambda size=size: record(size))  # type: ignore[misc]
        records, held = capture.waiting
        largest = max(largest, size + 1)
        assert held <= max(2 * MAX_OBJECT_BYTES, largest)
        if records > 1:
            assert held <= 2 * MAX_OBJECT_BYTES
    kept, _ = capture.waiting
    assert kept + metrics.dropped.get("buffer_full", 0) == len(sizes)


def test_six_mib_requests_under_a_stalled_destination_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    metrics = CountingMetrics()
    capture = capture_into(tmp_path, metrics)
    six_mib = 6 * 1024 * 1024
    for _ in range(50):  # 300 MiB of requests while nothing is written
        capture.offer(b"text/csv", lambda: record(six_mib))
    assert capture.waiting[0] == 1, "one record larger than the bound, kept alone"
    assert metrics.dropped == {"buffer_full": 49}
    asyncio.run(capture.flush())
    assert metrics.written == 1
    (written,) = tmp_path.rglob("*.jsonl")
    assert written.stat().st_size > six_mib

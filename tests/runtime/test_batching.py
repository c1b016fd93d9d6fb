"""The batcher predicts small groups on the loop and large ones in the pool, and every
request gets its own rows' answer, or the error, never a wait that does not end."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fleetshift_runtime.batching import Batcher
from fleetshift_runtime.models.base import Predictions, Rows


class _Model:
    """Sums each row, and remembers which thread predicted."""

    name = "sum"
    num_features = 2
    platform = "test"
    predictor_name = "sum"
    output_shape: tuple[int, ...] = ()
    size_bytes = 0

    def __init__(self) -> None:
        self.threads: list[str] = []

    def predict(self, rows: Rows) -> Predictions:
        self.threads.append(threading.current_thread().name)
        answer: Predictions = rows.sum(axis=1).astype(np.float32)
        return answer


def _rows(count: int, value: float) -> Rows:
    return np.full((count, 2), value, dtype=np.float32)


def test_small_groups_stay_on_the_loop_and_large_ones_go_to_the_pool() -> None:
    model = _Model()

    async def main() -> list[Predictions]:
        with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
            batcher = Batcher(100, inline_rows=4, executor=pool)
            small = await batcher.submit(model, _rows(2, 1.0))
            large = await asyncio.gather(
                batcher.submit(model, _rows(3, 2.0)), batcher.submit(model, _rows(3, 3.0))
            )
            return [small[0], *(answer for answer, _ in large)]

    small, first, second = asyncio.run(main())
    assert small.tolist() == [2.0, 2.0]
    assert first.tolist() == [4.0] * 3
    assert second.tolist() == [6.0] * 3
    assert model.threads[0] == threading.main_thread().name
    assert model.threads[1].startswith("pool")


def test_a_large_group_after_the_pool_stopped_fails_instead_of_hanging() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()

    async def main() -> None:
        batcher = Batcher(100, inline_rows=1, executor=pool)
        await asyncio.wait_for(batcher.submit(_Model(), _rows(5, 1.0)), timeout=5)

    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(main())

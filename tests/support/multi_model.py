"""Calling a runtime in multi-model mode: the header that names the target model, and a
check of the scores that come back."""

from __future__ import annotations

import httpx
import numpy as np

from support.runtime_kit import RuntimeProcess, TrainedModel, csv_body

TARGET = "X-Amzn-SageMaker-Target-Model"


def invoke_target(
    server: RuntimeProcess, target: str, model: TrainedModel, *, timeout: float
) -> httpx.Response:
    """``/invocations`` with ``model``'s first five rows as CSV, for the ``target`` model."""
    return httpx.post(
        f"{server.url}/invocations",
        content=csv_body(model.rows[:5]),
        headers={"Content-Type": "text/csv", TARGET: target},
        timeout=timeout,
    )


def assert_scores(response: httpx.Response, model: TrainedModel) -> None:
    """A 200 whose scores are ``model``'s for its first five rows."""
    assert response.status_code == 200, response.text
    scores = np.array([float(v) for v in response.text.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, model.expected(model.rows[:5]), rtol=1e-5, atol=1e-5)

"""Test requests to an endpoint: SageMaker-style ``POST /invocations``, one CSV row each.

Two ways in: the API server's service proxy (the kubeconfig's credentials, no
network path to the pods needed besides the API server's own), or a base URL
(``--url``), e.g. ``http://127.0.0.1:8080`` after ``kubectl port-forward
svc/churn 8080:80``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import httpx2

INVOCATIONS = "invocations"


def proxy_path(namespace: str, service: str, port: str) -> str:
    """The API server's service-proxy path to the runtime's ``/invocations``.

    >>> proxy_path("ml", "churn", "http")
    '/api/v1/namespaces/ml/services/churn:http/proxy/invocations'
    """
    return (
        f"/api/v1/namespaces/{quote(namespace, safe='')}/services/"
        f"{quote(service, safe='')}:{quote(port, safe='')}/proxy/{INVOCATIONS}"
    )


def read_rows(path: Path, *, skip_header: bool = False) -> list[str]:
    """The CSV's non-blank lines, one request body each (SageMaker CSV has no header)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    rows = [line for line in lines if line]
    return rows[1:] if skip_header else rows


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([5, 1, 3, 2, 4], 0.5), percentile(range(1, 101), 0.99)
    (3, 99)
    >>> percentile([], 0.5)
    nan
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclasses.dataclass
class InvocationSummary:
    """What a run of test requests came to."""

    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    def render(self) -> str:
        """The summary line.

        >>> print(InvocationSummary([2.0, 4.0, 3.0, 100.0], errors=1).render())
        4 requests, 1 error, p50 3.0 ms, p99 100.0 ms
        """
        errors = f"{self.errors} error" + ("" if self.errors == 1 else "s")
        p50, p99 = percentile(self.latencies_ms, 0.5), percentile(self.latencies_ms, 0.99)
        return f"{self.count} requests, {errors}, p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def send_invocations(  # noqa: PLR0917 - what one run needs
    client: httpx2.Client,
    path: str,
    rows: Sequence[str],
    count: int,
    content_type: str = "text/csv",
    on_result: Callable[[bool], None] = lambda ok: None,
) -> InvocationSummary:
    """POST ``count`` requests to ``path`` on ``client``, cycling through ``rows``.

    A request counts as an error when it cannot be sent or the answer is not 2xx.
    ``on_result`` is told each outcome as it happens (the ``.``/``E`` printer).
    """
    summary = InvocationSummary()
    for number in range(count):
        body = rows[number % len(rows)].encode()
        started = time.perf_counter()
        problem: str | None = None
        try:
            answer = client.post(path, content=body, headers={"Content-Type": content_type})
            if not 200 <= answer.status_code < 300:
                problem = f"HTTP {answer.status_code}: {answer.text.strip()[:300]}"
        except httpx2.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        summary.latencies_ms.append((time.perf_counter() - started) * 1000)
        if problem is not None:
            summary.errors += 1
            summary.first_error = summary.first_error or problem
        on_result(problem is None)
    return summary

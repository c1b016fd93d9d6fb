"""N of M with CloudWatch's treatments of missing data, as a table.

Columns: the last M datapoints (oldest first; None = no data in that period),
N (datapointsToAlarm), treatMissingData, the previous verdict, the expected verdict.
Threshold 5 with ``>=`` throughout; 9 breaches, 1 does not.
"""

from __future__ import annotations

import math

import pytest

from fleetshift_operator.alarms.semantics import Verdict, evaluate

N = None
TABLE: list[tuple[list[float | None], int, str, Verdict | None, Verdict]] = [
    # every period has data
    ([1, 1, 1], 3, "missing", None, "Healthy"),
    ([9, 9, 9], 3, "missing", None, "Breaching"),
    ([9, 9, 1], 3, "missing", None, "Healthy"),
    ([9, 9, 1], 2, "missing", None, "Breaching"),
    ([1, 9, 1], 2, "missing", None, "Healthy"),
    # missing: too few datapoints are never Healthy
    ([N, N, N], 1, "missing", None, "Inconclusive"),
    ([N, N, N], 3, "missing", "Healthy", "Inconclusive"),
    ([9, 9, N], 3, "missing", None, "Inconclusive"),
    ([9, 9, N], 2, "missing", None, "Breaching"),
    ([1, N, N], 1, "missing", None, "Healthy"),
    ([1, N, N], 2, "missing", None, "Inconclusive"),
    ([9, N, N], 1, "missing", None, "Breaching"),
    # notBreaching: no data is good
    ([N, N, N], 1, "notBreaching", None, "Healthy"),
    ([9, 9, N], 3, "notBreaching", None, "Healthy"),
    ([9, 9, N], 2, "notBreaching", None, "Breaching"),
    # breaching: no data is bad
    ([N, N, N], 1, "breaching", None, "Breaching"),
    ([9, 9, N], 3, "breaching", None, "Breaching"),
    ([1, N, N], 2, "breaching", None, "Breaching"),
    ([1, 1, N], 3, "breaching", None, "Healthy"),
    # ignore: too little data keeps the previous verdict
    ([N, N, N], 1, "ignore", "Healthy", "Healthy"),
    ([N, N, N], 1, "ignore", "Breaching", "Breaching"),
    ([N, N, N], 1, "ignore", None, "Inconclusive"),
    ([9, 9, N], 3, "ignore", "Healthy", "Healthy"),
    ([9, 9, N], 2, "ignore", "Healthy", "Breaching"),
    ([1, 1, 1], 3, "ignore", "Breaching", "Healthy"),
]


@pytest.mark.parametrize(
    ("datapoints", "to_alarm", "treat", "previous", "expected"),
    TABLE,
    ids=[f"{d}-N{n}-{t}-{p}" for d, n, t, p, _ in TABLE],
)
def test_n_of_m_with_missing_data(
    datapoints: list[float | None],
    to_alarm: int,
    treat: str,
    previous: Verdict | None,
    expected: Verdict,
) -> None:
    result = evaluate(datapoints, 5, ">=", to_alarm, treat, previous)  # type: ignore[arg-type]
    assert result.verdict == expected, result.reason


def test_nan_datapoints_count_as_missing() -> None:
    assert evaluate([math.nan, math.nan, 1.0], 5, ">=", 1).verdict == "Healthy"
    assert evaluate([math.nan, math.nan, math.nan], 5, ">=", 1).verdict == "Inconclusive"


@pytest.mark.parametrize(
    ("comparison", "value", "expected"),
    [
        (">=", 5, "Breaching"),
        (">", 5, "Healthy"),
        ("<=", 5, "Breaching"),
        ("<", 5, "Healthy"),
        ("<", 4, "Breaching"),
        (">", 6, "Breaching"),
    ],
)
def test_comparisons(comparison: str, value: float, expected: Verdict) -> None:
    assert evaluate([value], 5, comparison, 1).verdict == expected  # type: ignore[arg-type]


def test_the_value_reported_is_the_worst_breaching_datapoint() -> None:
    assert evaluate([9, 12, 1], 5, ">=", 2).value == 12
    assert evaluate([1, 0.5, 9], 2, "<", 2).value == 0.5

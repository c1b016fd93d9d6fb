"""N-of-M alarm evaluation with CloudWatch's four ways of treating missing data. Pure.

Each of the last ``M`` periods holds one datapoint or none (``None``; a NaN,
as PromQL gives for 0/0 with no traffic, is none too). A datapoint *breaches*
when it compares with the threshold as the alarm says. Then:

============== =========================================================================
missing data   meaning
============== =========================================================================
``missing``    periods without data are left out; N breaching periods is Breaching,
               N periods with data and fewer than N breaching is Healthy, anything
               less is Inconclusive (too few samples are never Healthy)
``notBreaching`` a period without data counts as good
``breaching``  a period without data counts as breaching
``ignore``     periods without data are left out; with too little left, the previous
               verdict stands (Inconclusive if there is none)
============== =========================================================================

>>> evaluate([1.0, 7.0, 8.0], threshold=5, comparison=">=", to_alarm=2)
Evaluation(verdict='Breaching', value=8.0, reason='2 of 3 periods >= 5 (worst 8)')
>>> evaluate([None, None, None], threshold=5, comparison=">=", to_alarm=2).verdict
'Inconclusive'
>>> evaluate([None, None, None], 5, ">=", 2, treat_missing="notBreaching").verdict
'Healthy'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

Verdict = Literal["Healthy", "Breaching", "Inconclusive", "Error"]
Comparison = Literal[">=", ">", "<=", "<"]
TreatMissing = Literal["notBreaching", "breaching", "ignore", "missing"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation of one alarm."""

    verdict: Verdict
    value: float | None = None
    reason: str = ""


def breaches(value: float, threshold: float, comparison: Comparison) -> bool:
    """True when ``value`` crosses ``threshold`` the way ``comparison`` says.

    >>> breaches(5, 5, ">="), breaches(5, 5, ">"), breaches(4, 5, "<"), breaches(5, 5, "<=")
    (True, False, True, True)
    """
    if comparison == ">=":
        return value >= threshold
    if comparison == ">":
        return value > threshold
    if comparison == "<=":
        return value <= threshold
    return value < threshold


def _worst(values: Sequence[float], comparison: Comparison) -> float:
    return max(values) if comparison in (">=", ">") else min(values)


def _fmt(number: float) -> str:
    return f"{number:.4g}"


def evaluate(  # noqa: PLR0917 - the alarm's own parameters, in CloudWatch's order
    datapoints: Sequence[float | None],
    threshold: float,
    comparison: Comparison,
    to_alarm: int,
    treat_missing: TreatMissing = "missing",
    previous: Verdict | None = None,
) -> Evaluation:
    """Judge the last M datapoints (oldest first); ``to_alarm`` is N.

    Breaching takes N breaching periods; Healthy takes N periods that count (with
    data, or counted by the missing-data rule) and fewer than N breaching.
    """
    present = [v for v in datapoints if v is not None and not math.isnan(v)]
    missing = len(datapoints) - len(present)
    crossing = [v for v in present if breaches(v, threshold, comparison)]
    breaching = len(crossing) + (missing if treat_missing == "breaching" else 0)
    good = len(present) - len(crossing) + (missing if treat_missing == "notBreaching" else 0)
    worst = _worst(crossing or present, comparison) if present else None
    summary = f"{breaching} of {len(datapoints)} periods {comparison} {_fmt(threshold)}"
    if worst is not None:
        summary += f" (worst {_fmt(worst)})"
    if missing:
        summary += f", {missing} without data"
    if breaching >= to_alarm:
        return Evaluation("Breaching", worst, summary)
    if breaching + good >= to_alarm:
        return Evaluation("Healthy", worst, summary)
    if treat_missing == "ignore" and previous is not None:
        return Evaluation(previous, worst, f"{summary}; too few to judge, previous verdict kept")
    return Evaluation("Inconclusive", worst, f"{summary}; too few to judge")

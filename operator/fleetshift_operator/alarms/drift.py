"""Did green's answers move? The population stability index of two output histograms. Pure.

A model that answers 200 with the wrong numbers passes every error and latency alarm.
What it cannot hide is the distribution of its outputs: the runtime counts each
prediction into histogram buckets per revision, and this module compares green's
distribution with blue's over the same window.

The measure is the population stability index over the buckets::

    PSI = sum_i (g_i - b_i) * ln(g_i / b_i)

with ``g_i`` and ``b_i`` the shares of green's and blue's outputs in bucket ``i``. It is
0 for identical distributions and grows with the shift; the usual reading is below 0.1
"no shift", 0.1 to 0.25 "moderate", above 0.25 "major". An empty bucket on one side
would make it infinite, so every share is floored at half an observation (``0.5 / n``).

A verdict needs enough outputs on both sides: with fewer than ``min_samples`` in either
fleet the answer is Inconclusive (the step holds), never Healthy.

Worked examples (buckets of a probability: <=0.1, <=0.5, <=0.9, <=1)::

    >>> same = [10, 40, 40, 10]
    >>> drift_verdict(same, [20, 80, 80, 20], threshold=0.2, min_samples=100)
    DriftEvidence(verdict='Healthy', index=0.0, green_samples=100, blue_samples=200)
    >>> shifted = [0, 5, 35, 60]          # the model now says "yes" to most requests
    >>> drift_verdict(shifted, [20, 80, 80, 20], threshold=0.2, min_samples=100).verdict
    'Breaching'
    >>> drift_verdict([1, 4, 4, 1], [20, 80, 80, 20], threshold=0.2, min_samples=100).verdict
    'Inconclusive'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

DriftVerdict = Literal["Healthy", "Breaching", "Inconclusive"]


def bucket_counts(cumulative: Sequence[float]) -> list[float]:
    """Per-bucket counts from a Prometheus histogram's cumulative ``le`` counts (in order
    of ``le``, ``+Inf`` last); a count that goes down (a reset seen mid-window) is 0.

    >>> bucket_counts([10, 50, 90, 100])
    [10, 40, 40, 10]
    """
    counts, previous = [], 0.0
    for total in cumulative:
        counts.append(max(0.0, total - previous))
        previous = max(previous, total)
    return [round(c) if float(c).is_integer() else c for c in counts]


def population_stability_index(green: Sequence[float], blue: Sequence[float]) -> float:
    """PSI of two histograms over the same buckets (see the module docstring).

    >>> round(population_stability_index([50, 50], [90, 10]), 3)
    0.879
    >>> population_stability_index([1, 1], [2, 2])
    0.0
    """
    if len(green) != len(blue):
        raise ValueError(f"histograms differ in buckets: {len(green)} and {len(blue)}")
    green_total, blue_total = sum(green), sum(blue)
    if green_total <= 0 or blue_total <= 0:
        raise ValueError("a histogram without observations has no distribution")
    green_floor, blue_floor = 0.5 / green_total, 0.5 / blue_total
    index = 0.0
    for g, b in zip(green, blue, strict=True):
        g_share = max(g / green_total, green_floor)
        b_share = max(b / blue_total, blue_floor)
        index += (g_share - b_share) * math.log(g_share / b_share)
    return index


@dataclasses.dataclass(frozen=True)
class DriftEvidence:
    """The verdict, the index (rounded to 4 places) and the outputs behind it."""

    verdict: DriftVerdict
    index: float
    green_samples: int
    blue_samples: int


def drift_verdict(
    green: Sequence[float], blue: Sequence[float], threshold: float, min_samples: int
) -> DriftEvidence:
    """Breaching above ``threshold``, Healthy at or below it, Inconclusive with fewer than
    ``min_samples`` outputs on either side."""
    green_samples, blue_samples = round(sum(green)), round(sum(blue))
    if min(green_samples, blue_samples) < max(1, min_samples):
        return DriftEvidence("Inconclusive", math.nan, green_samples, blue_samples)
    index = population_stability_index(green, blue)
    verdict: DriftVerdict = "Breaching" if index > threshold else "Healthy"
    return DriftEvidence(verdict, round(index, 4), green_samples, blue_samples)

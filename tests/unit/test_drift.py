"""The prediction-drift comparison: a model whose answers moved is caught, one whose
answers did not is left alone, and thin evidence is never Healthy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetshift_operator.alarms.drift import (
    bucket_counts,
    drift_verdict,
    population_stability_index,
)

PROBABILITY_EDGES = np.array([0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
TRIALS = 2000


def histogram(outputs: np.ndarray) -> list[int]:
    return [int(count) for count in np.histogram(outputs, bins=PROBABILITY_EDGES)[0]]


def breaching_share(shift: float, green_outputs: int, seed: int) -> float:
    """How often green (blue's outputs moved up by ``shift``) is judged Breaching."""
    draw = np.random.default_rng(seed)
    breaches = 0
    for _ in range(TRIALS):
        blue = draw.beta(2, 5, 3 * green_outputs)
        green = np.clip(draw.beta(2, 5, green_outputs) + shift, 0, 1)
        verdict = drift_verdict(histogram(green), histogram(blue), threshold=0.2, min_samples=200)
        breaches += verdict.verdict == "Breaching"
    return breaches / TRIALS


def test_a_model_whose_outputs_shifted_but_never_fail_is_caught() -> None:
    # Probabilities moved up by 0.15: every request still answers 200.
    assert breaching_share(0.15, green_outputs=200, seed=3) >= 0.99


def test_a_model_with_the_same_outputs_is_rarely_called_drifted() -> None:
    assert breaching_share(0.0, green_outputs=200, seed=5) <= 0.01


def test_too_few_outputs_hold_instead_of_passing() -> None:
    evidence = drift_verdict([5, 5], [500, 500], threshold=0.2, min_samples=200)
    assert evidence.verdict == "Inconclusive"
    assert (evidence.green_samples, evidence.blue_samples) == (10, 1000)


def test_histograms_over_different_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in buckets"):
        population_stability_index([1, 2], [1, 2, 3])


counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=12)


@given(counts, st.data())
def test_the_index_is_never_negative_and_is_symmetric(
    green: list[int], data: st.DataObject
) -> None:
    blue = data.draw(st.lists(st.integers(0, 10_000), min_size=len(green), max_size=len(green)))
    if sum(green) == 0 or sum(blue) == 0:
        return
    forward = population_stability_index(green, blue)
    assert forward >= 0
    assert forward == pytest.approx(population_stability_index(blue, green))


@given(counts, st.integers(min_value=1, max_value=50))
def test_the_same_distribution_at_any_volume_has_no_drift(green: list[int], scale: int) -> None:
    if all(c > 0 for c in green):
        assert population_stability_index(green, [c * scale for c in green]) == pytest.approx(0)


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12))
def test_cumulative_buckets_come_back_as_the_counts_they_add_up_from(
    per_bucket: list[int],
) -> None:
    cumulative = list(np.cumsum(per_bucket))
    assert bucket_counts(cumulative) == per_bucket

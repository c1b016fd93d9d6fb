"""The statistical promotion gate's comparison: valid however often it is read.

The error rates are checked by simulation, as a bake sees its traffic: counts that grow
poll by poll, the gate asked at every poll, a bake ending at its first decision.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetshift_operator.alarms.sequential import (
    Counts,
    compare_rates,
    confidence_sequence,
    trials_to_promote,
)

BAKES = 10_000
POLLS = 12
GREEN_PER_POLL = 500
BLUE_PER_POLL = 1500


def simulate_bakes(
    green_rate: float, blue_rate: float, margin: float, confidence: float, seed: int
) -> dict[str, int]:
    """How ``BAKES`` bakes ended: each polled ``POLLS`` times, stopping at its first
    Healthy (promoted) or Breaching (rolled back) verdict."""
    draw = np.random.default_rng(seed)
    green_failed = draw.binomial(GREEN_PER_POLL, green_rate, size=(BAKES, POLLS)).cumsum(axis=1)
    blue_failed = draw.binomial(BLUE_PER_POLL, blue_rate, size=(BAKES, POLLS)).cumsum(axis=1)
    ends = {"Healthy": 0, "Breaching": 0, "Inconclusive": 0}
    for bake in range(BAKES):
        verdict = "Inconclusive"
        for poll in range(POLLS):
            green = Counts(GREEN_PER_POLL * (poll + 1), int(green_failed[bake, poll]))
            blue = Counts(BLUE_PER_POLL * (poll + 1), int(blue_failed[bake, poll]))
            verdict = compare_rates(green, blue, margin, confidence).verdict
            if verdict != "Inconclusive":
                break
        ends[verdict] += 1
    return ends


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_a_green_worse_than_the_margin_is_promoted_less_often_than_the_stated_rate(
    confidence: float,
) -> None:
    # The hardest worse green: just past the margin (blue 2%, green 4.01%, margin 2 points),
    # asked at every poll of every bake.
    ends = simulate_bakes(0.0401, 0.02, margin=0.02, confidence=confidence, seed=7)
    false_promotions = ends["Healthy"] / BAKES
    print(f"confidence {confidence}: {ends}, false promotions {false_promotions:.4f}")
    assert false_promotions <= 1 - confidence


def test_a_green_as_good_as_blue_is_promoted_once_the_traffic_says_so() -> None:
    ends = simulate_bakes(0.02, 0.02, margin=0.02, confidence=0.95, seed=11)
    assert ends["Breaching"] == 0
    assert ends["Healthy"] >= 0.9 * BAKES, ends


def test_a_green_failing_far_more_than_blue_is_rolled_back_and_never_promoted() -> None:
    ends = simulate_bakes(0.10, 0.02, margin=0.02, confidence=0.95, seed=13)
    assert ends["Healthy"] == 0
    assert ends["Breaching"] >= 0.99 * BAKES, ends


def test_thin_traffic_holds_instead_of_promoting() -> None:
    evidence = compare_rates(Counts(20, 0), Counts(80, 0), margin=0.01, confidence=0.95)
    assert evidence.verdict == "Inconclusive"
    assert evidence.high > 0.01


def test_no_traffic_at_all_is_inconclusive_with_the_widest_bounds() -> None:
    evidence = compare_rates(Counts(0, 0), Counts(0, 0), margin=0.01, confidence=0.95)
    assert (evidence.verdict, evidence.low, evidence.high) == ("Inconclusive", -1.0, 1.0)


@given(
    trials=st.integers(min_value=0, max_value=50_000),
    share=st.floats(min_value=0, max_value=1),
    alpha=st.floats(min_value=1e-4, max_value=0.5),
)
def test_a_confidence_sequence_holds_the_observed_rate_and_stays_in_0_1(
    trials: int, share: float, alpha: float
) -> None:
    counts = Counts(trials, round(trials * share))
    low, high = confidence_sequence(counts, alpha)
    assert 0.0 <= low <= counts.rate <= high <= 1.0


@given(
    failures=st.integers(min_value=0, max_value=200),
    more=st.integers(min_value=1, max_value=5000),
)
def test_more_clean_traffic_never_widens_the_upper_bound(failures: int, more: int) -> None:
    trials = failures + 100
    _, before = confidence_sequence(Counts(trials, failures), 0.025)
    _, after = confidence_sequence(Counts(trials + more, failures), 0.025)
    assert after <= before


@pytest.mark.parametrize(
    ("failures", "trials"), [(-1, 10), (11, 10), (0, -1)], ids=["negative", "more", "no trials"]
)
def test_impossible_counts_are_refused(failures: int, trials: int) -> None:
    with pytest.raises(ValueError, match="failures <= trials"):
        Counts(trials, failures)


@pytest.mark.parametrize(
    ("rate", "blue_share", "needed"),
    [(0.0, 0.9, 1061), (0.001, 0.9, 1548), (0.01, 0.9, 4402), (0.01, 0.5, 7628)],
)
def test_the_traffic_a_bake_needs_at_a_one_point_margin(
    rate: float, blue_share: float, needed: int
) -> None:
    assert trials_to_promote(rate, margin=0.01, confidence=0.95, blue_share=blue_share) == needed


def test_the_latency_thresholds_admission_allows_are_the_runtimes_buckets() -> None:
    from fleetshift_operator.api import LATENCY_BUCKET_BOUNDS  # noqa: PLC0415
    from fleetshift_runtime.metrics import LATENCY_BUCKETS  # noqa: PLC0415

    assert tuple(LATENCY_BUCKET_BOUNDS) == tuple(LATENCY_BUCKETS)

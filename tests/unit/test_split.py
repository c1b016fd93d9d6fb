"""The split of traffic over whole pods: bounds, and as close as an exhaustive search."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetshift_operator.planning.steps import SPLIT_SLACK_POINTS, calculate_split, split_error

backends = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 6)), min_size=1, max_size=4)


def best_error_by_brute_force(weights: list[int], ready: list[int]) -> float:
    active = [i for i, (w, r) in enumerate(zip(weights, ready, strict=True)) if w and r]
    shares = [weights[i] / sum(weights[i] for i in active) for i in active]
    choices = itertools.product(*(range(1, ready[i] + 1) for i in active))
    return min(split_error(list(counts), shares) for counts in choices)


@settings(max_examples=300, deadline=None)
@given(backends=backends)
def test_the_split_is_bounded_and_as_close_as_any_choice_of_whole_pods(
    backends: list[tuple[int, int]],
) -> None:
    weights, ready = [w for w, _ in backends], [r for _, r in backends]
    counts = calculate_split(weights, ready)
    active = [i for i in range(len(backends)) if weights[i] and ready[i]]
    for i, count in enumerate(counts):
        assert 0 <= count <= ready[i]
        assert (count >= 1) == (i in active)
    if active:
        shares = [weights[i] / sum(weights[i] for i in active) for i in active]
        chosen = split_error([counts[i] for i in active], shares)
        assert chosen <= best_error_by_brute_force(weights, ready) + SPLIT_SLACK_POINTS + 1e-9


def test_large_fleets_split_in_proportion() -> None:
    counts = calculate_split([1] * 20, [1000] * 20)
    assert counts == [1000] * 20
    counts = calculate_split([3, 1], [900, 1000])
    assert abs(100 * counts[0] / sum(counts) - 75) <= SPLIT_SLACK_POINTS

"""Step arithmetic, the one copy: traffic steps, serving pods, rolling batches and the
split of an endpoint's traffic over whole pods. Pure.

The CEL rules in ``api.py`` that bound step sizes and the sum of the waits compute the
same numbers in CEL; ``tests/unit/test_steps_match_cel.py`` holds the two together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleetshift_operator.api import BlueGreen, TrafficRouting


def _size_to_percent(size_type: str, value: int, fleet_size: int) -> int:
    if size_type == "CapacityPercent":
        return min(100, value)
    return min(100, math.ceil(100 * value / max(1, fleet_size)))


def calculate_steps(routing: TrafficRouting, fleet_size: int) -> list[int]:
    """The green share after each traffic step, ending at 100.

    >>> from fleetshift_operator.api import CapacitySize as S
    >>> calculate_steps(TrafficRouting(type="AllAtOnce"), 4)
    [100]
    >>> R = TrafficRouting
    >>> def canary(kind, n): return R(type="Canary", canarySize=S(type=kind, value=n))
    >>> def linear(kind, n): return R(type="Linear", linearStepSize=S(type=kind, value=n))
    >>> calculate_steps(canary("CapacityPercent", 10), 4)
    [10, 100]
    >>> calculate_steps(canary("InstanceCount", 1), 4)
    [25, 100]
    >>> calculate_steps(linear("CapacityPercent", 30), 4)
    [30, 60, 90, 100]
    >>> calculate_steps(linear("InstanceCount", 2), 6)
    [34, 67, 100]
    """
    if routing.type == "Canary" and routing.canarySize is not None:
        size = routing.canarySize
        return [_size_to_percent(size.type, size.value, fleet_size), 100]
    if routing.type == "Linear" and routing.linearStepSize is not None:
        size = routing.linearStepSize
        if size.type == "InstanceCount":
            count = math.ceil(fleet_size / size.value)
            return [
                min(100, math.ceil(100 * k * size.value / fleet_size)) for k in range(1, count + 1)
            ]
        step = _size_to_percent(size.type, size.value, fleet_size)
        count = math.ceil(100 / step)
        return [min(100, k * step) for k in range(1, count + 1)]
    return [100]


def calculate_resumed_index(shares: Sequence[int], index: int, green_percent: int) -> int | None:
    """The step index to resume from when the steps changed under a deployment (its
    routing, its batch size, or blue/green became rolling): the steps green's share has
    reached. None when step ``index`` is still the one with ``green_percent``.

    >>> calculate_resumed_index([10, 100], 1, 10) is None
    True
    >>> calculate_resumed_index([34, 68, 100], 1, 10)  # canary 10% -> linear: none reached
    0
    >>> calculate_resumed_index([10, 100], 2, 68)  # linear step 2 -> canary: at step 1
    1
    >>> calculate_resumed_index([50, 100], 3, 67)  # past the last of the new steps
    1
    """
    if index > len(shares) or (index >= 1 and shares[index - 1] != green_percent):
        return sum(1 for share in shares if share <= green_percent)
    return None


def calculate_serving(fleet_size: int, green_percent: int) -> tuple[int, int]:
    """How many (blue, green) replicas of a fleet of ``fleet_size`` give green
    ``green_percent``. A non-zero share gets at least one replica; a share under 100
    leaves blue at least one.

    >>> calculate_serving(4, 25)
    (3, 1)
    >>> calculate_serving(3, 10)
    (2, 1)
    >>> calculate_serving(10, 0), calculate_serving(10, 100)
    ((10, 0), (0, 10))
    >>> calculate_serving(1, 50)
    (1, 1)
    """
    if green_percent <= 0:
        return fleet_size, 0
    if green_percent >= 100:
        return 0, fleet_size
    green = max(1, round(fleet_size * green_percent / 100))
    blue = max(1, fleet_size - green)
    return blue, green


def calculate_required_ready(fleet_size: int, green_percent: int) -> int:
    """Ready green replicas needed before green may carry ``green_percent``.

    >>> [calculate_required_ready(4, percent) for percent in (0, 25, 100)]
    [0, 1, 4]
    """
    return calculate_serving(fleet_size, green_percent)[1]


def calculate_step_count(routing: TrafficRouting, fleet_size: int) -> int:
    """How many traffic steps a deployment takes (what the CEL rules count).

    >>> from fleetshift_operator.api import CapacitySize as S
    >>> calculate_step_count(TrafficRouting(type="Linear",
    ...     linearStepSize=S(type="CapacityPercent", value=30)), 4)
    4
    """
    return len(calculate_steps(routing, fleet_size))


def total_wait_seconds(policy: BlueGreen, fleet_size: int) -> int:
    """The sum of all waits of a deployment: a bake after every step, then the
    termination wait.

    >>> from fleetshift_operator.api import CapacitySize as S
    >>> routing = TrafficRouting(type="Canary", canarySize=S(type="CapacityPercent", value=10),
    ...                          waitIntervalSeconds=60)
    >>> total_wait_seconds(BlueGreen(trafficRouting=routing, terminationWaitSeconds=120), 4)
    240
    """
    steps = calculate_step_count(policy.trafficRouting, fleet_size)
    return steps * policy.trafficRouting.waitIntervalSeconds + policy.terminationWaitSeconds


def calculate_batch(size_type: str, value: int, fleet_size: int) -> int:
    """Replicas per rolling batch: a count, or a percentage of the fleet, at least 1.

    >>> calculate_batch("InstanceCount", 2, 10), calculate_batch("CapacityPercent", 25, 10)
    (2, 3)
    >>> calculate_batch("CapacityPercent", 5, 4)
    1
    """
    if size_type == "InstanceCount":
        return max(1, min(value, fleet_size))
    return max(1, math.ceil(fleet_size * value / 100))


def calculate_rolling_targets(fleet_size: int, batch: int) -> list[int]:
    """Green replicas after each rolling batch.

    >>> calculate_rolling_targets(10, 3)
    [3, 6, 9, 10]
    >>> calculate_rolling_targets(4, 4)
    [4]
    """
    return [min(fleet_size, k * batch) for k in range(1, math.ceil(fleet_size / batch) + 1)]


# -- the split of an endpoint's traffic over whole pods --------------------------------------


def _apportion(shares: Sequence[float], caps: Sequence[int], total: int) -> list[int] | None:
    """``total`` pods over backends in proportion to ``shares`` (summing to 1), each
    between 1 and its cap, by largest remainder; None when no such choice exists."""
    if total < len(shares) or total > sum(caps):
        return None
    ideal = [share * total for share in shares]
    counts = [min(cap, max(1, math.floor(x))) for x, cap in zip(ideal, caps, strict=True)]
    # One pod at a time, to the backend furthest below its ideal (from the one furthest
    # above it): a backend may need several, and the largest gap is what counts.
    for _ in range(total - sum(counts)):
        i = min(
            (i for i in range(len(counts)) if counts[i] < caps[i]),
            key=lambda i: (counts[i] - ideal[i], i),
        )
        counts[i] += 1
    for _ in range(sum(counts) - total):
        i = max(
            (i for i in range(len(counts)) if counts[i] > 1),
            key=lambda i: (counts[i] - ideal[i], -i),
        )
        counts[i] -= 1
    return counts


def split_error(counts: Sequence[int], shares: Sequence[float]) -> float:
    """The largest gap, in percentage points, between a backend's share of the serving
    pods and the share asked of it.

    >>> split_error([3, 1], [0.75, 0.25])
    0.0
    >>> round(split_error([2, 1], [0.9, 0.1]), 1)
    23.3
    """
    served = sum(counts)
    if served == 0:
        return 100.0 if any(shares) else 0.0
    return max(abs(100 * n / served - 100 * s) for n, s in zip(counts, shares, strict=True))


SPLIT_SEARCH = 200
"""Serving totals up to this are all tried; above it only those near the most the Ready
pods allow without capping a backend (there, whole pods are within half a point)."""
SPLIT_SLACK_POINTS = 0.5
"""Splits this close to the best one count as equally close; the most pods wins."""


def _candidate_totals(shares: Sequence[float], caps: Sequence[int]) -> list[int]:
    fewest, most = len(shares), sum(caps)
    uncapped = math.floor(min(cap / share for cap, share in zip(caps, shares, strict=True)))
    near = range(max(fewest, uncapped - 2 * fewest), min(most, uncapped + 2 * fewest) + 1)
    return sorted(set(range(fewest, min(most, SPLIT_SEARCH) + 1)) | set(near) | {most})


def calculate_split(weights: Sequence[float], ready: Sequence[int]) -> list[int]:
    """Serving pods per backend so that each backend's share of all serving pods is as
    close as whole pods allow to its share of ``weights``.

    A backend with weight 0, or without a Ready pod, serves with none (its share goes to
    the others: that is what the data plane does). Every other backend serves with at
    least one pod and at most its Ready ones. Among the choices within half a point of
    the closest, the one with the most serving pods wins.

    Worked examples:

    * a 25% canary, blue and green 4 Ready each: 3 blue and 1 green serve (exact);
    * a 10% canary on 3 replicas: 3 blue and 1 green (25%, the closest whole pods allow:
      2 and 1 would be 33%);
    * variants weighted 80/20 with 4 and 1 Ready: all 5 serve (exact);
    * weight 0 gets no pod even when Ready.

    >>> calculate_split([75, 25], [4, 4])
    [3, 1]
    >>> calculate_split([90, 10], [3, 3])
    [3, 1]
    >>> calculate_split([80, 20], [4, 1])
    [4, 1]
    >>> calculate_split([50, 50], [4, 1])
    [1, 1]
    >>> calculate_split([100, 0], [4, 4])
    [4, 0]
    >>> calculate_split([50, 50], [3, 0])
    [3, 0]
    >>> calculate_split([0, 0], [3, 3])
    [0, 0]
    >>> calculate_split([1] * 20, [1000] * 20) == [1000] * 20
    True
    """
    active = [i for i, (w, r) in enumerate(zip(weights, ready, strict=True)) if w > 0 and r > 0]
    result = [0] * len(weights)
    if not active:
        return result
    total_weight = sum(weights[i] for i in active)
    shares = [weights[i] / total_weight for i in active]
    caps = [ready[i] for i in active]
    scored = []
    for total in _candidate_totals(shares, caps):
        counts = _apportion(shares, caps, total)
        if counts is not None:
            scored.append((split_error(counts, shares), total, counts))
    closest = min(error for error, _, _ in scored)
    _, _, best = max(
        (entry for entry in scored if entry[0] <= closest + SPLIT_SLACK_POINTS),
        key=lambda entry: entry[1],
    )
    for i, count in zip(active, best, strict=True):
        result[i] = count
    return result


def share_percent(part: int, whole: int) -> int:
    """``part`` of ``whole`` as a whole percentage (0 when ``whole`` is 0).

    >>> share_percent(1, 4), share_percent(1, 3), share_percent(0, 0)
    (25, 33, 0)
    """
    return round(100 * part / whole) if whole else 0

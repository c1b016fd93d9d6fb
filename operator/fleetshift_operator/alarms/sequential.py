"""Is green worse than blue? An always-valid comparison of two failure rates. Pure.

Each request a fleet serves is a trial that fails (a 5xx, or slower than a latency
bound) or not. The gate sees running counts for green and blue since the deployment
began and is asked every poll; a test that peeks every poll must stay valid however
often it peeks, so it is built on confidence *sequences*, not fixed-sample intervals.

The bound for one fleet
-----------------------
With ``n`` trials and ``s`` failures, the mixture of the likelihood ratios of every
rate ``q`` (uniform prior) against a rate ``p``::

    M(p) = B(1 + s, 1 + n - s) / (p^s (1 - p)^(n - s))

is, while the true rate is ``p``, a nonnegative martingale with mean 1 (Robbins'
method of mixtures). By Ville's inequality it ever reaches ``1/a`` with probability at
most ``a``, so ``{p : M(p) < 1/a}`` holds the true rate at every count at once: an
interval that is valid at all times, whenever and however often it is read.

The comparison
--------------
Each fleet's interval at ``a = (1 - confidence) / 2``; together they hold both rates
at all times with probability at least ``confidence``, so the difference
``green - blue`` lies in ``[low, high] = [L_green - U_blue, U_green - L_blue]``.
With a margin ``m`` (in rate, e.g. 0.01 for one point):

=============  =====================  ==============================================
verdict        when                   meaning
=============  =====================  ==============================================
Healthy        ``high <= m``          green is not worse than blue by more than m
Breaching      ``low > m``            green is worse than blue by more than m
Inconclusive   otherwise              too little traffic to tell: hold
=============  =====================  ==============================================

A green worse by more than the margin is promoted only if green's interval or blue's
misses its true rate at some moment: at most ``1 - confidence`` of the time, however
long the bake and however often it is polled (``tests/unit/test_sequential.py``
checks it over 10,000 simulated bakes).

Worked example (margin 1 point, confidence 95%)::

    >>> compare_rates(Counts(trials=2000, failures=4), Counts(trials=8000, failures=16),
    ...               margin=0.01, confidence=0.95)
    Evidence(verdict='Healthy', green_rate=0.002, blue_rate=0.002, low=-0.0051, high=0.0095)
    >>> compare_rates(Counts(trials=300, failures=30), Counts(trials=1200, failures=12),
    ...               margin=0.01, confidence=0.95).verdict
    'Breaching'
    >>> compare_rates(Counts(trials=200, failures=0), Counts(trials=800, failures=0),
    ...               margin=0.01, confidence=0.95).verdict
    'Inconclusive'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

StatisticalVerdict = Literal["Healthy", "Breaching", "Inconclusive"]

_TOLERANCE = 1e-9
"""How close to the edge, in units of ``log M``."""
_NEWTON_STEPS = 60


@dataclasses.dataclass(frozen=True)
class Counts:
    """One fleet's requests since the deployment began, and how many failed."""

    trials: int
    failures: int

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 <= self.failures <= self.trials:
            raise ValueError(f"need 0 <= failures <= trials, got {self.failures}/{self.trials}")

    @property
    def rate(self) -> float:
        return self.failures / self.trials if self.trials else 0.0


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the gate saw and decided: the verdict, each rate, and the bounds of
    ``green - blue`` (rounded to 4 places, for status and ``kubectl fleetshift watch``)."""

    verdict: StatisticalVerdict
    green_rate: float
    blue_rate: float
    low: float
    high: float


def _log_mixture(p: float, counts: Counts) -> float:
    """``log M(p)`` for one fleet (see the module docstring)."""
    s, f = counts.failures, counts.trials - counts.failures
    log_beta = math.lgamma(1 + s) + math.lgamma(1 + f) - math.lgamma(2 + counts.trials)
    if (s and p <= 0.0) or (f and p >= 1.0):
        return math.inf
    log_likelihood = (s * math.log(p) if s else 0.0) + (f * math.log1p(-p) if f else 0.0)
    return log_beta - log_likelihood


def _edge(counts: Counts, level: float, upper: bool) -> float:
    """Where ``log M`` crosses ``level`` on one side of the observed rate.

    ``log M`` is convex in ``p`` with its least value at the observed rate, where it is
    below ``level``. Halving toward the side asked finds a point beyond the crossing;
    Newton's steps from there approach it from outside (a tangent of a convex function
    never overshoots), so the edge returned is never inside the true one.
    """
    s, f = counts.failures, counts.trials - counts.failures
    inside, outside = counts.rate, (1.0 if upper else 0.0)
    if _log_mixture(outside, counts) < level:
        return outside
    point = (inside + outside) / 2
    while _log_mixture(point, counts) < level:
        inside, point = point, (point + outside) / 2
    for _ in range(_NEWTON_STEPS):
        excess = _log_mixture(point, counts) - level
        if excess < _TOLERANCE:
            break
        slope = -s / point + f / (1 - point)
        step = point - excess / slope
        if not min(inside, point) < step < max(inside, point):
            step = (inside + point) / 2
        if _log_mixture(step, counts) < level:
            inside = step  # rounding crossed the edge: keep the outside point
            continue
        point = step
    return point


def confidence_sequence(counts: Counts, alpha: float) -> tuple[float, float]:
    """An interval for one fleet's failure rate, valid at every count at once with
    probability at least ``1 - alpha``.

    >>> low, high = confidence_sequence(Counts(trials=1000, failures=0), 0.025)
    >>> low, round(high, 4)
    (0.0, 0.0105)
    >>> confidence_sequence(Counts(trials=0, failures=0), 0.025)
    (0.0, 1.0)
    """
    level = math.log(1 / alpha)
    return _edge(counts, level, upper=False), _edge(counts, level, upper=True)


def compare_rates(green: Counts, blue: Counts, margin: float, confidence: float) -> Evidence:
    """Green against blue with a non-inferiority ``margin`` (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    alpha = (1 - confidence) / 2
    green_low, green_high = confidence_sequence(green, alpha)
    blue_low, blue_high = confidence_sequence(blue, alpha)
    low, high = green_low - blue_high, green_high - blue_low
    verdict: StatisticalVerdict = "Inconclusive"
    if high <= margin:
        verdict = "Healthy"
    elif low > margin:
        verdict = "Breaching"
    return Evidence(
        verdict=verdict,
        green_rate=round(green.rate, 4),
        blue_rate=round(blue.rate, 4),
        low=round(low, 4),
        high=round(high, 4),
    )


def trials_to_promote(rate: float, margin: float, confidence: float, blue_share: float) -> int:
    """The fewest green requests after which equal fleets failing at ``rate`` (counts at
    their expected values) are promoted, when blue serves ``blue_share`` of the traffic
    and green the rest: the traffic a bake needs at this margin.

    >>> trials_to_promote(0.0, margin=0.01, confidence=0.95, blue_share=0.9)
    1061
    >>> trials_to_promote(0.001, margin=0.01, confidence=0.95, blue_share=0.9)
    1548
    """
    green_share = 1 - blue_share

    def promoted(trials: int) -> bool:
        blue_trials = round(trials * blue_share / green_share)
        green = Counts(trials, round(trials * rate))
        blue = Counts(blue_trials, round(blue_trials * rate))
        return compare_rates(green, blue, margin, confidence).verdict == "Healthy"

    low, high = 1, 1
    while not promoted(high):
        low, high = high, high * 2
        if high > 10**9:
            raise ValueError("never promoted: the margin is too small for this rate")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if promoted(middle) else (middle, high)
    return high

"""The request tally reports exactly what ``prometheus_client`` would have, pushed in bulk.

The runtime counts a request's metrics in plain Python and pushes them into
``prometheus_client`` before each scrape (``fleetshift_runtime.metrics.RequestTally``). These
tests hold it to the numbers of the direct calls it replaces, for any traffic and any
moment of scraping, and with a scrape thread pushing while the event loop counts.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fleetshift_runtime.metrics import RuntimeMetrics

POD = {"namespace": "shop", "endpoint": "churn", "variant": "AllTraffic", "revision": "3"}

seconds = st.one_of(
    st.floats(min_value=0.0, max_value=10.0),
    st.sampled_from([0.0001, 0.00025, 0.005, 5.0, 7.5]),  # on a bucket's bound, and past all
)
answer = st.tuples(
    st.sampled_from(["model", "bin20", "other"]),
    st.sampled_from([200, 200, 400, 404, 413, 500, 503]),
    st.one_of(st.none(), seconds),
    seconds,
)
step = st.one_of(answer, st.just("scrape"), st.just("gone"))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Answer = tuple[str, int, float | None, float]


def _samples(registry: CollectorRegistry) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("fleetshift_")
        and not sample.name.startswith("fleetshift_model_load")
    }


def _direct(metrics: RuntimeMetrics, answered: Answer) -> None:
    """What the runtime called before the tally, one ``prometheus_client`` call each."""
    model, status, model_s, over = answered
    invocations, errors_4xx, errors_5xx = metrics.for_model(model)
    invocations.inc()
    if status >= 500:
        errors_5xx.inc()
    elif status >= 400:
        errors_4xx.inc()
    if model_s is not None:
        metrics.model_latency_child.observe(model_s)
    metrics.overhead_latency_child.observe(over)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=60), st.integers(min_value=1, max_value=3))
def test_a_scrape_at_any_moment_reads_what_direct_calls_would_have_written(
    steps: list[Answer | str], max_model_labels: int
) -> None:
    tallied = RuntimeMetrics(POD, max_model_labels=max_model_labels)
    direct = RuntimeMetrics(POD, max_model_labels=max_model_labels)
    inflight = 0
    for item in steps:
        if isinstance(item, str) and item == "scrape":
            _assert_same(_samples(tallied.registry), _samples(direct.registry), inflight)
            continue
        tallied.tally.started()
        if isinstance(item, str):  # "gone": the client left before its answer
            tallied.tally.gone()
            continue
        model, status, model_s, over = item
        tallied.tally.answered(model, status, model_seconds=model_s, overhead_seconds=over)
        _direct(direct, item)
    tallied.tally.started()  # one request still in flight at the last scrape
    _assert_same(_samples(tallied.registry), _samples(direct.registry), 1)


def _assert_same(tallied: Samples, direct: Samples, inflight: int) -> None:
    inflight_key = next(key for key in tallied if key[0] == "fleetshift_inflight_requests")
    assert tallied.pop(inflight_key) == inflight
    direct.pop(inflight_key)
    assert tallied.keys() == direct.keys()
    for key, value in direct.items():
        if key[0].endswith("_sum"):
            assert math.isclose(tallied[key], value, rel_tol=1e-9, abs_tol=1e-12), key
        else:
            assert tallied[key] == value, key


def test_a_scrape_thread_pushing_while_the_loop_counts_loses_no_request() -> None:
    metrics = RuntimeMetrics(POD)
    done = threading.Event()
    scrapes = 0

    def scrape_until_done() -> None:
        nonlocal scrapes
        while not done.is_set():
            metrics.registry.get_sample_value(
                "fleetshift_invocations_total", {**POD, "model": "model"}
            )
            scrapes += 1

    scraper = threading.Thread(target=scrape_until_done)
    scraper.start()
    answered = 200_000
    for number in range(answered):
        metrics.tally.started()
        status = 500 if number % 7 == 0 else 200
        metrics.tally.answered("model", status, model_seconds=0.001, overhead_seconds=0.0001)
    done.set()
    scraper.join()

    def read(name: str, labels: dict[str, str]) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    assert scrapes > 1
    assert read("fleetshift_invocations_total", {**POD, "model": "model"}) == answered
    assert read("fleetshift_invocation_5xx_errors_total", {**POD, "model": "model"}) == len(
        range(0, answered, 7)
    )
    assert read("fleetshift_model_latency_seconds_count", POD) == answered
    assert math.isclose(read("fleetshift_model_latency_seconds_sum", POD), answered * 0.001)
    assert read("fleetshift_inflight_requests", POD) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(min_value=-1.0, max_value=2.0), min_size=1, max_size=40),
        max_size=10,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_predictions_counted_in_batches_read_as_one_observation_per_row(
    answers: list[list[float]], columns: int
) -> None:
    tallied = RuntimeMetrics(POD)
    direct = RuntimeMetrics(POD)
    child = direct.predictions.labels(**POD)
    for values in answers:
        rows = np.array(values, dtype=np.float32)
        if columns > 1:  # a multi-output answer is counted by each row's top score
            rows = np.stack([rows] + [rows * 0.5] * (columns - 1), axis=1)
        tallied.tally.predicted(rows)
        for row in rows:
            child.observe(float(np.max(row)))
    names = ("fleetshift_prediction_bucket", "fleetshift_prediction_count")
    ours = {k: v for k, v in _samples(tallied.registry).items() if k[0] in names}
    theirs = {k: v for k, v in _samples(direct.registry).items() if k[0] in names}
    assert ours == theirs
    total = tallied.registry.get_sample_value("fleetshift_prediction_sum", POD)
    expected = direct.registry.get_sample_value("fleetshift_prediction_sum", POD)
    assert total is not None and expected is not None
    assert math.isclose(total, expected, rel_tol=1e-6, abs_tol=1e-6)

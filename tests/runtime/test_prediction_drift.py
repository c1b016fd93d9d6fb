"""The drift alarm catches a model that answers 200 with shifted numbers.

Real processes end to end: a blue runtime with the churn model, a green one whose model
learned a shifted rule (it says "churn" to many more customers and never fails), and a
green twin of blue; a real Prometheus scrapes all three; the operator's alarm engine
evaluates a ``drift`` alarm for each green revision against blue, as it would during a
bake.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import xgboost

from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.factory import make_alarm_source
from fleetshift_operator.alarms.prometheus import Prometheus
from fleetshift_operator.api import Alarm, DriftAlarm
from support.runtime_kit import RuntimeProcess, StartRuntime, TrainedModel, csv_body

LABELS = {"namespace": "shop", "endpoint": "churn", "variant": "main"}


def shifted_model(model: TrainedModel) -> TrainedModel:
    """The churn rule with its boundary moved: most customers now look like churners.
    Every answer is a valid probability; only their distribution moved."""
    rows = np.random.default_rng(5).normal(size=(400, model.features)).astype(np.float32)
    labels = (rows[:, 0] + 0.5 * rows[:, 1] > -0.8).astype(int)
    params = {"max_depth": 3, "objective": "binary:logistic", "nthread": 1, "seed": 5}
    booster = xgboost.train(params, xgboost.DMatrix(rows, label=labels), 10)
    return TrainedModel(booster, model.rows, model.features)


def test_a_green_whose_predictions_shifted_breaches_and_a_faithful_green_stays_healthy(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    prometheus_factory: Callable[[dict[str, object]], LocalPrometheus],
) -> None:
    shifted = shifted_model(churn_model)
    ours, theirs = churn_model.expected(), shifted.expected()
    assert np.mean(ours > 0.5) < 0.6 < np.mean(theirs > 0.5)  # the shift is real
    servers: dict[str, RuntimeProcess] = {}
    for revision, model in (("b1", churn_model), ("g1", shifted), ("t1", churn_model)):
        path = model.save(tmp_path / revision / "model.ubj")
        servers[revision] = start_runtime(MODEL_URI=str(path), REVISION=revision, **LABELS)
    targets = [server.metrics_url.split("/")[2] for server in servers.values()]
    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "runtime", "static_configs": [{"targets": targets}]}],
        }
    )
    started = datetime.datetime.now(datetime.UTC)
    stop = threading.Event()

    def send_traffic() -> None:  # every fleet gets the same rows, 5 a request
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                for first in range(0, 50, 5):
                    for server in servers.values():
                        client.post(
                            f"{server.url}/invocations",
                            content=csv_body(churn_model.rows[first : first + 5]),
                            headers={"Content-Type": "text/csv"},
                        )
                stop.wait(0.2)

    traffic = threading.Thread(target=send_traffic, daemon=True)
    traffic.start()
    alarm = Alarm(name="drift", drift=DriftAlarm(threshold=0.2, minSamples=200))

    def judged(green: str, wanted: str) -> AlarmResult | None:
        context = AlarmContext("shop", "churn", "main", green, "b1", since=started)
        source = make_alarm_source(alarm, context, Prometheus(prometheus.url))
        found = source.evaluate(None, datetime.datetime.now(datetime.UTC))
        return found if found.verdict == wanted else None

    try:
        first_verdict = judged("g1", "Inconclusive")  # before 200 predictions each
        clock = time.monotonic()
        breaching = wait_for(
            lambda: judged("g1", "Breaching"), timeout=90, interval=1, message="drift seen"
        )
        detected_after = time.monotonic() - clock
        healthy = wait_for(
            lambda: judged("t1", "Healthy"), timeout=30, interval=1, message="twin healthy"
        )
    finally:
        stop.set()
        traffic.join()
    assert first_verdict is not None, "no verdict on fewer than minSamples predictions"
    assert breaching.value is not None and breaching.value > 0.2
    assert "drifted" in breaching.reason
    assert healthy.value is not None and healthy.value < 0.05
    assert detected_after < 60, f"drift seen after {detected_after:.0f} s"
    assert all(
        server.metric("fleetshift_invocation_5xx_errors_total") == 0 for server in servers.values()
    ), "the shifted model never fails a request"

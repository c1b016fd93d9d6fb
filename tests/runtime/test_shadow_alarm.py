"""The ShadowDisagreement alarm reads what production pods export about their shadows.

Real processes end to end: a production runtime copies every request to two shadow
runtimes (one with the same model, one with a model that answers 200 with other numbers);
a real Prometheus scrapes the production runtime; the operator's alarm engine evaluates
the ``ShadowDisagreement`` template for each shadow's revision, as it would during that
shadow's deployment.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.factory import make_alarm_source
from fleetshift_operator.alarms.prometheus import Prometheus
from fleetshift_operator.api import Alarm, TemplateAlarm
from support.runtime_kit import StartRuntime, TrainedModel, csv_body, flipped_model

POD = {"namespace": "shop", "endpoint": "churn", "variant": "main", "revision": "r1"}


def test_a_shadow_answering_other_classes_breaches_and_a_faithful_one_stays_healthy(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    prometheus_factory: Callable[[dict[str, object]], LocalPrometheus],
) -> None:
    challenger = flipped_model(churn_model)
    twin = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "twin" / "model.ubj")))
    other = start_runtime(MODEL_URI=str(challenger.save(tmp_path / "other" / "model.ubj")))
    mirror = tmp_path / "mirror.json"
    mirror.write_text(
        json.dumps(
            {
                "shadows": [
                    {"variant": "twin", "revision": "t1", "url": twin.url, "samplingPercent": 100},
                    {"variant": "next", "revision": "n1", "url": other.url, "samplingPercent": 100},
                ]
            }
        )
    )
    production = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")), MIRROR_FILE=str(mirror), **POD
    )
    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "runtime",
                    "static_configs": [{"targets": [production.metrics_url.split("/")[2]]}],
                }
            ],
        }
    )
    stop = threading.Event()

    def send_traffic() -> None:
        with httpx.Client(base_url=production.url, timeout=10) as client:
            while not stop.is_set():
                for start in range(0, 50, 5):
                    client.post(
                        "/invocations",
                        content=csv_body(churn_model.rows[start : start + 5]),
                        headers={"Content-Type": "text/csv"},
                    )
                stop.wait(0.1)

    traffic = threading.Thread(target=send_traffic, daemon=True)
    traffic.start()
    template = TemplateAlarm(kind="ShadowDisagreement", threshold=5, periodSeconds=3)

    def result(variant: str, revision: str) -> AlarmResult:
        context = AlarmContext("shop", "churn", variant, revision, "r0")
        alarm = Alarm(name="disagreement", template=template)
        source = make_alarm_source(alarm, context, Prometheus(prometheus.url))
        return source.evaluate(None, datetime.datetime.now(datetime.UTC))

    def verdict_is(variant: str, revision: str, wanted: str) -> AlarmResult | None:
        found = result(variant, revision)
        return found if found.verdict == wanted else None

    try:
        breaching = wait_for(
            lambda: verdict_is("next", "n1", "Breaching"),
            timeout=60,
            interval=1,
            message="the disagreeing shadow's alarm breaching",
        )
        healthy = wait_for(
            lambda: verdict_is("twin", "t1", "Healthy"),
            timeout=30,
            interval=1,
            message="the faithful shadow's alarm healthy",
        )
    finally:
        stop.set()
        traffic.join()
    ours = churn_model.expected() > 0.5
    theirs = challenger.expected() > 0.5
    assert np.mean(ours != theirs) > 0.9  # what the alarm saw is what the models do
    assert breaching.value is not None and breaching.value > 90
    assert healthy.value == 0

"""The operator's log (text or JSON lines) and its failure loop: nothing fails silently."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx2
import kopf
import pydantic
import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from fleetshift_devcluster.wait import wait_for
from fleetshift_operator import handlers
from fleetshift_operator.logs import (
    LOGGER,
    JsonLinesFormatter,
    TextFormatter,
    configure_logging,
)
from fleetshift_operator.settings import OperatorSettings

ABOUT = {"namespace": "ml", "endpoint": "churn"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers_before, level_before = root.handlers[:], root.level
    kopf_level = logging.getLogger("kopf").level
    yield
    root.handlers[:], root.level = handlers_before, level_before
    logging.getLogger("kopf").setLevel(kopf_level)


def _record(level: int, message: str, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger(LOGGER)
    return logger.makeRecord(LOGGER, level, __file__, 1, message, (), None, extra=extra)


def test_a_text_line_names_the_endpoint_and_carries_the_extras() -> None:
    line = TextFormatter().format(_record(logging.INFO, "phase Creating -> InService", **ABOUT))
    assert line.endswith(" INFO [ml/churn] phase Creating -> InService")
    line = TextFormatter().format(_record(logging.ERROR, "boom", attempt=3, **ABOUT))
    assert line.endswith(" ERROR [ml/churn] boom attempt=3")


def test_a_json_line_is_one_object_with_the_endpoint_level_and_traceback() -> None:
    try:
        raise RuntimeError("exceeded quota")
    except RuntimeError:
        record = _record(logging.ERROR, "reconcile failed", retry_in=2.0, **ABOUT)
        record.exc_info = sys.exc_info()
    line = JsonLinesFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR"
    assert parsed["logger"] == LOGGER
    assert (parsed["namespace"], parsed["endpoint"]) == ("ml", "churn")
    assert parsed["message"] == "reconcile failed"
    assert parsed["retry_in"] == 2.0
    assert "RuntimeError: exceeded quota" in parsed["error"]
    assert parsed["time"].endswith("Z")


def test_records_from_kopfs_object_logger_name_their_object() -> None:
    record = _record(logging.WARNING, "handler failed")
    record.k8s_ref = {"namespace": "ml", "name": "churn", "kind": "Endpoint"}
    record.k8s_skip = False
    parsed = json.loads(JsonLinesFormatter().format(record))
    assert (parsed["namespace"], parsed["endpoint"]) == ("ml", "churn")
    assert "k8s_ref" not in parsed and "k8s_skip" not in parsed
    assert "[ml/churn] handler failed" in TextFormatter().format(record)


def test_the_log_format_and_level_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().log_format == "text"
    monkeypatch.setenv("FLEETSHIFT_LOG_FORMAT", "json")
    monkeypatch.setenv("FLEETSHIFT_LOG_LEVEL", "DEBUG")
    settings = OperatorSettings()
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    monkeypatch.setenv("FLEETSHIFT_LOG_FORMAT", "yaml")
    with pytest.raises(pydantic.ValidationError, match="log_format"):
        OperatorSettings()


def test_kopfs_chatter_stays_out_unless_debug_and_its_errors_come_through() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    configure_logging("json", "INFO", stream=stream)  # again: still one line per record
    logging.getLogger(LOGGER).info("operator starting")
    logging.getLogger("kopf.objects").info("Handler 'pod_changed' succeeded.")
    for attempt in (1, 2, 3):
        logging.getLogger("kopf.objects").error(
            f"Request attempt #{attempt}/31 failed; will retry: GET / -> refused"
        )
    logging.getLogger("kopf.objects").error("Request attempt #31/31 failed; escalating: GET /")
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == [
        "operator starting",
        "Request attempt #1/31 failed; will retry: GET / -> refused",
        "Request attempt #31/31 failed; escalating: GET /",
    ]

    stream = io.StringIO()
    configure_logging("text", "DEBUG", stream=stream)
    logging.getLogger("kopf.objects").info("Handler 'pod_changed' succeeded.")
    for attempt in (1, 2):
        logging.getLogger("kopf.objects").error(
            f"Request attempt #{attempt}/31 failed; will retry: GET / -> refused"
        )
    assert len(stream.getvalue().splitlines()) == 3


class _Stopped:
    """Stands in for kopf's DaemonStopped: falsy until the test has seen enough."""

    def __init__(self) -> None:
        self.stop = False

    def __bool__(self) -> bool:
        return self.stop


class _FakeKube:
    """Hands out one Endpoint, or the errors the test queues, and records conditions."""

    def __init__(self, reads: list[BaseException | None]) -> None:
        self.reads = reads
        self.conditions: list[dict[str, Any]] = []

    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any]:
        error = self.reads.pop(0) if self.reads else None
        if error is not None:
            raise error
        return {
            "apiVersion": "fleetshift.dev/v1alpha1",
            "kind": "Endpoint",
            "metadata": {"namespace": namespace, "name": name, "uid": "u", "generation": 3},
            "spec": {},
        }

    async def merge_condition(self, namespace: str, name: str, condition: dict[str, Any]) -> None:
        self.conditions.append(condition)


def _run_daemon(
    monkeypatch: pytest.MonkeyPatch,
    kube: _FakeKube,
    reconcile_error: BaseException | None,
    rounds: int,
) -> tuple[list[float], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``run_endpoint`` for ``rounds`` sleeps; return the waits, the log records
    (JSON) and the Warning Events it emitted."""
    waits: list[float] = []
    warnings: list[dict[str, Any]] = []
    stopped = _Stopped()

    clock = [0.0]

    async def sleep(wake: asyncio.Event, halted: Any, seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds
        stopped.stop = len(waits) >= rounds

    async def reconcile(*args: Any, **kwargs: Any) -> Any:
        assert reconcile_error is not None
        raise reconcile_error

    def event(body: Any, *, type: str, reason: str, message: str) -> None:
        if type == "Warning":
            warnings.append(
                {"name": body["metadata"]["name"], "reason": reason, "message": message}
            )

    monkeypatch.setattr(handlers, "_sleep", sleep)
    monkeypatch.setattr(handlers, "_clock", lambda: clock[0])
    monkeypatch.setattr(handlers, "reconcile_endpoint", reconcile)
    monkeypatch.setattr(kopf, "event", event)
    monkeypatch.setattr(handlers, "_SETTINGS", OperatorSettings(reconnect_seconds=2))
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    daemon: Any = handlers.run_endpoint  # kopf's decorator types it for kopf's own calls
    asyncio.run(
        daemon(
            namespace="ml",
            name="churn",
            stopped=cast(kopf.DaemonStopped, stopped),
            memo={"kube": kube},
            # kopf's indexes of the Endpoint's children: unread, as reconcile is replaced.
            fleet_deployments={},
            fleet_pods={},
            fleet_services={},
            fleet_hpas={},
            fleet_disruption_budgets={},
            fleet_config_maps={},
        )
    )
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    return waits, records, warnings


def test_a_failing_reconcile_is_logged_evented_marked_degraded_and_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = ApiError(status=Status(code=403, message="exceeded quota: no-deployments"))
    kube = _FakeKube([])
    waits, records, warnings = _run_daemon(monkeypatch, kube, refused, rounds=5)

    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 5
    assert all((r["namespace"], r["endpoint"]) == ("ml", "churn") for r in errors)
    assert errors[0]["message"] == "reconcile failed: exceeded quota: no-deployments"
    assert [r["attempt"] for r in errors] == [1, 2, 3, 4, 5]
    assert "ApiError" in errors[0]["error"]
    # The same failure again is logged, but evented and written once.
    assert warnings == [
        {"name": "churn", "reason": "ReconcileError", "message": "exceeded quota: no-deployments"}
    ]
    assert len(kube.conditions) == 1
    degraded = kube.conditions[0]
    assert degraded["type"] == "Degraded" and degraded["status"] == "True"
    assert degraded["reason"] == "ReconcileError"
    assert degraded["observedGeneration"] == 3


def test_an_unreachable_apiserver_is_retried_within_the_reconnect_interval_and_said_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = httpx2.ConnectError("[Errno 111] Connection refused")
    starting = ApiError(status=Status(code=503, message="the server is starting"))
    kube = _FakeKube([down, down, down, down, starting])
    waits, records, warnings = _run_daemon(
        monkeypatch, kube, RuntimeError("then a real failure"), rounds=6
    )

    assert waits[:5] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert max(waits[:5]) <= 2.0
    said = [r for r in records if r["message"].startswith("API server unreachable")]
    assert len(said) == 1 and said[0]["level"] == "WARNING"
    assert said[0]["endpoint"] == "churn"
    assert not kube.conditions[:-1] and len(warnings) == 1, "nothing is written while away"
    assert warnings[0]["message"] == "RuntimeError: then a real failure"


def test_a_long_outage_is_said_again_every_minute_not_every_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = httpx2.ConnectError("[Errno 111] Connection refused")
    kube = _FakeKube([down] * 80)
    waits, records, _ = _run_daemon(monkeypatch, kube, None, rounds=70)

    assert sum(waits) > 2 * handlers.UNREACHABLE_REMINDER_SECONDS
    said = [r["message"] for r in records if r["level"] == "WARNING"]
    assert said[0] == "API server unreachable: ConnectError: [Errno 111] Connection refused"
    assert [m.split(" after ")[0] for m in said[1:]] == ["API server still unreachable"] * 2
    assert said[1].startswith("API server still unreachable after 6")  # about a minute


def test_kopfs_request_retries_never_wait_longer_than_the_reconnect_interval() -> None:
    waits = handlers.calculate_request_backoffs(2.0)
    assert max(waits) == 2.0
    assert sum(waits) >= 60, "a short outage must not exhaust kopf's patches and events"
    assert handlers.is_unreachable(ApiError(status=Status(code=503)))
    assert not handlers.is_unreachable(ApiError(status=Status(code=409)))


def test_the_operator_logs_its_start_and_its_unreachable_apiserver(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "FLEETSHIFT_LOG_FORMAT": "json",
        "FLEETSHIFT_METRICS_PORT": "0",
        "FLEETSHIFT_NAMESPACES": '["ml"]',
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetshift_operator"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:

        def records() -> list[dict[str, Any]]:
            lines = log.read_text(errors="replace").splitlines()
            return [json.loads(line) for line in lines if line.startswith("{")]

        def said_unreachable() -> bool:
            return any(
                r["level"] == "ERROR" and "will retry: GET http://127.0.0.1:9" in r["message"]
                for r in records()
            )

        wait_for(said_unreachable, timeout=15, message="the unreachable API server is logged")
    finally:
        process.terminate()
        process.wait(timeout=20)
    starting = [r for r in records() if r["message"].startswith("operator starting")]
    assert starting and starting[0]["logger"] == LOGGER, log.read_text()
    assert "namespaces ml" in starting[0]["message"]

"""``kubectl fleetshift invoke`` against a real runtime process serving a real XGBoost model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import numpy as np
import pytest

from cli.helpers import run_plugin
from fleetshift_operator.cli.invoke import proxy_path, send_invocations
from support.runtime_kit import RuntimeProcess, csv_body, runtime_env, train_model

SUMMARY = re.compile(r"^(\d+) requests, (\d+) errors?, p50 [\d.]+ ms, p99 [\d.]+ ms$", re.M)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeProcess, Path]]:
    """The runtime on 127.0.0.1 with a 20-feature model, and a CSV of 5 of its rows."""
    folder = tmp_path_factory.mktemp("invoke")
    model = train_model()
    model_file = model.save(folder / "model.json")
    server = RuntimeProcess(runtime_env(MODEL_URI=str(model_file)), folder / "runtime.log")
    server.start().wait_ready()
    rows = folder / "rows.csv"
    rows.write_bytes(csv_body(model.rows[:5]) + b"\n")
    (folder / "expected.txt").write_text(" ".join(repr(float(v)) for v in model.expected()[:5]))
    yield server, rows
    server.stop()


def test_invoke_sends_n_rows_and_prints_a_dot_each_then_a_summary(
    runtime: tuple[RuntimeProcess, Path],
) -> None:
    server, rows = runtime
    before = server.metric("fleetshift_invocations_total")

    done = run_plugin(None, "invoke", "churn", "--csv", str(rows), "-n", "12", "--url", server.url)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "." * 12
    summary = SUMMARY.search(done.stdout)
    assert summary is not None and summary.groups() == ("12", "0")
    assert server.metric("fleetshift_invocations_total") - before == 12


def test_invoke_prints_e_for_each_rejected_row_and_exits_one(
    runtime: tuple[RuntimeProcess, Path], tmp_path: Path
) -> None:
    server, rows = runtime
    mixed = tmp_path / "mixed.csv"
    good = rows.read_text().splitlines()[0]
    mixed.write_text(f"{good}\n1,2,3\n")  # the second row has 3 features, not 20

    done = run_plugin(None, "invoke", "churn", "--csv", str(mixed), "-n", "4", "--url", server.url)

    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == ".E.E"
    summary = SUMMARY.search(done.stdout)
    assert summary is not None and summary.groups() == ("4", "2")
    assert "first error: HTTP 4" in done.stderr


def test_invoke_answers_match_the_model(runtime: tuple[RuntimeProcess, Path]) -> None:
    server, rows = runtime
    answers: list[bool] = []
    with httpx2.Client(base_url=server.url + "/") as client:
        summary = send_invocations(
            client, "invocations", rows.read_text().splitlines(), 5, on_result=answers.append
        )
        predicted = client.post(
            "invocations", content=rows.read_bytes(), headers={"Content-Type": "text/csv"}
        )
    assert answers == [True] * 5 and summary.errors == 0
    values = np.array([float(v) for v in re.split(r"[\s,]+", predicted.text.strip())])
    expected = np.array([float(v) for v in (rows.parent / "expected.txt").read_text().split()])
    assert np.allclose(values, expected, rtol=1e-6)


def test_invoke_to_a_closed_port_reports_each_request_as_an_error(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2,3\n")

    done = run_plugin(
        None, "invoke", "churn", "--csv", str(rows), "-n", "2", "--url", "http://127.0.0.1:9"
    )

    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "EE"
    assert "first error: ConnectError" in done.stderr


@pytest.mark.parametrize(
    ("namespace", "service", "port", "path"),
    [
        ("ml", "churn", "http", "/api/v1/namespaces/ml/services/churn:http/proxy/invocations"),
        (
            "ml",
            "churn-main-1a2b",
            "80",
            "/api/v1/namespaces/ml/services/churn-main-1a2b:80/proxy/invocations",
        ),
    ],
)
def test_service_proxy_path(namespace: str, service: str, port: str, path: str) -> None:
    assert proxy_path(namespace, service, port) == path

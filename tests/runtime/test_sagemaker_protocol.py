"""SageMaker's container contract: GET /ping, POST /invocations in CSV, JSON and JSON Lines."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.runtime_kit import (
    RuntimeProcess,
    StartRuntime,
    TrainedModel,
    csv_body,
    train_model,
)


def _scores_from_csv(text: str) -> np.ndarray:
    return np.array([float(line) for line in text.strip().splitlines()], dtype=np.float32)


def test_ping_is_200_once_the_model_is_ready(churn_server: RuntimeProcess) -> None:
    response = httpx.get(f"{churn_server.url}/ping")
    assert response.status_code == 200
    assert response.json() == {"ready": True}


def test_csv_row_gets_the_models_own_prediction(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=csv_body(churn_model.rows[:1]),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv"
    np.testing.assert_allclose(
        _scores_from_csv(response.text), churn_model.expected(churn_model.rows[:1]), atol=1e-6
    )


def test_csv_with_many_rows_answers_one_line_per_row(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=csv_body(churn_model.rows) + b"\r\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(_scores_from_csv(response.text), churn_model.expected(), atol=1e-6)


def test_csv_empty_cells_are_missing_values(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    row = churn_model.rows[0].copy()
    row[3] = np.nan
    cells = [repr(float(v)) for v in row]
    cells[3] = ""
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=",".join(cells).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        _scores_from_csv(response.text), churn_model.expected(row[None, :]), atol=1e-6
    )


@pytest.mark.parametrize("blank", [" ", "\t", "  \t "])
def test_a_blank_csv_cell_is_missing_not_minus_one(
    churn_server: RuntimeProcess, churn_model: TrainedModel, blank: str
) -> None:
    rows = churn_model.rows[:2].copy()
    rows[:, 0] = np.nan
    lines = [",".join([blank, *(repr(float(v)) for v in row[1:])]) for row in rows]
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content="\n".join(lines).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        _scores_from_csv(response.text), churn_model.expected(rows), atol=1e-6
    )
    as_minus_one = np.nan_to_num(rows, nan=-1.0)
    assert not np.allclose(churn_model.expected(rows), churn_model.expected(as_minus_one))


@pytest.mark.parametrize(
    "document",
    [
        "instances",
        "bare-rows",
        "features-objects",
        "single-bare-row",
    ],
)
def test_json_request_shapes_all_predict(
    churn_server: RuntimeProcess, churn_model: TrainedModel, document: str
) -> None:
    rows = churn_model.rows[:3] if document != "single-bare-row" else churn_model.rows[:1]
    as_lists = rows.astype(float).tolist()
    body: object = {
        "instances": {"instances": as_lists},
        "bare-rows": as_lists,
        "features-objects": {"instances": [{"features": r} for r in as_lists]},
        "single-bare-row": as_lists[0],
    }[document]
    response = httpx.post(f"{churn_server.url}/invocations", json=body)
    assert response.status_code == 200, response.text
    scores = [p["score"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)


def test_jsonlines_request_gets_jsonlines_scores(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    rows = churn_model.rows[:4]
    lines = [json.dumps(r) for r in rows.astype(float).tolist()]
    lines[1] = json.dumps({"features": rows[1].astype(float).tolist()})
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content="\n".join(lines).encode(),
        headers={"Content-Type": "application/jsonlines"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jsonlines"
    scores = [json.loads(line)["score"] for line in response.text.splitlines()]
    np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)


@pytest.mark.parametrize(
    ("accept", "expected_type"),
    [
        ("application/json", "application/json"),
        ("application/jsonlines", "application/jsonlines"),
        ("text/csv", "text/csv"),
        ("*/*", "text/csv"),
        ("application/xml;q=0.9, application/json", "application/json"),
    ],
)
def test_accept_header_chooses_the_response_format(
    churn_server: RuntimeProcess, churn_model: TrainedModel, accept: str, expected_type: str
) -> None:
    rows = churn_model.rows[:2]
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=csv_body(rows),
        headers={"Content-Type": "text/csv", "Accept": accept},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == expected_type
    if expected_type == "application/json":
        scores = [p["score"] for p in response.json()["predictions"]]
    elif expected_type == "application/jsonlines":
        scores = [json.loads(line)["score"] for line in response.text.splitlines()]
    else:
        scores = _scores_from_csv(response.text).tolist()
    np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)


def test_json_request_answers_json_by_default(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    response = httpx.post(
        f"{churn_server.url}/invocations",
        json={"instances": churn_model.rows[:1].astype(float).tolist()},
    )
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["predictions"]) == 1


def test_responses_carry_a_request_id_and_echo_the_callers(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    body = csv_body(churn_model.rows[:1])
    generated = {
        httpx.post(
            f"{churn_server.url}/invocations", content=body, headers={"Content-Type": "text/csv"}
        ).headers["x-request-id"]
        for _ in range(3)
    }
    assert len(generated) == 3
    echoed = httpx.post(
        f"{churn_server.url}/invocations",
        content=body,
        headers={"Content-Type": "text/csv", "X-Request-Id": "trace-42"},
    )
    assert echoed.headers["x-request-id"] == "trace-42"
    failed = httpx.post(
        f"{churn_server.url}/invocations", content=b"1,2", headers={"Content-Type": "text/csv"}
    )
    assert failed.json()["request_id"] == failed.headers["x-request-id"]


def test_multiclass_model_answers_one_probability_row_per_input(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    model = train_model(objective="multi:softprob", num_class=3, features=6)
    path = model.save(tmp_path / "multi.json")
    server = start_runtime(MODEL_URI=str(path))
    rows = model.rows[:3]
    csv = httpx.post(
        f"{server.url}/invocations", content=csv_body(rows), headers={"Content-Type": "text/csv"}
    )
    parsed = np.array([[float(v) for v in line.split(",")] for line in csv.text.splitlines()])
    np.testing.assert_allclose(parsed, model.expected(rows), atol=1e-6)
    as_json = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(rows),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
    )
    scores = [p["score"] for p in as_json.json()["predictions"]]
    np.testing.assert_allclose(scores, model.expected(rows), atol=1e-6)


def test_concurrent_requests_each_get_their_own_rows_back(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    """Requests coalesced into one prediction call must not mix up their answers."""

    def ask(start: int) -> tuple[int, np.ndarray]:
        rows = churn_model.rows[start : start + 1 + start % 3]
        response = httpx.post(
            f"{churn_server.url}/invocations",
            content=csv_body(rows),
            headers={"Content-Type": "text/csv"},
        )
        assert response.status_code == 200
        return start, _scores_from_csv(response.text)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for start, scores in pool.map(ask, range(40)):
            rows = churn_model.rows[start : start + 1 + start % 3]
            np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)

"""The entry point the Dockerfile runs, several workers, settings, and the package layers."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import fleetshift_runtime
from fleetshift_devcluster.wait import wait_for
from fleetshift_runtime.settings import RuntimeSettings
from support.runtime_kit import StartRuntime, TrainedModel, csv_body

REPO = Path(__file__).parents[2]
DOCKERFILE = REPO / "runtime" / "Dockerfile"


def test_dockerfile_runs_the_entry_point_these_tests_run() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^CMD \["python", "-m", "fleetshift_runtime"\]', text, re.MULTILINE)
    assert "xgboost-cpu" in text or ".[runtime]" in text
    assert re.search(r"^USER \d+", text, re.MULTILINE), "runs as a numeric non-root user"
    assert "HEALTHCHECK" in text


def test_dockerfile_builds_the_forest_library_it_points_the_runtime_at() -> None:
    text = DOCKERFILE.read_text()
    built = re.search(r"python -m fleetshift_runtime\.models\.compiled (\S+\.so)", text)
    assert built, "the build stage builds the prebuilt forest library"
    assert f"FLEETSHIFT_TREES_LIBRARY={built.group(1)}" in text
    assert built.group(1).startswith("/opt/fleetshift/"), "copied into the final stage"


def test_runtime_folder_is_not_a_package() -> None:
    assert not (REPO / "runtime" / "__init__.py").exists()


def test_runtime_never_imports_the_operator() -> None:
    for path in Path(fleetshift_runtime.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("fleetshift_operator", "kopf")), (path, name)


def test_every_setting_is_documented() -> None:
    for name, field in RuntimeSettings.model_fields.items():
        assert field.description, f"setting {name} has no docstring"


def test_settings_come_from_fleetshift_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSHIFT_MODEL_URI", "s3://models/churn/model.tar.gz")
    monkeypatch.setenv("FLEETSHIFT_PORT", "8081")
    monkeypatch.setenv("FLEETSHIFT_NUM_FEATURES", "20")
    settings = RuntimeSettings()
    assert settings.model_uri == "s3://models/churn/model.tar.gz"
    assert (settings.port, settings.metrics_port, settings.num_features) == (8081, 9090, 20)


def test_metrics_carry_no_blue_or_green_label_that_promotion_would_make_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETSHIFT_FLEET", "green")  # what an older operator set: ignored
    monkeypatch.setenv("FLEETSHIFT_REVISION", "abc")
    labels = RuntimeSettings().metric_labels()
    assert labels == {"namespace": "", "endpoint": "", "variant": "", "revision": "abc"}


def test_docstring_examples_hold() -> None:
    failures = 0
    for module_info in pkgutil.walk_packages(
        fleetshift_runtime.__path__, fleetshift_runtime.__name__ + "."
    ):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        failures += doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed
    assert failures == 0


def test_two_workers_serve_and_aggregate_metrics(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(MODEL_URI=str(path), WORKERS="2", ENDPOINT="churn")

    def both_workers_ready() -> bool:
        return server.metric("fleetshift_loaded_models", endpoint="churn") == 2

    wait_for(both_workers_ready, timeout=60, interval=0.1, message="two workers loaded")
    with httpx.Client() as client:
        for _ in range(20):
            response = client.post(
                f"{server.url}/invocations",
                content=csv_body(churn_model.rows[:3]),
                headers={"Content-Type": "text/csv"},
            )
            assert response.status_code == 200
            scores = np.array([float(v) for v in response.text.split()], dtype=np.float32)
            np.testing.assert_allclose(
                scores, churn_model.expected(churn_model.rows[:3]), atol=1e-6
            )

    def all_counted() -> bool:  # each worker pushes its counts every PUSH_INTERVAL_SECONDS
        return server.metric("fleetshift_invocations_total", endpoint="churn") == 20

    wait_for(all_counted, timeout=10, interval=0.1, message="20 invocations counted")


def test_two_workers_refuse_a_pickle_before_starting(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    import pickle  # noqa: PLC0415

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(churn_model.booster))
    server = start_runtime(MODEL_URI=str(path), WORKERS="2", wait=False)
    assert server.wait_exit() == 1
    assert "refused" in server.log()


def test_cold_start_to_first_prediction_is_quick(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    """Not a benchmark: a generous bound that catches a regression to multi-second starts."""
    import time  # noqa: PLC0415

    path = churn_model.save(tmp_path / "model.ubj")
    started = time.monotonic()
    server = start_runtime(MODEL_URI=str(path))
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(churn_model.rows[:1]),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_keep_alive_requests_do_not_stall_on_nagle_with_two_workers(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, loop: str
) -> None:
    """uvicorn's multi-worker sockets on asyncio lack TCP_NODELAY: ~40 ms per request."""
    import statistics  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(MODEL_URI=str(path), WORKERS="2", EVENT_LOOP=loop)
    # /ping answers once one worker is ready; the connection may land on the other.
    wait_for(
        lambda: server.metric("fleetshift_loaded_models") == 2,
        timeout=60,
        interval=0.1,
        message="both workers loaded",
    )
    body = csv_body(churn_model.rows[:1])
    durations = []
    with httpx.Client() as client:  # one keep-alive connection
        for _ in range(30):
            started = time.perf_counter()
            response = client.post(
                f"{server.url}/invocations", content=body, headers={"Content-Type": "text/csv"}
            )
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200
    assert statistics.median(durations) < 0.02, durations


def test_runtime_readme_lists_every_setting() -> None:
    readme = (REPO / "runtime" / "README.md").read_text()
    for name in RuntimeSettings.model_fields:
        assert f"`FLEETSHIFT_{name.upper()}`" in readme, name

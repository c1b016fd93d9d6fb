"""Fixtures for the runtime tests (the helpers themselves are in ``testkit.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import runtime_kit as testkit
from support.runtime_kit import (
    ArtifactServer,
    RuntimeProcess,
    S3Server,
    StartRuntime,
    TlsFiles,
    TrainedModel,
    runtime_env,
    train_model,
)


@pytest.fixture(scope="session")
def churn_model() -> TrainedModel:
    """The default model: binary classification over 20 features."""
    return train_model()


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[StartRuntime]:
    """Start servers: ``start_runtime(MODEL_URI=..., wait=True)``; all stopped after."""
    started: list[RuntimeProcess] = []

    def start(wait: bool = True, **env: str) -> RuntimeProcess:
        settings = runtime_env(**env)
        settings.setdefault("FLEETSHIFT_CACHE_DIR", str(tmp_path / f"cache-{len(started)}"))
        server = RuntimeProcess(settings, tmp_path / f"runtime-{len(started)}.log")
        started.append(server)
        server.start()
        return server.wait_ready() if wait else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def churn_server(
    tmp_path_factory: pytest.TempPathFactory, churn_model: TrainedModel
) -> Iterator[RuntimeProcess]:
    """One server with the churn model (UBJ) and the operator's labels, per module."""
    folder = tmp_path_factory.mktemp("churn")
    path = churn_model.save(folder / "model.ubj")
    server = RuntimeProcess(
        runtime_env(
            MODEL_URI=str(path),
            CACHE_DIR=str(folder / "cache"),
            NAMESPACE="shop",
            ENDPOINT="churn",
            VARIANT="AllTraffic",
            REVISION="3",
            MAX_REQUEST_BYTES=str(64 * 1024),
        ),
        folder / "runtime.log",
    )
    server.start().wait_ready()
    yield server
    server.stop()


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """A plain-HTTP artifact server on 127.0.0.1."""
    yield from testkit.artifact_server(tmp_path)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1."""
    return testkit.make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_artifact_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[ArtifactServer]:
    """An HTTPS artifact server whose certificate only the test CA trusts."""
    yield from testkit.https_artifact_server(tmp_path, tls_files)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """VersityGW, a real S3-compatible server, on a free loopback port."""
    yield from testkit.s3_server(tmp_path_factory.mktemp("s3"))

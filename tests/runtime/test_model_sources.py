"""Model sources: file://, http(s)://, s3:// (a real S3-compatible server), sha256, retries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import numpy as np

from support.runtime_kit import (
    ArtifactServer,
    S3Server,
    StartRuntime,
    TlsFiles,
    TrainedModel,
    csv_body,
    sagemaker_tarball,
)


def _assert_serves(url: str, model: TrainedModel) -> None:
    response = httpx.post(
        f"{url}/invocations", content=csv_body(model.rows), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    scores = np.array([float(v) for v in response.text.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, model.expected(), atol=1e-6)


def test_file_uri_is_served(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = churn_model.save(tmp_path / "model.json")
    server = start_runtime(MODEL_URI=path.as_uri())
    _assert_serves(server.url, churn_model)


def test_http_tarball_is_downloaded_verified_and_served(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    artifact_server: ArtifactServer,
) -> None:
    tarball = sagemaker_tarball(churn_model, artifact_server.root / "v1" / "model.tar.gz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    server = start_runtime(MODEL_URI=f"{artifact_server.url}/v1/model.tar.gz", MODEL_SHA256=digest)
    _assert_serves(server.url, churn_model)


def test_http_sha256_mismatch_stops_the_server(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    artifact_server: ArtifactServer,
) -> None:
    churn_model.save(artifact_server.root / "model.ubj")
    server = start_runtime(
        MODEL_URI=f"{artifact_server.url}/model.ubj",
        MODEL_SHA256="0" * 64,
        DOWNLOAD_RETRIES="1",
        DOWNLOAD_BACKOFF_SECONDS="0.01",
        wait=False,
    )
    assert server.wait_exit() == 1
    assert "sha256 mismatch" in server.log()
    assert artifact_server.requests.count("/model.ubj") == 2


def test_http_download_is_retried_after_server_errors(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    artifact_server: ArtifactServer,
) -> None:
    churn_model.save(artifact_server.root / "model.ubj")
    artifact_server.fail_first["/model.ubj"] = 3
    server = start_runtime(
        MODEL_URI=f"{artifact_server.url}/model.ubj", DOWNLOAD_BACKOFF_SECONDS="0.05"
    )
    _assert_serves(server.url, churn_model)
    assert artifact_server.requests.count("/model.ubj") == 4
    assert "retrying" in server.log()


def test_http_404_is_not_retried(
    start_runtime: StartRuntime, artifact_server: ArtifactServer
) -> None:
    server = start_runtime(MODEL_URI=f"{artifact_server.url}/missing.ubj", wait=False)
    assert server.wait_exit() == 1
    assert "HTTP 404" in server.log()
    assert artifact_server.requests == ["/missing.ubj"]


def test_https_with_a_private_ca_bundle(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    https_artifact_server: ArtifactServer,
    tls_files: TlsFiles,
) -> None:
    churn_model.save(https_artifact_server.root / "model.json")
    server = start_runtime(
        MODEL_URI=f"{https_artifact_server.url}/model.json", CA_BUNDLE=str(tls_files.ca_pem)
    )
    _assert_serves(server.url, churn_model)


def test_https_with_an_untrusted_certificate_fails(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    https_artifact_server: ArtifactServer,
) -> None:
    churn_model.save(https_artifact_server.root / "model.json")
    server = start_runtime(
        MODEL_URI=f"{https_artifact_server.url}/model.json",
        DOWNLOAD_RETRIES="0",
        wait=False,
    )
    assert server.wait_exit() == 1
    assert "CERTIFICATE_VERIFY_FAILED" in server.log()


def test_s3_tarball_from_a_real_s3_compatible_server(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    tarball = sagemaker_tarball(churn_model, tmp_path / "model.tar.gz")
    uri = s3_server.put("models", "churn/v1/model.tar.gz", tarball.read_bytes())
    server = start_runtime(MODEL_URI=uri, **s3_server.env())
    _assert_serves(server.url, churn_model)


def test_s3_key_with_spaces_and_unicode_is_signed_correctly(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    raw = churn_model.save(tmp_path / "model.ubj").read_bytes()
    uri = s3_server.put("models", "team a/modèle v2+final.ubj", raw)
    server = start_runtime(MODEL_URI=uri, **s3_server.env())
    _assert_serves(server.url, churn_model)


def test_s3_with_wrong_credentials_fails_without_retrying(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    raw = churn_model.save(tmp_path / "model.ubj").read_bytes()
    uri = s3_server.put("models", "churn/secret.ubj", raw)
    env = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    server = start_runtime(MODEL_URI=uri, wait=False, **env)
    assert server.wait_exit() == 1
    assert "HTTP 403" in server.log()
    assert "SignatureDoesNotMatch" in server.log()


def test_s3_missing_object_is_reported(start_runtime: StartRuntime, s3_server: S3Server) -> None:
    s3_server.put("models", "exists.txt", b"x")
    server = start_runtime(MODEL_URI="s3://models/not/there.ubj", wait=False, **s3_server.env())
    assert server.wait_exit() == 1
    assert "does not exist (HTTP 404)" in server.log()

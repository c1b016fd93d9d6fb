"""Helpers for the runtime tests: models, server processes, artifact and S3 servers.

- Models are trained here, deterministically, into temp folders (no binaries in git).
- :class:`RuntimeProcess` runs ``python -m fleetshift_runtime`` (the Dockerfile's entry
  point) on free loopback ports and polls it.
- :func:`versitygw_binary` finds or builds VersityGW, an Apache-2.0 S3 gateway written
  in Go: its ``posix`` backend serves a folder over the real S3 protocol (SigV4, buckets,
  objects), so the runtime's own signer is checked against an independent server.
- :class:`ArtifactServer` is a small HTTP(S) file server whose paths can be told to fail
  or to answer slowly, for retries and concurrent loads.
"""

from __future__ import annotations

import datetime
import http.server
import io
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import xgboost
from prometheus_client.parser import text_string_to_metric_families

from fleetshift_devcluster.wait import wait_for
from fleetshift_runtime.models.native import NativeBooster

FEATURES = 20
"""Width of the default test model (the seeds' churn model has about 20)."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- models ---------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A booster plus sample rows and its own predictions for them."""

    booster: xgboost.Booster
    rows: npt.NDArray[np.float32]
    features: int

    def expected(self, rows: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
        """The booster's own predictions (the ground truth for the server's answers)."""
        data = self.rows if rows is None else rows
        return np.asarray(self.booster.inplace_predict(data), dtype=np.float32)

    def native(self) -> NativeBooster:
        """The same model held by ``libxgboost`` directly, as the runtime loads it."""
        return NativeBooster.load(bytes(self.booster.save_raw("ubj")), threads=1)

    def save(self, path: Path) -> Path:
        """Save in the format named by the suffix (.json, .ubj, .deprecated = legacy).

        ``xgboost-model`` is the legacy binary format, as SageMaker's XGBoost containers
        write it, where the installed XGBoost can write it (3.0 and older); UBJ otherwise.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".deprecated" or path.name == "xgboost-model":
            staging = path.with_name(path.name + ".deprecated")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "deprecated binary format"
                self.booster.save_model(str(staging))
            if path.suffix == ".deprecated" and staging.read_bytes()[:4] != b"binf":
                staging.unlink()  # XGBoost 3.1 and later write UBJ instead
                raise RuntimeError(f"XGBoost {xgboost.__version__} cannot write legacy binary")
            staging.replace(path)
        else:
            self.booster.save_model(str(path))
        return path


def train_model(
    features: int = FEATURES,
    trees: int = 20,
    depth: int = 4,
    seed: int = 7,
    objective: str = "binary:logistic",
    num_class: int = 0,
) -> TrainedModel:
    """A small deterministic model on synthetic churn-like data."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(400, features)).astype(np.float32)
    if objective.startswith("multi"):
        labels = (np.abs(rows[:, 0] * 2).astype(int)) % num_class
    elif objective.startswith(("binary", "reg:logistic")):
        labels = (rows[:, 0] + 0.5 * rows[:, 1] > 0).astype(int)
    else:
        labels = rows[:, 0] * 3 + rows[:, 1]
    params: dict[str, Any] = {
        "max_depth": depth,
        "objective": objective,
        "nthread": 1,
        "seed": seed,
    }
    if num_class:
        params["num_class"] = num_class
    booster = xgboost.train(params, xgboost.DMatrix(rows, label=labels), trees)
    return TrainedModel(booster, rows[:50].copy(), features)


def flipped_model(model: TrainedModel) -> TrainedModel:
    """A model of the same features that answers 200 with the opposite class: trained on
    the churn rule's complement."""
    rows = np.random.default_rng(3).normal(size=(400, model.features)).astype(np.float32)
    labels = (rows[:, 0] + 0.5 * rows[:, 1] <= 0).astype(int)
    params = {"max_depth": 3, "objective": "binary:logistic", "nthread": 1, "seed": 3}
    booster = xgboost.train(params, xgboost.DMatrix(rows, label=labels), 10)
    return TrainedModel(booster, model.rows, model.features)


def make_tarball(
    path: Path,
    members: dict[str, bytes],
    *,
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> Path:
    """Write a gzip'd tarball from name -> content (``extra`` may add links or devices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        if extra is not None:
            extra(tar)
    return path


def sagemaker_tarball(model: TrainedModel, path: Path) -> Path:
    """SageMaker's ``model.tar.gz`` layout: one ``xgboost-model`` file (legacy binary)."""
    raw = model.save(path.parent / f".{path.name}.src" / "xgboost-model").read_bytes()
    return make_tarball(path, {"xgboost-model": raw})


# --- the server process -----------------------------------------------------------------


@dataclass
class RuntimeProcess:
    """``python -m fleetshift_runtime`` on free loopback ports."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the inference API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> RuntimeProcess:
        """Spawn the server (it returns at once; use :meth:`wait_ready`)."""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSHIFT_")},
            "FLEETSHIFT_HOST": "127.0.0.1",
            "FLEETSHIFT_PORT": str(self.port),
            "FLEETSHIFT_METRICS_PORT": str(self.metrics_port),
            "FLEETSHIFT_LOG_LEVEL": "info",
            **self.env,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fleetshift_runtime"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )
        return self

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> RuntimeProcess:
        """Poll ``/ping`` until 200; fail early with the log if the process exits."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/ping", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(ready, timeout=timeout, interval=0.05, message="runtime /ping 200")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- server log ---\n{self.log()}") from None
        return self

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the process to stop by itself; return its exit code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Terminate the server (and its workers) and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Current samples: (name, sorted labels) -> value."""
        text = httpx.get(self.metrics_url, timeout=5).text
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for (sample_name, sample_labels), value in self.metrics().items():
            if sample_name == name and set(labels.items()) <= set(sample_labels):
                total += value
        return total


StartRuntime = Callable[..., RuntimeProcess]
"""``start_runtime(wait=True, **settings)``: the fixture that starts servers."""


def runtime_env(**env: str) -> dict[str, str]:
    """Prefix setting names with ``FLEETSHIFT_`` (``AWS_*`` pass through).

    >>> runtime_env(MODEL_URI="/m", AWS_REGION="eu-west-1")
    {'FLEETSHIFT_MODEL_URI': '/m', 'AWS_REGION': 'eu-west-1'}
    """
    return {
        k if k.startswith(("AWS_", "FLEETSHIFT_")) else f"FLEETSHIFT_{k}": v for k, v in env.items()
    }


def csv_body(rows: npt.NDArray[np.float32]) -> bytes:
    """One CSV line per row, no header (float32 values round-trip exactly)."""
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


# --- an HTTP(S) artifact server ---------------------------------------------------------


@dataclass
class ArtifactServer:
    """Serves files from ``root``; paths may be set to fail N times or to answer slowly."""

    root: Path
    url: str
    fail_first: dict[str, int] = field(default_factory=dict)
    delay_seconds: dict[str, float] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def _artifact_handler(state: ArtifactServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            state.requests.append(path)
            if state.fail_first.get(path, 0) > 0:
                state.fail_first[path] -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            delay = state.delay_seconds.get(path, 0.0)
            if delay:
                time.sleep(delay)
            target = (state.root / path.lstrip("/")).resolve()
            if not target.is_relative_to(state.root.resolve()) or not target.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content = target.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def _serve(
    state: ArtifactServer, server: http.server.ThreadingHTTPServer
) -> Iterator[ArtifactServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def artifact_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """A plain-HTTP artifact server on 127.0.0.1."""
    root = tmp_path / "http-root"
    root.mkdir()
    state = ArtifactServer(root, "")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _artifact_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield from _serve(state, server)


@dataclass
class TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate a throwaway CA and a server certificate with cryptography."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetshift-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    files.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def https_artifact_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[ArtifactServer]:
    """An HTTPS artifact server whose certificate only the test CA trusts."""
    root = tmp_path / "https-root"
    root.mkdir()
    state = ArtifactServer(root, "")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _artifact_handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert_pem, tls_files.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    yield from _serve(state, server)


# --- S3 ---------------------------------------------------------------------------------


@dataclass
class S3Server:
    """A running S3-compatible gateway and a boto3 client for it."""

    endpoint: str
    access_key: str
    secret_key: str
    client: Any
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What a runtime pod gets from its Secret and settings."""
        return {
            "FLEETSHIFT_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def put(self, bucket: str, key: str, content: bytes) -> str:
        """Upload an object (creating the bucket) and return its s3:// URI."""
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            self.client.create_bucket(Bucket=bucket)
        self.client.put_object(Bucket=bucket, Key=key, Body=content)
        return f"s3://{bucket}/{key}"


def s3_server(folder: Path) -> Iterator[S3Server]:
    """VersityGW (a real S3 gateway) on a free loopback port, backed by ``folder``."""
    import boto3  # type: ignore[import-untyped]  # noqa: PLC0415
    from botocore.config import Config  # type: ignore[import-untyped]  # noqa: PLC0415

    binary = versitygw_binary()
    (folder / "data").mkdir()
    port = free_port()
    access, secret = "fleetshift-test", "fleetshift-test-secret-key"
    (folder / "meta").mkdir()
    log = (folder / "versitygw.log").open("wb")
    process = subprocess.Popen(
        [
            str(binary),
            "--access",
            access,
            "--secret",
            secret,
            "--port",
            f"127.0.0.1:{port}",
            "posix",
            "--sidecar",
            str(folder / "meta"),
            str(folder / "data"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        assert process.poll() is None, (folder / "versitygw.log").read_text()
        try:
            httpx.get(endpoint, timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_for(listening, timeout=30, interval=0.1, message="versitygw listening")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        yield S3Server(endpoint, access, secret, client)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


VERSITYGW_VERSION = "v1.8.0"
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"


def versitygw_binary() -> Path:
    """A ``versitygw`` executable: ``$FLEETSHIFT_VERSITYGW``, the cache
    ``~/.cache/fleetshift/versitygw-<version>/`` (``$FLEETSHIFT_CACHE`` moves the root),
    ``PATH``; else built into the cache with ``go install`` (first time only; ``make
    runtime-test-tools`` does the same ahead of time)."""
    given = os.environ.get("FLEETSHIFT_VERSITYGW")
    if given:
        return Path(given)
    root = Path(os.environ.get("FLEETSHIFT_CACHE", Path.home() / ".cache" / "fleetshift"))
    cached = root / f"versitygw-{VERSITYGW_VERSION}" / "versitygw"
    if cached.is_file():
        return cached
    on_path = shutil.which("versitygw")
    if on_path:
        return Path(on_path)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("versitygw is missing and there is no Go toolchain to build it")
    cached.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"[s3] go install {VERSITYGW_MODULE}@{VERSITYGW_VERSION} (first time only)", file=sys.stderr
    )
    subprocess.run(
        [go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
        check=True,
        env={**os.environ, "GOBIN": str(cached.parent), "CGO_ENABLED": "0"},
    )
    return cached

"""Fleetshift's runtime vs. MLServer: same model, same machine, same run, same load generator.

- Model: deterministic XGBoost binary classifier, 20 features, 200 trees, depth 6.
- Servers: ``python -m fleetshift_runtime`` (1 and 2 workers; and 1 worker in the
  image's configuration, where a prebuilt forest library named by
  ``FLEETSHIFT_TREES_LIBRARY`` replaces the per-model compiler build) and MLServer with
  ``mlserver-xgboost`` in its own venv (``MLSERVER_PARALLEL_WORKERS=0``, debug off, the
  best configuration), created on first run (``uvloop<0.22``: MLServer 1.7 crashes on
  newer ones).
- Load: ``wrk`` with a Lua script for POST bodies, pinned with ``taskset`` to the core
  the server does not use. Every request loop is bounded (``-d`` seconds); everything
  is on 127.0.0.1.
- Requests: Open Inference Protocol JSON for both servers (the same bytes), plus the
  SageMaker CSV route for Fleetshift; 1 row and 100 rows; concurrency 1, 8 and 32.
- Fairness on a shared machine: servers are started first (each cold start measured
  alone) and stay up; an idle server costs nothing. Each configuration then runs on
  every server back to back, ``--repeat`` rounds; medians are reported with the req/s
  range, the 1-minute load average during the rounds, and the server's own CPU time
  per request from ``/proc`` (independent of wrk's and the background's share).
- Sections (``--sections``): ``compare`` (vs MLServer, 1 core each), ``scaling`` (1
  worker on 1 core vs 2 workers on 2 cores, wrk unpinned), ``nodelay`` (stock ``uvicorn
  --workers 2`` on the asyncio loop vs the runtime, c=1), ``coldstart`` and ``probes``
  (``/ping`` latency while wrk keeps 8 maximum-size bodies, 6 MiB, in flight: the
  probes a kubelet sends must keep answering), ``grpc`` (the Open Inference Protocol
  over gRPC against REST on the same server, 1 core, with one Python load generator for
  both: wrk speaks no gRPC, and one generator for both keeps the ratio fair).

Prints a table (req/s, p50, p99), RSS, time to first prediction, and on its last line the
ratios vs. MLServer. ``--save`` also writes JSON under ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import xgboost

REPO = Path(__file__).resolve().parents[2]
MLSERVER_VENV = Path(os.environ.get("MLSERVER_VENV", "/tmp/fleetshift-bench-mlserver"))
FEATURES, TREES, DEPTH = 20, 200, 6


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def train(folder: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(42)
    rows = rng.normal(size=(5000, FEATURES)).astype(np.float32)
    labels = (rows[:, 0] + 0.5 * rows[:, 1] - 0.25 * rows[:, 2] > 0).astype(int)
    params = {"max_depth": DEPTH, "objective": "binary:logistic", "nthread": 1, "seed": 42}
    booster = xgboost.train(params, xgboost.DMatrix(rows, label=labels), TREES)
    path = folder / "model.json"
    booster.save_model(str(path))
    return path, rows[:100]


def ensure_mlserver_venv() -> Path:
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if binary.exists():
        return binary
    log(f"[bench] creating {MLSERVER_VENV} with mlserver, mlserver-xgboost, uvloop<0.22")
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    subprocess.run(
        [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", "mlserver", "mlserver-xgboost",
         "uvloop<0.22"],
        check=True,
    )  # fmt: skip
    return binary


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    first_prediction_seconds: float

    def rss_mb(self) -> float:
        root = psutil.Process(self.process.pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return total / 2**20

    def cpu_seconds(self) -> float:
        root = psutil.Process(self.process.pid)
        total = 0.0
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def worker_rss_mb(self) -> list[float]:
        root = psutil.Process(self.process.pid)
        procs = [root, *root.children(recursive=True)]
        return [p.memory_info().rss / 2**20 for p in procs]


def oip_body(rows: np.ndarray, input_name: str) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.reshape(-1).astype(float).round(6).tolist(),
                }
            ]
        }
    ).encode()


def csv_body(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows).encode()


def wait_first_prediction(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    started: float,
    process: subprocess.Popen[bytes],
    timeout: float = 120,
) -> float:
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if client.post(url, content=body, headers=headers).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"no prediction from {url} within {timeout}s")


@contextmanager
def fleetshift(
    model: Path,
    rows: np.ndarray,
    workers: int,
    cores: str,
    *,
    name: str = "",
    extra_env: dict[str, str] | None = None,
    stock_uvicorn: bool = False,
) -> Iterator[Server]:
    """Start the runtime; ``stock_uvicorn`` runs the same app with plain ``uvicorn
    --workers`` instead (no TCP_NODELAY fix), to measure what the fix is worth."""
    port, metrics_port = free_port(), free_port()
    cache_dir = tempfile.mkdtemp(prefix="fleetshift-bench-cache-")
    env = {
        **os.environ,
        "FLEETSHIFT_MODEL_URI": str(model),
        "FLEETSHIFT_HOST": "127.0.0.1",
        "FLEETSHIFT_PORT": str(port),
        "FLEETSHIFT_METRICS_PORT": str(metrics_port),
        "FLEETSHIFT_WORKERS": str(workers),
        "FLEETSHIFT_LOG_LEVEL": "warning",
        "FLEETSHIFT_CACHE_DIR": cache_dir,
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "fleetshift_runtime"]
    if stock_uvicorn:
        loop = env.get("FLEETSHIFT_EVENT_LOOP", "uvloop")
        command = [sys.executable, "-m", "uvicorn", "fleetshift_runtime.app:create_app",
                   "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers",
                   str(workers), "--loop", loop, "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        ["taskset", "-c", cores, *command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        first = wait_first_prediction(
            f"http://127.0.0.1:{port}/invocations", csv_body(rows[:1]),
            {"Content-Type": "text/csv"}, started=started, process=process,
        )  # fmt: skip
        compiled = env.get("FLEETSHIFT_COMPILED_PREDICT", "true") == "true"
        if compiled and not stock_uvicorn and (shutil.which("cc") or
                                               env.get("FLEETSHIFT_TREES_LIBRARY")):  # fmt: skip
            # The compiled trees come in the background after the first prediction;
            # measure the steady state, not the build.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/model").json()
                if str(meta.get("parameters", {}).get("predictor")).startswith("compiled"):
                    time.sleep(1.0)  # the other workers' own switch
                    break
                time.sleep(0.1)
            else:
                log(f"  [bench] {name}: compiled trees not in use after 60 s")
        if stock_uvicorn:
            time.sleep(3)  # no metrics port to see the workers; give them time
        elif workers > 1:  # every worker must be up before measuring
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                match = re.search(r"^fleetshift_loaded_models\{[^}]*\} (\S+)", text, re.M)
                if match and float(match.group(1)) >= workers:
                    break
                time.sleep(0.05)
        yield Server(name or f"fleetshift-{workers}w", process, port, first)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@contextmanager
def mlserver(model: Path, rows: np.ndarray, cores: str) -> Iterator[Server]:
    binary = ensure_mlserver_venv()
    folder = Path(tempfile.mkdtemp(prefix="fleetshift-bench-mlserver-"))
    model_dir = folder / "model"
    model_dir.mkdir()
    shutil.copy(model, model_dir / "model.json")
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": port,
        "grpc_port": grpc_port, "metrics_port": metrics_port,
    }))  # fmt: skip
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "model", "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "v1"},
    }))  # fmt: skip
    env = {**os.environ, "MLSERVER_PARALLEL_WORKERS": "0", "MLSERVER_DEBUG": "false"}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    process = subprocess.Popen(
        ["taskset", "-c", cores, str(binary), "start", str(folder)],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        first = wait_first_prediction(
            f"http://127.0.0.1:{port}/v2/models/model/infer", oip_body(rows[:1], "predict"),
            {"Content-Type": "application/json"}, started=started, process=process,
        )  # fmt: skip
        yield Server("mlserver", process, port, first)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


RAW_PREDICT = """
import sys, time, numpy as np, xgboost
booster = xgboost.Booster(model_file=sys.argv[1])
booster.set_param({"nthread": 1})
row = np.load(sys.argv[2])[:1].copy()
for _ in range(200):
    booster.inplace_predict(row)
calls, started = 0, time.perf_counter()
while time.perf_counter() - started < float(sys.argv[3]):
    for _ in range(100):
        booster.inplace_predict(row)
    calls += 100
print(calls / (time.perf_counter() - started))
"""


def raw_inplace_predict_rate(model: Path, rows: np.ndarray, core: str, seconds: float = 3) -> float:
    """Calls per second of ``Booster.inplace_predict`` on one row, in-process, pinned."""
    sample = model.with_suffix(".rows.npy")
    np.save(sample, rows)
    out = subprocess.run(
        ["taskset", "-c", core, sys.executable, "-c", RAW_PREDICT, str(model), str(sample),
         str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


JSON_TYPE = "application/json"

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body_path}", "rb")
wrk.body = f:read("*a")
f:close()
"""


LOAD_GENERATOR = r"""
import asyncio, json, re, sys, time
kind, port, body_path, concurrency, seconds = sys.argv[1:6]
body = open(body_path, "rb").read()
concurrency, seconds = int(concurrency), float(seconds)
latencies, errors = [], 0
content_type, extra = b"application/json", b""
if kind == "rest-binary":
    length, _, body = body.partition(b"\0")
    content_type = b"application/octet-stream"
    extra = b"Inference-Header-Content-Length: " + length + b"\r\n"

async def grpc_worker(call, stop):
    global errors
    while (started := time.perf_counter()) < stop:
        try:
            await call(body)
        except Exception:
            errors += 1
            continue
        latencies.append(time.perf_counter() - started)

async def rest_worker(stop):
    global errors
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    request = (b"POST /v2/models/model/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               + content_type + b"\r\n" + extra + b"Content-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
    while (started := time.perf_counter()) < stop:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            errors += 1
            continue
        latencies.append(time.perf_counter() - started)
    writer.close()

async def run(stop):
    if kind == "grpc":
        import grpc
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            await asyncio.gather(*(grpc_worker(call, stop) for _ in range(concurrency)))
    else:
        await asyncio.gather(*(rest_worker(stop) for _ in range(concurrency)))

asyncio.run(run(time.perf_counter() + 1.0))  # warm-up
latencies.clear()
began = time.perf_counter()
asyncio.run(run(began + seconds))
wall = time.perf_counter() - began
ms = sorted(1e3 * x for x in latencies) or [float("nan")]
print(json.dumps({"rps": len(latencies) / wall, "p50": ms[len(ms) // 2],
                  "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "errors": errors}))
"""
"""The ``grpc`` section's load generator (``python -c``): ``kind`` is ``grpc`` (the body is
a serialized ``ModelInferRequest``), ``rest-json`` or ``rest-binary`` (the body is the JSON
header's length, a NUL, then the body); ``concurrency`` calls in flight (gRPC: one HTTP/2
connection; REST: one keep-alive connection each), warmed up for 1 s, then measured."""


def grpc_infer_message(rows: np.ndarray) -> bytes:
    """A serialized ``ModelInferRequest`` for ``rows``, FP32 in ``raw_input_contents``
    (what ``tritonclient.grpc`` sends), from the runtime's own message module."""
    from fleetshift_runtime.oip_grpc import grpc_predict_v2_pb2 as pb  # noqa: PLC0415

    request = pb.ModelInferRequest(model_name="model")
    request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    message: bytes = request.SerializeToString()
    return message


def oip_binary_body(rows: np.ndarray) -> bytes:
    """The REST binary tensor body, prefixed as ``LOAD_GENERATOR`` reads it."""
    header = json.dumps({"inputs": [{
        "name": "input-0", "shape": list(rows.shape), "datatype": "FP32",
        "parameters": {"binary_data_size": rows.size * 4}}]}).encode()  # fmt: skip
    raw = np.ascontiguousarray(rows, dtype=np.float32).tobytes()
    return str(len(header)).encode() + b"\0" + header + raw


def run_generator(
    kind: str, port: int, body: bytes, *, concurrency: int, seconds: int, core: str,
    workdir: Path, server: Server,
) -> Run:  # fmt: skip
    """One ``LOAD_GENERATOR`` run, as :func:`run_wrk` reports one."""
    body_path = workdir / f"{kind}-{abs(hash(body))}.bin"
    body_path.write_bytes(body)
    command = ["taskset", "-c", core, sys.executable, "-c", LOAD_GENERATOR, kind, str(port),
               str(body_path), str(concurrency), str(seconds)]  # fmt: skip
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - wall_before
    # The server's and the generator's CPU over the warm-up and the measured seconds.
    cores = (server.cpu_seconds() - cpu_before) / wall
    client_cores = (
        client_after.ru_utime + client_after.ru_stime
        - client_before.ru_utime - client_before.ru_stime
    ) / wall  # fmt: skip
    found = json.loads(out.strip().splitlines()[-1])
    return (found["rps"], found["p50"], found["p99"], found["errors"], cores,
            os.getloadavg()[0], client_cores)  # fmt: skip


Run = tuple[float, float, float, int, float, float, float]
"""One wrk run: req/s, p50 ms, p99 ms, errors, server cores, load1, wrk cores."""


@dataclass
class Result:
    server: str
    protocol: str
    rows: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cores: float
    """Server CPU seconds per wall second during the run (all its processes)."""
    rps_min: float = 0.0
    rps_max: float = 0.0
    load1: float = 0.0
    """Mean 1-minute load average over the rounds (``/proc/loadavg``)."""
    rounds: int = 1
    wrk_cores: float = 0.0
    """wrk's own CPU seconds per wall second (``getrusage`` of the finished child)."""

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU time per request, from ``/proc``: independent of wrk's share."""
        return 1e3 * self.server_cores / max(self.rps, 1e-9)

    @property
    def wrk_ms_per_request(self) -> float:
        """The load generator's CPU time per request."""
        return 1e3 * self.wrk_cores / max(self.rps, 1e-9)


def _ms(text: str) -> float:
    """wrk's latency text (``812.00us``, ``1.20ms``, ``1.02s``, ``1.50m``) in ms; NaN if odd."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        log(f"  [bench] unexpected wrk latency {text!r}")
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(
    url: str,
    body: bytes,
    content_type: str,
    *,
    concurrency: int,
    seconds: int,
    core: str | None,
    workdir: Path,
    server: Server,
) -> Run:
    """req/s, p50 ms, p99 ms, errors, server cores, the 1-minute load average and wrk's
    cores; ``core=None`` leaves wrk unpinned."""
    body_path = workdir / f"body-{abs(hash(body))}.bin"
    body_path.write_bytes(body)
    script = workdir / f"post-{abs(hash((body, content_type)))}.lua"
    script.write_text(LUA.format(content_type=content_type, body_path=body_path))
    pin = ["taskset", "-c", core] if core is not None else []
    wrk = ["wrk", "-t1", f"-c{concurrency}", "--timeout", "5s", "--latency", "-s", str(script),
           url]  # fmt: skip
    command = [*pin, *wrk[:3], f"-d{seconds}s", *wrk[3:]]
    subprocess.run([*pin, *wrk[:3], "-d1s", *wrk[3:]], capture_output=True, check=True)  # warm
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - wall_before
    cores = (server.cpu_seconds() - cpu_before) / wall
    wrk_cores = (
        wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    ) / wall
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the "Latency Distribution" lines; "+/- Stdev" columns also end in "%", so anchor
    p50_text = re.search(r"^\s*50%\s+(\S+)\s*$", out, re.MULTILINE)
    p99_text = re.search(r"^\s*99%\s+(\S+)\s*$", out, re.MULTILINE)
    if p50_text is None or p99_text is None:
        log(f"  [bench] wrk printed no latency distribution:\n{out}")
    p50 = _ms(p50_text.group(1)) if p50_text else float("nan")
    p99 = _ms(p99_text.group(1)) if p99_text else float("nan")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return rps, p50, p99, errors, cores, os.getloadavg()[0], wrk_cores


def median_result(
    server: str, protocol: str, rows: int, concurrency: int,
    runs: list[Run],
) -> Result:  # fmt: skip
    """The median of every measure over the rounds, with the req/s range."""
    rps = [r[0] for r in runs]
    return Result(
        server, protocol, rows, concurrency,
        rps=float(np.median(rps)),
        p50_ms=float(np.median([r[1] for r in runs])),
        p99_ms=float(np.median([r[2] for r in runs])),
        errors=sum(r[3] for r in runs),
        server_cores=float(np.median([r[4] for r in runs])),
        rps_min=min(rps), rps_max=max(rps),
        load1=float(np.mean([r[5] for r in runs])),
        rounds=len(runs),
        wrk_cores=float(np.median([r[6] for r in runs])),
    )  # fmt: skip


@dataclass
class Target:
    server: Server
    protocol: str
    path: str
    make_body: Callable[[np.ndarray], bytes]
    content_type: str
    wrk_core: str | None


def oip_target(server: Server, input_name: str, wrk_core: str | None) -> Target:
    return Target(server, "oip", "/v2/models/model/infer", lambda r: oip_body(r, input_name),
                  JSON_TYPE, wrk_core)  # fmt: skip


def csv_target(server: Server, wrk_core: str | None) -> Target:
    return Target(server, "csv", "/invocations", csv_body, "text/csv", wrk_core)


def measure(
    targets: list[Target], rows: np.ndarray, row_counts: list[int], levels: list[int],
    *, args: argparse.Namespace, workdir: Path,
) -> list[Result]:  # fmt: skip
    """Every configuration on every target back to back, ``--repeat`` rounds; medians."""
    results: list[Result] = []
    for count in row_counts:
        for concurrency in levels:
            runs: dict[int, list[Run]] = {}
            for _ in range(args.repeat):
                for index, target in enumerate(targets):
                    runs.setdefault(index, []).append(run_wrk(
                        f"http://127.0.0.1:{target.server.port}{target.path}",
                        target.make_body(rows[:count]), target.content_type,
                        concurrency=concurrency, seconds=args.seconds, core=target.wrk_core,
                        workdir=workdir, server=target.server,
                    ))  # fmt: skip
            for index, target in enumerate(targets):
                r = median_result(target.server.name, target.protocol, count, concurrency,
                                  runs[index])  # fmt: skip
                results.append(r)
                log(f"  {r.server:16} {r.protocol:4} rows={count:<3} c={concurrency:<2} "
                    f"{r.rps:7.0f} req/s ({r.rps_min:.0f}-{r.rps_max:.0f})  p50 {r.p50_ms:6.2f}"
                    f"  p99 {r.p99_ms:7.2f} ms  cores {r.server_cores:.2f}  "
                    f"{r.cpu_ms_per_request:.3f} cpu-ms/req  wrk {r.wrk_cores:.2f} cores  "
                    f"load {r.load1:.2f}")  # fmt: skip
    return results


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(f"{'server':20} {'proto':5} {'rows':>4} {'conc':>4} {'req/s':>7} {'range':>11} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'err':>4} {'cores':>5} {'cpu-ms/req':>10} "
          f"{'load1':>5} {'wrk cores':>9}")  # fmt: skip
    for r in results:
        print(f"{r.server:20} {r.protocol:5} {r.rows:4} {r.concurrency:4} {r.rps:7.0f} "
              f"{f'{r.rps_min:.0f}-{r.rps_max:.0f}':>11} {r.p50_ms:7.2f} {r.p99_ms:7.2f} "
              f"{r.errors:4} {r.server_cores:5.2f} {r.cpu_ms_per_request:10.3f} "
              f"{r.load1:5.2f} {r.wrk_cores:9.2f}")  # fmt: skip


MAX_BODY_BYTES = 6 * 1024 * 1024
"""FLEETSHIFT_MAX_REQUEST_BYTES's default (SageMaker's limit)."""


def max_size_bodies(rows: np.ndarray) -> dict[str, tuple[str, str, bytes]]:
    """Bodies just under the size limit, by format: name -> (path, content type, body)."""
    json_row = json.dumps([round(float(v), 6) for v in rows[0]])
    csv_line = csv_body(rows[:1]) + b"\n"
    jsonl_line = json_row.encode() + b"\n"
    count = MAX_BODY_BYTES // (len(json_row) + 1) - 20
    data = "[" + ",".join([json_row] * count) + "]"
    tensor = {"name": "input-0", "shape": [count, FEATURES], "datatype": "FP32", "data": []}
    oip = json.dumps({"inputs": [tensor]}).replace("[]", data, 1)
    return {
        "jsonlines": ("/invocations", "application/jsonlines",
                      jsonl_line * (MAX_BODY_BYTES // len(jsonl_line))),
        "csv": ("/invocations", "text/csv", csv_line * (MAX_BODY_BYTES // len(csv_line))),
        "json": ("/invocations", JSON_TYPE, ('{"instances": ' + data + "}").encode()),
        "oip-json": ("/v2/models/model/infer", JSON_TYPE, oip.encode()),
    }  # fmt: skip


def probe_under_load(
    server: Server, path: str, content_type: str, body: bytes, *, seconds: int, workdir: Path
) -> tuple[np.ndarray, Run]:
    """``/ping`` latencies (ms), one probe every ~20 ms, while wrk (pinned to core 1)
    keeps 8 copies of ``body`` in flight; and wrk's run."""
    import http.client  # noqa: PLC0415
    import threading  # noqa: PLC0415

    outcome: list[Run] = []
    url = f"http://127.0.0.1:{server.port}{path}"
    load = threading.Thread(target=lambda: outcome.append(run_wrk(
        url, body, content_type, concurrency=8, seconds=seconds, core="1", workdir=workdir,
        server=server)))  # fmt: skip
    load.start()
    time.sleep(1.0)  # let the 8 bodies get in flight
    latencies = []
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    while load.is_alive():
        started = time.perf_counter()
        connection.request("GET", "/ping")
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1e3)
        time.sleep(0.02)
    connection.close()
    load.join()
    return np.array(latencies), outcome[0]


def find(results: list[Result], server: str, protocol: str, rows: int, conc: int) -> Result | None:
    for r in results:
        if (r.server, r.protocol, r.rows, r.concurrency) == (server, protocol, rows, conc):
            return r
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="measured seconds per run")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument(
        "--sections", default="compare,scaling,nodelay,coldstart,probes,grpc",
        help="compare: vs MLServer, 1 core each; scaling: 1 worker on 1 core vs 2 workers "
             "on 2 cores; nodelay: stock uvicorn --workers 2 vs the runtime at c=1; "
             "coldstart: 5 starts of 1 worker, with and without the compiled trees; "
             "probes: /ping p50/p99 while wrk keeps 8 max-size bodies in flight; "
             "grpc: OIP over gRPC vs REST (JSON and binary) on one server, at --rows, c=1 and 8",
    )  # fmt: skip
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--before",
        default="",
        help="a runtime source folder (a checkout's runtime/) to measure in the same run as "
        "fleetshift-1w-before, beside the current code (compare and probes sections)",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds per configuration; medians are reported"
    )
    parser.add_argument("--save", action="store_true", help="write bench/results/*.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        log("needs wrk (apt-get install wrk) and taskset (util-linux)")
        return 2
    sections = set(args.sections.split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="fleetshift-bench-"))
    model, rows = train(workdir)
    started_load = Path("/proc/loadavg").read_text().strip()
    log(f"[bench] model: {FEATURES} features, {TREES} trees, depth {DEPTH}; "
        f"/proc/loadavg before: {started_load}")  # fmt: skip
    all_results: list[Result] = []
    servers: dict[str, dict[str, float]] = {}
    summary: list[str] = []

    def record(server: Server) -> None:
        servers[server.name] = {
            "rss_mb": server.rss_mb(),
            "max_process_rss_mb": max(server.worker_rss_mb()),
            "first_prediction_s": server.first_prediction_seconds,
        }

    raw_rate = raw_inplace_predict_rate(model, rows, core="0")
    forest_library: Path | None = None
    if shutil.which("cc"):
        from fleetshift_runtime.models.compiled import build_forest_library  # noqa: PLC0415

        forest_library = build_forest_library(workdir / "lib" / "libfleetshift_forest.so")
    log(f"  raw xgboost inplace_predict, 1 row, core 0: {raw_rate:.0f} calls/s")

    if "compare" in sections:
        with contextlib.ExitStack() as stack:
            # Every server is started first (one at a time: each cold start measured
            # alone); idle servers cost no CPU. Servers on core 0, wrk on core 1.
            targets: list[Target] = []
            if not args.skip_mlserver:
                ml = stack.enter_context(mlserver(model, rows, cores="0"))
                targets.append(oip_target(ml, "predict", "1"))
            one = stack.enter_context(fleetshift(model, rows, workers=1, cores="0"))
            targets += [oip_target(one, "input-0", "1"), csv_target(one, "1")]
            if args.before:
                before = stack.enter_context(fleetshift(
                    model, rows, workers=1, cores="0", name="fleetshift-1w-before",
                    extra_env={"PYTHONPATH": args.before}))  # fmt: skip
                targets += [oip_target(before, "input-0", "1"), csv_target(before, "1")]
            if forest_library is not None:  # the image's configuration: no compiler
                image = stack.enter_context(fleetshift(
                    model, rows, workers=1, cores="0", name="fleetshift-1w-forest",
                    extra_env={"FLEETSHIFT_TREES_LIBRARY": str(forest_library)}))  # fmt: skip
                targets.append(csv_target(image, "1"))
            results = measure(targets, rows, row_counts, levels, args=args, workdir=workdir)
            for target in targets:
                record(target.server)
        all_results += results
        print_table(
            f"vs MLServer: each server pinned to core 0, wrk -t1 pinned to core 1; "
            f"{args.seconds}s per run, median of {args.repeat} rounds", results
        )  # fmt: skip
        for protocol in ("oip", "csv"):
            for rows_ in row_counts:
                for conc in levels:
                    ours = find(results, "fleetshift-1w", protocol, rows_, conc)
                    theirs = find(results, "mlserver", "oip", rows_, conc)
                    if ours and theirs and conc == 8:
                        summary.append(
                            f"{protocol}/{rows_}row/c{conc} {ours.rps / theirs.rps:.2f}x "
                            f"(p99 {ours.p99_ms:.1f} vs {theirs.p99_ms:.1f} ms)"
                        )
        for rows_ in row_counts:
            baked = find(results, "fleetshift-1w", "csv", rows_, 8)
            prebuilt = find(results, "fleetshift-1w-forest", "csv", rows_, 8)
            if baked and prebuilt:
                summary.append(f"forest library vs per-model build csv/{rows_}row/c8 "
                               f"{prebuilt.rps / baked.rps:.2f}x")  # fmt: skip
        for protocol in ("oip", "csv"):
            for rows_ in row_counts:
                for conc in levels:
                    now = find(results, "fleetshift-1w", protocol, rows_, conc)
                    then = find(results, "fleetshift-1w-before", protocol, rows_, conc)
                    if now and then:
                        summary.append(
                            f"now/before {protocol}/{rows_}row/c{conc} {now.rps / then.rps:.2f}x "
                            f"(p99 {now.p99_ms:.2f} vs {then.p99_ms:.2f} ms)"
                        )
        single = find(results, "fleetshift-1w", "csv", 1, 1)
        if single:
            summary.append(f"csv/1row/c1 vs raw inplace_predict {single.rps / raw_rate:.2f}x")

    if "scaling" in sections:
        with contextlib.ExitStack() as stack:
            # wrk unpinned in both cases: it takes CPU from the servers alike. The CPU
            # time per request read from /proc does not depend on wrk's share.
            one = stack.enter_context(fleetshift(model, rows, workers=1, cores="0",
                                                 name="scale-1w-core0"))  # fmt: skip
            two = stack.enter_context(fleetshift(model, rows, workers=2, cores="0,1",
                                                 name="scale-2w-cores01"))  # fmt: skip
            targets = [csv_target(one, None), csv_target(two, None)]
            scale_levels = [c for c in levels if c > 1] or levels
            results = measure(targets, rows, row_counts, scale_levels, args=args, workdir=workdir)
            for target in targets:
                record(target.server)
        all_results += results
        print_table("scaling: 1 worker on core 0 vs 2 workers on cores 0,1; wrk unpinned",
                    results)  # fmt: skip
        for rows_ in row_counts:
            for conc in scale_levels:
                a = find(results, "scale-1w-core0", "csv", rows_, conc)
                b = find(results, "scale-2w-cores01", "csv", rows_, conc)
                if a and b:
                    capacity = a.cpu_ms_per_request / b.cpu_ms_per_request * 2
                    # On this machine wrk shares the 2 cores with the 2 workers: the most
                    # the pair can answer is 2 cores / (server + wrk CPU per request).
                    per_request = b.cpu_ms_per_request + b.wrk_ms_per_request
                    ceiling = 2 * a.cpu_ms_per_request / per_request
                    summary.append(
                        f"2w/1w {rows_}row/c{conc}: {b.rps / a.rps:.2f}x req/s measured "
                        f"({b.server_cores:.2f} vs {a.server_cores:.2f} server cores, wrk "
                        f"{b.wrk_cores:.2f} vs {a.wrk_cores:.2f}); cpu-ms/req "
                        f"{b.cpu_ms_per_request:.3f} vs {a.cpu_ms_per_request:.3f} -> "
                        f"{capacity:.2f}x on 2 dedicated cores, {ceiling:.2f}x at most with wrk "
                        f"on the same 2 cores"
                    )

    if "nodelay" in sections:
        with contextlib.ExitStack() as stack:
            asyncio_env = {"FLEETSHIFT_EVENT_LOOP": "asyncio"}
            stock = stack.enter_context(fleetshift(
                model, rows, workers=2, cores="0,1", name="stock-uvicorn-2w",
                extra_env=asyncio_env, stock_uvicorn=True))  # fmt: skip
            fixed = stack.enter_context(fleetshift(
                model, rows, workers=2, cores="0,1", name="runtime-2w-asyncio",
                extra_env=asyncio_env))  # fmt: skip
            fast = stack.enter_context(fleetshift(
                model, rows, workers=2, cores="0,1", name="runtime-2w-uvloop"))  # fmt: skip
            targets = [csv_target(stock, None), csv_target(fixed, None), csv_target(fast, None)]
            results = measure(targets, rows, [1], [1], args=args, workdir=workdir)
        all_results += results
        print_table("TCP_NODELAY: 2 workers on the asyncio loop, keep-alive, c=1", results)
        stalled = find(results, "stock-uvicorn-2w", "csv", 1, 1)
        fixed_r = find(results, "runtime-2w-asyncio", "csv", 1, 1)
        if stalled and fixed_r:
            summary.append(
                f"TCP_NODELAY c=1 p50 {stalled.p50_ms:.2f} ms stock uvicorn vs "
                f"{fixed_r.p50_ms:.2f} ms runtime ({stalled.rps:.0f} vs {fixed_r.rps:.0f} req/s)"
            )

    if "coldstart" in sections:
        for compiled in ("true", "false"):
            times, rss = [], 0.0
            for _ in range(5):
                with fleetshift(
                    model,
                    rows,
                    workers=1,
                    cores="0",
                    extra_env={"FLEETSHIFT_COMPILED_PREDICT": compiled},
                ) as server:
                    times.append(server.first_prediction_seconds)
                    rss = server.rss_mb()  # after the build, when there is one
            summary.append(
                f"cold start (compiled trees {'on' if compiled == 'true' else 'off'}) median "
                f"{np.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}), RSS "
                f"{rss:.1f} MB"
            )  # fmt: skip

    probe_servers: dict[str, dict[str, str]] = {"probes-1w": {}}
    if args.before:
        probe_servers["probes-1w-before"] = {"PYTHONPATH": args.before}
    for label, extra in probe_servers.items() if "probes" in sections else ():
        with fleetshift(model, rows, workers=1, cores="0", name=label, extra_env=extra) as server:
            for name, (path, content_type, body) in max_size_bodies(rows).items():
                pings, run = probe_under_load(
                    server, path, content_type, body, seconds=max(args.seconds, 8), workdir=workdir
                )
                line = (
                    f"{label}: /ping under 8 clients of {len(body) / 2**20:.1f} MiB {name}: p50 "
                    f"{np.percentile(pings, 50):.1f} p99 {np.percentile(pings, 99):.1f} max "
                    f"{pings.max():.1f} ms over {len(pings)} probes ({run[0]:.1f} bodies/s, "
                    f"{run[3]} wrk errors)"
                )
                log(f"  {line}")
                summary.append(line)

    if "grpc" in sections:
        grpc_port = free_port()
        with fleetshift(model, rows, workers=1, cores="0", name="grpc-vs-rest",
                        extra_env={"FLEETSHIFT_GRPC_PORT": str(grpc_port)}) as server:  # fmt: skip
            results = []
            kinds = {
                "grpc": (grpc_port, grpc_infer_message),
                "rest-json": (server.port, lambda r: oip_body(r, "input-0")),
                "rest-binary": (server.port, oip_binary_body),
            }
            for count in row_counts:
                for conc in [c for c in levels if c <= 8] or levels[:1]:
                    runs: dict[str, list[Run]] = {}
                    for _ in range(args.repeat):  # interleaved, as in measure()
                        for kind, (port, make_body) in kinds.items():
                            runs.setdefault(kind, []).append(run_generator(
                                kind, port, make_body(rows[:count]), concurrency=conc,
                                seconds=args.seconds, core="1", workdir=workdir, server=server,
                            ))  # fmt: skip
                    for kind, kind_runs in runs.items():
                        r = median_result(server.name, kind, count, conc, kind_runs)
                        results.append(r)
                        log(f"  {kind:11} rows={count:<3} c={conc:<2} {r.rps:7.0f} req/s "
                            f"p50 {r.p50_ms:6.2f} p99 {r.p99_ms:7.2f} ms  server "
                            f"{r.cpu_ms_per_request:.3f} cpu-ms/req  client {r.wrk_cores:.2f} "
                            f"cores")  # fmt: skip
            record(server)
        all_results += results
        print_table("gRPC vs REST, OIP: the server on core 0, one Python load generator on "
                    "core 1 (its cores in the wrk column)", results)  # fmt: skip
        for r in results:
            if r.protocol == "grpc":
                for other in ("rest-json", "rest-binary"):
                    rest = find(results, r.server, other, r.rows, r.concurrency)
                    if rest:
                        summary.append(
                            f"grpc/{other} {r.rows}row/c{r.concurrency} "
                            f"{r.rps / rest.rps:.2f}x req/s (p99 {r.p99_ms:.2f} vs "
                            f"{rest.p99_ms:.2f} ms; server cpu-ms/req "
                            f"{r.cpu_ms_per_request:.3f} vs {rest.cpu_ms_per_request:.3f})"
                        )

    print()
    for name, facts in servers.items():
        print(f"{name:20} RSS {facts['rss_mb']:6.1f} MB total, {facts['max_process_rss_mb']:6.1f}"
              f" MB largest process; first prediction {facts['first_prediction_s']:.2f} s "
              f"after spawn")  # fmt: skip
    print(f"raw xgboost inplace_predict (1 row, in-process, core 0): {raw_rate:.0f} calls/s")
    print(f"/proc/loadavg before: {started_load}; after: "
          f"{Path('/proc/loadavg').read_text().strip()}")  # fmt: skip
    if args.save:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"runtime-{stamp}.json").write_text(json.dumps(
            {"results": [asdict(r) for r in all_results], "servers": servers,
             "raw_inplace_predict_calls_per_s": raw_rate, "loadavg_before": started_load},
            indent=2))  # fmt: skip
    print("RATIOS (medians, same run): " + ("; ".join(summary) or "n/a"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

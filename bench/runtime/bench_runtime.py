"""Fleetshift's runtime vs. MLServer: same model, same machine, same run, same load generator.

- Model: deterministic XGBoost binary classifier, 20 features, 200 trees, depth 6.
- Servers: ``python -m fleetshift_runtime`` (1 and 2 workers) and MLServer with
  ``mlserver-xgboost`` in its own venv (``MLSERVER_PARALLEL_WORKERS=0``, debug off, the
  best configuration), created on first run (``uvloop<0.22``: MLServer 1.7 crashes on
  newer ones).
- Load: ``wrk`` with a Lua script for POST bodies, pinned with ``taskset`` to the core
  the server does not use. Every request loop is bounded (``-d`` seconds); everything
  is on 127.0.0.1.
- Requests: Open Inference Protocol JSON for both servers (the same bytes), plus the
  SageMaker CSV route for Fleetshift; 1 row and 100 rows; concurrency 1, 8 and 32.
- Fairness on a shared machine: all servers are started first (each cold start measured
  alone) and stay up; an idle server costs nothing. Each configuration then runs on
  every server back to back, ``--repeat`` rounds, keeping each server's best round, so
  background load hits all of them alike. The server CPU used per run is reported too.

Prints a table (req/s, p50, p99), RSS, time to first prediction, and on its last line the
ratios vs. MLServer. ``--save`` also writes JSON under ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
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
def fleetshift(model: Path, rows: np.ndarray, workers: int, cores: str) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLEETSHIFT_MODEL_URI": str(model),
        "FLEETSHIFT_HOST": "127.0.0.1",
        "FLEETSHIFT_PORT": str(port),
        "FLEETSHIFT_METRICS_PORT": str(metrics_port),
        "FLEETSHIFT_WORKERS": str(workers),
        "FLEETSHIFT_LOG_LEVEL": "warning",
        "FLEETSHIFT_CACHE_DIR": tempfile.mkdtemp(prefix="fleetshift-bench-cache-"),
    }
    started = time.monotonic()
    process = subprocess.Popen(
        ["taskset", "-c", cores, sys.executable, "-m", "fleetshift_runtime"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        first = wait_first_prediction(
            f"http://127.0.0.1:{port}/invocations", csv_body(rows[:1]),
            {"Content-Type": "text/csv"}, started=started, process=process,
        )  # fmt: skip
        if workers > 1:  # every worker must be up before measuring
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                match = re.search(r"^fleetshift_loaded_models\{[^}]*\} (\S+)", text, re.M)
                if match and float(match.group(1)) >= workers:
                    break
                time.sleep(0.05)
        yield Server(f"fleetshift-{workers}w", process, port, first)
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
    core: str,
    workdir: Path,
    server: Server,
) -> tuple[float, float, float, int, float]:
    body_path = workdir / f"body-{abs(hash(body))}.bin"
    body_path.write_bytes(body)
    script = workdir / f"post-{abs(hash((body, content_type)))}.lua"
    script.write_text(LUA.format(content_type=content_type, body_path=body_path))
    command = ["taskset", "-c", core, "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s",
               "--timeout", "5s", "--latency", "-s", str(script), url]  # fmt: skip
    subprocess.run([*command[:6], "-d1s", *command[7:]], capture_output=True, check=True)  # warm
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cores = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the "Latency Distribution" lines; "+/- Stdev" columns also end in "%", so anchor
    p50_text = re.search(r"^\s*50%\s+(\S+)$", out, re.MULTILINE)
    p99_text = re.search(r"^\s*99%\s+(\S+)$", out, re.MULTILINE)
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
    return rps, p50, p99, errors, cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="measured seconds per run")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration; the best req/s is kept"
    )
    parser.add_argument("--save", action="store_true", help="write bench/results/*.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        log("needs wrk (apt-get install wrk) and taskset (util-linux)")
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="fleetshift-bench-"))
    model, rows = train(workdir)
    log(f"[bench] model: {FEATURES} features, {TREES} trees, depth {DEPTH}; load before: "
        f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    results: list[Result] = []
    servers: dict[str, dict[str, float]] = {}

    @dataclass
    class Target:
        server: Server
        protocol: str
        path: str
        make_body: Callable[[np.ndarray], bytes]
        content_type: str
        wrk_core: str

    def record(server: Server) -> None:
        servers[server.name] = {
            "rss_mb": server.rss_mb(),
            "max_process_rss_mb": max(server.worker_rss_mb()),
            "first_prediction_s": server.first_prediction_seconds,
        }

    raw_rate = raw_inplace_predict_rate(model, rows, core="0")
    log(f"  raw xgboost inplace_predict, 1 row, core 0: {raw_rate:.0f} calls/s")
    with contextlib.ExitStack() as stack:
        # Start every server first (one at a time, so each cold start is measured alone);
        # an idle server costs no CPU. Then every configuration is measured on all of
        # them back to back, round after round, so background load on a shared machine
        # hits them alike; the best round per server is kept.
        targets: list[Target] = []
        if not args.skip_mlserver:
            ml = stack.enter_context(mlserver(model, rows, cores="0"))
            targets.append(Target(ml, "oip", "/v2/models/model/infer",
                                  lambda r: oip_body(r, "predict"), JSON_TYPE, "1"))  # fmt: skip
        worker = stack.enter_context(fleetshift(model, rows, workers=1, cores="0"))
        targets.append(Target(worker, "oip", "/v2/models/model/infer",
                              lambda r: oip_body(r, "input-0"), JSON_TYPE, "1"))  # fmt: skip
        targets.append(Target(worker, "csv", "/invocations", csv_body, "text/csv", "1"))
        if not args.skip_two_workers:
            pair = stack.enter_context(fleetshift(model, rows, workers=2, cores="0,1"))
            targets.append(Target(pair, "csv", "/invocations", csv_body, "text/csv", "0,1"))
        for count in row_counts:
            for concurrency in levels:
                best: dict[int, tuple[float, float, float, int, float]] = {}
                for _ in range(args.repeat):
                    for index, target in enumerate(targets):
                        run = run_wrk(
                            f"http://127.0.0.1:{target.server.port}{target.path}",
                            target.make_body(rows[:count]),
                            target.content_type,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            core=target.wrk_core,
                            workdir=workdir,
                            server=target.server,
                        )
                        if index not in best or run[0] > best[index][0]:
                            best[index] = run
                for index, target in enumerate(targets):
                    rps, p50, p99, errors, cores = best[index]
                    results.append(
                        Result(target.server.name, target.protocol, count, concurrency,
                               rps, p50, p99, errors, cores)
                    )  # fmt: skip
                    log(
                        f"  {target.server.name:14} {target.protocol:4} rows={count:<3} "
                        f"c={concurrency:<2} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 "
                        f"{p99:7.2f} ms  errors {errors}  server cores {cores:.2f}"
                    )
        for target in targets:
            record(target.server)
        results.sort(key=lambda r: (r.server, r.protocol, r.rows, r.concurrency))
        results.sort(key=lambda r: ["mlserver", "fleetshift-1w", "fleetshift-2w"].index(r.server))

    print(f"\nFleetshift runtime benchmark  (model {FEATURES}x{TREES} trees, depth {DEPTH}; "
          f"server pinned to core 0, wrk -t1 pinned to core 1; 2-worker runs share cores 0,1 "
          f"with wrk; {args.seconds}s per run, best of {args.repeat})")  # fmt: skip
    print(f"{'server':14} {'proto':5} {'rows':>4} {'conc':>4} {'req/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>6} {'cores':>5} {'req/core-s':>10}")  # fmt: skip
    for r in results:
        print(f"{r.server:14} {r.protocol:5} {r.rows:4} {r.concurrency:4} {r.rps:9.0f} "
              f"{r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:6} {r.server_cores:5.2f} "
              f"{r.rps / max(r.server_cores, 1e-9):10.0f}")  # fmt: skip
    print()
    for name, facts in servers.items():
        print(f"{name:14} RSS {facts['rss_mb']:6.1f} MB total, {facts['max_process_rss_mb']:6.1f} "
              f"MB largest process; first prediction {facts['first_prediction_s']:.2f} s "
              f"after spawn")  # fmt: skip
    print(f"raw xgboost inplace_predict (1 row, in-process, core 0): {raw_rate:.0f} calls/s")

    def find(server: str, protocol: str, rows_: int, conc: int) -> Result | None:
        for r in results:
            if (r.server, r.protocol, r.rows, r.concurrency) == (server, protocol, rows_, conc):
                return r
        return None

    ratios = []
    for protocol in ("oip", "csv"):
        for rows_, conc in ((1, 8), (100, 8)):
            ours = find("fleetshift-1w", protocol, rows_, conc)
            theirs = find("mlserver", "oip", rows_, conc)
            if ours and theirs:
                ratios.append(
                    f"{protocol}/{rows_}row/c{conc} {ours.rps / theirs.rps:.2f}x req/s "
                    f"(p99 {ours.p99_ms:.1f} vs {theirs.p99_ms:.1f} ms)"
                )
    scaling = []
    for rows_ in row_counts:
        conc = max(levels)
        one, two = (
            find("fleetshift-1w", "csv", rows_, conc),
            find("fleetshift-2w", "csv", rows_, conc),
        )
        if one and two:
            per_core = (two.rps / two.server_cores) / (one.rps / one.server_cores)
            scaling.append(
                f"{rows_}row/c{conc} {two.rps / one.rps:.2f}x req/s on "
                f"{two.server_cores:.2f} vs {one.server_cores:.2f} server cores "
                f"({per_core:.2f}x req per core-second)"
            )
    best_1row = max((r for r in results if r.server == "fleetshift-1w" and r.rows == 1),
                    key=lambda r: r.rps, default=None)  # fmt: skip
    single = find("fleetshift-1w", "csv", 1, 1)
    stretch = ""
    if best_1row and single:
        stretch = (
            f"; vs raw inplace_predict {raw_rate:.0f} calls/s: HTTP 1row/c1 "
            f"{single.rps / raw_rate:.2f}x, best 1row ({best_1row.protocol}/c"
            f"{best_1row.concurrency}) {best_1row.rps / raw_rate:.2f}x"
        )
    if args.save:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"runtime-{stamp}.json").write_text(json.dumps(
            {"results": [asdict(r) for r in results], "servers": servers,
             "raw_inplace_predict_calls_per_s": raw_rate}, indent=2))  # fmt: skip
    print(
        "RATIOS vs MLServer (best config, OIP JSON, same run): "
        + ("; ".join(ratios) or "n/a")
        + "; 2 workers vs 1: "
        + ("; ".join(scaling) or "n/a")
        + stretch
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

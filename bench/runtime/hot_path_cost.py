"""CPU instructions per request on the runtime's hot path: a count a shared machine cannot blur.

``make bench-runtime`` times requests over HTTP, which other work on the machine slows
down at random; this counts the instructions one request costs instead, under
``valgrind --tool=callgrind``, which gives the same count however busy the machine is.

- Each measured process loads the benchmark's model (20 features, 200 trees, depth 6)
  through ``fleetshift_runtime.app.Runtime``, waits for the compiled trees, and feeds
  whole requests to the runtime's own protocol class (uvicorn's httptools parser, the
  ASGI app, the codecs, the batcher, the prediction, the metrics) through an in-memory
  transport: everything a request costs in the worker except the socket system calls.
- Counters are zeroed after a warm-up and dumped after ``--requests`` requests
  (``callgrind_control``); the count divided by the requests is printed.
- ``--before <runtime folder>`` counts another source tree (a checkout's ``runtime/``)
  the same way and prints the ratio now/before.

Instructions are not time (cache misses and branch mispredictions are not in them), but
for the same Python code path they track it closely, and they tell a 2% change apart
where wrk's req/s on a shared 2-core machine swings by 20%.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _bench() -> Any:
    """``bench_runtime.py``, for its model and bodies (imported in the parent only: the
    measured child does not import what the bench needs, xgboost among it)."""
    return importlib.import_module("bench_runtime")


def request_bytes(kind: str, rows: np.ndarray) -> bytes:
    """One keep-alive HTTP/1.1 request as wrk sends it, with the bench's bodies."""
    body: bytes
    if kind == "csv":
        body, path, content_type = _bench().csv_body(rows), b"/invocations", b"text/csv"
    else:
        body = _bench().oip_body(rows, "input-0")
        path, content_type = b"/v2/models/model/infer", b"application/json"
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


class _Transport(asyncio.Transport):
    """Keeps what the protocol writes; a connection that never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _compiled(model: Any) -> bool:
    return model is not None and str(model.predictor_name).startswith("compiled")


async def _serve_in_memory(request: bytes, requests: int, warm_up: int) -> None:
    """The child: load the model, warm up, then count ``requests`` requests."""
    import uvicorn  # noqa: PLC0415
    from uvicorn.server import ServerState  # noqa: PLC0415

    from fleetshift_runtime.app import Runtime  # noqa: PLC0415
    from fleetshift_runtime.protocol import NoDelayHttpToolsProtocol  # noqa: PLC0415
    from fleetshift_runtime.settings import RuntimeSettings  # noqa: PLC0415

    runtime = Runtime(RuntimeSettings())
    runtime.start_loading()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 600
    while not _compiled(runtime.single.model):
        if runtime.single.status == "failed" or loop.time() > deadline:
            raise SystemExit(f"no compiled model: {runtime.single.reason}")
        await asyncio.sleep(0.1)
    config = uvicorn.Config(
        runtime,
        http=NoDelayHttpToolsProtocol,
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="warning",
    )
    config.load()
    protocol = NoDelayHttpToolsProtocol(config, ServerState(), {}, loop)
    transport = _Transport()
    protocol.connection_made(transport)
    answered: asyncio.Future[None] = loop.create_future()
    handler = protocol.on_response_complete

    def on_response_complete() -> None:
        handler()
        answered.set_result(None)

    protocol.on_response_complete = on_response_complete  # type: ignore[method-assign]

    async def one() -> None:
        nonlocal answered
        answered = loop.create_future()
        protocol.data_received(request)
        await answered

    for _ in range(warm_up):
        await one()
    status = transport.written[0].split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise SystemExit(f"the request failed: {b''.join(transport.written[:2])[:300]!r}")
    callgrind = shutil.which("callgrind_control") or "callgrind_control"
    pid = str(os.getpid())
    subprocess.run([callgrind, "--zero", pid], check=True, capture_output=True)
    for _ in range(requests):
        await one()
    subprocess.run([callgrind, "--dump=requests", pid], check=True, capture_output=True)


def child(args: argparse.Namespace) -> int:
    import uvloop  # noqa: PLC0415

    request = Path(args.request_file).read_bytes()
    uvloop.run(_serve_in_memory(request, args.requests, args.warm_up))
    return 0


def count(
    source: Path, model: Path, request: bytes, *, requests: int, warm_up: int, workdir: Path
) -> float:
    """Instructions per request of the runtime in ``source``, under callgrind."""
    run = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    (run / "request.bin").write_bytes(request)
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "FLEETSHIFT_MODEL_URI": str(model),
        "FLEETSHIFT_LOG_LEVEL": "warning",
        "FLEETSHIFT_CACHE_DIR": str(run / "cache"),
    }
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={run}/callgrind.%p",
         sys.executable, __file__, "--child", "--request-file", str(run / "request.bin"),
         "--requests", str(requests), "--warm-up", str(warm_up)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    dumps = [p for p in run.glob("callgrind.*") if p.name.endswith(".1")]
    if len(dumps) != 1:
        raise RuntimeError(f"expected one dump of the requests in {run}, found {dumps}")
    match = re.search(r"^summary: (\d+)$", dumps[0].read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary line in {dumps[0]}")
    return int(match.group(1)) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="", help="another runtime source folder to count")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument("--kinds", default="csv,oip")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warm-up", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--request-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="fleetshift-hot-path-"))
    model, rows = _bench().train(workdir)
    sources = {"now": REPO / "runtime"}
    if args.before:
        sources["before"] = Path(args.before).resolve()
    jobs = [
        (label, kind, count_)
        for count_ in (int(r) for r in args.rows.split(","))
        for kind in args.kinds.split(",")
        for label in sources
    ]

    def count_job(job: tuple[str, str, int]) -> float:
        label, kind, count_ = job
        request = request_bytes(kind, rows[:count_])
        return count(
            sources[label], model, request, requests=args.requests, warm_up=args.warm_up,
            workdir=workdir,
        )  # fmt: skip

    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {job: pool.submit(count_job, job) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}
    print(f"instructions per request, in-process, {args.requests} requests after "
          f"{args.warm_up} (callgrind):")  # fmt: skip
    for (label, kind, count_), value in results.items():
        line = f"  {label:6} {kind:4} {count_:>3} row(s): {value:10,.0f}"
        if label == "now" and ("before", kind, count_) in results:
            line += f"  now/before {value / results[('before', kind, count_)]:.3f}"
        print(line)
    print(json.dumps({f"{k[0]}/{k[1]}/{k[2]}": round(v) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

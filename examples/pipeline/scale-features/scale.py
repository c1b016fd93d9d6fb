"""An example pre-processing step for a Fleetshift serial inference pipeline: standard
scaling of CSV features, ``(x - mean) / std``, with the standard library only.

It speaks SageMaker's container contract on the port the operator gives it
(``SAGEMAKER_BIND_TO_PORT``), on the pod's loopback only: ``GET /ping`` and
``POST /invocations`` (``text/csv`` in, ``text/csv`` out, one row per line).

Settings (environment):

- ``SCALER_MEAN``, ``SCALER_STD``: one number for every feature, or one per feature,
  comma-separated (default 0 and 1: unchanged values);
- ``SAGEMAKER_BIND_TO_PORT`` (default 8080) and ``SCALER_HOST`` (default 127.0.0.1).
"""

from __future__ import annotations

import http.server
import os


def numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


MEAN = numbers(os.environ.get("SCALER_MEAN", "0"))
STD = numbers(os.environ.get("SCALER_STD", "1"))


def scale(body: bytes) -> bytes:
    """Each CSV row scaled; a ValueError says what is wrong with the body."""
    lines = []
    for number, line in enumerate(body.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = numbers(line)
        except ValueError:
            raise ValueError(f"row {number} is not numbers separated by commas") from None
        mean = MEAN * len(values) if len(MEAN) == 1 else MEAN
        std = STD * len(values) if len(STD) == 1 else STD
        if len(mean) != len(values) or len(std) != len(values):
            raise ValueError(f"row {number} has {len(values)} features; expected {len(mean)}")
        lines.append(",".join(repr((x - m) / s) for x, m, s in zip(values, mean, std, strict=True)))
    if not lines:
        raise ValueError("empty body: send CSV rows")
    return "\n".join(lines).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the runtime reuses its connection

    def do_GET(self) -> None:
        if self.path == "/ping":
            self.answer(200, b"", "text/plain")
        else:
            self.answer(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invocations":
            self.answer(404, b"not found", "text/plain")
        elif (self.headers.get("Content-Type") or "").split(";")[0].strip() != "text/csv":
            self.answer(415, b"send text/csv", "text/plain")
        else:
            try:
                self.answer(200, scale(body), "text/csv")
            except (ValueError, UnicodeDecodeError) as error:
                self.answer(400, str(error).encode(), "text/plain")

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per request would drown the pod's log


if __name__ == "__main__":
    host = os.environ.get("SCALER_HOST", "127.0.0.1")
    address = (host, int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    print(f"scale-features on {address[0]}:{address[1]}, mean {MEAN}, std {STD}", flush=True)
    http.server.ThreadingHTTPServer(address, Handler).serve_forever()

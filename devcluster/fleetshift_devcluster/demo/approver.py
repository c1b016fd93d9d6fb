"""The gates story's webhook receiver: a change-approval service on loopback.

The Endpoint of the gates story names it for three webhooks, every call signed with the key
of the demo's Secret:

- ``ConfirmPromotion`` (``/confirm``): answers 503 "waiting for approval" until
  ``approve_after`` seconds after it was first asked about a revision, then 200, as a
  person approving a change would. The deployment holds its canary share meanwhile.
- ``PostRollout`` (``/announce``) and ``OnRollback`` (``/page``): recorded, answered 200.

A call whose signature does not verify is answered 401 and recorded as such. The operator
runs on the same host (inside the same network namespace on a real node), so the receiver
binds 127.0.0.1 and nothing listens anywhere else.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from typing import Any

from fleetshift_operator.webhooks.base import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SIGNING_KEY = "demo-signing-key"
"""The key the demo's Secret holds; the operator signs every call with it."""


@dataclasses.dataclass(frozen=True)
class ApproverCall:
    """One call the receiver answered."""

    at: float
    path: str
    type: str
    revision: str
    answer: int
    signed: bool


class Approver:
    """See the module's docstring. ``calls`` lists every call in order."""

    def __init__(self, approve_after: float) -> None:
        self.approve_after = approve_after
        self.calls: list[ApproverCall] = []
        self._first_asked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        approver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signed = verify(
                    SIGNING_KEY.encode(),
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                )
                try:
                    payload: dict[str, Any] = json.loads(body)
                except ValueError:
                    payload = {}
                answer, text = approver.answer(self.path, payload, signed)
                self.send_response(answer)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def answer(self, path: str, payload: dict[str, Any], signed: bool) -> tuple[int, bytes]:
        """The status and body for one call, recorded in ``calls``."""
        now = time.time()
        revision = str(payload.get("revision") or "")
        if not signed:
            code, text = 401, b"signature does not verify"
        elif path == "/confirm":
            with self._lock:
                first = self._first_asked.setdefault(revision, now)
            if now - first >= self.approve_after:
                code, text = 200, b"approved"
            else:
                code, text = 503, b"waiting for approval"
        else:
            code, text = 200, b"noted"
        with self._lock:
            self.calls.append(
                ApproverCall(now, path, str(payload.get("type") or ""), revision, code, signed)
            )
        return code, text

    def held_seconds(self, revision: str) -> float | None:
        """From the first ``ConfirmPromotion`` call about ``revision`` to its approval;
        None when it was never approved."""
        asked = [c for c in self.calls if c.path == "/confirm" and c.revision == revision]
        approved = [c.at for c in asked if c.answer == 200]
        if not asked or not approved:
            return None
        return round(approved[0] - asked[0].at, 1)

    def calls_about(self, revision: str) -> list[ApproverCall]:
        return [c for c in self.calls if c.revision == revision]

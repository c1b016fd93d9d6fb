"""The operator's log: one line per record on stderr, as text or as JSON lines.

``configure_logging`` installs one handler on the root logger, so kopf's
records and the operator's own go the same way. A record about one Endpoint
carries its namespace and name, either as ``extra={"namespace": ...,
"endpoint": ...}`` or through kopf's per-object logger (``k8s_ref``); both
formats show them. Other ``extra`` fields (``phase``, ``attempt``, ``retry_in``...) become
``key=value`` pairs in text and keys in JSON.

>>> record = logging.LogRecord("fleetshift", logging.ERROR, "", 0, "reconcile failed", (), None)
>>> record.created = 0.0
>>> record.namespace, record.endpoint, record.attempt = "ml", "churn", 2
>>> TextFormatter().format(record)
'1970-01-01T00:00:00.000Z ERROR [ml/churn] reconcile failed attempt=2'
>>> JsonLinesFormatter().format(record)
'{"time": "1970-01-01T00:00:00.000Z", "level": "ERROR", "logger": "fleetshift", \
"message": "reconcile failed", "namespace": "ml", "endpoint": "churn", "attempt": 2}'
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

LOGGER = "fleetshift"
"""The operator's own logger (kopf's records come from ``kopf.*``)."""

# Attributes every LogRecord has, and kopf's own bookkeeping: none is an ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "k8s_ref",
    "k8s_skip",
    "settings",
    "taskName",
}
_OBJECT_KEYS = ("namespace", "endpoint")
_QUIET_UNLESS_DEBUG = ("asyncio", "aiohttp", "httpx", "httpx2", "httpcore", "hpack")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _object_of(record: logging.LogRecord) -> tuple[str, str] | None:
    """The Endpoint a record is about: from ``extra``, else from kopf's object logger."""
    endpoint = record.__dict__.get("endpoint")
    if endpoint:
        return str(record.__dict__.get("namespace") or ""), str(endpoint)
    ref = record.__dict__.get("k8s_ref")
    if isinstance(ref, dict) and ref.get("name"):
        return str(ref.get("namespace") or ""), str(ref["name"])
    return None


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _OBJECT_KEYS and not key.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> [<namespace>/<name>] <message> key=value...``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname]
        about = _object_of(record)
        if about is not None:
            parts.append(f"[{about[0]}/{about[1]}]" if about[0] else f"[{about[1]}]")
        parts.append(record.getMessage())
        parts += [f"{key}={value}" for key, value in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, namespace, endpoint, extras,
    and ``error`` (the traceback) when the record carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        about = _object_of(record)
        if about is not None:
            line["namespace"], line["endpoint"] = about
        line.update(_extras(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so a second ``configure_logging`` replaces it rather than doubling lines."""


class RequestRetries(logging.Filter):
    """Thins kopf's "Request attempt #3/33 failed; will retry: GET <url> -> <error>", an
    ERROR per attempt of every watch while the API server is away: the first for each
    request comes through, then one per ``window`` seconds. The attempt that gives up
    ("escalating") always does.

    >>> def record(message): return logging.LogRecord("kopf", 40, "", 0, message, (), None)
    >>> retries = RequestRetries(window=30)
    >>> retries.filter(record("Request attempt #1/9 failed; will retry: GET /api -> refused"))
    True
    >>> retries.filter(record("Request attempt #2/9 failed; will retry: GET /api -> refused"))
    False
    >>> retries.filter(record("Request attempt #2/9 failed; will retry: GET /apis -> refused"))
    True
    >>> retries.filter(record("Request attempt #9/9 failed; escalating: GET /api -> refused"))
    True
    """

    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._shown: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Request attempt") or "; will retry: " not in message:
            return True
        request = message.split("; will retry: ", 1)[1].split(" -> ", 1)[0]
        last = self._shown.get(request)
        if last is not None and record.created - last < self.window:
            return False
        self._shown[request] = record.created
        return True


def configure_logging(
    log_format: LogFormat = "text", level: LogLevel = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every record at ``level`` and above to ``stream`` (stderr) in ``log_format``.

    kopf's own INFO records (one per handler run) and the HTTP libraries' stay out
    unless ``level`` is DEBUG; their warnings and errors come through, kopf's
    per-attempt request retries thinned out (``RequestRetries``).
    """
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if log_format == "json" else TextFormatter())
    if level != "DEBUG":
        handler.addFilter(RequestRetries())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)]
    root.addHandler(handler)
    root.setLevel(level)
    debug = level == "DEBUG"
    logging.getLogger("kopf").setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in _QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    return handler

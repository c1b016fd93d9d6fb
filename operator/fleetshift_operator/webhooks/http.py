"""The HTTP webhook sender, through ``requests`` (synchronous: callers run it off the
event loop, as the Prometheus client is run)."""

from __future__ import annotations

import datetime
import time

import requests

from fleetshift_operator.webhooks.base import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookCall,
    WebhookResult,
    encode,
    judge_answer,
    retryable,
    sign,
)

USER_AGENT = "fleetshift-operator"


class HttpSender:
    """POSTs JSON; retries at once, after 0.5 s, 1 s, 2 s... (at most 4 s apart)."""

    def __init__(self, session: requests.Session | None = None, backoff: float = 0.5) -> None:
        self.session = session or requests.Session()
        self.backoff = backoff

    def send(self, call: WebhookCall, key: bytes | None, now: datetime.datetime) -> WebhookResult:
        hook = call.hook
        body = encode(call.payload)
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: call.delivery,
            EVENT_HEADER: hook.type,
        }
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(key, timestamp, body)
        attempts = 0
        status_code: int | None = None
        error: str | None = None
        for attempt in range(hook.retries + 1):
            if attempt:
                time.sleep(min(4.0, self.backoff * 2 ** (attempt - 1)))
            attempts += 1
            status_code, error = None, None
            try:
                answer = self.session.post(
                    hook.url,
                    data=body,
                    headers=headers,
                    timeout=hook.timeoutSeconds,
                    allow_redirects=False,
                )
                status_code = answer.status_code
                answer.close()
            except requests.exceptions.Timeout:
                error = f"timed out after {hook.timeoutSeconds}s"
            except requests.exceptions.RequestException as failure:
                error = f"{type(failure).__name__}: {failure}"
            if not retryable(hook.type, status_code):
                break
        verdict, reason = judge_answer(status_code, error)
        if attempts > 1:
            reason = f"{reason} (after {attempts} attempts)"
        return WebhookResult(hook.name, call.revision, verdict, status_code, reason, attempts)

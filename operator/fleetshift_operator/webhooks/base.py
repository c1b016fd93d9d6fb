"""The webhook plug point, and everything about a call that is not I/O. Pure.

A reconcile asks :func:`due_calls` which webhooks the status says are due, sends them
through a :class:`WebhookSender`, and hands the :class:`WebhookResult` values to the
planner as observations; the planner records them in status (``planning/gates.py``).

Verdicts (the engine's four; a webhook never breaches, it holds):

=====================================  ============  =======================================
what happened                          verdict       a gate / a notification
=====================================  ============  =======================================
an answer 200-299                      Healthy       passes / delivered
any other answer (3xx, 4xx, 5xx)       Inconclusive  holds, called again next poll / failed
no answer (timeout, refused, TLS, DNS) Inconclusive  holds, called again next poll / failed
no signing key (Secret or key missing) Error         holds, called again next poll / failed
=====================================  ============  =======================================

>>> judge_answer(204, None)
('Healthy', 'HTTP 204')
>>> judge_answer(503, None)
('Inconclusive', 'HTTP 503: not 2xx, holding')
>>> judge_answer(None, "timed out after 10s")
('Inconclusive', 'no answer: timed out after 10s')
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Protocol

from fleetshift_operator.alarms.semantics import Verdict
from fleetshift_operator.api import (
    GATE_TYPES,
    EndpointSpec,
    EndpointStatus,
    VariantStatus,
    Webhook,
    WebhookStatus,
    WebhookType,
    format_timestamp,
)

SIGNATURE_HEADER = "X-Fleetshift-Signature"
"""``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with the Secret's key."""
TIMESTAMP_HEADER = "X-Fleetshift-Timestamp"
"""Unix seconds of the call; part of the signed content, so a replay is detectable."""
DELIVERY_HEADER = "X-Fleetshift-Delivery"
"""The same id for every call of one webhook for one revision: receivers may dedupe."""
EVENT_HEADER = "X-Fleetshift-Event"
"""The webhook's type."""
PAYLOAD_VERSION = "fleetshift.dev/v1alpha1"
RETRYABLE_NOTIFICATION_CODES = frozenset({429, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class WebhookResult:
    """What one call of one webhook came to."""

    name: str
    revision: str
    verdict: Verdict
    status_code: int | None = None
    reason: str = ""
    attempts: int = 1


@dataclasses.dataclass(frozen=True)
class WebhookCall:
    """One webhook to call now: where, the signed body's content, and how patiently."""

    variant: str
    hook: Webhook
    revision: str
    payload: Mapping[str, Any]

    @property
    def delivery(self) -> str:
        return str(self.payload["deliveryId"])


def judge_answer(status_code: int | None, error: str | None) -> tuple[Verdict, str]:
    """The verdict of one call: Healthy only for a 2xx (table in the module docstring).

    >>> judge_answer(200, None)[0], judge_answer(299, None)[0], judge_answer(300, None)[0]
    ('Healthy', 'Healthy', 'Inconclusive')
    >>> judge_answer(None, None)
    ('Inconclusive', 'no answer')
    """
    if status_code is None:
        return "Inconclusive", f"no answer: {error}" if error else "no answer"
    if 200 <= status_code < 300:
        return "Healthy", f"HTTP {status_code}"
    return "Inconclusive", f"HTTP {status_code}: not 2xx, holding"


def retryable(kind: WebhookType, status_code: int | None) -> bool:
    """Whether an attempt is repeated at once (up to ``retries`` times).

    No answer is always retried. A gate's answer is its decision (a 503 holds, and the
    gate is called again at the next poll anyway); a notification's 429 or 502-504 is
    a busy receiver, so it is retried.

    >>> retryable("ConfirmPromotion", None), retryable("ConfirmPromotion", 503)
    (True, False)
    >>> retryable("OnRollback", 503), retryable("OnRollback", 400)
    (True, False)
    """
    if status_code is None:
        return True
    return kind not in GATE_TYPES and status_code in RETRYABLE_NOTIFICATION_CODES


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of
    ``<timestamp>.<body>``, in hex.

    >>> sign(b"secret", 1767225600, b'{"a":1}')
    'sha256=96a067a1c95eb143fc00b9097bcfcbcd5456adda508c443ff219748e764dbed7'
    """
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (``docs/webhooks.md`` has the same in a few lines).

    >>> signature = sign(b"k", 10, b"{}")
    >>> verify(b"k", "10", b"{}", signature), verify(b"k", "11", b"{}", signature)
    (True, False)
    """
    try:
        expected = sign(key, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body: compact JSON with sorted keys (what is signed is what is sent)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def delivery_id(namespace: str, endpoint: str, variant: str, record: WebhookStatus) -> str:
    """A stable id for one webhook of one revision of one deployment.

    >>> from fleetshift_operator.api import WebhookStatus
    >>> import datetime
    >>> at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    >>> r = WebhookStatus(name="ok", type="PreRollout", revision="abc", requestedAt=at)
    >>> delivery_id("ml", "churn", "main", r) == delivery_id("ml", "churn", "main", r)
    True
    """
    text = (
        "/".join((namespace, endpoint, variant, record.name, record.type, record.revision))
        + f"@{format_timestamp(record.requestedAt)}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_payload(  # noqa: PLR0917 - what the receiver is told
    namespace: str,
    endpoint: str,
    variant: VariantStatus,
    record: WebhookStatus,
    hook: Webhook,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The JSON a webhook receives (documented field by field in ``docs/webhooks.md``).

    >>> import datetime
    >>> from fleetshift_operator.api import StepStatus, VariantStatus, Webhook, WebhookStatus
    >>> at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    >>> v = VariantStatus(name="main", phase="Updating", activeRevision="r1",
    ...                   candidateRevision="r2", greenTrafficPercent=25,
    ...                   step=StepStatus(stage="Baking", index=1, total=2, greenPercent=25))
    >>> hook = Webhook(name="ok", type="ConfirmPromotion", url="http://h/", metadata={"t": "x"})
    >>> r = WebhookStatus(name="ok", type="ConfirmPromotion", revision="r2",
    ...                   fromRevision="r1", requestedAt=at)
    >>> p = build_payload("ml", "churn", v, r, hook, at)
    >>> p["type"], p["revision"], p["fromRevision"], p["traffic"], p["step"]["index"]
    ('ConfirmPromotion', 'r2', 'r1', {'blue': 75, 'green': 25}, 1)
    >>> p["timestamp"], p["metadata"]
    ('2026-01-01T00:00:00Z', {'t': 'x'})
    """
    step = variant.step
    green = variant.greenTrafficPercent
    return {
        "apiVersion": PAYLOAD_VERSION,
        "deliveryId": delivery_id(namespace, endpoint, variant.name, record),
        "type": record.type,
        "name": record.name,
        "namespace": namespace,
        "endpoint": endpoint,
        "variant": variant.name,
        "revision": record.revision,
        "fromRevision": record.fromRevision,
        "phase": variant.phase,
        "step": (
            {
                "stage": step.stage,
                "index": step.index,
                "total": step.total,
                "greenPercent": step.greenPercent,
            }
            if step is not None
            else None
        ),
        "traffic": {"blue": 100 - green, "green": green},
        "outcome": record.outcome,
        "timestamp": format_timestamp(now),
        "metadata": dict(hook.metadata),
    }


def due_calls(
    spec: EndpointSpec,
    status: EndpointStatus | None,
    namespace: str,
    endpoint: str,
    now: datetime.datetime,
) -> list[WebhookCall]:
    """The webhooks to call in this reconcile, read from status alone.

    A gate is called while it is ``Pending`` for the revision its variant is deploying
    (and the variant is ``Updating``); a notification while it is ``Pending``, whatever
    the variant does since. A record whose webhook or variant left the spec is not
    called.

    >>> import datetime
    >>> from fleetshift_operator.api import (EndpointSpec, EndpointStatus, ModelSource,
    ...     Variant, VariantStatus, Webhook, WebhookStatus, DeploymentConfig)
    >>> at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    >>> hooks = [Webhook(name="pre", type="PreRollout", url="http://h/"),
    ...          Webhook(name="bye", type="OnRollback", url="http://h/")]
    >>> spec = EndpointSpec(variants=[Variant(name="main", model=ModelSource(uri="/m"))],
    ...                     deploymentConfig=DeploymentConfig(webhooks=hooks))
    >>> pending = [WebhookStatus(name="pre", type="PreRollout", revision="old", requestedAt=at),
    ...            WebhookStatus(name="bye", type="OnRollback", revision="old", requestedAt=at)]
    >>> v = VariantStatus(name="main", phase="Updating", activeRevision="r1",
    ...                   candidateRevision="r2", webhooks=pending)
    >>> [c.hook.name for c in due_calls(spec, EndpointStatus(variants=[v]), "ml", "ep", at)]
    ['bye']
    """
    hooks = {h.name: h for h in spec.deploymentConfig.webhooks}
    if not hooks or status is None:
        return []
    calls = []
    variants = {v.name for v in spec.variants}
    for variant in status.variants:
        if variant.name not in variants:
            continue  # a removed variant, draining: its records go with it
        for record in variant.webhooks:
            hook = hooks.get(record.name)
            if hook is None or hook.type != record.type or record.state != "Pending":
                continue
            if record.type in GATE_TYPES and (
                variant.phase != "Updating" or record.revision != variant.candidateRevision
            ):
                continue
            payload = build_payload(namespace, endpoint, variant, record, hook, now)
            calls.append(WebhookCall(variant.name, hook, record.revision, payload))
    return calls


class WebhookSender(Protocol):
    """Sends one webhook call."""

    def send(self, call: WebhookCall, key: bytes | None, now: datetime.datetime) -> WebhookResult:
        """POST the call's payload, signed with ``key`` when there is one, with its
        timeout and retries. Never raises: failures are Inconclusive."""
        ...

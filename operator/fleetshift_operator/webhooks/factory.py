"""Build the webhook sender (one kind today: HTTP(S) POST)."""

from __future__ import annotations

from fleetshift_operator.webhooks.base import WebhookSender
from fleetshift_operator.webhooks.http import HttpSender


def make_webhook_sender() -> WebhookSender:
    """The sender for every webhook of the spec (``url`` is ``http(s)://``, by admission)."""
    return HttpSender()

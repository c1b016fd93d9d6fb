"""Webhook gates and notifications: one Protocol (``base.WebhookSender``), an HTTP
sender, and a factory.

``base`` is pure (the verdict of an answer, the signature, the payload, which calls are
due); ``http`` and ``factory`` do the I/O. Nothing is imported here, so the planner can
use ``base`` without pulling in an HTTP client.
"""

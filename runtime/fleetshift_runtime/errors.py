"""Errors that become HTTP responses.

A :class:`RequestError` is the client's fault and maps to a 4xx with a precise reason.
A :class:`ModelFaultError` is the server's (the model could not serve a valid request) and
maps to a 5xx: the guardrails alarm on those, so nothing a client sends may raise one.
"""

from __future__ import annotations


class RequestError(Exception):
    """A request the runtime refuses: a 4xx with a reason people can act on.

    >>> RequestError(413, "body is 7340032 bytes; the limit is 6291456").status
    413
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ModelFaultError(Exception):
    """The model failed on a request that is valid for the endpoint's contract (5xx)."""


class ModelLoadError(Exception):
    """The model artifact could not be fetched, unpacked or loaded."""


class ModelNotFoundError(ModelLoadError):
    """The model artifact does not exist at its URI (a 404 for a target model)."""


class NotAModelError(ModelLoadError):
    """The artifact exists but is no model the runtime serves (a 404 for a target model).

    ``public`` says why without naming a server path: it is what a client may read.
    """

    def __init__(self, detail: str, public: str) -> None:
        super().__init__(detail)
        self.public = public


class NotReadyError(Exception):
    """Single-model mode before the model is ready (503)."""

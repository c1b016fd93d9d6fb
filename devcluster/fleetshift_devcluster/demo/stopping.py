"""Ctrl-C and SIGTERM, remembered, so the demo always stops on them.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be.
If that is inside a ``__del__`` method, a weakref callback or another place whose
exceptions Python reports and drops, the interrupt is lost and the demo would run on.
So the handler also records the request, and every wait in the demo checks it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopRequest:
    """A stop asked for by a signal; :meth:`pause` raises once one was asked for."""

    def __init__(self) -> None:
        self._asked = threading.Event()
        self.signum: int | None = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this (main) thread."""
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        """The signal handler: remember the request, then raise its exception."""
        self.signum = signum
        self._asked.set()
        raise self.exception()

    def exception(self) -> BaseException:
        """``KeyboardInterrupt`` for Ctrl-C, ``SystemExit(128 + signal)`` otherwise.

        >>> stop = StopRequest()
        >>> stop.signum = signal.SIGTERM
        >>> stop.exception().code
        143
        """
        if self.signum in (None, signal.SIGINT):
            return KeyboardInterrupt()
        return SystemExit(128 + (self.signum or 0))

    @property
    def asked(self) -> bool:
        """True once a stop was asked for."""
        return self._asked.is_set()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or raise at once if a stop is (or gets) asked for."""
        if self._asked.wait(seconds):
            raise self.exception()

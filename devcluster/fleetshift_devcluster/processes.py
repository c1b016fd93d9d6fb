"""Background processes that are stopped by PID, and only if still ours.

A PID can be reused once a process is gone, so before signalling a recorded
PID we compare the process's start time (from ``/proc/<pid>/stat``) with the
one recorded at spawn. A stale record is never signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces; everything after the last ')' is fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@dataclasses.dataclass
class ManagedProcess:
    """One process we started: its name, PID, start time and log file."""

    name: str
    pid: int
    start_ticks: int
    log: str

    @classmethod
    def spawn(
        cls, name: str, argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Start ``argv`` in its own session, with output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        ticks = _start_ticks(child.pid)
        # A child of this process stays a zombie until reaped; keep its handle so
        # `_reap` can collect its exit status (running() already treats zombies as gone).
        _CHILDREN.append(child)
        _reap()
        return cls(name=name, pid=child.pid, start_ticks=ticks or -1, log=str(log))

    def running(self) -> bool:
        """True when the recorded PID is still this very process."""
        return _start_ticks(self.pid) == self.start_ticks

    def signal(self, signum: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


_CHILDREN: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    for known in list(_CHILDREN):
        if known.poll() is not None:
            _CHILDREN.remove(known)


def stop_processes(processes: list[ManagedProcess], grace: float = 10.0) -> None:
    """SIGTERM each process, wait up to ``grace`` seconds, then SIGKILL the rest."""
    for process in processes:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap()
        if not any(p.running() for p in processes):
            return
        time.sleep(0.05)
    for process in processes:
        process.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.running() for p in processes):
        _reap()
        time.sleep(0.05)

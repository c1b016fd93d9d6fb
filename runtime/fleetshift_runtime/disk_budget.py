"""Multi-model mode's disk budget: the source cache's entries, evicted least recently used.

The cache folder (``FLEETSHIFT_CACHE_DIR``) holds **entries**, folders deleted whole:

- ``<uri key>/<version>/``: one downloaded object (``sources.py``);
- ``unpacked/<digest>/``: one unpacked ``model.tar.gz``.

``compiled/`` (compiled trees, when built at run time) is not an entry and not counted.

A load opens a :class:`DiskSession`, which **pins** each entry it reads or writes: a
shared ``flock`` on the entry's folder, held until the model is in memory. Eviction takes
an exclusive, non-blocking ``flock`` on a candidate and skips it when that fails, so an
entry being read or written is never deleted, by this process or another worker sharing
the folder. Pins are taken, and entries evicted, under one short folder-wide lock, so a
pin never lands on an entry being deleted.

An entry's recency is its folder's mtime, set explicitly to the nanosecond when a session
pins it and again when the session ends (the end of its last use). Set explicitly, because
the kernel stamps a change to a folder with a clock that ticks every few milliseconds:
two models loaded within one tick would tie.

Disk use can go over the budget only while entries over it are pinned (several models
loading at once under a small budget); each session ends by evicting back under it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

log = logging.getLogger(__name__)

MIB = 1024 * 1024

NOT_ENTRIES = frozenset({"compiled", "unpacked"})
"""Top-level folders of the cache that are not ``<uri key>`` folders."""


class ModelTooLargeError(ModelLoadError):
    """One model needs more disk than the whole budget (a 413 for a target model)."""

    def __init__(self, size: int, budget: int, *, at_least: bool = False) -> None:
        self.size = size
        self.budget = budget
        self.at_least = at_least
        super().__init__(self.public)

    @property
    def public(self) -> str:
        """What the caller may read.

        >>> print(ModelTooLargeError(100 * MIB, 64 * MIB).public)  # doctest: +NORMALIZE_WHITESPACE
        it needs 100.0 MiB (104857600 bytes) on disk, over the disk budget of
        64.0 MiB (67108864 bytes) per replica
        """
        amount = "at least " if self.at_least else ""
        return (
            f"it needs {amount}{_mib(self.size)} on disk, over the disk budget of "
            f"{_mib(self.budget)} per replica"
        )


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB ({size} bytes)"


@dataclass(frozen=True)
class Entry:
    """One cache entry as a scan found it."""

    path: Path
    size: int
    used: int
    """The folder's mtime in nanoseconds, touched on every pin."""


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def scan(cache_dir: Path) -> tuple[list[Entry], int]:
    """The entries, least recently used first, and the bytes of everything counted
    (entries and downloads in progress; not ``compiled/``)."""
    entries: list[Entry] = []
    if not cache_dir.is_dir():
        return entries, 0
    folders = [p for p in cache_dir.iterdir() if p.is_dir() and p.name not in NOT_ENTRIES]
    total = 0
    for folder in folders:
        for child in folder.iterdir():
            if child.is_dir():
                entries.append(_entry(child))
            else:
                with suppress(FileNotFoundError):
                    total += child.lstat().st_size  # a download in progress
    unpacked = cache_dir / "unpacked"
    if unpacked.is_dir():
        entries += [_entry(child) for child in unpacked.iterdir() if child.is_dir()]
    entries = [e for e in entries if e.used >= 0]
    entries.sort(key=lambda e: e.used)
    return entries, total + sum(e.size for e in entries)


def _entry(path: Path) -> Entry:
    try:
        used = path.stat().st_mtime_ns
    except FileNotFoundError:
        used = -1
    return Entry(path, folder_bytes(path), used)


_stamp_lock = threading.Lock()
_last_stamp = 0


def _stamp(entry: Path) -> None:
    """Mark ``entry`` used now, strictly after every entry this process marked before."""
    global _last_stamp  # noqa: PLW0603 - one clock per process
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        now = _last_stamp
    with suppress(FileNotFoundError):
        os.utime(entry, ns=(now, now))


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


class DiskBudget:
    """The budget of one cache folder, shared by every session of every worker."""

    def __init__(
        self,
        cache_dir: Path,
        max_bytes: int,
        *,
        on_evict: Callable[[Path, int], None] = lambda _path, _size: None,
        on_usage: Callable[[int], None] = lambda _total: None,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._on_usage = on_usage

    @contextmanager
    def folder_lock(self) -> Iterator[None]:
        """The folder-wide lock: pins are taken and entries evicted under it, briefly."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".budget.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check_fits(self, size: int, *, at_least: bool = False) -> None:
        """Refuse a model whose entries alone need more than the budget."""
        if size > self.max_bytes:
            raise ModelTooLargeError(size, self.max_bytes, at_least=at_least)

    def make_room(self, incoming: int = 0) -> int:
        """Evict unpinned entries, least recently used first, until the counted bytes plus
        ``incoming`` fit; return the bytes counted after."""
        with self.folder_lock():
            entries, total = scan(self.cache_dir)
            for entry in entries:
                if total + incoming <= self.max_bytes:
                    break
                if entry.size and self._evict(entry):
                    total -= entry.size
            self._on_usage(total)
            return total

    def _evict(self, entry: Entry) -> bool:
        try:
            fd = _open_dir(entry.path)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned: being read or written
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        log.info(
            "disk budget: evicted %s (%d bytes)", entry.path.relative_to(self.cache_dir), entry.size
        )
        self._on_evict(entry.path, entry.size)
        return True

    @contextmanager
    def session(self) -> Iterator[DiskSession]:
        """Pins for one load, released at the end, then an eviction back under budget."""
        with ExitStack() as stack:
            session = DiskSession(self, stack)
            try:
                yield session
            finally:
                session.stamp()
                stack.close()
                self.make_room()


class DiskSession:
    """The entries one load pins."""

    def __init__(self, budget: DiskBudget, stack: ExitStack) -> None:
        self.budget = budget
        self._stack = stack
        self._pinned: list[Path] = []

    def claim(self, entry: Path) -> Path:
        """Create ``entry`` if needed, pin it and mark it used: it is not evicted until
        the session ends."""
        if entry in self._pinned:
            return entry
        with self.budget.folder_lock():
            entry.mkdir(parents=True, exist_ok=True)
            fd = _open_dir(entry)
            self._stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
            _stamp(entry)
        self._pinned.append(entry)
        return entry

    def stamp(self) -> None:
        """Mark the pinned entries used now, in the order they were pinned."""
        for entry in self._pinned:
            _stamp(entry)

    def check_fits(self, size: int, *, at_least: bool = False) -> None:
        """See :meth:`DiskBudget.check_fits`."""
        self.budget.check_fits(size, at_least=at_least)

    def make_room(self, incoming: int) -> None:
        """See :meth:`DiskBudget.make_room`."""
        self.budget.make_room(incoming)

    @property
    def max_bytes(self) -> int:
        """The budget."""
        return self.budget.max_bytes

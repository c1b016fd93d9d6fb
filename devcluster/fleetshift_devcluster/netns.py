"""Network and mount namespaces the real node lives in, and the commands that enter them.

The project's network namespace (``ip netns add fleetshift-<id>``) holds every address of the
real-node cluster: the node IP (a /32 on the namespace's ``lo``), pod and Service addresses, and
the listening sockets of the control plane. It has no default route, so nothing can leave.

containerd, the kubelet and kube-proxy also share a private mount namespace of their own, kept
alive by a bind mount of ``/proc/<pid>/ns/mnt`` in the state folder. Inside it:

- ``/run`` and ``/var/log`` are folders of the state folder, so containerd's shim sockets and
  runc state, and the kubelet's pod and container logs, never appear on the host;
- the six kernel tunables the kubelet insists on (``vm.overcommit_memory=1``, ``kernel.panic=10``
  and so on) are files bind-mounted over ``/proc/sys``: the kubelet reads the values it wants and
  never writes the host's (global, not per-namespace) settings;
- every mount the node makes (rootfs overlays, volume tmpfs, pod netns files) lives and dies with
  the namespace: unmounting its file when all its processes are gone frees them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

KERNEL_TUNABLES = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}
"""What the kubelet's ``setupKernelTunables`` wants; it writes them when they differ."""


class NamespaceError(RuntimeError):
    """A namespace could not be made or entered."""


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout


def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def create_netns(name: str, addresses: list[str]) -> None:
    """``ip netns add name``, ``lo`` up with ``addresses`` (CIDRs) on it; no other link."""
    _run(["ip", "netns", "add", name])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])
    for address in addresses:
        _run(["ip", "-n", name, "addr", "add", address, "dev", "lo"])


def add_route(name: str, destination: str, device: str, source: str) -> None:
    _run(["ip", "-n", name, "route", "add", destination, "dev", device, "src", source])


def delete_netns(name: str) -> None:
    if netns_exists(name):
        _run(["ip", "netns", "delete", name])


def in_netns(name: str, argv: list[str]) -> list[str]:
    """``argv`` run inside the network namespace ``name``."""
    return ["nsenter", f"--net={netns_path(name)}", *argv]


def in_node(name: str, mount_ns: Path, argv: list[str]) -> list[str]:
    """``argv`` run inside the network namespace and the node's mount namespace."""
    return ["nsenter", f"--net={netns_path(name)}", f"--mount={mount_ns}", *argv]


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """The calling thread inside the network namespace ``name`` for the body, and back where
    it was after. Threads and processes it starts meanwhile are born inside (a new thread or
    a forked child takes its creator's namespaces), so a whole program can run there: the
    real-node demo does, since the apiserver listens only in the namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise NamespaceError(f"setns({name}): {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise NamespaceError(f"setns(back): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(target)
        os.close(home)


class NetnsCaller:
    """Runs Python callables on a thread that entered a network namespace.

    A thread's network namespace is its own (``setns`` affects the calling thread only), so
    sockets this thread opens are the namespace's while the rest of the process stays on
    the host.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=self._enter
        )
        self._lock = threading.Lock()

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns_path(self.name), os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                raise NamespaceError(f"setns({self.name}): {os.strerror(error)}")
        finally:
            os.close(fd)

    def call(self, function: Callable[[], T]) -> T:
        return self._executor.submit(function).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def create_mount_ns(folder: Path, setup: list[list[str]]) -> Path:
    """A private mount namespace kept alive by a bind mount at ``folder/mnt``.

    ``setup`` commands run inside it once (bind mounts of the node's own ``/run`` and so on).
    The namespace file must sit on a private mount, so ``folder`` is bind-mounted onto itself.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _run(["mount", "--bind", str(folder), str(folder)])
    _run(["mount", "--make-private", str(folder)])
    handle = folder / "mnt"
    handle.touch()
    script = " && ".join(" ".join(_quote(a) for a in command) for command in setup) or "true"
    _run(["unshare", f"--mount={handle}", "--propagation=private", "sh", "-c", script])
    return handle


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def mounts_under(folder: Path) -> list[str]:
    """Mount points of this (the host's) mount namespace at or under ``folder``, deepest first."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return sorted(found, key=lambda t: t.count("/"), reverse=True)


def unmount_all_under(folder: Path) -> list[str]:
    """Unmount everything at or under ``folder`` (deepest first); return what is left."""
    for _ in range(3):
        targets = mounts_under(folder)
        if not targets:
            return []
        for target in targets:
            subprocess.run(["umount", target], capture_output=True, check=False)
    left = mounts_under(folder)
    for target in left:
        subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)
    return mounts_under(folder)

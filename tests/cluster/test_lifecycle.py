"""`make cluster` / `make cluster-down` as a user runs them: up, then nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.processes import port_is_free


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetshift_devcluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.cluster
def test_cluster_up_prints_kubeconfig_and_down_leaves_no_process_or_port(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "dev-cluster"

    up = run_cli("up", "--folder", str(folder), "--nodes", "1")

    assert up.returncode == 0, up.stderr
    last_line = up.stdout.strip().splitlines()[-1]
    assert last_line == f"export KUBECONFIG={folder / 'admin.kubeconfig'}"
    cluster = LocalCluster.load(folder)
    pids = [p.pid for p in cluster.processes]
    ports = list(cluster.ports.values())
    try:
        assert cluster.alive()
        assert {p.name for p in cluster.processes} == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        again = run_cli("up", "--folder", str(folder))
        assert again.returncode == 0
        assert "already running" in again.stderr
        assert [p.pid for p in LocalCluster.load(folder).processes] == pids
    finally:
        down = run_cli("down", "--folder", str(folder))

    assert down.returncode == 0, down.stderr
    assert not any(Path(f"/proc/{pid}").exists() and _is_live(pid) for pid in pids)
    assert all(port_is_free(port) for port in ports)
    assert not folder.exists()


def _is_live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cluster_down_without_a_cluster_says_so(tmp_path: Path) -> None:
    down = run_cli("down", "--folder", str(tmp_path / "none"))

    assert down.returncode == 0
    assert "nothing to stop" in down.stderr

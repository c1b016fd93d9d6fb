"""``fleetshift-cluster``: start, stop and inspect the local control plane.

fleetshift-cluster up       # start in the background; last line: export KUBECONFIG=...
fleetshift-cluster up --node real   # plus a real node (containerd, kubelet), all inside a
                                    # network namespace; prints how to run commands in it
fleetshift-cluster down     # stop exactly the processes `up` started
fleetshift-cluster status   # say whether it runs, and where
fleetshift-cluster binaries # find or build the pinned binaries, print their paths
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fleetshift_devcluster import binaries
from fleetshift_devcluster.cluster import ClusterError, LocalCluster, default_folder


def _up(folder: Path, nodes: int, node: str = "kwok") -> int:
    try:
        existing = LocalCluster.load(folder)
    except ClusterError:
        existing = None
    if existing is not None and existing.alive():
        print(f"[cluster] already running at {existing.server}", file=sys.stderr)
        _how_to_use(existing)
        print(f"export KUBECONFIG={existing.kubeconfig}")
        return 0
    if existing is not None:
        existing.stop()
        shutil.rmtree(folder, ignore_errors=True)
    cluster: LocalCluster
    if node == "real":
        from fleetshift_devcluster.realnode import RealNodeCluster  # noqa: PLC0415

        cluster = RealNodeCluster(folder=folder, nodes=nodes)
    else:
        cluster = LocalCluster(folder=folder, nodes=nodes)
    try:
        cluster.start(timeout=180 if node == "real" else 120)
    except (ClusterError, binaries.BuildError) as error:
        print(f"[cluster] error: {error}", file=sys.stderr)
        return 1
    print(f"[cluster] logs: {cluster.logs}", file=sys.stderr)
    _how_to_use(cluster)
    print("[cluster] stop it with: make cluster-down", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _how_to_use(cluster: LocalCluster) -> None:
    """The real node's cluster is reachable only inside its network namespace: say how."""
    netns = getattr(cluster, "netns", None)
    if netns is None:
        return
    kubectl = binaries.cache_dir(binaries.KUBECTL) / "kubectl"
    print(
        f"[cluster] the cluster lives in the network namespace {netns}; run commands inside it:\n"
        f"[cluster]   sudo ip netns exec {netns} env KUBECONFIG={cluster.kubeconfig} "
        f"{kubectl} get nodes -o wide",
        file=sys.stderr,
    )


def _down(folder: Path) -> int:
    try:
        cluster = LocalCluster.load(folder)
    except ClusterError:
        print(f"[cluster] nothing to stop: no cluster in {folder}", file=sys.stderr)
        return 0
    cluster.stop()
    left = [p.name for p in cluster.processes if p.running()]
    if left:
        print(f"[cluster] could not stop: {', '.join(left)}", file=sys.stderr)
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    print("[cluster] stopped", file=sys.stderr)
    return 0


def _status(folder: Path) -> int:
    try:
        cluster = LocalCluster.load(folder)
    except ClusterError:
        print(f"not running (no cluster in {folder})")
        return 1
    for process in cluster.processes:
        print(
            f"{process.name:<24} pid {process.pid:<8} {'running' if process.running() else 'gone'}"
        )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0 if cluster.alive() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleetshift-cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "status", "binaries"])
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="state folder (default: $FLEETSHIFT_CLUSTER_DIR or a temp folder)",
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of kwok nodes (default 3)")
    parser.add_argument(
        "--node",
        choices=["kwok", "real"],
        default="kwok",
        help="kwok only (default), or a real node beside them (root; see docs/real-node.md)",
    )
    args = parser.parse_args(argv)
    folder: Path = args.folder or default_folder()
    if args.command == "up":
        return _up(folder, args.nodes, args.node)
    if args.command == "down":
        return _down(folder)
    if args.command == "status":
        return _status(folder)
    return binaries.main((*binaries.REAL_NODE, *binaries.GATEWAY) if args.node == "real" else ())


if __name__ == "__main__":
    sys.exit(main())

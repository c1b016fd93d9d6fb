"""The local Kubernetes control plane that Fleetshift's tests and demo run on.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, kwok for
fake nodes, and a real Prometheus, all on loopback. See ``cluster.py``.
"""

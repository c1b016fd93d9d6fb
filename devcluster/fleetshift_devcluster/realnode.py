"""A real node beside kwok: containerd, runc, the kubelet and kube-proxy, in a network
namespace the project creates (``fleetshift-cluster up --node real``).

Layout (everything below exists only inside the namespace ``fleetshift-<id>``):

- the node IP ``10.250.0.2/32`` on the namespace's ``lo`` (no dummy module on this VM; the
  kubelet refuses a loopback node IP); no other link but the pods' bridge, no default route,
  so nothing can leave;
- etcd, kube-controller-manager, kube-scheduler and kwok on ``127.0.0.1`` of the namespace; the
  kube-apiserver on the node IP, with that IP and the ``kubernetes`` Service's ClusterIP in its
  certificate and the lease endpoint reconciler on, so ``https://kubernetes.default.svc`` from a
  pod reaches it through kube-proxy as on any cluster;
- pods on the CNI ``bridge`` plugin (``fsbr0``, ``10.244.0.0/24``), Services on ``10.96.0.0/16``
  through kube-proxy in iptables mode (``masqueradeAll``: without ``br_netfilter`` in the pod
  path, replies between pods on one bridge would skip the un-DNAT);
- cluster DNS: CoreDNS as a process in the namespace on ``10.250.0.2:53`` (the kubelet's
  ``clusterDNS``), answering ``cluster.local`` from the apiserver and NXDOMAIN for anything else
  (no ``forward``: there is nowhere to forward to);
- resource metrics: metrics-server as a process in the namespace on ``10.250.0.2:4443``,
  scraping the kubelet, behind the APIService ``v1beta1.metrics.k8s.io`` and a Service without
  selector (``kube-system/metrics-server``) whose Endpoints name that address, so ``kubectl top``
  and CPU HPAs work as on any cluster.

containerd, the kubelet and kube-proxy share the node's own mount namespace (see
:mod:`fleetshift_devcluster.netns`), so their mounts, ``/run`` and ``/var/log`` stay out of the
host's view and the kubelet never writes the host's kernel tunables.

Stopping (:meth:`RealNodeCluster.stop`) deletes the workloads first so the kubelet tears the
sandboxes down itself, removes leftover sandboxes through the CRI, stops every process, kills
any shim or container process still holding the state folder, unmounts everything under it,
removes the kubelet's cgroups, and deletes the namespace.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import yaml

from fleetshift_devcluster import binaries, netns, nodeimages, pki
from fleetshift_devcluster.cluster import SERVICE_CIDR, ClusterError, LocalCluster
from fleetshift_devcluster.processes import ManagedProcess, stop_processes

NODE_NAME = "fleetshift-node"
NODE_IP = "10.250.0.2"
POD_SUBNET = "10.244.0.0/24"
BRIDGE = "fsbr0"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns", "metrics-server")
KUBELET_CGROUP = "kubepods"
METRICS_SERVER_PORT = 4443
"""metrics-server's port on the node IP (inside the namespace only)."""
METRICS_API = "v1beta1.metrics.k8s.io"
METRICS_RESOLUTION = "10s"
"""How often metrics-server scrapes the kubelet (its smallest allowed value; 60 s upstream):
CPU HPAs see load sooner."""


def _progress(message: str) -> None:
    print(f"[realnode] {message}", file=sys.stderr, flush=True)


def netns_name(folder: Path) -> str:
    """The namespace of the cluster in ``folder``: one per state folder.

    >>> netns_name(Path("/tmp/x"))
    'fleetshift-2e56aa36'
    """
    return "fleetshift-" + hashlib.sha256(str(folder).encode()).hexdigest()[:8]


def check_host() -> None:
    """The real node needs root and a few Debian tools; say which are missing."""
    if os.geteuid() != 0:
        raise ClusterError("the real node needs root (namespaces, mounts, cgroups)")
    missing = [tool for tool in ("ip", "nsenter", "unshare", "iptables") if not shutil.which(tool)]
    if missing:
        raise ClusterError(
            f"the real node needs {', '.join(missing)} (Debian: iproute2, util-linux, iptables)"
        )


class RealNodeCluster(LocalCluster):
    """The local control plane plus one real node, all inside a network namespace."""

    api_host = NODE_IP
    node_kind = "real"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.netns = netns_name(self.folder)
        self._caller: netns.NetnsCaller | None = None

    # -- paths -------------------------------------------------------------------------

    @property
    def node_dir(self) -> Path:
        return self.folder / "node"

    @property
    def mount_ns(self) -> Path:
        return self.folder / "ns" / "mnt"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    def run_inside(self, argv: list[str]) -> list[str]:
        """``argv`` as a command inside the cluster's network namespace."""
        return netns.in_netns(self.netns, argv)

    def kubectl(self, *args: str) -> list[str]:
        """A kubectl command line (admin) that runs inside the namespace."""
        kubectl = (
            binaries.find(binaries.KUBECTL) or binaries.cache_dir(binaries.KUBECTL) / "kubectl"
        )
        return self.run_inside([str(kubectl), f"--kubeconfig={self.kubeconfig}", *args])

    # -- LocalCluster hooks ------------------------------------------------------------

    def _binaries(self) -> tuple[binaries.Binary, ...]:
        return (*binaries.CONTROL_PLANE, binaries.KUBECTL, *binaries.REAL_NODE)

    def _clients(self) -> tuple[pki.ClientIdentity, ...]:
        return (
            *pki.CLIENTS,
            pki.node_client(NODE_NAME),
            pki.KUBE_PROXY,
            pki.APISERVER_KUBELET_CLIENT,
            pki.COREDNS,
            pki.METRICS_SERVER,
            pki.FRONT_PROXY_CLIENT,
        )

    def _write_pki(self) -> pki.Pki:
        return pki.write_pki(
            self.folder / "pki",
            clients=self._clients(),
            ip_addresses=("127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP),
        )

    def _prepare(self) -> None:
        check_host()
        others = sorted(str(p) for p in CGROUP_ROOT.glob(f"*/{KUBELET_CGROUP}"))
        if others:
            raise ClusterError(
                f"another kubelet's pod cgroups exist ({others[0]}): one real node per machine; "
                "stop the other with `fleetshift-cluster down --folder <its folder>`"
            )
        if netns.netns_exists(self.netns):
            raise ClusterError(
                f"the network namespace {self.netns} exists already: "
                f"`fleetshift-cluster down --folder {self.folder}` removes it"
            )
        netns.create_netns(self.netns, [f"{NODE_IP}/32"])
        # Without a default route, a connection from the namespace itself to a ClusterIP has
        # no route to be DNATed from (the apiserver reaches webhooks and APIServices so).
        # Through `lo`: kube-proxy's DNAT reroutes it to the pod's bridge.
        netns.add_route(self.netns, SERVICE_CIDR, "lo", NODE_IP)
        self._save_marker()

    def _spawn(self, name: str, argv: list[str]) -> None:
        if name in ("containerd", "kubelet", "kube-proxy"):
            wrapped = netns.in_node(self.netns, self.mount_ns, argv)
        else:
            wrapped = netns.in_netns(self.netns, argv)
        super()._spawn(name, wrapped)

    def _apiserver_args(self, apiserver: Path, keys: pki.Pki) -> list[str]:
        dropped = ("--bind-address=", "--advertise-address=", "--endpoint-reconciler-type=")
        args = [a for a in super()._apiserver_args(apiserver, keys) if not a.startswith(dropped)]
        return [
            *args,
            f"--bind-address={NODE_IP}",
            f"--advertise-address={NODE_IP}",
            # The apiserver reaches the kubelet (logs, exec, metrics) by the node's InternalIP:
            # the node's name resolves nowhere here.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={keys.client_cert(pki.APISERVER_KUBELET_CLIENT)}",
            f"--kubelet-client-key={keys.client_key(pki.APISERVER_KUBELET_CLIENT)}",
            # The aggregator (metrics.k8s.io -> metrics-server) proxies as front-proxy-client
            # and passes the caller in headers, which metrics-server trusts from that name.
            f"--proxy-client-cert-file={keys.client_cert(pki.FRONT_PROXY_CLIENT)}",
            f"--proxy-client-key-file={keys.client_key(pki.FRONT_PROXY_CLIENT)}",
            f"--requestheader-client-ca-file={keys.ca_cert}",
            f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT.user}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        ]

    def _caller_for_netns(self) -> netns.NetnsCaller:
        if self._caller is None:
            self._caller = netns.NetnsCaller(self.netns)
        return self._caller

    def request(self, method: str, path: str, body: object | None = None) -> object:
        parent = super().request
        return self._caller_for_netns().call(lambda: parent(method, path, body))

    def _wait_http(self, url: str, deadline: float, what: str) -> None:
        parent = super()._wait_http
        self._caller_for_netns().call(lambda: parent(url, deadline, what))

    def _start_node(self, paths: dict[str, Path], deadline: float) -> None:
        started = time.monotonic()
        self._make_mount_ns()
        self._start_containerd(paths)
        self._import_images(paths["ctr"], deadline)
        self._start_kubelet(paths["kubelet"])
        self._start_kube_proxy(paths["kube-proxy"])
        self._start_coredns(paths["coredns"])
        self._start_metrics_server(paths["metrics-server"])
        self._wait_real_node_ready(deadline)
        _progress(
            f"node {NODE_NAME} Ready {time.monotonic() - started:.1f}s after the control plane"
        )

    # -- the node ----------------------------------------------------------------------

    def _save_marker(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def _make_mount_ns(self) -> None:
        run = self.node_dir / "run"
        log = self.node_dir / "log"
        sysctl = self.node_dir / "sysctl"
        for folder in (run, log, sysctl):
            folder.mkdir(parents=True, exist_ok=True)
        setup = [["mount", "--bind", str(run), "/run"], ["mount", "--bind", str(log), "/var/log"]]
        for name, value in netns.KERNEL_TUNABLES.items():
            fake = sysctl / name.replace("/", ".")
            fake.write_text(f"{value}\n")
            setup.append(["mount", "--bind", "-o", "ro", str(fake), f"/proc/sys/{name}"])
        netns.create_mount_ns(self.mount_ns.parent, setup)

    def _containerd_config(self, paths: dict[str, Path]) -> str:
        root = self.node_dir / "containerd"
        cni_bin = paths["bridge"].parent
        return f"""\
version = 3
root = '{root / "root"}'
state = '{root / "state"}'
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '{self.containerd_socket}'

[plugins.'io.containerd.internal.v1.opt']
  path = '{root / "opt"}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{nodeimages.PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # No CAP_SYS_RESOURCE on this VM: a negative oom_score_adj fails every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{paths["runc"]}'
        Root = '{root / "runc"}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni_bin}']
    conf_dir = '{self.node_dir / "cni"}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""

    def _start_containerd(self, paths: dict[str, Path]) -> None:
        cni = self.node_dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-fleetshift.conflist").write_text(
            json.dumps(cni_config(self.node_dir / "ipam"), indent=2)
        )
        config = self.node_dir / "containerd.toml"
        config.write_text(self._containerd_config(paths))
        # The shim is found on PATH, next to containerd.
        shim_dir = paths["containerd-shim-runc-v2"].parent
        self._spawn(
            "containerd",
            [
                "env",
                f"PATH={shim_dir}:{paths['runc'].parent}:/usr/sbin:/usr/bin:/sbin:/bin",
                str(paths["containerd"]),
                f"--config={config}",
                "--log-level=warn",
            ],
        )

    def _import_images(self, ctr: Path, deadline: float) -> None:
        archive = nodeimages.write_node_images(self.node_dir / "images.tar")
        last = ""
        while time.monotonic() < deadline:
            self._check_processes("containerd")
            try:
                self.import_image(archive, ctr)
            except ClusterError as error:
                last = str(error)
                time.sleep(0.2)
            else:
                return
        raise ClusterError(f"could not import the node's images into containerd: {last}")

    def import_image(self, archive: Path, ctr: Path | None = None) -> None:
        """``ctr -n k8s.io images import archive`` (OCI or docker-archive) into the node."""
        ctr = ctr or binaries.find(binaries.CTR)
        if ctr is None:
            raise ClusterError("ctr is not built: fleetshift-cluster binaries --node real")
        done = subprocess.run(
            [
                str(ctr),
                f"--address={self.containerd_socket}",
                "--namespace=k8s.io",
                "images",
                "import",
                str(archive),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"ctr images import {archive}: {done.stderr.strip()}")

    def _start_kubelet(self, kubelet: Path) -> None:
        keys = self.keys
        root = self.node_dir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        resolv = self.node_dir / "resolv.conf"
        resolv.write_text("")
        config = self.node_dir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(kubelet_config(keys.ca_cert, self.containerd_socket, resolv))
        )
        self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={config}",
                f"--kubeconfig={self.folder / 'kubelet.kubeconfig'}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, kube_proxy: Path) -> None:
        config = self.node_dir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(self.folder / "kube-proxy.kubeconfig")))
        self._spawn(
            "kube-proxy",
            [str(kube_proxy), f"--config={config}", f"--hostname-override={NODE_NAME}", "--v=1"],
        )

    def _start_coredns(self, coredns: Path) -> None:
        for kind, document in coredns_rbac():
            with contextlib.suppress(urllib.error.HTTPError):
                self.request("POST", f"/apis/rbac.authorization.k8s.io/v1/{kind}", document)
        corefile = self.node_dir / "Corefile"
        corefile.write_text(corefile_text(self.folder / "coredns.kubeconfig"))
        self._spawn("coredns", [str(coredns), "-conf", str(corefile)])

    def _start_metrics_server(self, metrics_server: Path) -> None:
        keys = self.keys
        cert, key = pki.write_serving_cert(
            keys, "metrics-server-serving", metrics_server_dns_names(), (NODE_IP,)
        )
        for path, document in metrics_server_objects(keys.ca_cert.read_bytes()):
            with contextlib.suppress(urllib.error.HTTPError):  # already there: a restart
                self.request("POST", path, document)
        kubeconfig = self.folder / f"{pki.METRICS_SERVER.file_stem}.kubeconfig"
        self._spawn(
            "metrics-server",
            [
                str(metrics_server),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={METRICS_SERVER_PORT}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--requestheader-client-ca-file={keys.ca_cert}",
                f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT.user}",
                # The kubelet's serving certificate is self-signed (no TLS bootstrap here).
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                # kwok's nodes have no kubelet to scrape.
                f"--node-selector=kubernetes.io/hostname={NODE_NAME}",
                f"--metric-resolution={METRICS_RESOLUTION}",
                # Below the resolution, which it must be.
                "--kubelet-request-timeout=5s",
                "--v=1",
            ],
        )

    def _wait_real_node_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_processes(f"node {NODE_NAME} to be Ready")
            with contextlib.suppress(urllib.error.HTTPError):
                node = self.request("GET", f"/api/v1/nodes/{NODE_NAME}")
                assert isinstance(node, dict)
                conditions = node.get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return
            time.sleep(0.3)
        raise ClusterError(
            f"node {NODE_NAME} did not become Ready; kubelet log: {self.logs / 'kubelet.log'}"
        )

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Delete workloads, stop every process, and remove every trace of the node."""
        if not (
            netns.netns_exists(self.netns)
            or netns.mounts_under(self.folder)
            or any(p.running() for p in self.processes)
        ):
            # The node never started (or is gone): there is nothing of ours to clean.
            super().stop()
            return
        phases: list[str] = []
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases.append(f"{name} {now - mark:.1f}s")
            mark = now

        if self.alive_process("kube-apiserver") and self.alive_process("kubelet"):
            try:
                self._delete_workloads(timeout=60)
            except Exception as error:  # stopping goes on whatever happens
                _progress(f"could not delete workloads cleanly: {error}")
        phase("workloads")
        self._remove_sandboxes()
        phase("sandboxes")
        node = [p for p in self.processes if p.name in NODE_PROCESSES]
        stop_processes(list(reversed(node)), grace=15)
        self.processes = [p for p in self.processes if p.name not in NODE_PROCESSES]
        phase("node")
        # The state folder goes next: 3 s of grace, not 10 (the apiserver, its kubelet gone,
        # would use them all).
        stop_processes(list(reversed(self.processes)), grace=3)
        super().stop()
        if self._caller is not None:
            self._caller.close()
            self._caller = None
        # Shims outlive containerd; a container process may outlive its shim.
        kill_processes_of(self.folder)
        phase("control plane, shims")
        left = netns.unmount_all_under(self.folder)
        if left:
            _progress(f"still mounted: {left}")
        remove_kubelet_cgroups()
        netns.delete_netns(self.netns)
        phase("mounts, cgroups, namespace")
        _progress("stopped: " + ", ".join(phases))

    def alive_process(self, name: str) -> bool:
        return any(p.name == name and p.running() for p in self.processes)

    def _delete_workloads(self, timeout: float) -> None:
        """Owners first (foreground, so their pods go too), then any pod left on the node."""
        kinds = "deployments,replicasets,statefulsets,daemonsets,jobs"
        for args in (
            ("delete", kinds, "--all-namespaces", "--all", "--cascade=foreground", "--wait=false"),
            (
                "delete",
                "pods",
                "--all-namespaces",
                f"--field-selector=spec.nodeName={NODE_NAME}",
                # A development cluster going away: 1 s instead of each pod's own grace period.
                "--grace-period=1",
                "--wait=false",
            ),
        ):
            subprocess.run(self.kubectl(*args), capture_output=True, timeout=30, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")
            assert isinstance(listed, dict)
            # Stopped sandboxes are torn down (network, mounts); the kubelet removes them only
            # in its next garbage collection, up to a minute later: _remove_sandboxes does.
            if not listed.get("items") and not self._sandboxes(ready_only=True):
                return
            time.sleep(0.3)
        raise ClusterError(f"pods on {NODE_NAME} were not gone after {timeout:.0f}s")

    def _crictl(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        crictl = binaries.find(binaries.CRICTL)
        if crictl is None or not self.containerd_socket.exists():
            return None
        return subprocess.run(
            [str(crictl), f"--runtime-endpoint=unix://{self.containerd_socket}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def _sandboxes(self, *, ready_only: bool = False) -> list[str]:
        done = self._crictl("pods", "--quiet", *(["--state=ready"] if ready_only else []))
        if done is None or done.returncode != 0:
            return []
        return done.stdout.split()

    def _remove_sandboxes(self) -> None:
        """Sandboxes the kubelet did not tear down (it was gone, or too slow), via the CRI."""
        if not self.alive_process("containerd"):
            return
        for sandbox in self._sandboxes():
            self._crictl("stopp", sandbox)
            self._crictl("rmp", "--force", sandbox)


def _ancestors() -> set[int]:
    """This process and its parents (a ``down --folder X`` shell names the folder too)."""
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _command_lines() -> Iterator[tuple[int, str, str]]:
    """``(pid, command line, cgroups)`` of every process but this one and its parents."""
    skip = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        yield int(entry.name), cmdline.strip(), cgroups


def kill_processes_of(folder: Path) -> list[int]:
    """SIGKILL every process whose command line names ``folder`` (shims, which outlive
    containerd) or that runs in the kubelet's pod cgroups (containers); return their PIDs."""
    marker = str(folder)
    found = [
        pid
        for pid, cmdline, cgroups in _command_lines()
        if marker in cmdline or f":/{KUBELET_CGROUP}/" in cgroups
    ]
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def remove_kubelet_cgroups() -> None:
    """The kubelet's ``kubepods`` cgroup trees, deepest first, in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        tree = hierarchy / KUBELET_CGROUP
        if not tree.is_dir():
            continue
        for folder in sorted(
            (p for p in tree.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            tree.rmdir()


def processes_of(folder: Path) -> list[str]:
    """Processes whose command line names ``folder``: ``pid command`` each."""
    marker = str(folder)
    return [f"{pid} {cmdline}" for pid, cmdline, _ in _command_lines() if marker in cmdline]


def cni_config(ipam_dir: Path) -> dict[str, object]:
    """The pods' network: a bridge with the namespace side as gateway, and hostPort mapping."""
    return {
        "cniVersion": "1.0.0",
        "name": "fleetshift",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_SUBNET}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(ca: Path, containerd_socket: Path, resolv: Path) -> dict[str, object]:
    """The kubelet's configuration, with what this VM needs (see docs/real-node.md)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Kubernetes 1.35 refuses cgroup v1 unless told; it then only warns.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        "resolvConf": str(resolv),
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        # Images cannot be pulled again: never collect them, never evict for a full disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "maxPods": 110,
        # ConfigMap volumes (the shadows file production pods read) are refreshed on the
        # pod's sync: every 10 s here, 1 min by default.
        "syncFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": POD_SUBNET,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "iptables": {"masqueradeAll": True},
        # 0 leaves the kernel's conntrack settings as they are (they are not all per namespace).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile_text(kubeconfig: Path) -> str:
    """CoreDNS on the node IP: the cluster domain from the apiserver, NXDOMAIN for the rest."""
    return f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} fleetshift-local
        pods insecure
    }}
    cache 5
}}
.:53 {{
    bind {NODE_IP}
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def coredns_rbac() -> list[tuple[str, dict[str, object]]]:
    """What CoreDNS's ``kubernetes`` plugin reads, for the ``system:fleetshift-coredns`` user."""
    name = "system:fleetshift-coredns"
    return [
        (
            "clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
        ),
        (
            "clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}
                ],
            },
        ),
    ]


def metrics_server_dns_names() -> tuple[str, ...]:
    """The names the aggregator checks metrics-server's certificate against (``<svc>.<ns>.svc``)."""
    return ("metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local")


def metrics_server_objects(ca_bundle: bytes) -> list[tuple[str, dict[str, object]]]:
    """``(collection path, object)`` to POST for metrics-server: its RBAC (read nodes and pods,
    scrape the kubelet, delegate authentication and authorization), a Service without selector
    and its Endpoints naming the process's address in the namespace, and the APIService."""
    user = pki.METRICS_SERVER.user
    subjects = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    rbac = "/apis/rbac.authorization.k8s.io/v1"

    def binding(
        kind: str, name: str, role_kind: str, role: str, namespace: str = ""
    ) -> dict[str, object]:
        metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects,
        }

    return [
        (
            f"{rbac}/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": user},
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "nodes"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            },
        ),
        (
            f"{rbac}/clusterrolebindings",
            binding("ClusterRoleBinding", user, "ClusterRole", user),
        ),
        (
            f"{rbac}/clusterrolebindings",
            binding(
                "ClusterRoleBinding",
                f"{user}:auth-delegator",
                "ClusterRole",
                "system:auth-delegator",
            ),
        ),
        (
            f"{rbac}/namespaces/kube-system/rolebindings",
            binding(
                "RoleBinding",
                f"{user}:auth-reader",
                "Role",
                "extension-apiserver-authentication-reader",
                "kube-system",
            ),
        ),
        (
            "/api/v1/namespaces/kube-system/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "spec": {
                    "ports": [{"name": "https", "port": 443, "targetPort": METRICS_SERVER_PORT}]
                },
            },
        ),
        (
            # The controller-manager mirrors it into an EndpointSlice for kube-proxy.
            "/api/v1/namespaces/kube-system/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "subsets": [
                    {
                        "addresses": [{"ip": NODE_IP}],
                        "ports": [{"name": "https", "port": METRICS_SERVER_PORT}],
                    }
                ],
            },
        ),
        (
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": METRICS_API},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ),
    ]


@contextlib.contextmanager
def running_real_node(folder: Path, nodes: int = 0) -> Iterator[RealNodeCluster]:
    """Start a real-node cluster in ``folder`` and stop it on exit, whatever happens."""
    cluster = RealNodeCluster(folder=folder, nodes=nodes)
    try:
        cluster.start(timeout=180)
        yield cluster
    finally:
        cluster.stop()


__all__ = [
    "NODE_IP",
    "NODE_NAME",
    "SERVICE_CIDR",
    "ManagedProcess",
    "RealNodeCluster",
    "running_real_node",
]

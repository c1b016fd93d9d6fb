"""A real Prometheus server on a loopback port, with a config the caller gives.

The binary comes from Debian's ``prometheus`` package (``make tools`` installs
it when it is not on PATH).
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from fleetshift_devcluster.cluster import ClusterError, free_port
from fleetshift_devcluster.processes import ManagedProcess, port_is_free, stop_processes


def prometheus_binary() -> Path:
    """The ``prometheus`` executable, or a clear error saying how to install it."""
    found = shutil.which("prometheus")
    if found is None:
        raise ClusterError(
            "prometheus is not on PATH: run `make tools` (it runs "
            "`apt-get install prometheus`) or put a prometheus binary on PATH"
        )
    return Path(found)


@dataclasses.dataclass
class LocalPrometheus:
    """A Prometheus process serving on ``127.0.0.1:<port>``."""

    folder: Path
    port: int = 0
    process: ManagedProcess | None = None
    web_config: dict[str, object] | None = None
    """Prometheus's ``--web.config.file`` content: TLS and basic auth on its own API."""
    ca_file: Path | None = None
    """The CA that signed the TLS certificate of ``web_config`` (for the readiness check)."""
    basic_auth: tuple[str, str] | None = None
    """The user name and password the readiness check sends."""
    host: str = "127.0.0.1"
    """The address it listens on (the real node's IP, inside its namespace, for pods)."""
    binary: Path | None = None
    """The executable; Debian's (:func:`prometheus_binary`) when None."""

    @property
    def url(self) -> str:
        tls = self.web_config is not None and "tls_server_config" in self.web_config
        return f"{'https' if tls else 'http'}://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / "prometheus.yml"

    def write_config(self, config: dict[str, object]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, config: dict[str, object], timeout: float = 30.0) -> None:
        """Write ``config`` and start Prometheus; return once it reports ready."""
        self.write_config(config)
        if not self.port:
            self.port = free_port()
        arguments = [
            str(self.binary or prometheus_binary()),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        if self.web_config is not None:
            web = self.folder / "web.yml"
            web.write_text(yaml.safe_dump(self.web_config, sort_keys=False))
            arguments.append(f"--web.config.file={web}")
        self.process = ManagedProcess.spawn(
            "prometheus",
            arguments,
            self.folder / "prometheus.log",
            cwd=self.folder,
        )
        self._wait_ready(time.monotonic() + timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Start again on the same port, with the same config and data (after ``stop``)."""
        self.start(yaml.safe_load(self.config_path.read_text()), timeout=timeout)

    def reload(self, config: dict[str, object]) -> None:
        """Replace the config and ask the running server to reload it."""
        self.write_config(config)
        request = self._request("/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()):  # noqa: S310
            pass

    def _request(self, path: str, method: str = "GET") -> urllib.request.Request:
        request = urllib.request.Request(f"{self.url}{path}", method=method)  # noqa: S310
        if self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def port_free(self) -> bool:
        return port_is_free(self.port)

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if not self.process.running():
                raise ClusterError(f"prometheus exited:\n{self.process.log_tail()}")
            try:
                with urllib.request.urlopen(  # noqa: S310 - a loopback URL we built
                    self._request("/-/ready"), timeout=2, context=self._ssl_context()
                ) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ClusterError(f"prometheus did not become ready on {self.url}")


def kubernetes_pods_config(kubeconfig: Path, namespaces: list[str]) -> dict[str, object]:
    """Scrape every fleet pod of ``namespaces`` found through the Kubernetes API, as the
    chart's PodMonitor selects them (the endpoint label, the container port named
    ``metrics``), every second, keeping the runtime's own labels and adding the ``pod``
    (prometheus-adapter maps it to the pod resource). Needs a Prometheus with Kubernetes
    discovery, which Debian's lacks (``binaries.PROMETHEUS``).

    >>> job = kubernetes_pods_config(Path("/k/config"), ["ml"])["scrape_configs"][0]
    >>> job["kubernetes_sd_configs"][0]["namespaces"]
    {'names': ['ml']}
    >>> [r.get("action", "replace") for r in job["relabel_configs"]]
    ['keep', 'keep', 'replace']
    """
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "fleetshift-pods",
                "honor_labels": True,
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "kubeconfig_file": str(kubeconfig),
                        "namespaces": {"names": namespaces},
                    }
                ],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_label_fleetshift_dev_endpoint"],
                        "regex": ".+",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "metrics",
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }

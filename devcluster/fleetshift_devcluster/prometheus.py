"""A real Prometheus server on a loopback port, with a config the caller gives.

The binary comes from Debian's ``prometheus`` package (``make tools`` installs
it when it is not on PATH).
"""

from __future__ import annotations

import dataclasses
import shutil
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        self.process = ManagedProcess.spawn(
            "prometheus",
            [
                str(prometheus_binary()),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
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
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

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
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ClusterError(f"prometheus did not become ready on {self.url}")

"""``python -m fleetshift_runtime``: serve the model configured by ``FLEETSHIFT_*``.

One worker: the model loads in the background while the port already answers
liveness probes; readiness (``/ping``) turns 200 after the warm-up prediction, and a
load failure stops the process with exit code 1.

Several workers (``FLEETSHIFT_WORKERS``): the parent fetches and checks the artifact
once (so a bad artifact fails fast, and workers load from the local cache), serves
``/metrics`` aggregated over the workers, and runs uvicorn's process supervisor.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import uvicorn

from .protocol import ConnectionLimits, NoDelayHttpToolsProtocol
from .settings import RuntimeSettings

log = logging.getLogger("fleetshift_runtime")


def _uvicorn_options(settings: RuntimeSettings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": settings.event_loop,
        "http": NoDelayHttpToolsProtocol,
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "log_level": settings.log_level,
        "backlog": 2048,
    }


def _check_artifact(settings: RuntimeSettings) -> None:
    """Fetch the artifact and refuse formats that would fail in every worker."""
    from .errors import ModelLoadError  # noqa: PLC0415 - keeps `--help`-like paths light
    from .models.formats import detect_format  # noqa: PLC0415
    from .sources import fetch_model_file, source_options  # noqa: PLC0415

    path = fetch_model_file(
        settings.model_uri, source_options(settings), sha256=settings.model_sha256
    )
    with path.open("rb") as handle:
        fmt = detect_format(handle.read(16))
    if fmt in ("pickle", "joblib") and not settings.allow_pickle:
        raise ModelLoadError(
            f"model file {path} is a Python {fmt} file; refused (FLEETSHIFT_ALLOW_PICKLE)"
        )


def main() -> int:
    """Run the server until it is stopped; return the process exit code."""
    settings = RuntimeSettings()
    NoDelayHttpToolsProtocol.limits = ConnectionLimits.from_settings(settings)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.workers == 1:
        from . import app as app_module  # noqa: PLC0415
        from .metrics import serve_metrics  # noqa: PLC0415

        runtime = app_module.Runtime(settings)
        serve_metrics(settings.host, settings.metrics_port, runtime.metrics.registry)
        server = uvicorn.Server(uvicorn.Config(runtime, **_uvicorn_options(settings)))  # type: ignore[arg-type]

        def stop() -> None:
            server.should_exit = True

        runtime.on_fatal = stop
        server.run()
        return app_module.exit_code

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fleetshift-metrics-")
    from .errors import ModelLoadError  # noqa: PLC0415
    from .metrics import serve_metrics  # noqa: PLC0415

    if not settings.multi_model:
        try:
            _check_artifact(settings)
        except ModelLoadError as error:
            log.error("model failed to load: %s", error)
            return 1
    serve_metrics(settings.host, settings.metrics_port, None)
    uvicorn.run(
        "fleetshift_runtime.app:create_app",
        factory=True,
        workers=settings.workers,
        **_uvicorn_options(settings),  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The cold routes: Open Inference Protocol metadata and readiness per model, OpenAPI docs.

Imported on the first request that needs it (see ``Runtime.fastapi``), so importing
FastAPI never delays the first prediction. It does not import ``app``: what it needs
from the runtime is the :class:`Server` protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from . import __version__
from .codecs import INPUT_NAME, OUTPUT_NAME, oip_model_name
from .errors import ModelLoadError, NotReadyError, RequestError
from .models.base import Model
from .models.multi import ModelCache
from .settings import RuntimeSettings


class SingleModel(Protocol):
    """Where single-model mode's model is in its life."""

    @property
    def status(self) -> str:
        """``loading``, ``ready`` or ``failed``."""
        ...


class Server(Protocol):
    """What the cold routes need from the runtime (``app.Runtime``), named here so that
    this module does not import ``app``, which imports it."""

    settings: RuntimeSettings
    cache: ModelCache | None

    @property
    def single(self) -> SingleModel:
        """Single-model mode's state."""
        ...

    async def resolve_model(self, name: str | None) -> Model:
        """The model a request addresses."""
        ...

    def width_for(self, model: Model) -> int:
        """The endpoint's input width for ``model``."""
        ...


def metadata_app(runtime: Server) -> FastAPI:
    """Metadata routes (cold paths) as a FastAPI app, with OpenAPI docs at /docs."""
    app = FastAPI(
        title="Fleetshift model runtime",
        version=__version__,
        description="SageMaker-compatible and Open Inference Protocol v2 model server.",
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        """FastAPI's own errors (unknown path, wrong method) as ``{"error": ...}``."""
        if error.status_code == 404:
            reason = f"no route {request.method} {request.url.path[:200]}; /docs lists the routes"
        elif error.status_code == 405:
            headers = {k.lower(): v for k, v in (error.headers or {}).items()}
            allowed = headers.get("allow", "GET")
            reason = (
                f"method {request.method} not allowed on {request.url.path[:200]}; use {allowed}"
            )
        else:
            reason = str(error.detail)
        return JSONResponse({"error": reason}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        """A request the routes' declared parameters refuse, as ``{"error": ...}``."""
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse(
            {"error": f"invalid request: {where}: {first.get('msg', 'invalid')}"}, status_code=400
        )

    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, str]]:
        """The models this server holds, as Triton's model repository extension lists them."""
        if runtime.cache is not None:
            return [{"name": name, "state": "READY"} for name in runtime.cache.loaded_names]
        state = {"ready": "READY", "loading": "LOADING"}.get(runtime.single.status, "UNAVAILABLE")
        return [{"name": runtime.settings.model_name, "state": state}]

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        """Open Inference Protocol server metadata."""
        return {
            "name": "fleetshift-runtime",
            "version": __version__,
            "extensions": ["binary_tensor_data"],
        }

    async def _model_or_error(name: str) -> Model | Response:
        try:
            return await runtime.resolve_model(name)
        except RequestError as error:
            return JSONResponse({"error": error.reason}, status_code=error.status)
        except NotReadyError as error:
            return JSONResponse({"error": f"not ready: {error}"}, status_code=503)
        except ModelLoadError as error:
            return JSONResponse({"error": f"model could not be loaded: {error}"}, status_code=500)

    @app.get("/v2/models/{name:path}/ready")
    async def model_ready(name: str) -> Response:
        """200 when the model can serve; 503 while it loads; 404 for unknown models."""
        found = await _model_or_error(oip_model_name("/v2/models/" + name))
        if isinstance(found, Response):
            return found
        return JSONResponse({"name": found.name, "ready": True})

    @app.get("/v2/models/{name:path}")
    async def model_metadata(name: str) -> Response:
        """Open Inference Protocol model metadata: input and output tensors."""
        found = await _model_or_error(oip_model_name("/v2/models/" + name))
        if isinstance(found, Response):
            return found
        width = runtime.width_for(found)
        return JSONResponse(
            {
                "name": found.name,
                "platform": found.platform,
                "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, width]}],
                "outputs": [
                    {
                        "name": OUTPUT_NAME,
                        "datatype": "FP32",
                        "shape": [-1, *found.output_shape],
                    }
                ],
                "parameters": {
                    "model_num_features": found.num_features,
                    "endpoint_num_features": width,
                    "predictor": found.predictor_name,
                },
            }
        )

    return app

"""Fleetshift's model-serving runtime (FastAPI + XGBoost).

In process, without a server: ``fleetshift_runtime.load(uri, **options)`` returns a
:class:`~fleetshift_runtime.api.LoadedModel` whose ``predict`` takes a numpy array (see
:mod:`fleetshift_runtime.api`). It is imported on first use, so the server, which imports
this package first, does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import LoadedModel, load

__version__ = "0.1.0"
__all__ = ["LoadedModel", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "LoadedModel"):
        from . import api  # noqa: PLC0415 - the public API is loaded on first use

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

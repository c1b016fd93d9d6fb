"""Multi-model mode: load on first use, share concurrent loads, evict least recently used.

SageMaker's multi-model endpoints pick the model per request with ``TargetModel``, a
path relative to the endpoint's model prefix. :class:`ModelCache` keeps loaded models in
LRU order within a count and a memory budget (estimated by model file size). When
several requests ask for a model that is not loaded, one load runs and all of them wait
for it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RequestError
from ..metrics import RuntimeMetrics
from .base import Model

TARGET_MODEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,1023}")


def check_target_model(name: str) -> str:
    """Validate a ``TargetModel`` value: a relative path under the prefix.

    >>> check_target_model("Chicago_IL/Chicago_IL.tar.gz")
    'Chicago_IL/Chicago_IL.tar.gz'
    >>> check_target_model("../secrets")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fleetshift_runtime.errors.RequestError: target model '../secrets' must be a relative path...

    One model has one name: ``bin20/./`` and ``bin20/`` would load copies of ``bin20``.

    >>> check_target_model("bin20/./")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fleetshift_runtime.errors.RequestError: target model 'bin20/./' must be a relative path...
    """
    segments = name.split("/")
    if (
        not TARGET_MODEL_PATTERN.fullmatch(name)
        or ".." in segments
        or "." in segments
        or "" in segments
    ):
        raise RequestError(
            400,
            f"target model {name[:100]!r} must be a relative path of letters, digits, "
            "'.', '_', '-' and '/', without '.' or '..' segments, '//' or a trailing '/' "
            "(one name per model)",
        )
    return name


@dataclass
class CacheStats:
    """What one lookup did, for metrics."""

    hit: bool
    waited_seconds: float


class ModelCache:
    """LRU of loaded models with single-flight loading."""

    def __init__(
        self,
        loader: Callable[[str], Model],
        *,
        max_models: int,
        max_bytes: int,
        metrics: RuntimeMetrics,
    ) -> None:
        self._loader = loader
        self._max_models = max_models
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._loaded: OrderedDict[str, Model] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Model]] = {}
        self.loads = 0
        self.evictions = 0

    @property
    def loaded_names(self) -> list[str]:
        """Loaded models, least recently used first."""
        return list(self._loaded)

    async def get(self, name: str) -> tuple[Model, CacheStats]:
        """The loaded model, loading it (once, however many ask) if needed."""
        model = self._loaded.get(name)
        if model is not None:
            self._loaded.move_to_end(name)
            self._metrics.cache_hits_child.inc()
            return model, CacheStats(hit=True, waited_seconds=0.0)
        self._metrics.cache_misses_child.inc()
        started = time.perf_counter()
        future = self._loading.get(name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._loading[name] = future
            asyncio.get_running_loop().create_task(self._load(name, future))
        model = await asyncio.shield(future)
        waited = time.perf_counter() - started
        self._metrics.model_loading_wait_child.observe(waited)
        return model, CacheStats(hit=False, waited_seconds=waited)

    async def _load(self, name: str, future: asyncio.Future[Model]) -> None:
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._loader, name)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters may all be gone
            return
        finally:
            self._loading.pop(name, None)
        self.loads += 1
        label = self._metrics.model_label(name)
        self._metrics.model_load.labels(**self._metrics.labels, model=label).observe(
            time.perf_counter() - started
        )
        self._loaded[name] = model
        self._loaded.move_to_end(name)
        self._evict(keep=name)
        self._metrics.loaded_models_child.set(len(self._loaded))
        future.set_result(model)

    def _evict(self, keep: str) -> None:
        def over_budget() -> bool:
            total = sum(m.size_bytes for m in self._loaded.values())
            return len(self._loaded) > self._max_models or total > self._max_bytes

        while over_budget() and len(self._loaded) > 1:
            oldest = next(iter(self._loaded))
            if oldest == keep:  # pragma: no cover - keep is always the newest
                break
            del self._loaded[oldest]
            self.evictions += 1
            self._metrics.model_evictions_child.inc()

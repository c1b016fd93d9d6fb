"""The demo's data and models, trained here so the story needs nothing downloaded.

The data is churn-shaped: 20 numeric columns of a telecom account (minutes, calls,
charges, service calls...) and whether the customer left. Five models come out:

- ``baseline``: 20 features, the model in service when the story starts;
- ``incompatible``: built for a different input schema (19 features, as a model
  exported by another pipeline version would be). The runtime loads it, warms it up
  and reports Ready, but every real request fails with a 5xx: the fault only
  traffic reveals, which the canary's alarm must catch (see runtime/README.md,
  "The incompatible model mechanism");
- ``valid``: 20 features, retrained with more trees: the update that should succeed. Its
  answers are distributed as the baseline's are (a population stability index of about
  0.03 over the runtime's prediction buckets), so the drift gate lets it through;
- ``disagreeing``: 20 features, trained on the opposite labels. It answers every request
  with a 200 and the wrong numbers: the model only a comparison with production's answers
  to the same requests can catch (the shadow story). Over all customers its answers are
  distributed much as the baseline's are (an index of about 0.04): no drift gate sees it;
- ``shifted``: 20 features, trained where the churn boundary moved: it calls 82% of
  customers churners where the baseline calls 55%, and answers every request with a 200.
  Its answers are distributed unlike the baseline's (an index of about 0.7): the model
  the drift gate catches (the gates story).

Each is written as SageMaker's ``model.tar.gz`` holding one ``xgboost-model`` file.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xgboost

FEATURES = 20
COLUMNS = (
    "account_length",
    "vmail_messages",
    "day_minutes",
    "day_calls",
    "day_charge",
    "eve_minutes",
    "eve_calls",
    "eve_charge",
    "night_minutes",
    "night_calls",
    "night_charge",
    "intl_minutes",
    "intl_calls",
    "intl_charge",
    "service_calls",
    "intl_plan",
    "vmail_plan",
    "tenure_months",
    "monthly_bill",
    "area_code_risk",
)


@dataclasses.dataclass(frozen=True)
class DemoModels:
    """Where the demo's artifacts live (``file://`` URIs, as from a volume mount)."""

    baseline: Path
    incompatible: Path
    valid: Path
    requests_csv: Path
    disagreeing: Path
    shifted: Path

    def uri(self, which: str) -> str:
        """The model URI an Endpoint names, e.g. ``uri("valid")``."""
        path: Path = getattr(self, which)
        return path.resolve().as_uri()


def churn_data(rows: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Deterministic churn-like rows and labels.

    >>> x, y = churn_data(10, seed=1)
    >>> x.shape, y.shape, set(y.tolist()) <= {0, 1}
    ((10, 20), (10,), True)
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    x[:, 0] = rng.integers(1, 240, size=rows)  # account length in days
    x[:, 14] = rng.poisson(1.5, size=rows)  # customer service calls
    x[:, 15] = rng.integers(0, 2, size=rows)  # international plan
    risk = 0.9 * x[:, 14] + 1.2 * x[:, 15] + 0.6 * x[:, 2] - 0.4 * x[:, 16] - 1.8
    y = (risk + rng.normal(scale=0.5, size=rows) > 0).astype(np.int32)
    return x, y


def shifted_labels(x: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
    """The churn rule of :func:`churn_data` with its boundary moved down: far more
    customers count as churners.

    >>> x, y = churn_data(2000, seed=1)
    >>> bool(shifted_labels(x).mean() > y.mean() + 0.2)
    True
    """
    rng = np.random.default_rng(3)
    risk = 0.9 * x[:, 14] + 1.2 * x[:, 15] + 0.6 * x[:, 2] - 0.4 * x[:, 16] - 1.8
    labels: npt.NDArray[np.int32] = (risk + rng.normal(scale=0.5, size=len(x)) > -1.2).astype(
        np.int32
    )
    return labels


def _train(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], trees: int, depth: int
) -> xgboost.Booster:
    params = {"objective": "binary:logistic", "max_depth": depth, "nthread": 1, "seed": 7}
    return xgboost.train(params, xgboost.DMatrix(x, label=y), trees)


def _tarball(booster: xgboost.Booster, path: Path) -> Path:
    """SageMaker's layout: ``model.tar.gz`` with one ``xgboost-model`` (here UBJSON)."""
    raw = bytes(booster.save_raw(raw_format="ubj"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return path


def build_models(folder: Path) -> DemoModels:
    """Train the five models and write a CSV of requests (no header, one row a line)."""
    x, y = churn_data(4000, seed=11)
    baseline = _train(x, y, trees=60, depth=4)
    incompatible = _train(x[:, 1:], y, trees=60, depth=4)  # another schema: 19 columns
    valid = _train(x, y, trees=90, depth=4)
    disagreeing = _train(x, 1 - y, trees=60, depth=4)  # the opposite answers, all 200
    shifted = _train(x, shifted_labels(x), trees=60, depth=4)  # churn called far more often
    requests, _ = churn_data(500, seed=23)
    csv = folder / "churn-requests.csv"
    folder.mkdir(parents=True, exist_ok=True)
    csv.write_text("\n".join(",".join(f"{v:.4g}" for v in row) for row in requests) + "\n")
    return DemoModels(
        baseline=_tarball(baseline, folder / "baseline" / "model.tar.gz"),
        incompatible=_tarball(incompatible, folder / "incompatible" / "model.tar.gz"),
        valid=_tarball(valid, folder / "valid" / "model.tar.gz"),
        requests_csv=csv,
        disagreeing=_tarball(disagreeing, folder / "disagreeing" / "model.tar.gz"),
        shifted=_tarball(shifted, folder / "shifted" / "model.tar.gz"),
    )

"""Fleetshift's in-process tree predictor against the public CPU tree engines. Prints a
markdown table of what it measured.

    .venv/bin/pip install -e '.[bench]'      # the engines compared (make bench-runtime does it)
    .venv/bin/python bench/tree_engines.py [--quick] [--rounds N] [--output FILE.md]

Three seeded models over 20 float32 features (about 10% of the values missing):
binary:logistic with 200 trees of depth 6, binary:logistic with 500 trees of depth 8, and
multi:softprob with 3 classes and 100 rounds. Each is saved as UBJ and served by:

- **Fleetshift**, through the public API (``fleetshift_runtime.load``): its default path
  (the compiled trees where they cover the model), and its other paths by option: the
  direct C path (``compiled_predict=False``) and the prebuilt forest library
  (``trees_library=...``);
- **XGBoost** ``Booster.inplace_predict``, the version installed (the project's pin);
- **ONNX Runtime**, the model converted by onnxmltools (TreeEnsemble operators);
- **Treelite GTIL** and **TL2cgen** (the model compiled to C with gcc).

An engine that does not install, convert or build is left out, and the output says why.

Every engine gets one thread, and the thread that measures is pinned to one core (set-up,
training and compiling use every core allowed; they are not timed). The inputs are
1, 100 and 1000 rows, each call taking the next slice of a fixed pool of 1000 rows (so one
row is a different row each call, as in real traffic; ``--same-rows`` repeats the first
slice instead, which lets the CPU's branch predictor learn the paths through the trees and
favours the engines that branch). For each model and batch size the engines run in
rounds, one after the other, in an order rotated every round, so a noisy neighbour on a
shared machine hits every engine alike. Per engine: the median over rounds of calls per
second, the p50 and p99 of all call latencies, and the largest absolute difference from
``inplace_predict`` over the whole pool. The ratio is Fleetshift's default path over the
best other engine (above 1.0x: Fleetshift is faster).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

import fleetshift_runtime

Matrix = npt.NDArray[np.float32]
FEATURES = 20
MISSING = 0.1
POOL_ROWS = 1000
BATCHES = (1, 100, 1000)
FLEETSHIFT = "Fleetshift"


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: what it is called and how it is trained."""

    label: str
    objective: str
    rounds: int
    depth: int
    classes: int = 0


MODELS = (
    ModelSpec("binary, 200 trees, depth 6", "binary:logistic", 200, 6),
    ModelSpec("binary, 500 trees, depth 8", "binary:logistic", 500, 8),
    ModelSpec("multi:softprob, 3 classes, 100 rounds", "multi:softprob", 100, 6, classes=3),
)


@dataclass
class Engine:
    """One way to predict a model: a callable taking a C-contiguous float32 matrix."""

    name: str
    family: str
    call: Callable[[Matrix], Any]
    to_output: Callable[[Any], Matrix]
    """Turns the call's raw answer into ``inplace_predict``'s shape (not timed)."""
    setup_seconds: float
    note: str = ""


@dataclass
class Timing:
    """What one engine measured in one model and batch size."""

    per_round: list[float] = field(default_factory=list)
    """Calls per second, one value per round."""
    latencies_ns: list[int] = field(default_factory=list)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _optional(module: str) -> ModuleType:
    return importlib.import_module(module)


def _data(rows: int, seed: int) -> Matrix:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < MISSING] = np.nan
    return np.ascontiguousarray(x)


def _labels(x: Matrix, spec: ModelSpec, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    v = np.nan_to_num(x.astype(np.float64))
    score = np.sin(2 * v[:, 0]) + v[:, 1] * v[:, 2] + np.abs(v[:, 3]) - 0.5 * v[:, 4] ** 2 + v[:, 5]
    if spec.classes:
        second = v[:, 6] - v[:, 7] * v[:, 8] + np.cos(v[:, 9])
        noisy = np.stack([score, second, -score - second], axis=1)
        noisy += rng.normal(scale=0.7, size=noisy.shape)
        classes: npt.NDArray[np.float64] = np.argmax(noisy, axis=1).astype(np.float64)
        return classes
    return (score + rng.normal(scale=0.7, size=score.shape) > 0.5).astype(np.float64)


def train(spec: ModelSpec, train_rows: int) -> Any:
    """A seeded XGBoost booster for ``spec`` (one thread)."""
    xgboost = _optional("xgboost")
    x = _data(train_rows, seed=1)
    params: dict[str, Any] = {
        "objective": spec.objective,
        "max_depth": spec.depth,
        "eta": 0.1,
        "nthread": 1,
        "seed": 0,
        "tree_method": "hist",
    }
    if spec.classes:
        params["num_class"] = spec.classes
    dtrain = xgboost.DMatrix(x, label=_labels(x, spec, seed=2))
    return xgboost.train(params, dtrain, num_boost_round=spec.rounds)


def tree_shape(booster: Any) -> str:
    """Trees, their deepest leaf and the mean depth of their leaves, from the JSON dump."""
    document = json.loads(bytes(booster.save_raw("json")))
    trees = document["learner"]["gradient_booster"]["model"]["trees"]
    depths: list[int] = []
    deepest = 0
    for tree in trees:
        left, right = tree["left_children"], tree["right_children"]
        stack = [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if left[node] == -1:
                depths.append(depth)
                deepest = max(deepest, depth)
            else:
                stack += [(left[node], depth + 1), (right[node], depth + 1)]
    return (
        f"{len(trees)} trees, {len(depths)} leaves, deepest leaf at depth {deepest}, "
        f"mean leaf depth {statistics.mean(depths):.2f}"
    )


def _same_shape(expected: tuple[int, ...]) -> Callable[[Any], Matrix]:
    def convert(raw: Any) -> Matrix:
        out = np.asarray(raw, dtype=np.float32)
        if out.ndim == 2 and len(expected) == 1 and out.shape[1] == 2:
            out = out[:, 1]  # ONNX Runtime gives both classes' probabilities
        if out.size != int(np.prod(expected)):
            raise ValueError(f"output of shape {out.shape}, expected {expected}")
        return out.reshape(expected)

    return convert


def _timed_setup(make: Callable[[], Engine]) -> Engine:
    started = time.perf_counter()
    engine = make()
    engine.setup_seconds = time.perf_counter() - started
    return engine


def fleetshift_engines(
    model_file: Path, folder: Path, forest: Path | None, to_output: Callable[[Any], Matrix]
) -> tuple[list[Engine], list[str]]:
    """Fleetshift's default path and its other paths, through ``fleetshift_runtime.load``."""
    engines: list[Engine] = []
    notes: list[str] = []
    common: dict[str, Any] = {"predict_threads": 1, "cache_dir": str(folder / "cache")}

    def load(name: str, **options: Any) -> Engine:
        model = fleetshift_runtime.load(str(model_file), **common, **options)
        note = model.predictor_name
        if model.compiled_error:
            note += f"; compiled trees not used: {model.compiled_error}"
        return Engine(name, FLEETSHIFT, model.predict, to_output, 0.0, note)

    default = _timed_setup(lambda: load(FLEETSHIFT))
    engines.append(default)
    if default.note.startswith("direct C predictor"):
        notes.append("Fleetshift direct C: the default path already (no compiled trees)")
    else:
        engines.append(_timed_setup(lambda: load(f"{FLEETSHIFT} direct C", compiled_predict=False)))
    if forest is None:
        notes.append("Fleetshift forest library: not built (no C compiler)")
    elif default.note.startswith("direct C predictor"):
        notes.append("Fleetshift forest library: does not cover the model either")
    else:
        engines.append(
            _timed_setup(lambda: load(f"{FLEETSHIFT} forest library", trees_library=str(forest)))
        )
    return engines, notes


def other_engines(
    booster: Any, folder: Path, to_output: Callable[[Any], Matrix]
) -> tuple[list[Engine], list[str]]:
    """XGBoost, ONNX Runtime, Treelite GTIL and TL2cgen; each one left out says why."""
    engines: list[Engine] = []
    notes: list[str] = []

    def xgboost_engine() -> Engine:
        booster.set_param({"nthread": 1})
        return Engine(
            f"XGBoost {_version('xgboost-cpu')} inplace_predict",
            "xgboost",
            booster.inplace_predict,
            to_output,
            0.0,
        )

    def onnx_engine() -> Engine:
        onnxmltools = _optional("onnxmltools")
        data_types = _optional("onnxmltools.convert.common.data_types")
        ort = _optional("onnxruntime")
        converted = onnxmltools.convert_xgboost(
            booster, initial_types=[("input", data_types.FloatTensorType([None, FEATURES]))]
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(
            converted.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        outputs = [o.name for o in session.get_outputs()]
        wanted = ["probabilities"] if "probabilities" in outputs else outputs[-1:]
        input_name = session.get_inputs()[0].name
        run = session.run

        def call(rows: Matrix) -> Any:
            return run(wanted, {input_name: rows})[0]

        return Engine(f"ONNX Runtime {_version('onnxruntime')}", "onnxruntime", call, to_output, 0)

    def gtil_engine() -> Engine:
        treelite = _optional("treelite")
        model = treelite.frontend.from_xgboost(booster)
        gtil_predict = treelite.gtil.predict

        def call(rows: Matrix) -> Any:
            return gtil_predict(model, rows, nthread=1)

        return Engine(f"Treelite {_version('treelite')} GTIL", "treelite", call, to_output, 0)

    def tl2cgen_engine() -> Engine:
        treelite = _optional("treelite")
        tl2cgen = _optional("tl2cgen")
        model = treelite.frontend.from_xgboost(booster)
        library = folder / "tl2cgen" / "model.so"  # one path per model: dlopen caches by path
        library.parent.mkdir(parents=True, exist_ok=True)
        cores = len(os.sched_getaffinity(0))
        tl2cgen.export_lib(
            model,
            toolchain="gcc",
            libpath=str(library),
            params={"parallel_comp": 4 * cores},
            nthread=cores,
            verbose=False,
        )
        predictor = tl2cgen.Predictor(str(library), nthread=1)
        dmatrix = tl2cgen.DMatrix

        def call(rows: Matrix) -> Any:
            return predictor.predict(dmatrix(rows, dtype="float32"))

        return Engine(f"TL2cgen {_version('tl2cgen')}", "tl2cgen", call, to_output, 0)

    for name, make in (
        ("XGBoost", xgboost_engine),
        ("ONNX Runtime", onnx_engine),
        ("Treelite GTIL", gtil_engine),
        ("TL2cgen", tl2cgen_engine),
    ):
        try:
            engines.append(_timed_setup(make))
        except Exception as error:  # the bench goes on without it and says why
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            notes.append(f"{name}: left out ({type(error).__name__}: {reason[:200]})")
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
    return engines, notes


def max_difference(engine: Engine, pool: Matrix, batch: int, expected: Matrix) -> float:
    """The largest absolute difference from ``inplace_predict`` over the pool."""
    parts = [
        engine.to_output(engine.call(pool[start : start + batch]))
        for start in range(0, pool.shape[0], batch)
    ]
    got = np.concatenate(parts).astype(np.float64)
    return float(np.max(np.abs(got - expected.astype(np.float64))))


def measure(
    engines: list[Engine],
    pool: Matrix,
    batch: int,
    rounds: int,
    round_seconds: float,
    *,
    same_rows: bool = False,
) -> dict[str, Timing]:
    """Interleaved rounds: every engine once per round, in an order rotated every round.
    Each call takes the next slice of the pool, or with ``same_rows`` always the first."""
    slices = [pool[start : start + batch] for start in range(0, pool.shape[0], batch)]
    if same_rows:
        slices = slices[:1]
    timings = {engine.name: Timing() for engine in engines}
    for engine in engines:  # warm-up: caches, lazy initialisation, branch history
        for rows in slices[:50]:
            engine.call(rows)
    clock = time.perf_counter_ns
    budget = int(round_seconds * 1e9)
    gc.disable()
    try:
        for round_index in range(rounds):
            shift = round_index % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                call, latencies = engine.call, []
                index, count = 0, 0
                started = clock()
                deadline = started + budget
                now = started
                while now < deadline or count < 3:
                    rows = slices[index]
                    index = index + 1 if index + 1 < len(slices) else 0
                    before = clock()
                    call(rows)
                    now = clock()
                    latencies.append(now - before)
                    count += 1
                timing = timings[engine.name]
                timing.per_round.append(count / ((now - started) / 1e9))
                timing.latencies_ns.extend(latencies)
    finally:
        gc.enable()
    return timings


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) / 1000


def _ratio_cell(ours: float, best_name: str, best: float) -> str:
    ratio = ours / best
    shown = f"{ratio:.2f}x"
    return f"**{shown}** {best_name}" if ratio < 1 else f"{shown} {best_name}"


def _short(name: str) -> str:
    return name.split(" ", maxsplit=1)[0] if not name.startswith("Treelite") else "GTIL"


def _pinned(core: int) -> Callable[[], None]:
    """Pin this thread (the one that measures) to ``core``; the callable unpins it."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    return lambda: os.sched_setaffinity(0, allowed)


def _forest_library(folder: Path) -> Path | None:
    output = folder / "forest" / "libfleetshift_forest.so"
    built = subprocess.run(
        [sys.executable, "-m", "fleetshift_runtime.models.compiled", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        return None
    output.parent.chmod(0o755)
    return output


def run(args: argparse.Namespace) -> str:
    """Train, set up every engine, measure, and return the markdown report."""
    rounds = args.rounds or (5 if args.quick else 15)
    round_seconds = args.round_seconds or (0.04 if args.quick else 0.25)
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if args.core is None else args.core
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    lines: list[str] = []
    summary: list[str] = []
    setups: list[str] = []
    notes: list[str] = []
    shapes: list[str] = []
    pool = _data(POOL_ROWS, seed=99)
    with tempfile.TemporaryDirectory(prefix="tree-engines-") as tmp:
        folder = Path(tmp)
        forest = _forest_library(folder)
        for spec in MODELS:
            if args.models and not any(key in spec.label for key in args.models):
                continue
            model_folder = folder / f"m{MODELS.index(spec)}"
            model_folder.mkdir()
            booster = train(spec, args.train_rows)
            model_file = model_folder / "model.ubj"
            booster.save_model(str(model_file))
            expected = np.asarray(booster.inplace_predict(pool), dtype=np.float32)
            shapes.append(f"- {spec.label}: {tree_shape(booster)}")
            ours, ours_notes = fleetshift_engines(
                model_file, model_folder, forest, _same_shape(expected.shape)
            )
            others, other_notes = other_engines(booster, model_folder, _same_shape(expected.shape))
            notes += [f"{spec.label}: {note}" for note in ours_notes + other_notes]
            engines: list[Engine] = []
            for engine in ours + others:
                try:  # an answer of another shape cannot be compared
                    _same_shape((2, *expected.shape[1:]))(engine.call(pool[:2]))
                except Exception as error:
                    notes.append(f"{spec.label}: {engine.name} left out ({error})")
                    continue
                engines.append(engine)
                detail = f" ({engine.note})" if engine.note else ""
                setups.append(
                    f"| {spec.label} | {engine.name}{detail} | {engine.setup_seconds:.2f} |"
                )
            cells = []
            for batch in BATCHES:
                shape = (batch, *expected.shape[1:])
                for engine in engines:
                    engine.to_output = _same_shape(shape)
                differences = {
                    engine.name: max_difference(engine, pool, batch, expected) for engine in engines
                }
                unpin = _pinned(core)
                try:
                    timings = measure(
                        engines, pool, batch, rounds, round_seconds, same_rows=args.same_rows
                    )
                finally:
                    unpin()
                speed = {name: statistics.median(t.per_round) for name, t in timings.items()}
                for engine in engines:
                    timing = timings[engine.name]
                    lines.append(
                        f"| {spec.label} | {batch} | {engine.name} | {speed[engine.name]:,.0f} "
                        f"| {_percentile(timing.latencies_ns, 50):,.1f} "
                        f"| {_percentile(timing.latencies_ns, 99):,.1f} "
                        f"| {differences[engine.name]:.2g} |"
                    )
                rivals = [e for e in engines if e.family != FLEETSHIFT]
                if rivals and FLEETSHIFT in speed:
                    best = max(rivals, key=lambda e: speed[e.name])
                    cells.append(
                        _ratio_cell(speed[FLEETSHIFT], _short(best.name), speed[best.name])
                    )
                else:
                    cells.append("n/a")
            summary.append(f"| {spec.label} | {' | '.join(cells)} |")
            print(f"done: {spec.label}", file=sys.stderr, flush=True)
    finished = datetime.now(UTC)
    load_after = os.getloadavg()
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("xgboost-cpu", "onnxruntime", "onnxmltools", "treelite", "tl2cgen", "numpy")
    )
    header = [
        f"# Tree engines, in process, one core ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`bench/tree_engines.py{' '.join(['', *sys.argv[1:]])}`: {rounds} interleaved "
        f"rounds of {round_seconds:g} s per engine per model and batch size, measured on "
        f"core "
        f"{core} of {os.cpu_count()} ({_cpu_model()}), one thread per engine, "
        f"{FEATURES} float32 features, {MISSING:.0%} missing; "
        + (
            "every call predicts the same rows (the first of the pool). "
            if args.same_rows
            else f"each call predicts the next rows of a pool of {POOL_ROWS}. "
        )
        + "Python "
        f"{platform.python_version()}; {versions}. Load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({(finished - started).total_seconds():.0f} s in all).",
        "",
        f"Models (trained on {args.train_rows} seeded rows):",
        "",
        *shapes,
        "",
        "Ratio: Fleetshift's default path, calls per second, over the best other engine "
        "(bold below 1.0x).",
        "",
        "| model | 1 row | 100 rows | 1000 rows |",
        "|---|---|---|---|",
        *summary,
        "",
        "| model | rows | engine | calls/s | p50 µs | p99 µs | max abs diff |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"Setup (load, convert, compile and validate), seconds, on {len(allowed)} cores "
        "(the timings above are on one):",
        "",
        "| model | engine | setup s |",
        "|---|---|---|",
        *setups,
    ]
    if notes:
        header += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(header) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5 short rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 15; quick 5)")
    parser.add_argument(
        "--round-seconds", type=float, default=0.0, help="per engine per round (0.25; 0.04)"
    )
    parser.add_argument("--core", type=int, default=None, help="CPU to pin to (the last one)")
    parser.add_argument("--train-rows", type=int, default=10_000, help="training rows")
    parser.add_argument(
        "--models", nargs="*", default=[], help="only models whose label contains one of these"
    )
    parser.add_argument(
        "--same-rows",
        action="store_true",
        help="every call predicts the same rows (a branch predictor learns their paths)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    report = run(args)
    print(report, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Multi-model mode's disk budget: downloaded and unpacked models are evicted least recently
used from the cache folder to stay within ``FLEETSHIFT_MODEL_DISK_BUDGET_BYTES``; an evicted
model is downloaded again on its next load; a model bigger than the budget is a 413."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fleetshift_devcluster.wait import wait_for
from fleetshift_runtime.disk_budget import DiskBudget, ModelTooLargeError, scan
from support.multi_model import assert_scores, invoke_target
from support.runtime_kit import (
    ArtifactServer,
    RuntimeProcess,
    S3Server,
    StartRuntime,
    TrainedModel,
    sagemaker_tarball,
    train_model,
)


@pytest.fixture(scope="module")
def models() -> dict[str, TrainedModel]:
    """Six small, different regression models."""
    return {
        f"m{i}": train_model(seed=10 + i, objective="reg:squarederror", trees=30) for i in range(6)
    }


def cache_bytes(folder: Path) -> int:
    """Bytes of every regular file in the cache folder, measured on disk."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


invoke = functools.partial(invoke_target, timeout=60)


def publish_s3(s3: S3Server, models: dict[str, TrainedModel], tmp_path: Path) -> dict[str, int]:
    """Each model as ``disk/<name>.ubj`` in S3 (which sends ETags); return sizes."""
    sizes = {}
    for name, model in models.items():
        raw = model.save(tmp_path / "src" / f"{name}.ubj").read_bytes()
        s3.put("mme", f"disk/{name}.ubj", raw)
        sizes[name] = len(raw)
    return sizes


def start(
    start_runtime: StartRuntime, uri: str, cache: Path, budget: int, **env: str
) -> RuntimeProcess:
    return start_runtime(
        MODEL_URI=uri,
        MULTI_MODEL="true",
        CACHE_DIR=str(cache),
        COMPILED_PREDICT="false",  # nothing but the budgeted entries in the cache folder
        MODEL_DISK_BUDGET_BYTES=str(budget),
        **env,
    )


def test_disk_use_stays_within_the_budget_after_loading_more_models_than_fit(
    start_runtime: StartRuntime,
    models: dict[str, TrainedModel],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    sizes = publish_s3(s3_server, models, tmp_path)
    budget = int(max(sizes.values()) * 2.5)  # two models fit, never three
    assert sum(sorted(sizes.values())[:3]) > budget
    cache = tmp_path / "cache"
    server = start(start_runtime, "s3://mme/disk/", cache, budget, **s3_server.env())

    for name, model in models.items():
        assert_scores(invoke(server, f"{name}.ubj", model), model)
        used = cache_bytes(cache)
        assert used <= budget, (name, used, budget)
        assert server.metric("fleetshift_model_disk_bytes") == used

    assert server.metric("fleetshift_model_disk_evictions_total") == len(models) - 2
    kept = sorted(p.name for p in cache.rglob("*.ubj"))
    assert kept == ["m4.ubj", "m5.ubj"]  # the two most recently used
    assert server.metric("fleetshift_loaded_models") == len(models)  # memory is apart


def test_a_model_evicted_from_disk_is_downloaded_again_and_answers_the_same(
    start_runtime: StartRuntime,
    models: dict[str, TrainedModel],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    sizes = publish_s3(s3_server, models, tmp_path)
    cache = tmp_path / "cache"
    server = start(
        start_runtime,
        "s3://mme/disk/",
        cache,
        int(max(sizes.values()) * 1.5),  # one model on disk at a time
        MAX_LOADED_MODELS="1",  # and one in memory: every switch is a reload
        **s3_server.env(),
    )
    first, second = models["m0"], models["m1"]
    assert_scores(invoke(server, "m0.ubj", first), first)
    assert [p.name for p in cache.rglob("*.ubj")] == ["m0.ubj"]
    assert_scores(invoke(server, "m1.ubj", second), second)
    assert [p.name for p in cache.rglob("*.ubj")] == ["m1.ubj"]  # m0 evicted from disk

    assert_scores(invoke(server, "m0.ubj", first), first)  # downloaded again
    assert [p.name for p in cache.rglob("*.ubj")] == ["m0.ubj"]
    assert server.metric("fleetshift_model_load_seconds_count", model="m0.ubj") == 2
    assert server.metric("fleetshift_model_disk_evictions_total") == 2
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0


def test_a_model_bigger_than_the_budget_is_a_413_naming_both_sizes(
    start_runtime: StartRuntime,
    models: dict[str, TrainedModel],
    artifact_server: ArtifactServer,
    tmp_path: Path,
) -> None:
    big = train_model(seed=99, objective="reg:squarederror", trees=300, depth=6)
    size = big.save(artifact_server.root / "big.ubj").stat().st_size
    small = models["m0"]
    small.save(artifact_server.root / "small.ubj")
    budget = 64 * 1024
    assert size > budget
    server = start(start_runtime, artifact_server.url, tmp_path / "cache", budget)

    refused = invoke(server, "big.ubj", big)
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert f"needs {size / 2**20:.1f} MiB ({size} bytes) on disk" in error
    assert f"disk budget of 0.1 MiB ({budget} bytes)" in error
    assert "diskBudgetMiB" in error
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0
    assert cache_bytes(tmp_path / "cache") == 0  # refused before a byte was written
    assert_scores(invoke(server, "small.ubj", small), small)  # the server keeps serving


def test_a_tarball_that_unpacks_over_the_budget_is_a_413(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    big = train_model(seed=98, objective="reg:squarederror", trees=300, depth=6)
    prefix = tmp_path / "mme"
    sagemaker_tarball(big, prefix / "big" / "model.tar.gz")
    unpacked = next(prefix.rglob("xgboost-model")).stat().st_size
    server = start(start_runtime, str(prefix), tmp_path / "cache", unpacked - 1)
    refused = invoke(server, "big/model.tar.gz", big)
    assert refused.status_code == 413, refused.text
    assert "over the disk budget" in refused.json()["error"]
    assert not list((tmp_path / "cache").rglob("xgboost-model"))


@pytest.mark.parametrize("workers", ["1", "2"])  # two: pins hold across processes
def test_concurrent_requests_for_many_models_under_a_tiny_budget_fail_only_for_the_oversize_one(
    workers: str,
    start_runtime: StartRuntime,
    models: dict[str, TrainedModel],
    artifact_server: ArtifactServer,
    tmp_path: Path,
) -> None:
    sizes = {}
    for name, model in models.items():
        sizes[name] = model.save(artifact_server.root / f"{name}.ubj").stat().st_size
        artifact_server.delay_seconds[f"/{name}.ubj"] = 0.2  # downloads overlap
    big = train_model(seed=97, objective="reg:squarederror", trees=300, depth=6)
    big.save(artifact_server.root / "big.ubj")
    budget = int(max(sizes.values()) * 1.2)  # one model fits, two do not
    cache = tmp_path / "cache"
    server = start(
        start_runtime, artifact_server.url, cache, budget, MAX_LOADED_MODELS="2", WORKERS=workers
    )
    targets = [*models, "big"] * 4

    def call(name: str) -> tuple[str, httpx.Response]:
        return name, invoke(server, f"{name}.ubj", big if name == "big" else models[name])

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, targets))

    for name, response in answers:
        if name == "big":
            assert response.status_code == 413, response.text
        else:
            assert_scores(response, models[name])
    assert cache_bytes(cache) <= budget  # every pin released, back under the budget
    assert not list(cache.rglob(".partial-*"))
    # several workers add their counts once a second
    wait_for(
        lambda: server.metric("fleetshift_model_disk_evictions_total") > 0,
        timeout=10,
        interval=0.2,
        message="disk evictions counted",
    )
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0


def test_first_request_latency_of_a_cold_model_on_disk_and_downloaded_again(
    start_runtime: StartRuntime, s3_server: S3Server, tmp_path: Path
) -> None:
    """Measured, and printed (``-s``): a model evicted from memory only is read from the
    cache; one evicted from disk too is downloaded again. The test holds which is which."""
    big = {f"b{i}": train_model(seed=50 + i, trees=400, depth=8) for i in range(2)}
    sizes = publish_s3(s3_server, big, tmp_path)
    cache = tmp_path / "cache"

    def cold_latency(budget: int) -> tuple[float, float]:
        server = start(
            start_runtime, "s3://mme/disk/", cache / str(budget), budget,
            MAX_LOADED_MODELS="1", **s3_server.env(),
        )  # fmt: skip
        invoke(server, "b0.ubj", big["b0"])
        invoke(server, "b1.ubj", big["b1"])  # b0 leaves memory (and disk, if it must)
        started = time.perf_counter()
        assert_scores(invoke(server, "b0.ubj", big["b0"]), big["b0"])
        elapsed = time.perf_counter() - started
        return elapsed, server.metric("fleetshift_model_disk_evictions_total")

    on_disk, kept = cold_latency(sum(sizes.values()) * 2)
    downloaded, evicted = cold_latency(int(max(sizes.values()) * 1.5))
    assert (kept, evicted) == (0, 2)
    print(
        f"\ncold model of {sizes['b0'] / 2**20:.2f} MiB, first request: "
        f"{on_disk * 1000:.1f} ms from the disk cache, "
        f"{downloaded * 1000:.1f} ms downloaded again"
    )


# --- the eviction order against a model of LRU, in process -----------------------------


class DiskLru(RuleBasedStateMachine):
    """Loads of entries of random sizes, some while another load holds its pin, against
    a plain ordered dict: after every load the cache holds exactly the LRU's entries."""

    BUDGET = 1000

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(os.environ["DISK_LRU_ROOT"]) / f"run-{id(self)}-{time.monotonic_ns()}"
        self.evicted: list[Path] = []
        self.budget = DiskBudget(
            self.root, self.BUDGET, on_evict=lambda path, _size: self.evicted.append(path)
        )
        self.lru: OrderedDict[str, int] = OrderedDict()

    def _entry(self, name: str) -> Path:
        return self.root / "k" / name

    def _load(self, name: str, size: int) -> None:
        with self.budget.session() as session:
            session.check_fits(size)
            entry = session.claim(self._entry(name))
            data = entry / "model"
            if not data.exists():
                data.write_bytes(b"x" * size)

    def _touch(self, name: str, size: int) -> None:
        self.lru[name] = size
        self.lru.move_to_end(name)

    def _settle(self, pinned: str | None = None) -> None:
        for oldest in list(self.lru):
            if sum(self.lru.values()) <= self.BUDGET:
                break
            if oldest != pinned:
                del self.lru[oldest]

    @rule(name=st.sampled_from("abcdefgh"), size=st.integers(1, 1200))
    def load(self, name: str, size: int) -> None:
        size = self.lru.get(name, size)  # one name, one content
        if size > self.BUDGET:
            with pytest.raises(ModelTooLargeError):
                self._load(name, size)
            return
        self._load(name, size)
        self._touch(name, size)
        self._settle()

    @rule(held=st.sampled_from("abcd"), name=st.sampled_from("efgh"), size=st.integers(1, 900))
    def load_while_another_is_being_read(self, held: str, name: str, size: int) -> None:
        held_size = self.lru.get(held, 300)
        size = self.lru.get(name, size)
        with self.budget.session() as reading:
            entry = reading.claim(self._entry(held))
            if not (entry / "model").exists():
                (entry / "model").write_bytes(b"x" * held_size)
            self._touch(held, held_size)
            self._load(name, size)
            self._touch(name, size)
            self._settle(pinned=held)
            assert (entry / "model").read_bytes() == b"x" * held_size  # never deleted
        self._touch(held, held_size)  # recency is the end of the last use
        self._settle()  # the reader is done: back under the budget

    @invariant()
    def the_cache_holds_exactly_the_lru(self) -> None:
        entries, total = scan(self.root)
        assert {e.path.name for e in entries if e.size} == set(self.lru)
        assert total == sum(self.lru.values())


DiskLru.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)


@pytest.fixture
def disk_lru_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DISK_LRU_ROOT", str(tmp_path))
    return tmp_path


def test_disk_eviction_is_least_recently_used_and_spares_pinned_entries(
    disk_lru_root: Path,
) -> None:
    DiskLru.TestCase().runTest()
    assert disk_lru_root.is_dir()


def test_an_entry_being_read_by_another_thread_is_spared_and_the_unpinned_one_goes(
    tmp_path: Path,
) -> None:
    budget = DiskBudget(tmp_path, 100)
    pinned, release = threading.Event(), threading.Event()

    def reader() -> None:
        with budget.session() as session:
            (session.claim(tmp_path / "k" / "read") / "model").write_bytes(b"r" * 80)
            pinned.set()
            release.wait(10)

    thread = threading.Thread(target=reader)
    thread.start()
    assert pinned.wait(10)
    with budget.session() as session:
        (session.claim(tmp_path / "k" / "new") / "model").write_bytes(b"n" * 80)
        assert budget.make_room() == 160  # both pinned: over the budget while read
    # "read" is older but still being read: the newer, unpinned "new" made room
    assert (tmp_path / "k" / "read" / "model").read_bytes() == b"r" * 80
    assert not (tmp_path / "k" / "new").exists()
    release.set()
    thread.join(10)
    assert budget.make_room() == 80

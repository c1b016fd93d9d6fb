"""Open Inference Protocol v2 over gRPC (``FLEETSHIFT_GRPC_PORT``), tested as an adversary.

Triton's own client (``tritonclient.grpc``) talks to a real runtime process, and for what
that client never sends (typed ``contents``, garbage bytes, mismatched fields) the test
builds messages from Triton's generated ``service_pb2``: the wire format of another
implementation of the protocol, not the runtime's own copy of the proto. Every answer is
compared with REST's for the same rows, and with XGBoost's.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import psutil
import pytest
import tritonclient.grpc as triton_grpc  # type: ignore[import-untyped]
import tritonclient.http as triton_http  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from support.runtime_kit import (
    FEATURES,
    ArtifactServer,
    RuntimeProcess,
    StartRuntime,
    TrainedModel,
    flipped_model,
    free_port,
    runtime_env,
    train_model,
)

LIMIT = 64 * 1024
"""The module server's FLEETSHIFT_MAX_REQUEST_BYTES."""
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def grpc_server(
    tmp_path_factory: pytest.TempPathFactory, churn_model: TrainedModel
) -> Iterator[RuntimeProcess]:
    """One runtime with gRPC on, a 64 KiB request limit, and the operator's labels."""
    folder = tmp_path_factory.mktemp("grpc")
    path = churn_model.save(folder / "model.ubj")
    server = RuntimeProcess(
        runtime_env(
            MODEL_URI=str(path),
            CACHE_DIR=str(folder / "cache"),
            GRPC_PORT=str(free_port()),
            MAX_REQUEST_BYTES=str(LIMIT),
            NAMESPACE="shop",
            ENDPOINT="churn",
            VARIANT="AllTraffic",
            REVISION="3",
        ),
        folder / "runtime.log",
    )
    server.start().wait_ready()
    yield server
    server.stop()


def _grpc_address(server: RuntimeProcess) -> str:
    return f"127.0.0.1:{server.env['FLEETSHIFT_GRPC_PORT']}"


@pytest.fixture(scope="module")
def client(grpc_server: RuntimeProcess) -> Iterator[Any]:
    """``tritonclient.grpc`` pointed at the module's server."""
    with triton_grpc.InferenceServerClient(_grpc_address(grpc_server)) as connected:
        yield connected


@pytest.fixture(scope="module")
def channel(grpc_server: RuntimeProcess) -> Iterator[Any]:
    """A plain channel, for the messages tritonclient never sends."""
    with grpc.insecure_channel(
        _grpc_address(grpc_server), options=[("grpc.max_send_message_length", -1)]
    ) as opened:
        yield opened


def _infer_raw(channel: Any, message: bytes) -> bytes:
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    answer: bytes = call(message, timeout=30)
    return answer


def _grpc_predict(client: Any, rows: npt.NDArray[Any], datatype: str = "FP32") -> Any:
    tensor = triton_grpc.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    result = client.infer("model", [tensor], outputs=[triton_grpc.InferRequestedOutput("predict")])
    return result.as_numpy("predict")


def _rest_predict(server: RuntimeProcess, rows: npt.NDArray[np.float32]) -> Any:
    with triton_http.InferenceServerClient(server.url.removeprefix("http://")) as rest:
        tensor = triton_http.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        wanted = triton_http.InferRequestedOutput("predict", binary_data=True)
        return rest.infer("model", [tensor], outputs=[wanted]).as_numpy("predict")


def _refusal(call: Any) -> tuple[Any, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    return error.code(), error.details()


def _outcome(channel: Any, message: bytes) -> tuple[Any, str]:
    """OK and the output's shape, or the refusal's code and details."""
    try:
        shape, _ = _outputs(_infer_raw(channel, message))
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, str(shape)


def _typed_request(datatype: str, shape: list[int], **contents: Any) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="model", id="typed")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    message: bytes = request.SerializeToString()
    return message


def _raw_request(
    raw: list[bytes], shape: list[int], datatype: str = "FP32", name: str = "input-0"
) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="model")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    message: bytes = request.SerializeToString()
    return message


def _outputs(answer: bytes) -> tuple[list[int], npt.NDArray[np.float32]]:
    response = service_pb2.ModelInferResponse.FromString(answer)
    assert [o.name for o in response.outputs] == ["predict"]
    assert response.outputs[0].datatype == "FP32"
    values = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    return list(response.outputs[0].shape), values


def _counts(server: RuntimeProcess) -> tuple[float, float, float]:
    return (
        server.metric("fleetshift_invocations_total"),  # every model label, "" included
        server.metric("fleetshift_invocation_4xx_errors_total"),
        server.metric("fleetshift_invocation_5xx_errors_total"),
    )


# --- what tritonclient sees ---------------------------------------------------------


def test_tritonclient_reads_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("model")
    server = client.get_server_metadata()
    assert server.name == "fleetshift-runtime"
    metadata = client.get_model_metadata("model")
    assert metadata.name == "model"
    assert metadata.platform == "xgboost"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input-0", "FP32", [-1, FEATURES])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("predict", "FP32", [-1])
    ]


@pytest.mark.parametrize("rows", [1, 7, 100])
def test_grpc_predicts_what_rest_and_xgboost_predict(
    grpc_server: RuntimeProcess, client: Any, churn_model: TrainedModel, rows: int
) -> None:
    data = np.tile(churn_model.rows, (2, 1))[:rows]
    answer = _grpc_predict(client, data)
    assert answer.dtype == np.float32
    assert answer.shape == (rows,)
    np.testing.assert_array_equal(answer, _rest_predict(grpc_server, data))
    np.testing.assert_allclose(answer, churn_model.expected(data), rtol=0, atol=1e-6)


def test_one_row_may_be_sent_flat(client: Any, churn_model: TrainedModel) -> None:
    answer = _grpc_predict(client, churn_model.rows[0])
    np.testing.assert_allclose(answer, churn_model.expected(churn_model.rows[:1]), atol=1e-6)


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.just(FEATURES)),
        elements=st.one_of(st.floats(-1e6, 1e6, width=32), st.just(float("nan")), st.just(0.0)),
    )
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_float32_matrix_gets_rests_answer(
    grpc_server: RuntimeProcess, client: Any, rows: npt.NDArray[np.float32]
) -> None:
    """NaN is a missing value on both paths; every float32 matrix gets the same bytes."""
    np.testing.assert_array_equal(_grpc_predict(client, rows), _rest_predict(grpc_server, rows))


def test_integer_and_fp64_tensors_are_predicted_as_floats(
    client: Any, churn_model: TrainedModel
) -> None:
    whole = np.abs(np.rint(churn_model.rows[:5] * 10))  # exact in every datatype below
    expected = churn_model.expected(whole.astype(np.float32))
    for dtype, datatype in (
        (np.int32, "INT32"),
        (np.int64, "INT64"),
        (np.uint8, "UINT8"),
        (np.float16, "FP16"),
        (np.float64, "FP64"),
    ):
        answer = _grpc_predict(client, whole.astype(dtype), datatype)
        np.testing.assert_allclose(answer, expected, atol=1e-6)


def test_typed_contents_are_read_from_the_datatypes_field(
    channel: Any, churn_model: TrainedModel
) -> None:
    rows = churn_model.rows[:3]
    fp32 = _typed_request("FP32", [3, FEATURES], fp32_contents=rows.reshape(-1).tolist())
    shape, values = _outputs(_infer_raw(channel, fp32))
    assert shape == [3]
    np.testing.assert_allclose(values, churn_model.expected(rows), atol=1e-6)
    whole = np.rint(rows * 10)
    ints = _typed_request("INT32", [3, FEATURES], int_contents=whole.astype(int).reshape(-1))
    _, values = _outputs(_infer_raw(channel, ints))
    np.testing.assert_allclose(values, churn_model.expected(whole.astype(np.float32)), atol=1e-6)
    response = service_pb2.ModelInferResponse.FromString(_infer_raw(channel, fp32))
    assert (response.model_name, response.id) == ("model", "typed")


def test_large_requests_are_worked_on_off_the_loop_with_the_same_answers(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    port = free_port()
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        GRPC_PORT=str(port),
        INLINE_BODY_BYTES="1024",
    )
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as large:
        data = np.tile(churn_model.rows, (4, 1))
        answer = _grpc_predict(large, data)
    np.testing.assert_array_equal(answer, _rest_predict(server, data))
    np.testing.assert_allclose(answer, churn_model.expected(data), atol=1e-6)


# --- refusals: REST's reasons, mapped to gRPC codes, counted as 4xx -------------------

REFUSED: list[tuple[str, bytes, str]] = [
    (
        "wrong width",
        _raw_request([np.zeros((2, 19), np.float32).tobytes()], [2, 19]),
        "shape [2, 19] has 19 features per row; this endpoint takes 20",
    ),
    (
        "bytes do not match the shape",
        _raw_request([np.zeros((2, FEATURES), np.float32).tobytes()[:-4]], [2, FEATURES]),
        "shape [2, 20] of FP32 needs 160 bytes; got 156",
    ),
    (
        "bytes of another datatype",
        _raw_request([np.zeros((2, FEATURES), np.float64).tobytes()], [2, FEATURES]),
        "shape [2, 20] of FP32 needs 160 bytes; got 320",
    ),
    (
        "unsupported datatype",
        _raw_request([b"\x01" * FEATURES], [1, FEATURES], datatype="BOOL"),
        "datatype 'BOOL' is not supported; use one of FP16, FP32, FP64, INT8, INT16, INT32, "
        "INT64, UINT8, UINT16, UINT32, UINT64",
    ),
    (
        "empty tensor",
        _raw_request([b""], [0, FEATURES]),
        "shape has 0 rows: send at least one row",
    ),
    (
        "no data at all",
        service_pb2.ModelInferRequest(
            model_name="model",
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="input-0", datatype="FP32", shape=[1, FEATURES]
                )
            ],
        ).SerializeToString(),
        "shape [1, 20] needs 20 values; data has 0",
    ),
    (
        "no inputs",
        service_pb2.ModelInferRequest(model_name="model").SerializeToString(),
        "the request has no inputs; send one tensor named 'input-0'",
    ),
    (
        "another input name",
        _raw_request([np.zeros(FEATURES, np.float32).tobytes()], [1, FEATURES], name="x"),
        "unknown input name 'x'; this model's input is 'input-0' (GET /v2/models/{name} lists it)",
    ),
    (
        "a negative dimension",
        _raw_request([b""], [-1, FEATURES]),
        "shape must be [rows, 20] with non-negative integers; got [-1, 20]",
    ),
    (
        "two raw entries for one input",
        _raw_request([b"", b""], [1, FEATURES]),
        "raw_input_contents has 2 entries; send one per input (1)",
    ),
    (
        "contents in another datatype's field",
        _typed_request("FP32", [1, FEATURES], fp64_contents=[0.5] * FEATURES),
        "FP32 data goes in contents.fp32_contents; got contents.fp64_contents",
    ),
    (
        "FP16 in contents",
        _typed_request("FP16", [1, FEATURES], fp32_contents=[0.5] * FEATURES),
        "FP16 data must be sent in raw_input_contents",
    ),
    (
        "INT8 out of range",
        _typed_request("INT8", [1, FEATURES], int_contents=[300] * FEATURES),
        "INT8 holds -128 to 127; got 300",
    ),
    (
        "FP64 beyond FP32",
        _typed_request("FP64", [1, FEATURES], fp64_contents=[1e300] * FEATURES),
        "FP32, in which the model computes, holds magnitudes up to 3.40282e+38; got 1e+300",
    ),
    (
        "not a protobuf message",
        b"\xff\xff\xff\xff garbage",
        "the request is not a valid ModelInferRequest message",
    ),
]


@pytest.mark.parametrize(
    ("message", "reason"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_malformed_requests_get_invalid_argument_with_rests_reason(
    grpc_server: RuntimeProcess, channel: Any, message: bytes, reason: str
) -> None:
    invocations, errors_4xx, errors_5xx = _counts(grpc_server)
    code, details = _refusal(lambda: _infer_raw(channel, message))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert _counts(grpc_server) == (invocations + 1, errors_4xx + 1, errors_5xx)


def test_tritonclient_reports_the_reason(client: Any, churn_model: TrainedModel) -> None:
    with pytest.raises(InferenceServerException) as raised:
        _grpc_predict(client, churn_model.rows[:2, :19])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "this endpoint takes 20" in raised.value.message()


def test_an_unknown_model_is_not_found_everywhere(
    grpc_server: RuntimeProcess, channel: Any, churn_model: TrainedModel
) -> None:
    request = service_pb2.ModelInferRequest(model_name="fraud")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, FEATURES])
    request.raw_input_contents.append(churn_model.rows[0].tobytes())
    before = grpc_server.metric("fleetshift_invocation_4xx_errors_total", model="")
    code, details = _refusal(lambda: _infer_raw(channel, request.SerializeToString()))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "model 'fraud' not found; this server serves 'model'"
    assert grpc_server.metric("fleetshift_invocation_4xx_errors_total", model="") == before + 1
    with triton_grpc.InferenceServerClient(_grpc_address(grpc_server)) as triton:
        for method in (triton.get_model_metadata, triton.is_model_ready):
            with pytest.raises(InferenceServerException) as raised:
                method("fraud")
            assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_a_request_over_the_limit_is_resource_exhausted(
    grpc_server: RuntimeProcess, channel: Any
) -> None:
    rows = LIMIT // (FEATURES * 4) + 10
    big = _raw_request([np.zeros((rows, FEATURES), np.float32).tobytes()], [rows, FEATURES])
    before = _counts(grpc_server)
    code, details = _refusal(lambda: _infer_raw(channel, big))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        details
        == f"request is {len(big)} bytes; the limit is {LIMIT} (FLEETSHIFT_MAX_REQUEST_BYTES)"
    )
    assert _counts(grpc_server) == (before[0] + 1, before[1] + 1, before[2])
    # Far over the limit, gRPC itself refuses the message before reading it: same code.
    huge = _raw_request([bytes(LIMIT * 2 + 2 * 1024 * 1024)], [1, FEATURES])
    code, _ = _refusal(lambda: _infer_raw(channel, huge))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _counts(grpc_server)[2] == before[2]
    with triton_grpc.InferenceServerClient(_grpc_address(grpc_server)) as triton:
        assert triton.is_server_live()  # the server is unharmed


def test_not_ready_is_unavailable_and_health_says_so(
    start_runtime: StartRuntime,
    artifact_server: ArtifactServer,
    churn_model: TrainedModel,
) -> None:
    churn_model.save(artifact_server.root / "model.ubj")
    artifact_server.delay_seconds["/model.ubj"] = 6.0
    port = free_port()
    server = start_runtime(
        wait=False, MODEL_URI=f"{artifact_server.url}/model.ubj", GRPC_PORT=str(port)
    )
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as triton:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert triton.is_server_live()
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        assert not triton.is_server_ready()
        assert not triton.is_model_ready("model")
        with pytest.raises(InferenceServerException) as raised:
            _grpc_predict(triton, churn_model.rows[:1])
        assert raised.value.status() == "StatusCode.UNAVAILABLE"
        assert raised.value.message().startswith("not ready: ")
        server.wait_ready()
        assert triton.is_server_ready()
        np.testing.assert_allclose(
            _grpc_predict(triton, churn_model.rows[:2]),
            churn_model.expected(churn_model.rows[:2]),
            atol=1e-6,
        )
    assert (
        server.metric("fleetshift_grpc_requests_total", method="ModelInfer", code="UNAVAILABLE")
        == 1
    )


# --- load and metrics ------------------------------------------------------------------


def test_many_concurrent_clients_get_their_own_answers_and_are_counted(
    grpc_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    clients, calls = 40, 15
    before = _counts(grpc_server)
    ok_before = grpc_server.metric("fleetshift_grpc_requests_total", method="ModelInfer", code="OK")
    predictions_before = grpc_server.metric("fleetshift_prediction_count")
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with triton_grpc.InferenceServerClient(_grpc_address(grpc_server)) as own:
                for call in range(calls):
                    start = (index * calls + call) % (len(churn_model.rows) - 3)
                    rows = churn_model.rows[start : start + 1 + call % 3]
                    np.testing.assert_allclose(
                        _grpc_predict(own, rows), churn_model.expected(rows), atol=1e-6
                    )
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    total = clients * calls
    assert _counts(grpc_server) == (before[0] + total, before[1], before[2])
    assert (
        grpc_server.metric("fleetshift_grpc_requests_total", method="ModelInfer", code="OK")
        == ok_before + total
    )
    rows_sent = sum(1 + call % 3 for call in range(calls)) * clients
    assert grpc_server.metric("fleetshift_prediction_count") == predictions_before + rows_sent
    assert grpc_server.metric("fleetshift_model_latency_seconds_count") > 0


def test_grpc_is_off_by_default(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")))
    assert server.process is not None
    listening = {
        c.laddr.port
        for c in psutil.Process(server.process.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {server.port, server.metrics_port}


def test_two_workers_share_the_grpc_port(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    port = free_port()
    start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")), GRPC_PORT=str(port), WORKERS="2"
    )
    answers = []
    for _ in range(6):  # new connections: the kernel spreads them over the workers
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as triton:
            answers.append(_grpc_predict(triton, churn_model.rows[:3]))
    for answer in answers:
        np.testing.assert_allclose(answer, churn_model.expected(churn_model.rows[:3]), atol=1e-6)


def test_multi_model_mode_addresses_target_models_by_path(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    models = {"a/model.ubj": churn_model, "b/model.ubj": flipped_model(churn_model)}
    for name, model in models.items():
        (tmp_path / "mme" / name).parent.mkdir(parents=True)
        model.save(tmp_path / "mme" / name)
    port = free_port()
    start_runtime(MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true", GRPC_PORT=str(port))
    rows = churn_model.rows[:4]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as triton:
        for name, model in models.items():
            tensor = triton_grpc.InferInput("input-0", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            answer = triton.infer(name, [tensor]).as_numpy("predict")
            np.testing.assert_allclose(answer, model.expected(rows), atol=1e-6)
            assert triton.get_model_metadata(name).name == name
        with pytest.raises(InferenceServerException) as raised:
            triton.infer("c/model.ubj", [tensor])
        assert raised.value.status() == "StatusCode.NOT_FOUND"
        assert "target model 'c/model.ubj' not found" in raised.value.message()


def test_a_multi_class_model_answers_rows_of_probabilities(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    model = train_model(objective="multi:softprob", num_class=3)
    port = free_port()
    start_runtime(MODEL_URI=str(model.save(tmp_path / "model.ubj")), GRPC_PORT=str(port))
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as triton:
        outputs = triton.get_model_metadata("model").outputs
        assert [list(o.shape) for o in outputs] == [[-1, 3]]
        answer = _grpc_predict(triton, model.rows[:5])
    assert answer.shape == (5, 3)
    np.testing.assert_allclose(answer, model.expected(model.rows[:5]), atol=1e-6)


# --- the generated module ------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed"
)
def test_the_checked_in_messages_are_what_the_proto_generates() -> None:
    from fleetshift_runtime.oip_grpc import generate  # noqa: PLC0415

    if generate.tools_version() != generate.checked_in_version():
        pytest.skip(
            f"grpcio-tools {generate.tools_version()} installed; the module was generated "
            f"with {generate.checked_in_version()}"
        )
    for name, text in generate.generate().items():
        assert (generate.HERE / name).read_text() == text, (
            f"{name} is stale: run python -m fleetshift_runtime.oip_grpc.generate"
        )


# --- hostile clients -------------------------------------------------------------------


@given(st.binary(max_size=512))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_bytes_a_client_sends_make_a_server_fault(
    grpc_server: RuntimeProcess, channel: Any, message: bytes
) -> None:
    """Random bytes and random valid messages alike: an answer or INVALID_ARGUMENT."""
    code, _ = _outcome(channel, message)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


@given(
    datatype=st.sampled_from(["FP16", "FP32", "FP64", "INT8", "UINT64", "BOOL", "BYTES", ""]),
    shape=st.lists(st.integers(-(2**62), 2**62) | st.integers(0, 30), max_size=4),
    raw=st.lists(st.binary(max_size=200), max_size=2),
    floats=st.lists(st.floats(allow_nan=True), max_size=50),
    ints=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_tensor_a_client_sends_makes_a_server_fault(
    channel: Any,
    datatype: str,
    shape: list[int],
    raw: list[bytes],
    floats: list[float],
    ints: list[int],
) -> None:
    request = service_pb2.ModelInferRequest(model_name="model")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=shape)
    tensor.contents.fp64_contents.extend(floats)
    tensor.contents.int_contents.extend(ints)
    request.raw_input_contents.extend(raw)
    code, details = _outcome(channel, request.SerializeToString())
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details


def test_fault_free_after_the_hostile_tests(grpc_server: RuntimeProcess) -> None:
    assert grpc_server.metric("fleetshift_invocation_5xx_errors_total") == 0
    assert "Traceback" not in grpc_server.log()


def test_clients_that_leave_early_are_not_left_in_flight(
    grpc_server: RuntimeProcess, channel: Any, churn_model: TrainedModel
) -> None:
    rows = np.tile(churn_model.rows, (15, 1))  # 60 KB: parsed in a worker thread
    message = _raw_request([rows.tobytes()], list(rows.shape))
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    for _ in range(20):  # most are cut off by their deadline; a fast one may be answered
        try:
            call(message, timeout=0.0005)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # noqa: PT017
    deadline = time.monotonic() + 10
    while grpc_server.metric("fleetshift_inflight_requests") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _outputs(_infer_raw(channel, message))

"""Schemathesis against the Open Inference Protocol v2 spec: generated requests, valid and
invalid, never get a 5xx, a hang, a response that breaks the spec or an error body
without ``error``; and the runtime accepts what a valid 1-row request looks like."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from support.runtime_kit import RuntimeProcess

# --- the spec -----------------------------------------------------------------------
#
# The Open Inference Protocol v2 REST API as an OpenAPI 3.0 document, written from the
# protocol's definition (KServe's ``docs/predict-api/v2/required_api.md`` and its
# OpenAPI rendering ``rest_predict_v2.yaml``): the same routes, the same request and
# response objects, and ``{"error": string}`` for every error. Two things are made
# specific to the server under test, so that generated requests reach the model instead
# of stopping at a 404: the model name is the one it serves, and an input tensor carries
# the input name its metadata lists. Nothing is copied from KServe's file, and no
# network is needed to build it.

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
"""Every datatype the protocol names; the runtime serves all but BOOL and BYTES."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("error_response"), "The request was refused; error says why")
_ERRORS = {"4XX": _ERROR, "503": _json(_ref("error_response"), "Not ready yet")}


def _name(model: str) -> dict[str, Any]:
    return {"name": "model_name", "in": "path", "required": True, "schema": {"enum": [model]}}


_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"enum": ["1"]}}

_HEALTH = {"responses": {"200": {"description": "OK"}, **_ERRORS}}


def oip_v2_spec(model: str = "model") -> dict[str, Any]:
    """The OpenAPI document, with ``model`` as the only model name."""
    infer = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("inference_request")}},
        },
        "responses": {"200": _json(_ref("inference_response"), "The predictions"), **_ERRORS},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Open Inference Protocol v2 (REST)", "version": "2.0"},
        "paths": {
            "/v2/health/live": {"get": _HEALTH},
            "/v2/health/ready": {"get": _HEALTH},
            "/v2": {
                "get": {
                    "responses": {
                        "200": _json(_ref("metadata_server_response"), "Server metadata"),
                        **_ERRORS,
                    }
                }
            },
            "/v2/models/{model_name}": {
                "get": {
                    "parameters": [_name(model)],
                    "responses": {
                        "200": _json(_ref("metadata_model_response"), "Model metadata"),
                        **_ERRORS,
                    },
                }
            },
            "/v2/models/{model_name}/ready": {
                "get": {"parameters": [_name(model)], **_HEALTH},
            },
            "/v2/models/{model_name}/infer": {"post": {"parameters": [_name(model)], **infer}},
            "/v2/models/{model_name}/versions/{model_version}/infer": {
                "post": {"parameters": [_name(model), _VERSION], **infer}
            },
        },
        "components": {"schemas": _SCHEMAS},
    }


_TENSOR_DATA: dict[str, Any] = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "number"},
            {"type": "array", "items": {"type": "number"}},
            {"type": "string"},
            {"type": "boolean"},
        ]
    },
}

_SCHEMAS: dict[str, Any] = {
    "error_response": {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    },
    "metadata_server_response": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "version", "extensions"],
    },
    "metadata_tensor": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["name", "datatype", "shape"],
    },
    "metadata_model_response": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("metadata_tensor")},
            "outputs": {"type": "array", "items": _ref("metadata_tensor")},
        },
        "required": ["name", "platform"],
    },
    "parameters": {"type": "object"},
    "request_input": {
        "type": "object",
        "properties": {
            "name": {"enum": ["input-0"]},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 64},
                "maxItems": 3,
            },
            "datatype": {"enum": DATATYPES},
            "parameters": _ref("parameters"),
            "data": _TENSOR_DATA,
        },
        "required": ["name", "shape", "datatype", "data"],
    },
    "request_output": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "parameters": _ref("parameters")},
        "required": ["name"],
    },
    "inference_request": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "inputs": {"type": "array", "items": _ref("request_input"), "maxItems": 3},
            "outputs": {"type": "array", "items": _ref("request_output"), "maxItems": 2},
        },
        "required": ["inputs"],
    },
    "response_output": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": _ref("parameters"),
            "data": _TENSOR_DATA,
        },
        "required": ["name", "shape", "datatype", "data"],
    },
    "inference_response": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "outputs": {"type": "array", "items": _ref("response_output")},
        },
        "required": ["model_name", "outputs"],
    },
}


schema = schemathesis.openapi.from_dict(oip_v2_spec())

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
"""Not ``positive_data_acceptance``: a request can follow the schema and still be wrong
for this model (10 features where it takes 20), and that is a 400 by design."""


@schema.parametrize()
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_oip_requests_get_answers_that_follow_the_spec(
    case: Any, churn_server: RuntimeProcess
) -> None:
    response = case.call(base_url=churn_server.url, timeout=10)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text


def test_the_hostile_suite_has_not_counted_a_single_5xx(churn_server: RuntimeProcess) -> None:
    """The guardrails alarm on 5xx: nothing schemathesis sent may have caused one."""
    assert churn_server.metric("fleetshift_invocation_5xx_errors_total") == 0


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "UINT8", "INT64"])
def test_a_valid_one_row_request_of_each_datatype_is_accepted(
    churn_server: RuntimeProcess, datatype: str
) -> None:
    import httpx  # noqa: PLC0415

    response = httpx.post(
        f"{churn_server.url}/v2/models/model/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [1, 20], "datatype": datatype, "data": [1] * 20}
            ]
        },
    )
    assert response.status_code == 200, response.text

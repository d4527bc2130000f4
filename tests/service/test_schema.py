"""Schemathesis against the served OpenAPI schema: generated requests (valid and not) never get a 500, and every
answer has a documented status, content type, headers and body."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Served

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_to_its_schema(served: Served, mode: GenerationMode) -> None:
    # Hypothesis strategies per operation rather than schemathesis' pytest plugin, which fails on pytest 9.
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/v1/anonymize", "/v1/detect", "/healthz"}
    calls: list[str] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.body):
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            calls.append(case.operation.path)
            case.call_and_validate(headers=served.auth, checks=CHECKS, timeout=30)

        check()
    assert calls.count("/v1/anonymize") >= 5 and calls.count("/v1/detect") >= 5, calls


def test_the_schema_documents_the_multipart_upload_and_the_errors(served: Served) -> None:
    document = httpx.get(f"{served.base_url}/openapi.json").json()
    anonymize = document["paths"]["/v1/anonymize"]["post"]
    body = anonymize["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and body["additionalProperties"] is False
    assert set(body["properties"]) == {
        "file",
        "method",
        "strength",
        "threshold",
        "preset",
        "return_boxes",
        "boxes",
        "keep_person",
        "only_person",
    }
    assert body["properties"]["keep_person"]["items"] == {"type": "string", "format": "binary"}
    assert body["properties"]["method"]["enum"] == ["blur", "pixelate", "fill"]
    assert {"200", "401", "413", "415", "422", "429", "503"} <= set(anonymize["responses"])
    assert "Retry-After" in anonymize["responses"]["503"]["headers"]
    assert anonymize["security"] == [{"HTTPBearer": []}]
    detect = document["paths"]["/v1/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(detect["properties"]) == {"file", "threshold", "preset"}

"""schemathesis against the app's own ``/openapi.json`` (OpenAPI 3.1), in-process over WSGI, with a
token holding ``system/*.cruds``: no 5xx, and answers that conform to the document (status codes,
content types, headers, bodies). Example counts are bounded per operation."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.reliability.conftest import INPUTS, auth, build

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extras")

EXAMPLES_PER_OPERATION = 25


_DATA = Path(tempfile.mkdtemp(prefix="ivclms-schemathesis-"))
APP = build(_DATA, db_url="", export_in_process=False)
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)
"""Built at import (schemathesis' ``from_fixture`` does not run on pytest 9); removed after the module."""


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    APP.extensions["ivclms"].engine.dispose()
    shutil.rmtree(_DATA, ignore_errors=True)


openapi_checks = pytest.importorskip("schemathesis.specs.openapi.checks")
CONFORMANCE = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]
KNOWN_GAPS = {
    # The $validate operations document 200 and 400 only; they also answer 401 (no or bad token),
    # 413 and 415 like every other endpoint. Reported: service/api/validate.py's OpenAPI entry.
    "/fhir/$validate": [openapi_checks.status_code_conformance],
    "/fhir/{resource_type}/$validate": [openapi_checks.status_code_conformance],
}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    INPUTS[f"schemathesis {case.operation.method.upper()} {case.operation.path}"] += 1
    response = case.call(headers=auth())
    documented = set(case.operation.definition.raw.get("responses", {}))
    # No 5xx, except a documented 501 (a de-identified extract on a server without a pseudonym key).
    assert response.status_code < 500 or (response.status_code == 501 and "501" in documented), (
        response.status_code,
        response.text[:300],
    )
    case.validate_response(response, checks=CONFORMANCE, excluded_checks=KNOWN_GAPS.get(case.operation.path))

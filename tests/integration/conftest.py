"""Integration fixtures: the real HAPI FHIR server and PostgreSQL that scripts/test starts.

Never skipped: without the servers these tests fail and say how to run them.
"""

from __future__ import annotations

import os
import uuid

import pytest

from service.fhir.client import FhirClient


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run integration tests through scripts/test, which starts the servers"
        )
    return value


@pytest.fixture(scope="session")
def hapi_url() -> str:
    return _required("IVCLMS_TEST_HAPI_URL")


@pytest.fixture(scope="session")
def pg_url() -> str:
    return _required("IVCLMS_TEST_PG_URL")


@pytest.fixture
def hapi(hapi_url: str):
    client = FhirClient(hapi_url, timeout=60)
    yield client
    client.close()


@pytest.fixture
def tag() -> str:
    """A unique identifier value so each test's data is its own."""
    return f"it-{uuid.uuid4().hex[:12]}"

"""Integration fixtures: the real HAPI FHIR server and PostgreSQL that scripts/test starts.

Never skipped: without the servers these tests fail and say how to run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from service import package_build
from service.db import make_engine
from service.fhir.client import FhirClient
from service.settings import Settings
from service.store import migrate


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
def db_url(pg_url: str) -> Iterator[str]:
    """A fresh database on the real PostgreSQL server for one test, dropped after it."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"ivclms_it_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The service's schema on that fresh database."""
    eng = make_engine(Settings(db_url=db_url, auth_disabled=True))
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def hapi(hapi_url: str):
    client = FhirClient(hapi_url, timeout=60)
    yield client
    client.close()


@pytest.fixture
def tag() -> str:
    """A unique identifier value so each test's data is its own."""
    return f"it-{uuid.uuid4().hex[:12]}"


LOAD_ORDER = ("CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition")


def package_resources() -> list[dict[str, Any]]:
    """Every resource of profiles/ in the order HAPI needs: terminology, then extensions, then profiles."""
    resources = package_build.scan(package_build.PROFILES_DIR).values()
    order = {t: i for i, t in enumerate(LOAD_ORDER)}
    return sorted(resources, key=lambda r: (order[r["resourceType"]], r.get("type") != "Extension", r["id"]))


@pytest.fixture(scope="session")
def package_loaded(hapi_url: str) -> dict[str, dict[str, Any]]:
    """PUT the whole package into HAPI once, before any test asks HAPI about one of its URLs
    (HAPI 8.8 caches "Unable to locate ValueSet" for a URL looked up before it was stored)."""
    client = FhirClient(hapi_url, timeout=120)
    try:
        return {r["url"]: client.update(r) for r in package_resources()}
    finally:
        client.close()

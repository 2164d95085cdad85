"""Shared fixtures: a fresh app with a temporary SQLite database per test."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from service import create_app
from service.db import make_engine
from service.settings import Settings
from service.store import migrate
from tests.support.auth import TEST_SECRET
from tests.support.backend import BACKEND


def _pg_admin() -> tuple[URL, Engine]:
    server = make_url(os.environ["IVCLMS_TEST_PG_URL"])
    return server, create_engine(server, isolation_level="AUTOCOMMIT")


def _pg_database(template: str | None = None) -> Iterator[str]:
    """A database of its own for one test, dropped after it together with every pool still open on it
    (apps that tests build themselves are not disposed one by one)."""
    server, admin = _pg_admin()
    name = f"t_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        for obj in gc.get_objects():
            if isinstance(obj, Engine) and obj.url.database == name:
                obj.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def _pg_schema_template() -> Iterator[str | None]:
    """One database migrated to the newest schema, copied for each test (``CREATE DATABASE ... TEMPLATE``
    is a file copy: about a second less per test than running the migrations on an empty one)."""
    if BACKEND != "postgres":
        yield None
        return
    server, admin = _pg_admin()
    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = make_engine(Settings(db_url=server.set(database=name).render_as_string(hide_password=False)))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def db_url(_pg_schema_template: str | None) -> Iterator[str]:
    """Empty (the embedded SQLite file in tmp_path) or a PostgreSQL database made for this test, already
    at the newest schema (start-up's migration finds nothing to do, as on a server that ran before)."""
    if _pg_schema_template is None:
        yield ""
        return
    yield from _pg_database(_pg_schema_template)


@pytest.fixture(scope="module")
def module_db_url(_pg_schema_template: str | None) -> Iterator[str]:
    """As ``db_url`` for a module whose tests share one app (they only read what it was given)."""
    if _pg_schema_template is None:
        yield ""
        return
    yield from _pg_database(_pg_schema_template)


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """As ``db_url`` but with no schema at all: for the tests of the migrations themselves."""
    if BACKEND != "postgres":
        yield ""
        return
    yield from _pg_database()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, db_url=db_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


DB_FIXTURES = frozenset({"db_url", "module_db_url", "empty_db_url"})
"""A test that asks for one of these gets a database of its own: marked ``db`` (run again on PostgreSQL)."""

INTEGRATION_DIRS = (Path(__file__).parent / "integration",)
"""Folders whose every test needs the servers scripts/test starts: marked ``integration`` here, not file by
file (a folder with a mix, tests/browser and tests/reliability, keeps its marks per file)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``integration`` from the folder; ``db`` from what a test uses (a database of its own), so that the
    PostgreSQL pass of scripts/test selects by marker rather than by a list of directories."""
    for item in items:
        if any(item.path.is_relative_to(folder) for folder in INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)
        if DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)

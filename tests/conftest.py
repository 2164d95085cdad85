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
from sqlalchemy.engine import make_url

from service import create_app
from service.settings import Settings

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


BACKEND = os.environ.get("IVCLMS_TEST_DB", "sqlite")
"""``postgres``: the same tests on a fresh database of the server at IVCLMS_TEST_PG_URL (scripts/test)."""


@pytest.fixture
def db_url() -> Iterator[str]:
    """Empty (the embedded SQLite file in tmp_path) or a PostgreSQL database made for this test."""
    if BACKEND != "postgres":
        yield ""
        return
    server = make_url(os.environ["IVCLMS_TEST_PG_URL"])
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(autouse=True)
def _close_engines(db_url: str) -> Iterator[None]:
    """On PostgreSQL, close every pool before the test's database is dropped (apps that tests build
    themselves are not disposed one by one)."""
    yield
    if BACKEND == "postgres":
        for obj in gc.get_objects():
            if isinstance(obj, Engine):
                obj.dispose()


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

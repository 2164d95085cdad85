"""A write refused for want of space is 507 "storage full", and readiness and metrics say so until a
write succeeds again (issue 17 goal 7). SQLite's disk-full is produced for real: ``PRAGMA
max_page_count`` caps the database at the pages it has, and SQLite then answers SQLITE_FULL, "database
or disk is full" (https://www.sqlite.org/pragma.html#pragma_max_page_count: "Query or set the maximum
number of pages in the database file")."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg.errors
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from service import create_app
from service.api.errors import storage_full
from service.settings import Settings
from service.store.tables import cases
from tests.conftest import TEST_SECRET
from tests.tokens import bearer

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("ivclms-0*.json"))


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    """Always SQLite (whatever the suite's backend): the disk-full is SQLite's own."""
    app = create_app(Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, db_url=""))
    yield app
    app.extensions["ivclms"].engine.dispose()


def _cap(app: Flask, extra_pages: int | None) -> None:
    """Every new connection capped at the pages the file has now (+ ``extra_pages``); None: uncapped."""
    engine = app.extensions["ivclms"].engine
    with engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
    engine.dispose()

    def cap(dbapi_connection: Any, _record: Any) -> None:
        limit = 1_073_741_823 if extra_pages is None else pages + extra_pages
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit}")

    event.listen(engine, "connect", cap)


def _storage_gauge(client) -> float:
    body = client.get("/metrics", headers=bearer()).get_data(as_text=True)
    for family in text_string_to_metric_families(body):
        if family.name == "ivclms_storage_full":
            return family.samples[0].value
    raise AssertionError("no ivclms_storage_full in the exposition")


def _post(client, n: int):
    return client.post(
        "/cases", data=EXAMPLES[n].read_text(), headers=bearer(), content_type="application/json"
    )


def test_a_full_sqlite_database_is_507_storage_full_then_ready_again_after_a_write(sqlite_app) -> None:
    client = sqlite_app.test_client()
    engine = sqlite_app.extensions["ivclms"].engine
    assert _storage_gauge(client) == 0
    _cap(sqlite_app, 0)

    resp = _post(client, 0)
    assert resp.status_code == 507, resp.get_json()
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "no-store"
    assert "storage full" in issue["diagnostics"]
    with engine.connect() as conn:  # nothing half-written, the database intact
        assert conn.execute(select(func.count()).select_from(cases)).scalar_one() == 0
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"]["ok"] is True  # it answers: the cause is the storage
    assert ready.get_json()["checks"]["storage"]["ok"] is False
    assert "storage full" in ready.get_json()["checks"]["storage"]["reason"]
    assert _storage_gauge(client) == 1

    _cap(sqlite_app, None)  # an operator frees space
    assert client.get("/readyz").status_code == 503  # a read proves nothing: still reported
    assert _post(client, 1).status_code == 201
    assert client.get("/readyz").status_code == 200
    assert _storage_gauge(client) == 0


class _Locked(Exception):
    sqlite_errorcode = sqlite3.SQLITE_BUSY  # locked past the timeout: unavailable, not full


def test_postgresqls_disk_full_sqlstate_is_storage_full_and_other_errors_are_not() -> None:
    """psycopg's own class for SQLSTATE 53100 (a real full disk under PostgreSQL is not produced here)."""
    assert storage_full(OperationalError("INSERT", {}, psycopg.errors.DiskFull("no space left on device")))
    assert not storage_full(OperationalError("INSERT", {}, _Locked()))
    assert not storage_full(OperationalError("SELECT 1", {}, ConnectionError()))

"""The Alembic migrations create exactly the schema the code declares, and are idempotent."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.db import make_engine
from service.settings import Settings
from service.store import migrate
from service.store.tables import metadata


def test_migrations_match_the_declared_tables_and_run_twice(tmp_path):
    engine = make_engine(Settings(data_dir=tmp_path, auth_disabled=True, db_migrate=False))
    assert migrate.current(engine) is None
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert set(inspect(engine).get_table_names()) >= set(metadata.tables)
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    engine = make_engine(Settings(data_dir=tmp_path, auth_disabled=True))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_revision_0006_keeps_earlier_sync_records_for_the_first_server_backfilled(tmp_path, empty_db_url):
    """Rows written before sync records named their server survive the upgrade, unattributed, and the
    first backfill (the worker's start) attributes them to the configured server instead of resending."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from service.sync.backfill import backfill

    engine = make_engine(
        Settings(data_dir=tmp_path, auth_disabled=True, db_url=empty_db_url, db_migrate=False)
    )
    migrate.upgrade(engine, "0004")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        stamp = now.replace(tzinfo=None) if conn.dialect.name == "sqlite" else now
        conn.execute(
            text("INSERT INTO cases VALUES ('c1', 'urn:a', 'A-1', 1, 'active', :now, :now)"), {"now": stamp}
        )
        conn.execute(
            text("INSERT INTO case_versions VALUES ('c1', 1, 'active', 'h', '{}', '{}', 'me', :now)"),
            {"now": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO outbox (case_ref, version, state, attempts, next_attempt_at, created_at, "
                "done_at) VALUES ('c1', 1, 'done', 0, :now, :now, :now)"
            ),
            {"now": stamp},
        )
        conn.execute(
            text("INSERT INTO synced_resources VALUES ('c1', 'x|A-1|patient', 'Patient', '7', '1', 1, :now)"),
            {"now": stamp},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT server_url FROM outbox")).scalar_one() is None
        assert conn.execute(text("SELECT server_url, server_id FROM synced_resources")).one() == ("", "7")
    result = backfill(engine, "http://fhir.test/fhir")
    assert (result.queued, result.adopted) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT server_url FROM outbox")).scalar_one() == "http://fhir.test/fhir"
        assert conn.execute(text("SELECT server_url FROM synced_resources")).scalar_one() == (
            "http://fhir.test/fhir"
        )
    engine.dispose()


def test_revision_0008_fills_the_last_day_of_existing_rows_from_their_json(tmp_path, empty_db_url):
    """Rows indexed before ``date_end`` existed get it from their stored JSON, so a date search over
    them compares ranges at once: an ongoing period stays open (null), a single date ends on its day,
    a partial date on the last day it covers, a Period with an end only has no start."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    engine = make_engine(
        Settings(data_dir=tmp_path, auth_disabled=True, db_url=empty_db_url, db_migrate=False)
    )
    migrate.upgrade(engine, "0007")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = {
        "open": ({"resourceType": "Procedure", "performedPeriod": {"start": "2023-03-16"}}, "2023-03-16"),
        "closed": (
            {"resourceType": "Procedure", "performedPeriod": {"start": "2023-03-16", "end": "2023-06-01"}},
            "2023-03-16",
        ),
        "day": ({"resourceType": "Procedure", "performedDateTime": "2021-05-04T10:00:00+02:00"}, None),
        "year": ({"resourceType": "Patient", "birthDate": "1968"}, "1968"),
        "end-only": ({"resourceType": "Procedure", "performedPeriod": {"end": "2020-02"}}, None),
        "none": ({"resourceType": "Procedure"}, None),
    }
    with engine.begin() as conn:
        stamp = now.replace(tzinfo=None) if conn.dialect.name == "sqlite" else now
        conn.execute(
            text("INSERT INTO cases VALUES ('c1', 'urn:a', 'A-1', 1, 'active', :now, :now)"), {"now": stamp}
        )
        for rid, (body, indexed) in rows.items():
            conn.execute(
                text(
                    "INSERT INTO resources (resource_type, id, version_id, case_ref, patient_id, "
                    "last_updated, deleted, profile, identifier, date, content_hash, json) VALUES "
                    "(:t, :id, 1, 'c1', NULL, :now, 0, NULL, NULL, :date, 'h', :json)"
                ),
                {
                    "t": body["resourceType"],
                    "id": rid,
                    "now": stamp,
                    "date": indexed,
                    "json": json.dumps(body),
                },
            )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        got = {
            r.id: (r.date, r.date_end) for r in conn.execute(text("SELECT id, date, date_end FROM resources"))
        }
    assert got == {
        "open": ("2023-03-16", None),
        "closed": ("2023-03-16", "2023-06-01"),
        "day": ("2021-05-04T10:00:00+02:00", "2021-05-04"),
        "year": ("1968", "1968-12-31"),
        "end-only": (None, "2020-02-29"),
        "none": (None, None),
    }
    engine.dispose()

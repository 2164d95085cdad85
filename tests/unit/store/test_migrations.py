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

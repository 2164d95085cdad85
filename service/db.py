"""Database engine: embedded SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from service.settings import Settings


def make_engine(settings: Settings) -> Engine:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _private_database(settings.data_dir, Path(url.database))
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def _private_database(data_dir: Path, database: Path) -> None:
    """The data directory, when the service creates it, is its user's only (0700); a new SQLite file
    is created 0600 (SQLite gives its -wal and -shm files the database file's permissions)."""
    if not data_dir.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    if database.parent.is_dir() and not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))


READ_ONLY = {"ivclms_read_only": True}
"""Execution options of a connection that only reads (a plain deferred BEGIN on SQLite)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (below): the driver's own implicit transactions are turned off.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock at BEGIN: two writers never deadlock upgrading a read lock."""
    read_only = conn.get_execution_options().get("ivclms_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def ping(engine: Engine) -> str | None:
    """None when the database answers, else a reason without credentials."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"; the reason is reported, not raised
        return f"{type(exc).__name__}: database not reachable"
    return None


def describe(engine: Engine) -> str:
    """The database URL with the password hidden, for logs and readiness."""
    return engine.url.render_as_string(hide_password=True)

"""The audit trail as tests read it: rows counted straight from the table, not through the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from service.store.tables import audit_events


def audit_rows(client: Any) -> int:
    """How many audit records the app behind ``client`` (a Flask test client) has written."""
    with client.application.extensions["ivclms"].engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())

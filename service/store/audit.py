"""The audit trail: who did what, when, with which outcome; never what the data said."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select

from service.store.tables import audit_events


@dataclass(frozen=True)
class AuditRecord:
    recorded: datetime
    principal: str
    action: str
    operation: str
    entity: str | None
    outcome: str
    status: int
    id: int | None = None


def record(conn: Connection, event: AuditRecord) -> None:
    values = {k: v for k, v in event.__dict__.items() if k != "id"}
    conn.execute(insert(audit_events).values(**values))


def search(
    conn: Connection,
    *,
    since: datetime | None,
    after_id: int | None,
    limit: int,
    principal: str | None = None,
) -> list[AuditRecord]:
    """Oldest first, after a keyset id: pages stay correct while new events arrive; only the events
    of ``principal`` unless None."""
    query = select(audit_events).order_by(audit_events.c.id).limit(limit)
    if principal is not None:
        query = query.where(audit_events.c.principal == principal)
    if since is not None:
        query = query.where(audit_events.c.recorded >= since)
    if after_id is not None:
        query = query.where(audit_events.c.id > after_id)
    return [AuditRecord(**row._mapping) for row in conn.execute(query)]


def count(conn: Connection, *, since: datetime | None, principal: str | None = None) -> int:
    """How many events ``search`` would page through (``_summary=count``)."""
    query = select(func.count()).select_from(audit_events)
    if principal is not None:
        query = query.where(audit_events.c.principal == principal)
    if since is not None:
        query = query.where(audit_events.c.recorded >= since)
    return int(conn.execute(query).scalar_one())

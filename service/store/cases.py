"""Case rows and their versions: the SQL the intake workflow needs, on a connection the caller owns.

Every function takes an open connection inside a transaction, so the caller decides what commits
together (a case version and its outbox entry always do).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from service.store.tables import case_versions, cases, outbox

CASE_NAMESPACE = uuid.UUID("5f0c8a53-4a43-5b8e-9d8c-1f3c2f6a9e10")
"""uuid5 namespace of case ids: the same business key gets the same id in every installation."""

ACTIVE = "active"
ENTERED_IN_ERROR = "entered-in-error"


def case_ref(source_system: str, case_id: str) -> str:
    """The public id of a case, derived from its business key (source system + case id)."""
    return str(uuid.uuid5(CASE_NAMESPACE, f"{source_system}|{case_id}"))


@dataclass(frozen=True)
class CaseRow:
    id: str
    source_system: str
    case_id: str
    version: int
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class VersionRow:
    case_ref: str
    version: int
    status: str
    content_hash: str
    case_json: str
    bundle_json: str
    author: str
    recorded_at: datetime


def _case(row: Any) -> CaseRow:
    return CaseRow(**row._mapping)


def _version(row: Any) -> VersionRow:
    return VersionRow(**row._mapping)


def find(conn: Connection, ref: str, *, lock: bool = False) -> CaseRow | None:
    """``lock``: hold the row until commit (PostgreSQL), so concurrent writers of one case queue up
    instead of failing their optimistic check; SQLite writers are serialised by BEGIN IMMEDIATE."""
    query = select(cases).where(cases.c.id == ref)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _case(row) if row else None


def find_version(conn: Connection, ref: str, version: int) -> VersionRow | None:
    row = conn.execute(
        select(case_versions).where(case_versions.c.case_ref == ref, case_versions.c.version == version)
    ).first()
    return _version(row) if row else None


def history(conn: Connection, ref: str) -> list[VersionRow]:
    """Every version of a case, newest first."""
    rows = conn.execute(
        select(case_versions).where(case_versions.c.case_ref == ref).order_by(case_versions.c.version.desc())
    )
    return [_version(r) for r in rows]


def insert_case(conn: Connection, row: CaseRow, first: VersionRow) -> None:
    """A new case with its first version; a concurrent insert of the same key raises IntegrityError."""
    conn.execute(insert(cases).values(**row.__dict__))
    conn.execute(insert(case_versions).values(**first.__dict__))


def add_version(conn: Connection, current: CaseRow, new: VersionRow) -> bool:
    """Store ``new`` as the next version if ``current`` is still current (optimistic lock)."""
    moved = conn.execute(
        update(cases)
        .where(cases.c.id == current.id, cases.c.version == current.version)
        .values(version=new.version, status=new.status, updated_at=new.recorded_at)
    )
    if moved.rowcount != 1:
        return False
    conn.execute(insert(case_versions).values(**new.__dict__))
    return True


def enqueue(conn: Connection, ref: str, version: int, now: datetime) -> None:
    """The outbox entry that makes the worker send this version (same transaction as the version)."""
    conn.execute(
        insert(outbox).values(
            case_ref=ref, version=version, state="pending", attempts=0, next_attempt_at=now, created_at=now
        )
    )


def sync_states(conn: Connection, refs: list[str]) -> dict[str, str]:
    """State of the newest outbox entry of each case (cases never queued are absent)."""
    if not refs:
        return {}
    newest = (
        select(outbox.c.case_ref, func.max(outbox.c.id).label("id"))
        .where(outbox.c.case_ref.in_(refs))
        .group_by(outbox.c.case_ref)
        .subquery()
    )
    rows = conn.execute(select(outbox.c.case_ref, outbox.c.state).join(newest, outbox.c.id == newest.c.id))
    return {r.case_ref: r.state for r in rows}


def page(
    conn: Connection,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    since: datetime | None = None,
    sync_state: str | None = None,
    sources: frozenset[str] | None = None,
) -> list[CaseRow]:
    """Cases ordered by (updated_at, id), after a keyset cursor: stable under concurrent writes;
    only those of ``sources`` (source systems) unless None."""
    query = select(cases).order_by(cases.c.updated_at, cases.c.id).limit(limit)
    if sources is not None:
        query = query.where(cases.c.source_system.in_(sorted(sources)))
    if since is not None:
        query = query.where(cases.c.updated_at >= since)
    if after is not None:
        stamp, ref = after
        query = query.where(
            or_(cases.c.updated_at > stamp, and_(cases.c.updated_at == stamp, cases.c.id > ref))
        )
    if sync_state is not None:
        newest = (
            select(outbox.c.case_ref, func.max(outbox.c.id).label("id"))
            .group_by(outbox.c.case_ref)
            .subquery()
        )
        state = (
            select(outbox.c.case_ref)
            .join(newest, outbox.c.id == newest.c.id)
            .where(outbox.c.state == sync_state)
        )
        query = query.where(cases.c.id.in_(state))
    return [_case(r) for r in conn.execute(query)]

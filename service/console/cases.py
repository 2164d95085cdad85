"""The console's case list: the current version of each case the caller may read, filtered and paged.

Institution and IVC segment live inside the case JSON, so (as ``service.registry.source`` does) they
are matched in Python on each parsed case; the list is read newest first and paged by offset, which is
enough for a registry's hundreds of cases (the API's ``GET /cases`` keeps its keyset cursor for
machines). No Flask: the blueprint passes the caller's readable sources in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select

from service.db import READ_ONLY
from service.registry import source
from service.store import cases as store
from service.store.tables import case_versions, cases

STATUSES = (store.ACTIVE, store.ENTERED_IN_ERROR)
SYNC_STATES = ("pending", "sending", "done", "dead", "superseded", "never")
"""Outbox states of a case's newest entry (``service.api.cases.SYNC_STATES``), and ``never`` queued."""


@dataclass(frozen=True)
class ListFilters:
    institution: str = ""
    segment: str = ""
    status: str = ""
    sync: str = ""


@dataclass(frozen=True)
class Row:
    ref: str
    case_id: str
    source_system: str
    institution: str
    segments: str
    diagnosis_date: str
    version: int
    status: str
    sync: str
    updated_at: dt.datetime


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    offset: int
    limit: int


def _segments(diagnosis: dict[str, Any]) -> str:
    low, high = diagnosis.get("ivc_segment_from"), diagnosis.get("ivc_segment_to")
    return str(low) if low == high else f"{low}-{high}"


def list_cases(
    engine: Engine, filters: ListFilters, *, offset: int, limit: int, sources: frozenset[str] | None
) -> Page:
    """The page of matching cases (newest change first) and how many match in all."""
    content = source.Filters(
        institutions=(filters.institution,) if filters.institution else (),
        segments=(filters.segment,) if filters.segment else (),
    )
    query = (
        select(cases, case_versions.c.case_json)
        .join(
            case_versions,
            (case_versions.c.case_ref == cases.c.id) & (case_versions.c.version == cases.c.version),
        )
        .order_by(cases.c.updated_at.desc(), cases.c.id)
    )
    if sources is not None:
        query = query.where(cases.c.source_system.in_(sorted(sources)))
    if filters.status:
        query = query.where(cases.c.status == filters.status)
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        found = conn.execute(query).all()
        states = store.sync_states(conn, [r.id for r in found])
    matched: list[Row] = []
    for r in found:
        state = states.get(r.id, "never")
        if filters.sync and state != filters.sync:
            continue
        case = orjson.loads(r.case_json)
        if not source.matches(case, content):
            continue
        diagnosis = case.get("diagnosis") or {}
        matched.append(
            Row(
                ref=r.id,
                case_id=r.case_id,
                source_system=r.source_system,
                institution=str(case.get("institution") or ""),
                segments=_segments(diagnosis),
                diagnosis_date=str(diagnosis.get("date") or ""),
                version=r.version,
                status=r.status,
                sync=state,
                updated_at=r.updated_at,
            )
        )
    return Page(matched[offset : offset + limit], len(matched), offset, limit)


def institutions(engine: Engine, sources: frozenset[str] | None) -> list[str]:
    """The institutions named by the cases the caller may read (for the filter's choices)."""
    query = select(case_versions.c.case_json).join(
        cases, (case_versions.c.case_ref == cases.c.id) & (case_versions.c.version == cases.c.version)
    )
    if sources is not None:
        query = query.where(cases.c.source_system.in_(sorted(sources)))
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        names = {str(orjson.loads(j).get("institution") or "") for (j,) in conn.execute(query)}
    return sorted(n for n in names if n)

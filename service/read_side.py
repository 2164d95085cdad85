"""Reads of the FHIR read side: read, vread, history, search with includes, ``$everything``.

Returns stored JSON text (never re-serialised) and the facts a response needs; the API wraps them
into Bundles. No Flask, no HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select

from service.db import READ_ONLY
from service.errors import Gone, NotFound
from service.search import Search, count_query, query
from service.store import resources as index
from service.store.resources import Indexed
from service.store.tables import cases, resource_links, resources

Keep = Callable[[str, str, str | None], bool]
"""May a resource leave for the caller: (resource type, stored JSON, source system of its case)."""


def keep_all(resource_type: str, text: str, source: str | None) -> bool:
    return True


@dataclass(frozen=True)
class Row:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    json: str
    source_system: str | None = None


@dataclass
class Page:
    matches: list[Row]
    included: list[Row] = field(default_factory=list)
    total: int | None = None
    first_key: tuple[datetime, str] | None = None
    last_key: tuple[datetime, str] | None = None
    has_next: bool = False
    has_prev: bool = False
    withheld: int = 0
    """Included resources left out because the caller may not see them."""


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        yield conn


def _row(r: Any) -> Row:
    return Row(r.resource_type, r.id, r.version_id, r.last_updated, r.json, r.source_system)


def _with_source() -> Any:
    return select(resources, cases.c.source_system).join(cases, cases.c.id == resources.c.case_ref)


def _current(conn: Connection, resource_type: str, resource_id: str) -> Row | None:
    found = conn.execute(
        _with_source().where(resources.c.resource_type == resource_type, resources.c.id == resource_id)
    ).first()
    return None if found is None else _row(found)


def read(
    engine: Engine,
    resource_type: str,
    resource_id: str,
    version: int | None = None,
    keep: Keep = keep_all,
) -> Indexed:
    """A resource (or one of its versions) the caller may see; one it may not is unknown (404), so
    that neither its existence nor its removal is revealed."""
    unknown = NotFound(
        f"{resource_type}/{resource_id}" + (f"/_history/{version}" if version else "") + " is unknown"
    )
    with _reading(engine) as conn:
        current = _current(conn, resource_type, resource_id)
        if current is None or not keep(resource_type, current.json, current.source_system):
            raise unknown
        found = index.read(conn, resource_type, resource_id, version)
    if found is None:
        raise unknown
    if not found.deleted and not keep(resource_type, found.json, current.source_system):
        raise unknown
    if found.deleted:
        raise Gone(f"{resource_type}/{resource_id} was removed from its case (version {found.version_id})")
    return found


def history(engine: Engine, resource_type: str, resource_id: str, keep: Keep = keep_all) -> list[Indexed]:
    """The versions the caller may see (removals included) of a resource it may see now."""
    with _reading(engine) as conn:
        current = _current(conn, resource_type, resource_id)
        if current is None or not keep(resource_type, current.json, current.source_system):
            raise NotFound(f"{resource_type}/{resource_id} is unknown")
        found = index.history(conn, resource_type, resource_id)
    return [v for v in found if v.deleted or keep(resource_type, v.json, current.source_system)]


def _includes(conn: Connection, search: Search, matches: list[Row], keep: Keep) -> tuple[list[Row], int]:
    """Included resources the caller may see, and how many it may not (left out)."""
    if not matches or not (search.include or search.revinclude):
        return [], 0
    ids = [m.id for m in matches]
    seen = {(m.resource_type, m.id) for m in matches}
    out: list[Row] = []
    for source_type, param, target in search.include:
        if source_type != search.resource_type:
            continue
        targets = select(resource_links.c.system, resource_links.c.value).where(
            resource_links.c.resource_type == source_type,
            resource_links.c.id.in_(ids),
            resource_links.c.param == param,
        )
        pairs = {(t.system, t.value) for t in conn.execute(targets) if target is None or t.system == target}
        for target_type, target_id in sorted(pairs):
            row = conn.execute(
                _with_source().where(
                    resources.c.resource_type == target_type,
                    resources.c.id == target_id,
                    resources.c.deleted == 0,
                )
            ).first()
            if row is not None and (row.resource_type, row.id) not in seen:
                seen.add((row.resource_type, row.id))
                out.append(_row(row))
    for source_type, param in search.revinclude:
        linked = (
            _with_source()
            .join(
                resource_links,
                and_(
                    resource_links.c.resource_type == resources.c.resource_type,
                    resource_links.c.id == resources.c.id,
                ),
            )
            .where(
                resources.c.resource_type == source_type,
                resources.c.deleted == 0,
                resource_links.c.param == param,
                resource_links.c.system == search.resource_type,
                resource_links.c.value.in_(ids),
            )
            .order_by(resources.c.last_updated, resources.c.id)
        )
        for row in conn.execute(linked):
            if (row.resource_type, row.id) not in seen:
                seen.add((row.resource_type, row.id))
                out.append(_row(row))
    shown = [r for r in out if keep(r.resource_type, r.json, r.source_system)]
    return shown, len(out) - len(shown)


def search(engine: Engine, search: Search, keep: Keep = keep_all) -> Page:
    """A page of matches (the caller's grant is in ``search``'s conditions, so the total is exact;
    ``keep`` checks each match again and decides which included resources may leave)."""
    with _reading(engine) as conn:
        if search.summary_count:
            return Page([], total=int(conn.execute(count_query(search)).scalar_one()))
        rows = [_row(r) for r in conn.execute(query(search))]
        more = len(rows) > search.count
        rows = [r for r in rows[: search.count] if keep(r.resource_type, r.json, r.source_system)]
        if search.before is not None:
            rows.reverse()
        page = Page(rows, total=int(conn.execute(count_query(search)).scalar_one()))
        page.included, page.withheld = _includes(conn, search, rows, keep)
    if rows:
        page.first_key = (rows[0].last_updated, rows[0].id)
        page.last_key = (rows[-1].last_updated, rows[-1].id)
    if search.before is not None:
        page.has_prev, page.has_next = more, True
    else:
        page.has_next, page.has_prev = more, search.after is not None
    return page


@dataclass(frozen=True)
class EverythingQuery:
    """What of a patient's record ``$everything`` returns: types, a clinical date window (days,
    inclusive), resources updated since an instant, and a page after a key."""

    since: datetime | None = None
    types: frozenset[str] | None = None
    start: str | None = None
    end: str | None = None
    count: int | None = None
    after: tuple[datetime, str] | None = None
    """(lastUpdated, "Type/id") of the last resource of the previous page."""


@dataclass
class EverythingPage:
    rows: list[Row]
    total: int
    withheld: int
    last_key: tuple[datetime, str] | None = None
    has_next: bool = False


def _in_window(resource_type: str, row_date: str | None, start: str | None, end: str | None) -> bool:
    """Care dates within [start, end] (each YYYY, YYYY-MM or YYYY-MM-DD, inclusive at its precision).
    The Patient is always in ("At a minimum, the patient resource itself is returned"; its date is a
    birth date, not care), and so is a resource without a care date: it is not care in a date range."""
    if resource_type == "Patient" or row_date is None:
        return True
    return (start is None or row_date[: len(start)] >= start) and (end is None or row_date[: len(end)] <= end)


def everything(
    engine: Engine, patient_id: str, asked: EverythingQuery | None = None, keep: Keep = keep_all
) -> EverythingPage:
    """The Patient and every resource of its case (not deleted) the caller may see, oldest update
    first, filtered and paged as ``asked``; with how many it may not see (left out). A Patient it
    may not see is unknown (404)."""
    asked = asked or EverythingQuery()
    read(engine, "Patient", patient_id, keep=keep)
    with _reading(engine) as conn:
        query_ = _with_source().where(resources.c.patient_id == patient_id, resources.c.deleted == 0)
        if asked.since is not None:
            query_ = query_.where(resources.c.last_updated >= asked.since)
        if asked.types is not None:
            query_ = query_.where(resources.c.resource_type.in_(sorted(asked.types)))
        found = [
            (_row(r), r.date)
            for r in conn.execute(
                query_.order_by(resources.c.last_updated, resources.c.resource_type, resources.c.id)
            )
        ]
    # Python's order (not the database collation's), the same one the page key is compared in.
    found.sort(key=lambda pair: (pair[0].last_updated, f"{pair[0].resource_type}/{pair[0].id}"))
    rows = [r for r, day in found if _in_window(r.resource_type, day, asked.start, asked.end)]
    shown = [r for r in rows if keep(r.resource_type, r.json, r.source_system)]
    page = EverythingPage(shown, len(shown), len(rows) - len(shown))
    if asked.after is not None:
        after = asked.after
        page.rows = [r for r in shown if (r.last_updated, f"{r.resource_type}/{r.id}") > after]
    if asked.count is not None and len(page.rows) > asked.count:
        page.rows, page.has_next = page.rows[: asked.count], True
    if page.rows:
        last = page.rows[-1]
        page.last_key = (last.last_updated, f"{last.resource_type}/{last.id}")
    return page

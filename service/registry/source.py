"""The cases a registry pull reads: the current version of every active case, filtered, in pages.

Cases withdrawn as entered-in-error are never read. The filters that are columns of ``cases``
(``since``, explicit case refs, the caller's source systems) run in SQL; the ones inside the case
JSON (institution, IVC segment, diagnosis date or year, registry consent) run in Python on each parsed
case, so SQLite and PostgreSQL behave the same. Pages of ``page_size`` rows are read by keyset on the
case ref, each page in its own short read-only transaction, so memory stays flat and a slow client
never holds a transaction open.

Consistency: a pull is not one snapshot. Each case appears at most once per pull (the keyset only moves
forward), at the version that was current when its page was read. A registry that pulls incrementally
passes the ``as_of`` instant of its previous pull as ``since``: a case changed while that pull ran has
``updated_at >= as_of`` and comes again, so nothing is missed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select

from service.codes import table
from service.db import READ_ONLY
from service.model import dates
from service.store.cases import ACTIVE
from service.store.tables import case_versions, cases

PAGE_SIZE = 500
UNKNOWN_CONSENT = "unknown"
"""The consent code an absent ``registry_consent`` counts as."""
MAX_REFS = 500
"""Most case refs one pull may name (``Filters.refs``)."""


@dataclass(frozen=True)
class Filters:
    """What a registry asks for; an empty tuple or None means "no restriction"."""

    since: dt.datetime | None = None
    """cases.updated_at >= since (aware datetime): incremental pulls."""
    refs: tuple[str, ...] = ()
    """Only these case refs (the ids of ``/cases/{id}``)."""
    institutions: tuple[str, ...] = ()
    """Case ``institution`` equal to one of these (case-insensitive, surrounding blanks ignored)."""
    segments: tuple[str, ...] = ()
    """The tumour certainly involves one of these IVC segments (``ivc_segment_from`` <= s <=
    ``ivc_segment_to``; with one end ``unknown``, the known end alone: ``source.involves``)."""
    diagnosed_from: dt.date | None = None
    """diagnosis.date >= this date."""
    diagnosed_to: dt.date | None = None
    """diagnosis.date <= this date."""
    diagnosed_from_year: int | None = None
    """The year of diagnosis.date >= this (de-identified pulls filter on the year they show)."""
    diagnosed_to_year: int | None = None
    """The year of diagnosis.date <= this."""
    consent: tuple[str, ...] = ()
    """``registry_consent`` is one of these codes; an absent consent counts as ``unknown``. The
    privacy default (only ``yes``) is set by ``service.registry.access``, not here."""
    sources: frozenset[str] | None = None
    """Only cases of these source systems (None: every one): the caller's readable sources."""


@dataclass(frozen=True)
class SourceCase:
    ref: str
    version: int
    updated_at: dt.datetime
    case: dict[str, Any]


def _fold(text: str) -> str:
    return text.strip().casefold()


DATE_FILTER_RULE = (
    "A diagnosis date known only to the year or month passes a date filter unless it is certainly "
    "outside it: a diagnosis in 2020 is counted by diagnosed_to=2020-06-30 and by "
    "diagnosed_from=2020-07-01 alike (both halves of the year); an unknown diagnosis date passes only "
    "when no date filter is set."
)
"""The partial-date rule of the diagnosis filters, as the pages and docs/registry.md state it."""


def involves(diagnosis: Mapping[str, Any], segments: tuple[str, ...]) -> bool:
    """Whether the tumour certainly involves one of ``segments``: a known end is involved even when the
    other end is ``unknown`` (review 15, M4: ``unknown``..``I`` involves I, ``III``..``unknown`` III);
    with both ends known, every segment from one to the other. An unknown end proves nothing more."""
    order = table("ivc-segment").keys()
    ends = [diagnosis["ivc_segment_from"], diagnosis["ivc_segment_to"]]
    known = [order.index(end) for end in ends if end in order]
    if not known:
        return False
    low, high = (min(known), max(known)) if len(known) == 2 else (known[0], known[0])
    return any(low <= order.index(s) <= high for s in segments if s in order)


def matches(case: Mapping[str, Any], filters: Filters) -> bool:
    """Whether a canonical case passes the content filters (institution, segment, diagnosis, consent)."""
    if filters.institutions:
        institution = case.get("institution")
        wanted = {_fold(i) for i in filters.institutions}
        if not isinstance(institution, str) or _fold(institution) not in wanted:
            return False
    if filters.consent and (case.get("registry_consent") or UNKNOWN_CONSENT) not in filters.consent:
        return False
    diagnosis = case["diagnosis"]
    if filters.segments and not involves(diagnosis, filters.segments):
        return False
    # a partial diagnosis date passes a bound unless it is certainly outside it (as the date rules);
    # an unknown one (issue 15) is not known to be inside any bound, so it passes only when none is set
    known = dates.known(diagnosis["date"])
    if known is None:
        bounds = (
            filters.diagnosed_from,
            filters.diagnosed_to,
            filters.diagnosed_from_year,
            filters.diagnosed_to_year,
        )
        return all(bound is None for bound in bounds)
    date = dates.parse(known)
    if filters.diagnosed_from is not None and date.latest < filters.diagnosed_from:
        return False
    if filters.diagnosed_to is not None and date.earliest > filters.diagnosed_to:
        return False
    if filters.diagnosed_from_year is not None and date.year < filters.diagnosed_from_year:
        return False
    return not (filters.diagnosed_to_year is not None and date.year > filters.diagnosed_to_year)


def stream_cases(engine: Engine, filters: Filters, *, page_size: int = PAGE_SIZE) -> Iterator[SourceCase]:
    """Every active case that passes ``filters``, ordered by case ref, read ``page_size`` at a time."""
    after: str | None = None
    while True:
        query = (
            select(cases.c.id, cases.c.version, cases.c.updated_at, case_versions.c.case_json)
            .join(
                case_versions,
                (case_versions.c.case_ref == cases.c.id) & (case_versions.c.version == cases.c.version),
            )
            .where(cases.c.status == ACTIVE, case_versions.c.status == ACTIVE)
            .order_by(cases.c.id)
            .limit(page_size)
        )
        if filters.since is not None:
            query = query.where(cases.c.updated_at >= filters.since)
        if filters.refs:
            query = query.where(cases.c.id.in_(filters.refs))
        if filters.sources is not None:
            query = query.where(cases.c.source_system.in_(sorted(filters.sources)))
        if after is not None:
            query = query.where(cases.c.id > after)
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = conn.execute(query).all()
        for row in rows:
            case = orjson.loads(row.case_json)
            if matches(case, filters):
                yield SourceCase(row.id, row.version, row.updated_at, case)
        if len(rows) < page_size:
            return
        after = rows[-1].id

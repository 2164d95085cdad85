"""Bulk Data ``$export`` (FHIR Bulk Data Access v2): jobs queued by the API, run by a worker.

A job snapshots ``transactionTime`` when it is queued and writes every resource of the requested types
as it was at that instant (its newest version up to then, unless that version is a deletion; and only
when that version is after ``_since``), one NDJSON file per type, read in keyset pages and written line
by line, so memory stays flat whatever the size. Resources written after the kick-off are exported from
``resource_versions`` as they were, so what a job holds does not depend on when the worker runs it.
Cancelling marks the job; the runner notices between pages and removes its files. Finished jobs
expire after a set time.

A job holds only what its owner may read: the caller's grant per type (SMART v2 ``?`` restrictions and
readable source systems) is stored with the job at kick-off and applied to every page the runner reads.

Kick-off parameters of Bulk Data v2 (``_typeFilter``, ``_elements``, ``patient``) are checked here at
kick-off and stored with the job (``Options``); what cannot be honoured is a 400 with
``Prefer: handling=strict`` and otherwise a warning OperationOutcome in the manifest's ``error`` files.
Groups: the service maintains one Group per source system and one for the whole cohort, derived at read
time from the Patients of the read side (nothing stored, so never stale).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, tuple_, update

from service import search
from service.auth.gate import within
from service.clock import instant
from service.db import READ_ONLY
from service.errors import BadRequest, Gone, Issue, NotFound, TooMany
from service.limits import EXPORT_BYTES_SETTING, EXPORTS_SETTING, Limits
from service.outcome import operation_outcome
from service.search import READ_TYPES, RESOURCE_TYPES, Visibility, limit_conditions, source_condition
from service.store.tables import cases, export_jobs, resource_versions, resources

log = logging.getLogger("ivclms.export")

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
PAGE = 1000
POLL_AFTER_S = 60
"""Retry-After of a kick-off refused while the client's other exports run."""
STATUS_AFTER_S = 2
"""Retry-After of a status poll while the export is queued or running."""
PATIENT_TYPES = RESOURCE_TYPES
"""Patient-level export: every type of the patient compartment the service holds (all but none)."""
EXPORT_TYPES = READ_TYPES
"""What ``_type`` may name: every served type, Provenance included (the IG: "all available Provenance
resources in a system level export request unless ... ``_type`` ... does not include Provenance")."""
OUTCOMES = "OperationOutcome.ndjson"
"""The file the manifest's ``error`` array points to: one OperationOutcome per parameter not honoured."""
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
MANDATORY = ("resourceType", "id", "meta")
KNOWN_PARAMS = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient"})
COHORT_GROUP = "ivclms-cohort"
"""The Group of every Patient the service holds."""
_GROUP_NAMESPACE = uuid.UUID("6f1c2a4e-3b5d-4c7e-9a8f-0d1e2f3a4b5c")
_QUERY_START = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
"""Where one ``_typeFilter`` query ends and the next begins (a comma inside a query is a search OR)."""
_ELEMENT = re.compile(r"(?:([A-Z][A-Za-z]*)\.)?([a-z][A-Za-z0-9]*)")
_CHOICE_SUFFIXES = frozenset(
    {
        "Boolean",
        "CodeableConcept",
        "Date",
        "DateTime",
        "Instant",
        "Integer",
        "Period",
        "Quantity",
        "Range",
        "Ratio",
        "Reference",
        "SampledData",
        "String",
        "Time",
        "Age",
        "Attachment",
        "Identifier",
        "Timing",
    }
)


def files_dir(data_dir: Path) -> Path:
    return data_dir / "exports"


@dataclass(frozen=True)
class Options:
    """Bulk Data v2 kick-off parameters a job honours, and warnings about those it does not."""

    type_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per type, the ``_typeFilter`` queries (ORed); a type absent: unfiltered."""
    elements: tuple[str, ...] = ()
    """``_elements`` as given (``Type.element`` or ``element``); empty: whole resources."""
    patients: tuple[str, ...] = ()
    """``patient``: ids of the Patients whose compartments are exported; empty: every one."""
    group_source: str | None = None
    """A Group export of one source system's Group (the cohort Group: None, like a Patient export)."""
    warnings: tuple[tuple[str, str], ...] = ()
    """(parameter, message) for each parameter ignored under lenient handling."""
    requires_token: bool = True

    def as_json(self) -> str:
        return orjson.dumps(
            {
                "type_filters": {t: list(q) for t, q in self.type_filters.items()},
                "elements": list(self.elements),
                "patients": list(self.patients),
                "group_source": self.group_source,
                "warnings": [list(w) for w in self.warnings],
                "requires_token": self.requires_token,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str | None) -> Options:
        if not text:
            return cls()
        data = orjson.loads(text)
        return cls(
            {str(t): tuple(str(q) for q in qs) for t, qs in data["type_filters"].items()},
            tuple(str(e) for e in data["elements"]),
            tuple(str(p) for p in data["patients"]),
            data["group_source"],
            tuple((str(n), str(m)) for n, m in data["warnings"]),
            bool(data["requires_token"]),
        )


@dataclass(frozen=True)
class KickOff:
    """A kick-off's parameters, checked: the raw values still parsed by the caller (``_type``,
    ``_since``, ``_outputFormat``) and ``Options`` minus what needs the exported types."""

    output_format: str | None
    types: str | None
    since: str | None
    type_filters: tuple[str, ...]
    elements: tuple[str, ...]
    patients: tuple[str, ...]
    warnings: tuple[tuple[str, str], ...]


def _refuse_or_warn(strict: bool, warnings: list[tuple[str, str]], name: str, message: str) -> None:
    if strict:
        raise BadRequest([Issue("not-supported", f"{name}: {message}", name)])
    warnings.append((name, message))


def parse_kick_off(params: Sequence[tuple[str, str]], *, level: str, strict: bool, post: bool) -> KickOff:
    """The kick-off's parameters (query string or a Parameters body as (name, value) pairs).

    Repeated comma-delimited parameters are joined (the IG: "The server SHALL treat the values provided
    as if they were comma delimited values within a single instance of the parameter"). Unknown and
    unsupported parameters (``includeAssociatedData``): 400 with ``Prefer: handling=strict``, else ignored
    with a warning."""
    warnings: list[tuple[str, str]] = []
    found: dict[str, list[str]] = {}
    for name, value in params:
        if name == "includeAssociatedData":
            _refuse_or_warn(
                strict, warnings, name, f"{value!r} is not supported (no associated data is added)"
            )
        elif name == "patient" and level == "system":
            _refuse_or_warn(strict, warnings, name, "not applicable to a system level export")
        elif name == "patient" and not post:
            _refuse_or_warn(strict, warnings, name, "only in a POST kick-off (a Parameters body)")
        elif name in KNOWN_PARAMS:
            found.setdefault(name, []).append(value)
        else:
            _refuse_or_warn(strict, warnings, name, "unknown or unsupported $export parameter")
    for single in ("_outputFormat", "_since"):
        if len(found.get(single, ())) > 1:
            raise BadRequest([Issue("invalid", f"{single}: given more than once", single)])

    def joined(name: str) -> str | None:
        values = found.get(name)
        return ",".join(values) if values else None

    filters = tuple(q for raw in found.get("_typeFilter", ()) for q in _QUERY_START.split(raw) if q)
    elements = tuple(e.strip() for raw in found.get("_elements", ()) for e in raw.split(",") if e.strip())
    patients = tuple(dict.fromkeys(found.get("patient", ())))

    def first(name: str) -> str | None:
        values = found.get(name)
        return values[0] if values else None

    return KickOff(
        first("_outputFormat"),
        joined("_type"),
        first("_since"),
        filters,
        elements,
        patients,
        tuple(warnings),
    )


def parse_type_filters(
    queries: Sequence[str], types: Sequence[str], *, strict: bool, warnings: list[tuple[str, str]]
) -> dict[str, tuple[str, ...]]:
    """``_typeFilter`` queries checked with the search parameters the server declares (service.search);
    several for one type are ORed (the IG: "two subqueries joined together with a comma for a logical
    'or'"). A query on a type not exported, or with a parameter the server does not support: 400 when
    strict, else left out with a warning."""
    out: dict[str, list[str]] = {}
    for item in queries:
        resource_type, mark, query = item.partition("?")
        name = "_typeFilter"
        if not mark or resource_type not in EXPORT_TYPES:
            _refuse_or_warn(strict, warnings, name, f"{item!r}: expected [type]?[search parameters]")
            continue
        if resource_type not in types:
            _refuse_or_warn(strict, warnings, name, f"{item!r}: {resource_type} is not exported (_type)")
            continue
        pairs = parse_qsl(query, keep_blank_values=True)
        control = [n for n, _ in pairs if n.split(":", 1)[0] in (*search.CONTROL, "_sort", "_elements")]
        if not pairs or control:
            why = "search result parameters SHALL NOT be used" if control else "no search parameter"
            _refuse_or_warn(strict, warnings, name, f"{item!r}: {why}")
            continue
        try:
            search.parse(resource_type, pairs, strict=True)
        except BadRequest as error:
            _refuse_or_warn(strict, warnings, name, f"{item!r}: {error.issues[0].diagnostics}")
            continue
        out.setdefault(resource_type, []).append(query)
    return {t: tuple(q) for t, q in out.items()}


def type_filter_condition(resource_type: str, queries: Sequence[str]) -> Any:
    """Rows meeting one of the queries (each query's parameters ANDed, as in search)."""
    options = []
    for query in queries:
        parsed = search.parse(resource_type, parse_qsl(query, keep_blank_values=True), strict=True)
        options.append(and_(*parsed.conditions))
    return or_(*options)


def check_elements(
    elements: Sequence[str], types: Sequence[str], *, strict: bool, warnings: list[tuple[str, str]]
) -> tuple[str, ...]:
    """``_elements``: root elements, ``[type].[element]`` or ``[element]`` (the IG: "only root elements in
    a resource are permitted"); others are 400 when strict, else left out with a warning."""
    kept = []
    for element in elements:
        match = _ELEMENT.fullmatch(element)
        if match is None:
            _refuse_or_warn(
                strict, warnings, "_elements", f"{element!r}: expected [type].[element] or [element]"
            )
        elif match.group(1) is not None and match.group(1) not in types:
            _refuse_or_warn(strict, warnings, "_elements", f"{element!r}: {match.group(1)} is not exported")
        else:
            kept.append(element)
    return tuple(kept)


def _element_names(elements: Sequence[str], resource_type: str) -> frozenset[str]:
    names = set()
    for element in elements:
        qualifier, _, name = element.rpartition(".")
        if not qualifier or qualifier == resource_type:
            names.add(name)
    return frozenset(names)


def _listed(key: str, names: frozenset[str]) -> bool:
    if key in names:
        return True
    return any(key.startswith(n) and key[len(n) :] in _CHOICE_SUFFIXES for n in names)  # value[x]


def subset(resource: dict[str, Any], elements: Sequence[str]) -> dict[str, Any]:
    """Only the listed elements and the mandatory ones, tagged SUBSETTED (R4 search ``_elements``:
    "Servers SHOULD mark the resources with the tag SUBSETTED to ensure that the incomplete resource is
    not actually used to overwrite a complete resource")."""
    names = _element_names(elements, str(resource.get("resourceType", "")))
    out = {k: v for k, v in resource.items() if k in MANDATORY or _listed(k, names)}
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    out["meta"] = meta
    return out


def known_patients(
    engine: Engine, ids: Sequence[str], visibility: Visibility, group_source: str | None
) -> set[str]:
    """Of ``ids``, the Patients that exist, that the caller may see and (for a Group) are members."""
    if not ids:
        return set()
    query = select(resources.c.id).where(
        resources.c.resource_type == "Patient", resources.c.deleted == 0, resources.c.id.in_(list(ids))
    )
    for condition in limit_conditions("Patient", visibility):
        query = query.where(condition)
    if group_source is not None:
        query = query.where(source_condition(frozenset({group_source})))
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        return {r.id for r in conn.execute(query)}


# ---- Groups the service maintains ----------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    id: str
    source: str | None
    """The source system whose Patients are members; None: the whole cohort."""


def group_id(source: str) -> str:
    """A source system's Group id: stable for the source, whatever else changes."""
    return f"source-{uuid.uuid5(_GROUP_NAMESPACE, source)}"


def _sources(conn: Connection) -> list[str]:
    query = (
        select(cases.c.source_system)
        .join(resources, resources.c.case_ref == cases.c.id)
        .where(resources.c.resource_type == "Patient", resources.c.deleted == 0)
        .distinct()
    )
    return sorted(r.source_system for r in conn.execute(query))


def groups(engine: Engine) -> list[Group]:
    """The cohort Group and one Group per source system holding a Patient."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        sources = _sources(conn)
    return [Group(COHORT_GROUP, None), *(Group(group_id(s), s) for s in sources)]


def find_group(engine: Engine, wanted: str) -> Group:
    for group in groups(engine):
        if group.id == wanted:
            return group
    raise NotFound(f"no Group {wanted}")


def group_resource(engine: Engine, group: Group, members: Visibility | None) -> dict[str, Any]:
    """The Group as FHIR: its members are the Patients ``members`` lets the caller see (None: none)."""
    rows: list[Any] = []
    if members is not None:
        query = (
            select(resources.c.id, resources.c.last_updated)
            .where(resources.c.resource_type == "Patient", resources.c.deleted == 0)
            .order_by(resources.c.id)
        )
        if group.source is not None:
            query = query.where(source_condition(frozenset({group.source})))
        for condition in limit_conditions("Patient", members):
            query = query.where(condition)
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = list(conn.execute(query))
    name = "IVC-LMS cohort" if group.source is None else f"IVC-LMS patients of {group.source}"
    out: dict[str, Any] = {
        "resourceType": "Group",
        "id": group.id,
        "identifier": [{"system": "urn:ivclms:group", "value": group.source or COHORT_GROUP}],
        "active": True,
        "type": "person",
        "actual": True,
        "name": name,
        "quantity": len(rows),
        "member": [{"entity": {"reference": f"Patient/{r.id}"}} for r in rows],
    }
    if rows:
        out["meta"] = {"lastUpdated": instant(max(r.last_updated for r in rows))}
    if not out["member"]:
        del out["member"]
    return out


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    level: str
    types: tuple[str, ...]
    since: datetime | None
    request_url: str
    principal: str
    transaction_time: datetime
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    progress: int
    manifest_json: str | None
    error: str | None
    access_json: str | None = None
    """Per type, the owner's grant as ``Visibility`` JSON; a type absent (or None): unlimited."""
    options_json: str | None = None
    """The Bulk Data v2 parameters honoured (``Options`` JSON); None: none."""

    @property
    def options(self) -> Options:
        return Options.from_json(self.options_json)

    def visibility(self, resource_type: str) -> Visibility:
        if self.access_json is None:
            return Visibility()
        found = orjson.loads(self.access_json).get(resource_type)
        return Visibility() if found is None else Visibility.from_json(found)


def access_json(limits: dict[str, Visibility]) -> str | None:
    """What to store with a job: the limited types' grants (None when nothing is limited)."""
    limited = {t: lim.as_json() for t, lim in limits.items() if not lim.unlimited}
    return orjson.dumps(limited).decode() if limited else None


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["types"] = tuple(t for t in data["types"].split(",") if t)
    return Job(**data)


def parse_types(raw: str | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if not raw:
        return tuple(allowed)
    types = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    unknown = [t for t in types if t not in allowed]
    if unknown:
        raise BadRequest([Issue("not-supported", f"_type: {', '.join(unknown)} cannot be exported", "_type")])
    return types


def check_format(raw: str | None) -> None:
    if raw is not None and raw not in OUTPUT_FORMATS:
        raise BadRequest(
            [Issue("not-supported", f"_outputFormat: only {NDJSON} is supported", "_outputFormat")]
        )


def _active(conn: Connection, principal: str) -> int:
    query = select(func.count()).where(
        export_jobs.c.principal == principal, export_jobs.c.state.in_(("queued", "running"))
    )
    return int(conn.execute(query).scalar_one())


def _kept(conn: Connection, principal: str, files: Path, now: datetime) -> tuple[int, datetime | None]:
    """Bytes of files kept for the client's finished, unexpired jobs, and when the first of them expires."""
    rows = conn.execute(
        select(export_jobs.c.id, export_jobs.c.expires_at).where(
            export_jobs.c.principal == principal,
            export_jobs.c.state == "done",
            or_(export_jobs.c.expires_at.is_(None), export_jobs.c.expires_at > now),
        )
    ).all()
    size = sum(_folder_bytes(files / r.id) for r in rows)
    ends = [r.expires_at for r in rows if r.expires_at is not None]
    return size, min(ends) if ends else None


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    except OSError:
        return 0


def kept_bytes(engine: Engine, principal: str, files: Path, now: datetime) -> int:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        return _kept(conn, principal, files, now)[0]


def _check_limits(conn: Connection, principal: str, limits: Limits, files: Path, now: datetime) -> None:
    if conn.dialect.name == "postgresql":
        # Kick-offs of one client one at a time until commit, so simultaneous ones cannot all count the
        # same jobs (SQLite's BEGIN IMMEDIATE already serialises every writer).
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("ivclms-export:" + principal))))
    active = _active(conn, principal)
    if active >= limits.max_active_exports:
        raise TooMany(
            f"this client has {active} exports queued or running; at most {limits.max_active_exports} "
            f"at once ({EXPORTS_SETTING}): wait for one to finish, or cancel one",
            retry_after=POLL_AFTER_S,
        )
    kept, first_expiry = _kept(conn, principal, files, now)
    if kept >= limits.max_export_bytes:
        wait = int((first_expiry - now).total_seconds()) + 1 if first_expiry is not None else POLL_AFTER_S
        raise TooMany(
            f"this client's export files take {kept} bytes; at most {limits.max_export_bytes} are kept "
            f"({EXPORT_BYTES_SETTING}): delete finished exports (DELETE on their status URL) or wait "
            "until they expire",
            retry_after=max(wait, 1),
        )


def kick_off(
    engine: Engine,
    *,
    level: str,
    types: tuple[str, ...],
    since: datetime | None,
    request_url: str,
    principal: str,
    now: datetime,
    access: str | None = None,
    limits: Limits | None = None,
    files: Path | None = None,
    options: Options | None = None,
) -> str:
    """Queue a job owned by ``principal`` (the caller's owner key) holding what ``access`` allows; with
    ``limits``, refused (TooMany) while the owner has too many jobs queued or running, or too many bytes
    of files kept in ``files``."""
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        if limits is not None and files is not None:
            _check_limits(conn, principal, limits, files, now)
        conn.execute(
            export_jobs.insert().values(
                id=job_id,
                state="queued",
                level=level,
                types=",".join(types),
                since=since,
                request_url=request_url,
                principal=principal,
                transaction_time=now,
                created_at=now,
                progress=0,
                access_json=access,
                options_json=None if options is None else options.as_json(),
            )
        )
    return job_id


def get(engine: Engine, job_id: str) -> Job:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        row = conn.execute(select(export_jobs).where(export_jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no export job {job_id} (finished jobs expire)")
    return _job(row)


def check_live(job: Job, now: datetime) -> Job:
    """The job, unless it expired (410 Gone), whether or not its files were purged yet."""
    if job.expires_at is not None and now >= job.expires_at:
        raise Gone(f"export {job.id} expired at {instant(job.expires_at)}; kick off a new one")
    return job


def cancel(engine: Engine, job_id: str, files: Path) -> None:
    """Cancel a queued or running job, or delete a finished one's files (Bulk Data DELETE)."""
    job = get(engine, job_id)
    with engine.begin() as conn:
        if job.state in ("queued", "running"):
            conn.execute(update(export_jobs).where(export_jobs.c.id == job_id).values(state="cancelled"))
        else:
            conn.execute(delete(export_jobs).where(export_jobs.c.id == job_id))
    if job.state not in ("queued", "running"):
        shutil.rmtree(files / job_id, ignore_errors=True)


def claim(engine: Engine) -> Job | None:
    """The oldest queued job, now running; several workers never take the same one."""
    with engine.begin() as conn:
        query = (
            select(export_jobs)
            .where(export_jobs.c.state == "queued")
            .order_by(export_jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = conn.execute(query).first()
        if row is None:
            return None
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == row.id, export_jobs.c.state == "queued")
            .values(state="running")
        )
        if moved.rowcount != 1:
            return None
    return _job(row)


def _pages(engine: Engine, job: Job, resource_type: str) -> Iterator[list[tuple[datetime, str, str]]]:
    after: tuple[datetime, str] | None = None
    while True:
        query = (
            select(resources.c.last_updated, resources.c.id, resources.c.json)
            .where(
                resources.c.resource_type == resource_type,
                resources.c.deleted == 0,
                resources.c.last_updated <= job.transaction_time,
            )
            .order_by(resources.c.last_updated, resources.c.id)
            .limit(PAGE)
        )
        if job.since is not None:
            query = query.where(resources.c.last_updated > job.since)
        for condition in _job_conditions(job, resource_type, resources):
            query = query.where(condition)
        for condition in limit_conditions(resource_type, job.visibility(resource_type)):
            query = query.where(condition)  # these rows' links are of the exported version: exact
        if after is not None:  # a row-value comparison the (type, last_updated, id) index serves directly
            query = query.where(tuple_(resources.c.last_updated, resources.c.id) > tuple_(*after))
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = [(r.last_updated, r.id, r.json) for r in conn.execute(query)]
        if not rows:
            return
        yield rows
        after = (rows[-1][0], rows[-1][1])


def _job_conditions(job: Job, resource_type: str, table: Any) -> list[Any]:
    """The level's, the Group's, ``patient``'s and ``_typeFilter``'s conditions on current rows."""
    options = job.options
    out: list[Any] = []
    if job.level in ("patient", "group"):
        out.append(table.c.patient_id.is_not(None))
    if options.group_source is not None:
        out.append(source_condition(frozenset({options.group_source})))
    if options.patients:
        out.append(table.c.patient_id.in_(list(options.patients)))
    if resource_type in options.type_filters:
        # On the index rows of the current version: for a resource changed after transactionTime the
        # filter is of its current version (the exported one is older).
        out.append(type_filter_condition(resource_type, options.type_filters[resource_type]))
    return out


def _changed_after(engine: Engine, job: Job, resource_type: str) -> Iterator[list[tuple[str, str]]]:
    """Resources written after ``transactionTime``: their newest version up to it, in keyset pages by id."""
    current, past, earlier = resources, resource_versions, resource_versions.alias("earlier")
    newest_then = (
        select(func.max(earlier.c.version_id))
        .where(
            earlier.c.resource_type == current.c.resource_type,
            earlier.c.id == current.c.id,
            earlier.c.last_updated <= job.transaction_time,
        )
        .correlate(current)
        .scalar_subquery()
    )
    after: str | None = None
    while True:
        query = (
            select(current.c.id, past.c.json)
            .join(past, (past.c.resource_type == current.c.resource_type) & (past.c.id == current.c.id))
            .where(
                current.c.resource_type == resource_type,
                current.c.last_updated > job.transaction_time,
                past.c.version_id == newest_then,
                past.c.deleted == 0,
            )
            .order_by(current.c.id)
            .limit(PAGE)
        )
        if job.since is not None:
            query = query.where(past.c.last_updated > job.since)
        for condition in _job_conditions(job, resource_type, current):
            query = query.where(condition)
        limits = job.visibility(resource_type)
        if limits.sources is not None:  # a case never changes source system
            for condition in limit_conditions(resource_type, Visibility((), limits.sources)):
                query = query.where(condition)
        if after is not None:
            query = query.where(current.c.id > after)
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = [(r.id, r.json) for r in conn.execute(query)]
        if not rows:
            return
        # The index links are of the current version: restrictions are checked on the version exported.
        restricted = Visibility(limits.restrictions)
        yield [row for row in rows if restricted.unlimited or within(restricted, orjson.loads(row[1]), None)]
        after = rows[-1][0]


def _texts(engine: Engine, job: Job, resource_type: str) -> Iterator[list[str]]:
    """Pages of the JSON of every resource of the type as it was at ``transactionTime`` (only the
    ``_elements`` asked for, when asked)."""
    elements = job.options.elements
    for texts in _raw_texts(engine, job, resource_type):
        if elements:
            texts = [orjson.dumps(subset(orjson.loads(t), elements)).decode() for t in texts]
        yield texts


def _raw_texts(engine: Engine, job: Job, resource_type: str) -> Iterator[list[str]]:
    for rows in _pages(engine, job, resource_type):
        yield [text for _, _, text in rows]
    for changed in _changed_after(engine, job, resource_type):
        yield [text for _, text in changed]


def _still_running(engine: Engine, job_id: str, progress: int) -> bool:
    with engine.begin() as conn:
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.state == "running")
            .values(progress=progress)
        )
        return moved.rowcount == 1


def write_files(
    engine: Engine,
    job: Job,
    folder: Path,
    *,
    on_page: Callable[[int], bool] | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """Write one NDJSON file per type into ``folder``; ``on_page(total)`` False stops (cancelled).

    The files are the owner's only (0600, in a 0700 folder: they hold patient data); more than
    ``max_bytes`` written raises ExportTooLarge."""
    private_dir(folder)
    outputs: list[dict[str, Any]] = []
    total = 0
    written = 0
    for resource_type in job.types:
        path = folder / f"{resource_type}.ndjson"
        count = 0
        with private_file(path) as out:
            for texts in _texts(engine, job, resource_type):
                for text in texts:
                    out.write(text)
                    out.write("\n")
                count += len(texts)
                total += len(texts)
                if max_bytes is not None and written + out.tell() > max_bytes:
                    raise ExportTooLarge(max_bytes)
                if on_page is not None and not on_page(total):
                    return []
            written += out.tell()
        if count:
            outputs.append({"type": resource_type, "file": path.name, "count": count})
        else:
            path.unlink()
    return outputs


class ExportTooLarge(Exception):
    """The files of a job would take its owner past ``IVCLMS_LIMITS_MAX_EXPORT_BYTES``."""

    def __init__(self, budget: int) -> None:
        super().__init__(
            f"the files would take this client past the export bytes it may keep ({EXPORT_BYTES_SETTING}; "
            f"{budget} bytes were left): delete finished exports, or ask for fewer types or a _since"
        )


def private_dir(folder: Path) -> None:
    """``folder`` and the exports folder above it, created readable by the service's user only (0700)."""
    for path in (folder.parent, folder):
        if not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)


def private_file(path: Path) -> TextIO:
    """A file opened for writing, readable and writable by the service's user only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def base_of(request_url: str) -> str:
    """The FHIR base the kick-off was sent to (file URLs in the manifest live under it)."""
    return re.sub(r"/(Patient|Group/[^/]+)$", "", request_url.split("/$export", 1)[0])


def write_outcomes(folder: Path, warnings: Sequence[tuple[str, str]]) -> int:
    """The manifest's ``error`` file: one warning OperationOutcome per parameter not honoured."""
    if not warnings:
        return 0
    private_dir(folder)
    with private_file(folder / OUTCOMES) as out:
        for name, message in warnings:
            issue = Issue("not-supported", f"{name}: {message} (ignored)", name, severity="warning")
            out.write(orjson.dumps(operation_outcome([issue])).decode())
            out.write("\n")
    return len(warnings)


def run(
    engine: Engine,
    job: Job,
    files: Path,
    *,
    now: Callable[[], datetime],
    ttl: timedelta,
    limits: Limits | None = None,
) -> None:
    """Run a claimed job to done, failed or (noticed between pages) cancelled; with ``limits``, a job
    whose files would take its owner past the bytes kept fails and leaves no file."""
    folder = files / job.id
    base_url = base_of(job.request_url)
    budget = None
    if limits is not None:
        budget = max(limits.max_export_bytes - kept_bytes(engine, job.principal, files, now()), 0)
    try:
        outputs = write_files(
            engine, job, folder, on_page=lambda n: _still_running(engine, job.id, n), max_bytes=budget
        )
        warned = write_outcomes(folder, job.options.warnings)
    except (OSError, ExportTooLarge) as error:
        log.error("export %s failed (%s)", job.id, type(error).__name__)
        shutil.rmtree(folder, ignore_errors=True)
        reason = str(error) if isinstance(error, ExportTooLarge) else f"{type(error).__name__} writing files"
        with engine.begin() as conn:
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job.id)
                .values(state="failed", error=reason, finished_at=now())
            )
        return
    finished = now()
    errors = []
    if warned:
        errors.append(
            {"type": "OperationOutcome", "url": f"{base_url}/bulkfiles/{job.id}/{OUTCOMES}", "count": warned}
        )
    manifest = {
        "transactionTime": instant(job.transaction_time),
        "request": job.request_url,
        # The IG: "Value SHALL be true if both the file server and the FHIR API server control access
        # using OAuth 2.0 bearer tokens"; with authentication off, neither does.
        "requiresAccessToken": job.options.requires_token,
        "output": [
            {"type": o["type"], "url": f"{base_url}/bulkfiles/{job.id}/{o['file']}", "count": o["count"]}
            for o in outputs
        ],
        "error": errors,
    }
    with engine.begin() as conn:
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job.id, export_jobs.c.state == "running")
            .values(
                state="done",
                finished_at=finished,
                expires_at=finished + ttl,
                progress=sum(o["count"] for o in outputs),
                manifest_json=orjson.dumps(manifest).decode(),
            )
        )
    if moved.rowcount != 1:  # cancelled while finishing
        shutil.rmtree(folder, ignore_errors=True)
        with engine.begin() as conn:
            conn.execute(delete(export_jobs).where(export_jobs.c.id == job.id))
    log.info("export %s: %d resources in %d files", job.id, sum(o["count"] for o in outputs), len(outputs))


def purge(engine: Engine, files: Path, now: datetime) -> int:
    """Remove expired and cancelled jobs with their files; returns how many."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(export_jobs.c.id).where(
                or_(export_jobs.c.expires_at <= now, export_jobs.c.state == "cancelled")
            )
        ).all()
        ids = [r.id for r in rows]
        if ids:
            conn.execute(delete(export_jobs).where(export_jobs.c.id.in_(ids)))
    for job_id in ids:
        shutil.rmtree(files / job_id, ignore_errors=True)
    return len(ids)


def run_pending(
    engine: Engine,
    files: Path,
    *,
    now: Callable[[], datetime],
    ttl: timedelta,
    limits: Limits | None = None,
) -> int:
    """One worker pass: purge, then run every queued job; returns the number run."""
    purge(engine, files, now())
    done = 0
    while (job := claim(engine)) is not None:
        run(engine, job, files, now=now, ttl=ttl, limits=limits)
        done += 1
    return done

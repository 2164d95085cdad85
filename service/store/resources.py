"""The FHIR read side's index: each case version's resources stored one by one, searchable.

Written in the transaction that stores the case version, so what registries read is exactly what
was accepted. A resource's id is the uuid of its ``urn:uuid:`` full URL (derived from its business
identifier), so it is the same in every installation and in ``POST /fhir`` answers. Its
``versionId`` moves only when its content changes; a resource that leaves the case (an item
removed in a later version) is kept as deleted (410 Gone) with its history.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from service.clock import instant
from service.mapping.spec import IDENTIFIER_SYSTEM
from service.references import references
from service.store.tables import resource_links, resource_versions, resources

CODE_ELEMENTS = ("code", "medicationCodeableConcept", "type")
"""Where a resource says what it is: the ``code`` search parameter (Device: ``type``)."""
DATE_ELEMENTS = (
    "effectiveDateTime",
    "effectivePeriod",
    "performedDateTime",
    "performedPeriod",
    "onsetDateTime",
    "recordedDate",
    "period",
    "birthDate",
    "recorded",
)
"""The ``date`` search parameter: the first of these the resource has (a date, dateTime or Period)."""
_KEBAB = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class Indexed:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    json: str


def _id(url: str) -> str:
    return url.removeprefix("urn:uuid:")


def _relative(node: Any, names: dict[str, str]) -> Any:
    """References to other entries as ``Type/id`` (the read side has no bundle to resolve urn:uuid)."""
    if isinstance(node, dict):
        out = {k: _relative(v, names) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in names:
            out["reference"] = names[ref]
        return out
    if isinstance(node, list):
        return [_relative(v, names) for v in node]
    return node


def _get(resource: dict[str, Any], dotted: str) -> Any:
    node: Any = resource
    for step in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(step)
    return node


def links(resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(param, system or target type, code or target id) rows for the token and reference parameters."""
    rows: list[tuple[str, str, str]] = [
        ("identifier", str(i.get("system", "")), str(i["value"]))
        for i in resource.get("identifier", [])
        if isinstance(i, dict) and "value" in i
    ]
    for element in CODE_ELEMENTS:
        concept = resource.get(element)
        if isinstance(concept, dict):
            rows += [("code", c.get("system", ""), str(c.get("code", ""))) for c in concept.get("coding", [])]
    for element, reference in references(resource):
        ref = reference["reference"]
        if "/" not in ref or ref.startswith(("urn:", "http")):
            continue
        target_type, target_id = ref.split("/", 1)
        param = _KEBAB.sub("-", element).lower()  # partOf -> part-of, focalDevice -> focal-device
        rows.append((param, target_type, target_id))
        if target_type == "Patient" and param != "patient":
            rows.append(("patient", target_type, target_id))
    return rows


def date_range(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    """The range the ``date`` parameter searches (R4 search.html compares ranges): its start as the
    resource says it, and the last day it covers (``YYYY-MM-DD``; ``2021`` ends on ``2021-12-31``).
    A Period without an end is ongoing (R4 datatypes: "If the end of the period is missing, it means
    that the period is ongoing"): its last day is None, as is the start of a Period with an end only.
    (None, None): the resource has no date."""
    for element in DATE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, str) and value:
            return value, last_day(value)
        if isinstance(value, dict):
            start, end = value.get("start"), value.get("end")
            start = start if isinstance(start, str) and start else None
            end = end if isinstance(end, str) and end else None
            if start is not None or end is not None:
                return start, last_day(end) if end is not None else None
    return None, None


def last_day(value: str) -> str:
    """The last calendar day a FHIR date or dateTime covers, at its precision (``2021-02`` ->
    ``2021-02-28``); a value that is no date is kept as its first ten characters (what was indexed)."""
    try:
        if len(value) == 4:
            return date(int(value), 12, 31).isoformat()
        if len(value) == 7:
            year, month = int(value[:4]), int(value[5:7])
            return date(year, month, calendar.monthrange(year, month)[1]).isoformat()
    except ValueError:
        pass
    return value[:10]


def _identifier(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier", []):
        if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM:
            return str(ident.get("value"))
    return None


@dataclass(frozen=True)
class Written:
    """What became of one resource of a case's Bundle: its version now, and whether it is new."""

    version_id: int
    created: bool
    last_updated: datetime


def write(conn: Connection, case_ref: str, bundle: dict[str, Any], now: datetime) -> dict[str, Written]:
    """Index the resources of a case version's Bundle; unchanged resources keep their version.

    Returns, per resource id (the uuid of its full URL), its version after the write."""
    names = {e["fullUrl"]: f"{e['resource']['resourceType']}/{_id(e['fullUrl'])}" for e in bundle["entry"]}
    current = {
        (r.resource_type, r.id): r
        for r in conn.execute(
            select(
                resources.c.resource_type,
                resources.c.id,
                resources.c.version_id,
                resources.c.content_hash,
                resources.c.deleted,
                resources.c.last_updated,
            ).where(resources.c.case_ref == case_ref)
        )
    }
    patient = next(
        (_id(e["fullUrl"]) for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"), None
    )
    seen: set[tuple[str, str]] = set()
    new_rows: list[dict[str, Any]] = []
    link_rows: list[dict[str, Any]] = []
    version_rows: list[dict[str, Any]] = []
    written: dict[str, Written] = {}
    for entry in bundle["entry"]:
        body = _relative(entry["resource"], names)
        key = (body["resourceType"], _id(entry["fullUrl"]))
        seen.add(key)
        content = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(content).hexdigest()
        old = current.get(key)
        if old is not None and old.content_hash == digest and not old.deleted:
            written[key[1]] = Written(old.version_id, False, old.last_updated)
            continue
        version = 1 if old is None else old.version_id + 1
        written[key[1]] = Written(version, old is None, now)
        body["id"] = key[1]
        body["meta"] = {
            **body.get("meta", {}),
            "versionId": str(version),
            "lastUpdated": instant(now),
        }
        text = orjson.dumps(body).decode()
        start, end = date_range(body)
        values = {
            "version_id": version,
            "case_ref": case_ref,
            "patient_id": patient,
            "last_updated": now,
            "deleted": 0,
            "profile": (body["meta"].get("profile") or [None])[0],
            "identifier": _identifier(body),
            "date": start,
            "date_end": end,
            "content_hash": digest,
            "json": text,
        }
        if old is None:
            new_rows.append({"resource_type": key[0], "id": key[1], **values})
        else:
            conn.execute(
                update(resources)
                .where(resources.c.resource_type == key[0], resources.c.id == key[1])
                .values(**values)
            )
            conn.execute(
                delete(resource_links).where(
                    resource_links.c.resource_type == key[0], resource_links.c.id == key[1]
                )
            )
        link_rows += [
            {"resource_type": key[0], "id": key[1], "param": p, "system": s, "value": v}
            for p, s, v in links(body)
        ]
        version_rows.append(
            {
                "resource_type": key[0],
                "id": key[1],
                "version_id": version,
                "last_updated": now,
                "deleted": 0,
                "json": text,
            }
        )
    for key, old in current.items():
        if key in seen or old.deleted:
            continue
        version = old.version_id + 1
        conn.execute(
            update(resources)
            .where(resources.c.resource_type == key[0], resources.c.id == key[1])
            .values(version_id=version, deleted=1, last_updated=now)
        )
        conn.execute(
            delete(resource_links).where(
                resource_links.c.resource_type == key[0], resource_links.c.id == key[1]
            )
        )
        version_rows.append(
            {
                "resource_type": key[0],
                "id": key[1],
                "version_id": version,
                "last_updated": now,
                "deleted": 1,
                "json": "{}",
            }
        )
    # One multi-row statement per table: a case is about forty resources.
    for table, batch in (
        (resources, new_rows),
        (resource_links, link_rows),
        (resource_versions, version_rows),
    ):
        if batch:
            conn.execute(insert(table), batch)
    return written


def current(conn: Connection, case_ref: str) -> dict[str, Written]:
    """The resources of a case as they stand (an unchanged re-post): id -> version, none created."""
    rows = conn.execute(
        select(resources.c.id, resources.c.version_id, resources.c.last_updated).where(
            resources.c.case_ref == case_ref, resources.c.deleted == 0
        )
    )
    return {r.id: Written(r.version_id, False, r.last_updated) for r in rows}


def read(
    conn: Connection, resource_type: str, resource_id: str, version: int | None = None
) -> Indexed | None:
    if version is None:
        row = conn.execute(
            select(resources).where(resources.c.resource_type == resource_type, resources.c.id == resource_id)
        ).first()
    else:
        row = conn.execute(
            select(resource_versions).where(
                resource_versions.c.resource_type == resource_type,
                resource_versions.c.id == resource_id,
                resource_versions.c.version_id == version,
            )
        ).first()
    if row is None:
        return None
    return Indexed(row.resource_type, row.id, row.version_id, row.last_updated, bool(row.deleted), row.json)


def history(conn: Connection, resource_type: str, resource_id: str) -> list[Indexed]:
    rows = conn.execute(
        select(resource_versions)
        .where(resource_versions.c.resource_type == resource_type, resource_versions.c.id == resource_id)
        .order_by(resource_versions.c.version_id.desc())
    )
    return [
        Indexed(r.resource_type, r.id, r.version_id, r.last_updated, bool(r.deleted), r.json) for r in rows
    ]


def case_of(conn: Connection, resource_type: str, resource_id: str) -> str | None:
    """The case a resource belongs to (None: unknown here)."""
    found = conn.execute(
        select(resources.c.case_ref).where(
            resources.c.resource_type == resource_type, resources.c.id == resource_id
        )
    ).first()
    return None if found is None else str(found.case_ref)

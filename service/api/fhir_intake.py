"""``POST /fhir``: a Bundle from an EHR, stored as cases, answered per entry like a FHIR server."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, g, request

from service.api.body import FHIR_JSON_TYPES, json_body
from service.api.context import ctx
from service.api.idempotency import idempotent
from service.api.responses import fhir_response
from service.api.writes import case_writes, require_writer
from service.bundle_intake import ReadBundle, read_bundle
from service.clock import instant
from service.errors import Forbidden
from service.intake import Accepted, OnChange
from service.outcome import operation_outcome
from service.validation.gate import errors

bp = Blueprint("fhir_intake", __name__)

SOURCE_PARAM = "source-system"
"""Who sent plain R4 resources (the business identifiers' namespace); default IVCLMS_SOURCE_SYSTEM."""


def _entry(resource_type: str, url: str, accepted: Accepted) -> dict[str, Any]:
    """The answer for one stored resource: its own version on the read side (not the case's), so
    ``location`` can be read back; 201 when this request created the resource, 200 otherwise."""
    resource_id = url.removeprefix("urn:uuid:")
    written = accepted.resources[resource_id]
    return {
        "response": {
            "status": "201 Created" if written.created else "200 OK",
            "location": f"{resource_type}/{resource_id}/_history/{written.version_id}",
            "etag": f'W/"{written.version_id}"',
            "lastModified": instant(written.last_updated),
        }
    }


def _answer(bundle: dict[str, Any], read: ReadBundle, accepted: dict[int, Accepted]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"response": {"status": "200 OK"}} for _ in bundle["entry"]]
    for number, group in enumerate(read.groups):
        for i in group.entries:
            if group.error is not None:
                entries[i] = {
                    "response": {
                        "status": f"{group.error.status} {HTTPStatus(group.error.status).phrase}",
                        "outcome": operation_outcome(group.error.issues),
                    }
                }
            else:
                resource_type = bundle["entry"][i]["resource"]["resourceType"]
                entries[i] = _entry(resource_type, group.urls[i], accepted[number])
    kind = "batch-response" if read.kind == "batch" else "transaction-response"
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@bp.post("/fhir")
@bp.post("/fhir/")
@idempotent
def post_bundle() -> Response:
    """Transactions and collections are all or nothing (a refused case: 403 for the request); in a
    batch a patient's group the caller may not write fails only its own entries (403 in the answer)."""
    require_writer(g.principal, "c", "u")
    bundle = json_body(FHIR_JSON_TYPES)
    intake = ctx().intake
    source = request.args.get(SOURCE_PARAM) or ctx().settings.source_system
    validator = ctx().validator
    check = (lambda b: errors(validator.validate_bundle(b))) if ctx().settings.validate_intake else None
    read = read_bundle(bundle, intake=intake, source_system=source, check=check)
    ready = [(n, g.prepared) for n, g in enumerate(read.groups) if g.prepared is not None]
    author = str(g.principal.subject)
    authorize = case_writes(g.principal)
    batch = [p for _, p in ready]
    if read.kind == "batch":
        results = intake.submit_each(batch, author, authorize=authorize)
    else:
        results = list(intake.submit_many(batch, author, on_change=OnChange.NEW_VERSION, authorize=authorize))
    accepted: dict[int, Accepted] = {}
    for (n, _), result in zip(ready, results, strict=True):
        if isinstance(result, Forbidden):
            read.groups[n].error = result
        else:
            accepted[n] = result
    return fhir_response(_answer(bundle, read, accepted), 200)

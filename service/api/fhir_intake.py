"""``POST /fhir``: a Bundle from an EHR, stored as cases, answered per entry like a FHIR server."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from service.api import links
from service.api.body import FHIR_JSON_TYPES, json_body
from service.api.context import ctx
from service.api.fhir_read import read_resource
from service.api.idempotency import idempotent
from service.api.responses import fhir_response
from service.api.writes import case_writes, require_writer
from service.auth import gate
from service.auth.principal import Principal
from service.bundle_intake import Operation, ReadBundle, read_bundle
from service.clock import instant
from service.errors import Forbidden, Issue, NotFound, ServiceError
from service.intake import Accepted, Authorize, Intake, OnChange
from service.limits import check_operations
from service.outcome import operation_outcome
from service.search import READ_TYPES
from service.validation.gate import errors

bp = Blueprint("fhir_intake", __name__)

SOURCE_PARAM = "source-system"
"""Who sent plain R4 resources (the business identifiers' namespace); default IVCLMS_SOURCE_SYSTEM."""


def _entry(resource_type: str, url: str, accepted: Accepted) -> dict[str, Any]:
    """The answer for one stored resource: its own version on the read side (not the case's), so
    ``location`` can be read back; 201 when this request created the resource, 200 otherwise."""
    resource_id = url.removeprefix("urn:uuid:")
    written = accepted.resources.get(resource_id)
    if written is None:  # recognised, but nothing of it is kept by the case (never claim a location)
        message = f"{resource_type}: not stored: nothing of it is part of the IVC-LMS case it belongs to"
        issue = Issue("informational", message, severity="warning")
        return {"response": {"status": "200 OK", "outcome": operation_outcome([issue])}}
    return {
        "response": {
            "status": "201 Created" if written.created else "200 OK",
            "location": f"{resource_type}/{resource_id}/_history/{written.version_id}",
            "etag": f'W/"{written.version_id}"',
            "lastModified": instant(written.last_updated),
        }
    }


NOT_STORED = Issue(
    "informational",
    "Provenance is not stored: this service writes its own Provenance for every case version it "
    "stores (read it with GET Provenance?target=Patient/<id>)",
    severity="warning",
)


def _failed(error: ServiceError) -> dict[str, Any]:
    return {
        "response": {
            "status": f"{error.status} {HTTPStatus(error.status).phrase}",
            "outcome": operation_outcome(error.issues),
        }
    }


def _read(operation: Operation) -> dict[str, Any]:
    """A GET entry: read or vread through the gate, answered like ``GET [base]/Type/id``."""
    if operation.error is not None:
        return _failed(operation.error)
    try:
        found = read_resource(g.principal, operation.resource_type, operation.resource_id, operation.version)
    except ServiceError as error:
        return _failed(error)
    where = f"{found.resource_type}/{found.id}"
    response = {
        "status": "200 OK",
        "location": f"{where}/_history/{found.version_id}",
        "etag": f'W/"{found.version_id}"',
        "lastModified": instant(found.last_updated),
    }
    if operation.method == "HEAD":
        return {"response": response}
    return {
        "fullUrl": f"{links.fhir_base()}/{where}",
        "resource": orjson.loads(found.json),
        "response": response,
    }


def _delete(operation: Operation, intake: Intake, author: str, authorize: Authorize) -> dict[str, Any]:
    """A DELETE entry (batch only): ``DELETE Patient/id`` withdraws the patient's whole case through
    the write gate (``d`` on every type of the case), as ``DELETE /cases/{id}`` does."""
    if operation.error is not None:
        return _failed(operation.error)
    try:
        if operation.resource_type != "Patient":
            message = (
                f"{operation.resource_type}/{operation.resource_id}: a resource is withdrawn with its "
                "case only; DELETE Patient/<id> withdraws the patient's whole case"
            )
            raise ServiceError([Issue("not-supported", message)], 405)
        unknown = NotFound(f"Patient/{operation.resource_id} is unknown")
        ref = intake.case_of("Patient", operation.resource_id)
        if ref is None:
            raise unknown
        try:
            intake.retract(ref, author, None, authorize=authorize)
        except NotFound:
            # Another hospital's patient: answered exactly like one that does not exist (the gate's
            # 404 names the case id, which would confirm it: second outside review).
            raise unknown from None
    except ServiceError as error:
        return _failed(error)
    message = "the case was withdrawn: its resources are marked entered-in-error"
    return {
        "response": {
            "status": "200 OK",
            "outcome": operation_outcome([Issue("informational", message, severity="information")]),
        }
    }


def _answer(
    bundle: dict[str, Any],
    read: ReadBundle,
    accepted: dict[int, Accepted],
    operated: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"response": {"status": "200 OK"}} for _ in bundle["entry"]]
    for i in read.skipped:
        entries[i] = {"response": {"status": "200 OK", "outcome": operation_outcome([NOT_STORED])}}
    for i, answered in operated.items():
        entries[i] = answered
    for number, group in enumerate(read.groups):
        for i in group.entries:
            if group.error is not None:
                entries[i] = _failed(group.error)
            else:
                resource_type = bundle["entry"][i]["resource"]["resourceType"]
                entries[i] = _entry(resource_type, group.urls[i], accepted[number])
    kind = "batch-response" if read.kind == "batch" else "transaction-response"
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


READ_METHODS = frozenset({"GET", "HEAD"})


def reads_only(bundle: Any) -> bool:
    """A Bundle whose every entry is a GET or HEAD request carrying no resource: it writes nothing."""
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list) or not entries:
        return False
    for entry in entries:
        if not isinstance(entry, dict) or "resource" in entry:
            return False
        request_ = entry.get("request")
        if not isinstance(request_, dict) or str(request_.get("method", "")).upper() not in READ_METHODS:
            return False
    return True


def require_writer_or_reader(principal: Principal) -> None:
    """The cheap refusal before the body is read: a write scope on Patient (a case), or a read scope on
    some served type (a batch of GET entries, each then gated on its own type)."""
    if any(_read_granted(principal, t) for t in READ_TYPES):
        return
    require_writer(principal, "c", "u")


def _read_granted(principal: Principal, resource_type: str) -> bool:
    try:
        return gate.access(principal, resource_type, "r").granted
    except Forbidden:  # a restriction the gate cannot enforce grants nothing (refused, never widened)
        return False


def _refuse_failing_reads(operations: Sequence[Operation]) -> None:
    """A transaction whose GET entry would fail is refused before anything is written: R4 http.html
    (transaction) "servers SHALL either accept all actions and return a 200 OK, along with a response
    bundle, or reject all resources and return an HTTP 400 or 500 type response". The reads are
    answered again after the writes (R4's order: GET last), so a read sees what the transaction wrote;
    a GET of a resource the same transaction creates is therefore refused here (documented)."""
    issues: list[Issue] = []
    forbidden = False
    for operation in operations:
        if operation.method == "DELETE":
            continue
        status = _read(operation)["response"]
        if status["status"].startswith("2"):
            continue
        forbidden |= status["status"].startswith("403")
        said = "; ".join(i.get("diagnostics", "") for i in status.get("outcome", {}).get("issue", []))
        issues.append(
            Issue(
                "processing",
                f"this entry's {operation.method} answers {status['status']} ({said}): a transaction "
                "is all or nothing, so nothing was written",
                f"Bundle.entry[{operation.position}]",
            )
        )
    if issues:
        raise ServiceError(issues=issues, status=403 if forbidden else 400)


@bp.post("/fhir")
@bp.post("/fhir/")
@idempotent
def post_bundle() -> Response:
    """Transactions and collections are all or nothing (a refused case: 403 for the request); in a
    batch a patient's group the caller may not write fails only its own entries (403 in the answer).
    DELETE entries (batch only) run first, GET entries after the writes (R4's transaction order).
    A Bundle of GET/HEAD entries only needs read scopes; any other entry needs a write scope."""
    require_writer_or_reader(g.principal)
    bundle = json_body(FHIR_JSON_TYPES)
    if reads_only(bundle):
        # Only GET/HEAD entries (R4 http.html: a batch may hold reads): each is gated as a read of its
        # type, so read scopes suffice; audited as a read (``service.api.audit``), not as a create.
        g.audit_action = "R"
    else:
        require_writer(g.principal, "c", "u")
    intake = ctx().intake
    check_operations(bundle, intake.limits)
    source = request.args.get(SOURCE_PARAM) or ctx().settings.source_system
    validator = ctx().validator
    check = (lambda b: errors(validator.validate_bundle(b))) if ctx().settings.validate_intake else None
    read = read_bundle(bundle, intake=intake, source_system=source, check=check)
    if read.kind == "transaction":
        _refuse_failing_reads(read.operations)
    ready = [(n, g.prepared) for n, g in enumerate(read.groups) if g.prepared is not None]
    author = str(g.principal.subject)
    authorize = case_writes(g.principal)
    operated = {
        o.position: _delete(o, intake, author, authorize) for o in read.operations if o.method == "DELETE"
    }
    batch = [p for _, p in ready]
    if not batch:
        results: list[Accepted | Forbidden] = []
    elif read.kind == "batch":
        results = intake.submit_each(batch, author, authorize=authorize)
    else:
        results = list(intake.submit_many(batch, author, on_change=OnChange.NEW_VERSION, authorize=authorize))
    accepted: dict[int, Accepted] = {}
    for (n, _), result in zip(ready, results, strict=True):
        if isinstance(result, Forbidden):
            read.groups[n].error = result
        else:
            accepted[n] = result
    operated |= {o.position: _read(o) for o in read.operations if o.method != "DELETE"}
    return fhir_response(_answer(bundle, read, accepted, operated), 200)

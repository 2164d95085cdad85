"""Every request that reaches data leaves an audit record; ``GET /fhir/AuditEvent`` reads them back.

Recorded after the response is decided, in its own transaction: an audit failure is logged and never
turns a good answer into an error. Only the path is kept (ids are uuids, never patient data); query
strings, which may carry identifiers, are not.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from service.api.context import ctx
from service.api.params import int_arg, parse_instant
from service.api.responses import fhir_response
from service.api.security import PUBLIC_ENDPOINTS
from service.auth import ROLE_REGISTRY, require
from service.clock import instant
from service.db import READ_ONLY
from service.errors import BadRequest, Issue
from service.store import audit as store

log = logging.getLogger("ivclms.audit")
access = logging.getLogger("ivclms.access")
bp = Blueprint("audit", __name__, url_prefix="/fhir")

NOT_AUDITED = PUBLIC_ENDPOINTS
"""Public endpoints touch no data; everything behind authentication is audited."""
ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
ACTION_CODES = "http://hl7.org/fhir/audit-event-action"
EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}
PAGE_MAX = 500


def _outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _action() -> str:
    if "$" in request.path:
        return "E"  # an operation ($validate, $export, ...)
    return ACTIONS.get(request.method, "E")


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _audit(response: Response) -> Response:
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # The access log names the endpoint, not the path or query: those can carry identifiers.
        access.info("%s %s %d %.1fms", request.method, request.endpoint, response.status_code, elapsed_ms)
        if request.endpoint in NOT_AUDITED or request.method == "OPTIONS":
            return response
        principal = getattr(g, "principal", None)
        event = store.AuditRecord(
            recorded=ctx().intake.clock(),
            principal=str(principal.subject) if principal is not None else "unauthenticated",
            action=_action(),
            operation=f"{request.method} {request.endpoint or 'unknown'}",
            entity=request.path[:256],
            outcome=_outcome(response.status_code),
            status=response.status_code,
        )
        try:
            with ctx().engine.begin() as conn:
                store.record(conn, event)
        except SQLAlchemyError as error:
            log.error("audit record not written (%s)", type(error).__name__)
        return response


def audit_event(event: store.AuditRecord, base: str) -> dict[str, Any]:
    """One record as an R4 AuditEvent."""
    return {
        "resourceType": "AuditEvent",
        "id": str(event.id),
        "type": EVENT_TYPE,
        "action": event.action,
        "recorded": instant(event.recorded),
        "outcome": event.outcome,
        "outcomeDesc": f"HTTP {event.status}",
        "agent": [{"who": {"display": event.principal}, "requestor": True}],
        "source": {"observer": {"display": base}},
        "entity": [{"what": {"reference": event.entity}, "description": event.operation}]
        if event.entity
        else [],
    }


@bp.get("/AuditEvent")
def search_audit_events() -> Response:
    # The trail names every caller and what it touched: the registry role reads all of it, any
    # other caller only its own events (its subject, as recorded in AuditEvent.agent).
    require(g.principal, "AuditEvent", "s")
    require(g.principal, "AuditEvent", "r")
    own = None if g.principal.has_role(ROLE_REGISTRY) else str(g.principal.subject)
    count = int_arg("_count", 100, 1, PAGE_MAX)
    assert count is not None
    after = request.args.get("_after")
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise BadRequest([Issue("invalid", "_after: not a page this service gave out", "_after")])
    since = None
    date = request.args.get("date")
    if date is not None:
        since = parse_instant(date.removeprefix("ge"), "date")
    with ctx().engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        events = store.search(
            conn, since=since, after_id=int(after) if after else None, limit=count, principal=own
        )
    base = request.url_root.rstrip("/") + "/fhir"
    links = [{"relation": "self", "url": request.url}]
    if len(events) == count:
        args = {k: v for k, v in request.args.items() if k != "_after"}
        args["_after"] = str(events[-1].id)
        links.append(
            {"relation": "next", "url": url_for("audit.search_audit_events", _external=True, **args)}
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/AuditEvent/{e.id}",
                "resource": audit_event(e, base),
                "search": {"mode": "match"},
            }
            for e in events
        ],
    }
    return fhir_response(bundle)

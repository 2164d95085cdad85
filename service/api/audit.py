"""Every request that reaches data leaves an audit record; ``GET /fhir/AuditEvent`` reads them back.

Recorded after the response is decided, in its own transaction: an audit failure is logged and never
turns a good answer into an error. Only authenticated requests are recorded: a request without a valid
token (401), or one no route matched, touched no data and leaves only its access-log line, so a flood
of them cannot fill the table.

What is kept of the URL is the route pattern (``/fhir/<resource_type>/<resource_id>``) with each path
value that the service itself generates filled in (uuids, served resource types, version numbers,
export file names); any other value, which a client chose and may be an identifier
(``/fhir/Patient/John-Smith-1968-03-14``), is kept as its placeholder only. Query strings, which may
carry identifiers, are never kept.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy.exc import SQLAlchemyError

from service import search as searching
from service.api import links
from service.api.context import ctx
from service.api.responses import fhir_response
from service.api.security import PUBLIC_ENDPOINTS
from service.auth import ROLE_REGISTRY, require
from service.clock import instant
from service.db import READ_ONLY
from service.errors import BadRequest, Issue
from service.search import READ_TYPES
from service.store import audit as store

log = logging.getLogger("ivclms.audit")
access = logging.getLogger("ivclms.access")
bp = Blueprint("audit", __name__, url_prefix="/fhir")

NOT_AUDITED = PUBLIC_ENDPOINTS
"""Public endpoints touch no data; everything behind authentication is audited."""
NOT_AUDITED_WHEN_GRANTED = frozenset({"metrics.metrics"})
"""Gated endpoints that carry no patient data and are polled by machines: a granted Prometheus scrape
every 15 s would add 5 760 records a day and drown the trail, so only a refused one (403) is recorded;
each one still leaves its access-log line."""
ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
ACTION_CODES = "http://hl7.org/fhir/audit-event-action"
EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}
PAGE_MAX = 500
ENTITY_ENVIRON = "ivclms.entity"
"""WSGI environ key set to ``entity()``: gunicorn's access log writes it instead of the raw path."""
_PLACEHOLDER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _action() -> str:
    decided = g.get("audit_action")
    if isinstance(decided, str):
        return decided  # the route knew better than its method (a POSTed batch of GET entries reads)
    if request.path.endswith("/_search"):
        return "R"  # POST search reads
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
        where = entity()
        request.environ[ENTITY_ENVIRON] = where or "-"
        # The access log names the endpoint, not the path or query: those can carry identifiers.
        access.info("%s %s %d %.1fms", request.method, request.endpoint, response.status_code, elapsed_ms)
        principal = getattr(g, "principal", None)
        if request.endpoint in NOT_AUDITED or request.method == "OPTIONS" or principal is None:
            return response
        if request.endpoint in NOT_AUDITED_WHEN_GRANTED and response.status_code < 400:
            return response
        event = store.AuditRecord(
            recorded=ctx().intake.clock(),
            principal=str(principal.owner)[:256],
            action=_action(),
            operation=f"{request.method} {request.endpoint or 'unknown'}",
            entity=where[:256],
            outcome=_outcome(response.status_code),
            status=response.status_code,
        )
        try:
            with ctx().engine.begin() as conn:
                store.record(conn, event)
        except SQLAlchemyError as error:
            log.error("audit record not written (%s)", type(error).__name__)
        return response


_SERVED_NAMES = frozenset({*READ_TYPES, *(f"{t}.ndjson" for t in READ_TYPES)})


def _generated(value: object) -> bool:
    """A path value the service generated (or a fixed name it serves), safe to keep verbatim."""
    if isinstance(value, int):
        return True
    text = str(value)
    if text in _SERVED_NAMES:
        return True
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def entity() -> str:
    """The request's route pattern, with the path values the service generated filled in."""
    rule = request.url_rule
    if rule is None:
        return ""
    values = request.view_args or {}
    return _PLACEHOLDER.sub(
        lambda m: str(values[m.group(1)]) if _generated(values.get(m.group(1))) else "{" + m.group(1) + "}",
        rule.rule,
    )


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
    return audit_search(list(request.args.items(multi=True)))


def _count(value: str) -> int:
    # ASCII digits only and no more of them than PAGE_MAX has (int() of 5000 digits raises: a 500).
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(PAGE_MAX)) or int(value) > PAGE_MAX:
        raise BadRequest([Issue("invalid", f"_count: must be a whole number from 0 to {PAGE_MAX}", "_count")])
    return int(value)


def _since(value: str) -> datetime:
    """``date`` is "recorded at or after" (the CapabilityStatement says ge): ``ge`` or no prefix, the
    value at any precision R4 allows (``2026``, ``2026-12``, a day, an instant with a zone; outside
    review of issue 13: a date was refused); another prefix is 400, not silently read as ge."""
    prefix, rest = (value[:2], value[2:]) if value[:2].isalpha() else ("ge", value)
    if prefix != "ge":
        raise BadRequest([Issue("not-supported", f"only ge is supported here (got {prefix})", "date")])
    return searching.parse_instant("date", rest)[0]


def audit_search(params: list[tuple[str, str]]) -> Response:
    """GET search and POST ``AuditEvent/_search`` (one code path, as for the other types: the query's
    parameters and the form body's mean the same). ``_count=0`` and ``_summary=count`` answer the
    total alone (R4 search.html)."""
    # The trail names every caller and what it touched: the registry role reads all of it, any
    # other caller only its own events (its subject, as recorded in AuditEvent.agent).
    require(g.principal, "AuditEvent", "s")
    require(g.principal, "AuditEvent", "r")
    own = None if g.principal.has_role(ROLE_REGISTRY) else str(g.principal.owner)
    count, after, since, summary = 100, None, None, None
    for name, value in params:
        if name == "_count":
            count = _count(value)
        elif name == "_after":
            if not (value.isascii() and value.isdigit() and len(value) <= 18):
                raise BadRequest([Issue("invalid", "_after: not a page this service gave out", "_after")])
            after = value
        elif name == "date":
            since = _since(value)
        elif name == "_summary":
            if value != "count":
                raise BadRequest([Issue("invalid", "_summary: only _summary=count is supported", "_summary")])
            summary = value
    if summary == "count" or count == 0:
        with ctx().engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            total = store.count(conn, since=since, principal=own)
        self_link = [{"relation": "self", "url": _self_url(params)}]
        return fhir_response(
            {"resourceType": "Bundle", "type": "searchset", "total": total, "link": self_link}
        )
    with ctx().engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        events = store.search(
            conn, since=since, after_id=int(after) if after else None, limit=count, principal=own
        )
    base = links.fhir_base()
    page_links = [{"relation": "self", "url": _self_url(params)}]
    if len(events) == count:
        page_links.append({"relation": "next", "url": _page_url(params, str(events[-1].id))})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": page_links,
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


def _self_url(params: list[tuple[str, str]]) -> str:
    return links.this_url() if request.method == "GET" else _page_url(params)


def _page_url(params: list[tuple[str, str]], after: str | None = None) -> str:
    """A GET URL of this search (also for a POST search: a page link is followed with GET); with
    ``after`` the next page's."""
    args = {k: v for k, v in params if k != "_after" or after is None}
    if after is not None:
        args["_after"] = after
    query = urlencode(list(args.items()))
    return links.absolute("/fhir/AuditEvent" + (f"?{query}" if query else ""))

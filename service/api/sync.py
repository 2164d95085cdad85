"""``/sync``: the outbox queue for operators (thin: parse, call ``service.sync.status``, respond)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, g

from service.api import openapi
from service.api.context import ctx
from service.auth import ROLE_REGISTRY, Principal, gate
from service.errors import Forbidden
from service.sync import status

bp = Blueprint("sync", __name__)

JSON = "application/json"


def _operator(principal: Principal, action: str) -> None:
    """The queue spans every hospital's cases, and dead entries carry the FHIR server's
    OperationOutcome (whose diagnostics may quote patient data): whole-case ``action`` on every type,
    and the registry role or every source system (an operator), not a client bound to one hospital."""
    gate.require_case_types(principal, action)
    if not (principal.has_role(ROLE_REGISTRY) or principal.sources is None):
        raise Forbidden(
            "the sync queue spans every source system: it needs the registry role or every source system"
        )


@bp.get("/sync/status")
def sync_status() -> Response:
    _operator(g.principal, "r")
    report = status.status(ctx().engine)
    return Response(orjson.dumps(report.as_json()), content_type="application/json")


@bp.post("/sync/retry/<int:entry_id>")
def sync_retry(entry_id: int) -> Response:
    """404 for an unknown entry, 409 for one that is not dead (service.errors, via the error handler)."""
    _operator(g.principal, "u")
    state = status.retry(ctx().engine, entry_id)
    return Response(orjson.dumps({"id": entry_id, "state": state}), content_type="application/json")


def _errors(*statuses: int) -> dict[str, object]:
    reasons = {
        401: "No valid bearer token",
        403: "The token lacks the scope",
        404: "No such entry",
        409: "The entry is not dead",
        503: "Database unavailable; retry after Retry-After",
    }
    return {
        str(s): {"description": reasons[s], "content": {openapi.FHIR: {"schema": openapi.OUTCOME}}}
        for s in statuses
    }


openapi.describe(
    "/sync/status",
    {
        "get": {
            "summary": "Outbox depth per state, age of the oldest undelivered change, dead entries",
            "description": "Scopes system/*.r (every case type), and the registry role or every source "
            "system. Dead entries carry the FHIR server's OperationOutcome.",
            "responses": {
                "200": {"description": "Sync status", "content": {JSON: {"schema": {"type": "object"}}}},
                **_errors(401, 403, 503),
            },
        }
    },
)
openapi.describe(
    "/sync/retry/{id}",
    {
        "post": {
            "summary": "Send a dead outbox entry again (after its cause was fixed)",
            "description": "Scopes system/*.u (every case type), and the registry role or every source "
            "system. The entry becomes pending, or superseded when a later version "
            "of its case was delivered since.",
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "description": "Outbox entry id (GET /sync/status lists the dead ones)",
                    "schema": {"type": "integer"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The entry's new state",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **_errors(401, 403, 404, 409, 503),
            },
        }
    },
)

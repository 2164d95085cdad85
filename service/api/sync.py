"""``/sync``: the outbox queue for operators (thin: parse, call ``service.sync.status``, respond)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, g

from service.api import openapi
from service.api.body import CASE_JSON, json_body
from service.api.context import ctx
from service.auth import ROLE_REGISTRY, Principal, gate
from service.errors import BadRequest, Forbidden, Issue
from service.sync import resolve, status

bp = Blueprint("sync", __name__)

JSON = "application/json"


def operator(principal: Principal, action: str) -> None:
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
    operator(g.principal, "r")
    report = status.status(ctx().engine)
    return Response(orjson.dumps(report.as_json()), content_type="application/json")


@bp.post("/sync/retry/<int:entry_id>")
def sync_retry(entry_id: int) -> Response:
    """404 for an unknown entry, 409 for one that is not dead (service.errors, via the error handler)."""
    g.audit_action = "U"  # re-sends a case: an update of what the FHIR server holds
    retrier(g.principal, entry_id)
    state = status.retry(ctx().engine, entry_id)
    return Response(orjson.dumps({"id": entry_id, "state": state}), content_type="application/json")


def retrier(principal: Principal, entry_id: int) -> None:
    """A retry re-sends a case: an operator's update, and the right to write the case's source system
    (the registry role reads every hospital's queue, it writes only its own)."""
    operator(principal, "u")
    gate.require_source_write(principal, status.entry_source(ctx().engine, entry_id))


def resolver(principal: Principal, conflict_id: int) -> None:
    """Resolving shows and writes a case: an operator's update, the whole-case read that the
    conflicts of ``/sync/status`` (the server's resources: patient data) need, and the right to write
    the case's source system (the registry role reads every hospital, it writes only its own)."""
    operator(principal, "r")
    operator(principal, "u")
    gate.require_source_write(principal, resolve.conflict_source(ctx().engine, conflict_id))


def keep_choice(body: Any) -> str:
    """``{"keep": "ours" | "theirs"}``; anything else is a 400 naming the element."""
    if not isinstance(body, dict):
        raise BadRequest([Issue("structure", "the body must be a JSON object", "$")])
    unknown = sorted(k for k in body if k != "keep")
    if unknown:
        raise BadRequest([Issue("structure", f"unknown member {unknown[0]!r}", unknown[0])])
    keep = body.get("keep")
    if keep not in resolve.CHOICES:
        raise BadRequest([Issue("required" if keep is None else "value", 'keep: "ours" or "theirs"', "keep")])
    return str(keep)


@bp.post("/sync/conflicts/<int:conflict_id>/resolve")
def sync_resolve(conflict_id: int) -> Response:
    """404 unknown, 409 resolved already (or ``theirs`` of a rejected merge), 422 a merge the
    validation rejects (nothing stored, the conflict stays open)."""
    g.audit_action = "U"  # settles a conflict: the case or the FHIR server is updated
    resolver(g.principal, conflict_id)
    keep = keep_choice(json_body(CASE_JSON))
    done = resolve.resolve(ctx().engine, ctx().intake, conflict_id, keep)
    body = {
        "id": done.id,
        "keep": done.keep,
        "case_ref": done.case_ref,
        "version": done.version,
        "queued": done.queued,
        "changed": done.changed,
    }
    return Response(orjson.dumps(body), content_type=JSON)


def _errors(*statuses: int) -> dict[str, object]:
    reasons = {
        401: "No valid bearer token",
        403: "The token lacks the scope",
        404: "No such entry",
        409: "The entry is not dead",
        400: 'The body is not {"keep": "ours" | "theirs"}',
        415: "The body is not application/json",
        422: "The merged case fails validation: nothing stored, the conflict stays open",
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
openapi.describe(
    "/sync/conflicts/{conflict_id}/resolve",
    {
        "post": {
            "summary": "Settle an open pull conflict: keep the service's side or take the server's",
            "description": "Scopes system/*.r and system/*.u (every case type), and the registry role or "
            "every source system. ours: the conflict is resolved and the case's current version queued to "
            "be sent again (the server's change is overwritten). theirs: the server's resource is merged "
            "into the case as the pull merges it, stored as a new version, and the conflict resolved. A "
            "rejected merge can only be dismissed (ours); theirs is 409 for it.",
            "parameters": [
                {
                    "name": "conflict_id",
                    "in": "path",
                    "required": True,
                    "description": "Pull conflict id (GET /sync/status lists the open ones)",
                    "schema": {"type": "integer"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["keep"],
                            "additionalProperties": False,
                            "properties": {"keep": {"type": "string", "enum": list(resolve.CHOICES)}},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The resolution: the case version that holds the chosen side",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **_errors(400, 401, 403, 404, 409, 415, 422, 503),
            },
        }
    },
)

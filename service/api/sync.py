"""``/sync``: the outbox queue for operators (thin: parse, call ``service.sync.status``, respond)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, g

from service.api.context import ctx
from service.auth import require
from service.sync import status

bp = Blueprint("sync", __name__)

SYNC_TYPE = "Patient"
"""The SMART scope resource type that guards sync: dead entries carry the server's OperationOutcome,
whose diagnostics may quote patient data."""


@bp.get("/sync/status")
def sync_status() -> Response:
    require(g.principal, SYNC_TYPE, "r")
    report = status.status(ctx().engine)
    return Response(orjson.dumps(report.as_json()), content_type="application/json")


@bp.post("/sync/retry/<int:entry_id>")
def sync_retry(entry_id: int) -> Response:
    """404 for an unknown entry, 409 for one that is not dead (service.errors, via the error handler)."""
    require(g.principal, SYNC_TYPE, "u")
    state = status.retry(ctx().engine, entry_id)
    return Response(orjson.dumps({"id": entry_id, "state": state}), content_type="application/json")

"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from service.api.context import ctx
from service.db import ping
from service.fhir.client import FhirClient, FhirError

bp = Blueprint("health", __name__)
READINESS_TIMEOUT_S = 5.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    app = ctx()
    checks: dict[str, dict[str, Any]] = {}
    db_problem = ping(app.engine)
    checks["database"] = {"ok": db_problem is None, "backend": app.engine.url.get_backend_name()}
    if db_problem:
        checks["database"]["reason"] = db_problem
    checks["storage"] = {"ok": not app.metrics.storage_full}
    if app.metrics.storage_full:
        # The database answers the ping above, yet refuses writes (507): a load balancer must see it.
        checks["storage"]["reason"] = "storage full: the last write failed for want of space"
    checks["fhir_server"] = _fhir_check(app.fhir)
    ready = all(c["ok"] for c in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)


def _fhir_check(client: FhirClient | None) -> dict[str, Any]:
    """Public, so it names neither the server's URL nor the error's text: a URL can carry a password
    or a token (``http://user:secret@host``, outside review of issue 13); ``ivclms config`` shows the
    masked URL to the operator."""
    if client is None:
        return {"ok": True, "configured": False, "reason": "no FHIR server configured: sync is off"}
    try:
        client.request("GET", "metadata", retries=0, timeout=READINESS_TIMEOUT_S)
    except FhirError as exc:
        return {"ok": False, "configured": True, "reason": _reason(exc)}
    return {"ok": True, "configured": True}


def _reason(exc: FhirError) -> str:
    if exc.status is not None:
        return f"the FHIR server's metadata answered HTTP {exc.status}"
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
    return f"{cause}: the FHIR server is not reachable"

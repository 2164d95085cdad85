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
    checks["fhir_server"] = _fhir_check(app.fhir)
    ready = all(c["ok"] for c in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)


def _fhir_check(client: FhirClient | None) -> dict[str, Any]:
    if client is None:
        return {"ok": True, "configured": False, "reason": "no FHIR server configured: sync is off"}
    try:
        client.request("GET", "metadata", retries=0, timeout=READINESS_TIMEOUT_S)
    except FhirError as exc:
        return {"ok": False, "configured": True, "url": client.base_url, "reason": str(exc)}
    return {"ok": True, "configured": True, "url": client.base_url}

"""GET /fhir/metadata."""

from __future__ import annotations

from flask import Blueprint, Response

from service.api import links
from service.api.context import ctx
from service.api.responses import fhir_response
from service.capability import capability_statement

bp = Blueprint("metadata", __name__, url_prefix="/fhir")


@bp.get("/metadata")
def capabilities() -> Response:
    base = links.fhir_base()
    settings = ctx().settings
    statement = capability_statement(
        base, auth_required=ctx().verifier is not None, cors=bool(settings.cors_origins)
    )
    return fhir_response(statement)

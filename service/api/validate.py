"""``$validate`` as a FHIR server offers it, answered by the local validator (thin layer)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, request

from service.api import openapi
from service.api.body import FHIR_JSON_TYPES, json_body
from service.api.context import ctx
from service.api.responses import fhir_response
from service.auth import require
from service.errors import BadRequest, Issue
from service.outcome import operation_outcome

bp = Blueprint("validate", __name__, url_prefix="/fhir")


def _resource(body: Any) -> dict[str, Any]:
    """The resource itself, or the ``resource`` parameter of a Parameters body."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for param in body.get("parameter", []):
            if (
                isinstance(param, dict)
                and param.get("name") == "resource"
                and isinstance(param.get("resource"), dict)
            ):
                found: dict[str, Any] = param["resource"]
                return found
        raise BadRequest(
            [Issue("required", "Parameters.parameter: a 'resource' parameter is required", "Parameters")]
        )
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise BadRequest(
            [Issue("structure", "the body must be a FHIR resource (a JSON object with resourceType)")]
        )
    return body


def _validate(resource_type: str | None) -> Response:
    resource = _resource(json_body(FHIR_JSON_TYPES))
    # Validation stores nothing: a read scope on the posted type is enough, as for a search.
    require(g.principal, str(resource["resourceType"]), "r")
    if resource_type is not None and resource.get("resourceType") != resource_type:
        message = f"resourceType: {resource.get('resourceType')!r} posted to {resource_type}/$validate"
        raise BadRequest([Issue("invalid", message, "resourceType")])
    profile = request.args.get("profile")
    validator = ctx().validator
    if resource.get("resourceType") == "Bundle" and profile is None:
        issues = validator.validate_bundle(resource)
    else:
        issues = validator.validate(resource, [profile] if profile else [])
    return fhir_response(operation_outcome(issues))


@bp.post("/$validate")
def validate_any() -> Response:
    return _validate(None)


@bp.post("/<resource_type>/$validate")
def validate_type(resource_type: str) -> Response:
    return _validate(resource_type)


_OPERATION = {
    "summary": "Validate against base R4 and the profiles (meta.profile or ?profile=); an OperationOutcome",
    "parameters": [
        {
            "name": "profile",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Profile URL",
        }
    ],
    "responses": {
        "200": {"description": "OperationOutcome: errors, warnings, or All OK"},
        "400": {"description": "Not a resource"},
    },
}
openapi.describe("/fhir/$validate", {"post": _OPERATION})
openapi.describe(
    "/fhir/{resource_type}/$validate",
    {
        "post": {
            **_OPERATION,
            "parameters": [
                *_OPERATION["parameters"],
                {"name": "resource_type", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        }
    },
)

"""HTTP around every route: content negotiation (only JSON is served) and CORS for browser SMART apps.

- ``_format=xml`` or an ``Accept`` that names XML and no JSON is 406 (an OperationOutcome in JSON):
  the service serves FHIR JSON only, and answering JSON to a client that asked for XML only misleads
  it (HTTP 406 Not Acceptable: no representation the client accepts).
- CORS only for the origins of ``IVCLMS_HTTP_CORS_ORIGINS`` (empty: no CORS header at all). The
  origin is echoed, never ``*``, and ``Access-Control-Allow-Credentials`` is never sent: SMART apps
  send their token in ``Authorization``, not in cookies. A preflight ``OPTIONS`` is answered before
  authentication (browsers send it without the token).
"""

from __future__ import annotations

from flask import Flask, Response, request

from service.api.context import ctx
from service.errors import Issue, ServiceError

JSON_TYPES = ("application/fhir+json", "application/json")
JSON_FORMATS = ("json", *JSON_TYPES)
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, Idempotency-Key"
EXPOSE_HEADERS = "ETag, Location, Content-Location, X-Progress, Retry-After, Last-Modified"
PREFLIGHT_MAX_AGE = "600"


def not_acceptable(message: str) -> ServiceError:
    return ServiceError(issues=[Issue("not-supported", message, "_format")], status=406)


def check_format() -> None:
    """406 unless the client accepts JSON (``_format`` first, then ``Accept``)."""
    if not request.path.startswith("/fhir"):
        return
    wanted = request.args.get("_format")
    if wanted is not None:
        if not wanted.strip().lower().startswith(JSON_FORMATS):
            raise not_acceptable(f"_format={wanted!r}: this server returns FHIR JSON only (_format=json)")
        return
    accept = request.accept_mimetypes
    if not request.headers.get("Accept"):
        return
    json_ok = any(accept.quality(t) > 0 for t in JSON_TYPES)
    asks_xml = any("xml" in mime.lower() for mime, quality in accept if quality > 0)
    if asks_xml and not json_ok:
        raise not_acceptable(
            "Accept names XML only: this server returns FHIR JSON only (application/fhir+json)"
        )


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin in ctx().settings.cors_origins:
        return origin
    return None


def init_cors(app: Flask) -> None:
    """Registered before authentication, so that a preflight needs no token."""

    @app.before_request
    def _preflight() -> Response | None:
        origin = _allowed_origin()
        if (
            request.method != "OPTIONS"
            or origin is None
            or "Access-Control-Request-Method" not in request.headers
        ):
            return None
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response

    @app.after_request
    def _cors(response: Response) -> Response:
        if not ctx().settings.cors_origins:
            return response
        response.vary.add("Origin")
        origin = _allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response


def init_format(app: Flask) -> None:
    @app.before_request
    def _format() -> None:
        check_format()

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

import re
from typing import Any

from flask import Flask, Response, request

from service.api.context import ctx
from service.errors import BadRequest, Issue, NotFound, ServiceError

JSON_TYPES = ("application/fhir+json", "application/json")
JSON_FORMATS = ("json", *JSON_TYPES)
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, Idempotency-Key"
EXPOSE_HEADERS = "ETag, Location, Content-Location, X-Progress, Retry-After, Last-Modified"
PREFLIGHT_MAX_AGE = "600"


def not_acceptable(message: str) -> ServiceError:
    return ServiceError(issues=[Issue("not-supported", message, "_format")], status=406)


def lower_host(app: Flask) -> None:
    """RFC 3986 3.2.2: "The host subcomponent is case-insensitive"; werkzeug compares the Host with
    TRUSTED_HOSTS as written, so ``Host: LOCALHOST`` was 400 "not trusted" (outside review)."""
    inner = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        host = environ.get("HTTP_HOST")
        if host:
            environ["HTTP_HOST"] = host.lower()
        return inner(environ, start_response)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]


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


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters no FHIR string, id or search value holds (the string type is
``[ \\r\\n\\t\\S]+``, an id ``[A-Za-z0-9\\-\\.]{1,64}``); tab, CR and LF are left to each
parameter's own rule. PostgreSQL refuses U+0000 in text: it was a 500 on about fifteen routes
(outside review of issue 13)."""


def check_control_characters() -> None:
    """A path with a control character names nothing the service holds (404); a query or form
    parameter with one is invalid (400, naming it)."""
    if _CONTROL.search(request.path):
        raise NotFound("no resource is at a path with a control character")
    params = list(request.args.items(multi=True))
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        params += list(request.form.items(multi=True))
    for name, value in params:
        found = _CONTROL.search(name) or _CONTROL.search(value)
        if found:
            where = "".join(c for c in name if not _CONTROL.match(c))[:64] or "query"
            message = f"must not contain control character U+{ord(found.group()):04X}"
            raise BadRequest([Issue("invalid", message, where)])


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin in ctx().settings.cors_origins:
        return origin
    return None


def init_cors(app: Flask) -> None:
    """Registered before authentication, so that a preflight needs no token."""

    @app.before_request
    def _preflight() -> Response | None:
        """Every preflight gets 204 with no body and no token asked (docs/security.md: "Preflight
        OPTIONS needs no token"); only an allowed origin gets the Access-Control headers, so the
        browser refuses the others. An unlisted origin was answered 401 (outside review)."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response(status=204)
        del response.headers["Content-Type"]
        if _allowed_origin() is not None:
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
        check_control_characters()
        check_format()

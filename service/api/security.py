"""Default-deny authentication: every endpoint but the public ones needs a valid bearer token."""

from __future__ import annotations

from flask import Flask, Response, g, request

from service.api import signin
from service.api.context import ctx
from service.auth import ANONYMOUS
from service.errors import Forbidden, Unauthorized

PUBLIC_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "metadata.capabilities",
        "static",
        "openapi.openapi_json",
        "openapi.docs",
        "pages.landing",
        "pages.asset",
    }
)

SESSION_BLUEPRINTS = frozenset({"console", "console_form", "console_sync", "signin"})
"""Blueprints whose endpoints accept the console's sign-in session (a cookie) in place of a bearer
token: the console's pages and its own form posts (each checks CSRF). Never the JSON/FHIR API: a
cookie there would let any site make a signed-in browser call it."""

DEIDENTIFIED_ENDPOINTS = frozenset(
    {
        "registry.registry_csv",
        "registry.registry_ndjson",
        "registry.registry_summary",
        "console.series",
        "console.series_csv",
        "console.series_svg",
    }
)
"""All a de-identified recipient's token reaches (issue 12: de-identified access as its own permission);
the console's case-series page is the summary drawn, under the same de-identified rules."""
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The policy of every HTML page (landing, API docs, console): nothing but our own files, no inline
script or style (Swagger UI is started from a served file), never framed. ``data:`` images are
swagger-ui's icons in its CSS."""


def init_app(app: Flask) -> None:
    @app.before_request
    def _authenticate() -> Response | None:
        verifier = ctx().verifier
        if verifier is None:
            g.principal = ANONYMOUS
            return None
        if request.endpoint in PUBLIC_ENDPOINTS or request.routing_exception is not None:
            # Public endpoints, and 404/405 answers (which reveal nothing), need no token.
            g.principal = None
            return None
        if request.endpoint in signin.PUBLIC:
            g.principal = None
            return None
        authorization = request.headers.get("Authorization")
        if authorization is None and request.blueprint in SESSION_BLUEPRINTS and ctx().settings.oidc_enabled:
            principal = signin.session_principal()
            if principal is None:
                if request.method == "GET":
                    return Response(status=302, headers={"Location": signin.sign_in_url()})
                raise Unauthorized("sign in to use the console (your sign-in is missing or has expired)")
            g.principal = principal
        else:  # a bearer token wins when present
            g.principal = verifier.verify(authorization)
        if g.principal.deidentified_only and request.endpoint not in DEIDENTIFIED_ENDPOINTS:
            raise Forbidden(
                "this token has the role 'deidentified' without 'registry': it reaches de-identified "
                "registry pulls only (/registry/cases.csv|.ndjson?deidentified=true, /registry/summary)"
            )
        return None

    @app.after_request
    def _no_store(response: Response) -> Response:
        # Everything behind authentication may carry patient data (and errors quote what was asked):
        # no cache, shared or private, may keep it. Public endpoints keep their own caching.
        if request.endpoint not in PUBLIC_ENDPOINTS:
            response.headers["Cache-Control"] = "no-store"
        if response.mimetype in ("text/html", "image/svg+xml"):
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

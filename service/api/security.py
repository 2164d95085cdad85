"""Default-deny authentication: every endpoint but the public ones needs a valid bearer token."""

from __future__ import annotations

from flask import Flask, Response, g, request

from service.api.context import ctx
from service.auth import ANONYMOUS
from service.errors import Forbidden

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
    def _authenticate() -> None:
        verifier = ctx().verifier
        if verifier is None:
            g.principal = ANONYMOUS
            return
        if request.endpoint in PUBLIC_ENDPOINTS or request.routing_exception is not None:
            # Public endpoints, and 404/405 answers (which reveal nothing), need no token.
            g.principal = None
            return
        g.principal = verifier.verify(request.headers.get("Authorization"))
        if g.principal.deidentified_only and request.endpoint not in DEIDENTIFIED_ENDPOINTS:
            raise Forbidden(
                "this token has the role 'deidentified' without 'registry': it reaches de-identified "
                "registry pulls only (/registry/cases.csv|.ndjson?deidentified=true, /registry/summary)"
            )

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

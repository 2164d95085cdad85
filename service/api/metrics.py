"""``GET /metrics``: the Prometheus text exposition, for operators; and the per-request figures."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import openapi
from service.api.context import ctx
from service.api.sync import operator
from service.metrics import UNMATCHED_ROUTE

bp = Blueprint("metrics", __name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@bp.get("/metrics")
def metrics() -> Response:
    """Gated as ``/sync/status`` (an operator: whole-case read on every type, and the registry role or
    every source system). The figures carry no patient data, but they show every hospital's queue
    and traffic: a client bound to one hospital has no business reading the others'."""
    operator(g.principal, "r")
    return Response(generate_latest(ctx().metrics.registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Registered before authentication, so that a refused request (401/403) is timed and counted."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        figures = ctx().metrics
        # The rule's template (``/cases/<ref>``), never the path: a path carries identifiers.
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method
        figures.requests.labels(route, method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            figures.request_seconds.labels(route, method).observe(time.perf_counter() - started)
        if method in WRITE_METHODS and response.status_code < 400 and figures.storage_full:
            figures.storage_full = False  # space was freed: a write went through again
        return response


openapi.describe(
    "/metrics",
    {
        "get": {
            "summary": "Prometheus metrics (text exposition format 0.0.4)",
            "description": "For operators, gated as /sync/status: scopes system/*.r (every case type), and "
            "the registry role or every source system. Labels carry route templates, never paths or ids.",
            "responses": {
                "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": {"description": "No valid bearer token"},
                "403": {"description": "Not an operator"},
            },
        }
    },
)

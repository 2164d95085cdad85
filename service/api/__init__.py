"""The Flask layer: parse, call, respond. The only package that imports Flask."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from service.api import (
    audit,
    bulk,
    cases,
    console,
    console_form,
    console_sync,
    csrf,
    errors,
    fhir_intake,
    fhir_read,
    health,
    http_edges,
    metadata,
    metrics,
    openapi,
    registry,
    security,
    signin,
    sync,
    validate,
)
from service.api.context import AppContext
from service.settings import Settings

log = logging.getLogger("ivclms")

DB_INT_MAX = 2**31 - 1
"""Largest integer a route takes (a PostgreSQL ``integer``: versions; outbox ids are far below it)."""


class DbInteger(IntegerConverter):
    """``<int:...>`` bounded to what the database holds: a larger number matches no route (404), instead
    of overflowing the driver (``/_history/99999999999999999999999`` was a 500)."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", DB_INT_MAX)
        super().__init__(map, *args, **kwargs)


def build_app(settings: Settings | None = None) -> Flask:
    settings = (settings or Settings.from_env()).validated()  # a Settings() built in code is checked too
    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.http_max_body_bytes
    # Absolute links come from IVCLMS_HTTP_PUBLIC_BASE_URL; without it, from the request's Host, which
    # must then be a trusted one (Flask answers 400 for any other, before routing).
    app.config["TRUSTED_HOSTS"] = None if settings.http_public_base_url else settings.trusted_hosts
    app.url_map.converters["int"] = DbInteger
    # No redirects from routing (``//`` merged, a trailing slash added): werkzeug answers them itself,
    # in HTML, with a Location built from the Host header. Such paths are 404 OperationOutcomes instead.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ctx = AppContext.build(settings)
    app.extensions["ivclms"] = ctx
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS DISABLED (IVCLMS_AUTH_DISABLED=true): every client has full access")
    if not settings.sync_enabled:
        log.warning("no FHIR server configured (IVCLMS_FHIR_URL is empty): sync to a FHIR server is off")
    errors.init_app(app)
    metrics.init_app(app)
    csrf.init_app(app, settings)
    signin.init_app(app, settings)
    http_edges.lower_host(app)
    http_edges.init_cors(app)  # before authentication: a CORS preflight carries no token
    security.init_app(app)
    http_edges.init_format(app)
    audit.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metadata.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(fhir_intake.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(bulk.bp)
    app.register_blueprint(fhir_read.bp)
    app.register_blueprint(sync.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(registry.bp)
    app.register_blueprint(validate.bp)
    app.register_blueprint(console.pages)
    app.register_blueprint(console.bp)
    app.register_blueprint(console_form.bp)
    app.register_blueprint(console_sync.bp)
    return app

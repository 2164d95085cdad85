"""The Flask layer: parse, call, respond. The only package that imports Flask."""

from __future__ import annotations

import logging

from flask import Flask

from service.api import (
    audit,
    bulk,
    cases,
    errors,
    fhir_intake,
    fhir_read,
    health,
    metadata,
    openapi,
    registry,
    security,
    sync,
    validate,
)
from service.api.context import AppContext
from service.settings import Settings

log = logging.getLogger("ivclms")


def build_app(settings: Settings | None = None) -> Flask:
    settings = (settings or Settings.from_env()).validated()  # a Settings() built in code is checked too
    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.http_max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ctx = AppContext.build(settings)
    app.extensions["ivclms"] = ctx
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS DISABLED (IVCLMS_AUTH_DISABLED=true): every client has full access")
    if not settings.sync_enabled:
        log.warning("no FHIR server configured (IVCLMS_FHIR_URL is empty): sync to a FHIR server is off")
    errors.init_app(app)
    security.init_app(app)
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
    app.register_blueprint(registry.bp)
    app.register_blueprint(validate.bp)
    return app

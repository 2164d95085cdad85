"""The one place where errors become OperationOutcome responses."""

from __future__ import annotations

import logging
import sqlite3
import traceback
from pathlib import Path

from flask import Flask, Response, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

from service.api.context import ctx
from service.api.responses import fhir_response
from service.errors import Issue, ServiceError, TooMany, Unavailable
from service.outcome import operation_outcome

log = logging.getLogger("ivclms.api")

_HTTP_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    429: "throttled",
}


CONSOLE_PREFIX = "/ui"


def _wants_page() -> bool:
    """A browser on a console page gets the error as an HTML page (same status and headers); every
    other client the OperationOutcome."""
    path = request.path
    if path != CONSOLE_PREFIX and not path.startswith(CONSOLE_PREFIX + "/"):
        return False
    choices = ["application/fhir+json", "application/json", "text/html"]
    return request.accept_mimetypes.best_match(choices) == "text/html"


def respond(issues: list[Issue], status: int, headers: dict[str, str] | None = None) -> Response:
    if _wants_page():
        reason = HTTP_STATUS_CODES.get(status, "Error")
        page = render_template("error.html", status=status, reason=reason, issues=issues)
        return Response(page, status=status, headers=headers, content_type="text/html; charset=utf-8")
    return fhir_response(operation_outcome(issues), status, headers)


def init_app(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="ivclms"'} if exc.status == 401 else {}
        if isinstance(exc, Unavailable | TooMany):
            headers["Retry-After"] = str(exc.retry_after)
        return respond(exc.issues, exc.status, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = (
                f"request body exceeds the configured limit of {limit} bytes (IVCLMS_HTTP_MAX_BODY_BYTES)"
            )
        issue = Issue(code=_HTTP_ISSUE_CODES.get(status, "processing"), diagnostics=message)
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            # RFC 9110 15.5.6: "The origin server MUST generate an Allow header field in a 405 response"
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return respond([issue], status, headers)

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError) -> Response:
        if storage_full(exc):
            # Not "unavailable": the database answers and is intact (the failed transaction rolled
            # back), but nothing more can be written until an operator frees space. Readiness and
            # ``ivclms_storage_full`` report it until a write succeeds again.
            log.error("storage full: the database refused a write for want of space")
            ctx().metrics.storage_full = True
            issue = Issue(
                code="no-store",
                diagnostics="storage full: the database has no space left for this write; it was not "
                "applied (nothing stored was lost): retry it after an operator frees space "
                "(with the same Idempotency-Key)",
            )
            return fhir_response(operation_outcome([issue]), 507, {"Retry-After": "60"})
        # The database is unreachable or locked past its timeout. The write may still have committed
        # (the connection dropped after COMMIT, or while the Idempotency-Key answer was being stored):
        # a retry with the same key, or of the same case, is safe and returns it.
        log.error("database unavailable (%s)", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        error = Unavailable(
            "the database is unavailable; the request may not have been applied: retry it later "
            "(with the same Idempotency-Key)"
        )
        return fhir_response(operation_outcome(error.issues), 503, {"Retry-After": str(error.retry_after)})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Where, not what: an exception's message can quote the data it choked on.
        frames = traceback.extract_tb(exc.__traceback__)
        where = ", ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:])
        log.error("unexpected error %s at %s", type(exc).__name__, where)
        issue = Issue(code="exception", diagnostics="internal error; the request was not applied")
        return respond([issue], 500)


SQLITE_FULL = sqlite3.SQLITE_FULL
"""SQLite's result code for "database or disk is full" (https://www.sqlite.org/rescode.html#full):
the disk, or the database's ``max_page_count``; Python 3.11's errors carry it as ``sqlite_errorcode``."""
POSTGRES_DISK_FULL = "53100"
"""PostgreSQL's SQLSTATE ``disk_full`` (class 53, insufficient resources)."""


def storage_full(exc: OperationalError) -> bool:
    """Whether the driver's error says the storage is full (SQLite or PostgreSQL)."""
    original = exc.orig
    if getattr(original, "sqlite_errorcode", None) == SQLITE_FULL:
        return True
    return getattr(original, "sqlstate", None) == POSTGRES_DISK_FULL

"""gunicorn embedded behind `ivclms serve`, so one command runs the production server.

Hardened for what reaches it before the application does:
- the access log writes the route pattern the application put in the WSGI environ (``ivclms.entity``,
  see ``service.api.audit``), never the raw path or the query string (a client-chosen path segment
  can be an identifier), and both of gunicorn's logs escape control characters (``service.logs``),
  so a path with ``%0d%0a`` cannot forge a log line;
- the answers gunicorn writes itself (400 malformed request, 414 request line too long, 431 header
  too large) are FHIR OperationOutcome JSON instead of its HTML page: gunicorn has no setting for that
  page, so ``install_outcome_pages`` replaces ``gunicorn.util.write_error``, the one function that
  writes it; the limits are set at gunicorn's maximum so these answers stay rare.
"""

from __future__ import annotations

import gc
import logging
import socket
from typing import Any

import orjson
from flask import Flask
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.config import Config
from gunicorn.glogging import Logger

from service.api.audit import ENTITY_ENVIRON
from service.errors import Issue
from service.logs import formatter
from service.outcome import operation_outcome
from service.settings import Settings

# The access log leaves out the path and the query string: both can carry identifiers.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %({' + ENTITY_ENVIRON + '}e)s" %(s)s %(B)s %(M)sms'
LIMIT_REQUEST_LINE = 8190
"""gunicorn's largest request line (its maximum): long search URLs fit; longer ones get 414."""
LIMIT_REQUEST_FIELD_SIZE = 8190
LIMIT_REQUEST_FIELDS = 100
KEEPALIVE_S = 10
"""How long an idle keep-alive connection stays open. gunicorn's default (2 s) equals the Retry-After
of a bulk status poll: a client that waits as told and reuses its connection met the server closing
it at that very moment ("Remote end closed connection without response", seen in CI). Longer than
every Retry-After a polling client is given, and short enough not to hoard connections."""
_ISSUE_CODES = {400: "invalid", 403: "forbidden", 414: "too-long", 417: "not-supported", 431: "too-long"}
_MESSAGES = {
    400: "the request is not well-formed HTTP (request line or a header)",
    414: f"the request line is longer than {LIMIT_REQUEST_LINE} bytes: send fewer search parameters",
    431: f"a request header is larger than {LIMIT_REQUEST_FIELD_SIZE} bytes, or there are more than "
    f"{LIMIT_REQUEST_FIELDS} headers",
}


class WithholdRequestText(logging.Filter):
    """gunicorn logs a request it could not parse with the parser's message, which quotes the raw
    request line or header ("Invalid HTTP Version: 'Smith&birthdate=1968-03-14 HTTP/1.1'": outside
    review); the line keeps who and what kind of failure, never the quoted text."""

    PREFIX = "Invalid request from ip="

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            where, _, detail = message.partition(": ")
            kind = detail.split(":", 1)[0].split("'", 1)[0].strip()[:60]
            record.msg, record.args = f"{where}: {kind} (the request's text is not logged)", ()
        return True


class EscapingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, whose handlers escape control characters like the application's (or write
    JSON lines, ``LOG_FORMAT``), and whose error log never quotes a malformed request."""

    LOG_FORMAT = "text"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.addFilter(WithholdRequestText())
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                old = handler.formatter or logging.Formatter()
                handler.setFormatter(formatter(self.LOG_FORMAT, old._fmt, old.datefmt))


class JsonLinesLogger(EscapingLogger):
    """``EscapingLogger`` writing one JSON object per line (``IVCLMS_LOG_FORMAT=json``)."""

    LOG_FORMAT = "json"


def outcome_page(status: int, reason: str) -> bytes:
    """The HTTP response gunicorn sends for a request it refused itself: an OperationOutcome whose
    message is generic (gunicorn's own message quotes the request, which may carry identifiers)."""
    message = _MESSAGES.get(status, reason.lower())
    issue = Issue(_ISSUE_CODES.get(status, "processing" if status >= 500 else "invalid"), message)
    body = orjson.dumps(operation_outcome([issue]))
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/fhir+json\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_outcome(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``; ``mesg`` (which quotes the request) is not sent."""
    util.write_nonblock(sock, outcome_page(int(status_int), str(reason)))


def install_outcome_pages() -> None:
    util.write_error = write_outcome


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def server_options(settings: Settings, *, host: str, port: int, workers: int) -> dict[str, Any]:
    """gunicorn's settings for ``ivclms serve``."""
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": settings.http_threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": JsonLinesLogger if settings.log_format == "json" else EscapingLogger,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "loglevel": settings.log_level.lower(),
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": KEEPALIVE_S,
        "preload_app": True,
        "post_fork": _post_fork,
        "child_exit": _child_exit,
    }
    if "control_socket_disable" in Config().settings:
        # gunicorn >= 25.1 opens a management socket in the user's home by default; nothing here uses it.
        options["control_socket_disable"] = True
    return options


def run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    # Built once in the parent (preload): configuration errors stop start-up before any fork.
    from service import create_app

    app = create_app(settings)
    install_outcome_pages()  # before the workers fork: each inherits it
    # The validator's definitions and the code tables live as long as the process: frozen out of the
    # cyclic collector, a worker's collections no longer walk them at every Bundle built (mapping
    # bench: case_to_bundle 3.97 -> 2.21 ms per case), and forked workers share those pages instead of
    # copying them when the collector would touch them (gc.freeze's documented use before fork()).
    gc.collect()
    gc.freeze()
    _Server(app, server_options(settings, host=host, port=port, workers=workers)).run()


def _child_exit(_server: Any, worker: Any) -> None:
    # A dead worker's live gauges (``ivclms_storage_full``) must stop counting in multiprocess mode.
    from service.metrics import multiprocess

    if multiprocess():
        from prometheus_client import multiprocess as shared

        shared.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _post_fork(_server: Any, worker: Any) -> None:
    # Connections must not be shared across processes: each worker opens its own.
    worker.app.load().extensions["ivclms"].engine.dispose(close=False)

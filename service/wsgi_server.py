"""gunicorn embedded behind `ivclms serve`, so one command runs the production server."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from service.settings import Settings

# The access log leaves out query strings: search parameters can carry identifiers.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


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


def run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    # Built once in the parent (preload): configuration errors stop start-up before any fork.
    from service import create_app

    app = create_app(settings)
    _Server(
        app,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": settings.http_threads,
            "worker_class": "gthread",
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "loglevel": settings.log_level.lower(),
            "timeout": 60,
            "graceful_timeout": 20,
            "preload_app": True,
            "post_fork": _post_fork,
        },
    ).run()


def _post_fork(_server: Any, worker: Any) -> None:
    # Connections must not be shared across processes: each worker opens its own.
    worker.app.load().extensions["ivclms"].engine.dispose(close=False)

"""`ivclms`: the one command line for every job of the service."""

from __future__ import annotations

import sys
from dataclasses import fields
from typing import Any

import click

from service import __version__
from service.settings import Settings, SettingsError

_SECRET_WORDS = ("secret", "password", "token")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ivclms")
def main() -> None:
    """IVC-LMS FHIR interoperability service."""


@main.command()
@click.option("--host", help="Bind address (default: IVCLMS_HTTP_HOST).")
@click.option("--port", type=int, help="Port (default: IVCLMS_HTTP_PORT).")
@click.option("--workers", type=int, help="gunicorn worker processes (default: IVCLMS_HTTP_WORKERS).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn (the production WSGI server)."""
    from service.logs import configure
    from service.wsgi_server import run

    settings = _settings()
    configure(settings.log_level)
    run(
        settings,
        host=host or settings.http_host,
        port=port or settings.http_port,
        workers=workers or settings.http_workers,
    )


@main.command("config")
def show_config() -> None:
    """Print the effective configuration (secrets masked)."""
    settings = _settings()
    for f in fields(settings):
        value: Any = getattr(settings, f.name)
        if any(word in f.name for word in _SECRET_WORDS) and value:
            value = "****"
        click.echo(f"{f.metadata['env']}={value}")
    click.echo(f"# effective database: {settings.database_url}")
    click.echo(f"# sync: {'on -> ' + settings.fhir_url if settings.sync_enabled else 'off'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

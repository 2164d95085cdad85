"""`ivclms`: the one command line for every job of the service."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from service import __version__
from service.settings import Settings, SettingsError

_SECRET_WORDS = ("secret", "password", "token")
_Command = TypeVar("_Command", bound=Callable[..., Any])


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


# ---- case files: map, unmap, import -------------------------------------------------------------
# Imported inside the commands, like serve's imports, so `ivclms --help` stays fast.


def _now_option(fn: _Command) -> _Command:
    return click.option(
        "--now",
        callback=_check_now,
        metavar="ISO",
        help="Provenance.recorded, a FHIR instant like 2026-01-01T00:00:00Z (default: the current UTC time).",
    )(fn)


def _check_now(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    from service.case_files import check_instant

    if value is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    try:
        return check_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _read(path: str) -> str:
    """The text of a file, or of stdin for ``-``; an unreadable file is a one-line error, exit 1."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8", newline="") as file:  # newline="": CSV cells keep their CRLF
            return file.read()
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{_name(path)}: not UTF-8 text (byte {exc.start})") from None


def _name(path: str) -> str:
    return "stdin" if path == "-" else path


def _load_json(path: str) -> Any:
    from service.case_files import CaseFileError, load_json

    try:
        return load_json(_read(path), _name(path))
    except CaseFileError as exc:
        raise click.ClickException(str(exc)) from None


def _fail(lines: Iterable[str]) -> NoReturn:
    """Problems one per line on stderr, exit code 1."""
    for line in lines:
        click.echo(line, err=True)
    sys.exit(1)


@main.command("map")
@click.argument("case_file", metavar="CASE.json")
@_now_option
def map_command(case_file: str, now: str) -> None:
    """Print the FHIR transaction Bundle of a case (`-` reads stdin).

    An invalid case prints one `path: rule` line per problem on stderr and exits 1.
    """
    from service.case_files import dump_json, map_case
    from service.errors import Unprocessable
    from service.mapping.spec import MappingError

    data = _load_json(case_file)
    try:
        bundle = map_case(data, now=now)
    except Unprocessable as exc:
        _fail(i.diagnostics for i in exc.issues)
    except MappingError as exc:
        raise click.ClickException(f"{_name(case_file)}: cannot map: {exc}") from None
    click.echo(dump_json(bundle), nl=False)


@main.command("unmap")
@click.argument("bundle_file", metavar="BUNDLE.json")
def unmap_command(bundle_file: str) -> None:
    """Print the case carried by a Bundle that `ivclms map` made (`-` reads stdin)."""
    from service.case_files import CaseFileError, dump_json, unmap_bundle
    from service.errors import Unprocessable
    from service.mapping.spec import MappingError

    data = _load_json(bundle_file)
    try:
        case = unmap_bundle(data)
    except CaseFileError as exc:
        raise click.ClickException(f"{_name(bundle_file)}: {exc}") from None
    except MappingError as exc:
        raise click.ClickException(f"{_name(bundle_file)}: cannot map back: {exc}") from None
    except Unprocessable as exc:
        _fail(i.diagnostics for i in exc.issues)
    click.echo(dump_json(case), nl=False)


@main.command("import")
@click.argument("csv_file", metavar="CASES.csv")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one DIR/<case_id>.bundle.json per valid row (created if missing); without it, only check.",
)
@_now_option
def import_command(csv_file: str, out: Path | None, now: str) -> None:
    """Validate and map a CSV case series, one case per row (`-` reads stdin).

    Problems go to stderr as `row N: path: rule`, N counting data rows: row 1 is the first row after
    the header (file line N + 1 when no line is blank and no quoted cell spans lines). A rejected row
    writes nothing and does not stop the others. Ends with `N cases imported, M rows rejected`;
    exits 1 if any row was rejected.
    """
    from service.case_files import bundle_file_name, dump_json, import_rows
    from service.errors import Unprocessable

    try:
        report = import_rows(_read(csv_file), now)
    except Unprocessable as exc:  # the header itself is wrong: no row can be read
        _fail(i.diagnostics for i in exc.issues)
    for row in report.rejected:
        for issue in row.issues:
            click.echo(issue.diagnostics, err=True)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for row in report.imported:
                assert row.case_id is not None and row.bundle is not None
                _write_atomically(out / bundle_file_name(row.case_id), dump_json(row.bundle))
        except OSError as exc:
            raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(report.summary(), err=True)
    if report.rejected:
        sys.exit(1)


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so no half-written bundle is ever left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

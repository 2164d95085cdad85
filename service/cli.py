"""`ivclms`: the one command line for every job of the service."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from service import __version__
from service.settings import Settings, SettingsError
from service.validation.fetch import DEFAULT_DIR as DEFAULT_DEFINITIONS

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from service.fhir.client import FhirClient

_SECRET_WORDS = ("secret", "password", "token", "key")
_URL_SETTINGS = ("db_url", "fhir_url", "fhir_token_url", "http_public_base_url")
_Command = TypeVar("_Command", bound=Callable[..., Any])


def _settings(*, serving: bool = False) -> Settings:
    """The settings; access-token settings are required only by a command that serves HTTP."""
    try:
        return Settings.from_env(serving=serving)
    except SettingsError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _progress(length: int, label: str) -> Any:
    """A progress bar on stderr when it is a terminal; silent in pipes, logs and tests."""
    shown = sys.stderr.isatty()
    return click.progressbar(length=length, label=label, file=sys.stderr if shown else io.StringIO())


def _fhir_client(settings: Settings) -> FhirClient:
    """The FHIR client; its credentials (a signing key) are read here, once, and checked."""
    from service.fhir.client import FhirClient

    try:
        return FhirClient.from_settings(settings)
    except SettingsError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


class _Commands(click.Group):
    """The command group; a database failure in any command is one line naming its kind, never a
    traceback (a driver's message can quote SQL parameters, i.e. patient data: it is not printed)."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except DBAPIError as exc:
            raise click.ClickException(
                f"database failed: {type(exc).__name__} ({type(exc.orig).__name__}); is it reachable "
                "and at the newest schema (`ivclms db upgrade`)?"
            ) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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

    settings = _settings(serving=True)
    configure(settings.log_level, settings.log_format)
    count = workers or settings.http_workers
    if count > 1:
        _share_metrics(settings.data_dir / "metrics")
    from service.wsgi_server import run  # imports prometheus_client: after its mode is chosen

    run(settings, host=host or settings.http_host, port=port or settings.http_port, workers=count)


def _share_metrics(default: Path) -> None:
    """prometheus_client's multiprocess mode for several gunicorn workers, so that a scrape answered
    by any worker reports all of them. Chosen by an environment variable read when prometheus_client
    is imported, hence here, before the application is; an operator's own PROMETHEUS_MULTIPROC_DIR is
    kept. Files of an earlier run are removed (the library's rule: the directory is wiped between
    runs; else a restart would add the old counts to the new)."""
    if "prometheus_client" in sys.modules:  # its mode is already chosen: a bug here, not a setting
        raise RuntimeError("prometheus_client was imported before its multiprocess mode was chosen")
    folder = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default)))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


@main.command("config")
def show_config() -> None:
    """Print the effective configuration (secrets masked)."""
    settings = _settings()
    for f in fields(settings):
        value: Any = getattr(settings, f.name)
        if any(word in f.name for word in _SECRET_WORDS) and value:
            value = "****"
        elif f.name in _URL_SETTINGS and value:
            value = _masked_url(str(value))
        click.echo(f"{f.metadata['env']}={value}")
    click.echo(f"# effective database: {_masked_url(settings.database_url)}")
    click.echo(f"# sync: {'on -> ' + _masked_url(settings.fhir_url) if settings.sync_enabled else 'off'}")


def _masked_url(url: str) -> str:
    """A URL with the password in its user part and every query value shown as ``***`` (database URLs
    carry a password; server URLs sometimes a token in the query)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    if question:
        masked = "&".join(f"{part.partition('=')[0]}=***" for part in query.split("&") if part)
        query = masked
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{authority}{slash}{path}{question}{query}"


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


@main.command("validate")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--profile", help="Profile URL to validate against (besides meta.profile).")
@click.option(
    "--definitions",
    type=click.Path(path_type=Path, file_okay=False),
    default=str(DEFAULT_DEFINITIONS),
    show_default=True,
    help="Base R4 definitions (scripts/r4-definitions puts them there).",
)
@click.option(
    "--errors-only",
    is_flag=True,
    help="Print only errors (warnings and information are counted in the summary line, not printed).",
)
def validate_command(
    files: tuple[str, ...], profile: str | None, definitions: Path, errors_only: bool
) -> None:
    """Validate FHIR JSON files (resources or Bundles) against base R4 and the profiles in profiles/.

    Prints one line per issue (file, severity, FHIRPath, message); exit 1 when any file has errors.
    """
    from service.validation.definitions import PROFILES_DIR
    from service.validation.gate import errors, shared_validator

    validator = shared_validator(PROFILES_DIR, definitions)
    failed = 0
    for path in files:
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            _fail([f"{_name(path)}: not a FHIR resource"])
        if data["resourceType"] == "Bundle":
            issues = validator.validate_bundle(data, [profile] if profile else [])
        else:
            issues = validator.validate(data, [profile] if profile else [])
        bad = errors(issues)
        for issue in bad if errors_only else issues:
            click.echo(f"{_name(path)}: {issue.severity} {issue.expression or '-'}: {issue.diagnostics}")
        failed += bool(bad)
        verdict = "INVALID" if bad else "valid"
        click.echo(f"{_name(path)}: {verdict} ({len(bad)} errors, {len(issues) - len(bad)} other issues)")
    if failed:
        raise SystemExit(1)


@main.command("unmap")
@click.argument("bundle_file", metavar="BUNDLE.json")
def unmap_command(bundle_file: str) -> None:
    """Print the case carried by a Bundle that `ivclms map` made (`-` reads stdin)."""
    from service.case_files import CaseFileError, dump_json, unmap_bundle
    from service.errors import Unprocessable
    from service.mapping.negation import bundle_denials
    from service.mapping.spec import MappingError

    data = _load_json(bundle_file)
    if isinstance(data, dict) and (denied := bundle_denials(data)):
        _fail(f"{_name(bundle_file)}: {line}" for line in denied)
    try:
        case = unmap_bundle(data)
    except CaseFileError as exc:
        raise click.ClickException(f"{_name(bundle_file)}: {exc}") from None
    except MappingError as exc:
        raise click.ClickException(f"{_name(bundle_file)}: cannot map back: {exc}") from None
    except Unprocessable as exc:
        _fail(i.diagnostics for i in exc.issues)
    click.echo(dump_json(case), nl=False)


@main.command("export")
@click.option("--since", help="Only resources updated after this instant (2026-01-01T00:00:00Z).")
@click.option("--type", "types", help="Resource types, comma-separated (default: all served types).")
@click.option(
    "--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output directory."
)
def export_command(since: str | None, types: str | None, out: Path) -> None:
    """Bulk export from this service's database to NDJSON files (one per type), as $export writes them."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from service import bulk_export
    from service.errors import ServiceError
    from service.search import RESOURCE_TYPES
    from service.store.tables import resources

    settings = _settings()
    try:
        chosen = bulk_export.parse_types(types, RESOURCE_TYPES)
    except ServiceError:
        unknown = sorted({t.strip() for t in (types or "").split(",")} - set(RESOURCE_TYPES) - {""})
        raise click.BadParameter(
            f"{', '.join(unknown)} cannot be exported; valid types: {', '.join(RESOURCE_TYPES)}",
            param_hint="--type",
        ) from None
    moment = _instant_option(since, "--since")
    now = datetime.now(UTC)
    job = bulk_export.Job(
        id=str(uuid.uuid4()),
        state="running",
        level="system",
        types=chosen,
        since=moment,
        request_url="ivclms export",
        principal="cli",
        transaction_time=now,
        created_at=now,
        finished_at=None,
        expires_at=None,
        progress=0,
        manifest_json=None,
        error=None,
    )
    engine = _engine(settings)
    try:
        with engine.connect() as conn:
            query = (
                select(func.count())
                .select_from(resources)
                .where(
                    resources.c.resource_type.in_(chosen),
                    resources.c.deleted == 0,
                    resources.c.last_updated <= now,
                )
            )
            if moment is not None:
                query = query.where(resources.c.last_updated > moment)
            total = int(conn.execute(query).scalar_one())
        with _progress(total, "exporting") as bar:
            done = [0]

            def advance(written: int) -> bool:
                bar.update(written - done[0])
                done[0] = written
                return True

            outputs = bulk_export.write_files(engine, job, out, on_page=advance)
    finally:
        engine.dispose()
    for output in outputs:
        click.echo(f"{out / output['file']}: {output['count']} {output['type']}")
    click.echo(f"{sum(o['count'] for o in outputs)} resources in {len(outputs)} files")


@main.command("import")
@click.argument("csv_file", metavar="CASES.csv")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one DIR/<case_id>.bundle.json per case (created if missing); without it, only check.",
)
@_now_option
def import_command(csv_file: str, out: Path | None, now: str) -> None:
    """Check a CSV case series and map each row to its Bundle (`-` reads stdin); offline.

    All or nothing, like POST /cases/import: any rejected row writes no file. Problems go to stderr as
    `line N: column: rule`, N the file line the row starts on (the header is line 1). Nothing is
    stored in the service's database: POST the file to /cases/import for that. Exits 1 if any row
    was rejected.
    """
    from service.case_files import bundle_file_name, dump_json, import_rows
    from service.errors import Unprocessable

    text = _read(csv_file)
    rows = max(text.count("\n") - 1, 0)  # an estimate for the bar: quoted cells may span lines
    try:
        with _progress(rows, "checking") as bar:
            report = import_rows(text, now, on_row=lambda _n: bar.update(1))
    except Unprocessable as exc:  # the header itself is wrong: no row can be read
        _fail([*(i.diagnostics for i in exc.issues), "nothing written"])
    for row in report.rejected:
        for issue in row.issues:
            click.echo(issue.diagnostics, err=True)
    good, bad = len(report.imported), len(report.rejected)
    if bad:
        _fail(
            [
                f"{_plural(bad, 'row')} rejected, {_plural(good, 'case')} valid: "
                "nothing written (all or nothing)"
            ]
        )
    if not good:  # as POST /cases/import answers it
        _fail(["the file holds no data rows: nothing written"])
    if out is None:
        click.echo(
            f"{_plural(good, 'case')} valid; nothing written (checked only: --out DIR writes the "
            "bundles; POST the file to /cases/import to store the cases)",
            err=True,
        )
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        with _progress(good, "writing") as bar:
            for row in report.imported:
                assert row.case_id is not None and row.bundle is not None
                _write_atomically(out / bundle_file_name(row.case_id), dump_json(row.bundle))
                bar.update(1)
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(
        f"{_plural(good, 'case')} valid; {_plural(good, 'bundle')} written to {out} "
        "(not stored in the service's database)",
        err=True,
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so no half-written bundle is ever left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- database and sync: db upgrade, worker, sync status|retry|verify -----------------------------


def _instant_option(value: str | None, name: str) -> dt.datetime | None:
    """An option that takes an instant: date, time and time zone; anything else is a usage error that
    shows the accepted form."""
    if value is None:
        return None
    example = "like 2026-01-01T00:00:00Z or 2026-01-01T12:30:00+02:00"
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an instant: give a date, time and time zone, {example}", param_hint=name
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone: {example}", param_hint=name)
    return moment


def _engine(settings: Settings, *, create: bool = False) -> Engine:
    """The database engine. Unless ``create`` (a command that migrates), the database must exist and be
    at the newest schema: a one-line error naming it and `ivclms db upgrade` otherwise, never a
    traceback, and no empty SQLite file left behind."""
    from sqlalchemy.engine import make_url

    from service.db import describe, make_engine

    url = make_url(settings.database_url)
    if not create and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(str(url.database))
        if not database.is_file():
            raise click.ClickException(
                f"no database at {database}: run `ivclms db upgrade` to create it (or point "
                "IVCLMS_DATA_DIR or IVCLMS_DB_URL at the service's database)"
            )
    engine = make_engine(settings)
    if create:
        return engine
    try:
        _check_schema(engine)
    except click.ClickException:
        engine.dispose()
        raise
    except Exception as exc:  # a driver error: the database is down or refuses us; never a traceback
        engine.dispose()
        raise click.ClickException(
            f"database {describe(engine)} not reachable: {type(exc).__name__}"
        ) from None
    return engine


def _check_schema(engine: Engine) -> None:
    from service.db import describe
    from service.store import migrate

    current, head = migrate.current(engine), migrate.head()
    if current is None:
        raise click.ClickException(
            f"database {describe(engine)} has no schema: run `ivclms db upgrade` first"
        )
    if current != head:
        raise click.ClickException(
            f"database {describe(engine)} is at schema {current}, this version needs {head}: "
            "run `ivclms db upgrade`"
        )


@main.group("db")
def db_group() -> None:
    """The service database."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date (Alembic); a database already current is left alone."""
    from sqlalchemy.exc import OperationalError

    from service.db import describe
    from service.store import migrate

    engine = _engine(_settings(), create=True)
    try:
        migrate.upgrade(engine)
        click.echo(f"{describe(engine)}: schema at {migrate.current(engine)}")
    except OperationalError as exc:
        raise click.ClickException(
            f"database {describe(engine)} not reachable: {type(exc).__name__}"
        ) from None
    finally:
        engine.dispose()


@main.command("worker")
@click.option("--once", is_flag=True, help="Process one batch and exit (for cron or a test).")
@click.option("--batch-size", type=click.IntRange(1, 1000), help="Entries claimed per round.")
@click.option(
    "--lease-s",
    type=click.FloatRange(1, None),
    help="Seconds a claim is held before another worker may take it; must exceed the longest transaction.",
)
@click.option(
    "--pull-interval-s",
    type=click.FloatRange(0, None),
    help="Also pull from the FHIR server every this many seconds; 0: never "
    "(default: IVCLMS_PULL_INTERVAL_S, else 0).",
)
def worker_command(
    once: bool, batch_size: int | None, lease_s: float | None, pull_interval_s: float | None
) -> None:
    """Deliver the outbox to the FHIR server (IVCLMS_FHIR_URL) until SIGTERM or SIGINT.

    Runs the database migrations first (unless IVCLMS_DB_MIGRATE=false), then the backfill (`ivclms
    sync backfill`): cases the server has not had are queued once. Several workers may run at
    once against PostgreSQL; each case is sent by one worker at a time, in version order. With a pull
    interval it also merges what changed on the server into the stored cases (`ivclms pull`).
    """
    import threading

    from sqlalchemy.exc import OperationalError

    from service.logs import configure
    from service.store import migrate
    from service.sync import worker as sync_worker
    from service.sync.backfill import backfill

    settings = _settings()
    exports = not settings.export_in_process
    if not settings.sync_enabled and not exports:
        raise click.ClickException(
            "nothing to do: IVCLMS_FHIR_URL is empty (sync is off) and $export jobs run in the web process "
            "(IVCLMS_EXPORT_IN_PROCESS=true); set IVCLMS_FHIR_URL to the hospital's FHIR R4 server"
        )
    configure(settings.log_level, settings.log_format)
    engine = _engine(settings, create=settings.db_migrate)
    client = _fhir_client(settings) if settings.sync_enabled else None
    try:
        if settings.db_migrate:
            try:
                migrate.upgrade(engine)
            except OperationalError as exc:
                raise click.ClickException(f"database not reachable: {type(exc).__name__}") from None
        worker = None
        queued = None
        if client is not None:
            try:  # what was stored while sync was off, or before a move to this server
                queued = backfill(engine, client.base_url)
            except OperationalError as exc:
                raise click.ClickException(f"database not reachable: {type(exc).__name__}") from None
            worker = sync_worker.Worker(
                engine,
                client,
                batch_size=batch_size or settings.sync_batch_size,
                lease_s=lease_s or settings.sync_lease_s,
                poll_s=settings.sync_poll_s,
                max_backoff_s=settings.sync_max_backoff_s,
            )
        pull_every = _pull_interval(settings, pull_interval_s) if worker is not None else 0.0
        if once:
            sent = worker.run_once() if worker is not None else 0
            exported = _export_round(engine, settings) if exports else 0
            if queued is not None:
                click.echo(f"backfill: {queued.queued} cases queued")
            click.echo(f"{sent} entries processed, {exported} exports run")
            if pull_every > 0:
                click.echo(_pull_round(engine, settings).summary())
            return
        stop = threading.Event()
        restore = sync_worker.install_signal_handlers(stop)
        threads = []
        if exports:
            threads.append(
                threading.Thread(target=_export_loop, args=(engine, settings, stop), name="exports")
            )
        if worker is not None:
            threads.append(threading.Thread(target=worker.run_forever, args=(stop,), name="sync"))
        if pull_every > 0:
            threads.append(
                threading.Thread(target=_pull_loop, args=(engine, settings, stop, pull_every), name="pull")
            )
        try:
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                stop.wait(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            restore()
    finally:
        if client is not None:
            client.close()
        engine.dispose()


def _export_round(engine: Any, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from service import bulk_export
    from service.limits import Limits

    files = bulk_export.files_dir(settings.data_dir)
    ttl = timedelta(seconds=settings.export_ttl_s)
    limits = Limits.from_settings(settings)
    return bulk_export.run_pending(engine, files, now=lambda: datetime.now(UTC), ttl=ttl, limits=limits)


def _export_loop(engine: Any, settings: Settings, stop: Any) -> None:
    """Bulk Data $export jobs, when the web process does not run them (IVCLMS_EXPORT_IN_PROCESS=false)."""
    import logging

    log = logging.getLogger("ivclms.export")
    while not stop.is_set():
        try:
            _export_round(engine, settings)
        except Exception as exc:  # the loop outlives a failing round; the job is marked failed or retried
            log.error("export round failed: %s", type(exc).__name__)
        stop.wait(settings.sync_poll_s)


def _pull_interval(settings: Settings, option: float | None) -> float:
    """Seconds between pulls in the worker: the option, else IVCLMS_PULL_INTERVAL_S (0: off)."""
    if option is not None:
        return option
    return float(settings.pull_interval_s or 0.0)


def _pull_intake(engine: Any, settings: Settings) -> Any:
    """Intake as the web service builds it: profile validation when IVCLMS_VALIDATE_INTAKE, queued for
    sync when IVCLMS_FHIR_URL is set."""
    from service.intake import Intake

    check = None
    if settings.validate_intake:
        from service.validation.definitions import PROFILES_DIR
        from service.validation.gate import bundle_check, shared_validator

        base = Path(settings.validation_definitions_dir or DEFAULT_DEFINITIONS)
        check = bundle_check(shared_validator(PROFILES_DIR, base))
    return Intake(engine, enqueue=settings.sync_enabled, check_bundle=check)


def _pull_round(
    engine: Any, settings: Settings, since: dt.datetime | None = None, url: str | None = None
) -> Any:
    """One pull from ``url`` (default IVCLMS_FHIR_URL, with its credentials); versions it stores are
    queued for sync only when IVCLMS_FHIR_URL is set."""
    from service.sync.pull import pull

    client = _fhir_client(settings.replace(fhir_url=url, serving=False) if url else settings)
    try:
        return pull(engine, client, _pull_intake(engine, settings), since=since)
    finally:
        client.close()


def _pull_loop(engine: Any, settings: Settings, stop: Any, interval_s: float) -> None:
    """Pull from the FHIR server every ``interval_s`` (IVCLMS_PULL_INTERVAL_S); a failed round is
    logged by type and retried at the next interval, from the same cursor."""
    import logging

    from service.sync.pull import pull

    log = logging.getLogger("ivclms.pull")
    client = _fhir_client(settings)  # its own Session: the sync thread has another
    intake = _pull_intake(engine, settings)
    try:
        while not stop.is_set():
            try:
                pull(engine, client, intake)
            except Exception as exc:  # the server or the database is down: the next round tries again
                log.error("pull round failed: %s", type(exc).__name__)
            stop.wait(interval_s)
    finally:
        client.close()


@main.command("pull")
@click.option(
    "--from", "server", metavar="URL", help="Base URL of the FHIR server (default: IVCLMS_FHIR_URL)."
)
@click.option(
    "--since",
    metavar="INSTANT",
    help="Only resources updated after this instant, like 2026-01-01T00:00:00Z (default: the last "
    "successful pull from that server, less a minute; the first pull reads everything).",
)
def pull_command(server: str | None, since: str | None) -> None:
    """Merge what changed on the hospital's FHIR server into the stored cases (new case versions).

    Resources with the service's business identifiers replace the elements they carry; plain R4
    resources of synced patients (a follow-up Observation written by the EHR) are recognised and added.
    An element changed on both sides is recorded as a conflict, never overwritten (`ivclms sync status
    --json`, GET /sync/status). Prints counts only. Exits 1 when a case failed (the cursor then stays),
    2 when the server cannot be reached.
    """
    from service.clock import instant
    from service.fhir.client import FhirError
    from service.logs import configure
    from service.store import migrate

    settings = _settings()
    url = server or settings.fhir_url
    if not url:
        raise click.UsageError("give --from URL or set IVCLMS_FHIR_URL")
    moment = _instant_option(since, "--since")
    configure(settings.log_level, settings.log_format)
    engine = _engine(settings, create=settings.db_migrate)
    try:
        if settings.db_migrate:
            migrate.upgrade(engine)
        try:
            report = _pull_round(engine, settings, moment, url)
        except FhirError as exc:
            click.echo(f"FHIR server: {type(exc).__name__} (status {exc.status})", err=True)
            sys.exit(2)
    finally:
        engine.dispose()
    click.echo(report.summary())
    if report.cursor is None:
        click.echo("cursor unchanged: a case failed; the next pull reads the same changes again")
        sys.exit(1)
    click.echo(f"cursor: {instant(report.cursor)}")


@main.group("sync")
def sync_group() -> None:
    """The outbox of changes for the FHIR server: status, retry, backfill, verify."""


@sync_group.command("backfill")
def sync_backfill() -> None:
    """Queue, once, every case the FHIR server (IVCLMS_FHIR_URL) has no delivery record of.

    Cases stored while sync was off, or delivered only to a server used before, get their current
    version queued; a case already queued, delivered or dead-lettered for this server is left alone,
    so running it again queues nothing. `ivclms worker` does the same at start. Prints the count.
    """
    from service.fhir.client import normalized_base_url
    from service.store import migrate
    from service.sync.backfill import backfill

    settings = _settings()
    if not settings.sync_enabled:
        raise click.ClickException("IVCLMS_FHIR_URL is empty: sync is off, there is no server to queue for")
    server = normalized_base_url(settings.fhir_url)
    engine = _engine(settings, create=settings.db_migrate)
    try:
        if settings.db_migrate:
            migrate.upgrade(engine)
        result = backfill(engine, server)
    finally:
        engine.dispose()
    if result.adopted:
        click.echo(f"{result.adopted} outbox entries older than server records attributed to {server}")
    click.echo(f"{result.queued} cases queued for {server}")


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (as GET /sync/status).")
def sync_status(as_json: bool) -> None:
    """Queue depth per state, age of the oldest undelivered change, and the dead entries."""
    import orjson

    from service.sync.status import status

    engine = _engine(_settings())
    try:
        report = status(engine)
    finally:
        engine.dispose()
    if as_json:
        click.echo(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(" ".join(f"{state}={n}" for state, n in report.depth.items()))
    age = report.oldest_pending_age_s
    click.echo("oldest undelivered: " + ("none" if age is None else f"{age:.0f} s"))
    for d in report.dead:
        click.echo(f"dead #{d.id}: case {d.case_ref} v{d.version}, {d.attempts} attempts: {d.last_error}")
    if report.depth["dead"] > len(report.dead):
        click.echo(f"... {report.depth['dead'] - len(report.dead)} more dead entries")


@sync_group.command("retry")
@click.argument("entry_id", type=int, required=False)
@click.option("--all-dead", is_flag=True, help="Retry every dead entry.")
def sync_retry(entry_id: int | None, all_dead: bool) -> None:
    """Send a dead entry again once its cause is fixed (`ivclms sync status` lists them).

    An entry whose case had a later version delivered since becomes `superseded` instead.
    """
    from service.errors import ServiceError
    from service.sync.status import retry, retry_all_dead

    if (entry_id is None) == (not all_dead):
        raise click.UsageError("give an ENTRY_ID or --all-dead")
    engine = _engine(_settings())
    try:
        if all_dead:
            counts = retry_all_dead(engine)
            click.echo(", ".join(f"{n} {state}" for state, n in counts.items()) or "no dead entries")
            return
        assert entry_id is not None
        click.echo(f"entry {entry_id}: {retry(engine, entry_id)}")
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@sync_group.command("verify")
@click.option("--case", "case_ref", metavar="REF", help="Verify one case (its id) instead of all.")
def sync_verify(case_ref: str | None) -> None:
    """Read every synced resource back from the FHIR server and compare it with what was sent.

    Prints one line per missing, drifted, unrecorded or orphaned resource (element paths, no values)
    and a summary; exits 1 when anything is missing, drifted or unrecorded, 2 when the server is down.
    """
    from service.fhir.client import FhirError
    from service.sync.verify import DRIFTED, MISSING, ORPHANED, UNRECORDED, verify

    settings = _settings()
    if not settings.sync_enabled:
        raise click.ClickException("IVCLMS_FHIR_URL is empty: there is no FHIR server to verify against")
    engine = _engine(settings)
    client = _fhir_client(settings)
    try:
        report = verify(engine, client, case_ref=case_ref)
    except FhirError as exc:
        click.echo(f"FHIR server: {type(exc).__name__} (status {exc.status})", err=True)
        sys.exit(2)
    finally:
        client.close()
        engine.dispose()
    for f in report.findings:
        where = f" at {', '.join(f.paths)}" if f.paths else ""
        click.echo(f"{f.kind} {f.resource} (case {f.case_ref} v{f.case_version}){where}")
    kinds = (MISSING, DRIFTED, UNRECORDED, ORPHANED)
    click.echo(
        f"{report.checked} resources of {report.cases} cases checked: "
        + ", ".join(f"{report.count(k)} {k}" for k in kinds)
    )
    if report.drift:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

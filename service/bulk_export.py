"""Bulk Data ``$export`` (FHIR Bulk Data Access v2): jobs queued by the API, run by a worker.

A job snapshots ``transactionTime`` when it is queued and writes every resource of the requested types
as it was at that instant (its newest version up to then, unless that version is a deletion; and only
when that version is after ``_since``), one NDJSON file per type, read in keyset pages and written line
by line, so memory stays flat whatever the size. Resources written after the kick-off are exported from
``resource_versions`` as they were, so what a job holds does not depend on when the worker runs it.
Cancelling marks the job; the runner notices between pages and removes its files. Finished jobs
expire after a set time.

A job holds only what its owner may read: the caller's grant per type (SMART v2 ``?`` restrictions and
readable source systems) is stored with the job at kick-off and applied to every page the runner reads.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import Connection, Engine, delete, func, or_, select, tuple_, update

from service.auth.gate import within
from service.clock import instant
from service.db import READ_ONLY
from service.errors import BadRequest, Gone, Issue, NotFound, TooMany
from service.limits import EXPORT_BYTES_SETTING, EXPORTS_SETTING, Limits
from service.search import RESOURCE_TYPES, Visibility, limit_conditions
from service.store.tables import export_jobs, resource_versions, resources

log = logging.getLogger("ivclms.export")

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
PAGE = 1000
POLL_AFTER_S = 60
"""Retry-After of a kick-off refused while the client's other exports run."""
PATIENT_TYPES = RESOURCE_TYPES
"""Patient-level export: every type of the patient compartment the service holds (all but none)."""


def files_dir(data_dir: Path) -> Path:
    return data_dir / "exports"


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    level: str
    types: tuple[str, ...]
    since: datetime | None
    request_url: str
    principal: str
    transaction_time: datetime
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    progress: int
    manifest_json: str | None
    error: str | None
    access_json: str | None = None
    """Per type, the owner's grant as ``Visibility`` JSON; a type absent (or None): unlimited."""

    def visibility(self, resource_type: str) -> Visibility:
        if self.access_json is None:
            return Visibility()
        found = orjson.loads(self.access_json).get(resource_type)
        return Visibility() if found is None else Visibility.from_json(found)


def access_json(limits: dict[str, Visibility]) -> str | None:
    """What to store with a job: the limited types' grants (None when nothing is limited)."""
    limited = {t: lim.as_json() for t, lim in limits.items() if not lim.unlimited}
    return orjson.dumps(limited).decode() if limited else None


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["types"] = tuple(t for t in data["types"].split(",") if t)
    return Job(**data)


def parse_types(raw: str | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if not raw:
        return tuple(allowed)
    types = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    unknown = [t for t in types if t not in allowed]
    if unknown:
        raise BadRequest([Issue("not-supported", f"_type: {', '.join(unknown)} cannot be exported", "_type")])
    return types


def check_format(raw: str | None) -> None:
    if raw is not None and raw not in OUTPUT_FORMATS:
        raise BadRequest(
            [Issue("not-supported", f"_outputFormat: only {NDJSON} is supported", "_outputFormat")]
        )


def _active(conn: Connection, principal: str) -> int:
    query = select(func.count()).where(
        export_jobs.c.principal == principal, export_jobs.c.state.in_(("queued", "running"))
    )
    return int(conn.execute(query).scalar_one())


def _kept(conn: Connection, principal: str, files: Path, now: datetime) -> tuple[int, datetime | None]:
    """Bytes of files kept for the client's finished, unexpired jobs, and when the first of them expires."""
    rows = conn.execute(
        select(export_jobs.c.id, export_jobs.c.expires_at).where(
            export_jobs.c.principal == principal,
            export_jobs.c.state == "done",
            or_(export_jobs.c.expires_at.is_(None), export_jobs.c.expires_at > now),
        )
    ).all()
    size = sum(_folder_bytes(files / r.id) for r in rows)
    ends = [r.expires_at for r in rows if r.expires_at is not None]
    return size, min(ends) if ends else None


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    except OSError:
        return 0


def kept_bytes(engine: Engine, principal: str, files: Path, now: datetime) -> int:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        return _kept(conn, principal, files, now)[0]


def _check_limits(conn: Connection, principal: str, limits: Limits, files: Path, now: datetime) -> None:
    if conn.dialect.name == "postgresql":
        # Kick-offs of one client one at a time until commit, so simultaneous ones cannot all count the
        # same jobs (SQLite's BEGIN IMMEDIATE already serialises every writer).
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("ivclms-export:" + principal))))
    active = _active(conn, principal)
    if active >= limits.max_active_exports:
        raise TooMany(
            f"this client has {active} exports queued or running; at most {limits.max_active_exports} "
            f"at once ({EXPORTS_SETTING}): wait for one to finish, or cancel one",
            retry_after=POLL_AFTER_S,
        )
    kept, first_expiry = _kept(conn, principal, files, now)
    if kept >= limits.max_export_bytes:
        wait = int((first_expiry - now).total_seconds()) + 1 if first_expiry is not None else POLL_AFTER_S
        raise TooMany(
            f"this client's export files take {kept} bytes; at most {limits.max_export_bytes} are kept "
            f"({EXPORT_BYTES_SETTING}): delete finished exports (DELETE on their status URL) or wait "
            "until they expire",
            retry_after=max(wait, 1),
        )


def kick_off(
    engine: Engine,
    *,
    level: str,
    types: tuple[str, ...],
    since: datetime | None,
    request_url: str,
    principal: str,
    now: datetime,
    access: str | None = None,
    limits: Limits | None = None,
    files: Path | None = None,
) -> str:
    """Queue a job owned by ``principal`` (the caller's owner key) holding what ``access`` allows; with
    ``limits``, refused (TooMany) while the owner has too many jobs queued or running, or too many bytes
    of files kept in ``files``."""
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        if limits is not None and files is not None:
            _check_limits(conn, principal, limits, files, now)
        conn.execute(
            export_jobs.insert().values(
                id=job_id,
                state="queued",
                level=level,
                types=",".join(types),
                since=since,
                request_url=request_url,
                principal=principal,
                transaction_time=now,
                created_at=now,
                progress=0,
                access_json=access,
            )
        )
    return job_id


def get(engine: Engine, job_id: str) -> Job:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        row = conn.execute(select(export_jobs).where(export_jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no export job {job_id} (finished jobs expire)")
    return _job(row)


def check_live(job: Job, now: datetime) -> Job:
    """The job, unless it expired (410 Gone), whether or not its files were purged yet."""
    if job.expires_at is not None and now >= job.expires_at:
        raise Gone(f"export {job.id} expired at {instant(job.expires_at)}; kick off a new one")
    return job


def cancel(engine: Engine, job_id: str, files: Path) -> None:
    """Cancel a queued or running job, or delete a finished one's files (Bulk Data DELETE)."""
    job = get(engine, job_id)
    with engine.begin() as conn:
        if job.state in ("queued", "running"):
            conn.execute(update(export_jobs).where(export_jobs.c.id == job_id).values(state="cancelled"))
        else:
            conn.execute(delete(export_jobs).where(export_jobs.c.id == job_id))
    if job.state not in ("queued", "running"):
        shutil.rmtree(files / job_id, ignore_errors=True)


def claim(engine: Engine) -> Job | None:
    """The oldest queued job, now running; several workers never take the same one."""
    with engine.begin() as conn:
        query = (
            select(export_jobs)
            .where(export_jobs.c.state == "queued")
            .order_by(export_jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = conn.execute(query).first()
        if row is None:
            return None
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == row.id, export_jobs.c.state == "queued")
            .values(state="running")
        )
        if moved.rowcount != 1:
            return None
    return _job(row)


def _pages(engine: Engine, job: Job, resource_type: str) -> Iterator[list[tuple[datetime, str, str]]]:
    after: tuple[datetime, str] | None = None
    while True:
        query = (
            select(resources.c.last_updated, resources.c.id, resources.c.json)
            .where(
                resources.c.resource_type == resource_type,
                resources.c.deleted == 0,
                resources.c.last_updated <= job.transaction_time,
            )
            .order_by(resources.c.last_updated, resources.c.id)
            .limit(PAGE)
        )
        if job.since is not None:
            query = query.where(resources.c.last_updated > job.since)
        if job.level == "patient":
            query = query.where(resources.c.patient_id.is_not(None))
        for condition in limit_conditions(resource_type, job.visibility(resource_type)):
            query = query.where(condition)  # these rows' links are of the exported version: exact
        if after is not None:  # a row-value comparison the (type, last_updated, id) index serves directly
            query = query.where(tuple_(resources.c.last_updated, resources.c.id) > tuple_(*after))
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = [(r.last_updated, r.id, r.json) for r in conn.execute(query)]
        if not rows:
            return
        yield rows
        after = (rows[-1][0], rows[-1][1])


def _changed_after(engine: Engine, job: Job, resource_type: str) -> Iterator[list[tuple[str, str]]]:
    """Resources written after ``transactionTime``: their newest version up to it, in keyset pages by id."""
    current, past, earlier = resources, resource_versions, resource_versions.alias("earlier")
    newest_then = (
        select(func.max(earlier.c.version_id))
        .where(
            earlier.c.resource_type == current.c.resource_type,
            earlier.c.id == current.c.id,
            earlier.c.last_updated <= job.transaction_time,
        )
        .correlate(current)
        .scalar_subquery()
    )
    after: str | None = None
    while True:
        query = (
            select(current.c.id, past.c.json)
            .join(past, (past.c.resource_type == current.c.resource_type) & (past.c.id == current.c.id))
            .where(
                current.c.resource_type == resource_type,
                current.c.last_updated > job.transaction_time,
                past.c.version_id == newest_then,
                past.c.deleted == 0,
            )
            .order_by(current.c.id)
            .limit(PAGE)
        )
        if job.since is not None:
            query = query.where(past.c.last_updated > job.since)
        if job.level == "patient":
            query = query.where(current.c.patient_id.is_not(None))
        limits = job.visibility(resource_type)
        if limits.sources is not None:  # a case never changes source system
            for condition in limit_conditions(resource_type, Visibility((), limits.sources)):
                query = query.where(condition)
        if after is not None:
            query = query.where(current.c.id > after)
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = [(r.id, r.json) for r in conn.execute(query)]
        if not rows:
            return
        # The index links are of the current version: restrictions are checked on the version exported.
        restricted = Visibility(limits.restrictions)
        yield [row for row in rows if restricted.unlimited or within(restricted, orjson.loads(row[1]), None)]
        after = rows[-1][0]


def _texts(engine: Engine, job: Job, resource_type: str) -> Iterator[list[str]]:
    """Pages of the JSON of every resource of the type as it was at ``transactionTime``."""
    for rows in _pages(engine, job, resource_type):
        yield [text for _, _, text in rows]
    for changed in _changed_after(engine, job, resource_type):
        yield [text for _, text in changed]


def _still_running(engine: Engine, job_id: str, progress: int) -> bool:
    with engine.begin() as conn:
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, export_jobs.c.state == "running")
            .values(progress=progress)
        )
        return moved.rowcount == 1


def write_files(
    engine: Engine,
    job: Job,
    folder: Path,
    *,
    on_page: Callable[[int], bool] | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """Write one NDJSON file per type into ``folder``; ``on_page(total)`` False stops (cancelled).

    The files are the owner's only (0600, in a 0700 folder: they hold patient data); more than
    ``max_bytes`` written raises ExportTooLarge."""
    private_dir(folder)
    outputs: list[dict[str, Any]] = []
    total = 0
    written = 0
    for resource_type in job.types:
        path = folder / f"{resource_type}.ndjson"
        count = 0
        with private_file(path) as out:
            for texts in _texts(engine, job, resource_type):
                for text in texts:
                    out.write(text)
                    out.write("\n")
                count += len(texts)
                total += len(texts)
                if max_bytes is not None and written + out.tell() > max_bytes:
                    raise ExportTooLarge(max_bytes)
                if on_page is not None and not on_page(total):
                    return []
            written += out.tell()
        if count:
            outputs.append({"type": resource_type, "file": path.name, "count": count})
        else:
            path.unlink()
    return outputs


class ExportTooLarge(Exception):
    """The files of a job would take its owner past ``IVCLMS_LIMITS_MAX_EXPORT_BYTES``."""

    def __init__(self, budget: int) -> None:
        super().__init__(
            f"the files would take this client past the export bytes it may keep ({EXPORT_BYTES_SETTING}; "
            f"{budget} bytes were left): delete finished exports, or ask for fewer types or a _since"
        )


def private_dir(folder: Path) -> None:
    """``folder`` and the exports folder above it, created readable by the service's user only (0700)."""
    for path in (folder.parent, folder):
        if not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)


def private_file(path: Path) -> TextIO:
    """A file opened for writing, readable and writable by the service's user only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def base_of(request_url: str) -> str:
    """The FHIR base the kick-off was sent to (file URLs in the manifest live under it)."""
    return request_url.split("/$export", 1)[0].removesuffix("/Patient")


def run(
    engine: Engine,
    job: Job,
    files: Path,
    *,
    now: Callable[[], datetime],
    ttl: timedelta,
    limits: Limits | None = None,
) -> None:
    """Run a claimed job to done, failed or (noticed between pages) cancelled; with ``limits``, a job
    whose files would take its owner past the bytes kept fails and leaves no file."""
    folder = files / job.id
    base_url = base_of(job.request_url)
    budget = None
    if limits is not None:
        budget = max(limits.max_export_bytes - kept_bytes(engine, job.principal, files, now()), 0)
    try:
        outputs = write_files(
            engine, job, folder, on_page=lambda n: _still_running(engine, job.id, n), max_bytes=budget
        )
    except (OSError, ExportTooLarge) as error:
        log.error("export %s failed (%s)", job.id, type(error).__name__)
        shutil.rmtree(folder, ignore_errors=True)
        reason = str(error) if isinstance(error, ExportTooLarge) else f"{type(error).__name__} writing files"
        with engine.begin() as conn:
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job.id)
                .values(state="failed", error=reason, finished_at=now())
            )
        return
    finished = now()
    manifest = {
        "transactionTime": instant(job.transaction_time),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": f"{base_url}/bulkfiles/{job.id}/{o['file']}", "count": o["count"]}
            for o in outputs
        ],
        "error": [],
    }
    with engine.begin() as conn:
        moved = conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job.id, export_jobs.c.state == "running")
            .values(
                state="done",
                finished_at=finished,
                expires_at=finished + ttl,
                progress=sum(o["count"] for o in outputs),
                manifest_json=orjson.dumps(manifest).decode(),
            )
        )
    if moved.rowcount != 1:  # cancelled while finishing
        shutil.rmtree(folder, ignore_errors=True)
        with engine.begin() as conn:
            conn.execute(delete(export_jobs).where(export_jobs.c.id == job.id))
    log.info("export %s: %d resources in %d files", job.id, sum(o["count"] for o in outputs), len(outputs))


def purge(engine: Engine, files: Path, now: datetime) -> int:
    """Remove expired and cancelled jobs with their files; returns how many."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(export_jobs.c.id).where(
                or_(export_jobs.c.expires_at < now, export_jobs.c.state == "cancelled")
            )
        ).all()
        ids = [r.id for r in rows]
        if ids:
            conn.execute(delete(export_jobs).where(export_jobs.c.id.in_(ids)))
    for job_id in ids:
        shutil.rmtree(files / job_id, ignore_errors=True)
    return len(ids)


def run_pending(
    engine: Engine,
    files: Path,
    *,
    now: Callable[[], datetime],
    ttl: timedelta,
    limits: Limits | None = None,
) -> int:
    """One worker pass: purge, then run every queued job; returns the number run."""
    purge(engine, files, now())
    done = 0
    while (job := claim(engine)) is not None:
        run(engine, job, files, now=now, ttl=ttl, limits=limits)
        done += 1
    return done

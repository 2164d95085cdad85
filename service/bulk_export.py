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
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, or_, select, tuple_, update

from service.auth.gate import within
from service.clock import instant
from service.db import READ_ONLY
from service.errors import BadRequest, Issue, NotFound
from service.search import RESOURCE_TYPES, Limits, limit_conditions
from service.store.tables import export_jobs, resource_versions, resources

log = logging.getLogger("ivclms.export")

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
PAGE = 1000
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
    """Per type, the owner's grant as ``Limits`` JSON; a type absent (or None): unlimited."""

    def limits(self, resource_type: str) -> Limits:
        if self.access_json is None:
            return Limits()
        found = orjson.loads(self.access_json).get(resource_type)
        return Limits() if found is None else Limits.from_json(found)


def access_json(limits: dict[str, Limits]) -> str | None:
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
) -> str:
    """Queue a job owned by ``principal`` (the caller's owner key) holding what ``access`` allows."""
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
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
        for condition in limit_conditions(resource_type, job.limits(resource_type)):
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
        limits = job.limits(resource_type)
        if limits.sources is not None:  # a case never changes source system
            for condition in limit_conditions(resource_type, Limits((), limits.sources)):
                query = query.where(condition)
        if after is not None:
            query = query.where(current.c.id > after)
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = [(r.id, r.json) for r in conn.execute(query)]
        if not rows:
            return
        # The index links are of the current version: restrictions are checked on the version exported.
        restricted = Limits(limits.restrictions)
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
) -> list[dict[str, Any]]:
    """Write one NDJSON file per type into ``folder``; ``on_page(total)`` False stops (cancelled)."""
    folder.mkdir(parents=True, exist_ok=True)
    outputs: list[dict[str, Any]] = []
    total = 0
    for resource_type in job.types:
        path = folder / f"{resource_type}.ndjson"
        count = 0
        with path.open("w", encoding="utf-8") as out:
            for texts in _texts(engine, job, resource_type):
                for text in texts:
                    out.write(text)
                    out.write("\n")
                count += len(texts)
                total += len(texts)
                if on_page is not None and not on_page(total):
                    return []
        if count:
            outputs.append({"type": resource_type, "file": path.name, "count": count})
        else:
            path.unlink()
    return outputs


def base_of(request_url: str) -> str:
    """The FHIR base the kick-off was sent to (file URLs in the manifest live under it)."""
    return request_url.split("/$export", 1)[0].removesuffix("/Patient")


def run(engine: Engine, job: Job, files: Path, *, now: Callable[[], datetime], ttl: timedelta) -> None:
    """Run a claimed job to done, failed or (noticed between pages) cancelled."""
    folder = files / job.id
    base_url = base_of(job.request_url)
    try:
        outputs = write_files(engine, job, folder, on_page=lambda n: _still_running(engine, job.id, n))
    except OSError as error:
        log.error("export %s failed (%s)", job.id, type(error).__name__)
        with engine.begin() as conn:
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job.id)
                .values(state="failed", error=f"{type(error).__name__} writing files", finished_at=now())
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


def run_pending(engine: Engine, files: Path, *, now: Callable[[], datetime], ttl: timedelta) -> int:
    """One worker pass: purge, then run every queued job; returns the number run."""
    purge(engine, files, now())
    done = 0
    while (job := claim(engine)) is not None:
        run(engine, job, files, now=now, ttl=ttl)
        done += 1
    return done

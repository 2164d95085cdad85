"""Bulk Data ``$export``: kick-off (202), status polling, file download, cancel (thin layer).

The export itself runs outside the request: in ``ivclms worker`` processes, or, for embedded use
(``IVCLMS_EXPORT_IN_PROCESS``), in a background thread of this process started at kick-off.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Response, g, request, send_file
from werkzeug.http import http_date

from service import bulk_export
from service.api import links
from service.api.context import ctx
from service.api.params import parse_instant
from service.api.responses import fhir_response
from service.auth import gate
from service.errors import BadRequest, Forbidden, Issue, NotFound
from service.outcome import operation_outcome
from service.search import RESOURCE_TYPES

bp = Blueprint("bulk", __name__, url_prefix="/fhir")
_runner_lock = threading.Lock()


def files_dir() -> Path:
    return bulk_export.files_dir(ctx().settings.data_dir)


def _run_in_background() -> None:
    """Drain the queue in a daemon thread; one at a time per process."""
    app = ctx()
    if not _runner_lock.acquire(blocking=False):
        return

    def work() -> None:
        try:
            ttl = timedelta(seconds=app.settings.export_ttl_s)
            bulk_export.run_pending(
                app.engine,
                bulk_export.files_dir(app.settings.data_dir),
                now=app.intake.clock,
                ttl=ttl,
                limits=app.intake.limits,
            )
        finally:
            _runner_lock.release()

    threading.Thread(target=work, name="ivclms-export", daemon=True).start()


def _kick_off(level: str) -> Response:
    if "respond-async" not in request.headers.get("Prefer", ""):
        raise BadRequest([Issue("invalid", "Prefer: respond-async is required for $export", "Prefer")])
    bulk_export.check_format(request.args.get("_outputFormat"))
    types = bulk_export.parse_types(request.args.get("_type"), RESOURCE_TYPES)
    # r on each type (403 otherwise); the job keeps what of each the caller may read and holds no more.
    limits = {resource_type: gate.limits(g.principal, resource_type) for resource_type in types}
    raw_since = request.args.get("_since")
    since = parse_instant(raw_since, "_since") if raw_since else None
    job_id = bulk_export.kick_off(
        ctx().engine,
        level=level,
        types=types,
        since=since,
        request_url=links.this_url(),
        principal=g.principal.owner,
        now=ctx().intake.clock(),
        access=bulk_export.access_json(limits),
        limits=ctx().intake.limits,
        files=files_dir(),
    )
    if ctx().settings.export_in_process:
        _run_in_background()
    status_url = links.absolute(f"/fhir/bulkstatus/{job_id}")
    return Response(status=202, headers={"Content-Location": status_url})


@bp.get("/$export")
def export_system() -> Response:
    return _kick_off("system")


@bp.get("/Patient/$export")
def export_patients() -> Response:
    return _kick_off("patient")


def _own(job: bulk_export.Job) -> bulk_export.Job:
    if job.principal != g.principal.owner:
        raise NotFound(f"no export job {job.id}")  # another client's job does not exist for this one
    return job


def _live(job: bulk_export.Job) -> bulk_export.Job:
    """An expired job is 410 on every read, whether or not a worker purged it yet."""
    return bulk_export.check_live(job, ctx().intake.clock())


@bp.get("/bulkstatus/<job_id>")
def export_status(job_id: str) -> Response:
    job = _live(_own(bulk_export.get(ctx().engine, job_id)))
    if job.state in ("queued", "running"):
        return Response(
            status=202, headers={"X-Progress": f"{job.state}: {job.progress} resources", "Retry-After": "2"}
        )
    if job.state == "done" and job.manifest_json:
        headers = {}
        if job.expires_at is not None:
            headers["Expires"] = http_date(job.expires_at)
        return Response(job.manifest_json, status=200, content_type="application/json", headers=headers)
    if job.state == "cancelled":
        raise NotFound(f"export job {job_id} was cancelled")
    issue = Issue("exception", f"the export failed: {job.error or 'unknown error'}")
    return fhir_response(operation_outcome([issue]), 500)


@bp.delete("/bulkstatus/<job_id>")
def export_cancel(job_id: str) -> Response:
    _own(bulk_export.get(ctx().engine, job_id))
    bulk_export.cancel(ctx().engine, job_id, files_dir())
    return Response(status=202)


@bp.get("/bulkfiles/<job_id>/<name>")
def export_file(job_id: str, name: str) -> Response:
    job = _live(_own(bulk_export.get(ctx().engine, job_id)))
    resource_type = name.removesuffix(".ndjson")
    if job.state != "done" or resource_type not in job.types or not name.endswith(".ndjson"):
        raise NotFound(f"no file {name} in export {job_id}")
    current = gate.limits(g.principal, resource_type)  # r on the type, as at kick-off
    if not current.unlimited and current != job.visibility(resource_type):
        raise Forbidden(
            f"{name} was exported under another grant than this access token's; kick off a new export"
        )
    path = files_dir() / job_id / name
    if not path.is_file():
        raise NotFound(f"no file {name} in export {job_id}")
    return send_file(path, mimetype=bulk_export.NDJSON, conditional=True)

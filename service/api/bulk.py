"""Bulk Data ``$export``: kick-off (202), status polling, file download, cancel (thin layer).

The export itself runs outside the request: in ``ivclms worker`` processes, or, for embedded use
(``IVCLMS_EXPORT_IN_PROCESS``), in a background thread of this process started at kick-off.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, request, send_file
from werkzeug.http import http_date

from service import bulk_export
from service import search as searching
from service.api import links
from service.api.context import ctx
from service.api.params import parse_instant
from service.api.responses import fhir_response
from service.auth import gate
from service.errors import BadRequest, Forbidden, Gone, Issue, NotFound
from service.outcome import operation_outcome
from service.search import RESOURCE_TYPES, Visibility

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


def _strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def _parameters() -> tuple[list[tuple[str, str]], BadRequest | None]:
    """The kick-off's parameters: the query string, and for a POST a FHIR Parameters body (the IG: "A
    server SHALL support GET requests and MAY support POST requests that supply parameters using the
    FHIR Parameters Resource"). A bad body is returned, to be raised once the scopes are checked (a
    caller without them gets 403 whatever it posts)."""
    params = [(k, v) for k, values in request.args.lists() for v in values]
    if request.method != "POST":
        return params, None
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return params, BadRequest(
            [Issue("invalid", "a POST kick-off takes a FHIR Parameters resource", "Parameters")]
        )
    posted = []
    for index, item in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return params, BadRequest([Issue("invalid", "each parameter needs a name", where)])
        value = next((v for k, v in item.items() if k.startswith("value")), None)
        if isinstance(value, dict):  # valueReference
            value = value.get("reference")
        if not isinstance(value, str) or not value:
            message = f"{item['name']}: a value[x] string or reference"
            return params, BadRequest([Issue("invalid", message, where)])
        if item["name"] == "patient":
            kind, _, value = value.rpartition("/")
            if kind.rsplit("/", 1)[-1] not in ("", "Patient") or not value:
                return params, BadRequest([Issue("invalid", "patient: a reference to a Patient", where)])
        posted.append((item["name"], value))
    return params + posted, None


def _default_types() -> tuple[str, ...]:
    """Without ``_type``: every case type, and Provenance when the caller may read it (the IG: "the
    server SHALL return all supported resources within the scope of the client authorization")."""
    try:
        provenance = gate.access(g.principal, "Provenance", "r").granted
    except Forbidden:
        provenance = False
    return (*RESOURCE_TYPES, "Provenance") if provenance else RESOURCE_TYPES


def _visible_group(group_id: str) -> bulk_export.Group:
    """A Group the caller may read: r on Group (403 otherwise), and the source system's Group only for
    a client bound to source systems (the cohort and other sources' Groups do not exist for it)."""
    gate.require(g.principal, "Group", "r")
    group = bulk_export.find_group(ctx().engine, group_id)
    readable = g.principal.readable_sources
    if readable is not None and (group.source is None or not g.principal.may_read_source(group.source)):
        raise NotFound(f"no Group {group_id}")
    return group


def _members_visibility() -> Visibility | None:
    try:
        return gate.limits(g.principal, "Patient")
    except Forbidden:
        return None


def _kick_off(level: str, group: bulk_export.Group | None = None) -> Response:
    if "respond-async" not in request.headers.get("Prefer", ""):
        raise BadRequest([Issue("invalid", "Prefer: respond-async is required for $export", "Prefer")])
    strict = _strict()
    params, bad_body = _parameters()
    asked = bulk_export.parse_kick_off(params, level=level, strict=strict, post=request.method == "POST")
    bulk_export.check_format(asked.output_format)
    if asked.types:
        types = bulk_export.parse_types(asked.types, bulk_export.EXPORT_TYPES)
    else:
        types = _default_types()
    # r on each type (403 otherwise); the job keeps what of each the caller may read and holds no more.
    limits = {resource_type: gate.limits(g.principal, resource_type) for resource_type in types}
    if bad_body is not None:
        raise bad_body
    since = parse_instant(asked.since, "_since") if asked.since else None
    warnings = list(asked.warnings)
    filters = bulk_export.parse_type_filters(asked.type_filters, types, strict=strict, warnings=warnings)
    elements = bulk_export.check_elements(asked.elements, types, strict=strict, warnings=warnings)
    group_source = None if group is None else group.source
    patients = asked.patients
    if patients:
        seen = _members_visibility() or Visibility((), g.principal.readable_sources)
        known = bulk_export.known_patients(ctx().engine, patients, seen, group_source)
        unknown = [p for p in patients if p not in known]
        if unknown:
            where = "not members of the Group" if group is not None else "not found"
            message = f"Patient/{', Patient/'.join(unknown)}: {where}"
            if strict or not known:
                raise BadRequest([Issue("not-found", f"patient: {message}", "patient")])
            warnings.append(("patient", f"{message}; the others are exported"))
        patients = tuple(p for p in patients if p in known)
    options = bulk_export.Options(
        type_filters=filters,
        elements=elements,
        patients=patients,
        group_source=group_source,
        warnings=tuple(warnings),
        requires_token=ctx().verifier is not None,
    )
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
        options=options,
    )
    if ctx().settings.export_in_process:
        _run_in_background()
    status_url = links.absolute(f"/fhir/bulkstatus/{job_id}")
    # The IG: "Optionally, a FHIR OperationOutcome resource in the body in JSON format" (never HTML).
    issues = [Issue("informational", f"export {job_id} queued; poll {status_url}", severity="information")]
    issues += [Issue("not-supported", f"{n}: {m} (ignored)", n, severity="warning") for n, m in warnings]
    return fhir_response(operation_outcome(issues), 202, {"Content-Location": status_url})


@bp.route("/$export", methods=["GET", "POST"])
def export_system() -> Response:
    return _kick_off("system")


@bp.route("/Patient/$export", methods=["GET", "POST"])
def export_patients() -> Response:
    return _kick_off("patient")


@bp.route("/Group/<group_id>/$export", methods=["GET", "POST"])
def export_group(group_id: str) -> Response:
    return _kick_off("group", _visible_group(group_id))


@bp.get("/Group/<group_id>")
def read_group(group_id: str) -> Response:
    group = _visible_group(group_id)
    return fhir_response(bulk_export.group_resource(ctx().engine, group, _members_visibility()))


@bp.get("/Group")
def search_groups() -> Response:
    return group_search(list(request.args.items(multi=True)))


GROUP_PARAMS = ("_id", "_count", "_offset", "_format")


def _whole(name: str, value: str, high: int) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 6) or int(value) > high:
        raise BadRequest([Issue("invalid", f"must be a whole number from 0 to {high}", name)])
    return int(value)


def group_search(params: list[tuple[str, str]]) -> Response:
    """Every Group the caller may read. ``_id`` narrows; ``_count`` pages (R4 search.html: servers
    "SHALL NOT return more resources than requested"), ``_count=0`` is the total alone; ``_offset``
    is where a ``next`` link starts; other parameters are ignored with a warning entry, or 400 with
    ``Prefer: handling=strict`` (as every other type answers them; outside review of issue 13)."""
    gate.require(g.principal, "Group", "r")
    wanted: set[str] | None = None
    count: int | None = None
    offset = 0
    ignored: list[str] = []
    for name, value in params:
        if name == "_id":
            wanted = set(value.split(",")) if wanted is None else wanted & set(value.split(","))
        elif name == "_count":
            count = _whole(name, value, searching.COUNT_MAX)
        elif name == "_offset":
            offset = _whole(name, value, 10**6)
        elif name not in GROUP_PARAMS:
            if _strict():
                raise BadRequest([Issue("not-supported", f"{name}: unknown or unsupported for Group", name)])
            ignored.append(name)
    members = _members_visibility()
    found = [
        group
        for group in bulk_export.groups(ctx().engine)
        if (wanted is None or group.id in wanted)
        and (
            g.principal.readable_sources is None
            or (group.source is not None and g.principal.may_read_source(group.source))
        )
    ]
    end = len(found) if count is None else offset + count
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{links.fhir_base()}/Group/{group.id}",
            "resource": bulk_export.group_resource(ctx().engine, group, members),
            "search": {"mode": "match"},
        }
        for group in found[offset:end]
    ]
    if ignored:
        issue = Issue(
            "not-supported", f"ignored unknown search parameters: {', '.join(ignored)}", severity="warning"
        )
        entries.append({"resource": operation_outcome([issue]), "search": {"mode": "outcome"}})
    link = [{"relation": "self", "url": links.this_url()}]
    if count and end < len(found):
        kept = [(n, v) for n, v in params if n in GROUP_PARAMS and n != "_offset"]
        link.append(
            {
                "relation": "next",
                "url": f"{links.fhir_base()}/Group?{urlencode([*kept, ('_offset', str(end))])}",
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": link,
    }
    if count != 0:
        bundle["entry"] = entries
    return fhir_response(bundle)


def _own(job: bulk_export.Job) -> bulk_export.Job:
    if job.principal != g.principal.owner:
        raise NotFound(f"no export job {job.id}")  # another client's job does not exist for this one
    return job


def _live(job: bulk_export.Job) -> bulk_export.Job:
    """An expired job is 410 on every read, whether or not a worker purged it yet; the read purges it
    (the files of an expired export leave the disk then, not at the next kick-off)."""
    now = ctx().intake.clock()
    try:
        return bulk_export.check_live(job, now)
    except Gone:
        bulk_export.purge(ctx().engine, files_dir(), now)
        raise


@bp.get("/bulkstatus/<job_id>")
def export_status(job_id: str) -> Response:
    job = _live(_own(bulk_export.get(ctx().engine, job_id)))
    if job.state in ("queued", "running"):
        progress = f"{job.state}: {job.progress} resources"
        return Response(
            status=202, headers={"X-Progress": progress, "Retry-After": str(bulk_export.STATUS_AFTER_S)}
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
    outcomes = name == bulk_export.OUTCOMES and bool(job.options.warnings)
    if (
        job.state != "done"
        or (resource_type not in job.types and not outcomes)
        or not name.endswith(".ndjson")
    ):
        raise NotFound(f"no file {name} in export {job_id}")
    # r on the type, as at kick-off (the warnings file holds only what the client asked)
    current = Visibility() if outcomes else gate.limits(g.principal, resource_type)
    if not current.unlimited and current != job.visibility(resource_type):
        raise Forbidden(
            f"{name} was exported under another grant than this access token's; kick off a new export"
        )
    path = files_dir() / job_id / name
    if not path.is_file():
        raise NotFound(f"no file {name} in export {job_id}")
    return send_file(path, mimetype=bulk_export.NDJSON, conditional=True)

"""``/cases``: case JSON in, stored versions out (thin: parse, call ``service.intake``, respond)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Response, g, request, url_for
from werkzeug.http import http_date

from service.api.body import CASE_JSON, CSV_TYPES, json_body, text_body
from service.api.context import ctx
from service.api.idempotency import idempotent
from service.api.params import int_arg, parse_instant
from service.api.writes import case_writes, require_writer
from service.auth import gate
from service.auth.gate import require_source_write
from service.case_files import import_rows
from service.clock import instant
from service.errors import BadRequest, Issue, Unprocessable
from service.fhir.client import FHIR_JSON
from service.intake import OnChange
from service.store.cases import CaseRow, VersionRow

bp = Blueprint("cases", __name__)

CASE_TYPE = "Patient"
"""The SMART scope resource type that guards cases (a case is one patient's record)."""
PAGE_DEFAULT = 50
PAGE_MAX = 500
_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


def _author() -> str:
    return str(g.principal.subject)[:256]  # case_versions.author is 256 characters


def _case_headers(case: CaseRow, version: VersionRow) -> dict[str, str]:
    return {
        "Location": url_for("cases.read_case", ref=case.id),
        "ETag": f'W/"{case.version}"',
        "X-Case-Status": version.status,
        "Last-Modified": http_date(version.recorded_at),
    }


def _case_response(case: CaseRow, version: VersionRow, status: int) -> Response:
    fhir = request.accept_mimetypes.best_match(["application/json", FHIR_JSON]) == FHIR_JSON
    body = version.bundle_json if fhir else version.case_json
    return Response(
        body,
        status=status,
        headers=_case_headers(case, version),
        content_type=FHIR_JSON if fhir else "application/json",
    )


@bp.post("/cases")
@idempotent
def create_case() -> Response:
    require_writer(g.principal, "c")
    prepared = ctx().intake.prepare(json_body(CASE_JSON))
    accepted = ctx().intake.submit(
        prepared, _author(), on_change=OnChange.CONFLICT, authorize=case_writes(g.principal)
    )
    return _case_response(accepted.case, accepted.version, 201 if accepted.created else 200)


def _if_match() -> int | None:
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    found = _ETAG.match(header.strip())
    if not found:
        raise BadRequest([Issue("invalid", 'If-Match must be an ETag like W/"3"', "If-Match")])
    return int(found.group(1))


@bp.put("/cases/<ref>")
@idempotent
def update_case(ref: str) -> Response:
    require_writer(g.principal, "u")
    if_match = _if_match()
    prepared = ctx().intake.prepare(json_body(CASE_JSON))
    # The body names the source: refused before the case is looked up, whether or not it exists.
    require_source_write(g.principal, prepared.case["source_system"])
    accepted = ctx().intake.update(ref, prepared, _author(), if_match, authorize=case_writes(g.principal))
    return _case_response(accepted.case, accepted.version, 200)


@bp.delete("/cases/<ref>")
def retract_case(ref: str) -> Response:
    """Withdraw as entered-in-error: kept, versioned, and sent to the FHIR server marked so."""
    require_writer(g.principal, "d")
    accepted = ctx().intake.retract(ref, _author(), _if_match(), authorize=case_writes(g.principal))
    return _case_response(accepted.case, accepted.version, 200)


@bp.get("/cases/<ref>")
def read_case(ref: str) -> Response:
    gate.require_case_types(g.principal, "r")
    version = int_arg("version", None, 1, 2**31 - 1)
    case, found = ctx().intake.get(ref)
    gate.require_case_read(g.principal, case.source_system, ref)  # before a version's 404 says more
    if version is not None:
        case, found = ctx().intake.get(ref, version)
    return _case_response(case, found, 200)


@bp.get("/cases/<ref>/history")
def case_history(ref: str) -> Response:
    gate.require_case_types(g.principal, "r")
    case, _ = ctx().intake.get(ref)
    gate.require_case_read(g.principal, case.source_system, ref)
    versions = ctx().intake.history(ref)
    body = {
        "id": ref,
        "versions": [
            {
                "version": v.version,
                "status": v.status,
                "recorded": instant(v.recorded_at),
                "author": v.author,
                "href": url_for("cases.read_case", ref=ref, version=v.version),
            }
            for v in versions
        ],
    }
    return Response(orjson.dumps(body), content_type="application/json")


def _cursor(text: str) -> tuple[datetime, str]:
    try:
        stamp, ref = base64.urlsafe_b64decode(text.encode()).decode().split("|", 1)
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError(stamp)  # the UTC column refuses a naive time (it was a 500)
        return moment.astimezone(UTC), ref
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadRequest([Issue("invalid", "cursor: not a cursor this service gave out", "cursor")]) from None


def _since() -> datetime | None:
    raw = request.args.get("since")
    return None if raw is None else parse_instant(raw, "since")


SYNC_STATES = ("pending", "sending", "done", "dead", "superseded")


@bp.get("/cases")
def list_cases() -> Response:
    gate.require_case_types(g.principal, "s")
    limit = int_arg("_count", PAGE_DEFAULT, 1, PAGE_MAX)
    assert limit is not None
    sync = request.args.get("sync")
    if sync is not None and sync not in SYNC_STATES:
        raise BadRequest([Issue("invalid", f"sync: must be one of {', '.join(SYNC_STATES)}", "sync")])
    cursor = request.args.get("cursor")
    after = _cursor(cursor) if cursor else None
    rows, states = ctx().intake.page(
        limit=limit, after=after, since=_since(), sync_state=sync, sources=g.principal.readable_sources
    )
    body: dict[str, Any] = {
        "cases": [
            {
                "id": r.id,
                "source_system": r.source_system,
                "case_id": r.case_id,
                "version": r.version,
                "status": r.status,
                "updated": instant(r.updated_at),
                "sync": states.get(r.id),
                "href": url_for("cases.read_case", ref=r.id),
            }
            for r in rows
        ]
    }
    if len(rows) == limit:
        last = rows[-1]
        token = base64.urlsafe_b64encode(f"{last.updated_at.isoformat()}|{last.id}".encode()).decode()
        args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "cursor"}
        args["cursor"] = token
        body["next"] = url_for("cases.list_cases", **args)
    return Response(orjson.dumps(body), content_type="application/json")


@bp.post("/cases/import")
@idempotent
def import_cases() -> Response:
    """A CSV case series, all rows or none: any bad row, or one the caller may not write, rejects the
    file (new cases need ``c``, changed ones ``u``: see ``service.api.writes``)."""
    require_writer(g.principal, "c", "u")
    intake = ctx().intake
    report = import_rows(text_body(CSV_TYPES), instant(intake.clock()), intake.limits)
    if report.rejected:
        raise Unprocessable([issue for row in report.rejected for issue in row.issues])
    batch = [intake.prepared(row.case, row.bundle) for row in report.imported if row.case and row.bundle]
    if not batch:
        raise Unprocessable([Issue("required", "the file holds no data rows")])
    accepted = intake.submit_many(
        batch, _author(), on_change=OnChange.NEW_VERSION, authorize=case_writes(g.principal)
    )
    body = {
        "imported": len(accepted),
        "created": sum(a.created for a in accepted),
        "updated": sum(a.changed and not a.created for a in accepted),
        "unchanged": sum(not a.changed for a in accepted),
        "cases": [
            {
                "row": row.number,
                "case_id": a.case.case_id,
                "id": a.case.id,
                "version": a.case.version,
                "href": url_for("cases.read_case", ref=a.case.id),
            }
            for row, a in zip(report.imported, accepted, strict=True)
        ],
    }
    return Response(orjson.dumps(body), status=200, content_type="application/json")

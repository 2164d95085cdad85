"""``/registry``: standardized records for registries (CSV, NDJSON) and the case-series summary.

Thin: parse the query, call ``service.registry``, respond. Who may pull what (roles, consent, source
systems, the filters of de-identified pulls) is ``service.registry.access``. The extracts stream row
by row; the first page is read before the response starts, so an unreachable database is still a 503
OperationOutcome.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from service.api.context import ctx
from service.api.openapi import FHIR, JSON, OUTCOME, describe
from service.api.params import parse_instant
from service.auth import Principal
from service.clock import instant
from service.codes import table
from service.errors import BadRequest, Issue, ServiceError
from service.registry import access, extract, source, summary
from service.registry import deidentify as deid

bp = Blueprint("registry", __name__)
log = logging.getLogger("ivclms.registry")

MAX_CASES = source.MAX_REFS
KEY_SETTING = "registry_pseudonym_key"
"""The Settings attribute (``IVCLMS_REGISTRY_PSEUDONYM_KEY``) that keys de-identified pseudonyms."""
CSV_TYPE = "text/csv; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
HTML_TYPE = "text/html; charset=utf-8"

FILTERS = ("since", "consent", "institution", "segment", "diagnosed_from", "diagnosed_to", "case")
REPEATABLE = frozenset({"consent", "institution", "segment", "case"})
EXTRACT_PARAMS = (*FILTERS, "deidentified", "derived")
SUMMARY_PARAMS = (*FILTERS, "format")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR = re.compile(r"^\d{4}$")


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest([Issue("invalid", f"{name}: {message}", name)])


def check_names(allowed: tuple[str, ...], repeatable: frozenset[str] = REPEATABLE) -> None:
    """400 for a parameter the route does not know (never silently ignored: a misspelt filter would
    widen what comes back) and for one given twice that is not ``repeatable``."""
    for name in request.args:
        if name not in allowed:
            raise _bad(name, f"unknown parameter; allowed: {', '.join(allowed)}")
        if name not in repeatable and len(request.args.getlist(name)) > 1:
            raise _bad(name, "may be given once")


def _codes(name: str, table_name: str) -> tuple[str, ...]:
    values = tuple(request.args.getlist(name))
    allowed = table(table_name).keys()
    for value in values:
        if value not in allowed:
            raise _bad(name, f"must be one of {', '.join(allowed)}")
    return values


def _date(name: str) -> dt.date | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        if not _DATE.match(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _bad(name, "must be a date YYYY-MM-DD") from None


def _year(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not _YEAR.match(raw) or raw == "0000":
        raise _bad(name, "must be a year YYYY in de-identified pulls (they show the diagnosis year only)")
    return int(raw)


def _bool(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise _bad(name, "must be true or false")
    return raw == "true"


def _refs() -> tuple[str, ...]:
    raw = request.args.getlist("case")
    if len(raw) > MAX_CASES:
        raise _bad("case", f"at most {MAX_CASES} cases per request")
    refs = []
    for value in raw:
        try:
            refs.append(str(uuid.UUID(value)))
        except ValueError:
            raise _bad("case", "must be a case id (the uuid of /cases/{id})") from None
    return tuple(refs)


def _since(key: bytes | None) -> dt.datetime | None:
    raw = request.args.get("since")
    if raw is None:
        return None
    if key is None:
        return parse_instant(raw, "since")
    signed = deid.cursor_instant(raw, key) if key else None
    if signed is None:
        raise _bad(
            "since",
            "de-identified pulls take the X-Extract-As-Of value of an earlier de-identified extract "
            "by this client (a signed cursor), not an instant",
        )
    return parse_instant(signed, "since")


def summary_filters(principal: Principal, key: bytes | None) -> source.Filters:
    """The request's filters; ``key`` (the recipient's pseudonym key, ``b""`` when none is configured)
    means the de-identified rules apply, None the identified ones."""
    deidentified = key is not None
    if deidentified:
        for name, why in access.REFUSED_WHEN_DEIDENTIFIED.items():
            if name in request.args:
                raise _bad(name, f"not available in de-identified pulls: {why}")
    institutions = tuple(request.args.getlist("institution"))
    if any(not i.strip() or len(i) > 512 for i in institutions):
        raise _bad("institution", "must be 1 to 512 characters")
    filters = source.Filters(
        since=_since(key),
        refs=_refs(),
        institutions=institutions,
        segments=_codes("segment", "ivc-segment"),
        diagnosed_from=None if deidentified else _date("diagnosed_from"),
        diagnosed_to=None if deidentified else _date("diagnosed_to"),
        diagnosed_from_year=_year("diagnosed_from") if deidentified else None,
        diagnosed_to_year=_year("diagnosed_to") if deidentified else None,
        consent=access.consent(principal, _codes("consent", "consent")),
        sources=access.sources(principal),
    )
    dates = (filters.diagnosed_from, filters.diagnosed_to)
    years = (filters.diagnosed_from_year, filters.diagnosed_to_year)
    if (dates[0] and dates[1] and dates[0] > dates[1]) or (years[0] and years[1] and years[0] > years[1]):
        raise _bad("diagnosed_from", "must not be after diagnosed_to")
    return filters


def pseudonym_key() -> bytes:
    """The master HMAC key of de-identified pseudonyms (empty: de-identified pulls are refused)."""
    return str(getattr(ctx().settings, KEY_SETTING, "") or "").encode()


def recipient_key(principal: Principal) -> bytes:
    """The caller's own pseudonym key (``b""`` when no master key is configured)."""
    master = pseudonym_key()
    return deid.recipient_key(master, principal.client or principal.owner) if master else b""


def _not_configured() -> ServiceError:
    message = (
        "deidentified: de-identified extracts are not configured on this server "
        "(IVCLMS_REGISTRY_PSEUDONYM_KEY is not set)"
    )
    return ServiceError([Issue("not-supported", message, "deidentified")], status=501)


def _options(principal: Principal) -> extract.Options:
    deidentified = access.extract_is_deidentified(principal, _bool("deidentified", False))
    derived = _bool("derived", True)
    if not deidentified:
        return extract.Options(derived=derived)
    key = recipient_key(principal)
    if not key:
        raise _not_configured()
    return extract.Options(derived=derived, deidentified=True, key=key)


class ExtractStopped(RuntimeError):
    """A streamed extract failed after its first bytes were sent; the client sees a cut connection."""


def _guarded(lines: Iterator[str]) -> Iterator[str]:
    """The rest of a stream; a failure is logged by type and place only (its message can quote case
    data) and ends the response without its final chunk, so the client knows it is incomplete."""
    try:
        yield from lines
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = ", ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:])
        log.error("registry extract stopped: %s at %s", type(exc).__name__, where)
        raise ExtractStopped("registry extract stopped; see the service log") from None


def _stream(lines: Iterator[str], primed: int, content_type: str, filename: str, as_of: str) -> Response:
    # Read the first page now: a database failure becomes a 503 before any byte is sent.
    head = list(itertools.islice(lines, primed))
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Extract-As-Of": as_of,
        "Cache-Control": "no-store",
    }
    return Response(itertools.chain(head, _guarded(lines)), content_type=content_type, headers=headers)


def _extract() -> tuple[Iterator[dict[str, Any]], extract.Options, str]:
    principal: Principal = g.principal
    check_names(EXTRACT_PARAMS)
    options = _options(principal)
    filters = summary_filters(principal, options.key if options.deidentified else None)
    as_of = instant(ctx().intake.clock())
    if options.deidentified:
        as_of = deid.cursor(as_of, options.key)
    cases = (found.case for found in source.stream_cases(ctx().engine, filters))
    return cases, options, as_of


@bp.get("/registry/cases.csv")
def registry_csv() -> Response:
    cases, options, as_of = _extract()
    lines = extract.csv_lines(cases, options)
    return _stream(lines, 2, CSV_TYPE, "ivclms-registry.csv", as_of)


@bp.get("/registry/cases.ndjson")
def registry_ndjson() -> Response:
    cases, options, as_of = _extract()
    lines = extract.ndjson_lines(cases, options)
    return _stream(lines, 1, NDJSON_TYPE, "ivclms-registry.ndjson", as_of)


@bp.get("/registry/summary")
def registry_summary() -> Response:
    principal: Principal = g.principal
    check_names(SUMMARY_PARAMS)
    deidentified = access.summary_is_deidentified(principal)
    form = request.args.get("format")
    if form is not None and form not in ("json", "html"):
        raise _bad("format", "must be json or html")
    filters = summary_filters(principal, recipient_key(principal) if deidentified else None)
    if form is None:
        form = "html" if request.accept_mimetypes.best_match([JSON, "text/html"]) == "text/html" else "json"
    cases = (found.case for found in source.stream_cases(ctx().engine, filters))
    report = summary.summarise(cases, deidentified=deidentified)
    if form == "html":
        headers = {
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        }
        return Response(summary.render_html(report), content_type=HTML_TYPE, headers=headers)
    return Response(orjson.dumps(report), content_type=JSON)


# ---- OpenAPI --------------------------------------------------------------------------------------


def _param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "required": False, "schema": schema}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_ERRORS = {
    "400": "A bad parameter, or one de-identified pulls do not take (the issue's expression names it)",
    "401": "No valid bearer token",
    "403": "The token lacks system/<T>.s for a case type, or the role the pull needs: identified "
    "extracts `registry`; de-identified extracts and the summary `deidentified` or `registry`; "
    "consent values other than yes `registry`",
    "501": "deidentified=true but no pseudonym key is configured",
    "503": "Database unavailable; retry after Retry-After",
}
_FILTER_DOCS = [
    _param(
        "since",
        "Cases updated at or after this instant (incremental pulls). De-identified pulls (and the "
        "summary without the registry role): only the X-Extract-As-Of value of an earlier de-identified "
        "extract by the same client (a signed cursor)",
        {"type": "string"},
    ),
    _param(
        "consent",
        "registry_consent is one of these (repeatable; an absent consent counts as unknown). Privacy by "
        "default: without it only consent=yes cases are included; other values need the registry role",
        _list({"type": "string"}),
    ),
    _param(
        "institution",
        "Institution, case-insensitive (repeatable); refused in de-identified pulls",
        _list({"type": "string"}),
    ),
    _param(
        "segment", "The tumour involves one of these IVC segments (repeatable)", _list({"type": "string"})
    ),
    _param(
        "diagnosed_from",
        "diagnosis.date on or after (YYYY-MM-DD); de-identified pulls: the diagnosis year on or after (YYYY)",
        {"type": "string"},
    ),
    _param(
        "diagnosed_to",
        "diagnosis.date on or before (YYYY-MM-DD); de-identified pulls: the diagnosis year on or before "
        "(YYYY)",
        {"type": "string"},
    ),
    _param(
        "case",
        "Only these case ids (repeatable, at most 500); refused in de-identified pulls",
        _list({"type": "string"}),
    ),
]
_EXTRACT_DOCS = [
    *_FILTER_DOCS,
    _param(
        "deidentified",
        "true: no direct identifiers, case and source system as pseudonyms keyed per client, the "
        "diagnosis year and dates as days from diagnosis (role deidentified or registry); false "
        "(default): the identified extract (role registry)",
        {"type": "boolean"},
    ),
    _param("derived", "false: leave out the derived columns (re-importable CSV)", {"type": "boolean"}),
]


_RULES = (
    "Every pull needs system/<T>.s on every case type (system/*.s, *.rs, *.read). Identified extracts "
    "need the role registry; de-identified extracts (deidentified=true) and the summary the role "
    "deidentified or registry. Privacy by default: only cases whose registry_consent is yes are "
    "included unless the request names other consent values, which needs the role registry. Without "
    "the registry role a client reads only its own source systems (ivclms_sources), and the "
    "de-identified rules apply to the filters: diagnosed_from/diagnosed_to take a year, since takes "
    "the signed X-Extract-As-Of of an earlier de-identified extract, case and institution are refused. "
    "De-identified pseudonyms (case_id, source_system) are keyed per client: two clients' pseudonyms "
    "cannot be linked. See docs/registry.md."
)


def _responses(ok: dict[str, Any]) -> dict[str, Any]:
    errors = {s: {"description": d, "content": {FHIR: {"schema": OUTCOME}}} for s, d in _ERRORS.items()}
    return {"200": ok, **errors}


describe(
    "/registry/cases.csv",
    {
        "get": {
            "description": _RULES,
            "summary": "Registry extract as CSV: the import's columns, then derived columns; streamed",
            "parameters": _EXTRACT_DOCS,
            "responses": _responses(
                {
                    "description": "One row per active case",
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                }
            ),
        }
    },
)
describe(
    "/registry/cases.ndjson",
    {
        "get": {
            "description": _RULES,
            "summary": "Registry extract as NDJSON: one canonical case per line (+ derived); streamed",
            "parameters": _EXTRACT_DOCS,
            "responses": _responses(
                {
                    "description": "One JSON object per line",
                    "content": {NDJSON_TYPE: {"schema": {"type": "string"}}},
                }
            ),
        }
    },
)
describe(
    "/registry/summary",
    {
        "get": {
            "description": _RULES,
            "summary": "Case-series summary with Kaplan-Meier survival (JSON, or HTML); role deidentified "
            "(de-identified filter rules) or registry; consented cases only unless consent says otherwise",
            "parameters": [
                *_FILTER_DOCS,
                _param(
                    "format", "json (default) or html; Accept: text/html also gives HTML", {"type": "string"}
                ),
            ],
            "responses": _responses(
                {
                    "description": "The summary",
                    "content": {
                        JSON: {"schema": {"type": "object"}},
                        "text/html": {"schema": {"type": "string"}},
                    },
                }
            ),
        }
    },
)

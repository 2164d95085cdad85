"""The web console under ``/ui`` (read-only first slice), the landing page ``/`` and the shipped assets.

Thin: parse the query, call the Flask-free ``service.console`` and ``service.registry`` functions,
render a Jinja template (autoescaped). Every ``/ui`` route passes the same gate as the API: the
bearer token of ``service.api.security`` and the scope / source / role checks of ``service.auth.gate``
and ``service.registry.access`` (a case page needs what ``GET /cases/{id}`` needs, the list what
``GET /cases`` needs, the series page what ``GET /registry/summary`` needs). With OpenID Connect
configured, a signed-in user's session stands in for the token on these pages (``service.api.signin``);
without it, a browser without a token gets a 401 page that says so (``service.api.errors``).
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Response, abort, g, render_template, request, url_for

from service import __version__
from service.api import console_form, openapi
from service.api.context import ctx
from service.api.params import int_arg
from service.api.registry import SUMMARY_PARAMS, check_names, recipient_key, summary_filters
from service.auth import gate
from service.clock import instant
from service.codes import table
from service.console import cases as console_cases
from service.console import km_svg
from service.console.diff import diff
from service.console.timeline import timeline
from service.errors import BadRequest, Issue
from service.model import csv_flat
from service.registry import access, source, summary

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
STATIC_DIR = CONSOLE_DIR / "static"
SWAGGER_PREFIX = "swagger-ui/"
PAGE_SIZE = 25
LIST_PARAMS = ("institution", "segment", "status", "sync", "offset")
CASE_PARAMS = ("from", "to")
HTML_TYPE = "text/html; charset=utf-8"
CURVES = {"overall_survival": "Overall survival", "disease_free_survival": "Disease-free survival"}

bp = Blueprint("console", __name__, template_folder=str(CONSOLE_DIR / "templates"))
pages = Blueprint("pages", __name__, template_folder=str(CONSOLE_DIR / "templates"))


def _swagger_dir() -> Path:
    """swagger-ui's dist files as the PyPI package ``flask-swagger-ui`` ships them (swagger-ui 5.x,
    which renders OpenAPI 3.1; only its files are used, not its blueprint)."""
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).resolve().parent / "dist"


# ---- public: landing page and assets --------------------------------------------------------------


LINKS = (
    ("console", "/ui", "Console: cases, timelines, the case series (needs a token)"),
    ("docs", "/docs", "API documentation (Swagger UI, try it with a bearer token)"),
    ("openapi", "/openapi.json", "OpenAPI 3.1 document"),
    ("metadata", "/fhir/metadata", "FHIR CapabilityStatement"),
    ("healthz", "/healthz", "Liveness"),
    ("readyz", "/readyz", "Readiness (database, FHIR server)"),
)


@pages.get("/")
def landing() -> Response:
    """HTML for a browser; JSON (the same links) for any other client, which asked for no HTML."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return Response(
            render_template("landing.html", links=LINKS, version=__version__),
            content_type=HTML_TYPE,
            headers={"Vary": "Accept"},
        )
    body = {
        "service": "IVC-LMS FHIR interoperability service",
        "version": __version__,
        "links": {name: {"href": href, "title": title} for name, href, title in LINKS},
    }
    return Response(orjson.dumps(body), content_type="application/json", headers={"Vary": "Accept"})


@pages.get("/assets/<path:filename>")
def asset(filename: str) -> Response:
    """Our CSS and scripts, and swagger-ui's dist files under ``swagger-ui/`` (no CDN: works offline)."""
    folder, name = STATIC_DIR, filename
    if filename.startswith(SWAGGER_PREFIX):
        folder, name = _swagger_dir(), filename[len(SWAGGER_PREFIX) :]
    path = (folder / name).resolve()
    if "/" in name or not path.is_file() or path.parent != folder.resolve():
        abort(404)
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    # Read whole (the largest, swagger-ui-bundle.js, is about 1 MB): no file handle outlives the request.
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(path.read_bytes(), mimetype=mimetype, headers=headers)


# ---- /ui: the console -----------------------------------------------------------------------------


def _choice(name: str, allowed: tuple[str, ...] | list[str]) -> str:
    value = request.args.get(name, "")
    if value and value not in allowed:
        raise BadRequest([Issue("invalid", f"{name}: must be one of {', '.join(allowed)}", name)])
    return value


def _page(html: str) -> Response:
    return Response(html, content_type=HTML_TYPE)


@bp.get("/ui")
def case_list() -> Response:
    # the list shows content (institution, segments, diagnosis date) and filters by it: search AND read,
    # where GET /cases (ids and versions only) needs search alone (docs/security.md: content needs r)
    gate.require_case_types(g.principal, "s")
    gate.require_case_types(g.principal, "r")
    check_names(LIST_PARAMS, frozenset())
    segments = list(table("ivc-segment").keys())
    institution = request.args.get("institution", "").strip()
    if len(institution) > 512:
        raise BadRequest([Issue("invalid", "institution: at most 512 characters", "institution")])
    filters = console_cases.ListFilters(
        institution=institution,
        segment=_choice("segment", segments),
        status=_choice("status", console_cases.STATUSES),
        sync=_choice("sync", console_cases.SYNC_STATES),
    )
    offset = int_arg("offset", 0, 0, 2**31 - 1) or 0
    sources = g.principal.readable_sources
    found = console_cases.list_cases(ctx().engine, filters, offset=offset, limit=PAGE_SIZE, sources=sources)
    args = {k: v for k, v in vars(filters).items() if v}

    def link(at: int) -> str:
        return url_for("console.case_list", **args, offset=at) if at else url_for("console.case_list", **args)

    previous = link(max(0, offset - PAGE_SIZE)) if offset > 0 else None
    following = link(offset + PAGE_SIZE) if offset + PAGE_SIZE < found.total else None
    return _page(
        render_template(
            "case_list.html",
            page=found,
            filters=filters,
            segments=segments,
            statuses=console_cases.STATUSES,
            sync_states=console_cases.SYNC_STATES,
            institutions=console_cases.institutions(ctx().engine, sources),
            previous=previous,
            following=following,
            may_create=console_form.may_create(g.principal),
        )
    )


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Each resource of the case's bundle with its local validation (errors and warnings)."""
    out = []
    validator = ctx().validator
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        issues = validator.validate(resource)
        problems = [i for i in issues if i.severity in ("fatal", "error", "warning")]
        out.append(
            {
                "label": (
                    f"{resource.get('resourceType', '')}/{resource['id']}"
                    if resource.get("id")
                    else f"{resource.get('resourceType', '')} ({entry.get('fullUrl', 'no fullUrl')})"
                ),
                "json": json.dumps(resource, indent=2, ensure_ascii=False),
                "errors": sum(i.severity in ("fatal", "error") for i in problems),
                "issues": problems,
            }
        )
    return out


@bp.get("/ui/cases/<ref>")
def case_page(ref: str) -> Response:
    gate.require_case_types(g.principal, "r")
    intake = ctx().intake
    row, current = intake.get(ref)
    gate.require_case_read(g.principal, row.source_system, ref)  # before any version says more
    check_names(CASE_PARAMS, frozenset())
    versions = sorted(intake.history(ref), key=lambda v: v.version)
    numbers = [v.version for v in versions]
    default_from = numbers[-2] if len(numbers) > 1 else numbers[-1]
    before = int_arg("from", default_from, 1, 2**31 - 1) or default_from
    after = int_arg("to", numbers[-1], 1, 2**31 - 1) or numbers[-1]
    for name, number in (("from", before), ("to", after)):
        if number not in numbers:
            raise BadRequest([Issue("invalid", f"{name}: no version {number} of this case", name)])
    by_number = {v.version: v for v in versions}
    case = orjson.loads(current.case_json)
    changes = diff(orjson.loads(by_number[before].case_json), orjson.loads(by_number[after].case_json))
    return _page(
        render_template(
            "case.html",
            row=row,
            case=case,
            current=current,
            events=timeline(case),
            resources=_resources(orjson.loads(current.bundle_json)),
            versions=versions,
            before=before,
            after=after,
            changes=changes,
            instant=instant,
            may_edit=console_form.may_edit(g.principal, row.source_system),
        )
    )


def _series() -> tuple[dict[str, Any], list[tuple[str, str]], str, bool]:
    """The summary of the asked filters, the filters as shown, the data-as-of stamp, de-identified?"""
    principal = g.principal
    check_names(SUMMARY_PARAMS)
    deidentified = access.summary_is_deidentified(principal)
    filters = summary_filters(principal, recipient_key(principal) if deidentified else None)
    as_of = instant(ctx().intake.clock())
    cases = (found.case for found in source.stream_cases(ctx().engine, filters))
    report = summary.summarise(cases, deidentified=deidentified)
    shown = [
        (name, value) for name in request.args for value in request.args.getlist(name) if name != "format"
    ]
    if "consent" not in request.args:
        shown.append(("consent", ", ".join(access.consent(principal, ())) + " (default)"))
    return report, shown, as_of, deidentified


def _landmarks(km: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{int(m) // 12} year" + ("s" if int(m) > 12 else ""), summary.landmark_text(km, m))
        for m in km["at_months"]
    ]


@bp.get("/ui/series")
def series() -> Response:
    report, shown, as_of, deidentified = _series()
    km = report["kaplan_meier"]
    curves = [
        {
            "key": key,
            "title": title,
            "svg": km_svg.render(km[key], title),
            "km": km[key],
            "landmarks": _landmarks(km[key]),
        }
        for key, title in CURVES.items()
    ]
    query = request.query_string.decode()
    return _page(
        render_template(
            "series.html",
            rows=summary.table_rows(report),
            curves=curves,
            shown=shown,
            as_of=as_of,
            deidentified=deidentified,
            query=("?" + query) if query else "",
            percent=summary.percent,
            date_rule=source.DATE_FILTER_RULE,
        )
    )


class _Neutral:
    """A csv writer whose cells a spreadsheet cannot run (a filter value is the caller's text)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def writerow(self, row: list[str]) -> None:
        self.writer.writerow([csv_flat.neutralise(str(cell)) for cell in row])


@bp.get("/ui/series.csv")
def series_csv() -> Response:
    report, shown, as_of, _ = _series()
    out = io.StringIO()
    writer = _Neutral(csv.writer(out))
    writer.writerow(["section", "characteristic", "value"])
    writer.writerow(["about", "data as of", as_of])
    for name, value in shown:
        writer.writerow(["filter", name, value])
    group = ""
    for row in summary.table_rows(report):
        if isinstance(row, str):
            group = row
        else:
            writer.writerow([group, row[0], row[1]])
    for key, title in CURVES.items():
        for r in report["kaplan_meier"][key]["table"]:
            writer.writerow(
                [
                    title,
                    f"{r['time_months']:g} months: at risk {r['at_risk']}, events {r['events']}, "
                    f"censored {r['censored']}",
                    f"{summary.percent(r['survival'])} (95% CI {summary.percent(r['ci_lower'])}-"
                    f"{summary.percent(r['ci_upper'])})",
                ]
            )
    headers = {
        "Content-Disposition": 'attachment; filename="ivclms-case-series.csv"',
        "X-Data-As-Of": as_of,
        "X-Content-Type-Options": "nosniff",
    }
    return Response(out.getvalue(), content_type="text/csv; charset=utf-8", headers=headers)


@bp.get("/ui/series/<curve>.svg")
def series_svg(curve: str) -> Response:
    if curve not in CURVES:
        abort(404)
    report, _, as_of, _ = _series()
    svg = km_svg.render(report["kaplan_meier"][curve], CURVES[curve])
    headers = {"Content-Disposition": f'attachment; filename="ivclms-{curve}.svg"', "X-Data-As-Of": as_of}
    return Response(svg, content_type="image/svg+xml; charset=utf-8", headers=headers)


# ---- OpenAPI ----------------------------------------------------------------------------------------


def _html(
    summary_text: str, *params: dict[str, Any], secured: bool = True, media: str = "text/html"
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary_text,
        "parameters": list(params),
        "responses": {"200": {"description": media, "content": {media: {"schema": {"type": "string"}}}}},
    }
    if not secured:
        op["security"] = []
    else:
        op["responses"].update(openapi._errors(400, 401, 403))
    return op


def _q(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_LANDING_JSON = {
    "type": "object",
    "required": ["service", "version", "links"],
    "properties": {
        "service": {"type": "string"},
        "version": {"type": "string"},
        "links": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"href": {"type": "string"}, "title": {"type": "string"}},
            },
        },
    },
}
openapi.describe(
    "/",
    {
        "get": {
            "summary": "Landing page: HTML for a browser (Accept: text/html), its links as JSON otherwise",
            "security": [],
            "responses": {
                "200": {
                    "description": "The page, or its links",
                    "content": {
                        "text/html": {"schema": {"type": "string"}},
                        "application/json": {"schema": _LANDING_JSON},
                    },
                }
            },
        }
    },
)
openapi.describe(
    "/assets/{filename}",
    {
        "get": {
            **_html(
                "Console and API-docs assets (CSS, scripts, swagger-ui dist files)",
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}},
                secured=False,
            ),
            "responses": {"200": {"description": "The file"}, "404": openapi._errors(404)["404"]},
        }
    },
)
openapi.describe(
    "/ui",
    {
        "get": _html(
            "Console: the case list (scope s on the case types, as GET /cases)",
            _q("institution", "Institution, as recorded"),
            _q("segment", "IVC segment the tumour involves"),
            _q("status", "active or entered-in-error"),
            _q("sync", "State of the newest outbox entry, or never"),
            _q("offset", "Paging offset"),
        )
    },
)
openapi.describe(
    "/ui/cases/{id}",
    {
        "get": _html(
            "Console: a case's timeline, resources with their validation, versions and a diff "
            "(as GET /cases/{id})",
            openapi.REF,
            _q("from", "Older version of the diff"),
            _q("to", "Newer version of the diff"),
        )
    },
)
for _path, _what, _media in (
    (
        "/ui/series",
        "Console: the case series with Kaplan-Meier curves (as GET /registry/summary)",
        "text/html",
    ),
    ("/ui/series.csv", "The case series as CSV", "text/csv"),
):
    openapi.describe(
        _path,
        {"get": _html(_what, *(_q(n, "As in /registry/summary") for n in SUMMARY_PARAMS), media=_media)},
    )
openapi.describe(
    "/ui/series/{curve}.svg",
    {
        "get": _html(
            "A Kaplan-Meier curve as SVG (overall_survival, disease_free_survival)",
            {
                "name": "curve",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(CURVES)},
            },
            *(_q(n, "As in /registry/summary") for n in SUMMARY_PARAMS),
            media="image/svg+xml",
        )
    },
)

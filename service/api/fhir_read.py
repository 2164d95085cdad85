"""The FHIR read side: read, vread, history, search and ``$everything`` (thin: parse, call, respond)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from flask import Blueprint, Response, g, request
from werkzeug.http import http_date

from service import read_side
from service import search as searching
from service.api import audit, bulk, links
from service.api.context import ctx
from service.api.params import parse_instant
from service.auth import gate
from service.auth.principal import Principal
from service.clock import instant
from service.errors import BadRequest, Forbidden, Issue, NotFound, UnsupportedMediaType
from service.outcome import operation_outcome
from service.store.resources import Indexed

bp = Blueprint("fhir_read", __name__, url_prefix="/fhir")


def _keep(principal: Principal) -> read_side.Keep:
    """The gate, for rows of the read side: type, restriction and the source system of the case."""

    def keep(resource_type: str, text: str, source: str | None) -> bool:
        try:
            return gate.visible_text(principal, resource_type, text, source)
        except Forbidden:  # a refused grant on another type (an include): withheld, never widened
            return False

    return keep


def _withheld(count: int) -> str:
    """A warning entry saying how many included resources the caller's scopes left out (no ids)."""
    issue = Issue(
        "suppressed",
        f"{count} included resource{'s were' if count != 1 else ' was'} withheld: "
        "outside the scopes or source systems of this access token",
        severity="warning",
    )
    return f'{{"resource":{orjson.dumps(operation_outcome([issue])).decode()},"search":{{"mode":"outcome"}}}}'


def _type(resource_type: str) -> str:
    if resource_type not in searching.READ_TYPES:
        raise NotFound(f"resource type {resource_type!r} is not served here")
    return resource_type


def _base() -> str:
    return links.fhir_base()


def _resource_response(found: Indexed) -> Response:
    etag = f'W/"{found.version_id}"'
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(found.last_updated),
        "Location": f"{_base()}/{found.resource_type}/{found.id}/_history/{found.version_id}",
    }
    # Conditional read (R4 http.html): If-None-Match with the current ETag -> 304 Not Modified, no body.
    asked = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}
    if etag in asked or etag.removeprefix("W/") in asked or "*" in asked:
        return Response(status=304, headers=headers)
    return Response(found.json, content_type="application/fhir+json", headers=headers)


def read_resource(
    principal: Principal, resource_type: str, resource_id: str, version: int | None = None
) -> Indexed:
    """Read or vread through the gate (also for the GET entries of a posted batch)."""
    gate.require(principal, _type(resource_type), "r")
    return read_side.read(ctx().engine, resource_type, resource_id, version, keep=_keep(principal))


@bp.get("/<resource_type>/<resource_id>")
def read(resource_type: str, resource_id: str) -> Response:
    return _resource_response(read_resource(g.principal, resource_type, resource_id))


@bp.get("/<resource_type>/<resource_id>/_history/<int:version>")
def vread(resource_type: str, resource_id: str, version: int) -> Response:
    return _resource_response(read_resource(g.principal, resource_type, resource_id, version))


def _bundle(kind: str, entries: list[str], extra: dict[str, Any]) -> Response:
    """A Bundle of stored JSON texts; no ``entry`` when there is none (R4 json.html: arrays are
    never empty; HAPI answers ``_count=0`` without one)."""
    head = orjson.dumps({"resourceType": "Bundle", "type": kind, **extra}).decode()[:-1]
    body = f'{head},"entry":[{",".join(entries)}]}}' if entries else f"{head}}}"
    return Response(body, content_type="application/fhir+json")


def _entry(base: str, resource_type: str, resource_id: str, json_text: str, mode: str | None = None) -> str:
    full_url = f"{base}/{resource_type}/{resource_id}"
    search = f',"search":{{"mode":"{mode}"}}' if mode else ""
    return f'{{"fullUrl":"{full_url}","resource":{json_text}{search}}}'


@bp.get("/<resource_type>/<resource_id>/_history")
def instance_history(resource_type: str, resource_id: str) -> Response:
    gate.require(g.principal, _type(resource_type), "r")
    versions = read_side.history(ctx().engine, resource_type, resource_id, keep=_keep(g.principal))
    base = _base()
    entries = []
    for v in versions:
        # As HAPI shows it: the first version was created (POST Type, 201), later ones updated (PUT).
        if v.deleted:
            method, url, status = "DELETE", f"{v.resource_type}/{v.id}", "410 Gone"
        elif v.version_id == 1:
            method, url, status = "POST", v.resource_type, "201 Created"
        else:
            method, url, status = "PUT", f"{v.resource_type}/{v.id}", "200 OK"
        resource = "" if v.deleted else f',"resource":{v.json}'
        entries.append(
            f'{{"fullUrl":"{base}/{v.resource_type}/{v.id}"{resource},'
            f'"request":{{"method":"{method}","url":"{url}"}},'
            f'"response":{{"status":"{status}","etag":"W/\\"{v.version_id}\\"",'
            f'"lastModified":"{instant(v.last_updated)}"}}}}'
        )
    return _bundle("history", entries, {"total": len(versions)})


def _link(search: searching.Search, cursor: str | None) -> str:
    params = list(search.used)
    if cursor is not None:
        params.append(("_cursor", cursor))
    query = urlencode(params)
    return f"{_base()}/{search.resource_type}" + (f"?{query}" if query else "")


def _strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def _ignored_entry(ignored: Sequence[str], what: str) -> str:
    issue = Issue(
        "not-supported", f"ignored unknown {what} parameters: {', '.join(ignored)}", severity="warning"
    )
    outcome = orjson.dumps(operation_outcome([issue])).decode()
    return f'{{"resource":{outcome},"search":{{"mode":"outcome"}}}}'


FORM = "application/x-www-form-urlencoded"


def form_params() -> list[tuple[str, str]]:
    """POST search (R4 http.html 3.1.0.8: servers that support search SHALL support POST): the URL's
    parameters and the form body's, with the same meaning in either place; any other body is 415."""
    params = list(request.args.items(multi=True))
    if request.mimetype == FORM:
        params += list(request.form.items(multi=True))
    elif request.content_length or request.mimetype:
        raise UnsupportedMediaType(f"POST _search takes Content-Type {FORM} (got {request.mimetype})")
    return params


@bp.get("/<resource_type>")
def search_type(resource_type: str) -> Response:
    return _search(resource_type, list(request.args.items(multi=True)))


@bp.post("/<resource_type>/_search")
def search_post(resource_type: str) -> Response:
    if resource_type == "Group":  # the Groups the service maintains (issue 13: clients found this 404)
        gate.require(g.principal, "Group", "r")  # refused before the body is read
        return bulk.group_search(form_params())
    if resource_type == "AuditEvent":  # the audit trail's own search, as for GET (clients found this 404)
        gate.require(g.principal, "AuditEvent", "s")  # refused before the body is read
        return audit.audit_search(form_params())
    gate.require(g.principal, _type(resource_type), "s")  # refused before the body is read
    return _search(resource_type, form_params())


def _search(resource_type: str, params: list[tuple[str, str]]) -> Response:
    gate.require(g.principal, _type(resource_type), "s")
    search = searching.parse(resource_type, params, strict=_strict())
    # Matches are returned resources: the s and the r grant both filter them (a count needs only s).
    search.limit(gate.limits(g.principal, resource_type, "s" if search.summary_count else "sr"))
    page = read_side.search(ctx().engine, search, keep=_keep(g.principal))
    base = _base()
    cursor = next((v for n, v in reversed(params) if n == "_cursor"), None)
    links = [{"relation": "self", "url": _link(search, cursor)}]
    if page.has_next and page.last_key is not None:
        links.append(
            {"relation": "next", "url": _link(search, searching.encode_cursor("next", page.last_key))}
        )
    if page.has_prev and page.first_key is not None:
        links.append(
            {"relation": "previous", "url": _link(search, searching.encode_cursor("prev", page.first_key))}
        )
    entries = [_entry(base, r.resource_type, r.id, r.json, "match") for r in page.matches]
    entries += [_entry(base, r.resource_type, r.id, r.json, "include") for r in page.included]
    if search.ignored:
        entries.append(_ignored_entry(search.ignored, "search"))
    if page.withheld:
        entries.append(_withheld(page.withheld))
    return _bundle("searchset", entries, {"total": page.total, "link": links})


EVERYTHING_PARAMS = ("_count", "_type", "start", "end", "_since", "_cursor", "_format")
_FHIR_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")


def _care_date(name: str, value: str) -> str:
    """A FHIR ``date`` (YYYY, YYYY-MM or YYYY-MM-DD) that exists."""
    try:
        if not _FHIR_DATE.fullmatch(value):
            raise ValueError(value)
        date.fromisoformat((value + "-01-01")[:10] if len(value) < 10 else value)
    except ValueError:
        raise BadRequest(
            [Issue("invalid", f"{name}: {value!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)", name)]
        ) from None
    return value


def _everything_query(
    params: Sequence[tuple[str, str]], strict: bool
) -> tuple[read_side.EverythingQuery, list[tuple[str, str]], list[str]]:
    """$everything's parameters (R4 patient-operation-everything): the query, the parameters used
    (for links), and those ignored (unknown; a 400 with Prefer: handling=strict)."""
    fields: dict[str, Any] = {}
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in params:
        if name == "_count":
            if (
                not (value.isascii() and value.isdigit() and len(value) <= 4)
                or not 1 <= int(value) <= searching.COUNT_MAX
            ):
                raise BadRequest(
                    [
                        Issue(
                            "invalid", f"_count: must be a whole number from 1 to {searching.COUNT_MAX}", name
                        )
                    ]
                )
            fields["count"] = int(value)
        elif name == "_type":
            types = [t.strip() for t in value.split(",")]
            unknown = [t for t in types if t not in searching.READ_TYPES]
            if unknown:
                raise BadRequest([Issue("invalid", f"_type: {', '.join(unknown)} not served here", name)])
            fields["types"] = frozenset(types) | fields.get("types", frozenset())
        elif name in ("start", "end"):
            fields[name] = _care_date(name, value)
        elif name == "_since":
            fields["since"] = parse_instant(value, "_since")
        elif name == "_cursor":
            direction, key = searching.decode_cursor(value)
            if direction != "next":
                raise BadRequest([Issue("invalid", "_cursor: not a page this service gave out", name)])
            fields["after"] = key
            continue
        elif name == "_format":
            continue
        else:
            if strict:
                raise BadRequest(
                    [Issue("invalid", f"{name}: unknown or unsupported $everything parameter", name)]
                )
            ignored.append(name)
            continue
        used.append((name, value))
    return read_side.EverythingQuery(**fields), used, ignored


@bp.get("/Patient/<patient_id>/$everything")
def everything(patient_id: str) -> Response:
    gate.require(g.principal, "Patient", "r")
    asked, used, ignored = _everything_query(list(request.args.items(multi=True)), _strict())
    page = read_side.everything(ctx().engine, patient_id, asked, keep=_keep(g.principal))
    base = _base()
    here = f"{base}/Patient/{quote(patient_id, safe='')}/$everything"
    query = urlencode(used)
    links = [{"relation": "self", "url": here + (f"?{query}" if query else "")}]
    if page.has_next and page.last_key is not None:
        after = urlencode([*used, ("_cursor", searching.encode_cursor("next", page.last_key))])
        links.append({"relation": "next", "url": f"{here}?{after}"})
    entries = [_entry(base, r.resource_type, r.id, r.json, "match") for r in page.rows]
    if ignored:
        entries.append(_ignored_entry(ignored, "$everything"))
    if page.withheld:
        entries.append(_withheld(page.withheld))
    return _bundle("searchset", entries, {"total": page.total, "link": links})

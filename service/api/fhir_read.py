"""The FHIR read side: read, vread, history, search and ``$everything`` (thin: parse, call, respond)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, g, request
from werkzeug.http import http_date

from service import read_side
from service import search as searching
from service.api import links
from service.api.context import ctx
from service.api.params import parse_instant
from service.auth import gate
from service.auth.principal import Principal
from service.clock import instant
from service.errors import Forbidden, Issue, NotFound
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
    return Response(
        found.json,
        content_type="application/fhir+json",
        headers={
            "ETag": f'W/"{found.version_id}"',
            "Last-Modified": http_date(found.last_updated),
            "Location": f"{_base()}/{found.resource_type}/{found.id}/_history/{found.version_id}",
        },
    )


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
    head = orjson.dumps({"resourceType": "Bundle", "type": kind, **extra}).decode()[:-1]
    body = f'{head},"entry":[{",".join(entries)}]}}'
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
        method = "DELETE" if v.deleted else "PUT"
        resource = "" if v.deleted else f',"resource":{v.json}'
        entries.append(
            f'{{"fullUrl":"{base}/{v.resource_type}/{v.id}"{resource},'
            f'"request":{{"method":"{method}","url":"{v.resource_type}/{v.id}"}},'
            f'"response":{{"status":"{"410" if v.deleted else "200"}","etag":"W/\\"{v.version_id}\\"",'
            f'"lastModified":"{instant(v.last_updated)}"}}}}'
        )
    return _bundle("history", entries, {"total": len(versions)})


def _link(search: searching.Search, cursor: str | None) -> str:
    params = list(search.used)
    if cursor is not None:
        params.append(("_cursor", cursor))
    query = urlencode(params)
    return f"{_base()}/{search.resource_type}" + (f"?{query}" if query else "")


@bp.get("/<resource_type>")
def search_type(resource_type: str) -> Response:
    gate.require(g.principal, _type(resource_type), "s")
    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    search = searching.parse(resource_type, list(request.args.items(multi=True)), strict=strict)
    # Matches are returned resources: the s and the r grant both filter them (a count needs only s).
    search.limit(gate.limits(g.principal, resource_type, "s" if search.summary_count else "sr"))
    page = read_side.search(ctx().engine, search, keep=_keep(g.principal))
    base = _base()
    links = [{"relation": "self", "url": _link(search, request.args.get("_cursor"))}]
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
        issue = Issue(
            "not-supported",
            f"ignored unknown search parameters: {', '.join(search.ignored)}",
            severity="warning",
        )
        outcome = orjson.dumps(operation_outcome([issue])).decode()
        entries.append(f'{{"resource":{outcome},"search":{{"mode":"outcome"}}}}')
    if page.withheld:
        entries.append(_withheld(page.withheld))
    return _bundle("searchset", entries, {"total": page.total, "link": links})


@bp.get("/Patient/<patient_id>/$everything")
def everything(patient_id: str) -> Response:
    gate.require(g.principal, "Patient", "r")
    raw = request.args.get("_since")
    since = parse_instant(raw, "_since") if raw else None
    rows, withheld = read_side.everything(ctx().engine, patient_id, since, keep=_keep(g.principal))
    base = _base()
    entries = [_entry(base, r.resource_type, r.id, r.json, "match") for r in rows]
    if withheld:
        entries.append(_withheld(withheld))
    return _bundle("searchset", entries, {"total": len(rows)})

"""The console's case entry and edit form (issue 16): ``/ui/cases/new`` and ``/ui/cases/<id>/edit``.

Thin: the form is generated and parsed by the Flask-free ``service.console.form``; what is stored goes
through the same ``Intake.prepare`` / ``submit`` / ``update`` and the same gate (``require_writer``,
``case_writes``, ``require_source_write``) as ``POST /cases`` and ``PUT /cases/{id}``, never a side
door. Every POST checks the CSRF token first. Success is a 303 to the case page; a case that does not
validate is the form again (422) with what was typed, an error summary and each message at its field.
An edit carries the version it was opened at (``_version``, the API's If-Match): when someone saved in
between, the form comes back (409) with what was typed and a message, and nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Response, g, render_template, request, url_for

from service.api import csrf, openapi
from service.api.context import ctx
from service.api.writes import case_writes, require_writer
from service.auth import gate
from service.auth.gate import require_source_write
from service.auth.principal import Principal
from service.console import form
from service.errors import BadRequest, Conflict, Forbidden, Issue, PreconditionFailed, Unprocessable
from service.intake import OnChange, Prepared
from service.store.cases import CaseRow, VersionRow

bp = Blueprint("console_form", __name__)
HTML_TYPE = "text/html; charset=utf-8"


def _allowed(principal: Principal, action: str) -> bool:
    """Whether ``require_writer`` lets ``action`` through: the link shows what the form will allow."""
    try:
        require_writer(principal, action)
    except Forbidden:
        return False
    return True


def may_edit(principal: Principal, source_system: str) -> bool:
    """Whether the case page offers "Edit": an update scope on cases and the case's source."""
    return _allowed(principal, "u") and principal.may_write_source(source_system)


def may_create(principal: Principal) -> bool:
    """Whether the case list offers "New case" (the source is checked when the form is saved)."""
    return _allowed(principal, "c")


def _author() -> str:
    return str(g.principal.subject)[:256]  # case_versions.author is 256 characters


def _posted() -> form.Flat:
    """The posted fields as flat values (a list only where a name was sent more than once: checkboxes)."""
    out: form.Flat = {}
    for name in request.form:
        values = request.form.getlist(name)
        out[name] = values if len(values) > 1 or form.is_code_list(name) else values[0]
    return out


@dataclass(frozen=True)
class Where:
    """The page's heading, where it posts to and where Cancel goes."""

    title: str
    action: str
    cancel: str


def _page(
    flat: form.Flat,
    where: Where,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    summary: list[tuple[str, str]] | None = None,
    message: str = "",
    version: int | None = None,
) -> Response:
    values = {k: v for k, v in flat.items() if k not in form.CONTROLS}
    tree = form.build(values, errors)
    html = render_template(
        "case_form.html",
        tree=tree,
        title=where.title,
        action=where.action,
        summary=summary or [],
        anchors=form.anchors(tree),
        labels=form.labels(tree),
        message=message,
        version=version,
        cancel=where.cancel,
    )
    return Response(html, status=status, content_type=HTML_TYPE)


def _summary(errors: dict[str, str], loose: list[str]) -> list[tuple[str, str]]:
    return [(name, message) for name, message in errors.items()] + [("", text) for text in loose]


def _prepare(parsed: form.Parsed) -> Prepared:
    """``Intake.prepare`` of the parsed case; a field that was not even of its type is reported with
    whatever else intake finds (all problems at once, not one round per kind)."""
    try:
        prepared = ctx().intake.prepare(parsed.case)
    except Unprocessable as error:
        raise Unprocessable([*_typing_issues(parsed), *error.issues]) from None
    if parsed.errors:
        raise Unprocessable(_typing_issues(parsed))
    return prepared


def _typing_issues(parsed: form.Parsed) -> list[Issue]:
    return [Issue("invalid", message, f"form:{name}") for name, message in parsed.errors.items()]


def _typed_part(name: str, flat: form.Flat) -> str:
    """The field of ``name`` that holds what was typed: the value itself, or, when it was entered in
    another form (a range's low and high, a bound), the first filled part of that form (outside
    review: a range's error sat on the empty plain value)."""
    if flat.get(name) not in (None, "", []):
        return name
    parts = sorted(k for k, v in flat.items() if k.startswith(name + ".") and v not in ("", []))
    return parts[0] if parts else name


def _issues(
    issues: list[Issue], parsed: form.Parsed, flat: form.Flat | None = None
) -> tuple[dict[str, str], list[str]]:
    """Intake's issues as field messages (joined when several concern one field) and loose ones; a
    field that was not of its type keeps that message only (intake saw it as missing)."""
    errors: dict[str, str] = {}
    loose: list[str] = []
    for issue in issues:
        expression = issue.expression or ""
        if expression.startswith("form:"):
            name = expression.removeprefix("form:")
        else:
            name = form.field_of(expression, parsed.renames)
            if name in parsed.errors:
                continue
        text = issue.diagnostics
        if name:
            text = _at_field(text, expression, name)
            name = _typed_part(name, flat or {})
            errors[name] = f"{errors[name]} {text}" if name in errors else text
        else:
            loose.append(text)
    return errors, loose


def _at_field(text: str, expression: str, name: str) -> str:
    """The message without its path when shown at the field it names (``outcome.last_contact: must
    be ...`` -> ``must be ...``); a path deeper than the field keeps it (it says which part)."""
    own = expression.removeprefix("form:")
    prefix = f"{own}: "
    exact = form.element_path(own).count(".") == name.count(".")
    return text.removeprefix(prefix) if exact and text.startswith(prefix) else text


def _controls(flat: form.Flat) -> form.Flat | None:
    """The values after an "Add another" or "Remove" button, or None when the form was submitted."""
    form.check_names(flat)
    add, remove = flat.get("_add"), flat.get("_remove")
    if isinstance(add, list) or isinstance(remove, list):
        raise BadRequest([Issue("invalid", "one button at a time: _add or _remove was sent twice", "_add")])
    if isinstance(add, str) and add:
        return form.add_item(flat, add)
    if isinstance(remove, str) and remove:
        return form.remove_item(flat, remove)
    return None


def _new() -> Where:
    return Where("New case", url_for("console_form.new_case"), url_for("console.case_list"))


@bp.get("/ui/cases/new")
def new_case() -> Response:
    require_writer(g.principal, "c")
    return _page({}, _new())


@bp.post("/ui/cases/new")
def create_case() -> Response:
    csrf.check()
    require_writer(g.principal, "c")
    flat, where = _posted(), _new()
    changed = _controls(flat)
    if changed is not None:
        return _page(changed, where)
    parsed = form.parse(flat)
    intake = ctx().intake
    try:
        prepared = _prepare(parsed)
        accepted = intake.submit(
            prepared, _author(), on_change=OnChange.CONFLICT, authorize=case_writes(g.principal)
        )
    except Unprocessable as error:
        errors, loose = _issues(error.issues, parsed, flat)
        return _page(flat, where, status=422, errors=errors, summary=_summary(errors, loose))
    except Conflict as error:
        message = "A case with this source system and case identifier exists already: edit it instead."
        return _page(flat, where, status=409, message=message, summary=[("", str(error))])
    return _see_other(url_for("console.case_page", ref=accepted.case.id))


def _see_other(location: str) -> Response:
    """303: the browser GETs the case page (a reload does not post the form again)."""
    return Response(status=303, headers={"Location": location})


def _editable(ref: str) -> tuple[CaseRow, VersionRow]:
    """The case row and current version, after the checks ``GET /cases/{id}`` and a write need."""
    require_writer(g.principal, "u")
    gate.require_case_types(g.principal, "r")
    row, current = ctx().intake.get(ref)
    gate.require_case_read(g.principal, row.source_system, ref)
    require_source_write(g.principal, row.source_system)
    return row, current


def _edit(ref: str, row: CaseRow) -> Where:
    return Where(
        f"Edit case {row.case_id}",
        url_for("console_form.edit_case", ref=ref),
        url_for("console.case_page", ref=ref),
    )


@bp.get("/ui/cases/<ref>/edit")
def edit_case(ref: str) -> Response:
    row, current = _editable(ref)
    return _page(form.flatten(orjson.loads(current.case_json)), _edit(ref, row), version=row.version)


def _version(flat: form.Flat) -> int:
    raw = flat.get("_version")
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        message = "_version: the version the form was opened at is missing"
        raise BadRequest([Issue("invalid", message, "_version")])
    return int(raw)


@bp.post("/ui/cases/<ref>/edit")
def update_case(ref: str) -> Response:
    csrf.check()
    g.audit_action = "U"  # an update, as PUT /cases/{id} is audited (a form can only POST)
    row, _ = _editable(ref)
    flat, where = _posted(), _edit(ref, row)
    version = _version(flat)
    changed = _controls(flat)
    if changed is not None:
        return _page(changed, where, version=version)
    parsed = form.parse(flat)
    intake = ctx().intake
    try:
        prepared = _prepare(parsed)
        require_source_write(g.principal, prepared.case["source_system"])
        intake.update(ref, prepared, _author(), version, authorize=case_writes(g.principal))
    except Unprocessable as error:
        errors, loose = _issues(error.issues, parsed, flat)
        summary = _summary(errors, loose)
        return _page(flat, where, status=422, errors=errors, summary=summary, version=version)
    except PreconditionFailed:
        now, current = intake.get(ref)
        _, opened = intake.get(ref, version)
        merged, both = form.rebase(
            flat, form.flatten(orjson.loads(opened.case_json)), form.flatten(orjson.loads(current.case_json))
        )
        merged["_version"] = str(now.version)
        message = (
            f"Someone saved this case after you opened it (it is now at version {now.version}); nothing "
            "was stored. The form now shows their changes, with yours kept where you changed a field."
        )
        errors = {name: "changed by someone else too: yours is kept here, check it" for name in both}
        summary = [(name, errors[name]) for name in both]
        return _page(
            merged, where, status=409, message=message, version=now.version, errors=errors, summary=summary
        )
    return _see_other(url_for("console.case_page", ref=ref))


# ---- OpenAPI ----------------------------------------------------------------------------------------


def _html(status: int, what: str) -> dict[str, Any]:
    return {str(status): {"description": what, "content": {"text/html": {"schema": {"type": "string"}}}}}


_FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "description": "The case's elements by path (surgery.0.date; see docs/case.schema.json), "
                "csrf_token, _version (edit), _add or _remove (the list buttons)",
                "additionalProperties": {"type": "string"},
            }
        }
    },
}


def _post(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": list(params),
        "requestBody": _FORM_BODY,
        "responses": {
            **_html(200, "The form again after an Add another or Remove button (nothing stored)"),
            "303": {"description": "Saved: see the case page"},
            **_html(409, "Not stored: the case exists, or was saved by someone else since the form opened"),
            **_html(422, "Not stored: the form again with what was typed and each problem at its field"),
            **openapi._errors(400, 401, 403),
        },
    }


def _get(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    responses = {**_html(200, "The form"), **openapi._errors(401, 403)}
    return {"summary": summary, "parameters": list(params), "responses": responses}


openapi.describe(
    "/ui/cases/new",
    {
        "get": _get("Console: the case entry form, generated from the case schema (scope c, as POST /cases)"),
        "post": _post("Console: save a new case from the form (as POST /cases; CSRF token required)"),
    },
)
openapi.describe(
    "/ui/cases/{id}/edit",
    {
        "get": _get(
            "Console: the edit form of a case, filled from its current version (scopes r and u)", openapi.REF
        ),
        "post": _post(
            "Console: save the edited case (as PUT /cases/{id} with If-Match: the version the form showed)",
            openapi.REF,
        ),
    },
)

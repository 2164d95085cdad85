"""The console's sync page ``/ui/sync`` (issue 16): the outbox, dead letters with a Retry button, and the
open pull conflicts side by side with the choice to keep the service's side or take the server's.

Thin: the gate of the ``/sync`` API (``service.api.sync``: an operator), the CSRF check first on every
POST, a call into ``service.sync.status`` / ``service.sync.resolve``, then 303 back to the page with a
message (post/redirect/get, so a reload does not post again). A take-the-server's choice the validation
rejects is shown on the page itself (422), nothing stored.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    url_for,
)

from service.api import csrf, openapi
from service.api import sync as sync_api
from service.api.console import CONSOLE_DIR, HTML_TYPE, _html
from service.api.context import ctx
from service.clock import instant
from service.console.sync import conflict_views
from service.errors import BadRequest, Issue, Unprocessable
from service.sync import resolve, status

bp = Blueprint("console_sync", __name__, template_folder=str(CONSOLE_DIR / "templates"))


def age(seconds: float | None) -> str:
    """``None`` -> "" (nothing waits); else a rounded age a person reads at a glance."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _render(failure: tuple[int, list[Issue]] | None = None, code: int = 200) -> Response:
    engine = ctx().engine
    report = status.status(engine)
    page = render_template(
        "sync.html",
        report=report,
        age=age(report.oldest_pending_age_s),
        views=conflict_views(engine, report.conflicts),
        messages=get_flashed_messages(),
        failure=failure,
        instant=instant,
    )
    return Response(page, status=code, content_type=HTML_TYPE)


@bp.get("/ui/sync")
def sync_page() -> Response:
    sync_api.operator(g.principal, "r")
    return _render()


def _back() -> Response:
    return redirect(url_for("console_sync.sync_page"), code=303)  # type: ignore[return-value]


@bp.post("/ui/sync/retry/<int:entry_id>")
def retry(entry_id: int) -> Response:
    csrf.check()
    g.audit_action = "U"  # re-sends a case: an update of what the FHIR server holds
    sync_api.retrier(g.principal, entry_id)
    state = status.retry(ctx().engine, entry_id)
    flash(
        f"Outbox entry {entry_id} is {state}: "
        + ("the worker sends it again." if state == "pending" else "a later version was delivered since.")
    )
    return _back()


@bp.post("/ui/sync/conflicts/<int:conflict_id>")
def resolve_conflict(conflict_id: int) -> Response:
    csrf.check()
    g.audit_action = "U"  # settles a conflict: the case or the FHIR server is updated
    sync_api.resolver(g.principal, conflict_id)
    keep = request.form.get("keep", "")
    if keep not in resolve.CHOICES:
        raise BadRequest([Issue("value", 'keep: "ours" or "theirs"', "keep")])
    try:
        done = resolve.resolve(ctx().engine, ctx().intake, conflict_id, keep)
    except Unprocessable as error:
        return _render((conflict_id, error.issues), code=422)
    if done.keep == resolve.OURS:
        queued = f"; case version {done.version} queued to be sent again" if done.queued else ""
        flash(f"Conflict {conflict_id}: kept the service's side{queued}.")
    else:
        stored = "stored as case version" if done.changed else "the case already held it, version"
        flash(f"Conflict {conflict_id}: took the server's side, {stored} {done.version}.")
    return _back()


openapi.describe(
    "/ui/sync", {"get": _html("Console: the outbox, dead letters and open pull conflicts (operators)")}
)


def _form_post(summary_text: str, name: str, description: str, fields: dict[str, Any]) -> dict[str, Any]:
    path = {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer"},
    }
    op = _html(summary_text, path)
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "required": list(fields), "properties": fields}
            }
        },
    }
    op["responses"] = {
        "303": {"description": "Done: back to /ui/sync, which shows the result"},
        **openapi._errors(400, 401, 403, 404, 409),
    }
    return op


_TOKEN = {"csrf_token": {"type": "string", "description": "The session's CSRF token (from the page's form)"}}
openapi.describe(
    "/ui/sync/retry/{id}",
    {"post": _form_post("Console: retry a dead outbox entry", "id", "Outbox entry id", _TOKEN)},
)
_resolve = _form_post(
    "Console: settle a pull conflict (keep ours / take the server's)",
    "conflict_id",
    "Pull conflict id",
    {**_TOKEN, "keep": {"type": "string", "enum": list(resolve.CHOICES)}},
)
_resolve["responses"]["422"] = {"description": "The merged case fails validation: the page shows why"}
openapi.describe("/ui/sync/conflicts/{conflict_id}", {"post": _resolve})

"""``POST /sync/conflicts/<id>/resolve`` and the console's ``/ui/sync`` page: scopes, bodies, CSRF, the
page's content and its forms (post, 303, the message on the page)."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from sqlalchemy import select

from service.store.cases import find
from service.store.pull_tables import pull_conflicts
from service.store.tables import outbox
from tests import sync_seed
from tests.support.auth import TEST_SECRET
from tests.unit.sync.conftest import example

OPERATOR_READ, OPERATOR = "system/*.r", "system/*.r system/*.u"


def token(scope: str, roles: tuple[str, ...] = ("registry",), sources: object = "*") -> dict[str, str]:
    """An operator's token: every source system unless ``sources`` binds it (``None``: no claim)."""
    claims = {"sub": "ops", "scope": scope, "exp": int(time.time()) + 300, "ivclms_roles": list(roles)}
    if sources is not None:
        claims["ivclms_sources"] = sources
    return {"Authorization": "Bearer " + jwt.encode(claims, TEST_SECRET, algorithm="HS256")}


@pytest.fixture
def engine(app):
    return app.extensions["ivclms"].engine


@pytest.fixture
def seeded(engine):
    """A case whose version 1 the server rejected, and an open conflict on its last contact."""
    ref = sync_seed.case(engine, example(0))
    dead = sync_seed.dead_letter(engine, ref, 1)
    conflict = sync_seed.outcome_conflict(engine, ref, "2025-02-01")
    return ref, dead, conflict


def resolved(engine, conflict_id: int) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            select(pull_conflicts.c.resolved_at).where(pull_conflicts.c.id == conflict_id)
        ).one()
    return row.resolved_at is not None


def post_keep(client, conflict_id: int, body, headers=None):
    sent = token(OPERATOR) if headers is None else headers
    return client.post(f"/sync/conflicts/{conflict_id}/resolve", json=body, headers=sent)


# ---- the API ---------------------------------------------------------------------------------------


def test_resolve_needs_an_operators_read_and_update(client, engine, seeded):
    _, _, conflict = seeded
    assert post_keep(client, conflict, {"keep": "ours"}, headers={}).status_code == 401
    for scope, roles in (
        ("system/*.u", ("registry",)),  # the page shows the server's resource: read too
        (OPERATOR_READ, ("registry",)),
        ("system/Patient.r system/Patient.u", ("registry",)),
        (OPERATOR, ()),  # not an operator: a client bound to no hospital
        ("bound", ()),  # nor one bound to one hospital, without the registry role
    ):
        headers = (
            token(OPERATOR, roles, sources=["urn:ivclms:example:hospital-a"])
            if scope == "bound"
            else token(scope, roles, sources=None if not roles else "*")
        )
        answer = post_keep(client, conflict, {"keep": "ours"}, headers=headers)
        assert answer.status_code == 403, (scope, roles)
        assert answer.json["resourceType"] == "OperationOutcome"
    assert not resolved(engine, conflict)


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ({}, "keep"),
        ({"keep": "mine"}, "keep"),
        ({"keep": 1}, "keep"),
        ({"keep": "ours", "force": True}, "force"),
        (["ours"], "$"),
    ],
)
def test_a_bad_body_is_400_naming_the_element(client, engine, seeded, body, expression):
    _, _, conflict = seeded
    answer = post_keep(client, conflict, body)
    assert answer.status_code == 400
    assert answer.json["issue"][0]["expression"] == [expression]
    assert not resolved(engine, conflict)


def test_a_body_that_is_not_json_is_refused(client, seeded):
    _, _, conflict = seeded
    headers = {**token(OPERATOR), "Content-Type": "text/plain"}
    answer = client.post(f"/sync/conflicts/{conflict}/resolve", data="keep=ours", headers=headers)
    assert answer.status_code == 415


def test_keep_ours_then_409_and_unknown_404(client, engine, seeded):
    ref, _, conflict = seeded
    answer = post_keep(client, conflict, {"keep": "ours"})
    assert answer.status_code == 200, answer.json
    expected = {
        "id": conflict,
        "keep": "ours",
        "case_ref": ref,
        "version": 1,
        "queued": True,
        "changed": False,
    }
    assert answer.json == expected
    assert resolved(engine, conflict)
    again = post_keep(client, conflict, {"keep": "theirs"})
    assert again.status_code == 409
    assert again.json["issue"][0]["code"] == "conflict"
    assert post_keep(client, 999999, {"keep": "ours"}).status_code == 404


def test_take_theirs_through_the_api(client, engine, seeded):
    ref, _, conflict = seeded
    answer = post_keep(client, conflict, {"keep": "theirs"})
    assert answer.status_code == 200, answer.json
    assert (answer.json["version"], answer.json["changed"]) == (2, True)
    case = client.get(f"/cases/{ref}", headers=token(OPERATOR)).json
    assert case["outcome"]["last_contact"] == "2025-02-01"


def test_take_theirs_the_validation_rejects_is_422_and_stays_open(client, engine):
    ref = sync_seed.case(engine, example(0))
    conflict = sync_seed.outcome_conflict(engine, ref, "2999-01-01")
    answer = post_keep(client, conflict, {"keep": "theirs"})
    assert answer.status_code == 422
    assert answer.json["resourceType"] == "OperationOutcome"
    assert not resolved(engine, conflict)
    with engine.connect() as conn:
        assert find(conn, ref).version == 1


def test_the_resolve_route_is_in_the_openapi_document(client):
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)
    operation = document["paths"]["/sync/conflicts/{conflict_id}/resolve"]["post"]
    assert {"400", "403", "404", "409", "422"} <= set(operation["responses"])


# ---- the console page ---------------------------------------------------------------------------------

HTML = {"Accept": "text/html"}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_the_page_shows_the_queue_dead_letters_and_conflicts(client, seeded):
    ref, dead, conflict = seeded
    answer = client.get("/ui/sync", headers={**HTML, **token(OPERATOR_READ)})
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert f'<a href="/ui/cases/{ref}">' in page
    assert "Profile not loaded" in page and "Observation.meta.profile[0]" in page  # the server's issues
    assert f'action="/ui/sync/retry/{dead}"' in page
    assert f'action="/ui/sync/conflicts/{conflict}"' in page
    # side by side: the service's date against the server's, marked as differing
    assert re.search(
        r'<tr class="changed"><td><code>effectiveDateTime</code></td><td><del>&#34;[0-9-]+&#34;</del></td>'
        r"<td><ins>&#34;2025-02-01&#34;</ins></td>",
        page,
    ), page
    assert '<a href="/ui/sync">Sync</a>' in page


def test_the_page_needs_an_operator(client, seeded):
    assert (
        client.get("/ui/sync", headers={**HTML, **token("system/*.r", roles=(), sources=None)}).status_code
        == 403
    )
    assert client.get("/ui/sync", headers={**HTML, **token("system/Patient.r")}).status_code == 403


def test_the_forms_need_the_csrf_token(client, engine, seeded):
    _, dead, conflict = seeded
    headers = {**HTML, **token(OPERATOR)}
    client.get("/ui/sync", headers=headers)  # a session exists
    assert client.post(f"/ui/sync/retry/{dead}", data={}, headers=headers).status_code == 403
    forged = {"csrf_token": "forged", "keep": "ours"}
    assert client.post(f"/ui/sync/conflicts/{conflict}", data=forged, headers=headers).status_code == 403
    with engine.connect() as conn:
        assert conn.execute(select(outbox.c.state).where(outbox.c.id == dead)).scalar_one() == "dead"
    assert not resolved(engine, conflict)


def test_the_forms_need_an_operators_update(client, engine, seeded):
    _, dead, conflict = seeded
    headers = {**HTML, **token(OPERATOR_READ)}
    csrf = csrf_of(client.get("/ui/sync", headers=headers).get_data(as_text=True))
    assert (
        client.post(f"/ui/sync/retry/{dead}", data={"csrf_token": csrf}, headers=headers).status_code == 403
    )
    keep = {"csrf_token": csrf, "keep": "ours"}
    assert client.post(f"/ui/sync/conflicts/{conflict}", data=keep, headers=headers).status_code == 403
    assert not resolved(engine, conflict)


def test_retry_and_keep_ours_from_the_page(client, engine, seeded):
    _, dead, conflict = seeded
    headers = {**HTML, **token(OPERATOR)}
    csrf = csrf_of(client.get("/ui/sync", headers=headers).get_data(as_text=True))

    answer = client.post(f"/ui/sync/retry/{dead}", data={"csrf_token": csrf}, headers=headers)
    assert (answer.status_code, answer.headers["Location"]) == (303, "/ui/sync")
    with engine.connect() as conn:
        assert conn.execute(select(outbox.c.state).where(outbox.c.id == dead)).scalar_one() == "pending"
    shown = client.get("/ui/sync", headers=headers).get_data(as_text=True)
    assert f"Outbox entry {dead} is pending" in shown
    assert f'action="/ui/sync/retry/{dead}"' not in shown

    url = f"/ui/sync/conflicts/{conflict}"
    assert client.post(url, data={"csrf_token": csrf, "keep": "both"}, headers=headers).status_code == 400
    assert client.post(url, data={"csrf_token": csrf, "keep": "ours"}, headers=headers).status_code == 303
    assert resolved(engine, conflict)
    shown = client.get("/ui/sync", headers=headers).get_data(as_text=True)
    assert f"Conflict {conflict}: kept the service&#39;s side" in shown
    assert "No open pull conflicts." in shown


def test_a_rejected_take_theirs_is_shown_on_the_page(client, engine):
    ref = sync_seed.case(engine, example(0))
    conflict = sync_seed.outcome_conflict(engine, ref, "2999-01-01")
    headers = {**HTML, **token(OPERATOR)}
    csrf = csrf_of(client.get("/ui/sync", headers=headers).get_data(as_text=True))
    form = {"csrf_token": csrf, "keep": "theirs"}
    answer = client.post(f"/ui/sync/conflicts/{conflict}", data=form, headers=headers)
    assert answer.status_code == 422
    page = answer.get_data(as_text=True)
    assert 'role="alert"' in page and "Nothing was stored" in page
    assert "last_contact" in page  # the validation's issue names the element
    assert not resolved(engine, conflict)


def bound_token(sources: list[str]) -> dict[str, str]:
    claims = {
        "sub": "ops-a",
        "scope": OPERATOR,
        "exp": int(time.time()) + 300,
        "ivclms_roles": ["registry"],
        "ivclms_sources": sources,
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, TEST_SECRET, algorithm="HS256")}


def test_an_operator_bound_to_another_hospital_may_not_write_this_ones_case(client, engine, seeded):
    """Outside review: a registry-role token bound to hospital A resolved and retried hospital B's case
    (PUT /cases/{id} refuses it: docs/security.md, a client writes only its bound source systems)."""
    ref, dead, conflict = seeded
    with engine.connect() as conn:
        own = find(conn, ref).source_system
    other = bound_token(["urn:ivclms:example:another-hospital"])
    for keep in ("ours", "theirs"):
        assert post_keep(client, conflict, {"keep": keep}, headers=other).status_code == 403
    assert client.post(f"/sync/retry/{dead}", headers=other).status_code == 403
    assert not resolved(engine, conflict)
    with engine.connect() as conn:
        state = conn.execute(select(outbox.c.state).where(outbox.c.id == dead)).scalar()
    assert state == "dead"
    mine = bound_token([own])
    assert client.post(f"/sync/retry/{dead}", headers=mine).status_code == 200
    assert post_keep(client, conflict, {"keep": "ours"}, headers=mine).status_code == 200

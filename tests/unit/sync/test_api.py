"""``/sync/status`` and ``/sync/retry/<id>``: scopes, statuses, bodies."""

from __future__ import annotations

import time

import jwt
import pytest
from sqlalchemy import update

from service import create_app
from service.api import sync as sync_api
from service.intake import Intake
from service.store.tables import outbox
from tests.support.auth import TEST_SECRET
from tests.unit.sync.conftest import example


def token(scope: str, roles: tuple[str, ...] = ("registry",), sources: str | None = None) -> dict[str, str]:
    """An operator's token by default (the registry role reads across every source system)."""
    claims: dict[str, object] = {"sub": "ops", "scope": scope, "exp": int(time.time()) + 300}
    claims["ivclms_roles"] = list(roles)
    if sources is not None:
        claims["ivclms_sources"] = sources
    return {"Authorization": "Bearer " + jwt.encode(claims, TEST_SECRET, algorithm="HS256")}


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(fhir_url="http://fhir.test/fhir"))
    if "sync" not in application.blueprints:  # until service.api registers it
        application.register_blueprint(sync_api.bp)
    application.config["TESTING"] = True
    yield application
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def engine(app):
    return app.extensions["ivclms"].engine


def queue_one(engine, state: str) -> int:
    intake = Intake(engine, enqueue=True)
    intake.submit(intake.prepare(example(0)), "test")
    with engine.begin() as conn:
        conn.execute(update(outbox).values(state=state, last_error="rejected: HTTP 400", attempts=1))
    with engine.connect() as conn:
        return int(conn.execute(outbox.select()).first().id)


def test_status_needs_a_read_scope(client):
    assert client.get("/sync/status").status_code == 401
    assert client.get("/sync/status", headers=token("system/Observation.rs")).status_code == 403
    # Dead letters quote any hospital's case: whole-case reads (every type) and an operator's reach.
    assert client.get("/sync/status", headers=token("system/Patient.r")).status_code == 403
    assert client.get("/sync/status", headers=token("system/*.r", roles=())).status_code == 403
    answer = client.get("/sync/status", headers=token("system/*.r"))
    assert answer.status_code == 200
    assert answer.json["depth"]["pending"] == 0
    assert answer.json["dead"] == []


def test_status_lists_dead_entries(client, engine):
    entry_id = queue_one(engine, "dead")
    body = client.get("/sync/status", headers=token("system/*.r")).json
    assert body["depth"]["dead"] == 1
    (dead,) = body["dead"]
    assert (dead["id"], dead["version"], dead["attempts"], dead["last_error"]) == (
        entry_id,
        1,
        1,
        "rejected: HTTP 400",
    )


def test_retry_a_dead_entry(client, engine):
    entry_id = queue_one(engine, "dead")
    assert client.post(f"/sync/retry/{entry_id}", headers=token("system/*.r")).status_code == 403
    assert client.post(f"/sync/retry/{entry_id}", headers=token("system/Patient.u")).status_code == 403
    # the registry role reads every hospital's queue, but a retry re-sends a case: its source bound
    assert client.post(f"/sync/retry/{entry_id}", headers=token("system/*.u")).status_code == 403
    answer = client.post(f"/sync/retry/{entry_id}", headers=token("system/*.u", sources="*"))
    assert answer.status_code == 200
    assert answer.json == {"id": entry_id, "state": "pending"}
    again = client.post(f"/sync/retry/{entry_id}", headers=token("system/*.u", sources="*"))
    assert again.status_code == 409
    assert again.json["resourceType"] == "OperationOutcome"


def test_retry_of_an_unknown_entry_is_404(client):
    answer = client.post("/sync/retry/12345", headers=token("system/*.cruds"))
    assert answer.status_code == 404
    assert answer.json["issue"][0]["code"] == "not-found"


def test_the_sync_routes_are_in_the_openapi_document(app, client):
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)
    assert set(document["paths"]["/sync/status"]) == {"get"}
    assert {"404", "409"} <= set(document["paths"]["/sync/retry/{id}"]["post"]["responses"])

"""Issue 12, finding 2: one gate for what enters, on every write route.

SMART App Launch v2 (scopes-and-launch-context, "Scopes for requesting FHIR resources"): "c: create",
"u: update", "d: delete" are separate permissions, so a ``system/*.c`` client creates only. A case
is a whole record of every type its Bundle holds, so each write needs the action on each of them.
Clients are bound to the source systems (hospitals) whose cases they may write (``ivclms_sources``
claim, ``IVCLMS_AUTH_CLIENT_SOURCES`` table).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask.testing import FlaskClient

from service import create_app
from service.api.writes import case_writes
from service.auth import Principal
from service.errors import Forbidden
from service.intake import Change, bundle_types
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.model.csv_flat import write_csv
from service.store.cases import ENTERED_IN_ERROR, case_ref
from tests.support.examples import EXAMPLES
from tests.tokens import bearer
from tests.unit.mapping.test_recognise import plain

NOW = "2026-01-01T00:00:00Z"
HOSPITAL_A = "urn:ivclms:example:hospital-a"
HOSPITAL_B = "urn:ivclms:example:hospital-b"
ADMIN = bearer("system/*.cruds")
CSV = "text/csv"
FHIR = "application/fhir+json"


def example(n: int = 0, **changes: Any) -> dict[str, Any]:
    case = validate_case(json.loads(EXAMPLES[n].read_text()))
    case.update(changes)
    return case


def changed(case: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(case), "institution": "Somewhere Else Entirely"}


def ref(case: dict[str, Any]) -> str:
    return case_ref(case["source_system"], case["case_id"])


def bundle(*cases: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    entries = [e for case in cases for e in case_to_bundle(case, now=NOW)["entry"]]
    if kind == "collection":  # bdl-3: entry.request is prohibited in a collection
        entries = [{k: v for k, v in e.items() if k != "request"} for e in entries]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def stored(client: FlaskClient, case: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str | None]:
    """(HTTP status, case JSON, X-Case-Status) as an all-powerful reader sees it."""
    resp = client.get(f"/cases/{ref(case)}", headers=ADMIN)
    return (
        resp.status_code,
        resp.get_json() if resp.status_code == 200 else None,
        resp.headers.get("X-Case-Status"),
    )


def count(client: FlaskClient) -> int:
    return len(client.get("/cases?_count=500", headers=ADMIN).get_json()["cases"])


Write = Callable[[FlaskClient, dict[str, str], dict[str, Any]], Any]


def post_case(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    return client.post("/cases", json=case, headers=headers)


def import_csv(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    return client.post("/cases/import", data=write_csv([case]), headers=headers, content_type=CSV)


def fhir_transaction(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    return client.post("/fhir", data=json.dumps(bundle(case)), headers=headers, content_type=FHIR)


def fhir_batch(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    body = bundle(case, kind="batch")
    return client.post("/fhir", data=json.dumps(body), headers=headers, content_type=FHIR)


def fhir_collection(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    body = bundle(case, kind="collection")
    return client.post("/fhir", data=json.dumps(body), headers=headers, content_type=FHIR)


def put_case(client: FlaskClient, headers: dict[str, str], case: dict[str, Any]) -> Any:
    return client.put(f"/cases/{ref(case)}", json=case, headers=headers)


CREATING = [post_case, import_csv, fhir_transaction, fhir_batch, fhir_collection]
UPDATING = [import_csv, fhir_transaction, fhir_batch, fhir_collection, put_case]


def refused(resp: Any) -> bool:
    """403 for the request, or (a FHIR batch) 403 on every data entry of the case (Provenance entries
    carry no data and are answered 200 OK)."""
    if resp.status_code == 403:
        return True
    body = resp.get_json()
    if resp.status_code == 200 and body.get("type") == "batch-response":
        statuses = {e["response"]["status"] for e in body["entry"]}
        return statuses - {"200 OK"} == {"403 Forbidden"}
    return False


def ok(resp: Any) -> bool:
    body = resp.get_json()
    if resp.status_code not in (200, 201):
        return False
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        return all(e["response"]["status"][:3] in ("200", "201") for e in body["entry"])
    return True


# ---- create only creates ---------------------------------------------------------------------------


@pytest.mark.parametrize("write", [*CREATING, put_case], ids=lambda w: w.__name__)
def test_finding_2_patient_create_scope_writes_no_case(client, write):
    """``system/Patient.c`` does not cover the Condition, Observation, ... a case holds: refused, and
    nothing is stored (a new case or a new version alike)."""
    headers = bearer("system/Patient.c")
    case = example()
    assert refused(write(client, headers, case))
    assert count(client) == 0
    assert post_case(client, ADMIN, case).status_code == 201
    assert refused(write(client, headers, changed(case)))
    _, body, _ = stored(client, case)
    assert body == case


@pytest.mark.parametrize("write", CREATING, ids=lambda w: w.__name__)
def test_finding_2_create_scope_creates_a_new_case(client, write):
    resp = write(client, bearer("system/*.c"), example())
    assert ok(resp), resp.get_json()
    assert stored(client, example())[1] == example()


@pytest.mark.parametrize("write", UPDATING, ids=lambda w: w.__name__)
def test_finding_2_create_scope_does_not_change_an_existing_case(client, write):
    """The reproduction: a create-only token stored a new version (changed institution) through
    ``POST /cases/import`` and ``POST /fhir``; now 403, and the stored case is the first one."""
    case = example()
    assert post_case(client, ADMIN, case).status_code == 201
    resp = write(client, bearer("system/*.c"), changed(case))
    assert refused(resp), resp.get_json()
    _, body, _ = stored(client, case)
    assert body == case
    history = client.get(f"/cases/{ref(case)}/history", headers=ADMIN).get_json()["versions"]
    assert len(history) == 1


def test_finding_2_create_scope_post_of_other_content_is_409_not_a_new_version(client):
    case = example()
    post_case(client, ADMIN, case)
    assert post_case(client, bearer("system/*.c"), changed(case)).status_code == 409
    assert stored(client, case)[1] == case


@pytest.mark.parametrize("write", UPDATING, ids=lambda w: w.__name__)
def test_finding_2_update_scope_changes_an_existing_case(client, write):
    case = example()
    post_case(client, ADMIN, case)
    resp = write(client, bearer("system/*.cu"), changed(case))
    assert ok(resp), resp.get_json()
    assert stored(client, case)[1] == changed(case)


def test_finding_2_update_needs_u_on_every_type_of_the_case(client):
    case = example()
    post_case(client, ADMIN, case)
    resp = import_csv(client, bearer("system/*.c system/Patient.u"), changed(case))
    assert resp.status_code == 403
    message = resp.get_json()["issue"][0]["diagnostics"]
    assert "system/Observation.u" in message and "system/Patient.u" not in message
    assert stored(client, case)[1] == case


@pytest.mark.parametrize("write", CREATING, ids=lambda w: w.__name__)
def test_finding_2_same_content_again_needs_only_create(client, write):
    """FHIR R4 conditional create (http.html#ccreate): "One Match: The server ignores the post and
    returns 200 OK". A create-only client resending its case is answered, nothing is written."""
    case = example()
    post_case(client, ADMIN, case)
    resp = write(client, bearer("system/*.c"), case)
    assert ok(resp) and resp.status_code == 200, resp.get_json()
    if write is post_case:
        assert resp.get_json() == case
    history = client.get(f"/cases/{ref(case)}/history", headers=ADMIN).get_json()["versions"]
    assert len(history) == 1


# ---- withdrawal and revival ------------------------------------------------------------------------


def test_finding_2_withdrawal_needs_delete(client):
    case = example()
    post_case(client, ADMIN, case)
    for scope in ("system/*.cu", "system/*.cru", "system/Patient.d"):
        assert client.delete(f"/cases/{ref(case)}", headers=bearer(scope)).status_code == 403, scope
        assert stored(client, case)[2] == "active"
    resp = client.delete(f"/cases/{ref(case)}", headers=bearer("system/*.d"))
    assert resp.status_code == 200
    assert stored(client, case)[2] == ENTERED_IN_ERROR


@pytest.mark.parametrize("write", CREATING, ids=lambda w: w.__name__)
def test_finding_2_reviving_a_withdrawn_case_is_an_update(client, write):
    """The reproduction: re-importing a withdrawn (entered-in-error) case with a create-only token
    made it active again. Now it needs ``u`` (and POST /cases, create only, never revives)."""
    case = example()
    post_case(client, ADMIN, case)
    assert client.delete(f"/cases/{ref(case)}", headers=ADMIN).status_code == 200
    resp = write(client, bearer("system/*.c"), case)
    assert refused(resp) or resp.status_code == 409, resp.get_json()
    assert stored(client, case)[2] == ENTERED_IN_ERROR
    if write is not post_case:
        assert ok(write(client, bearer("system/*.cu"), case))
        assert stored(client, case)[2] == "active"


# ---- source-system binding -------------------------------------------------------------------------


@pytest.mark.parametrize("write", [*CREATING, put_case], ids=lambda w: w.__name__)
def test_finding_2_a_client_writes_only_its_own_source_systems(client, write):
    """A hospital-B client with every scope may not write hospital A's cases, new or existing; the
    403 names the source and how to bind a client."""
    headers = bearer("system/*.cruds", sources=[HOSPITAL_B], roles=None)
    case = example()
    assert case["source_system"] == HOSPITAL_A
    if write is not put_case:
        resp = write(client, headers, case)
        assert refused(resp)
        assert count(client) == 0
    post_case(client, ADMIN, case)
    resp = write(client, headers, changed(case))
    assert refused(resp)
    body = resp.get_json()
    outcome = body if body["resourceType"] == "OperationOutcome" else body["entry"][0]["response"]["outcome"]
    message = outcome["issue"][0]["diagnostics"]
    assert HOSPITAL_A in message and "ivclms_sources" in message and "IVCLMS_AUTH_CLIENT_SOURCES" in message
    assert stored(client, case)[1] == case
    own = bearer("system/*.cruds", sources=[HOSPITAL_A], roles=None)
    resp = write(client, own, changed(case))
    assert resp.status_code == 409 if write is post_case else ok(resp)  # POST /cases creates only


def test_finding_2_a_client_bound_to_nothing_writes_nothing(client):
    headers = bearer("system/*.cruds", sources=None, roles=None)
    assert post_case(client, headers, example()).status_code == 403
    assert count(client) == 0


def test_finding_2_withdrawing_another_hospitals_case(client):
    """A case of a source the caller may not read is answered like a missing one (404: ids derive
    from business keys); a registry reader bound to another hospital gets 403."""
    case = example()
    post_case(client, ADMIN, case)
    other = bearer("system/*.cruds", sources=[HOSPITAL_B], roles=None)
    assert client.delete(f"/cases/{ref(case)}", headers=other).status_code == 404
    registry = bearer("system/*.cruds", sources=[HOSPITAL_B], roles=["registry"])
    assert client.delete(f"/cases/{ref(case)}", headers=registry).status_code == 403
    assert stored(client, case)[2] == "active"


def test_finding_2_source_system_parameter_and_default_count(app, client):
    """Plain R4 resources carry no source: ``?source-system=`` names it, else IVCLMS_SOURCE_SYSTEM.
    Either is the source the client must be bound to."""
    plain_bundle = plain(case_to_bundle(example(), now=NOW))
    data = json.dumps(plain_bundle)
    headers = bearer("system/*.cruds", sources=[HOSPITAL_A], roles=None)
    other = f"?source-system={HOSPITAL_B}"
    resp = client.post("/fhir" + other, data=data, headers=headers, content_type=FHIR)
    assert resp.status_code == 403 and HOSPITAL_B in resp.get_json()["issue"][0]["diagnostics"]
    default = app.extensions["ivclms"].settings.source_system
    resp = client.post("/fhir", data=data, headers=headers, content_type=FHIR)
    assert resp.status_code == 403 and default in resp.get_json()["issue"][0]["diagnostics"]
    assert count(client) == 0
    resp = client.post(f"/fhir?source-system={HOSPITAL_A}", data=data, headers=headers, content_type=FHIR)
    assert resp.status_code == 200, resp.get_json()
    assert count(client) == 1


def test_finding_2_client_sources_table_binds_a_client(settings):
    """IVCLMS_AUTH_CLIENT_SOURCES: the operator's client -> source systems table, added to the claim."""
    table = json.dumps({"ehr-a": [HOSPITAL_A.upper()]})  # compared case-folded, like stored sources
    app = create_app(settings.replace(auth_client_sources=table))
    client = app.test_client()
    try:
        ehr_a = bearer("system/*.cruds", sources=None, roles=None, sub=None, client_id="ehr-a")
        ehr_b = bearer("system/*.cruds", sources=None, roles=None, sub=None, client_id="ehr-b")
        assert post_case(client, ehr_b, example()).status_code == 403
        assert post_case(client, ehr_a, example()).status_code == 201
        assert post_case(client, ehr_a, example(1)).status_code == 403  # hospital-b
        assert fhir_transaction(client, ehr_a, example(1)).status_code == 403
        assert import_csv(client, ehr_a, changed(example())).status_code == 200
    finally:
        app.extensions["ivclms"].engine.dispose()


# ---- Bundles: batch per patient, transaction all or nothing ------------------------------------------


def test_finding_2_batch_refuses_only_the_group_the_client_may_not_write(client):
    """FHIR R4 http.html#transaction: in a batch "there SHALL be no interdependencies between the
    different entries": a refused patient fails only its own entries (403 in the batch-response)."""
    mine, theirs = example(0), example(1)
    assert (mine["source_system"], theirs["source_system"]) == (HOSPITAL_A, HOSPITAL_B)
    body = bundle(mine, theirs, kind="batch")
    headers = bearer("system/*.cruds", sources=[HOSPITAL_A], roles=None)
    resp = client.post("/fhir", data=json.dumps(body), headers=headers, content_type=FHIR)
    assert resp.status_code == 200, resp.get_json()
    entries = resp.get_json()["entry"]
    my_urls = {e["fullUrl"] for e in bundle(mine)["entry"]}
    for sent, got in zip(body["entry"], entries, strict=True):
        kind = sent["resource"]["resourceType"]
        if kind == "Provenance":
            continue
        expected = "201 Created" if sent["fullUrl"] in my_urls else "403 Forbidden"
        assert got["response"]["status"] == expected, kind
    assert {e["response"]["status"] for e in entries} == {"200 OK", "201 Created", "403 Forbidden"}
    assert stored(client, mine)[0] == 200
    assert stored(client, theirs)[0] == 404


@pytest.mark.parametrize("kind", ["transaction", "collection"])
def test_finding_2_transaction_is_refused_whole(client, kind):
    body = bundle(example(0), example(1), kind=kind)
    headers = bearer("system/*.cruds", sources=[HOSPITAL_A], roles=None)
    resp = client.post("/fhir", data=json.dumps(body), headers=headers, content_type=FHIR)
    assert resp.status_code == 403
    assert count(client) == 0


def test_finding_2_csv_import_is_refused_whole(client):
    text = write_csv([example(0), example(1)])
    headers = bearer("system/*.cruds", sources=[HOSPITAL_A], roles=None)
    resp = client.post("/cases/import", data=text, headers=headers, content_type=CSV)
    assert resp.status_code == 403
    assert count(client) == 0


# ---- the decision is the intake's, under the row lock ------------------------------------------------


def test_finding_2_intake_asks_with_what_the_write_really_does(app):
    """``Intake`` decides create / update / nothing / withdraw inside its transaction and asks the
    callback with the types of the stored and the new Bundle; a refusal stores nothing."""
    intake = app.extensions["ivclms"].intake
    seen: list[tuple[Change, frozenset[str]]] = []

    def record(write: Any) -> None:
        seen.append((write.change, write.types))

    case = example(0)  # with a Device (the graft)
    smaller = copy.deepcopy(case)
    repair = {"method": "primary_repair", "graft_material": None, "graft_diameter_mm": None}
    smaller["surgery"][0]["ivc_management"] = repair
    smaller["surgery"][0]["renal_veins"][0]["management"] = "ligation"
    first = intake.prepare(case)
    intake.submit(first, "t", authorize=record)
    intake.submit(first, "t", authorize=record)
    second = intake.prepare(smaller)
    intake.submit_many([second], "t", authorize=record)
    intake.retract(first.ref, "t", None, authorize=record)
    changes = [c for c, _ in seen]
    assert changes == [Change.CREATE, Change.NONE, Change.UPDATE, Change.WITHDRAW]
    assert "Device" in bundle_types(first.bundle) and "Device" not in bundle_types(second.bundle)
    assert "Device" in seen[2][1]  # the update removes the Device: it changes that type too

    allowed, other = intake.prepare(example(2)), intake.prepare(example(3))

    def refuse_other(write: Any) -> None:
        if write.ref == other.ref:
            raise Forbidden("not this one")

    with pytest.raises(Forbidden):
        intake.submit_many([allowed, other], "t", authorize=refuse_other)
    assert {r.case_id for r in intake.page(limit=50)[0]} == {case["case_id"]}
    results = intake.submit_each([allowed, other], "t", authorize=refuse_other)
    assert isinstance(results[1], Forbidden) and not isinstance(results[0], Forbidden)
    assert {r.case_id for r in intake.page(limit=50)[0]} == {case["case_id"], allowed.case["case_id"]}


def test_finding_2_racing_create_only_writers_create_once_and_change_nothing(app):
    """Create-only writers racing to import different content for one new case: exactly one creates
    it, every other one finds it under the row lock (or on the retry after the unique key refused its
    insert) and is refused as an update; one version is stored. Runs on PostgreSQL too
    (IVCLMS_TEST_DB=postgres), where no lock serialises the inserts and the retry decides."""
    intake = app.extensions["ivclms"].intake
    writer = case_writes(Principal("ehr", frozenset({"system/*.c"}), sources=frozenset({HOSPITAL_A})))
    variants = [intake.prepare({**example(), "institution": f"Hospital {i}"}) for i in range(6)]
    barrier = threading.Barrier(len(variants))

    def write(prepared: Any) -> str:
        barrier.wait(30)
        try:
            return "created" if intake.submit_many([prepared], "ehr", authorize=writer)[0].created else "?"
        except Forbidden:
            return "refused"

    with ThreadPoolExecutor(len(variants)) as pool:
        outcomes = Counter(pool.map(write, variants))
    assert outcomes == {"created": 1, "refused": len(variants) - 1}, outcomes
    assert len(intake.history(variants[0].ref)) == 1

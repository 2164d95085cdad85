"""``POST /fhir``: Bundles as EHRs send them, stored as cases, answered entry by entry."""

from __future__ import annotations

import copy
import json

import pytest

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES
from tests.unit.mapping.test_recognise import find, plain

NOW = "2026-01-01T00:00:00Z"


def _bundle(*numbers: int, kind: str = "transaction") -> dict:
    entries = []
    for n in numbers:
        case = validate_case(json.loads(EXAMPLES[n].read_text()))
        entries += case_to_bundle(case, now=NOW)["entry"]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@pytest.fixture
def post(client):
    def _post(body, content_type="application/fhir+json", query=""):
        data = body if isinstance(body, bytes) else json.dumps(body)
        return client.post("/fhir" + query, data=data, headers=_auth(), content_type=content_type)

    return _post


def _cases(client) -> list[dict]:
    return client.get("/cases?_count=500", headers=_auth()).get_json()["cases"]


def test_profiled_transaction_for_two_patients_makes_two_cases(client, post):
    bundle = _bundle(0, 1)
    resp = post(bundle)
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
    for sent, got in zip(bundle["entry"], answer["entry"], strict=True):
        if sent["resource"]["resourceType"] == "Provenance":
            assert got["response"]["status"] == "200 OK"
            continue
        assert got["response"]["status"] == "201 Created"
        uuid = sent["fullUrl"].removeprefix("urn:uuid:")
        assert got["response"]["location"] == f"{sent['resource']['resourceType']}/{uuid}/_history/1"
    assert sorted(c["case_id"] for c in _cases(client)) == ["IVC-001", "IVC-002"]
    again = post(bundle).get_json()
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}
    assert len(_cases(client)) == 2


def test_stored_case_equals_the_case_that_was_mapped(client, post):
    post(_bundle(2))
    (row,) = _cases(client)
    stored = client.get(row["href"], headers=_auth()).get_json()
    assert stored == validate_case(json.loads(EXAMPLES[2].read_text()))


def test_plain_r4_collection_is_recognised(client, post):
    case = validate_case(json.loads(find("ivclms-001").read_text()))
    bundle = plain(case_to_bundle(case, now=NOW))
    resp = post(bundle, query="?source-system=urn:ivclms:example:ehr")
    assert resp.status_code == 200, resp.get_json()
    statuses = {e["response"]["status"] for e in resp.get_json()["entry"]}
    assert statuses == {"201 Created"}
    (row,) = _cases(client)
    assert row["source_system"] == "urn:ivclms:example:ehr"
    stored = client.get(row["href"], headers=_auth()).get_json()
    assert stored["surgery"] == case["surgery"]
    assert stored["diagnosis"] == case["diagnosis"]


def test_a_bad_patient_fails_the_whole_transaction(client, post):
    bundle = _bundle(0, 1)
    patient = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient" and "IVC-002" in e["resource"]["identifier"][0]["value"]
    )
    patient["birthDate"] = "not a date"
    resp = post(bundle)
    assert resp.status_code == 422
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert "birth" in json.dumps(resp.get_json())
    assert _cases(client) == []


def test_in_a_batch_a_bad_patient_fails_only_its_own_entries(client, post):
    bundle = _bundle(0, 1, kind="batch")
    second = [
        i for i, e in enumerate(bundle["entry"]) if "IVC-002" in json.dumps(e["resource"].get("identifier"))
    ]
    patient = next(i for i in second if bundle["entry"][i]["resource"]["resourceType"] == "Patient")
    bundle["entry"][patient]["resource"]["birthDate"] = "not a date"
    resp = post(bundle)
    assert resp.status_code == 200
    answer = resp.get_json()
    assert answer["type"] == "batch-response"
    assert answer["entry"][patient]["response"]["status"].startswith("422")
    assert answer["entry"][patient]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert answer["entry"][0]["response"]["status"] == "201 Created"
    assert [c["case_id"] for c in _cases(client)] == ["IVC-001"]


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({"resourceType": "Patient"}, 422, "Bundle.resourceType"),
        ({"resourceType": "Bundle", "type": "searchset", "entry": []}, 422, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "batch", "entry": []}, 422, "Bundle.entry"),
        (
            {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {}}]},
            422,
            "Bundle.entry[0].resource",
        ),
    ],
)
def test_not_a_usable_bundle_is_422_naming_the_element(client, post, body, status, expression):
    resp = post(body)
    assert resp.status_code == status
    assert expression in [e for i in resp.get_json()["issue"] for e in i.get("expression", [])]
    assert _cases(client) == []


def test_resources_without_a_patient_are_rejected(client, post):
    bundle = _bundle(0)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    for entry in bundle["entry"]:
        entry["resource"].pop("subject", None)
    resp = post(copy.deepcopy(bundle))
    assert resp.status_code == 422
    assert _cases(client) == []


def test_wrong_content_type_is_415(post):
    assert post(_bundle(0), content_type="text/plain").status_code == 415


def test_a_broken_element_is_422_pointing_at_it_and_nothing_is_stored(client, post):
    bundle = _bundle(0)
    position, observation = next(
        (i, e["resource"])
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation"
    )
    observation["status"] = "bogus"
    resp = post(bundle)
    assert resp.status_code == 422
    expressions = [e for i in resp.get_json()["issue"] for e in i.get("expression", [])]
    assert f"Bundle.entry[{position}].resource.status" in expressions
    assert _cases(client) == []

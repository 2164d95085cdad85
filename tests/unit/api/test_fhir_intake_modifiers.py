"""``POST /fhir`` reads no fact the record denies (outside review, fix B).

The reviewer took the service's own Bundle of a case, edited one element and posted it back: a
``not-done`` surgery, an ``entered-in-error`` Observation, a refuted primary cancer, the grade
comparator moved out of ``modifierExtension``, ``deceasedBoolean: false`` beside vital status dead.
Each was stored as the original case. R4 says of these elements: Procedure.status "not-done: The
procedure was terminated prior to any activity beyond preparation" / Observation.status
"entered-in-error: The observation has been withdrawn following previous final release"
(both ``isModifier``), and extensibility.html "Implementations processing the data in resources SHALL
check for modifier extensions". Each edit must now answer 422 naming the element and store nothing;
what the case model itself says with these values (a therapy not given, a refuted uncertain lesion)
still goes through.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.settings import Settings
from tests.support.auth import TEST_SECRET
from tests.support.auth import auth_headers as _auth
from tests.unit.mapping.test_recognise import find, plain

NOW = "2026-01-01T00:00:00Z"
PREFIX = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-"
COMPARATOR = PREFIX + "grade-comparator"


@pytest.fixture(params=[True, False], ids=["validated", "unvalidated"])
def client(request: pytest.FixtureRequest, tmp_path: Any, db_url: str) -> Any:
    """Both with the profile validation of intake and without it: the intake's own rules must hold
    even where the validator is switched off (IVCLMS_VALIDATE_INTAKE=false)."""
    settings = Settings(
        data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, db_url=db_url, validate_intake=request.param
    )
    app: Flask = create_app(settings)
    app.config["TESTING"] = True
    yield app.test_client()
    app.extensions["ivclms"].engine.dispose()


def _case(stem: str = "ivclms-001") -> dict[str, Any]:
    return validate_case(json.loads(find(stem).read_text()))


def _bundle(case: dict[str, Any]) -> dict[str, Any]:
    bundle = case_to_bundle(validate_case(case), now=NOW)
    bundle["type"] = "transaction"
    return bundle


def _entry(bundle: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    """The position and resource of the (first) entry of profile ``ivclms-<name>``."""
    for i, entry in enumerate(bundle["entry"]):
        if PREFIX + name in entry["resource"].get("meta", {}).get("profile", []):
            return i, entry["resource"]
    raise AssertionError(f"no {name} in the bundle")


def _post(client: FlaskClient, bundle: dict[str, Any], query: str = "") -> Any:
    return client.post(
        "/fhir" + query, data=json.dumps(bundle), headers=_auth(), content_type="application/fhir+json"
    )


def _stored(client: FlaskClient) -> list[dict[str, Any]]:
    return client.get("/cases?_count=500", headers=_auth()).get_json()["cases"]


def _refused(
    client: FlaskClient, bundle: dict[str, Any], expression: str, words: str, query: str = ""
) -> None:
    resp = _post(client, bundle, query)
    body = resp.get_json()
    assert resp.status_code == 422, body
    assert body["resourceType"] == "OperationOutcome"
    named = [
        i for i in body["issue"] if expression in i.get("expression", []) or expression in i["diagnostics"]
    ]
    assert named, body
    assert any(words in i["diagnostics"] for i in named), body
    assert _stored(client) == []


def test_the_own_bundle_unedited_is_stored(client: FlaskClient) -> None:
    resp = _post(client, _bundle(_case()))
    assert resp.status_code == 200, resp.get_json()
    assert len(_stored(client)) == 1


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("not-done", "was not done"),
        ("entered-in-error", "was entered in error"),
        # R4 event-status: "preparation: The core event has not started yet, but some staging activities
        # have begun"
        ("preparation", "has not started"),
    ],
)
def test_a_surgery_that_did_not_happen_is_refused(client: FlaskClient, status: str, words: str) -> None:
    bundle = _bundle(_case())
    i, surgery = _entry(bundle, "surgery")
    surgery["status"] = status
    _refused(client, bundle, f"Bundle.entry[{i}].resource.status", words)


def test_a_surgery_not_done_is_refused_in_plain_r4_too(client: FlaskClient) -> None:
    case = _case()
    bundle = _bundle(case)
    _, surgery = _entry(bundle, "surgery")
    surgery["status"] = "not-done"
    sent = plain(bundle)
    i = next(n for n, e in enumerate(sent["entry"]) if e["resource"].get("status") == "not-done")
    _refused(
        client,
        sent,
        f"Bundle.entry[{i}].resource.status",
        "cannot be a tumour resection of the case",
        query="?source-system=urn:ivclms:example:ehr",
    )


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("complication", "entered-in-error"),
        ("neoadjuvant-response", "entered-in-error"),
        ("vital-status", "cancelled"),
        # R4 observation-status: "registered: The existence of the observation is registered, but there is
        # no result yet available"
        ("vital-status", "registered"),
    ],
)
def test_a_withdrawn_observation_is_refused(client: FlaskClient, name: str, status: str) -> None:
    bundle = _bundle(_case())
    i, observation = _entry(bundle, name)
    observation["status"] = status
    _refused(client, bundle, f"Bundle.entry[{i}].resource.status", f"(status {status})")


@pytest.mark.parametrize(
    "code",
    # R4 condition-ver-status: unconfirmed "There is not sufficient diagnostic and/or clinical evidence to
    # treat this as a confirmed condition"; provisional and differential are its children
    ["refuted", "entered-in-error", "unconfirmed", "provisional", "differential"],
)
def test_a_refuted_primary_cancer_is_refused(client: FlaskClient, code: str) -> None:
    bundle = _bundle(_case())
    i, condition = _entry(bundle, "primary-cancer")
    condition["verificationStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code}]
    }
    if code == "entered-in-error":
        condition.pop("clinicalStatus", None)  # con-5
    _refused(client, bundle, f"Bundle.entry[{i}].resource.verificationStatus", f"(verificationStatus {code})")


def _bound_grade() -> dict[str, Any]:
    case = _case()
    case["postoperative"]["complications"][0]["clavien_dindo"] = {"comparator": "<", "value": "IIIa"}
    return case


def test_the_grade_comparator_as_modifier_extension_is_kept(client: FlaskClient) -> None:
    resp = _post(client, _bundle(_bound_grade()))
    assert resp.status_code == 200, resp.get_json()
    (row,) = _stored(client)
    stored = client.get(row["href"], headers=_auth()).get_json()
    assert stored["postoperative"]["complications"][0]["clavien_dindo"] == {
        "comparator": "<",
        "value": "IIIa",
    }


def test_the_grade_comparator_as_plain_extension_is_refused(client: FlaskClient) -> None:
    bundle = _bundle(_bound_grade())
    i, observation = _entry(bundle, "complication")
    c = next(n for n, comp in enumerate(observation["component"]) if "modifierExtension" in comp)
    component = observation["component"][c]
    component["extension"] = component.pop("modifierExtension")
    _refused(
        client,
        bundle,
        f"Bundle.entry[{i}].resource.component[{c}].extension[0]",
        "must not be used as an extension (it's a modifierExtension)",
    )


def test_an_unknown_modifier_extension_is_refused(client: FlaskClient) -> None:
    bundle = _bundle(_case())
    i, surgery = _entry(bundle, "surgery")
    surgery["modifierExtension"] = [
        {"url": "https://hospital.example/fhir/cancelled-by-patient", "valueBoolean": True}
    ]
    _refused(client, bundle, f"Bundle.entry[{i}].resource.modifierExtension[0]", "modifier")


def test_deceased_false_beside_vital_status_dead_is_refused(client: FlaskClient) -> None:
    case = _case("ivclms-003")
    assert case["outcome"]["vital_status"] == "dead"
    bundle = _bundle(case)
    p, patient = _entry(bundle, "patient")
    v, _ = _entry(bundle, "vital-status")
    patient.pop("deceasedDateTime", None)
    patient["deceasedBoolean"] = False
    resp = _post(client, bundle)
    body = resp.get_json()
    assert resp.status_code == 422, body
    (issue,) = [i for i in body["issue"] if f"Bundle.entry[{p}].resource.deceasedBoolean" in i["diagnostics"]]
    assert f"Bundle.entry[{v}].resource.valueCodeableConcept" in issue["diagnostics"]
    assert "vital status is dead" in issue["diagnostics"]
    assert _stored(client) == []


def test_a_death_date_beside_vital_status_alive_is_refused(client: FlaskClient) -> None:
    bundle = _bundle(_case())
    p, patient = _entry(bundle, "patient")
    patient["deceasedDateTime"] = "2024-01-01"
    _refused(client, bundle, f"Bundle.entry[{p}].resource.deceasedDateTime", "vital status is alive")


def test_a_therapy_not_given_is_the_model_s_own_fact(client: FlaskClient) -> None:
    """MedicationStatement not-taken / Procedure not-done is what the mapping writes for "not_given"."""
    path = next(p for p in find("ivclms-0").parent.glob("literature/ivclms-020*.json"))
    case = validate_case(json.loads(path.read_text()))
    assert any(t["status"] == "not_given" for t in case["therapies"])
    resp = _post(client, _bundle(case))
    assert resp.status_code == 200, resp.get_json()
    (row,) = _stored(client)
    assert client.get(row["href"], headers=_auth()).get_json()["therapies"] == case["therapies"]


def test_a_refuted_uncertain_lesion_is_the_model_s_own_fact(client: FlaskClient) -> None:
    case = _case()
    case["diagnosis"]["uncertain_lesions"] = [
        {"site": "lung", "nature": "metastasis", "certainty": "refuted", "text": None, "date": None}
    ]
    case = validate_case(copy.deepcopy(case))
    resp = _post(client, _bundle(case))
    assert resp.status_code == 200, resp.get_json()
    (row,) = _stored(client)
    stored = client.get(row["href"], headers=_auth()).get_json()
    assert stored["diagnosis"]["uncertain_lesions"] == case["diagnosis"]["uncertain_lesions"]

"""``POST /fhir`` answers (issue 13, items 1, 2 and 8): what each entry of the answer names exists,
entries mean what they say, and data that is not an IVC-LMS case is told so briefly."""

from __future__ import annotations

import copy
import json

import pytest

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from tests.support.auth import auth_headers as _auth
from tests.unit.mapping.test_recognise import find, plain

NOW = "2026-01-01T00:00:00Z"
SOURCE = "?source-system=urn:ivclms:example:ehr"


@pytest.fixture
def post(client):
    def _post(body, query=SOURCE, scope="system/*.cruds"):
        return client.post(
            "/fhir" + query, data=json.dumps(body), headers=_auth(scope), content_type="application/fhir+json"
        )

    return _post


def _plain(kind: str = "transaction") -> dict:
    case = validate_case(json.loads(find("ivclms-001").read_text()))
    bundle = plain(case_to_bundle(case, now=NOW))
    bundle["type"] = kind
    for entry in bundle["entry"]:
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    return bundle


def _read_back(client, answer: dict) -> list[tuple[str, str, str]]:
    """Every location of the answer read back: (status, Type/id, versionId) per entry with a location."""
    seen = []
    for entry in answer["entry"]:
        location = entry["response"].get("location")
        if location is None:
            continue
        resource_type, resource_id, _, version = location.split("/")
        assert entry["response"]["etag"] == f'W/"{version}"'
        got = client.get(f"/fhir/{location}", headers=_auth())
        assert got.status_code == 200, (location, got.get_json())
        assert got.get_json()["meta"]["versionId"] == version
        current = client.get(f"/fhir/{resource_type}/{resource_id}", headers=_auth())
        assert current.status_code == 200
        assert current.get_json()["meta"]["versionId"] == version
        seen.append((entry["response"]["status"], f"{resource_type}/{resource_id}", version))
    return seen


def test_item_1_every_location_in_the_answer_is_a_version_that_exists(client, post):
    """R4 transaction: "location: The location header created by processing this operation,
    populated if the operation returns a location" and "etag: The Etag for the resource, if the
    operation for the entry produced a versioned resource" -- the resource's own version."""
    bundle = _plain()
    first = post(bundle)
    assert first.status_code == 200, first.get_json()
    seen = _read_back(client, first.get_json())
    assert len(seen) == len(bundle["entry"])
    assert {(s, v) for s, _, v in seen} == {("201 Created", "1")}
    before = {r for _, r, _ in seen}

    changed = copy.deepcopy(bundle)
    procedures = [
        e["resource"]
        for e in changed["entry"]
        if e["resource"]["resourceType"] == "Procedure" and "performedDateTime" in e["resource"]
    ]
    # the surgery moved to the next day: every Procedure of it (they must share its date, or it is 422)
    day = procedures[0]["performedDateTime"]
    for procedure in procedures:
        if procedure["performedDateTime"] == day:
            procedure["performedDateTime"] = "2021-04-13"
    second = post(changed)
    assert second.status_code == 200, second.get_json()
    seen = _read_back(client, second.get_json())
    assert len(seen) == len(bundle["entry"])
    pairs = {(s, v) for s, _, v in seen}
    assert ("200 OK", "2") in pairs  # what the date change touched moved on to its version 2
    assert ("200 OK", "1") in pairs  # the others stay at version 1: the case's version (2) is not theirs
    for status, ref, version in seen:  # 201 exactly for a resource this request created
        assert (status == "201 Created") == (ref not in before), (status, ref)
        assert status == "200 OK" or version == "1"

    again = post(changed)
    assert _read_back(client, again.get_json()) == [("200 OK", r, v) for _, r, v in seen]


def _general_record(entries: int = 300) -> dict:
    """A general patient record as an EHR exports it (no IVC leiomyosarcoma anywhere): vitals and
    labs, encounters, everyday conditions, medications, immunizations, allergies, reports."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://ehr.example.org/mrn", "value": "MRN-4711"}],
        "gender": "female",
        "birthDate": "1961-04-02",
    }
    out = [{"fullUrl": "urn:uuid:p", "resource": patient, "request": {"method": "POST", "url": "Patient"}}]
    subject = {"reference": "urn:uuid:p"}
    loinc = [("8867-4", "Heart rate"), ("29463-7", "Body weight"), ("8310-5", "Body temperature")]
    snomed = [("38341003", "Hypertension"), ("44054006", "Diabetes mellitus type 2"), ("195967001", "Asthma")]
    makers = [
        lambda n: {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc[n % 3][0]}]},
            "subject": subject,
            "effectiveDateTime": f"2020-01-{n % 28 + 1:02d}",
            "valueQuantity": {"value": 60 + n % 40},
        },
        lambda n: {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
        },
        lambda n: {
            "resourceType": "Condition",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed[n % 3][0]}]},
            "subject": subject,
        },
        lambda n: {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]
            },
            "subject": subject,
        },
        lambda n: {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": subject,
            "occurrenceDateTime": "2019-10-01",
        },
        lambda n: {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
            "patient": subject,
        },
    ]
    n = 0
    while len(out) < entries:
        resource = makers[n % len(makers)](n) if n % 5 else makers[0](n)  # Observations are the most
        out.append(
            {
                "fullUrl": f"urn:uuid:r{n}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
        n += 1
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def test_item_8_a_general_patient_record_is_told_briefly_what_the_service_takes(client, post):
    record = _general_record(300)
    resp = post(record)
    assert resp.status_code == 422
    text = resp.get_data(as_text=True)
    issues = resp.get_json()["issue"]
    assert 2 <= len(issues) <= 21
    assert len(text) < 20_000  # was one issue per entry: ~300 issues
    first = issues[0]["diagnostics"]
    assert first.startswith("not an IVC-LMS case: this service takes IVC leiomyosarcoma cases")
    assert "Condition" in first and "http://snomed.info/sct|443719001" in first  # leiomyosarcoma
    assert "bodySite http://snomed.info/sct|64131007" in first  # inferior vena cava
    assert "StructureDefinition/ivclms-primary-cancer" in first
    assert "Missing: no Condition coded so among the 300 entries" in first
    rest = [i["diagnostics"] for i in issues[1:]]
    observations = next(d for d in rest if " Observation entries: " in d)
    count = sum(1 for e in record["entry"] if e["resource"]["resourceType"] == "Observation")
    assert observations.startswith(f"{count} Observation entries: fits none of the IVC-LMS profiles (")
    for word in ("template", "case-fhir", ".yaml"):
        assert word not in text
    assert client.get("/cases", headers=_auth()).get_json()["cases"] == []


def test_item_8_issues_are_capped_with_a_note_of_how_many_were_left_out():
    from service.bundle_intake import MOST_ISSUES, brief
    from service.errors import Issue

    resources = [{"resourceType": "Patient"}] + [{"resourceType": f"T{i}"} for i in range(40)]
    issues = [
        Issue("not-supported", f"Bundle.entry[{i}]: T{i}/x: why", f"Bundle.entry[{i}]") for i in range(1, 41)
    ]
    out = brief(issues, resources, list(range(41)))
    assert len(out) == MOST_ISSUES + 1
    assert out[0].diagnostics.startswith("not an IVC-LMS case")
    assert out[-1].diagnostics == f"{41 - MOST_ISSUES} more issues left out (of 41)"


def _patient_entry(bundle: dict) -> dict:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_item_2_put_with_a_client_chosen_id_is_refused_405_not_answered_at_another_id(client, post, kind):
    """R4 http.html (update): "405 Method Not allowed - the resource did not exist prior to the
    update, and the server does not allow client defined ids". HAPI (client ids allowed) creates
    Patient/client-patient-0; this service assigns ids from business identifiers, so it refuses and
    says how to send it, instead of answering 201 at another id."""
    bundle = _plain(kind)
    patient = _patient_entry(bundle)
    patient["resource"]["id"] = "client-patient-0"
    patient["request"] = {"method": "PUT", "url": "Patient/client-patient-0"}
    resp = post(bundle)
    if kind == "transaction":
        assert resp.status_code == 405, resp.get_json()
        (issue,) = resp.get_json()["issue"]
    else:
        assert resp.status_code == 200
        answer = resp.get_json()["entry"][bundle["entry"].index(patient)]["response"]
        assert answer["status"] == "405 Method Not Allowed"
        assert "location" not in answer
        (issue,) = answer["outcome"]["issue"]
        statuses = {e["response"]["status"] for e in resp.get_json()["entry"]}
        assert statuses == {"405 Method Not Allowed"}  # the case is one: none of its entries stored
    assert "client-assigned ids are not supported" in issue["diagnostics"]
    assert "PUT Patient?identifier=system|value" in issue["diagnostics"]
    assert issue["expression"] == [f"Bundle.entry[{bundle['entry'].index(patient)}].request.url"]
    assert client.get("/fhir/Patient/client-patient-0", headers=_auth()).status_code == 404
    assert client.get("/cases", headers=_auth()).get_json()["cases"] == []


def test_item_2_put_to_the_id_the_service_assigned_is_an_update(client, post):
    bundle = _plain()
    first = post(bundle).get_json()
    at = bundle["entry"].index(_patient_entry(bundle))
    type_and_id = first["entry"][at]["response"]["location"].rsplit("/_history/", 1)[0]
    _patient_entry(bundle)["request"] = {"method": "PUT", "url": type_and_id}
    again = post(bundle)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["entry"][at]["response"]["status"] == "200 OK"


def test_item_2_a_provenance_entry_is_answered_as_not_stored(client, post):
    from tests.unit.api.test_fhir_intake import _bundle

    bundle = _bundle(0)
    resp = post(bundle, query="")
    assert resp.status_code == 200, resp.get_json()
    for sent, got in zip(bundle["entry"], resp.get_json()["entry"], strict=True):
        if sent["resource"]["resourceType"] != "Provenance":
            assert "location" in got["response"]
            continue
        assert "location" not in got["response"]
        (issue,) = got["response"]["outcome"]["issue"]
        assert issue["severity"] == "warning"
        assert issue["diagnostics"].startswith("Provenance is not stored")


def test_item_2_get_and_delete_entries_in_a_batch_are_answered_per_entry(client, post):
    """R4 http.html (batch/transaction): entries may be reads ("GET") and deletes ("DELETE");
    "the server SHALL process ... DELETE, POST, PUT or PATCH, GET or HEAD" in that order."""
    first = post(_plain()).get_json()
    patient = next(e for e in first["entry"] if e["response"]["location"].startswith("Patient/"))
    patient_ref = patient["response"]["location"].rsplit("/_history/", 1)[0]
    some = next(e for e in first["entry"] if not e["response"]["location"].startswith("Patient/"))
    other_ref = some["response"]["location"].rsplit("/_history/", 1)[0]

    def batch(*requests: tuple[str, str]) -> dict:
        entries = [{"request": {"method": m, "url": u}} for m, u in requests]
        return {"resourceType": "Bundle", "type": "batch", "entry": entries}

    reads = post(
        batch(
            ("GET", patient_ref),
            ("GET", f"{patient_ref}/_history/1"),
            ("GET", "Observation/not-here"),
            ("GET", "Observation?code=x"),
        )
    )
    assert reads.status_code == 200, reads.get_json()
    got = reads.get_json()["entry"]
    assert got[0]["response"]["status"] == "200 OK"
    assert got[0]["resource"]["resourceType"] == "Patient"
    assert f"Patient/{got[0]['resource']['id']}" == patient_ref
    assert got[1]["resource"]["meta"]["versionId"] == "1"
    assert got[2]["response"]["status"] == "404 Not Found"
    assert got[3]["response"]["status"] == "400 Bad Request"

    # DELETE needs d (through the write gate): refused in its entry, nothing withdrawn.
    refused = post(batch(("DELETE", patient_ref)), scope="system/*.cru")
    assert refused.get_json()["entry"][0]["response"]["status"] == "403 Forbidden"
    assert client.get("/cases", headers=_auth()).get_json()["cases"][0]["status"] == "active"
    deleted = post(batch(("DELETE", other_ref), ("DELETE", patient_ref), ("DELETE", "Patient/not-here")))
    answers = [e["response"]["status"] for e in deleted.get_json()["entry"]]
    assert answers == ["405 Method Not Allowed", "200 OK", "404 Not Found"]
    assert client.get("/cases", headers=_auth()).get_json()["cases"][0]["status"] == "entered-in-error"


def test_item_2_a_transaction_takes_get_entries_after_its_writes_and_refuses_delete(client, post):
    first = post(_plain()).get_json()
    patient_ref = next(
        e["response"]["location"] for e in first["entry"] if e["response"]["location"].startswith("Patient/")
    ).rsplit("/_history/", 1)[0]
    bundle = _plain()
    bundle["entry"].append({"request": {"method": "GET", "url": patient_ref}})
    resp = post(bundle)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["entry"][-1]["resource"]["resourceType"] == "Patient"
    bundle["entry"][-1] = {"request": {"method": "DELETE", "url": patient_ref}}
    refused = post(bundle)
    assert refused.status_code == 422
    assert "DELETE is taken in a batch only" in refused.get_json()["issue"][0]["diagnostics"]


def _batch(*requests: tuple[str, str]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": m, "url": u}} for m, u in requests],
    }


def test_second_review_another_hospitals_patient_is_deleted_like_an_unknown_one(client, post):
    """Second outside review: a batch DELETE of another hospital's Patient answered "no case <case id>",
    an unknown id "Patient/<id> is unknown": the answer told the patient exists and named its case."""
    from tests.tokens import bearer

    first = post(_plain()).get_json()  # a case of urn:ivclms:example:ehr
    patient_ref = next(
        e["response"]["location"].rsplit("/_history/", 1)[0]
        for e in first["entry"]
        if e["response"]["location"].startswith("Patient/")
    )
    other = bearer("system/*.cruds", sources=["urn:ivclms:example:hospital-a"], roles=())
    answers = []
    for ref in (patient_ref, "Patient/00000000-0000-4000-8000-000000000000"):
        resp = client.post(
            "/fhir",
            data=json.dumps(_batch(("DELETE", ref))),
            headers=other,
            content_type="application/fhir+json",
        )
        entry = resp.get_json()["entry"][0]["response"]
        answers.append((entry["status"], entry["outcome"]["issue"][0]["diagnostics"].split(" is ")[-1]))
    assert answers[0] == answers[1] == ("404 Not Found", "unknown"), answers
    assert client.get("/cases", headers=_auth()).get_json()["cases"][0]["status"] == "active"


def test_second_review_get_entries_are_bounded_before_any_is_answered(client, post):
    """Second outside review: 30 000 GET entries were answered (33.5 MB in 15 s)."""
    from service.limits import Limits

    most = Limits().max_resources_per_case
    resp = post(_batch(*[("GET", "Patient/x")] * (most + 1)))
    assert resp.status_code == 413
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "too-costly" and "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE" in issue["diagnostics"]
    assert post(_batch(*[("GET", "Patient/x")] * 3)).status_code == 200


def test_a_batch_of_reads_needs_read_scopes_only_and_is_audited_as_a_read(client, post):
    """R4 http.html (batch/transaction): a batch may hold GET entries, each "processed as if it were
    submitted on its own"; a read on its own needs the read scope of its type (docs/security.md), so
    a batch of reads needs no write scope. Any write entry still does (refused before anything runs)."""
    first = post(_plain()).get_json()
    locations = [e["response"]["location"].rsplit("/_history/", 1)[0] for e in first["entry"]]
    patient_ref = next(loc for loc in locations if loc.startswith("Patient/"))
    observation_ref = next(loc for loc in locations if loc.startswith("Observation/"))
    reads = _batch(("GET", patient_ref), ("GET", observation_ref), ("HEAD", patient_ref))

    read_only = post(reads, query="", scope="system/*.rs")
    assert read_only.status_code == 200, read_only.get_json()
    answers = read_only.get_json()["entry"]
    assert [a["response"]["status"] for a in answers] == ["200 OK", "200 OK", "200 OK"]
    assert f"Patient/{answers[0]['resource']['id']}" == patient_ref and "resource" not in answers[2]

    # Each GET is gated on its own type: a read grant on Observation reads the Observation only.
    narrow = post(reads, query="", scope="system/Observation.rs").get_json()["entry"]
    assert [a["response"]["status"] for a in narrow] == ["403 Forbidden", "200 OK", "403 Forbidden"]

    # Any write entry needs the write scope, for the whole request; so does a Bundle of no reads.
    mixed = _batch(("GET", patient_ref), ("DELETE", patient_ref))
    for body in (mixed, _plain("batch"), _plain()):
        refused = post(body, scope="system/*.rs")
        assert refused.status_code == 403, refused.get_json()
        assert refused.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/cases", headers=_auth()).get_json()["cases"][0]["status"] == "active"
    # No scope that reads or writes anything served: refused before the body is read.
    assert post(reads, query="", scope="system/Questionnaire.cruds").status_code == 403

    trail = client.get("/fhir/AuditEvent?_count=500", headers=_auth()).get_json()["entry"]
    posts = [
        (e["resource"]["action"], e["resource"]["outcome"])
        for e in trail
        if e["resource"]["entity"] and e["resource"]["entity"][0]["what"]["reference"] == "/fhir"
    ]
    # The write, the two read batches, then four refusals: each refused before it was known to read
    # only (a write scope missing, or no scope on anything served) is recorded as the POST it was.
    assert posts == [("C", "0"), ("R", "0"), ("R", "0"), ("C", "4"), ("C", "4"), ("C", "4"), ("C", "4")]

"""The FHIR read side: what was accepted can be read, versioned, searched and pulled per patient."""

from __future__ import annotations

import json

import pytest

from service.mapping.spec import IDENTIFIER_SYSTEM
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES

LOINC_TUMOR_SIZE = "http://loinc.org|21889-1"


@pytest.fixture
def get(client):
    def _get(url, headers=None):
        return client.get(url, headers={**_auth(), **(headers or {})})

    return _get


def _post(client, n: int):
    case = json.loads(EXAMPLES[n].read_text())
    resp = client.post("/cases", data=json.dumps(case), headers=_auth(), content_type="application/json")
    assert resp.status_code == 201
    bundle = client.get(
        resp.headers["Location"], headers={**_auth(), "Accept": "application/fhir+json"}
    ).get_json()
    return resp.headers["Location"], case, bundle


def _ids(bundle: dict, kind: str | None = None) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") != "outcome"
        and (kind is None or e["resource"]["resourceType"] == kind)
    ]


def _expected(bundle: dict, kind: str) -> set[str]:
    return {
        f"{kind}/{e['fullUrl'].removeprefix('urn:uuid:')}"
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == kind
    }


def test_every_resource_of_an_accepted_case_can_be_read(client, get):
    _, _, bundle = _post(client, 0)
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        rid = entry["fullUrl"].removeprefix("urn:uuid:")
        resp = get(f"/fhir/{kind}/{rid}")
        assert resp.status_code == 200, (kind, rid)
        body = resp.get_json()
        assert body["id"] == rid and body["meta"]["versionId"] == "1"
        assert resp.headers["ETag"] == 'W/"1"'
        assert "urn:uuid:" not in json.dumps(body)  # references are Type/id on the read side
    assert get("/fhir/Observation/nope").status_code == 404
    assert get("/fhir/Basic/x").status_code == 404


def test_search_by_patient_code_profile_and_identifier(client, get):
    _, _, first = _post(client, 0)
    _, _, second = _post(client, 1)
    patient = next(iter(_expected(first, "Patient"))).split("/")[1]
    found = get(f"/fhir/Observation?patient={patient}&_count=500").get_json()
    assert set(_ids(found)) == _expected(first, "Observation")
    assert found["total"] == len(_expected(first, "Observation"))
    sizes = get(f"/fhir/Observation?code={LOINC_TUMOR_SIZE}&_count=500").get_json()
    expected_sizes = {
        f"Observation/{e['fullUrl'].removeprefix('urn:uuid:')}"
        for b in (first, second)
        for e in b["entry"]
        if any(c.get("code") == "21889-1" for c in e["resource"].get("code", {}).get("coding", []))
    }
    assert expected_sizes and set(_ids(sizes)) == expected_sizes
    profile = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-primary-cancer"
    assert len(_ids(get(f"/fhir/Condition?_profile={profile}").get_json())) == 2
    entry = second["entry"][0]["resource"]
    value = next(i["value"] for i in entry["identifier"] if i["system"] == IDENTIFIER_SYSTEM)
    one = get("/fhir/Patient", {}).get_json()
    assert len(_ids(one)) == 2
    by_id = client.get(
        "/fhir/Patient", query_string={"identifier": f"{IDENTIFIER_SYSTEM}|{value}"}, headers=_auth()
    ).get_json()
    assert _ids(by_id) == sorted(_expected(second, "Patient"))
    assert get("/fhir/Patient?_summary=count").get_json()["total"] == 2


def test_paging_next_and_previous_cover_everything_once(client, get):
    for n in range(3):
        _post(client, n)
    seen, url, pages = [], "/fhir/Observation?_count=7", []
    while url:
        page = get(url).get_json()
        pages.append(page)
        seen += _ids(page)
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == pages[0]["total"]
    back = next(link["url"] for link in pages[-1]["link"] if link["relation"] == "previous")
    assert _ids(get(back).get_json()) == _ids(pages[-2])


def test_include_and_revinclude(client, get):
    _, _, bundle = _post(client, 0)
    (patient,) = _expected(bundle, "Patient")
    page = get("/fhir/Condition?_include=Condition:subject").get_json()
    included = [e for e in page["entry"] if e["search"]["mode"] == "include"]
    assert [f"Patient/{e['resource']['id']}" for e in included] == [patient]
    page = get(
        f"/fhir/Patient?_id={patient.split('/')[1]}&_revinclude=Observation:subject&_count=1"
    ).get_json()
    revincluded = {
        f"Observation/{e['resource']['id']}" for e in page["entry"] if e["search"]["mode"] == "include"
    }
    subject_obs = {
        f"Observation/{e['fullUrl'].removeprefix('urn:uuid:')}"
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation" and "subject" in e["resource"]
    }
    assert revincluded == subject_obs
    assert get("/fhir/Condition?_include=Condition:nothing").status_code == 400


def test_unknown_parameters_lenient_or_strict(get):
    lenient = get("/fhir/Observation?colour=blue").get_json()
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert all("colour" not in link["url"] for link in lenient["link"])
    strict = get("/fhir/Observation?colour=blue", {"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert get("/fhir/Observation?_count=-1").status_code == 400
    assert get("/fhir/Observation?date=yesterday").status_code == 400
    assert get("/fhir/Observation?_lastUpdated=gt2020-13-45").status_code == 400


def test_dates_and_last_updated(client, get):
    _, _, bundle = _post(client, 0)
    assert get("/fhir/Patient?_lastUpdated=ge2000-01-01").get_json()["total"] == 1
    assert get("/fhir/Patient?_lastUpdated=lt2000-01-01").get_json()["total"] == 0
    dated = [
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Procedure" and "performedDateTime" in e["resource"]
    ]
    day = min(e["resource"]["performedDateTime"][:10] for e in dated)
    on_day = {
        f"Procedure/{e['fullUrl'].removeprefix('urn:uuid:')}"
        for e in dated
        if e["resource"]["performedDateTime"][:10] == day
    }
    assert set(_ids(get(f"/fhir/Procedure?date={day}&_count=500").get_json())) >= on_day
    before = get(f"/fhir/Procedure?date=lt{day}&_count=500").get_json()
    assert not set(_ids(before)) & on_day


def test_versions_move_only_for_changed_resources_and_removed_ones_are_gone(client, get):
    location, case, bundle = _post(client, 0)
    case["follow_up"] = case["follow_up"][:-1] if len(case["follow_up"]) > 1 else case["follow_up"]
    case["patient"]["smoking"]["pack_years"] = case["patient"]["smoking"]["pack_years"] + 5
    resp = client.put(location, data=json.dumps(case), headers=_auth(), content_type="application/json")
    assert resp.status_code == 200
    new = client.get(location, headers={**_auth(), "Accept": "application/fhir+json"}).get_json()
    old_ids = {e["fullUrl"] for e in bundle["entry"]}
    new_ids = {e["fullUrl"] for e in new["entry"]}
    (patient,) = _expected(bundle, "Patient")
    assert get(f"/fhir/{patient}").get_json()["meta"]["versionId"] == "1"
    smoking = next(
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in new["entry"]
        if e["resource"]["meta"]["profile"][0].endswith("smoking")
    )
    assert get(f"/fhir/Observation/{smoking}").get_json()["meta"]["versionId"] == "2"
    assert get(f"/fhir/Observation/{smoking}/_history/1").status_code == 200
    history = get(f"/fhir/Observation/{smoking}/_history").get_json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    for removed in old_ids - new_ids:
        kind = next(e["resource"]["resourceType"] for e in bundle["entry"] if e["fullUrl"] == removed)
        assert get(f"/fhir/{kind}/{removed.removeprefix('urn:uuid:')}").status_code == 410


def test_everything_and_since(client, get):
    _, _, first = _post(client, 0)
    _post(client, 1)
    (patient,) = _expected(first, "Patient")
    everything = get(f"/fhir/{patient}/$everything").get_json()
    expected = {
        f"{e['resource']['resourceType']}/{e['fullUrl'].removeprefix('urn:uuid:')}" for e in first["entry"]
    }
    assert set(_ids(everything)) == expected
    assert get(f"/fhir/{patient}/$everything?_since=2999-01-01T00:00:00Z").get_json().get("entry") is None
    assert get("/fhir/Patient/nope/$everything").status_code == 404


def test_read_needs_the_scope(client):
    assert client.get("/fhir/Observation", headers=_auth("system/Patient.rs")).status_code == 403
    assert client.get("/fhir/Patient", headers=_auth("system/Patient.rs")).status_code == 200


def test_paging_while_cases_are_written_skips_nothing(client, get):
    location, case, _ = _post(client, 0)
    _post(client, 1)
    before = set(_ids(get("/fhir/Observation?_count=500").get_json()))
    first = get("/fhir/Observation?_count=5").get_json()
    seen = _ids(first)
    # Writes between pages: the first case changes (its smoking Observation, on the first page, moves
    # to the end of the order: offset paging would now skip a resource) and a new case arrives.
    _post(client, 2)
    case["patient"]["smoking"]["pack_years"] = case["patient"]["smoking"]["pack_years"] + 1
    assert (
        client.put(
            location, data=json.dumps(case), headers=_auth(), content_type="application/json"
        ).status_code
        == 200
    )
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    while url:
        page = get(url).get_json()
        seen += _ids(page)
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert before <= set(seen), "a resource that existed when paging began was skipped"

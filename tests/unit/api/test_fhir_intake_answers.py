"""``POST /fhir`` answers (issue 13, items 1, 2 and 8): what each entry of the answer names exists,
entries mean what they say, and data that is not an IVC-LMS case is told so briefly."""

from __future__ import annotations

import copy
import json

import pytest

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from tests.unit.api.test_cases import _auth
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
    procedure = next(
        e["resource"]
        for e in changed["entry"]
        if e["resource"]["resourceType"] == "Procedure" and "performedDateTime" in e["resource"]
    )
    procedure["performedDateTime"] = "2019-02-03"
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

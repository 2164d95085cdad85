"""The ``date`` search parameter with partial dates, stored and searched (issue 15).

FHIR R4 search.html, 3.1.1.4.2 Date: "the range of the search value fully contains the range of the
target value" (eq); "the range above the search value intersects (i.e. overlaps) with the range of the
target value" (gt); "the range below the search value intersects (i.e. overlaps) with the range of the
target value" (lt); ge / le: gt / lt "or the range of the search value fully contains the range of
the target value". A stored ``2021-04`` is the range 2021-04-01..2021-04-30.
"""

from __future__ import annotations

import json

import pytest

from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES


@pytest.fixture
def surgery_id(client) -> str:
    case = json.loads(EXAMPLES[0].read_text())
    case["surgery"][0]["date"] = "2021-04"  # diagnosis 2021-02-20; the operation known to the month
    resp = client.post("/cases", data=json.dumps(case), headers=_auth(), content_type="application/json")
    assert resp.status_code == 201, resp.get_json()
    bundle = client.get(resp.headers["Location"], headers={**_auth(), "Accept": "application/fhir+json"})
    found = [
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in bundle.get_json()["entry"]
        if e["resource"].get("performedDateTime") == "2021-04"
    ]
    assert found
    return found[0]


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        ("2021", True),  # 2021 contains 2021-04
        ("2021-04", True),
        ("2021-04-12", False),  # one day does not contain the month
        ("ne2021-04-12", True),
        ("ge2021-04-12", True),  # days after 04-12 overlap April
        ("gt2021-04-29", True),
        ("gt2021-04-30", False),  # nothing of April is after its last day
        ("lt2021-04-01", False),
        ("lt2021-04-02", True),
        ("le2021-03", False),
        ("ge2021-05", False),
        ("eq2020", False),
    ],
)
def test_partial_stored_date_against_search_values(client, surgery_id, value, matches):
    resp = client.get(f"/fhir/Procedure?date={value}&_count=500", headers=_auth())
    assert resp.status_code == 200, resp.get_json()
    ids = {e["resource"]["id"] for e in resp.get_json().get("entry", [])}
    assert (surgery_id in ids) is matches


@pytest.mark.parametrize("value", ["2021-13", "2021-02-30", "20", "2021-4"])
def test_impossible_search_dates_are_400(client, value):
    resp = client.get(f"/fhir/Procedure?date={value}", headers=_auth())
    assert resp.status_code == 400
    assert "date: " in json.dumps(resp.get_json())

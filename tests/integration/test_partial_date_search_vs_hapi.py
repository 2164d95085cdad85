"""Date search on a stored partial date, side by side with HAPI FHIR (issue 15, item 7).

R4 search.html, 3.1.1.4.2 Date: "the range of the search value fully contains the range of the target
value" (eq); gt / lt: "the range above / below the search value intersects (i.e. overlaps) with the
range of the target value"; ge / le: that, "or the range of the search value fully contains the range
of the target value". The same ``performedDateTime: 2021-04`` is stored on HAPI and in this service,
and each search value must match on both or on neither.
"""

from __future__ import annotations

import uuid

import requests

from tests.support.auth import auth_headers as _auth
from tests.unit.api.test_search_partial_dates import surgery_id  # noqa: F401  (fixture)

FHIR_JSON = {"Content-Type": "application/fhir+json"}
VALUES = (
    "2021",
    "2021-04",
    "2021-04-12",
    "ne2021-04-12",
    "ge2021-04-12",
    "gt2021-04-29",
    "gt2021-04-30",
    "lt2021-04-01",
    "lt2021-04-02",
    "le2021-03",
    "ge2021-05",
    "eq2020",
)


def _hapi_procedure(hapi_url: str, code: str) -> str:
    tag = {"tag": [{"system": "urn:ivclms-test", "code": code}]}
    patient = requests.post(
        f"{hapi_url}/Patient", json={"resourceType": "Patient", "meta": tag}, headers=FHIR_JSON, timeout=60
    )
    assert patient.status_code == 201, patient.text
    body = {
        "resourceType": "Procedure",
        "meta": tag,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient.json()['id']}"},
        "performedDateTime": "2021-04",
    }
    created = requests.post(f"{hapi_url}/Procedure", json=body, headers=FHIR_JSON, timeout=60)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_partial_date_search_agrees_with_hapi(client, hapi_url, surgery_id):  # noqa: F811
    code = f"it-{uuid.uuid4().hex[:12]}"
    hapi_id = _hapi_procedure(hapi_url, code)
    for value in VALUES:
        theirs = requests.get(
            f"{hapi_url}/Procedure", params={"_tag": f"urn:ivclms-test|{code}", "date": value}, timeout=60
        )
        assert theirs.status_code == 200, theirs.text
        hapi_match = hapi_id in {e["resource"]["id"] for e in theirs.json().get("entry", [])}
        ours = client.get(f"/fhir/Procedure?date={value}&_count=500", headers=_auth())
        assert ours.status_code == 200
        our_match = surgery_id in {e["resource"]["id"] for e in ours.get_json().get("entry", [])}
        assert (value, our_match) == (value, hapi_match)

"""Issue 13, items 3, 5 and 6, side by side with HAPI FHIR where the spec leaves room.

The same requests go to this service (on PostgreSQL) and to the HAPI server of the test harness;
where the answers must agree, they are compared. Intended differences, each with its reason:

- ``_format=xml`` / ``Accept: application/fhir+xml``: HAPI serves XML (200); this service serves JSON
  only, so it answers 406 rather than JSON labelled as something the client did not ask for.
- History ``request.url``: HAPI writes ``Patient/1/_history/1``; this service writes the URL of the
  request as R4 Bundle.entry.request.url defines it ("relative to the root"): ``Patient`` for the
  create, ``Patient/id`` for an update. Methods and statuses agree.
- ``$everything`` with an unknown parameter and ``Prefer: handling=strict``: HAPI ignores it (200);
  this service refuses it (400), as for search (R4 search.html on handling=strict).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import requests

from tests.tokens import bearer
from tests.unit.api.test_fhir_read import _expected, _post

ALL = "system/*.cruds"
FHIR_JSON = "application/fhir+json"


def _hapi_patient(hapi_url: str, code: str) -> str:
    body = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:ivclms-test", "code": code}]},
        "gender": "female",
    }
    created = requests.post(f"{hapi_url}/Patient", json=body, headers={"Content-Type": FHIR_JSON}, timeout=60)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _shape(bundle: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": bundle["resourceType"], "type": bundle["type"], "has_entry": "entry" in bundle}


def test_item_3_count_zero_and_post_search_agree_with_hapi(client, hapi_url):
    _post(client, 0)
    hapi_count = requests.get(f"{hapi_url}/Patient?_count=0", timeout=60).json()
    ours = client.get("/fhir/Patient?_count=0", headers=bearer(ALL)).get_json()
    assert (
        _shape(ours)
        == _shape(hapi_count)
        == {"resourceType": "Bundle", "type": "searchset", "has_entry": False}
    )
    assert isinstance(hapi_count["total"], int) and ours["total"] == 1
    # POST search with the parameters split between the URL and the form body, on both servers.
    code = f"it-{uuid.uuid4().hex[:12]}"
    _hapi_patient(hapi_url, code)
    hapi_post = requests.post(
        f"{hapi_url}/Patient/_search?_tag=urn:ivclms-test|{code}",
        data={"gender": "female"},
        timeout=60,
    )
    assert hapi_post.status_code == 200 and len(hapi_post.json()["entry"]) == 1
    ours_post = client.post(
        "/fhir/Patient/_search?_count=5",
        data={"_count": "5"},
        headers=bearer(ALL),
        content_type="application/x-www-form-urlencoded",
    )
    assert ours_post.status_code == hapi_post.status_code
    assert [e["search"]["mode"] for e in ours_post.get_json()["entry"]] == ["match"]


def test_item_5_everything_pages_like_hapi(client, hapi_url):
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    code = f"it-{uuid.uuid4().hex[:12]}"
    hapi_id = _hapi_patient(hapi_url, code)
    hapi_page = requests.get(f"{hapi_url}/Patient/{hapi_id}/$everything?_count=1", timeout=60).json()
    ours = client.get(f"/fhir/{patient}/$everything?_count=1", headers=bearer(ALL)).get_json()
    # Both honour _count; ours has more of the record, so a next link.
    assert len(hapi_page["entry"]) == 1 and len(ours["entry"]) == 1
    assert {link["relation"] for link in ours["link"]} == {"self", "next"}
    strict = client.get(
        f"/fhir/{patient}/$everything?colour=blue", headers={**bearer(ALL), "Prefer": "handling=strict"}
    )
    assert strict.status_code == 400  # HAPI: 200 (see the module's list of intended differences)


def test_item_6_conditional_read_and_history_agree_with_hapi(client, hapi_url):
    code = f"it-{uuid.uuid4().hex[:12]}"
    hapi_id = _hapi_patient(hapi_url, code)
    update = {"resourceType": "Patient", "id": hapi_id, "gender": "male"}
    assert (
        requests.put(
            f"{hapi_url}/Patient/{hapi_id}",
            data=json.dumps(update),
            headers={"Content-Type": FHIR_JSON},
            timeout=60,
        ).status_code
        == 200
    )
    hapi_history = requests.get(f"{hapi_url}/Patient/{hapi_id}/_history", timeout=60).json()
    hapi_verbs = [(e["request"]["method"], e["response"]["status"]) for e in hapi_history["entry"]]
    assert hapi_verbs == [("PUT", "200 OK"), ("POST", "201 Created")]
    hapi_304 = requests.get(f"{hapi_url}/Patient/{hapi_id}", headers={"If-None-Match": 'W/"2"'}, timeout=60)
    assert hapi_304.status_code == 304

    location, case, _ = _post(client, 0)
    case["patient"]["smoking"]["pack_years"] = case["patient"]["smoking"]["pack_years"] + 5
    assert (
        client.put(
            location, data=json.dumps(case), headers=bearer(ALL), content_type="application/json"
        ).status_code
        == 200
    )
    new = client.get(location, headers={**bearer(ALL), "Accept": FHIR_JSON}).get_json()
    smoking = next(
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in new["entry"]
        if e["resource"]["meta"]["profile"][0].endswith("smoking")
    )
    history = client.get(f"/fhir/Observation/{smoking}/_history", headers=bearer(ALL)).get_json()
    assert [(e["request"]["method"], e["response"]["status"]) for e in history["entry"]] == hapi_verbs
    ours_304 = client.get(f"/fhir/Observation/{smoking}", headers={**bearer(ALL), "If-None-Match": 'W/"2"'})
    assert ours_304.status_code == hapi_304.status_code == 304
    # XML: HAPI serves it; this service does not, so 406 (see the module's intended differences).
    assert requests.get(f"{hapi_url}/Patient/{hapi_id}?_format=xml", timeout=60).status_code == 200
    assert client.get(f"/fhir/Observation/{smoking}?_format=xml", headers=bearer(ALL)).status_code == 406

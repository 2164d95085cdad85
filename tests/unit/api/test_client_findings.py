"""What the third-party client suite (tests/integration/clients/) found in the service and this change
fixed, pinned here without sockets: POST search and ``_count=0`` for the Groups the service maintains."""

from __future__ import annotations

from service.bulk_export import COHORT_GROUP
from tests.unit.api.test_bulk_v2 import app, examples  # noqa: F401 (fixtures)
from tests.unit.api.test_read_gate import FULL

FORM = "application/x-www-form-urlencoded"


def test_group_post_search_answers_as_get_search(client, examples):  # noqa: F811
    """R4 http.html 3.1.0.8: "servers that support search SHALL support the POST based search";
    fhirpy, fhirclient and fhir-kit-client got 404 on POST Group/_search."""
    got = client.get(f"/fhir/Group?_id={COHORT_GROUP}", headers=FULL).get_json()
    posted = client.post("/fhir/Group/_search", data={"_id": COHORT_GROUP}, headers=FULL, content_type=FORM)
    assert posted.status_code == 200, posted.get_json()
    assert [e["resource"]["id"] for e in posted.get_json()["entry"]] == [COHORT_GROUP]
    assert posted.get_json()["entry"] == got["entry"]
    every = client.post("/fhir/Group/_search", headers=FULL).get_json()
    assert every["total"] == len(every["entry"]) > 1


def test_group_post_search_needs_the_read_grant_and_a_form_body(client, examples):  # noqa: F811
    from tests.tokens import bearer

    assert client.post("/fhir/Group/_search", headers=bearer("system/Patient.rs")).status_code == 403
    wrong = client.post("/fhir/Group/_search", data="{}", headers=FULL, content_type="application/json")
    assert wrong.status_code == 415 and wrong.get_json()["resourceType"] == "OperationOutcome"


def test_group_count_zero_is_the_total_without_entries(client, examples):  # noqa: F811
    """R4 search.html: _count=0 asks for the count alone (fhirpy's count() sends it)."""
    full = client.get("/fhir/Group", headers=FULL).get_json()
    counted = client.get("/fhir/Group?_count=0", headers=FULL)
    assert counted.status_code == 200
    body = counted.get_json()
    assert body["total"] == full["total"] > 0 and "entry" not in body

"""What the third-party client suite (tests/integration/clients/) found in the service and this change
fixed, pinned here without sockets: POST search and ``_count=0`` for the Groups the service maintains."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from service import create_app
from service.bulk_export import COHORT_GROUP
from tests.support.read_side import FULL, load_examples


@pytest.fixture
def app(settings):
    """As in test_bulk_v2 and test_read_gate: no export runs in the background."""
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def examples(client) -> list[dict[str, Any]]:
    return load_examples(client)


FORM = "application/x-www-form-urlencoded"


def test_group_post_search_answers_as_get_search(client, examples):
    """R4 http.html 3.1.0.8: "servers that support search SHALL support the POST based search";
    fhirpy, fhirclient and fhir-kit-client got 404 on POST Group/_search."""
    got = client.get(f"/fhir/Group?_id={COHORT_GROUP}", headers=FULL).get_json()
    posted = client.post("/fhir/Group/_search", data={"_id": COHORT_GROUP}, headers=FULL, content_type=FORM)
    assert posted.status_code == 200, posted.get_json()
    assert [e["resource"]["id"] for e in posted.get_json()["entry"]] == [COHORT_GROUP]
    assert posted.get_json()["entry"] == got["entry"]
    every = client.post("/fhir/Group/_search", headers=FULL).get_json()
    assert every["total"] == len(every["entry"]) > 1


def test_group_post_search_needs_the_read_grant_and_a_form_body(client, examples):
    from tests.tokens import bearer

    assert client.post("/fhir/Group/_search", headers=bearer("system/Patient.rs")).status_code == 403
    wrong = client.post("/fhir/Group/_search", data="{}", headers=FULL, content_type="application/json")
    assert wrong.status_code == 415 and wrong.get_json()["resourceType"] == "OperationOutcome"


def test_group_count_zero_is_the_total_without_entries(client, examples):
    """R4 search.html: _count=0 asks for the count alone (fhirpy's count() sends it)."""
    full = client.get("/fhir/Group", headers=FULL).get_json()
    counted = client.get("/fhir/Group?_count=0", headers=FULL)
    assert counted.status_code == 200
    body = counted.get_json()
    assert body["total"] == full["total"] > 0 and "entry" not in body


# --- AuditEvent search: _count=0, _summary=count and POST _search (KNOWN in the client suite) ------


def _audit_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_audit_event_count_zero_and_summary_count_are_the_total_without_entries(client):
    """R4 search.html, _summary: "count | Search only: just return a count of the matching resources,
    without returning the actual matches"; fhirpy's count() sends _count=0 and HAPI (the oracle the
    client suite compares with) answers it the same way: total, no entry. Was 400 here."""
    for _ in range(3):
        client.get("/fhir/Patient", headers=FULL)
    listed = client.get("/fhir/AuditEvent?_count=500", headers=FULL).get_json()
    for query in ("_count=0", "_summary=count", "_summary=count&_count=5"):
        counted = client.get(f"/fhir/AuditEvent?{query}", headers=FULL)
        assert counted.status_code == 200, (query, counted.get_json())
        body = counted.get_json()
        assert body["type"] == "searchset" and "entry" not in body, query
        # Each request is audited after its answer: every earlier one is counted, this one is not.
        assert body["total"] >= len(_audit_ids(listed)) + 1, query
    total = client.get("/fhir/AuditEvent?_count=0", headers=FULL).get_json()["total"]
    after = client.get("/fhir/AuditEvent?_count=0", headers=FULL).get_json()["total"]
    assert after == total + 1  # the first count was itself audited: the counts are exact, not estimates
    for bad in ("-1", "501", "x", "²", "9" * 5000):
        answer = client.get(f"/fhir/AuditEvent?_count={bad}", headers=FULL)
        assert answer.status_code == 400 and answer.get_json()["resourceType"] == "OperationOutcome"
        assert answer.get_json()["issue"][0]["expression"] == ["_count"]


def test_audit_event_post_search_answers_as_get_search(client):
    """R4 http.html 3.1.0.8: "servers that support search SHALL support the POST based search"
    (parameters in an application/x-www-form-urlencoded body); all three clients got 404 for
    AuditEvent. The POST search's next link is a GET URL carrying the same parameters."""
    for _ in range(4):
        client.get("/fhir/Patient", headers=FULL)
    got = client.get("/fhir/AuditEvent?_count=2", headers=FULL).get_json()
    posted = client.post("/fhir/AuditEvent/_search", data={"_count": "2"}, headers=FULL, content_type=FORM)
    assert posted.status_code == 200, posted.get_json()
    assert _audit_ids(posted.get_json()) == _audit_ids(got) and len(_audit_ids(got)) == 2
    follow = next(link["url"] for link in posted.get_json()["link"] if link["relation"] == "next")
    assert "_count=2" in follow and "_after=" in follow
    second = client.get(follow.split("localhost", 1)[1], headers=FULL).get_json()
    assert not set(_audit_ids(second)) & set(_audit_ids(got)) and _audit_ids(second)
    counted = client.post("/fhir/AuditEvent/_search", data={"_count": "0"}, headers=FULL, content_type=FORM)
    assert (
        counted.status_code == 200 and "entry" not in counted.get_json() and counted.get_json()["total"] > 0
    )
    in_url = client.post("/fhir/AuditEvent/_search?_summary=count", headers=FULL)
    assert in_url.status_code == 200 and "entry" not in in_url.get_json()


def test_audit_event_post_search_needs_the_audit_scope_and_a_form_body(client):
    from tests.tokens import bearer

    refused = client.post("/fhir/AuditEvent/_search", headers=bearer("system/Patient.rs"))
    assert refused.status_code == 403 and refused.get_json()["resourceType"] == "OperationOutcome"
    wrong = client.post("/fhir/AuditEvent/_search", data="{}", headers=FULL, content_type="application/json")
    assert wrong.status_code == 415 and wrong.get_json()["resourceType"] == "OperationOutcome"
    bad = client.post("/fhir/AuditEvent/_search", data={"_summary": "true"}, headers=FULL, content_type=FORM)
    assert bad.status_code == 400
    assert bad.get_json()["issue"][0]["expression"] == ["_summary"]


# --- date search over periods (Procedure date=ge... over an in-progress performedPeriod) ---------

PREFIXES = ("eq", "ne", "gt", "ge", "lt", "le")


def _target_range(resource: dict) -> tuple[str | None, str | None] | None:
    """The resource's date range at day precision, read here from the resource itself (the index is
    what is under test): (first day or None: unbounded, last day or None: ongoing); None: no date."""
    for name in ("performedDateTime", "effectiveDateTime", "onsetDateTime", "recordedDate", "birthDate"):
        if isinstance(resource.get(name), str) and len(resource[name]) >= 10:
            return resource[name][:10], resource[name][:10]
    for name in ("performedPeriod", "effectivePeriod", "period"):
        period = resource.get(name)
        if isinstance(period, dict) and (period.get("start") or period.get("end")):
            start, end = period.get("start"), period.get("end")
            return (start[:10] if start else None), (end[:10] if end else None)
    return None


def _r4_matches(prefix: str, day: str, target: tuple[str | None, str | None]) -> bool:
    """R4 search.html, date prefixes, the search value's range being the whole day: "eq: the range of
    the search value fully contains the range of the target value"; "ne: ... does not fully contain";
    "gt: the range above the search value intersects (i.e. overlaps) with the range of the target
    value"; "ge: the range above the search value intersects (i.e. overlaps) with the range of the
    target value, or the range of the search value fully contains the range of the target value";
    "lt"/"le" the same below. Read as HAPI reads it: for ge the range from the day on, for gt the
    range after it (a target ending on the day is matched by ge, not by gt)."""
    low, high = target
    contains = low is not None and high is not None and low >= day and high <= day
    return {
        "eq": contains,
        "ne": not contains,
        "gt": high is None or high > day,
        "ge": high is None or high >= day,
        "lt": low is None or low < day,
        "le": low is None or low <= day,
    }[prefix]


def test_date_search_compares_ranges_as_r4_says_open_periods_included(client, examples):
    """The client suite's KNOWN "Procedure search date": an in-progress Procedure (performedPeriod with
    a start only; R4 datatypes: "If the end of the period is missing, it means that the period is
    ongoing") was not matched by date=ge<a later day>; HAPI matches it. Every prefix, on days around
    every start and end the examples hold, against the rule computed here from the resources
    (Procedure: the one type whose mapping writes a Period, performedPeriod)."""
    resource_type = "Procedure"
    every = client.get(f"/fhir/{resource_type}?_count=500", headers=FULL).get_json()
    resources = {e["resource"]["id"]: e["resource"] for e in every["entry"]}
    ranges = {i: r for i, r in ((i, _target_range(res)) for i, res in resources.items()) if r is not None}
    ongoing = [i for i, (low, high) in ranges.items() if low is not None and high is None]
    assert ongoing, f"the examples hold no {resource_type} with an open period: this test would prove nothing"
    days = sorted({d for pair in ranges.values() for d in pair if d is not None})
    probes = set(days)
    for d in days:  # the day before and after each edge as well
        probes |= {(date.fromisoformat(d) + timedelta(days=k)).isoformat() for k in (-1, 1)}
    for day in sorted(probes):
        for prefix in PREFIXES:
            got = client.get(f"/fhir/{resource_type}?date={prefix}{day}&_count=500", headers=FULL)
            assert got.status_code == 200, got.get_json()
            found = {e["resource"]["id"] for e in got.get_json().get("entry", [])}
            expected = {i for i, r in ranges.items() if _r4_matches(prefix, day, r)}
            assert found == expected, (prefix, day, found ^ expected)
    # The case the clients found: an ongoing period is matched by ge a day years after its start.
    later = (date.fromisoformat(ranges[ongoing[0]][0]) + timedelta(days=3650)).isoformat()  # type: ignore[arg-type]
    matched = client.get(f"/fhir/{resource_type}?date=ge{later}&_count=500", headers=FULL).get_json()
    assert ongoing[0] in {e["resource"]["id"] for e in matched.get("entry", [])}

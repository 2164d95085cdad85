"""Audit trail as FHIR AuditEvents, and no patient data in the application logs."""

from __future__ import annotations

import json
import logging

from service.case_files import EXAMPLE_SERIES
from tests.support.audit import audit_rows
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES


def _events(client, query: str = "") -> list[dict]:
    resp = client.get(f"/fhir/AuditEvent{query}", headers=_auth())
    assert resp.status_code == 200
    return [e["resource"] for e in resp.get_json()["entry"]]


def test_reads_and_writes_leave_audit_events(client):
    ref = client.post(
        "/cases", data=EXAMPLES[0].read_text(), headers=_auth(), content_type="application/json"
    ).headers["Location"]
    client.get(ref, headers=_auth())
    client.get("/cases/nope", headers=_auth())
    client.get("/cases")  # no token: 401, in the access log only (finding 11)
    events = _events(client)
    summary = [(e["action"], e["outcome"], e["entity"][0]["what"]["reference"]) for e in events]
    # A case's uuid (service-generated) is kept; the client-chosen "nope" is kept as its placeholder.
    assert summary == [("C", "0", "/cases"), ("R", "0", ref), ("R", "4", "/cases/{ref}")]
    assert (
        events[0]["agent"][0]["who"]["display"] == "#sub:registry-a"
    )  # the owner key: issuer (none here) and subject
    assert client.get("/healthz").status_code == 200
    assert len(_events(client)) == len(events) + 1  # the search itself, not the health check


def test_audit_events_page_with_next_links(client):
    for _ in range(5):
        client.get("/cases", headers=_auth())
    first = client.get("/fhir/AuditEvent?_count=2", headers=_auth()).get_json()
    ids = [e["resource"]["id"] for e in first["entry"]]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url, headers=_auth()).get_json()
    assert not {e["resource"]["id"] for e in second["entry"]} & set(ids)
    assert client.get("/fhir/AuditEvent?_count=501", headers=_auth()).status_code == 400
    assert (
        client.get("/fhir/AuditEvent?date=2999-01-01T00:00:00Z", headers=_auth()).get_json().get("entry")
        == []
    )


def test_no_patient_data_in_the_logs_of_an_end_to_end_run(client, caplog):
    caplog.set_level(logging.DEBUG)
    cases = [json.loads(p.read_text()) for p in EXAMPLES]
    for case in cases:
        client.post("/cases", data=json.dumps(case), headers=_auth(), content_type="application/json")
        bad = json.loads(json.dumps(case))
        bad["patient"]["birth_date"] = "not-a-date " + case["patient"]["identifier"]["value"]
        client.post("/cases", data=json.dumps(bad), headers=_auth(), content_type="application/json")
    client.post("/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=_auth(), content_type="text/csv")
    for row in client.get("/cases?_count=100", headers=_auth()).get_json()["cases"]:
        client.get(row["href"], headers={**_auth(), "Accept": "application/fhir+json"})
    secrets = set()
    for case in cases:
        secrets |= {case["case_id"], case["patient"]["identifier"]["value"], case["patient"]["birth_date"]}
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "the run logged nothing at all: the check would be empty"
    leaked = sorted(s for s in secrets if s and s in text)
    assert not leaked


def test_finding_11_unauthenticated_requests_write_no_audit_row(client, caplog):
    caplog.set_level(logging.INFO, logger="ivclms.access")
    before = audit_rows(client)
    for path in ("/cases", "/fhir/Patient", "/registry/cases.csv", "/fhir/$export", "/no/such/route"):
        client.get(path)
        client.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert audit_rows(client) == before
    lines = [r.getMessage() for r in caplog.records if r.name == "ivclms.access"]
    assert sum(" 401 " in line for line in lines) == 8  # each one is in the access log
    client.get("/cases", headers=_auth())
    assert audit_rows(client) == before + 1


def test_finding_11_client_chosen_path_segments_are_not_stored_verbatim(client, caplog):
    caplog.set_level(logging.INFO, logger="ivclms.access")
    ref = client.post(
        "/cases", data=EXAMPLES[0].read_text(), headers=_auth(), content_type="application/json"
    ).headers["Location"]
    patient = client.get("/fhir/Patient", headers=_auth()).get_json()["entry"][0]["resource"]["id"]
    client.get("/fhir/Patient/John-Smith-1968-03-14", headers=_auth())
    client.get("/fhir/Patient/John-Smith-1968-03-14/_history/2", headers=_auth())
    client.get("/cases/John-Smith-1968-03-14/history", headers=_auth())
    client.get(f"/fhir/Patient/{patient}", headers=_auth())
    client.get(ref, headers=_auth())
    events = _events(client)
    text = json.dumps(events)
    assert "John" not in text and "1968-03-14" not in text
    entities = [e["entity"][0]["what"]["reference"] for e in events]
    assert "/fhir/Patient/{resource_id}" in entities
    assert "/fhir/Patient/{resource_id}/_history/2" in entities
    assert "/cases/{ref}/history" in entities
    assert f"/fhir/Patient/{patient}" in entities  # a service-generated id is kept
    assert ref in entities
    access = " ".join(r.getMessage() for r in caplog.records if r.name == "ivclms.access")
    assert "John" not in access

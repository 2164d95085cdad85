"""Queue status, retry rules, response parsing, and verify against the fake server."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from service.errors import Conflict, NotFound
from service.store.tables import synced_resources
from service.sync import bundles
from service.sync.status import retry, retry_all_dead, status
from service.sync.verify import DRIFTED, MISSING, ORPHANED, UNRECORDED, content, differences, verify
from tests.unit.sync.conftest import entries, example, outcome, submit, synced_rows


def test_status_counts_every_state_and_the_oldest_undelivered_age(intake, engine, fhir, make_worker, clock):
    empty = status(engine, now=clock.now)
    assert empty.depth == {"pending": 0, "sending": 0, "done": 0, "dead": 0, "superseded": 0}
    assert empty.oldest_pending_age_s is None and empty.dead == []

    submit(intake, example(0))
    clock.advance(30)
    submit(intake, example(1), example(0, institution="Second"))
    fhir.fail((400, {}, outcome()))
    clock.advance(15)
    report = status(engine, now=clock.now)
    assert report.depth["pending"] == 3
    assert report.oldest_pending_age_s == 45

    make_worker(batch_size=1).run_once()  # case 0: v1 superseded, v2 rejected
    report = status(engine, now=clock.now)
    assert report.depth == {"pending": 1, "sending": 0, "done": 0, "dead": 1, "superseded": 1}
    assert report.oldest_pending_age_s == 15
    (dead,) = report.dead
    assert dead.version == 2
    as_json = report.as_json()
    assert as_json["dead"][0]["last_error"] == "rejected: HTTP 400; error invalid @ Observation.valueQuantity"
    assert as_json["dead"][0]["outcome"]["resourceType"] == "OperationOutcome"


def test_retry_refuses_unknown_and_live_entries(intake, engine):
    submit(intake, example(0))
    (entry,) = entries(engine)
    with pytest.raises(NotFound):
        retry(engine, 999)
    with pytest.raises(Conflict, match="is pending"):
        retry(engine, entry.id)


def test_retry_all_dead(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0), example(1))
    fhir.fail((400, {}, outcome()), (400, {}, outcome()))
    worker = make_worker()
    worker.run_once()
    assert [e.state for e in entries(engine)] == ["dead", "dead"]
    assert retry_all_dead(engine, clock=clock) == {"pending": 2}
    assert worker.run_once() == 2
    assert [e.state for e in entries(engine)] == ["done", "done"]


def test_a_retried_old_version_is_superseded_at_claim_if_a_newer_one_is_delivered_meanwhile(
    intake, engine, fhir, make_worker
):
    """retry() checked before the newer version was done; the claim checks again and never sends it."""
    submit(intake, example(0))
    fhir.fail((400, {}, outcome()))
    worker = make_worker()
    worker.run_once()
    submit(intake, example(0, institution="Second"))
    first, _second = entries(engine)
    assert retry(engine, first.id) == "pending"  # v2 is not delivered yet
    assert worker.run_once() == 1  # sends v2 only
    assert [e.state for e in entries(engine)] == ["superseded", "done"]
    assert len(fhir.transactions) == 1


def test_entry_keys_and_locations():
    conditional = {
        "request": {
            "method": "PUT",
            "url": "Patient?identifier=https%3A%2F%2Fx%2Fid%7Curn%3As%7CC-1%7Cpatient",
        }
    }
    assert bundles.entry_key(conditional) == "urn:s|C-1|patient"
    assert bundles.entry_key({"request": {"method": "PUT", "url": "Provenance/abc"}}) == "Provenance/abc"
    assert bundles.parse_location("Patient/12/_history/3") == ("Patient", "12", "3")
    assert bundles.parse_location("http://h/fhir/Observation/a-b.c/_history/1") == (
        "Observation",
        "a-b.c",
        "1",
    )
    assert bundles.parse_location("Patient/12") == ("Patient", "12", None)
    assert bundles.parse_location("not a location") is None


def test_synced_reads_the_transaction_response_in_order():
    bundle = {
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"url": "Patient?identifier=s%7Cp"}},
            {"resource": {"resourceType": "Provenance"}, "request": {"url": "Provenance/x"}},
            {"resource": {"resourceType": "Condition"}, "request": {"url": "Condition?identifier=s%7Cc"}},
        ]
    }
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": "Patient/1/_history/1"}},
            {"response": {"status": "200 OK", "location": "Provenance/x", "etag": 'W/"4"'}},
            {"response": {"status": "200 OK"}},
        ],
    }
    found, unknown = bundles.synced(bundle, response)
    assert [(s.identifier, s.resource_type, s.server_id, s.server_version) for s in found] == [
        ("p", "Patient", "1", "1"),
        ("Provenance/x", "Provenance", "x", "4"),
    ]
    assert unknown == 1
    with pytest.raises(bundles.ResponseError):
        bundles.synced(bundle, {**response, "entry": response["entry"][:2]})
    with pytest.raises(bundles.ResponseError):
        bundles.synced(bundle, {"resourceType": "OperationOutcome"})
    wrong_type = [{"response": {"status": "200 OK", "location": "Observation/1/_history/1"}}] * 3
    with pytest.raises(bundles.ResponseError):
        bundles.synced(bundle, {**response, "entry": wrong_type})


def test_content_ignores_what_the_server_assigns():
    resource = {
        "resourceType": "Patient",
        "id": "1",
        "text": {"status": "generated"},
        "meta": {"versionId": "3", "lastUpdated": "x", "source": "#a", "profile": ["p"]},
        "gender": "female",
    }
    assert content(resource) == {"resourceType": "Patient", "meta": {"profile": ["p"]}, "gender": "female"}
    assert content({"resourceType": "Patient", "meta": {"versionId": "1"}}) == {"resourceType": "Patient"}
    assert list(differences({"a": [{"b": 1}, {"b": 2}]}, {"a": [{"b": 1}, {"b": 3}], "c": 1})) == [
        "a[1].b",
        "c",
    ]


def test_verify_finds_nothing_after_a_clean_sync(intake, engine, fhir, make_worker, reader):
    submit(intake, example(0), example(3))
    make_worker().run_once()
    report = verify(engine, reader)
    assert report.cases == 2
    assert report.checked == len(fhir.resources) > 40
    assert report.findings == []
    assert not report.drift


def test_verify_reports_missing_and_drifted_resources_by_path(intake, engine, fhir, make_worker, reader):
    (ref,) = submit(intake, example(0))
    make_worker().run_once()
    patient = next(k for k in fhir.resources if k.startswith("Patient/"))
    observation = next(k for k in fhir.resources if k.startswith("Observation/"))
    fhir.resources[patient]["gender"] = "male"
    fhir.resources[patient]["meta"]["lastUpdated"] = "2030-01-01T00:00:00Z"  # ignored
    del fhir.resources[observation]

    report = verify(engine, reader)
    kinds = {(f.kind, f.resource): f for f in report.findings}
    assert set(kinds) == {(DRIFTED, patient), (MISSING, observation)}
    assert kinds[(DRIFTED, patient)].paths == ("gender",)
    assert kinds[(DRIFTED, patient)].case_ref == ref
    assert report.drift

    assert verify(engine, reader, case_ref="00000000-0000-0000-0000-000000000000").findings == []


def test_verify_reports_unrecorded_and_orphaned_resources(intake, engine, fhir, make_worker, reader):
    (ref,) = submit(intake, example(0))
    make_worker().run_once()
    case = example(0)
    case["patient"]["history"] = case["patient"]["history"][:1]  # v2 drops an element
    submit(intake, case)
    make_worker().run_once()
    rows = synced_rows(engine, ref)
    orphan = next(r for r in rows if r.case_version == 1)
    assert orphan.identifier.endswith("|patient.history[1]")
    smoking = next(r for r in rows if r.identifier.endswith("|patient.smoking"))  # referenced by none
    with engine.begin() as conn:
        conn.execute(delete(synced_resources).where(synced_resources.c.identifier == smoking.identifier))

    report = verify(engine, reader)
    found = {(f.kind, f.resource): f for f in report.findings}
    provenance = next(r for r in rows if r.resource_type == "Provenance")
    assert set(found) == {
        (ORPHANED, f"Condition/{orphan.server_id}"),
        (UNRECORDED, smoking.identifier),
        # its target names the unrecorded resource, whose server id verify cannot know
        (DRIFTED, f"Provenance/{provenance.server_id}"),
    }
    (path,) = found[(DRIFTED, f"Provenance/{provenance.server_id}")].paths
    assert path.startswith("target[") and path.endswith("].reference")
    assert report.drift  # unrecorded counts; orphaned alone would not

"""``GET /metrics`` (issue 17 goal 7): who may read it, and that what it says parses and moves.

The exposition is parsed with prometheus_client's own parser (an oracle this service did not write):
"text_string_to_metric_families: Parse Prometheus text format from a unicode string".
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update

from service.clock import utcnow
from service.store.tables import export_jobs, outbox
from tests import sync_seed
from tests.support.audit import audit_rows
from tests.tokens import bearer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ivclms-001-segment-ii-graft.json"
OPERATOR = {"scope": "system/*.r", "roles": ("registry",), "sources": "*"}


def scrape(client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, from the parsed exposition."""
    resp = client.get("/metrics", headers=bearer(**OPERATOR))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_without_a_token_is_401(client) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 401
    assert resp.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "system/*.cud"},  # no read
        {"scope": "system/Patient.r"},  # not every case type
        {"scope": "system/*.r", "roles": (), "sources": ["urn:ivclms:example:hospital-a"]},  # one hospital
    ],
)
def test_a_token_that_is_not_an_operators_is_403(client, claims) -> None:
    resp = client.get("/metrics", headers=bearer(**claims))
    assert resp.status_code == 403, resp.get_json()


def test_an_operator_reads_it_without_the_registry_role_when_bound_to_every_source(client) -> None:
    resp = client.get("/metrics", headers=bearer("system/*.r", roles=(), sources="*"))
    assert resp.status_code == 200


def test_counters_move_after_requests_and_label_routes_by_template(client) -> None:
    ref = "00000000-0000-4000-8000-00000000abcd"
    before = scrape(client)
    key = (("method", "GET"), ("route", "/cases/<ref>"), ("status", "404"))
    for _ in range(3):
        assert client.get(f"/cases/{ref}", headers=bearer()).status_code == 404
    client.get("/no/such/path/" + ref)
    after = scrape(client)
    counted = after["ivclms_http_requests_total"]
    assert counted[key] - before.get("ivclms_http_requests_total", {}).get(key, 0) == 3
    duration = after["ivclms_http_request_duration_seconds_count"]
    assert duration[(("method", "GET"), ("route", "/cases/<ref>"))] >= 3
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    assert counted[unmatched] >= 1
    # No concrete path or identifier anywhere in the labels.
    assert ref not in client.get("/metrics", headers=bearer(**OPERATOR)).get_data(as_text=True)


def test_a_refused_request_is_counted_too(client) -> None:
    client.get("/cases")
    counted = scrape(client)["ivclms_http_requests_total"]
    assert counted[(("method", "GET"), ("route", "/cases"), ("status", "401"))] >= 1


def test_validation_of_an_intake_is_timed(client) -> None:
    before = scrape(client).get("ivclms_validation_seconds_count", {}).get((), 0)
    resp = client.post("/cases", data=EXAMPLE.read_text(), headers=bearer(), content_type="application/json")
    assert resp.status_code == 201, resp.get_json()
    assert scrape(client)["ivclms_validation_seconds_count"][()] == before + 1


def test_outbox_and_export_jobs_are_read_from_the_database_at_scrape_time(app, client) -> None:
    engine = app.extensions["ivclms"].engine
    first = scrape(client)
    assert first["ivclms_outbox_entries"][(("state", "dead"),)] == 0
    assert first["ivclms_outbox_dead_letters"][()] == 0
    assert first["ivclms_outbox_oldest_pending_age_seconds"][()] == 0
    assert first["ivclms_export_jobs"][(("state", "failed"),)] == 0
    assert first["ivclms_database_up"][()] == 1
    ref = sync_seed.case(engine, json.loads(EXAMPLE.read_text()))  # queued: one pending entry
    with engine.begin() as conn:
        conn.execute(update(outbox).values(created_at=utcnow() - timedelta(hours=2)))
        conn.execute(insert(export_jobs).values(**_job("failed")))
    second = scrape(client)
    assert second["ivclms_outbox_entries"][(("state", "pending"),)] == 1
    assert second["ivclms_outbox_oldest_pending_age_seconds"][()] >= 2 * 3600
    assert second["ivclms_export_jobs"][(("state", "failed"),)] == 1
    sync_seed.dead_letter(engine, ref, 1)
    third = scrape(client)
    assert third["ivclms_outbox_entries"][(("state", "pending"),)] == 0
    assert third["ivclms_outbox_entries"][(("state", "dead"),)] == 1
    assert third["ivclms_outbox_dead_letters"][()] == 1
    assert third["ivclms_outbox_oldest_pending_age_seconds"][()] == 0


def _job(state: str) -> dict:
    now = utcnow()
    return {
        "id": "00000000-0000-4000-8000-000000000001",
        "state": state,
        "level": "system",
        "types": "Patient",
        "request_url": "http://localhost/fhir/$export",
        "principal": "ops",
        "transaction_time": now,
        "created_at": now,
        "progress": 0,
    }


def test_storage_full_is_zero_when_nothing_failed(client) -> None:
    assert scrape(client)["ivclms_storage_full"][()] == 0
    assert json.loads(client.get("/readyz").get_data())["checks"]["storage"] == {"ok": True}


def test_a_granted_scrape_is_not_audited_a_refused_one_is(client, caplog) -> None:
    """Decided (issue 17 goal 7): the figures carry no patient data and a scraper polls every 15 s,
    so a granted scrape leaves only its access-log line; a refused one (a token probing for an
    operator's view) is an audit record like any refused request."""
    import logging

    caplog.set_level(logging.INFO, logger="ivclms.access")
    before = audit_rows(client)
    scrape(client)
    scrape(client)
    assert audit_rows(client) == before
    assert sum("metrics.metrics 200" in r.getMessage() for r in caplog.records) == 2
    assert client.get("/metrics", headers=bearer("system/Patient.r")).status_code == 403
    assert audit_rows(client) == before + 1
    client.get("/cases", headers=bearer(**OPERATOR))
    assert audit_rows(client) == before + 2  # other reads by the same token still are

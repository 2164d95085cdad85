"""``ivclms pull`` against the real HAPI FHIR server and a real PostgreSQL database.

A case is posted and synced by the worker; then an EHR writes a plain R4 follow-up Observation for
that patient directly on HAPI. The pull must add exactly that visit to the case as a new version, and
pulling again must store nothing. Each test has its own database and case id (the ``tag``); the pulls
are bounded by ``--since`` the test's start; another test's case that falls in that window is new to
this database (imported, or ignored when it was withdrawn) and never counts as changed.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine, select, text

from service.cli import main
from service.fhir.client import FhirClient
from service.intake import Intake
from service.mapping.spec import IDENTIFIER_SYSTEM, spec
from service.store.cases import find, find_version
from service.store.tables import synced_resources
from service.sync.worker import Worker
from tests.support.sync import EXAMPLES, drain, submit, tagged

SCT = "http://snomed.info/sct"


def current(engine: Engine, ref: str) -> tuple[int, dict[str, Any]]:
    with engine.connect() as conn:
        row = find(conn, ref)
        assert row is not None
        version = find_version(conn, ref, row.version)
        assert version is not None
    return row.version, json.loads(version.case_json)


def pull(db_url: str, hapi_url: str, data_dir: Path, since: datetime) -> str:
    env = {
        "IVCLMS_DB_URL": db_url,
        "IVCLMS_FHIR_URL": hapi_url,
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_DATA_DIR": str(data_dir),
        "IVCLMS_FHIR_RETRIES": "1",
    }
    stamp = since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    result = CliRunner().invoke(main, ["pull", "--from", hapi_url, "--since", stamp], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_follow_up_observation_written_on_the_server_becomes_a_new_visit(
    package_loaded, hapi, engine, db_url, hapi_url, tag, tmp_path
):
    start = datetime.now(UTC) - timedelta(seconds=2)
    intake = Intake(engine, enqueue=True)
    (ref,) = submit(intake, [tagged(EXAMPLES[0], tag)])
    client = FhirClient(hapi_url, timeout=60)
    try:
        drain(Worker(engine, client), engine)
    finally:
        client.close()
    _, before = current(engine, ref)
    with engine.connect() as conn:
        (patient_id,) = conn.execute(
            select(synced_resources.c.server_id).where(
                synced_resources.c.case_ref == ref, synced_resources.c.identifier.like("%|patient")
            )
        ).scalars()

    code = spec().codes["disease-status"]
    observation = {  # plain R4, as an EHR writes it: no profile, no business identifier
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": code["system"], "code": code["code"]}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2024-10-01",
        "valueCodeableConcept": {"coding": [{"system": SCT, "code": "271299001"}]},
    }
    created = hapi.create(observation)
    assert created["id"]

    output = pull(db_url, hapi_url, tmp_path, start)
    with engine.connect() as conn:
        reasons = [str(r) for r in conn.execute(text("select reason from pull_conflicts"))]
    assert "1 changed" in output and "0 conflicts" in output and "0 rejected" in output, (output, reasons)

    version, after = current(engine, ref)
    assert version == 2
    expected = copy.deepcopy(before)
    (visit,) = after["follow_up"][len(before["follow_up"]) :]
    expected["follow_up"].append(visit)
    # the visit is a contact: a last contact before it moves to it (service.sync.pull.contact_at_visits)
    if expected["outcome"]["last_contact"] < "2024-10-01":
        expected["outcome"]["last_contact"] = "2024-10-01"
    assert after == expected  # the new visit, the contact it is, and nothing else
    assert (visit["date"], visit["disease_status"]) == ("2024-10-01", "progressive")

    again = pull(db_url, hapi_url, tmp_path, start)
    assert "0 changed" in again, again
    assert current(engine, ref)[0] == 2

    # the worker delivers version 2; the server's copy of the new visit is then the service's own
    client = FhirClient(hapi_url, timeout=60)
    try:
        drain(Worker(engine, client), engine)
    finally:
        client.close()
    third = pull(db_url, hapi_url, tmp_path, start)
    assert "0 changed" in third and "0 conflicts" in third, third
    assert current(engine, ref)[0] == 2

    # ... delivered onto the EHR's own Observation (updated in place), not as a second copy beside it
    with engine.connect() as conn:
        (merged,) = conn.execute(
            select(synced_resources.c.identifier).where(
                synced_resources.c.case_ref == ref, synced_resources.c.server_id == created["id"]
            )
        ).scalars()
    found = hapi.search("Observation", {"identifier": f"{IDENTIFIER_SYSTEM}|{merged}"})
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [created["id"]]
    assert hapi.read("Observation", created["id"])["meta"]["versionId"] == "2"

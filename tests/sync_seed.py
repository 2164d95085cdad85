"""Sync state written straight into a database, as the worker and the pull would leave it, for tests of
the console's sync page (unit tests and the browser test against a served instance's SQLite file)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select, update

from service.clock import utcnow
from service.intake import Intake
from service.store.cases import enqueue, find, find_version
from service.store.pull_tables import pull_conflicts
from service.store.tables import outbox

SERVER = "http://fhir.test/fhir"


def dead_letter(engine: Engine, ref: str, version: int) -> int:
    """The newest outbox entry of ``ref`` version ``version`` (queued if there is none) rejected by the
    server: dead after one attempt, with the server's OperationOutcome."""
    answer = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "Profile not loaded",
                "expression": ["Observation.meta.profile[0]"],
            }
        ],
    }
    with engine.begin() as conn:
        query = outbox.select().where(outbox.c.case_ref == ref, outbox.c.version == version)
        found = conn.execute(query.order_by(outbox.c.id.desc())).first()
        if found is None:  # an instance without a FHIR server queues nothing: queue it as intake would
            enqueue(conn, ref, version, utcnow())
            found = conn.execute(query.order_by(outbox.c.id.desc())).first()
        entry_id = found.id
        conn.execute(
            update(outbox)
            .where(outbox.c.id == entry_id)
            .values(
                state="dead",
                attempts=1,
                last_error="rejected: HTTP 422 invalid",
                outcome_json=orjson.dumps(answer).decode(),
            )
        )
    return int(entry_id)


def outcome_conflict(engine: Engine, ref: str, effective: str, *, now: datetime | None = None) -> int:
    """A pull conflict on the case's vital-status Observation: the server's version of the current entry
    with ``effectiveDateTime`` = ``effective`` (references left as the Bundle's full URLs)."""
    with engine.connect() as conn:
        row = find(conn, ref)
        assert row is not None
        version = find_version(conn, ref, row.version)
        assert version is not None
    bundle = orjson.loads(version.bundle_json)
    entry = next(
        e
        for e in bundle["entry"]
        if any(str(i.get("value", "")).endswith("|outcome") for i in e["resource"].get("identifier", []))
    )
    resource: dict[str, Any] = copy.deepcopy(entry["resource"])
    with engine.connect() as conn:  # one server resource per conflict seeded
        server_id = str(9001 + len(conn.execute(select(pull_conflicts.c.id)).all()))
    resource.update(id=server_id, effectiveDateTime=effective)
    resource.setdefault("meta", {})["versionId"] = "2"
    identifier = next(i["value"] for i in resource["identifier"] if i["value"].endswith("|outcome"))
    with engine.begin() as conn:
        created = conn.execute(
            insert(pull_conflicts).values(
                server_url=SERVER,
                kind="conflict",
                case_ref=ref,
                identifier=identifier,
                resource_type="Observation",
                server_id=server_id,
                server_version="2",
                case_version=row.version,
                reason=f"Observation changed on the server (version 2) and here (now v{row.version})",
                resource_json=orjson.dumps(resource).decode(),
                detected_at=now or utcnow(),
            )
        )
    return int(created.inserted_primary_key[0])


def case(engine: Engine, data: dict[str, Any]) -> str:
    """``data`` stored (and queued) as the service's intake stores it; returns its ref."""
    intake = Intake(engine, enqueue=True)
    return intake.submit(intake.prepare(data), "test").case.id

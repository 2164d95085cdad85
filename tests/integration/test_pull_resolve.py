"""Settling a pull conflict (``service.sync.resolve``) against the real HAPI FHIR server and PostgreSQL.

A case is synced by the worker; the service then moves its last contact (a version not yet sent) while
an EHR user moves it on HAPI too; the pull records the conflict. Keeping ours must put the service's
date back on HAPI through the worker; taking the server's must store it as a new version that the
worker's next send leaves as it is. Either way a later pull neither reopens it nor changes the case.
Each test has its own database and case id (the ``tag``); pulls are bounded by the test's start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from service.fhir.client import FhirClient
from service.intake import Intake
from service.store.pull_tables import pull_conflicts
from service.store.tables import synced_resources
from service.sync.pull import pull
from service.sync.resolve import OURS, THEIRS, resolve
from service.sync.worker import Worker
from tests.integration.test_pull import current
from tests.support.sync import EXAMPLES, drain, submit, tagged

OURS_DATE, THEIRS_DATE = "2024-12-24", "2025-02-01"


def conflicts_of(engine: Engine, ref: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(pull_conflicts).where(pull_conflicts.c.case_ref == ref)))


def outcome_id(engine: Engine, ref: str) -> str:
    with engine.connect() as conn:
        (server_id,) = conn.execute(
            select(synced_resources.c.server_id).where(
                synced_resources.c.case_ref == ref, synced_resources.c.identifier.like("%|outcome")
            )
        ).scalars()
    return str(server_id)


def conflict_on_last_contact(engine: Engine, hapi: FhirClient, tag: str) -> tuple[str, datetime]:
    """(the case ref, the test's start) with one open conflict on the case's vital-status Observation."""
    start = datetime.now(UTC) - timedelta(seconds=2)
    intake = Intake(engine, enqueue=True)
    case = tagged(EXAMPLES[0], tag)
    (ref,) = submit(intake, [case])
    drain(Worker(engine, hapi), engine)
    case["outcome"]["last_contact"] = OURS_DATE
    submit(intake, [case])  # version 2, not sent yet
    on_server = hapi.read("Observation", outcome_id(engine, ref))
    on_server["effectiveDateTime"] = THEIRS_DATE
    hapi.update(on_server)  # the EHR user's change
    pull(engine, hapi, intake, since=start)
    (conflict,) = conflicts_of(engine, ref)
    assert (conflict.kind, conflict.resolved_at) == ("conflict", None)
    assert current(engine, ref)[0] == 2
    return ref, start


def settle(engine: Engine, hapi: FhirClient, ref: str, start: datetime) -> None:
    """The worker sends what is queued, then a pull over the whole window: nothing changes, no conflict."""
    intake = Intake(engine, enqueue=True)
    drain(Worker(engine, hapi), engine)
    version = current(engine, ref)[0]
    pull(engine, hapi, intake, since=start)
    assert current(engine, ref)[0] == version
    assert [c.resolved_at is not None for c in conflicts_of(engine, ref)] == [True]


def test_keep_ours_puts_the_services_date_back_on_the_server(package_loaded, hapi, engine, tag):
    ref, start = conflict_on_last_contact(engine, hapi, tag)
    (conflict,) = conflicts_of(engine, ref)

    done = resolve(engine, Intake(engine, enqueue=True), conflict.id, OURS)

    assert (done.version, done.changed) == (2, False)
    settle(engine, hapi, ref, start)
    assert hapi.read("Observation", outcome_id(engine, ref))["effectiveDateTime"] == OURS_DATE
    assert current(engine, ref)[1]["outcome"]["last_contact"] == OURS_DATE


def test_take_theirs_stores_the_servers_date_and_the_server_keeps_it(package_loaded, hapi, engine, tag):
    ref, start = conflict_on_last_contact(engine, hapi, tag)
    (conflict,) = conflicts_of(engine, ref)

    done = resolve(engine, Intake(engine, enqueue=True), conflict.id, THEIRS)

    assert (done.version, done.changed) == (3, True)
    assert current(engine, ref)[1]["outcome"]["last_contact"] == THEIRS_DATE
    settle(engine, hapi, ref, start)
    assert hapi.read("Observation", outcome_id(engine, ref))["effectiveDateTime"] == THEIRS_DATE

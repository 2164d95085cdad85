"""``service.sync.resolve``: an operator settles a pull conflict. The conflicts are produced the way the
pull tests produce them (``tests.unit.sync.test_pull``: the worker syncs a case, an EHR user edits a
resource on the fake server, the service changes the same element, a pull runs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from service.errors import Conflict, NotFound, Unprocessable
from service.fhir.client import FhirClient
from service.intake import Intake
from service.store.cases import history
from service.store.pull_tables import pull_conflicts, pulled_resources
from service.sync import outbox
from service.sync import resolve as resolve_module
from service.sync.resolve import OURS, THEIRS, resolve
from service.sync.status import status
from service.sync.worker import Worker
from tests.unit.sync import test_pull
from tests.unit.sync.conftest import Clock, entries, example, submit
from tests.unit.sync.test_pull import PullFake, current, run_pull

# the pull tests' fixtures: a fake server that answers searches, a client, a case synced to it
server, fhir_client, synced = test_pull.server, test_pull.fhir_client, test_pull.synced

OURS_DATE, THEIRS_DATE = "2024-12-24", "2025-02-01"


def conflict_on_last_contact(
    engine: Engine,
    intake: Intake,
    server: PullFake,
    clock: Clock,
    client: FhirClient,
    theirs: str = THEIRS_DATE,
) -> tuple[int, str]:
    """The service moves the last contact (version 2, not sent), an EHR user moves it on the server too,
    a pull records the conflict. Returns (conflict id, the server's resource name)."""
    changed = example(0)
    changed["outcome"]["last_contact"] = OURS_DATE
    submit(intake, changed)
    name = server.named("Observation", "outcome")
    server.edit(name, lambda r: r.update(effectiveDateTime=theirs))
    report = run_pull(engine, client, clock)
    assert report.conflicts == 1
    (open_conflict,) = status(engine).conflicts
    return open_conflict.id, name


def open_ids(engine: Engine) -> list[int]:
    return [c.id for c in status(engine).conflicts]


def test_keep_ours_resolves_and_the_next_pull_does_not_reopen_it(
    engine, intake, server, synced, clock, fhir_client
):
    conflict_id, name = conflict_on_last_contact(engine, intake, server, clock, fhir_client)

    done = resolve(engine, intake, conflict_id, OURS, clock=clock)

    assert (done.keep, done.case_ref, done.version) == (OURS, synced, 2)
    assert done.queued is False  # version 2 waits to be sent already: that send carries ours
    assert [(e.version, e.state) for e in entries(engine)] == [(1, "done"), (2, "pending")]
    assert open_ids(engine) == []
    again = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert (again.conflicts, again.changed) == (0, 0)  # the server version is decided: not raised again
    assert open_ids(engine) == []
    assert current(engine, synced)[0] == 2

    Worker(engine, fhir_client, worker_id="w", clock=clock).run_once()
    assert server.resources[name]["effectiveDateTime"] == OURS_DATE  # the server's change overwritten


def test_keep_ours_sends_a_delivered_version_again(engine, intake, server, synced, clock, fhir_client):
    conflict_id, name = conflict_on_last_contact(engine, intake, server, clock, fhir_client)
    worker = Worker(engine, fhir_client, worker_id="w", clock=clock)
    worker.run_once()  # version 2 delivered before anyone looked at the conflict
    assert [(e.version, e.state) for e in entries(engine)] == [(1, "done"), (2, "done")]
    server.edit(name, lambda r: r.update(effectiveDateTime=THEIRS_DATE))  # and the server changed again
    sent = len(server.transactions)

    done = resolve(engine, intake, conflict_id, OURS, clock=clock)

    assert done.queued is True
    assert [(e.version, e.state) for e in entries(engine)] == [(1, "done"), (2, "done"), (2, "pending")]
    clock.advance(1)
    worker.run_once()
    assert len(server.transactions) == sent + 1  # not superseded as "already delivered"
    assert [e.state for e in entries(engine)] == ["done", "done", "done"]
    assert server.resources[name]["effectiveDateTime"] == OURS_DATE


def test_a_claim_still_supersedes_an_entry_queued_before_the_delivery_of_its_version(engine, intake, clock):
    """The claim rule ``requeue`` relies on, from the other side: an older entry of a delivered version
    (a retried dead letter) is not sent again."""
    (ref,) = submit(intake, example(0))
    with engine.begin() as conn:
        (first,) = outbox.claim(conn, worker_id="w", now=clock.now, lease_s=60, limit=1, server_url="s")
        assert outbox.requeue(conn, ref, 1, now=clock.now) is False  # one is being sent
        outbox.mark_done(conn, first, "w", now=clock.now, synced=[])
        assert outbox.requeue(conn, ref, 1, now=clock.now) is True
        (again,) = outbox.claim(conn, worker_id="w", now=clock.now, lease_s=60, limit=1, server_url="s")
        assert (again.version, again.id) == (1, first.id + 1)
        intake_entry = first.id  # the delivered one stays done
    assert [(e.id, e.state) for e in entries(engine)] == [
        (intake_entry, "done"),
        (intake_entry + 1, "sending"),
    ]


def test_take_theirs_stores_the_servers_value_as_the_pull_would(
    engine, intake, server, synced, clock, fhir_client
):
    conflict_id, name = conflict_on_last_contact(engine, intake, server, clock, fhir_client)
    _, before = current(engine, synced)

    done = resolve(engine, intake, conflict_id, THEIRS, clock=clock)

    assert (done.keep, done.version, done.changed) == (THEIRS, 3, True)
    version, after = current(engine, synced)
    assert version == 3
    expected = {**before, "outcome": {**before["outcome"], "last_contact": THEIRS_DATE}}
    assert after == expected  # the server's value, nothing else of the case changed
    with engine.connect() as conn:
        (row,) = conn.execute(select(pulled_resources)).all()
        assert history(conn, synced)[0].author == "pull"  # newest first
    assert (f"{row.resource_type}/{row.server_id}", row.case_version) == (name, 3)
    assert row.server_version == server.resources[name]["meta"]["versionId"]
    assert row.identifier.endswith("|outcome")
    assert open_ids(engine) == []
    assert [(e.version, e.state) for e in entries(engine)][-1] == (3, "pending")
    again = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert (again.conflicts, again.changed) == (0, 0)
    assert current(engine, synced)[0] == 3


def test_take_theirs_that_fails_validation_stores_nothing_and_stays_open(
    engine, intake, server, synced, clock, fhir_client
):
    # a last contact centuries after today: the pull never merged it (a conflict), the case
    # rules refuse it when an operator tries to take it
    conflict_id, _ = conflict_on_last_contact(engine, intake, server, clock, fhir_client, theirs="2999-01-01")

    with pytest.raises(Unprocessable) as raised:
        resolve(engine, intake, conflict_id, THEIRS, clock=clock)

    assert raised.value.status == 422
    assert any("last_contact" in (i.expression or "") for i in raised.value.issues), raised.value.issues
    assert current(engine, synced)[0] == 2
    assert open_ids(engine) == [conflict_id]
    with engine.connect() as conn:
        assert conn.execute(select(pulled_resources)).first() is None


def test_unknown_and_resolved_conflicts(engine, intake, server, synced, clock, fhir_client):
    with pytest.raises(NotFound):
        resolve(engine, intake, 4242, OURS, clock=clock)
    conflict_id, _ = conflict_on_last_contact(engine, intake, server, clock, fhir_client)
    resolve(engine, intake, conflict_id, OURS, clock=clock)
    for keep in (OURS, THEIRS):
        with pytest.raises(Conflict):
            resolve(engine, intake, conflict_id, keep, clock=clock)


def break_it(resource: dict[str, Any]) -> None:
    resource["valueCodeableConcept"] = {"coding": [{"system": "urn:unknown", "code": "x"}]}


def test_a_rejected_merge_can_only_be_dismissed(engine, intake, server, synced, clock, fhir_client):
    server.edit(server.named("Observation", "outcome"), break_it)
    assert run_pull(engine, fhir_client, clock).rejected == 1
    (rejected,) = status(engine).conflicts
    assert rejected.kind == "rejected"

    with pytest.raises(Conflict, match="dismissed"):
        resolve(engine, intake, rejected.id, THEIRS, clock=clock)
    assert open_ids(engine) == [rejected.id]

    done = resolve(engine, intake, rejected.id, OURS, clock=clock)
    assert (done.version, done.queued) == (1, True)  # the server's broken change is to be overwritten
    assert open_ids(engine) == []
    again = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert again.rejected == 0
    with engine.connect() as conn:
        assert [r.resolved_at is not None for r in conn.execute(select(pull_conflicts))] == [True]


def test_a_withdrawn_case_is_not_merged_into(engine, intake, server, synced, clock, fhir_client):
    conflict_id, _ = conflict_on_last_contact(engine, intake, server, clock, fhir_client)
    intake.retract(synced, "test", None)
    version = current(engine, synced)[0]

    with pytest.raises(Conflict, match="withdrawn"):
        resolve(engine, intake, conflict_id, THEIRS, clock=clock)

    assert current(engine, synced)[0] == version
    assert open_ids(engine) == [conflict_id]
    assert resolve(engine, intake, conflict_id, OURS, clock=clock).version == version


def test_keep_ours_while_theirs_is_being_merged_is_refused(
    engine, intake, server, synced, clock, fhir_client, monkeypatch
):
    """Outside review: a "theirs" and a concurrent "ours" were both answered 200, each told its side
    won. "theirs" claims the conflict before it merges, so the second request finds it resolved."""
    conflict_id, _ = conflict_on_last_contact(engine, intake, server, clock, fhir_client)
    merge = resolve_module.pull.merge_and_store
    seen: list[type[BaseException]] = []

    def merge_while_ours_arrives(*args: Any, **kwargs: Any) -> Any:
        with pytest.raises(Conflict) as raised:
            resolve(engine, intake, conflict_id, OURS)
        seen.append(type(raised.value))
        return merge(*args, **kwargs)

    monkeypatch.setattr(resolve_module.pull, "merge_and_store", merge_while_ours_arrives)
    done = resolve(engine, intake, conflict_id, THEIRS)
    assert seen == [Conflict]
    assert (done.keep, done.changed) == (THEIRS, True)
    assert conflict_id not in open_ids(engine)


def test_a_failed_take_theirs_reopens_the_conflict_it_claimed(
    engine, intake, server, synced, clock, fhir_client, monkeypatch
):
    conflict_id, _ = conflict_on_last_contact(engine, intake, server, clock, fhir_client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise Unprocessable([])

    monkeypatch.setattr(resolve_module.pull, "merge_and_store", broken)
    with pytest.raises(Unprocessable):
        resolve(engine, intake, conflict_id, THEIRS)
    assert conflict_id in open_ids(engine)

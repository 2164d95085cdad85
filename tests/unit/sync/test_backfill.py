"""Issue 13, finding 7: cases stored while sync is off are queued once sync is on (the backfill), for
the server configured now; what another server had does not count. On SQLite, and on PostgreSQL
with IVCLMS_TEST_DB=postgres."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from sqlalchemy import Engine, text, update

from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake
from service.settings import Settings
from service.store.tables import outbox, synced_resources
from service.sync import backfill as backfill_module
from service.sync.backfill import backfill, queue_missing
from service.sync.status import retry
from service.sync.verify import verify
from service.sync.worker import Worker
from tests.support.backend import BACKEND
from tests.unit.sync.conftest import BASE, START, Clock, FakeFhir, entries, example, submit, synced_rows

OTHER = "http://new-fhir.test/fhir"


@pytest.fixture
def servers() -> Iterator[dict[str, FakeFhir]]:
    """Two fake FHIR servers: the hospital's old one (BASE) and the one it moves to (OTHER)."""
    fakes = {BASE: FakeFhir(), OTHER: FakeFhir(next_id=5000)}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for url, fake in fakes.items():
            mock.add_callback(responses.POST, url, callback=fake.transaction)
            mock.add_callback(
                responses.GET, re.compile(re.escape(url) + r"/[A-Za-z]+/[^/?]+$"), callback=fake.read
            )
        yield fakes


@pytest.fixture
def sync_off(engine: Engine, clock: Clock) -> Intake:
    """Intake as a service without IVCLMS_FHIR_URL builds it: nothing queued."""
    return Intake(engine, enqueue=False, clock=clock)


def worker_for(engine: Engine, clock: Clock, url: str = BASE) -> Worker:
    return Worker(engine, FhirClient(url, retries=0), worker_id=f"w-{url}", clock=clock, rand=lambda: 1.0)


def fill(engine: Engine, url: str) -> backfill_module.Backfill:
    """The backfill at the fake clock's time (START), so what it queues is due for the workers."""
    return backfill(engine, url, clock=lambda: START)


def drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def queued(engine: Engine) -> list[tuple[str, int, str, str | None]]:
    return [(e.case_ref, e.version, e.state, e.server_url) for e in entries(engine)]


def test_finding_7_cases_stored_while_sync_is_off_are_queued_once_and_reach_the_server_once(
    engine, sync_off, servers, clock
):
    refs = submit(sync_off, example(0), example(1))
    assert entries(engine) == []  # what the issue saw: nothing pending, the worker finds nothing

    assert fill(engine, BASE).queued == 2
    assert sorted(queued(engine)) == sorted((ref, 1, "pending", BASE) for ref in refs)
    assert fill(engine, BASE).queued == 0  # exactly once: the queued entries are records

    drain(worker_for(engine, clock))
    assert len(servers[BASE].transactions) == 2
    assert fill(engine, BASE).queued == 0  # delivered: still nothing to queue
    assert {e.state for e in entries(engine)} == {"done"}


def test_finding_7_reposting_an_unchanged_case_with_sync_on_still_leaves_it_to_the_backfill(
    engine, sync_off, clock
):
    (ref,) = submit(sync_off, example(0))
    sync_on = Intake(engine, enqueue=True, clock=clock)
    accepted = sync_on.submit(sync_on.prepare(example(0)), "test")
    assert (accepted.created, accepted.changed) == (False, False)  # 200 "unchanged": nothing queued
    assert entries(engine) == []
    assert fill(engine, BASE).queued == 1
    assert queued(engine) == [(ref, 1, "pending", BASE)]


def test_finding_7_a_version_stored_while_sync_was_off_is_queued_after_the_delivered_one(
    engine, intake, sync_off, servers, clock
):
    (ref,) = submit(intake, example(0))
    drain(worker_for(engine, clock))
    submit(sync_off, example(0, institution="Changed while sync was off"))

    assert fill(engine, BASE).queued == 1
    assert queued(engine)[-1] == (ref, 2, "pending", BASE)
    drain(worker_for(engine, clock))
    assert [b["entry"][0]["resource"]["resourceType"] for b in servers[BASE].transactions] == ["Patient"] * 2
    assert {r.case_version for r in synced_rows(engine, ref)} == {2}


def test_finding_7_an_open_entry_of_the_current_version_counts_whatever_server(engine, intake):
    submit(intake, example(0))  # queued by intake: no server yet, it goes to the configured one
    assert fill(engine, BASE).queued == 0
    assert fill(engine, OTHER).queued == 0


def test_finding_7_a_move_to_another_server_sends_every_case_there_once(
    engine, intake, sync_off, servers, clock, reader
):
    refs = submit(intake, example(0), example(1))
    drain(worker_for(engine, clock, BASE))
    refs += submit(sync_off, example(2))  # stored while sync was off, before the move

    assert fill(engine, OTHER).queued == 3
    assert fill(engine, OTHER).queued == 0
    drain(worker_for(engine, clock, OTHER))
    assert len(servers[OTHER].transactions) == 3
    assert len(servers[BASE].transactions) == 2  # the old server got nothing more

    # each server's records stand side by side: ids of one are never used on the other
    old = {(r.case_ref, r.identifier): r.server_id for r in synced_rows(engine) if r.server_url == BASE}
    new = {(r.case_ref, r.identifier): r.server_id for r in synced_rows(engine) if r.server_url == OTHER}
    assert {ref for ref, _ in new} == set(refs) and {ref for ref, _ in old} == set(refs[:2])
    shared = set(old) & set(new)
    assert shared and all(old[k] != new[k] for k in shared if not k[1].startswith("Provenance/"))
    other = FhirClient(OTHER, retries=0)
    try:
        report = verify(engine, other)
    finally:
        other.close()
    assert (report.cases, report.findings) == (3, [])
    assert verify(engine, reader).cases == 2  # the old server: only what it had

    # back on the old server, only the case it never had is missing there
    assert fill(engine, BASE).queued == 1
    assert queued(engine)[-1] == (refs[2], 1, "pending", BASE)


def test_finding_7_a_delivery_to_the_old_server_does_not_supersede_the_entry_for_the_new_one(
    engine, intake, servers, clock
):
    submit(intake, example(0))
    drain(worker_for(engine, clock, BASE))
    assert fill(engine, OTHER).queued == 1
    drain(worker_for(engine, clock, OTHER))
    assert [e.state for e in entries(engine)] == ["done", "done"]
    assert len(servers[OTHER].transactions) == 1


def test_finding_7_dead_for_this_server_is_not_queued_again_but_dead_for_another_is(
    engine, sync_off, servers, clock
):
    submit(sync_off, example(0))
    fill(engine, BASE)
    with engine.begin() as conn:
        conn.execute(update(outbox).values(state="dead", last_error="rejected: HTTP 422"))
    assert fill(engine, BASE).queued == 0  # a person acts on a dead letter (sync retry)
    assert fill(engine, OTHER).queued == 1
    drain(worker_for(engine, clock, OTHER))
    assert len(servers[OTHER].transactions) == 1
    # retrying the dead entry for the old server: a delivery to another server does not supersede it
    (dead,) = [e for e in entries(engine) if e.state == "dead"]
    assert retry(engine, dead.id) == "pending"


def test_finding_7_a_withdrawn_case_goes_only_where_the_case_went(engine, intake, sync_off, servers, clock):
    (delivered,) = submit(intake, example(0))
    drain(worker_for(engine, clock, BASE))
    (never,) = submit(sync_off, example(1))
    sync_off.retract(delivered, "test", None)
    sync_off.retract(never, "test", None)

    assert fill(engine, BASE).queued == 1
    assert queued(engine)[-1] == (delivered, 2, "pending", BASE)
    drain(worker_for(engine, clock, BASE))
    assert fill(engine, OTHER).queued == 0  # neither case was ever on the new server


def test_finding_7_records_from_before_servers_were_named_belong_to_the_first_server_backfilled(
    engine, intake, servers, clock
):
    submit(intake, example(0))
    drain(worker_for(engine, clock, BASE))
    with engine.begin() as conn:  # as revision 0006 leaves rows written before it
        conn.execute(update(outbox).values(server_url=None))
        conn.execute(update(synced_resources).values(server_url=""))

    first = fill(engine, BASE)
    assert (first.queued, first.adopted) == (0, 1)
    assert {r.server_url for r in synced_rows(engine)} == {BASE}
    assert fill(engine, OTHER) == backfill_module.Backfill(queued=1, adopted=0)


def test_finding_7_the_worker_command_backfills_at_start_and_sync_backfill_prints_the_count(
    engine, sync_off, servers, tmp_path, db_url
):
    from click.testing import CliRunner

    from service.cli import main

    submit(sync_off, example(0), example(1))
    env = {
        "IVCLMS_DATA_DIR": str(tmp_path),
        "IVCLMS_DB_URL": db_url,
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_FHIR_URL": BASE + "/",  # a trailing slash names the same server
    }
    started = CliRunner().invoke(main, ["worker", "--once"], env=env)
    assert started.exit_code == 0, started.output
    assert "backfill: 2 cases queued" in started.output and "2 entries processed" in started.output
    assert len(servers[BASE].transactions) == 2

    again = CliRunner().invoke(main, ["sync", "backfill"], env=env)
    assert again.exit_code == 0, again.output
    assert f"0 cases queued for {BASE}\n" in again.output
    moved = CliRunner().invoke(main, ["sync", "backfill"], env={**env, "IVCLMS_FHIR_URL": OTHER})
    assert f"2 cases queued for {OTHER}\n" in moved.output
    off = CliRunner().invoke(main, ["sync", "backfill"], env={**env, "IVCLMS_FHIR_URL": ""})
    assert off.exit_code == 1 and "IVCLMS_FHIR_URL is empty" in off.output


# ---- exactly once when two backfills start together ---------------------------------------------------


def _holding_a_backfill(engine: Engine, clock: Clock) -> Iterator[Any]:
    """A backfill that has queued its cases and not committed yet (a worker caught mid-start)."""
    with engine.begin() as conn:
        assert queue_missing(conn, BASE, START).queued == 3
        yield conn


def test_finding_7_two_backfills_at_once_queue_each_case_once(engine, sync_off, clock, settings_for):
    submit(sync_off, example(0), example(1), example(2))
    second_engine = make_engine(settings_for())
    result: list[Any] = []
    holder = _holding_a_backfill(engine, clock)
    next(holder)
    try:
        if BACKEND == "postgres":
            other = threading.Thread(target=lambda: result.append(backfill(second_engine, BASE)))
            other.start()
            _wait_until_blocked_on_the_backfill_lock(engine)
            assert other.is_alive() and result == []
        else:  # SQLite: the first holds the one writer lock; a second writer cannot even begin
            path = engine.url.database
            assert path is not None
            probe = sqlite3.connect(path, timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            probe.close()
        next(holder, None)  # commit the first
        if BACKEND == "postgres":
            other.join(timeout=60)
        else:
            result.append(backfill(second_engine, BASE))
    finally:
        holder.close()
        second_engine.dispose()
    assert [r.queued for r in result] == [0]
    assert len(entries(engine)) == 3


def _wait_until_blocked_on_the_backfill_lock(engine: Engine) -> None:
    """Polls pg_locks (deadline 30 s) until some session waits for the backfill's advisory lock."""
    key = backfill_module.LOCK_KEY
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND ((classid::bigint << 32) | objid::bigint) = :key"
    )
    probe = make_engine(Settings(db_url=engine.url.render_as_string(hide_password=False), auth_disabled=True))
    end = time.monotonic() + 30
    try:
        while True:
            with probe.connect() as conn:
                if conn.execute(query, {"key": key}).scalar_one():
                    return
            assert time.monotonic() < end, "the second backfill never waited for the first"
            time.sleep(0.02)
    finally:
        probe.dispose()


@pytest.fixture
def settings_for(tmp_path, db_url):
    def make() -> Settings:
        return Settings(data_dir=tmp_path, auth_disabled=True, db_url=db_url)

    return make

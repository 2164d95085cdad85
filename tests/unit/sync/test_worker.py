"""The worker against a fake FHIR server: delivery, failures, backoff, dead letters, ordering, leases."""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import timedelta

import pytest

from service.store.cases import find_version
from service.sync import outbox
from service.sync.status import retry, status
from service.sync.worker import Result, backoff_s, error_summary, install_signal_handlers
from tests.unit.sync.conftest import (
    BASE,
    client,
    entries,
    example,
    outcome,
    submit,
    synced_rows,
    timeout,
)


def test_a_new_case_is_sent_once_and_its_server_ids_recorded(intake, engine, fhir, make_worker):
    (ref,) = submit(intake, example(0))
    worker = make_worker()

    assert worker.run_once() == 1
    assert len(fhir.transactions) == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts, entry.claimed_by) == ("done", 0, "w1")
    rows = synced_rows(engine, ref)
    bundle = fhir.transactions[0]
    assert len(rows) == len(bundle["entry"]) == len(fhir.resources)
    assert {f"{r.resource_type}/{r.server_id}" for r in rows} == set(fhir.resources)
    assert {r.server_version for r in rows} == {"1"}
    assert {r.case_version for r in rows} == {1}
    provenance = next(r for r in rows if r.resource_type == "Provenance")
    assert provenance.identifier == f"Provenance/{provenance.server_id}"
    patient = next(r for r in rows if r.resource_type == "Patient")
    assert patient.identifier.endswith("|IVC-001|patient")

    assert worker.run_once() == 0  # nothing due: nothing sent again
    assert len(fhir.transactions) == 1


def test_5xx_reschedules_with_backoff_then_delivers(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    fhir.fail((503, {}, None), (502, {}, None))
    worker = make_worker(backoff_base_s=10, max_backoff_s=300)

    assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts, entry.last_error) == ("pending", 1, "unavailable: HTTP 503")
    assert entry.next_attempt_at == clock.now + timedelta(seconds=10)
    assert entry.claimed_by == "w1" and entry.lease_until is None

    clock.advance(9)
    assert worker.run_once() == 0  # not due yet
    clock.advance(1)
    assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts) == ("pending", 2)
    assert entry.next_attempt_at == clock.now + timedelta(seconds=20)  # doubled

    clock.advance(20)
    assert worker.run_once() == 1
    assert entries(engine)[0].state == "done"
    assert len(fhir.transactions) == 1


def test_a_timeout_is_an_outage_not_a_rejection(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    fhir.fail(timeout())
    worker = make_worker()
    assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert entry.state == "pending"
    assert entry.last_error == "unavailable: no HTTP answer"
    clock.advance(3600)
    assert worker.run_once() == 1
    assert entries(engine)[0].state == "done"


def test_the_client_retries_before_the_outbox_does(intake, engine, fhir, make_worker):
    submit(intake, example(0))
    fhir.fail(timeout(), (500, {}, None))
    worker = make_worker(client=client(retries=2))
    assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts) == ("done", 0)


def test_429_is_never_retried_before_retry_after(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    fhir.fail((429, {"Retry-After": "120"}, None))
    worker = make_worker(backoff_base_s=5)
    assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert entry.last_error == "unavailable: HTTP 429"
    assert entry.next_attempt_at == clock.now + timedelta(seconds=120)
    clock.advance(119)
    assert worker.run_once() == 0
    clock.advance(1)
    assert worker.run_once() == 1
    assert entries(engine)[0].state == "done"


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    assert [backoff_s(n, base_s=5, max_s=300, rand=lambda: 1.0) for n in range(1, 9)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
    assert backoff_s(3, base_s=5, max_s=300, rand=lambda: 0.0) == 10  # jitter: half to all of it
    assert backoff_s(10_000, base_s=5, max_s=300, rand=lambda: 1.0) == 300
    assert backoff_s(1, base_s=5, max_s=300, retry_after=900, rand=lambda: 1.0) == 900


def test_backoff_caps_in_the_outbox_too(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    worker = make_worker(backoff_base_s=60, max_backoff_s=120)
    delays = []
    for _ in range(4):
        fhir.fail((503, {}, None))
        clock.advance(10_000)
        assert worker.run_once() == 1
        delays.append((entries(engine)[0].next_attempt_at - clock.now).total_seconds())
    assert delays == [60, 120, 120, 120]
    assert entries(engine)[0].attempts == 4


def test_a_4xx_with_an_operation_outcome_is_dead_lettered_without_patient_data(
    intake, engine, fhir, make_worker, clock, caplog
):
    (ref,) = submit(intake, example(0))
    fhir.fail((422, {}, outcome("invariant", "Observation.valueQuantity.value")))
    worker = make_worker()
    with caplog.at_level(logging.DEBUG):
        assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert entry.state == "dead"
    assert entry.attempts == 1
    assert entry.last_error == "rejected: HTTP 422; error invariant @ Observation.valueQuantity.value"
    assert "SECRET-PATIENT-VALUE" in entry.outcome_json  # the server's full answer is kept for the operator
    assert "SECRET-PATIENT-VALUE" not in caplog.text
    assert "IVC-001" not in caplog.text and "A-0001" not in caplog.text
    assert ref in caplog.text

    clock.advance(3600)
    assert worker.run_once() == 0  # dead stays dead
    (dead,) = status(engine, now=clock.now).dead
    assert (dead.id, dead.case_ref, dead.version, dead.attempts) == (entry.id, ref, 1, 1)
    assert dead.outcome["issue"][0]["code"] == "invariant"


def test_a_dead_entry_retried_after_the_fix_is_delivered(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    fhir.fail((400, {}, outcome()))
    worker = make_worker()
    worker.run_once()
    (entry,) = entries(engine)
    assert entry.state == "dead"

    assert retry(engine, entry.id, clock=clock) == "pending"
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts, entry.next_attempt_at) == ("pending", 0, clock.now)
    assert worker.run_once() == 1
    assert entries(engine)[0].state == "done"
    assert len(fhir.transactions) == 1


def test_a_dead_entry_is_superseded_when_a_later_version_was_delivered(intake, engine, fhir, make_worker):
    submit(intake, example(0))
    fhir.fail((400, {}, outcome()))
    worker = make_worker()
    worker.run_once()
    submit(intake, example(0, institution="Corrected Hospital"))
    assert worker.run_once() == 1
    first, second = entries(engine)
    assert (first.state, second.state) == ("dead", "done")

    assert retry(engine, first.id) == "superseded"
    assert entries(engine)[0].state == "superseded"
    assert worker.run_once() == 0
    assert len(fhir.transactions) == 1


def test_auth_and_conflict_answers_are_retried_not_dead_lettered(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    worker = make_worker()
    for status_code in (401, 403, 409):
        fhir.fail((status_code, {}, outcome("security")))
        clock.advance(10_000)
        assert worker.run_once() == 1
        assert entries(engine)[0].state == "pending"
        assert entries(engine)[0].last_error.startswith(f"refused: HTTP {status_code}")
    clock.advance(10_000)
    worker.run_once()
    assert entries(engine)[0].state == "done"


def test_an_unexpected_answer_is_rescheduled_and_logged_by_type_only(
    intake, engine, fhir, make_worker, clock, caplog
):
    submit(intake, example(0))
    fhir.fail((200, {}, {"resourceType": "Bundle", "type": "transaction-response", "entry": []}))
    worker = make_worker()
    with caplog.at_level(logging.DEBUG):
        assert worker.run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.last_error) == ("pending", "unexpected: ResponseError")
    assert "IVC-001" not in caplog.text
    clock.advance(3600)
    worker.run_once()
    assert entries(engine)[0].state == "done"


def test_pending_versions_of_a_case_are_coalesced_into_the_newest(intake, engine, fhir, make_worker):
    (ref,) = submit(intake, example(0))
    submit(intake, example(0, institution="Second"))
    submit(intake, example(0, institution="Third"))
    worker = make_worker()

    assert worker.run_once() == 1
    assert [e.state for e in entries(engine)] == ["superseded", "superseded", "done"]
    (sent,) = fhir.transactions
    assert sent == json.loads(_stored(engine, ref, 3).bundle_json)  # the newest snapshot, whole
    assert {r.case_version for r in synced_rows(engine, ref)} == {3}
    assert worker.run_once() == 0


def _stored(engine, ref, version):
    with engine.connect() as conn:
        found = find_version(conn, ref, version)
    assert found is not None
    return found


def test_a_version_never_overtakes_the_one_being_sent(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0))
    first = make_worker("w1")
    second = make_worker("w2")
    with engine.begin() as conn:  # w1 holds version 1 (sending, lease running)
        (held,) = outbox.claim(conn, worker_id="w1", now=clock.now, lease_s=300, limit=10, server_url=BASE)
    submit(intake, example(0, institution="Second"))

    assert second.run_once() == 0  # version 2 waits while version 1 is in flight
    assert [e.state for e in entries(engine)] == ["sending", "pending"]

    with engine.begin() as conn:  # w1 finishes version 1 ...
        assert outbox.mark_done(conn, held, "w1", now=clock.now, synced=[])
    assert second.run_once() == 1  # ... and only then version 2 goes
    assert [e.state for e in entries(engine)] == ["done", "done"]
    assert len(fhir.transactions) == 1 and first.worker_id == "w1"


def test_other_cases_are_not_held_up_by_a_case_in_flight(intake, engine, fhir, make_worker, clock):
    ref_a, ref_b = submit(intake, example(0), example(1))
    with engine.begin() as conn:
        outbox.claim(conn, worker_id="w1", now=clock.now, lease_s=300, limit=1, server_url=BASE)
    assert make_worker("w2").run_once() == 1
    states = {e.case_ref: e.state for e in entries(engine)}
    assert states == {ref_a: "sending", ref_b: "done"}


def test_a_crashed_workers_claim_is_taken_over_when_its_lease_runs_out(
    intake, engine, fhir, make_worker, clock
):
    submit(intake, example(0))
    with engine.begin() as conn:  # w1 claims, then dies (SIGKILL): nothing more from it
        (held,) = outbox.claim(conn, worker_id="w1", now=clock.now, lease_s=60, limit=10, server_url=BASE)
    rescuer = make_worker("w2", lease_s=60)

    clock.advance(59)
    assert rescuer.run_once() == 0
    clock.advance(2)
    assert rescuer.run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.claimed_by) == ("done", "w2")
    assert len(fhir.transactions) == 1

    with engine.begin() as conn:  # a w1 that was only stuck cannot finish what w2 took over
        assert not outbox.mark_done(conn, held, "w1", now=clock.now, synced=[])
        assert not outbox.reschedule(conn, held.id, "w1", next_attempt_at=clock.now, error="x")
    assert entries(engine)[0].claimed_by == "w2"


def test_a_claim_that_expired_and_was_taken_over_is_not_sent_by_its_first_holder(
    intake, engine, fhir, make_worker, clock
):
    submit(intake, example(0))
    slow = make_worker("w1", lease_s=60)
    with engine.begin() as conn:
        (held,) = outbox.claim(conn, worker_id="w1", now=clock.now, lease_s=60, limit=10, server_url=BASE)
    clock.advance(61)
    assert make_worker("w2", lease_s=60).run_once() == 1
    assert slow._process(held) == (Result.LOST, None)
    assert len(fhir.transactions) == 1


def test_an_outage_stops_the_batch_and_gives_the_rest_back_unattempted(
    intake, engine, fhir, make_worker, clock
):
    submit(intake, example(0), example(1), example(2))
    fhir.fail(timeout())
    worker = make_worker(backoff_base_s=30)
    assert worker.run_once() == 1  # one request, not three, while the server is down
    rows = entries(engine)
    assert [(e.state, e.attempts) for e in rows] == [("pending", 1), ("pending", 0), ("pending", 0)]
    assert {e.next_attempt_at for e in rows} == {clock.now + timedelta(seconds=30)}
    assert worker.run_once() == 0
    clock.advance(30)
    assert worker.run_once() == 3
    assert [e.state for e in entries(engine)] == ["done"] * 3


def test_stop_gives_back_the_rest_of_the_batch(intake, engine, fhir, make_worker, clock):
    submit(intake, example(0), example(1), example(2))
    stop = threading.Event()
    worker = make_worker()
    send = worker._process

    def send_then_sigterm(entry):
        result = send(entry)
        stop.set()  # SIGTERM arrives while the first entry is being sent
        return result

    worker._process = send_then_sigterm
    assert worker.run_once(stop) == 1
    rows = entries(engine)
    assert [e.state for e in rows] == ["done", "pending", "pending"]
    assert [e.attempts for e in rows] == [0, 0, 0]
    assert all(e.next_attempt_at <= clock.now and e.lease_until is None for e in rows[1:])
    assert len(fhir.transactions) == 1


def test_run_forever_polls_until_stopped(intake, engine, fhir, make_worker, clock):
    stop = threading.Event()
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 1:
            submit(intake, example(0))  # a case arrives while the worker idles
        else:
            stop.set()

    worker = make_worker(sleep=sleep, poll_s=7)
    worker.run_forever(stop)
    assert naps == [7, 7]
    assert entries(engine)[0].state == "done"


def test_run_forever_survives_a_failing_round(engine, make_worker, monkeypatch, caplog):
    stop = threading.Event()
    rounds = []

    def broken(_stop=None):
        rounds.append(1)
        if len(rounds) == 2:
            stop.set()
        raise RuntimeError("database went away: SECRET")

    worker = make_worker(sleep=lambda _s: None)
    monkeypatch.setattr(worker, "run_once", broken)
    worker.run_forever(stop)
    assert len(rounds) == 2
    assert "RuntimeError" in caplog.text and "SECRET" not in caplog.text


def test_sigterm_sets_the_stop_event():
    stop = threading.Event()
    restore = install_signal_handlers(stop)
    try:
        signal.raise_signal(signal.SIGTERM)
    finally:
        restore()
    assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_error_summary_keeps_codes_and_paths_not_diagnostics():
    text = error_summary(400, outcome("code-invalid", "Patient.gender"))
    assert text == "HTTP 400; error code-invalid @ Patient.gender"
    assert error_summary(None, None) == "no HTTP answer"


def test_nothing_is_queued_or_sent_for_cases_stored_without_sync(engine, fhir, make_worker):
    from service.intake import Intake

    Intake(engine, enqueue=False).submit(Intake(engine, enqueue=False).prepare(example(0)), "t")
    assert make_worker().run_once() == 0
    assert fhir.transactions == []


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lease_s": 0}, {"poll_s": -1}])
def test_worker_options_are_checked(make_worker, bad):
    with pytest.raises(ValueError):
        make_worker(**bad)

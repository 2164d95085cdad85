"""The sync worker against the real HAPI FHIR server and a real PostgreSQL database.

Each test gets its own PostgreSQL database (migrated from empty) and its own case ids (the ``tag``),
so runs never see each other's queue or resources. A small HTTP proxy in front of HAPI can drop
every connection (the FHIR server unreachable) and counts the transactions it forwards per case, which
is how "sent once" is checked rather than assumed. Conditions are polled with a deadline, never slept on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake
from service.settings import Settings
from service.store.tables import outbox, synced_resources
from service.sync.worker import Worker
from tests.support.sync import (
    EXAMPLES,
    ROOT,
    Proxy,
    _start_worker,
    _worker_env,
    assert_hapi_holds_exactly,
    case_key,
    drain,
    newest_bundles,
    shifted_clock,
    states,
    submit,
    tagged,
    verify_through,
    wait_for,
)


@pytest.fixture
def proxy(hapi_url: str) -> Iterator[Proxy]:
    p = Proxy(hapi_url)
    yield p
    p.close()


def test_every_example_case_is_synced_and_hapi_holds_exactly_its_resources(
    package_loaded, hapi, engine, proxy, tag
):
    intake = Intake(engine, enqueue=True)
    refs = submit(intake, [tagged(p, tag) for p in EXAMPLES])
    client = FhirClient(proxy.url, timeout=60)
    try:
        drain(Worker(engine, client, batch_size=4), engine)
    finally:
        client.close()

    assert states(engine) == Counter({"done": len(EXAMPLES)})
    bundles = newest_bundles(engine, refs)
    assert proxy.forwarded == Counter(dict.fromkeys(bundles, 1))
    assert_hapi_holds_exactly(hapi, list(bundles.values()), tag)
    with engine.connect() as conn:
        recorded = conn.execute(select(func.count()).select_from(synced_resources)).scalar()
    assert recorded == sum(len(b["entry"]) for b in bundles.values())
    report = verify_through(engine, proxy)
    assert (report.cases, report.findings) == (len(EXAMPLES), [])
    assert report.checked == recorded


def test_an_outage_does_not_stop_intake_and_every_case_arrives_once_after_it(
    package_loaded, hapi, engine, proxy, tag
):
    intake = Intake(engine, enqueue=True)
    clock, advance = shifted_clock()
    client = FhirClient(proxy.url, timeout=10, retries=1, backoff_base=0.01)
    worker = Worker(engine, client, clock=clock)
    try:
        proxy.up = False
        refs = submit(intake, [tagged(p, tag) for p in EXAMPLES[:3]])
        assert worker.run_once() == 1  # one failed attempt; the rest of the batch is given back
        assert states(engine) == Counter({"pending": 3})
        with engine.connect() as conn:
            errors = set(conn.execute(select(outbox.c.last_error)).scalars())
        assert errors == {"unavailable: no HTTP answer", None}

        # cases keep arriving, and a first case is corrected, while the server is still down
        refs += submit(intake, [tagged(p, tag) for p in EXAMPLES[3:6]])
        submit(intake, [tagged(EXAMPLES[0], tag, institution="Corrected Hospital")])
        advance(3600)
        assert worker.run_once() == 1
        assert states(engine) == Counter({"pending": 6, "superseded": 1})  # v1 of the corrected case
        assert proxy.dropped >= 4  # the client's own retry included
        assert proxy.forwarded == Counter()

        proxy.up = True
        advance(3600)
        drain(worker, engine)
    finally:
        client.close()

    assert states(engine) == Counter({"done": 6, "superseded": 1})
    bundles = newest_bundles(engine, refs)
    assert proxy.forwarded == Counter(dict.fromkeys(bundles, 1))
    for key, bundle in bundles.items():
        assert proxy.bodies[key] == [bundle]  # the first case went once, as its corrected version
    assert_hapi_holds_exactly(hapi, list(bundles.values()), tag)
    assert verify_through(engine, proxy).findings == []


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    package_loaded, hapi, engine, db_url, hapi_url, tag, tmp_path
):
    slow = Proxy(hapi_url, delay_s=0.4)
    intake = Intake(engine, enqueue=True)
    refs = submit(intake, [tagged(p, tag) for p in EXAMPLES])
    env = _worker_env(db_url, slow.url, tmp_path)
    log = tmp_path / "worker.log"
    first = _start_worker(env, log, "--batch-size", str(len(EXAMPLES)), "--lease-s", "3")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: states(engine)["done"] >= 2 and states(engine)["sending"] >= 1, "a batch half sent")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        killed_with = states(engine)
        assert killed_with["sending"] >= 1 and killed_with["done"] < len(EXAMPLES), killed_with

        second = _start_worker(env, log, "--batch-size", "3", "--lease-s", "3")
        wait_for(lambda: states(engine) == Counter({"done": len(EXAMPLES)}), "the restarted worker to finish")
        second.send_signal(signal.SIGTERM)  # graceful: ends its round and exits 0
        assert second.wait(timeout=60) == 0, log.read_text()
        bundles = newest_bundles(engine, refs)
        assert set(slow.forwarded) == set(bundles)
        # at most the transaction in flight at the kill is sent twice (harmlessly: conditional updates)
        assert sum(slow.forwarded.values()) - len(bundles) <= 1, slow.forwarded
        assert_hapi_holds_exactly(hapi, list(bundles.values()), tag)
        with engine.connect() as conn:
            claimed_by = set(conn.execute(select(outbox.c.claimed_by)).scalars())
        assert len(claimed_by) == 2  # both processes delivered part of the queue

        slow.delay_s = 0.0
        verified = subprocess.run(  # against the server the workers delivered to (records are per server)
            [sys.executable, "-m", "service.cli", "sync", "verify"],
            cwd=ROOT,
            env=_worker_env(db_url, slow.url, tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"of {len(EXAMPLES)} cases checked: 0 missing, 0 drifted, 0 unrecorded" in verified.stdout
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        slow.close()


def test_two_workers_on_postgresql_drain_one_queue_without_sending_anything_twice(
    package_loaded, hapi, engine, db_url, hapi_url, tag
):
    slow = Proxy(hapi_url, delay_s=0.1)
    intake = Intake(engine, enqueue=True)
    refs = submit(intake, [tagged(p, tag) for p in EXAMPLES])
    submit(intake, [tagged(p, tag, institution="Second version") for p in EXAMPLES[:3]])
    stop = threading.Event()
    workers, engines, clients, threads = [], [], [], []
    for name in ("a", "b"):
        own = make_engine(Settings(db_url=db_url, auth_disabled=True))  # its own connections
        client = FhirClient(slow.url, timeout=60)
        worker = Worker(own, client, worker_id=f"{tag}-{name}", batch_size=2, poll_s=0.05)
        engines.append(own)
        clients.append(client)
        workers.append(worker)
        threads.append(threading.Thread(target=worker.run_forever, args=(stop,)))
    try:
        for t in threads:
            t.start()
        wait_for(lambda: states(engine)["pending"] + states(engine)["sending"] == 0, "the queue to drain")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        for c in clients:
            c.close()
        for e in engines:
            e.dispose()
        slow.close()

    assert states(engine) == Counter({"done": len(EXAMPLES), "superseded": 3})
    bundles = newest_bundles(engine, refs)
    assert slow.forwarded == Counter(dict.fromkeys(bundles, 1))  # no case sent twice
    for key, bundle in bundles.items():
        assert slow.bodies[key] == [bundle]  # and each as its newest version
    with engine.connect() as conn:
        done_by = Counter(conn.execute(select(outbox.c.claimed_by).where(outbox.c.state == "done")).scalars())
    assert set(done_by) == {f"{tag}-a", f"{tag}-b"}, done_by  # both really worked
    assert_hapi_holds_exactly(hapi, list(bundles.values()), tag)


def test_an_updated_case_gives_new_versions_of_the_same_resources(package_loaded, hapi, engine, proxy, tag):
    intake = Intake(engine, enqueue=True)
    case = tagged(EXAMPLES[0], tag)
    (ref,) = submit(intake, [case])
    client = FhirClient(proxy.url, timeout=60)
    worker = Worker(engine, client)
    try:
        drain(worker, engine)
        with engine.connect() as conn:
            before = {r.identifier: r for r in conn.execute(select(synced_resources))}
        case["patient"]["smoking"]["pack_years"] = case["patient"]["smoking"]["pack_years"] + 15
        submit(intake, [case])
        drain(worker, engine)
    finally:
        client.close()

    with engine.connect() as conn:
        after = {r.identifier: r for r in conn.execute(select(synced_resources))}
    assert set(after) == set(before)
    assert {k: (r.resource_type, r.server_id) for k, r in after.items()} == {
        k: (r.resource_type, r.server_id) for k, r in before.items()
    }  # the same resources on the server, no new ones
    assert {r.case_version for r in after.values()} == {2}
    bumped = {k for k in after if int(after[k].server_version) > int(before[k].server_version)}
    smoking = next(k for k in after if k.endswith("|patient.smoking"))
    provenance = next(k for k in after if k.startswith("Provenance/"))
    assert smoking in bumped and provenance in bumped
    patient = next(k for k in after if k.endswith("|patient"))
    assert patient not in bumped  # an unchanged resource is not rewritten
    (bundle,) = newest_bundles(engine, [ref]).values()
    assert_hapi_holds_exactly(hapi, [bundle], tag)
    assert verify_through(engine, proxy).findings == []
    assert proxy.forwarded == Counter({case_key(bundle): 2})

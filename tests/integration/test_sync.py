"""The sync worker against the real HAPI FHIR server and a real PostgreSQL database.

Each test gets its own PostgreSQL database (migrated from empty) and its own case ids (the ``tag``),
so runs never see each other's queue or resources. A small HTTP proxy in front of HAPI can drop
every connection (the FHIR server unreachable) and counts the transactions it forwards per case, which
is how "sent once" is checked rather than assumed. Conditions are polled with a deadline, never slept on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, func, select

from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake, OnChange
from service.mapping.spec import IDENTIFIER_SYSTEM
from service.settings import Settings
from service.store.cases import find_version
from service.store.tables import outbox, synced_resources
from service.sync.verify import verify
from service.sync.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-0*.json"))
DEADLINE_S = 180.0


# ---- a proxy in front of HAPI ----------------------------------------------------------------------


class Proxy:
    """Forwards to HAPI; while down it drops each connection unanswered (what a client sees of an
    unreachable server). Counts the transactions HAPI answered, per case."""

    def __init__(self, target: str, delay_s: float = 0.0) -> None:
        self.origin = target.split("/fhir", 1)[0]
        self.delay_s = delay_s
        self.up = True
        self.lock = threading.Lock()
        self.forwarded: Counter[str] = Counter()
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.dropped = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.proxy = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, bundle: dict[str, Any]) -> None:
        key = case_key(bundle)
        with self.lock:
            self.forwarded[key] += 1
            self.bodies.setdefault(key, []).append(bundle)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _forward(self) -> None:
        proxy: Proxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not proxy.up:
            with proxy.lock:
                proxy.dropped += 1
            self.close_connection = True  # no answer at all: the client sees the connection drop
            return
        if proxy.delay_s:
            time.sleep(proxy.delay_s)  # a slow server, so a worker can be caught mid-batch
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "prefer")}
        answer = requests.request(
            self.command, proxy.origin + self.path, data=body, headers=headers, timeout=120
        )
        is_transaction = self.command == "POST" and self.path.rstrip("/") == "/fhir"
        if is_transaction and answer.status_code == 200:
            proxy.record(json.loads(body))
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Retry-After"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = _forward


def case_key(bundle: dict[str, Any]) -> str:
    """``source|case_id`` of the case a transaction carries (from its business identifiers)."""
    for entry in bundle["entry"]:
        for identifier in entry["resource"].get("identifier", []):
            if identifier.get("system") == IDENTIFIER_SYSTEM:
                return str(identifier["value"]).rsplit("|", 1)[0]
    raise AssertionError("a transaction without a business identifier")


@pytest.fixture
def proxy(hapi_url: str) -> Iterator[Proxy]:
    p = Proxy(hapi_url)
    yield p
    p.close()


# ---- a database per test ---------------------------------------------------------------------------


# ---- helpers -------------------------------------------------------------------------------------


def tagged(path: Path, tag: str, **changes: Any) -> dict[str, Any]:
    """An example case under a fresh case id, so HAPI's resources are this test's own."""
    case: dict[str, Any] = json.loads(path.read_text())
    case["case_id"] = f"{tag}-{case['case_id']}"
    case.update(changes)
    return case


def submit(intake: Intake, cases: list[dict[str, Any]]) -> list[str]:
    accepted = intake.submit_many([intake.prepare(c) for c in cases], "it", on_change=OnChange.NEW_VERSION)
    return [a.case.id for a in accepted]


def states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(
            dict(conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state)).all())
        )


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drain(worker: Worker, engine: Engine) -> None:
    """Run rounds until nothing is pending or sending."""
    end = time.monotonic() + DEADLINE_S
    while states(engine)["pending"] + states(engine)["sending"]:
        worker.run_once()
        assert time.monotonic() < end, f"the queue did not drain: {states(engine)}"


def newest_bundles(engine: Engine, refs: list[str]) -> dict[str, dict[str, Any]]:
    """The Bundle of each case's current version, by ``source|case_id``."""
    found = {}
    with engine.connect() as conn:
        for ref in refs:
            version = conn.execute(
                select(func.max(outbox.c.version)).where(outbox.c.case_ref == ref)
            ).scalar()
            row = find_version(conn, ref, version)
            assert row is not None
            bundle = json.loads(row.bundle_json)
            found[case_key(bundle)] = bundle
    return found


def expected_identifiers(bundles: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(
        (e["resource"]["resourceType"], i["value"])
        for b in bundles
        for e in b["entry"]
        for i in e["resource"].get("identifier", [])
        if i.get("system") == IDENTIFIER_SYSTEM
    )


def hapi_identifiers(hapi: FhirClient, types: set[str], tag: str) -> Counter[tuple[str, str]]:
    """Every resource of these types on HAPI whose business identifier belongs to this test."""
    found: Counter[tuple[str, str]] = Counter()
    marker = f"|{tag}-"
    for resource_type in sorted(types):
        params: dict[str, Any] | None = {
            "identifier": f"{IDENTIFIER_SYSTEM}|",
            "_count": 500,
            "_elements": "identifier",
        }
        url = resource_type
        while url:
            page = hapi.request("GET", url, params=params, headers={"Cache-Control": "no-cache"}).json()
            for entry in page.get("entry", []):
                for i in entry["resource"].get("identifier", []):
                    if i.get("system") == IDENTIFIER_SYSTEM and marker in i.get("value", ""):
                        found[(resource_type, i["value"])] += 1
            url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), "")
            params = None
    return found


def assert_hapi_holds_exactly(hapi: FhirClient, bundles: list[dict[str, Any]], tag: str) -> None:
    expected = expected_identifiers(bundles)
    assert set(expected.values()) == {1}
    assert hapi_identifiers(hapi, {t for t, _ in expected}, tag) == expected
    for bundle in bundles:  # Provenance has no business identifier: it is PUT by its deterministic id
        provenance = bundle["entry"][-1]
        assert provenance["resource"]["resourceType"] == "Provenance"
        assert hapi.read("Provenance", provenance["resource"]["id"])["id"] == provenance["resource"]["id"]


def verify_through(engine: Engine, proxy: Proxy) -> Any:
    """``verify`` against the server the worker delivered to: sync records are per server URL."""
    client = FhirClient(proxy.url, timeout=60)
    try:
        return verify(engine, client)
    finally:
        client.close()


def shifted_clock() -> tuple[Callable[[], datetime], Callable[[float], None]]:
    """Real time plus an offset the test moves forward (to pass a backoff without waiting it out)."""
    offset = [0.0]

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=offset[0])

    def advance(seconds: float) -> None:
        offset[0] += seconds

    return clock, advance


# ---- the tests -----------------------------------------------------------------------------------


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


def _worker_env(db_url: str, fhir_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVCLMS_")}
    env.update(
        IVCLMS_DB_URL=db_url,
        IVCLMS_FHIR_URL=fhir_url,
        IVCLMS_AUTH_DISABLED="true",
        IVCLMS_DATA_DIR=str(data_dir),
        IVCLMS_LOG_LEVEL="INFO",
        IVCLMS_FHIR_RETRIES="0",
    )
    return env


def _start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service.cli", "worker", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


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

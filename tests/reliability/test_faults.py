"""Fault injection: the FHIR server, the sync worker and the database killed or restarted mid-work.

1. HAPI FHIR is SIGKILLed at random points while the worker sends, and restarted, round after round
   (this module's own HAPI, on an H2 file database that survives the kill; the shared one is never
   touched). Cases keep arriving, and some are corrected, while it is down.
2. ``ivclms worker`` is SIGKILLed mid-batch at random points and restarted, again and again.
3. This test's own PostgreSQL is restarted while clients post cases.

After each: nothing lost, nothing duplicated. Every business identifier of every case's newest version
is on the FHIR server exactly once; the outbox is all delivered, nothing dead; every accepted case is
stored once. The random points come from one seed, printed in failures and recorded with the numbers in
``.run/reports/faults.txt`` (``IVCLMS_TEST_FAULTS_SEED`` replays a run). Everything runs on loopback,
every wait has a deadline, and the servers this module starts are stopped at the end, also on failure.

Knobs (environment, read only here): ``IVCLMS_TEST_FAULTS_SEED``, ``..._CASES`` (200),
``..._HAPI_ROUNDS`` (10), ``..._WORKER_KILLS`` (10), ``..._PG_RESTARTS`` (3) and
``..._HAPI_START_LIMIT_S`` (120: a HAPI restart slower than this fails the test).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bench.workload import cases
from service import create_app
from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake, OnChange
from service.settings import Settings
from service.store.cases import case_ref
from service.store.tables import case_versions, outbox
from service.store.tables import cases as cases_table
from service.sync.verify import verify
from service.sync.worker import Worker
from tests.integration import conftest as integration
from tests.support.sync import (
    Proxy,
    _start_worker,
    _worker_env,
    assert_hapi_holds_exactly,
    expected_identifiers,
    hapi_identifiers,
    newest_bundles,
    states,
    wait_for,
)

pytestmark = pytest.mark.integration

# The integration fixtures (a fresh database on the shared PostgreSQL per test), reused by name.
pg_url = integration.pg_url
db_url = integration.db_url
engine = integration.engine

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".run" / "reports" / "faults.txt"


def _knob(name: str, default: int) -> int:
    value = os.environ.get(f"IVCLMS_TEST_FAULTS_{name}")
    return int(value) if value else default


SEED = _knob("SEED", secrets.randbelow(2**31))
CASES = _knob("CASES", 200)
HAPI_ROUNDS = _knob("HAPI_ROUNDS", 10)
WORKER_KILLS = _knob("WORKER_KILLS", 10)
PG_RESTARTS = _knob("PG_RESTARTS", 3)
HAPI_START_LIMIT_S = _knob("HAPI_START_LIMIT_S", 120)
HAPI_FIRST_START_LIMIT_S = max(HAPI_START_LIMIT_S, 300)
"""The first start creates the H2 schema: slower than a restart."""
HAPI_JAVA_OPTS = (
    "-Xms512m -Xmx1536m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 "
    "-Dspring.datasource.hikari.data-source-properties.WRITE_DELAY=0"
)
"""scripts/hapi's defaults, plus C1 only (about a third off each start-up, which the kill loop repeats)
and H2's WRITE_DELAY=0: by default H2 keeps the last second of commits in memory, so a SIGKILL loses
transactions HAPI has already answered 200 to (seen here: ~0.6 case per kill). No client can make up
for a server that acknowledges a write and then loses it."""
DEADLINE_S = 300.0


# ---- the report: numbers per test, rewritten after each --------------------------------------------

_SECTIONS: dict[str, list[str]] = {}


def _write_report() -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"IVC-LMS fault-injection tests, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"seed {SEED} (IVCLMS_TEST_FAULTS_SEED={SEED} replays the random points)",
        "command: IVCLMS_TEST_HAPI_URL=... IVCLMS_TEST_PG_URL=... "
        ".venv/bin/pytest tests/reliability/test_faults.py -q",
    ]
    for name, section in _SECTIONS.items():
        lines += ["", f"[{name}]", *section]
    REPORT.write_text("\n".join(lines) + "\n")


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines of numbers for this test, written to .run/reports/faults.txt even when it fails (a test
    that passed ends its section with ``result: passed``)."""
    lines: list[str] = []
    _SECTIONS[request.node.name] = lines
    try:
        yield lines
    finally:
        _write_report()


def _rng(test: str) -> random.Random:
    return random.Random(f"{SEED}:{test}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _process_gone(pid: int) -> bool:
    """Exited (or a zombie nobody has reaped yet: it holds no port and no file lock any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# ---- this module's own HAPI FHIR --------------------------------------------------------------------


class OwnHapi:
    """A second HAPI (scripts/hapi with its own port, state and H2 file database) that may be killed."""

    def __init__(self, base: Path) -> None:
        self.port = _free_port()
        self.state = base / "state"
        self.env = {
            **os.environ,
            "IVCLMS_HAPI_PORT": str(self.port),
            "IVCLMS_HAPI_STATE_DIR": str(self.state),
            "IVCLMS_HAPI_DB_DIR": str(base / "db"),
            "IVCLMS_HAPI_JAVA_OPTS": HAPI_JAVA_OPTS,
        }
        self.url = f"http://127.0.0.1:{self.port}/fhir"

    def _script(self, command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "scripts" / "hapi"), command],
            cwd=ROOT,
            env={**self.env, "IVCLMS_HAPI_START_TIMEOUT": str(int(timeout_s))},
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
        )

    def start(self, limit_s: float) -> float:
        """Start and wait until /metadata answers; seconds taken. Slower than ``limit_s``: the test fails."""
        t0 = time.monotonic()
        try:
            done = self._script("start", limit_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scripts/hapi start hung past {limit_s + 60:.0f} s (seed {SEED})")
        if done.returncode != 0:
            pytest.fail(
                f"HAPI on port {self.port} was not ready within {limit_s:.0f} s "
                f"(IVCLMS_TEST_FAULTS_HAPI_START_LIMIT_S; seed {SEED}):\n{done.stderr[-4000:]}"
            )
        return time.monotonic() - t0

    def pid(self) -> int:
        return int((self.state / "hapi.pid").read_text().strip())

    def kill(self) -> None:
        """SIGKILL, then wait until the process is gone (it holds the port and the H2 file lock)."""
        pid = self.pid()
        assert "ivclms-hapi-server.jar" in Path(f"/proc/{pid}/cmdline").read_text(), "not our HAPI"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _process_gone(pid), f"HAPI pid {pid} to die after SIGKILL", 30)

    def stop(self) -> None:
        try:
            self._script("stop", 60)
        finally:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(self.pid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def own_hapi() -> Iterator[OwnHapi]:
    """Started and loaded with the profile package once; stopped at the end of the module, always."""
    base = Path(tempfile.mkdtemp(prefix="ivclms-faults-hapi-"))
    server = OwnHapi(base)
    try:
        server.start(HAPI_FIRST_START_LIMIT_S)
        client = FhirClient(server.url, timeout=120)
        try:
            for resource in integration.package_resources():
                client.update(resource)
        finally:
            client.close()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# ---- this test's own PostgreSQL ---------------------------------------------------------------------


class OwnPostgres:
    """A second PostgreSQL cluster (scripts/postgres with its own port and state) that may be restarted.
    Its state lives under /tmp, as the script's default: the postgres user must reach it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.state = Path(tempfile.mkdtemp(prefix="ivclms-faults-pg-", dir="/tmp"))
        self.env = {**os.environ, "IVCLMS_PG_PORT": str(self.port), "IVCLMS_PG_STATE_DIR": str(self.state)}

    def _script(self, command: str) -> str:
        done = subprocess.run(
            [str(ROOT / "scripts" / "postgres"), command],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"scripts/postgres {command}: {done.stdout}{done.stderr}"
        return done.stdout.strip()

    def url(self) -> str:
        return self._script("url")

    def start(self) -> float:
        t0 = time.monotonic()
        self._script("start")
        return time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        self._script("stop")
        return time.monotonic() - t0


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.state, ignore_errors=True)


# ---- helpers ----------------------------------------------------------------------------------------


def _submit(intake: Intake, batch: list[dict[str, Any]]) -> list[str]:
    accepted = intake.submit_many(
        [intake.prepare(c) for c in batch], "faults", on_change=OnChange.NEW_VERSION
    )
    return [a.case.id for a in accepted]


def _undelivered(counts: Counter[str]) -> int:
    return counts["pending"] + counts["sending"]


def _claimed_by(engine: Engine, pid: int, state: str) -> int:
    """Entries in ``state`` last claimed by the worker process ``pid`` (ids are host:pid:random)."""
    with engine.connect() as conn:
        found: int = conn.execute(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.state == state, outbox.c.claimed_by.like(f"%:{pid}:%"))
        ).scalar_one()
    return found


def _assert_all_delivered(engine: Engine, refs: list[str]) -> Counter[str]:
    """No entry pending, sending or dead; each case's newest version delivered. The state counts."""
    final = states(engine)
    assert set(final) <= {"done", "superseded"}, f"outbox not all delivered: {final} (seed {SEED})"
    with engine.connect() as conn:
        newest = dict(
            conn.execute(
                select(outbox.c.case_ref, func.max(outbox.c.version)).group_by(outbox.c.case_ref)
            ).all()
        )
        delivered = set(
            conn.execute(select(outbox.c.case_ref, outbox.c.version).where(outbox.c.state == "done")).all()
        )
    assert set(newest) == set(refs)
    assert {(ref, version) for ref, version in newest.items()} <= delivered
    return final


def _explain_losses(
    engine: Engine, hapi: FhirClient, bundles: list[dict[str, Any]], tag: str, kills: list[datetime]
) -> None:
    """Fail naming the cases whose identifiers the server lacks, and how long before the next kill
    each was delivered (a server that drops acknowledged writes on SIGKILL shows as "< 1 s")."""
    expected = expected_identifiers(bundles)
    missing = set(expected) - set(hapi_identifiers(hapi, {t for t, _ in expected}, tag))
    if not missing:
        return
    keys = {value.rsplit("|", 1)[0] for _, value in missing}
    refs = {case_ref(*key.rsplit("|", 1)) for key in keys}
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.case_ref, outbox.c.version, outbox.c.done_at).where(
                outbox.c.case_ref.in_(refs), outbox.c.state == "done"
            )
        ).all()
    lines = []
    for ref, version, done_at in rows:
        after = [k for k in kills if k >= done_at]
        lines.append(
            f"{ref} v{version} delivered "
            + (
                f"{(after[0] - done_at).total_seconds():.2f} s before a kill"
                if after
                else "after the last kill"
            )
        )
    raise AssertionError(
        f"{len(missing)} identifiers of {len(keys)} cases are not on the server "
        f"(seed {SEED}): {sorted(lines)}"
    )


def _per_type(bundles: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(t for t, _ in expected_identifiers(bundles).elements()).items()))


# ---- 1. HAPI killed and restarted during a sync ----------------------------------------------------------


def test_hapi_killed_and_restarted_mid_sync_loses_and_duplicates_nothing(own_hapi, engine, report):
    rng = _rng("hapi")
    tag = f"fh-{uuid.uuid4().hex[:8]}"
    workload = list(cases(CASES, prefix=tag))
    step = -(-len(workload) // (HAPI_ROUNDS + 1))
    chunks = [workload[i : i + step] for i in range(0, len(workload), step)]
    report += [f"seed {SEED}", f"cases {CASES}, rounds {HAPI_ROUNDS}, HAPI port {own_hapi.port}"]

    intake = Intake(engine, enqueue=True)
    client = FhirClient(own_hapi.url, timeout=30, retries=1, backoff_base=0.2)
    worker = Worker(engine, client, lease_s=120, poll_s=0.2, backoff_base_s=0.5, max_backoff_s=2.0)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), name="faults-worker")
    refs: list[str] = []
    corrected: list[str] = []
    restarts: list[float] = []
    kill_times: list[datetime] = []
    t0 = time.monotonic()
    try:
        refs += _submit(intake, chunks[0])
        thread.start()
        for round_no in range(HAPI_ROUNDS):
            counts = states(engine)
            target = counts["done"] + rng.randint(1, max(1, _undelivered(counts) // 2))
            wait_for(
                lambda target=target: states(engine)["done"] >= target,
                f"round {round_no}: {target} entries delivered (seed {SEED})",
                DEADLINE_S,
            )
            time.sleep(rng.uniform(0.0, 0.3))  # a random point inside the next transaction
            own_hapi.kill()
            kill_times.append(datetime.now(UTC))
            killed_with = states(engine)
            assert _undelivered(killed_with) > 0, f"round {round_no}: killed after the sync ended"

            # while HAPI is down: new cases arrive, and two delivered cases are corrected
            if round_no + 1 < len(chunks):
                refs += _submit(intake, chunks[round_no + 1])
            fixes = rng.sample(workload[: len(refs)], 2)
            for case in fixes:
                case["institution"] = f"Corrected in round {round_no}"
            corrected += _submit(intake, fixes)

            restarts.append(own_hapi.start(HAPI_START_LIMIT_S))
            report.append(
                f"round {round_no}: killed at {killed_with['done']} done / "
                f"{_undelivered(killed_with)} undelivered, restarted in {restarts[-1]:.0f} s"
            )
        wait_for(lambda: _undelivered(states(engine)) == 0, f"the queue to drain (seed {SEED})", DEADLINE_S)
    finally:
        stop.set()
        thread.join(timeout=120)
        client.close()
    elapsed = time.monotonic() - t0

    final = _assert_all_delivered(engine, refs)
    bundles = list(newest_bundles(engine, refs).values())
    checker = FhirClient(own_hapi.url, timeout=120)
    try:
        _explain_losses(engine, checker, bundles, tag, kill_times)
        assert_hapi_holds_exactly(checker, bundles, tag)  # every identifier once: none lost, none twice
        for ref in sorted(set(corrected)):  # and each correction's content, not just its identifiers
            found = verify(engine, checker, case_ref=ref)
            assert found.findings == [], f"case {ref}: {found.findings} (seed {SEED})"
    finally:
        checker.close()
    report += [
        f"kills {HAPI_ROUNDS}, restarts {len(restarts)}: "
        f"{min(restarts):.0f}-{max(restarts):.0f} s each, {sum(restarts):.0f} s in all",
        f"case versions {sum(final.values())} ({len(refs)} cases, {len(corrected)} corrections): "
        f"{dict(final)}",
        f"resources on HAPI per type, each identifier exactly once: {_per_type(bundles)}",
        f"seconds {elapsed:.0f} (first start and package load not counted)",
        "result: passed",
    ]


# ---- 2. the worker killed mid-batch --------------------------------------------------------------------


def test_worker_killed_mid_batch_again_and_again_loses_and_duplicates_nothing(
    own_hapi, engine, db_url, tmp_path, report
):
    rng = _rng("worker")
    tag = f"fw-{uuid.uuid4().hex[:8]}"
    report += [f"seed {SEED}", f"cases {CASES}, kills {WORKER_KILLS}, against this module's HAPI via a proxy"]
    intake = Intake(engine, enqueue=True)
    workload = list(cases(CASES, prefix=tag))
    refs = [ref for i in range(0, len(workload), 50) for ref in _submit(intake, workload[i : i + 50])]

    slow = Proxy(own_hapi.url, delay_s=0.05)  # counts the transactions HAPI answered, per case
    env = _worker_env(db_url, slow.url, tmp_path)
    env.update(IVCLMS_SYNC_POLL_S="0.2", IVCLMS_SYNC_MAX_BACKOFF_S="2")
    log = tmp_path / "worker.log"
    args = ("--batch-size", "10", "--lease-s", "5")
    process: subprocess.Popen[bytes] | None = None
    t0 = time.monotonic()
    try:
        for kill_no in range(WORKER_KILLS):
            left = _undelivered(states(engine))
            assert left > 0, f"kill {kill_no}: nothing left to send (fewer cases than kills?)"
            step = rng.randint(1, max(1, min(15, left // (WORKER_KILLS - kill_no + 1))))
            process = _start_worker(env, log, *args)
            pid = process.pid

            def mid_batch(pid: int = pid, step: int = step) -> bool:
                return _claimed_by(engine, pid, "done") >= step and _claimed_by(engine, pid, "sending") >= 1

            wait_for(mid_batch, f"kill {kill_no}: worker {pid} {step} entries into a batch (seed {SEED})")
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
            held = _claimed_by(engine, pid, "sending")
            assert held >= 1, f"kill {kill_no}: the worker held no claim when killed"
            report.append(
                f"kill {kill_no}: pid {pid} after {_claimed_by(engine, pid, 'done')} delivered, "
                f"{held} claimed entries left sending"
            )
        process = _start_worker(env, log, *args)
        wait_for(lambda: _undelivered(states(engine)) == 0, f"the queue to drain (seed {SEED})", DEADLINE_S)
        process.send_signal(signal.SIGTERM)  # graceful: ends its round and exits 0
        assert process.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        slow.close()
    elapsed = time.monotonic() - t0

    final = _assert_all_delivered(engine, refs)
    assert final == Counter({"done": CASES}), final
    bundles = newest_bundles(engine, refs)
    assert set(slow.forwarded) == set(bundles)
    resent = sum(slow.forwarded.values()) - len(bundles)
    # each kill can leave at most the transaction in flight answered and unrecorded: sent again, harmlessly
    assert resent <= WORKER_KILLS, slow.forwarded
    checker = FhirClient(own_hapi.url, timeout=120)
    try:
        assert_hapi_holds_exactly(checker, list(bundles.values()), tag)
    finally:
        checker.close()
    report += [
        f"transactions answered by HAPI {sum(slow.forwarded.values())} for {len(bundles)} cases "
        f"(resent after a kill: {resent})",
        f"resources on HAPI per type, each identifier exactly once: {_per_type(list(bundles.values()))}",
        f"seconds {elapsed:.0f}",
        "result: passed",
    ]


# ---- 3. PostgreSQL restarted during intake ---------------------------------------------------------------


def test_postgres_restarted_during_intake_answers_503_with_retry_after_and_loses_nothing(
    own_postgres, tmp_path, report
):
    rng = _rng("postgres")
    tag = f"fp-{uuid.uuid4().hex[:8]}"
    url = own_postgres.url()
    report += [
        f"seed {SEED}",
        f"restarts {PG_RESTARTS}, 4 client threads, PostgreSQL port {own_postgres.port}",
    ]
    settings = Settings(
        db_url=url, auth_disabled=True, db_migrate=True, validate_intake=False, data_dir=tmp_path
    )
    app = create_app(settings)
    workload = cases(1_000_000, prefix=tag)  # lazily: as many as the clients get through
    lock = threading.Lock()
    answers: list[tuple[str, int, str | None]] = []  # case id, status, Retry-After
    final: dict[str, tuple[int, str]] = {}  # case id -> last status, Location
    failures: list[str] = []
    stop = threading.Event()

    def post_cases() -> None:
        client = app.test_client()
        try:
            while not stop.is_set():
                with lock:
                    case = next(workload)
                key = f"{tag}-{case['case_id']}"
                end = time.monotonic() + 120
                while True:
                    resp = client.post("/cases", json=case, headers={"Idempotency-Key": key})
                    retry_after = resp.headers.get("Retry-After")
                    with lock:
                        answers.append((case["case_id"], resp.status_code, retry_after))
                    if resp.status_code != 503 or retry_after is None or time.monotonic() > end:
                        break
                    time.sleep(min(float(retry_after), 0.5))  # the same request, the same key
                with lock:
                    final[case["case_id"]] = (resp.status_code, resp.headers.get("Location", ""))
        except Exception as exc:  # reported by the main thread
            failures.append(f"{type(exc).__name__}: {exc}")

    def accepted() -> int:
        with lock:
            return sum(1 for status, _ in final.values() if status in (200, 201))

    threads = [threading.Thread(target=post_cases, name=f"faults-client-{i}") for i in range(4)]
    outages: list[str] = []
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        for restart_no in range(PG_RESTARTS):
            goal = accepted() + rng.randint(20, 60)
            wait_for(lambda goal=goal: accepted() >= goal or bool(failures), f"{goal} cases accepted", 120)
            assert not failures, failures
            down_s = rng.uniform(0.5, 2.0)
            stop_s = own_postgres.stop()
            time.sleep(down_s)  # the outage itself: PostgreSQL stays down this long
            start_s = own_postgres.start()
            outages.append(
                f"restart {restart_no}: stop {stop_s:.1f} s, down {down_s:.1f} s, start {start_s:.1f} s"
            )
        goal = accepted() + 30
        wait_for(lambda: accepted() >= goal or bool(failures), "cases accepted after the last restart", 120)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
    elapsed = time.monotonic() - t0
    assert not failures, failures
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    statuses = Counter(status for _, status, _ in answers)
    bad = [(case_id, s, ra) for case_id, s, ra in answers if s not in (200, 201) and not (s == 503 and ra)]
    assert bad == [], f"answers other than 200/201 or 503 with Retry-After: {bad[:20]} (seed {SEED})"
    assert statuses[503] >= 1, f"no request met the outage: {statuses}"
    assert {s for s, _ in final.values()} <= {200, 201}, Counter(s for s, _ in final.values())

    # every case is stored exactly once, the ones answered 201 and the ones that needed retries
    client = app.test_client()
    created = {case_id for case_id, status, _ in answers if status == 201}
    for case_id, (_, location) in final.items():
        resp = client.get(location)
        assert resp.status_code == 200 and resp.get_json()["case_id"] == case_id, (case_id, resp.status_code)
    assert created <= set(final)
    reader = make_engine(settings)
    with reader.connect() as conn:
        stored = Counter(
            dict(
                conn.execute(
                    select(cases_table.c.case_id, func.count(case_versions.c.version))
                    .join(case_versions, case_versions.c.case_ref == cases_table.c.id)
                    .where(cases_table.c.case_id.like(f"{tag}-%"))
                    .group_by(cases_table.c.case_id)
                ).all()
            )
        )
    reader.dispose()
    app.extensions["ivclms"].engine.dispose()
    assert set(stored) == set(final), "stored cases differ from the answered ones"
    assert set(stored.values()) == {1}, {k: v for k, v in stored.items() if v != 1}
    met_503 = {case_id for case_id, status, _ in answers if status == 503}
    retried = len(met_503 & set(final))
    applied = sum(1 for case_id in met_503 if final.get(case_id, (0,))[0] == 200)
    report += [
        *outages,
        f"cases {len(final)} posted, each stored once; answers {dict(sorted(statuses.items()))}",
        f"cases that met a 503 and were retried with their Idempotency-Key: {retried} "
        f"({applied} of them had been stored despite the 503: the retry answered 200)",
        f"seconds {elapsed:.0f}",
        "result: passed",
    ]

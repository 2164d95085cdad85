"""The sync test helpers (HAPI behind a counting proxy, example cases tagged per test, waiting for the
worker): shared by tests/integration and tests/reliability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, func, select

from service.fhir.client import FhirClient
from service.intake import Intake, OnChange
from service.mapping.spec import IDENTIFIER_SYSTEM
from service.store.cases import find_version
from service.store.tables import outbox
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

"""Sync fixtures: a temporary database (SQLite, or PostgreSQL in scripts/test's second pass), an
injected clock, and a fake FHIR server behind ``responses`` (no sockets) that applies transactions
the way HAPI does."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import responses
from sqlalchemy import Engine, select

from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake, OnChange
from service.settings import Settings
from service.store import migrate
from service.store.tables import outbox, synced_resources
from service.sync.worker import Worker

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-0*.json"))
BASE = "http://fhir.test/fhir"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

Failure = tuple[int, dict[str, str], dict[str, Any] | None] | Exception


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeFhir:
    """Conditional updates by identifier, PUT by id, reads; versions move only when content changes."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_identifier: dict[tuple[str, str], str] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    next_id: int = 1000
    http: Any = None
    """The ``responses`` mock it answers in (to add other endpoints, such as a token endpoint)."""

    def fail(self, *failures: Failure) -> None:
        """The next transactions fail like this, in order."""
        self.failures.extend(failures)

    def transaction(self, request: Any) -> tuple[int, dict[str, str], str]:
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            status, headers, body = failure
            return status, headers, json.dumps(body) if body is not None else ""
        bundle = json.loads(request.body)
        self.transactions.append(bundle)
        targets: dict[str, str] = {}
        for entry in bundle["entry"]:
            targets[entry["fullUrl"]] = self._address(entry)
        answers = []
        for entry in bundle["entry"]:
            name = targets[entry["fullUrl"]]
            resource = _resolve(copy.deepcopy(entry["resource"]), targets)
            resource["id"] = name.split("/")[1]
            old = self.resources.get(name)
            if old is not None and _content(old) == _content(resource):
                version, status = old["meta"]["versionId"], "200 OK"
            else:
                version = str(int(old["meta"]["versionId"]) + 1) if old else "1"
                status = "200 OK" if old else "201 Created"
                resource.setdefault("meta", {})["versionId"] = version
                self.resources[name] = resource
            answers.append({"response": {"status": status, "location": f"{name}/_history/{version}"}})
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(body)

    def _address(self, entry: dict[str, Any]) -> str:
        rtype = entry["resource"]["resourceType"]
        path, _, query = entry["request"]["url"].partition("?")
        if not query:
            return path
        value = dict(parse_qsl(query))["identifier"]
        key = (rtype, value)
        if key not in self.by_identifier:
            self.next_id += 1
            self.by_identifier[key] = str(self.next_id)
        return f"{rtype}/{self.by_identifier[key]}"

    def read(self, request: Any) -> tuple[int, dict[str, str], str]:
        name = request.path_url.split("/fhir/", 1)[1]
        found = self.resources.get(name)
        if found is None:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "not-found"}],
            }
            return 404, {}, json.dumps(outcome)
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(found)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource.get("meta", {}).items() if k != "versionId"}
    return {**{k: v for k, v in resource.items() if k not in ("meta", "id")}, "meta": meta}


def _resolve(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: targets.get(v, v) if k == "reference" and isinstance(v, str) else _resolve(v, targets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve(v, targets) for v in value]
    return value


@pytest.fixture
def fhir() -> Iterator[FakeFhir]:
    fake = FakeFhir()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.http = mock
        mock.add_callback(responses.POST, BASE, callback=fake.transaction)
        mock.add_callback(
            responses.GET, re.compile(re.escape(BASE) + r"/[A-Za-z]+/[^/?]+$"), callback=fake.read
        )
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, db_url: str) -> Iterator[Engine]:
    """SQLite in tmp_path, or a fresh PostgreSQL database with IVCLMS_TEST_DB=postgres (tests/conftest.py)."""
    eng = make_engine(Settings(data_dir=tmp_path, auth_disabled=True, db_url=db_url))
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def intake(engine: Engine, clock: Clock) -> Intake:
    return Intake(engine, enqueue=True, clock=clock)


def client(retries: int = 0) -> FhirClient:
    return FhirClient(BASE, retries=retries, sleep=lambda _s: None)


@pytest.fixture
def reader() -> Iterator[FhirClient]:
    """A client for verify's reads."""
    c = client()
    yield c
    c.close()


@pytest.fixture
def make_worker(engine: Engine, clock: Clock) -> Iterator[Callable[..., Worker]]:
    made: list[FhirClient] = []

    def build(worker_id: str = "w1", **options: Any) -> Worker:
        fhir_client = options.pop("client", None) or client()
        made.append(fhir_client)
        options.setdefault("rand", lambda: 1.0)  # no jitter: delays are exact
        return Worker(engine, fhir_client, worker_id=worker_id, clock=clock, **options)

    yield build
    for c in made:
        c.close()


def example(index: int = 0, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLES[index].read_text())
    data.update(changes)
    return data


def submit(intake: Intake, *cases: dict[str, Any]) -> list[str]:
    """Store cases (a new version when one exists); returns their refs."""
    accepted = intake.submit_many([intake.prepare(c) for c in cases], "test", on_change=OnChange.NEW_VERSION)
    return [a.case.id for a in accepted]


def entries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def synced_rows(engine: Engine, ref: str | None = None) -> list[Any]:
    query = select(synced_resources).order_by(synced_resources.c.identifier)
    if ref is not None:
        query = query.where(synced_resources.c.case_ref == ref)
    with engine.connect() as conn:
        return list(conn.execute(query))


def outcome(code: str = "invalid", expression: str = "Observation.valueQuantity") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code,
                "diagnostics": "value 'SECRET-PATIENT-VALUE' is not allowed",
                "expression": [expression],
            }
        ],
    }


def timeout() -> Exception:
    return requests.exceptions.ConnectTimeout("connect timed out")

"""The service as a real HTTP server (``ivclms serve``: gunicorn on 127.0.0.1, an ephemeral port, its own
fresh PostgreSQL database) and the same data loaded into it and into HAPI, for third-party clients.

Third-party clients speak HTTP, so the Flask test client will not do. The data: example cases posted
as plain R4 transactions under a source system of this run (so every id is this run's own, HAPI being
shared), read back from the service, then PUT at the same ids into HAPI in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from tests.serving import Serve
from tests.tokens import token
from tests.unit.mapping.test_recognise import find, plain

STARTUP_S = 120
CASES = ("ivclms-001", "ivclms-004", "ivclms-008")
"""Three example cases: enough resources of every type for paging with _count=1."""
FHIR_JSON = "application/fhir+json"
SCOPE = "system/*.cruds"


class Server(Serve):
    """``ivclms serve`` on its own PostgreSQL database, ready when /healthz answers 200."""

    def __init__(self, tmp: Path, db_url: str) -> None:
        settings = {"IVCLMS_DB_URL": db_url, "IVCLMS_HTTP_THREADS": "4"}
        super().__init__(tmp, settings, self._healthy, STARTUP_S)
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False


@pytest.fixture(scope="package")
def service_db(pg_url: str) -> Iterator[str]:
    """A fresh database for the package's server, dropped after it."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"ivclms_clients_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory, service_db: str) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("clients"), service_db)
    yield running
    if running.proc.poll() is None:
        running.stop()


@pytest.fixture(scope="package")
def access_token() -> str:
    return token(SCOPE)


@dataclass
class Loaded:
    """What both servers hold: every resource by ``Type/id``, and the ids per type."""

    source_system: str
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ids(self, resource_type: str) -> list[str]:
        return sorted(r.split("/")[1] for r in self.resources if r.split("/")[0] == resource_type)

    def of(self, resource_type: str) -> list[dict[str, Any]]:
        return [self.resources[f"{resource_type}/{i}"] for i in self.ids(resource_type)]


def transaction(case_stem: str) -> dict[str, Any]:
    """One example case as an EHR posts it: plain R4 resources, POST entries, a transaction."""
    case = validate_case(__import__("json").loads(find(case_stem).read_text()))
    bundle = plain(case_to_bundle(case, now="2026-01-01T00:00:00Z"))
    bundle["type"] = "transaction"
    for entry in bundle["entry"]:
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    return bundle


def _for_hapi(resource: dict[str, Any]) -> dict[str, Any]:
    """The service's resource as a PUT body: HAPI keeps its own versions and timestamps."""
    body = {k: v for k, v in resource.items()}
    meta = {k: v for k, v in body.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return body


@pytest.fixture(scope="package")
def loaded(server: Server, hapi_url: str, access_token: str) -> Loaded:
    """The example cases in the service, and the very same resources (same ids) in HAPI."""
    data = Loaded(f"urn:ivclms:clients-test:{uuid.uuid4().hex[:12]}")
    headers = {"Authorization": f"Bearer {access_token}", "Content-Type": FHIR_JSON}
    with requests.Session() as http:
        for stem in CASES:
            answer = http.post(
                server.base,
                params={"source-system": data.source_system},
                json=transaction(stem),
                headers=headers,
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            for entry in answer.json()["entry"]:
                location = entry["response"].get("location")
                if location:
                    ref = "/".join(location.split("/")[:2])
                    got = http.get(f"{server.base}/{ref}", headers=headers, timeout=60)
                    assert got.status_code == 200, got.text
                    data.resources[ref] = got.json()
        for patient_id in data.ids("Patient"):
            found = http.get(
                f"{server.base}/Provenance",
                params={"target": f"Patient/{patient_id}", "_count": "500"},
                headers=headers,
                timeout=60,
            ).json()
            for entry in found.get("entry", []):
                data.resources[f"Provenance/{entry['resource']['id']}"] = entry["resource"]
        groups = http.get(f"{server.base}/Group", headers=headers, timeout=60).json()
        for entry in groups.get("entry", []):
            if entry["resource"]["id"] != "ivclms-cohort":  # fixed id: HAPI is shared, keep to our own
                data.resources[f"Group/{entry['resource']['id']}"] = entry["resource"]
        order = (
            "Patient",
            "Device",
            "Condition",
            "Procedure",
            "Observation",
            "MedicationStatement",
            "CarePlan",
            "Provenance",
            "Group",
        )
        entries = [
            {"resource": _for_hapi(r), "request": {"method": "PUT", "url": ref}}
            for t in order
            for ref, r in data.resources.items()
            if ref.split("/")[0] == t
        ]
        answer = http.post(
            hapi_url,
            json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
            headers={"Content-Type": FHIR_JSON},
            timeout=300,
        )
        assert answer.status_code == 200, answer.text[:3000]
    return data

"""Issue 12, finding 7: every declared query and path parameter of every route, fuzzed.

The parameters are read from what the service declares, not listed by hand: the OpenAPI document's
``parameters`` (``in: query`` and ``in: path``) of every operation, and the CapabilityStatement's
``searchParam`` of every resource type (plus the search control parameters ``_count``, ``_summary``,
``_include``, ``_revinclude``, ``_cursor``, ``_format``), so a parameter added later is fuzzed too. For
each (route, parameter) hypothesis sends values that broke the service before (impossible dates,
non-ASCII digits, integers past the database's, instants that cannot be turned to UTC, control
characters) and random text; the other parameters keep valid values over loaded example data.

Every answer: never a 5xx; every error an OperationOutcome; no stack trace; nothing stored by a
rejected request (``Probe.send``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import bulk_export
from service.case_files import map_case
from service.search import CONTROL
from tests.reliability.conftest import NOW, SERIES, Probe, auth, build, example

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EDGES = [
    "",
    " ",
    "0",
    "-1",
    "\u00b2",  # "²".isdigit() is True
    "\u0661\u0662",  # Arabic-Indic digits
    "99999999999999999999999",
    "9" * 5000,
    "2147483648",
    "2021-02-30",
    "ge2020-13-45",
    "le9999-12-31",
    "ge9999-12-31",
    "9999-12-31",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-14:00",
    "2026-01-01T00:00:00",
    "eq2026-01-01",
    "sa2026-01-01",
    "\u0662\u0660\u0662\u0660-01-01",
    "\x00",
    "a\r\nb",
    "\t",
    "%00",
    "../../etc/passwd",
    "Patient:subject",
    "Observation:patient:Patient",
    "Provenance:target",
    "*",
    "http://loinc.org|",
    "|",
    ",",
    ",,",
    "true",
    "null",
    "NaN",
    "1e309",
    "Patient/",
    "/x",
    "00000000-0000-0000-0000-000000000000",
    "x" * 3000,
    "bmV4dHwyMDI2LTAxLTAxVDAwOjAwOjAwfHg=",  # a cursor with a naive time
    "bmV4dA==",
]
DATES = st.from_regex(
    r"(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}"
    r"(T[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
    fullmatch=True,
)
VALUES = st.one_of(
    st.sampled_from(EDGES),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    DATES,
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
_TEMPLATE = re.compile(r"\{([^}]+)\}")


class Target:
    """One (method, path template, parameter, where) to fuzz, with valid values for the rest."""

    def __init__(self, method: str, template: str, name: str, where: str) -> None:
        self.method, self.template, self.name, self.where = method, template, name, where

    def __repr__(self) -> str:
        return f"{self.method} {self.template} {self.where}:{self.name}"


def _targets(spec: dict[str, Any], capability: dict[str, Any]) -> list[Target]:
    targets: list[Target] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if not isinstance(op, dict):
                continue
            for param in op.get("parameters", []):
                if param.get("in") in ("query", "path"):
                    targets.append(Target(method.upper(), path, param["name"], param["in"]))
    for resource in capability["rest"][0]["resource"]:
        path = f"/fhir/{resource['type']}"
        names = [p["name"] for p in resource.get("searchParam", [])]
        if resource["type"] != "AuditEvent":
            names += sorted(CONTROL)
        for name in names:
            targets.append(Target("GET", path, name, "query"))
    return targets


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    app: Flask = build(tmp_path_factory.mktemp("query-fuzz"), db_url="", export_in_process=False)
    client = app.test_client()
    loaded = client.post("/cases/import", data=SERIES.read_bytes(), headers=auth(), content_type="text/csv")
    assert loaded.status_code == 200
    ref = loaded.get_json()["cases"][0]["id"]
    patient = client.get("/fhir/Patient", headers=auth()).get_json()["entry"][0]["resource"]["id"]
    kick = client.get("/fhir/$export?_type=Patient", headers={**auth(), "Prefer": "respond-async"})
    job_id = kick.headers["Content-Location"].rsplit("/", 1)[1]
    ctx = app.extensions["ivclms"]
    bulk_export.run_pending(
        ctx.engine, bulk_export.files_dir(ctx.settings.data_dir), now=ctx.intake.clock, ttl=timedelta(days=1)
    )
    defaults = {
        "id": ref,
        "ref": ref,
        "resource_type": "Patient",
        "resource_id": patient,
        "patient_id": patient,
        "version": "1",
        "job_id": job_id,
        "name": "Patient.ndjson",
        "group_id": "ivclms-cohort",
        "filename": "console.css",
        "curve": "overall_survival",
    }
    targets = _targets(client.get("/openapi.json").get_json(), client.get("/fhir/metadata").get_json())
    yield {"app": app, "probe": Probe(app), "defaults": defaults, "targets": targets}
    ctx.engine.dispose()


BODIES: dict[str, tuple[bytes, str]] = {
    "/cases/{id}": (json.dumps(example(0)).encode(), "application/json"),
    "/fhir": (json.dumps(map_case(example(1), now=NOW)).encode(), "application/fhir+json"),
    "/fhir/$validate": (json.dumps({"resourceType": "Patient"}).encode(), "application/fhir+json"),
    "/fhir/{resource_type}/$validate": (
        json.dumps({"resourceType": "Patient"}).encode(),
        "application/fhir+json",
    ),
}


def _send(world: dict[str, Any], target: Target, value: str) -> None:
    defaults = world["defaults"]

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        raw = value if (target.where == "path" and name == target.name) else defaults[name]
        return quote(raw, safe="")

    path = _TEMPLATE.sub(fill, target.template)
    kwargs: dict[str, Any] = {"headers": {"Prefer": "respond-async"}}
    if target.where == "query":
        kwargs["query_string"] = {target.name: value}
    if target.method in ("POST", "PUT") and target.template in BODIES:
        body, content_type = BODIES[target.template]
        kwargs.update(data=body, content_type=content_type)
    world["probe"].send(f"query fuzz {target!r}", target.method, path, **kwargs)


def _fuzzer(world: dict[str, Any], target: Target) -> Any:
    @FUZZ
    @given(value=VALUES)
    def fuzz(value: str) -> None:
        _send(world, target, value)

    return fuzz


def test_finding_7_every_declared_parameter_of_every_route_fuzzed(world: dict[str, Any]) -> None:
    targets: list[Target] = world["targets"]
    assert len(targets) > 100  # the OpenAPI parameters and every type's search parameters
    declared = {(t.template, t.name) for t in targets}
    for expected in [
        ("/fhir/Observation", "date"),
        ("/fhir/Observation", "_count"),
        ("/fhir/{resource_type}/{resource_id}/_history/{version}", "version"),
        ("/sync/retry/{id}", "id"),
        ("/registry/cases.csv", "diagnosed_from"),
        ("/cases", "cursor"),
        ("/fhir/AuditEvent", "date"),
    ]:
        assert expected in declared, expected
    for target in targets:
        _fuzzer(world, target)()

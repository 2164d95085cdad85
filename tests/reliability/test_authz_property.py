"""Authorization as a property of the whole route table (issue 12, "Tests that prove it").

Random callers (SMART v2 scope sets with ``?`` restrictions, v1 scopes, odd strings; bound to random
source systems; random roles) send a realistic request to every route. The oracle below is written
from the SMART App Launch v2 wording, not from ``service.auth``:

- "system/Observation.rs ... the client is granted read and search access to Observation resources";
- "system/Observation.rs?category=...laboratory ... only to laboratory Observations" (finer-grained
  constraints using search parameters: never wider);
- v1 ``read`` = ``rs``, ``write`` = ``cud`` ("scopes ... v1 ... read and write").

and from the house rules of issue 12: a client is bound to the source systems it may write; reading
across hospitals is the ``registry`` role; create only creates, updates need ``u``, withdrawal ``d``.

Properties: (1) every resource, case or row in any answer is one the caller may see; (2) no write
succeeds that the scopes and the source binding do not allow, and a refused write changes nothing;
(3) never a 5xx (and every error an OperationOutcome, ``check_answer``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import example as known_case
from hypothesis import strategies as st
from werkzeug.routing import Rule

from service.clock import instant, utcnow
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.model.csv_flat import write_csv
from service.store.cases import case_ref
from tests.reliability.conftest import INPUTS, build, check_answer, example
from tests.tokens import token

CASE_TYPES = ("Patient", "Condition", "Observation", "Procedure", "MedicationStatement", "CarePlan", "Device")
IDENTIFIER_SYSTEM = "https://fhir.ivc-lms.org/identifier/element"
"""The business identifier's system, spelled out here (the oracle does not import the service's)."""
SOURCES = (
    "urn:ivclms:example:hospital-a",
    "urn:ivclms:example:hospital-b",
    "urn:ivclms:example:hospital-c",
    "urn:ivclms:example:hospital-d",
)
LOINC_CODE = ("http://loinc.org", "21889-1")
SCOPE_POOL = (
    "system/*.cruds",
    "system/*.rs",
    "system/*.r",
    "system/*.s",
    "system/*.read",
    "system/*.write",
    "system/*.c",
    "system/*.cu",
    "system/*.cud",
    "system/*.u",
    "system/*.d",
    "system/Patient.rs",
    "system/Patient.r",
    "system/Patient.c",
    "system/Patient.cud",
    "system/Observation.rs",
    "system/Observation.rs?code=http://loinc.org|21889-1",
    "system/Observation.s?code=http://loinc.org|21889-1",
    "system/Observation.rs?date=ge2020-01-01",
    "system/Condition.rs",
    "system/Provenance.rs",
    "system/AuditEvent.rs",
    "system/*.rs?code=http://loinc.org|21889-1",
    "patient/*.rs",
    "user/*.cruds",
    "openid",
    "system/Patient.xyz",
    "system/.rs",
    "system/*.cruds?",
)
ROLE_POOL = ("registry", "deidentified", "admin", "")


# ---- the oracle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    scopes: tuple[str, ...]
    sources: tuple[str, ...] | str  # "*" = every source
    roles: tuple[str, ...]

    def token(self) -> str:
        sources: Any = self.sources if isinstance(self.sources, str) else list(self.sources)
        return token(" ".join(self.scopes), sources=sources, roles=self.roles, sub="prop-caller")

    def grants(self) -> Iterator[tuple[str, set[str], tuple[str, str] | None]]:
        """(type, actions, code restriction or None); scopes with other restrictions grant nothing."""
        for scope in self.scopes:
            if not scope.startswith("system/") or "." not in scope:
                continue
            rtype, _, rest = scope[len("system/") :].partition(".")
            perms, _, query = rest.partition("?")
            actions = {"read": set("rs"), "write": set("cud")}.get(perms, set(perms))
            if not rtype or not perms or not actions <= set("cruds"):
                continue
            if not query:
                yield rtype, actions, None
            elif query.startswith("code=") and rtype != "*" and "|" in query and "&" not in query:
                system, _, code = query[len("code=") :].partition("|")
                yield rtype, actions, (system, code)
            # any other restriction: never wider, so it grants nothing here

    def may(self, rtype: str, action: str, resource: dict[str, Any] | None = None) -> bool:
        for gtype, actions, restriction in self.grants():
            if gtype not in ("*", rtype) or action not in actions:
                continue
            if restriction is None:
                return True
            if resource is not None and _has_code(resource, restriction):
                return True
        return False

    def may_whole(self, action: str) -> bool:
        return all(self.may(t, action) for t in CASE_TYPES)

    @property
    def deidentified_only(self) -> bool:
        """docs/security.md: a de-identified recipient gets "de-identified extracts and summaries only"."""
        return "deidentified" in self.roles and "registry" not in self.roles

    def reads_source(self, source: str | None) -> bool:
        if "registry" in self.roles or self.sources == "*":
            return True
        return source is not None and source in self.sources

    def writes_source(self, source: str) -> bool:
        return self.sources == "*" or source in self.sources


def _has_code(resource: dict[str, Any], restriction: tuple[str, str]) -> bool:
    codings = [c for el in ("code", "medicationCodeableConcept", "type") for c in _codings(resource.get(el))]
    return any((c.get("system"), c.get("code")) == restriction for c in codings)


def _codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in concept.get("coding", []) if isinstance(c, dict)] if isinstance(concept, dict) else []


def _source(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == IDENTIFIER_SYSTEM:
            return str(ident["value"]).split("|", 1)[0]
    return None


def _may_see(caller: Caller, resource: dict[str, Any], world: World) -> bool:
    rtype = resource["resourceType"]
    if rtype == "AuditEvent":
        return caller.may(rtype, "r") or caller.may(rtype, "s")
    typed = caller.may(rtype, "r", resource) or caller.may(rtype, "s", resource)
    return typed and caller.reads_source(world.source_of(resource))


def _resources(resp: Any) -> list[dict[str, Any]]:
    text = resp.get_data(as_text=True)
    if resp.mimetype == "application/fhir+ndjson":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if resp.mimetype != "application/fhir+json" or not text:
        return []
    body = json.loads(text)
    if body.get("resourceType") == "Bundle":
        found = [e["resource"] for e in body.get("entry", []) if "resource" in e]
        return [r for r in found if r.get("resourceType") != "OperationOutcome"]
    return [] if body.get("resourceType") in ("OperationOutcome", "Parameters") else [body]


# ---- the service under test --------------------------------------------------------------------

ADMIN = Caller(("system/*.cruds",), "*", ("registry", "deidentified"))


def _headers(caller: Caller, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {caller.token()}", **extra}


class World:
    """The app under test, the cases stored in it (ref -> case JSON) and the examples' resource ids."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.cases: dict[str, dict[str, Any]] = {}
        self.counter = 0
        self.ids: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        return f"World({len(self.cases)} cases)"

    def source_of(self, resource: dict[str, Any]) -> str | None:
        """A resource's hospital: its business identifier, or for a Provenance the hospital of the
        resources it is about (read with the admin token)."""
        if resource["resourceType"] != "Provenance":
            return _source(resource)
        for target in resource.get("target", []):
            rtype, _, rid = str(target.get("reference", "")).partition("/")
            got = self.app.test_client().get(f"/fhir/{rtype}/{rid}", headers=_headers(ADMIN))
            if got.status_code == 200:
                return _source(got.get_json())
        return None

    def ids_of(self, rtype: str) -> list[str]:
        if self.ids is None:
            self.ids = {}
            for t in (*CASE_TYPES, "Provenance"):
                got = self.app.test_client().get(f"/fhir/{t}?_count=100", headers=_headers(ADMIN)).get_json()
                self.ids[t] = [e["resource"]["id"] for e in got.get("entry", [])] or ["unknown"]
        return self.ids[rtype]

    def fresh(self, source: str) -> dict[str, Any]:
        self.counter += 1
        case = example(self.counter % 9)
        case["case_id"] = f"PROP-{self.counter:05d}"
        case["source_system"] = source
        return case

    def stored(self, ref: str) -> tuple[int, str] | None:
        resp = self.app.test_client().get(f"/cases/{ref}", headers=_headers(ADMIN))
        return (
            (int(resp.headers["ETag"].strip('W/"')), resp.headers["X-Case-Status"])
            if resp.status_code == 200
            else None
        )

    def admin_post(self, case: dict[str, Any]) -> str:
        resp = self.app.test_client().post("/cases", json=case, headers=_headers(ADMIN))
        assert resp.status_code in (200, 201), resp.get_json()
        ref = resp.headers["Location"].rsplit("/", 1)[1]
        self.cases[ref] = case
        return ref


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    app = build(tmp_path_factory.mktemp("authz"), db_url="", registry_pseudonym_key="p" * 40)
    w = World(app)
    for n in range(9):
        w.admin_post(example(n))
    w.ids_of("Patient")
    yield w
    app.extensions["ivclms"].engine.dispose()


callers = st.builds(
    Caller,
    scopes=st.lists(st.sampled_from(SCOPE_POOL), min_size=0, max_size=4, unique=True).map(tuple),
    sources=st.one_of(st.just("*"), st.lists(st.sampled_from(SOURCES), max_size=2, unique=True).map(tuple)),
    roles=st.lists(st.sampled_from(ROLE_POOL), max_size=2, unique=True).map(tuple),
)


WRITE_POOL = (
    "system/*.cruds",
    "system/*.write",
    "system/*.c",
    "system/*.cu",
    "system/*.cud",
    "system/*.u",
    "system/*.d",
    "system/*.rs",
    "system/Patient.c",
    "system/Patient.cud",
    "system/Observation.cud?code=http://loinc.org|21889-1",
    "system/*.cud?code=http://loinc.org|21889-1",
    "user/*.cruds",
)
write_callers = st.builds(
    Caller,
    scopes=st.lists(st.sampled_from(WRITE_POOL), min_size=1, max_size=3, unique=True).map(tuple),
    sources=st.one_of(
        st.just("*"), st.lists(st.sampled_from(SOURCES), min_size=1, max_size=2, unique=True).map(tuple)
    ),
    roles=st.lists(st.sampled_from(ROLE_POOL), max_size=2, unique=True).map(tuple),
)
"""Callers for the write property: mostly write scopes, so that allowed writes are common too."""


# ---- reads -------------------------------------------------------------------------------------


FORM = "application/x-www-form-urlencoded"
READS = (
    "/fhir/{rtype}/{rid}",
    "/fhir/{rtype}/{rid}/_history",
    "/fhir/{rtype}/{rid}/_history/1",
    "/fhir/Observation?_include=Observation:subject",
    "/fhir/Observation?code=http://loinc.org|21889-1&_include=Observation:subject",
    "/fhir/Patient?_revinclude=Observation:patient&_revinclude=Condition:subject",
    "/fhir/Patient?_revinclude=Provenance:target",
    "/fhir/Provenance",
    "/fhir/{rtype}",
    "/fhir/Condition?_include=Condition:subject&_count=3",
    "/fhir/Patient/{patient}/$everything",
    "/fhir/Patient/{patient}/$everything?_type=Observation,Condition,Provenance&_count=3",
    "/fhir/Patient/{patient}/$everything?start=2020&end=2024-06",
    "POST /fhir/{rtype}/_search?_count=5",
    "POST /fhir/Observation/_search?_include=Observation:subject&code=http://loinc.org|21889-1",
    "/fhir/AuditEvent?_count=5",
    "/fhir/AuditEvent?_summary=count",
    "/cases",
    "/cases/{ref}",
    "/cases/{ref}/history",
    "/registry/cases.csv",
    "/registry/cases.ndjson",
    "/registry/cases.csv?deidentified=true",
    "/registry/summary",
    "/sync/status",
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    caller=callers,
    template=st.sampled_from(READS),
    pick=st.integers(0, 10_000),
    rtype=st.sampled_from((*CASE_TYPES, "Provenance")),
)
def test_what_leaves_is_what_the_caller_may_see(
    world: World, caller: Caller, template: str, pick: int, rtype: str
):
    ref = sorted(world.cases)[pick % len(world.cases)]
    patients = world.ids_of("Patient")
    ids = world.ids_of(rtype)
    path = template.format(
        rtype=rtype, rid=ids[pick % len(ids)], patient=patients[pick % len(patients)], ref=ref
    )
    if path.startswith("POST "):  # POST search: the query's parameters sent as the form body
        where, _, form = path.removeprefix("POST ").partition("?")
        resp = world.app.test_client().post(
            where, data=dict(parse_qsl(form)), headers=_headers(caller), content_type=FORM
        )
        path = where
    else:
        resp = world.app.test_client().get(path, headers=_headers(caller))
    INPUTS["authz property (reads)"] += 1
    event(f"status {resp.status_code}")
    check_answer(resp, path)
    if resp.status_code != 200:
        return
    if caller.deidentified_only:
        assert path.startswith("/registry/summary") or "deidentified=true" in path, (caller, path)
    for resource in _resources(resp):
        assert _may_see(caller, resource, world), (caller, path, resource["resourceType"], resource.get("id"))
    if path.startswith("/cases"):
        action = "s" if path == "/cases" else "r"
        assert caller.may_whole(action), (caller, path)
        body = resp.get_json()
        listed = body.get("cases") if path == "/cases" else [world.cases.get(ref, {})]
        for case in listed or []:
            assert caller.reads_source(case.get("source_system")), (caller, path)
    if path.startswith("/registry"):
        allowed = {"registry"} if path.endswith((".csv", ".ndjson")) else {"registry", "deidentified"}
        assert allowed & set(caller.roles) and caller.may_whole("s"), (caller, path)
        if path == "/registry/cases.csv":
            rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
            assert all(caller.reads_source(r.get("source_system")) for r in rows), (caller, path)
    if path == "/sync/status":
        assert caller.may_whole("r") and ("registry" in caller.roles or caller.sources == "*"), caller


# ---- writes ------------------------------------------------------------------------------------


def _csv(case: dict[str, Any]) -> str:
    return write_csv([validate_case(case)])


def _brief(resp: Any) -> str:
    return resp.get_data(as_text=True)[:300]


def _transaction(case: dict[str, Any]) -> dict[str, Any]:
    return case_to_bundle(validate_case(case), now=instant(utcnow()))


WRITES = ("post", "import", "fhir", "put", "import-update", "delete", "revive")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caller=write_callers, kind=st.sampled_from(WRITES), source=st.sampled_from(SOURCES))
@known_case(  # found: a refused restricted grant for c hid the plain u grant of the same token (403)
    caller=Caller(("system/*.u", "system/*.cud?code=http://loinc.org|21889-1"), "*", ()),
    kind="import-update",
    source=SOURCES[0],
)
def test_no_write_beyond_the_grant(world: World, caller: Caller, kind: str, source: str):
    client = world.app.test_client()
    case = world.fresh(source)
    ref: str | None = None
    before: tuple[int, str] | None = None
    if kind in ("put", "import-update", "delete", "revive"):
        ref = world.admin_post(case)
        if kind == "revive":
            assert client.delete(f"/cases/{ref}", headers=_headers(ADMIN)).status_code == 200
        before = world.stored(ref)
        case = {**case, "institution": f"Changed {world.counter}"} if kind != "revive" else case
    if kind == "post":
        resp = client.post("/cases", json=case, headers=_headers(caller))
    elif kind in ("import", "import-update", "revive"):
        headers = _headers(caller, **{"Content-Type": "text/csv"})
        resp = client.post("/cases/import", data=_csv(case), headers=headers)
    elif kind == "fhir":
        headers = _headers(caller, **{"Content-Type": "application/fhir+json"})
        resp = client.post("/fhir", data=json.dumps(_transaction(case)), headers=headers)
    elif kind == "put":
        resp = client.put(f"/cases/{ref}", json=case, headers=_headers(caller))
    else:
        resp = client.delete(f"/cases/{ref}", headers=_headers(caller))
    INPUTS[f"authz property (write {kind})"] += 1
    event(f"{kind} {resp.status_code}")
    check_answer(resp, kind)
    action = {"post": "c", "import": "c", "fhir": "c", "delete": "d"}.get(kind, "u")
    allowed = caller.may_whole(action) and caller.writes_source(source) and not caller.deidentified_only
    if ref is None:
        ref = case_ref(case["source_system"], case["case_id"])
    after = world.stored(ref)
    if allowed:
        assert resp.status_code in (200, 201), (kind, caller, _brief(resp))
        assert after is not None and after != before, (kind, caller)
    else:
        assert resp.status_code in (403, 404), (kind, caller, resp.status_code, _brief(resp))
        assert after == before, (kind, caller, before, after)


# ---- bulk export: every line of every file -----------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    caller=callers,
    level=st.sampled_from(("/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/ivclms-cohort/$export")),
)
def test_export_files_hold_only_what_the_caller_may_see(world: World, caller: Caller, level: str):
    client = world.app.test_client()
    kick = client.get(level, headers=_headers(caller, Prefer="respond-async"))
    INPUTS["authz property (export)"] += 1
    event(f"export {kick.status_code}")
    check_answer(kick, level)
    if kick.status_code == 202:
        assert not caller.deidentified_only, caller
    if kick.status_code != 202:
        return
    status_path = kick.headers["Content-Location"].split("://", 1)[1].split("/", 1)[1]
    deadline = time.monotonic() + 60
    while True:
        status = client.get(f"/{status_path}", headers=_headers(caller))
        check_answer(status, "export status")
        if status.status_code != 202:
            break
        assert time.monotonic() < deadline, "export did not finish in 60 s"
        time.sleep(0.05)  # polling a background job (not a readiness guess): the loop has a deadline
    assert status.status_code == 200, status.get_json()
    for item in status.get_json()["output"]:
        file_path = item["url"].split("://", 1)[1].split("/", 1)[1]
        got = client.get(f"/{file_path}", headers=_headers(caller))
        check_answer(got, "export file")
        text = got.get_data(as_text=True)
        got.close()  # a file response holds its file open until closed
        assert got.status_code == 200
        for line in text.splitlines():
            resource = json.loads(line)
            assert _may_see(caller, resource, world), (caller, resource["resourceType"])


# ---- every route is covered --------------------------------------------------------------------

COVERED = {
    "fhir_read.read": "/fhir/{rtype}/{rid}",
    "fhir_read.instance_history": "/fhir/{rtype}/{rid}/_history",
    "fhir_read.vread": "/fhir/{rtype}/{rid}/_history/1",
    "fhir_read.search_type": "/fhir/{rtype}",
    "fhir_read.search_post": "POST /fhir/{rtype}/_search?_count=5",
    "fhir_read.everything": "/fhir/Patient/{patient}/$everything",
    "audit.search_audit_events": "/fhir/AuditEvent?_count=5",
    "cases.list_cases": "/cases",
    "cases.read_case": "/cases/{ref}",
    "cases.case_history": "/cases/{ref}/history",
    "registry.registry_csv": "/registry/cases.csv",
    "registry.registry_ndjson": "/registry/cases.ndjson",
    "registry.registry_summary": "/registry/summary",
    "sync.sync_status": "/sync/status",
    "cases.create_case": "post",
    "cases.import_cases": "import",
    "fhir_intake.post_bundle": "fhir",
    "cases.update_case": "put",
    "cases.retract_case": "delete",
    "bulk.export_system": "export",
    "bulk.export_patients": "export",
    "bulk.export_group": "export",
    "bulk.export_status": "export",
    "bulk.export_file": "export",
}
ELSEWHERE = {
    "bulk.read_group": "r on Group; members gated like Patient reads, a source-bound client sees only its "
    "sources' Groups: tests/unit/api/test_bulk_v2.py",
    "bulk.search_groups": "as bulk.read_group: tests/unit/api/test_bulk_v2.py",
    "bulk.export_cancel": "owner check: test_security_matrix.py (another owner's job is 404)",
    "sync.sync_retry": "scope check: test_security_matrix.py; the case's source system bound: "
    "tests/unit/api/test_sync_console.py; writes no patient data and returns none",
    "sync.sync_resolve": "operator r and u, the case's source system bound: test_security_matrix.py, "
    "tests/unit/api/test_sync_console.py, tests/unit/sync/test_resolve.py",
    "console_sync.sync_page": "as sync.sync_status (operator r): tests/unit/api/test_sync_console.py",
    "metrics.metrics": "as sync.sync_status (operator r); counts and route templates, no patient data: "
    "tests/unit/api/test_metrics.py, test_security_matrix.py",
    "console_sync.retry": "as sync.sync_retry, CSRF first: tests/unit/api/test_sync_console.py",
    "console_sync.resolve_conflict": "as sync.sync_resolve, CSRF first: tests/unit/api/test_sync_console.py",
    "console_form.new_case": "the gate of POST /cases (c on every case type): "
    "tests/unit/api/test_console_form.py",
    "console_form.create_case": "the gate of POST /cases (c, the caller's sources), CSRF first, the same "
    "intake: tests/unit/api/test_console_form.py",
    "console_form.edit_case": "the gate of PUT /cases/{id} (u, the case's source; 404 for another's): "
    "tests/unit/api/test_console_form.py",
    "console_form.update_case": "as console_form.edit_case, If-Match from the form, CSRF first: "
    "tests/unit/api/test_console_form.py",
    "validate.validate_any": "stores nothing and returns only issues about the posted resource",
    "validate.validate_type": "stores nothing and returns only issues about the posted resource",
    "health.healthz": "public, no data",
    "health.readyz": "public, no data",
    "metadata.capabilities": "public, no data",
    "openapi.openapi_json": "public, no data",
    "openapi.docs": "public, no data",
    "static": "public, no data",
    "pages.landing": "public, links only",
    "pages.asset": "public, the package's CSS and scripts: tests/unit/api/test_console.py",
    "console.case_list": "the gate of GET /cases (s on every case type, the caller's sources): "
    "test_security_matrix.py, tests/unit/api/test_console.py",
    "console.case_page": "the gate of GET /cases/{id} (r, the case's source): test_security_matrix.py, "
    "tests/unit/api/test_console.py",
    "console.series": "the gate of GET /registry/summary (service.registry.access): test_security_matrix.py, "
    "tests/unit/api/test_console.py",
    "console.series_csv": "as console.series",
    "console.series_svg": "as console.series",
}


def test_every_route_is_covered_by_a_property_or_named_elsewhere(world: World) -> None:
    endpoints = {r.endpoint for r in world.app.url_map.iter_rules() if isinstance(r, Rule)}
    unaccounted = endpoints - set(COVERED) - set(ELSEWHERE)
    assert not unaccounted, f"routes with no authorization property: {sorted(unaccounted)}"

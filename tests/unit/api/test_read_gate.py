"""Issue 12, "one gate for what leaves": regression tests for findings 1, 3, 10 and 14, and a hospital
client bound to one source system seeing nothing of another through any read exit.

Each test reproduces the attack from the issue on the nine examples, then asserts what may leave.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from service import bulk_export, create_app
from service.auth.gate import source_of
from service.search import READ_TYPES, RESOURCE_TYPES
from tests.support.examples import EXAMPLES
from tests.support.read_side import FULL, HOSPITAL_A, HOSPITAL_B, TUMOUR_SIZE, load_examples
from tests.tokens import bearer

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def examples(client) -> list[dict[str, Any]]:
    return load_examples(client)


def _rid(entry: dict[str, Any]) -> str:
    return f"{entry['resource']['resourceType']}/{entry['fullUrl'].removeprefix('urn:uuid:')}"


def _all(examples: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(Type/id, resource, source system of its case) of every stored resource."""
    return [
        (_rid(e), e["resource"], source_of(b["entry"][0]["resource"]) or "")
        for b in examples
        for e in b["entry"]
    ]


def _is_tumour_size(resource: dict[str, Any]) -> bool:
    codings = resource.get("code", {}).get("coding", [])
    return any(c.get("system") == "http://loinc.org" and c.get("code") == "21889-1" for c in codings)


def _entries(bundle: dict[str, Any], mode: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") != "outcome" and (mode is None or e["search"]["mode"] == mode)
    ]


def _types(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["resourceType"] for e in _entries(bundle)}


def _warnings(bundle: dict[str, Any]) -> list[str]:
    return [
        issue["diagnostics"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "outcome"
        for issue in e["resource"]["issue"]
        if issue["code"] == "suppressed"
    ]


def _patient_id(bundle: dict[str, Any]) -> str:
    return next(_rid(e) for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient").split("/")[1]


# -- finding 1: _include / _revinclude / $everything ---------------------------------------------


def test_finding_1_include_skips_types_out_of_scope(client, examples):
    # Attack: system/Observation.rs with _include=Observation:subject returned the full Patient.
    headers = bearer("system/Observation.rs")
    bundle = client.get("/fhir/Observation?_include=Observation:subject&_count=500", headers=headers)
    assert bundle.status_code == 200
    body = bundle.get_json()
    assert _types(body) == {"Observation"}
    observations = [r for r, res, _ in _all(examples) if res["resourceType"] == "Observation"]
    assert body["total"] == len(observations)
    patients = len(examples)  # each Observation's subject is its case's Patient
    assert _warnings(body) == [
        f"{patients} included resources were withheld: outside the scopes or source systems of this "
        "access token"
    ]
    assert not any("Patient/" in w for w in _warnings(body))  # a count, no ids
    # With the Patient scope the same request includes them (the warning is about scopes only).
    full = client.get("/fhir/Observation?_include=Observation:subject&_count=500", headers=FULL).get_json()
    assert len(_entries(full, "include")) == patients and _warnings(full) == []


def test_finding_1_revinclude_skips_types_out_of_scope(client, examples):
    # Attack: system/Patient.rs with _revinclude=Observation:patient&_revinclude=Condition:subject got
    # every Observation and Condition; _revinclude=Provenance:target got Provenance while a direct
    # Provenance search was 403.
    headers = bearer("system/Patient.rs")
    url = "/fhir/Patient?_revinclude=Observation:patient&_revinclude=Condition:subject&_count=500"
    body = client.get(url, headers=headers).get_json()
    assert _types(body) == {"Patient"} and body["total"] == len(examples)
    withheld = sum(1 for _, res, _ in _all(examples) if res["resourceType"] in ("Observation", "Condition"))
    assert _warnings(body) and body["entry"][-1]["resource"]["issue"][0]["severity"] == "warning"
    assert _warnings(body)[0].startswith(f"{withheld} included resources were withheld")
    assert client.get("/fhir/Provenance", headers=headers).status_code == 403
    prov = client.get("/fhir/Patient?_revinclude=Provenance:target&_count=500", headers=headers).get_json()
    assert _types(prov) == {"Patient"} and _warnings(prov)


def test_finding_1_everything_returns_only_granted_types(client, examples):
    # Attack: Patient/{id}/$everything with system/Patient.r returned every type.
    patient = _patient_id(examples[0])
    body = client.get(f"/fhir/Patient/{patient}/$everything", headers=bearer("system/Patient.r")).get_json()
    assert [_rid_of(e) for e in _entries(body)] == [f"Patient/{patient}"]
    assert _warnings(body)[0].startswith(f"{len(examples[0]['entry']) - 1} included resources")
    two = bearer("system/Patient.r system/Condition.r")
    body = client.get(f"/fhir/Patient/{patient}/$everything", headers=two).get_json()
    assert _types(body) == {"Patient", "Condition"}
    # Without the Patient in the grant the Patient compartment is not served at all.
    assert (
        client.get(f"/fhir/Patient/{patient}/$everything", headers=bearer("system/Condition.r")).status_code
        == 403
    )


# -- finding 3: SMART v2 restrictions honoured at every exit ------------------------------------

RESTRICTED = "system/Observation.rs?code=" + TUMOUR_SIZE


def test_finding_3_restricted_scope_reads_only_matching_observations(client, examples):
    """SMART App Launch v2, scopes: "system/Observation.rs?code=http://loinc.org|1234-5" grants
    read and search of Observations with that code only (finer-grained resource constraints)."""
    headers = bearer(RESTRICTED)
    everything = _all(examples)
    sizes = {r for r, res, _ in everything if res["resourceType"] == "Observation" and _is_tumour_size(res)}
    others = [r for r, res, _ in everything if res["resourceType"] == "Observation" and r not in sizes]
    assert sizes and others
    # search: exact total and paging over the allowed ones only
    seen, url = [], "/fhir/Observation?_count=2"
    first = client.get(url, headers=headers).get_json()
    assert first["total"] == len(sizes)
    while url:
        page = client.get(url, headers=headers).get_json()
        seen += [_rid_of(e) for e in _entries(page)]
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
        url = url.split("localhost", 1)[1] if url else None
    assert sorted(seen) == sorted(sizes)
    summary = client.get("/fhir/Observation?_summary=count", headers=headers).get_json()
    assert summary["total"] == len(sizes)
    # read / vread / history: a non-matching Observation does not exist for this caller
    other = others[0]
    assert client.get(f"/fhir/{other}", headers=headers).status_code == 404
    assert client.get(f"/fhir/{other}/_history/1", headers=headers).status_code == 404
    assert client.get(f"/fhir/{other}/_history", headers=headers).status_code == 404
    size = sorted(sizes)[0]
    assert client.get(f"/fhir/{size}", headers=headers).status_code == 200
    assert client.get(f"/fhir/{size}/_history/1", headers=headers).status_code == 200
    # _revinclude and $everything from the Patient: only the allowed Observations come along
    both = bearer(f"system/Patient.rs {RESTRICTED}")
    body = client.get("/fhir/Patient?_revinclude=Observation:patient&_count=500", headers=both).get_json()
    assert {_rid_of(e) for e in _entries(body, "include")} == sizes
    patient = _patient_id(examples[0])
    body = client.get(f"/fhir/Patient/{patient}/$everything", headers=both).get_json()
    observations = [e["resource"] for e in _entries(body) if e["resource"]["resourceType"] == "Observation"]
    assert observations and all(_is_tumour_size(o) for o in observations)


def test_finding_3_restricted_scope_exports_only_matching_observations(app, client, examples):
    headers = bearer(RESTRICTED)
    kick = client.get("/fhir/$export?_type=Observation", headers={**headers, **ASYNC})
    assert kick.status_code == 202
    lines = _export_lines(app, client, kick, headers)
    sizes = [
        res for _, res, _ in _all(examples) if res["resourceType"] == "Observation" and _is_tumour_size(res)
    ]
    assert len(lines) == len(sizes) and all(_is_tumour_size(r) for r in lines)
    # The same job's files are not served to a token of a different (wider but limited) grant.
    wider = bearer(f"{RESTRICTED} system/Observation.rs?code=http://loinc.org|33728-7")
    url = _manifest(app, client, kick, headers)["output"][0]["url"].split("localhost", 1)[1]
    assert client.get(url, headers=wider).status_code == 403


def test_finding_3_unenforceable_restriction_is_refused_not_widened(client, examples):
    for scope in (
        "system/Observation.rs?date=ge2020-01-01",  # a date parameter: not evaluated exactly
        "system/Observation.rs?code=",  # no value
        "system/Observation.rs?subject=Basic/1",  # a type the service does not hold
        "system/Observation.read?code=" + TUMOUR_SIZE,  # v1 scopes take no restriction
    ):
        resp = client.get("/fhir/Observation", headers=bearer(scope))
        assert resp.status_code == 403, scope


def _rid_of(entry: dict[str, Any]) -> str:
    return f"{entry['resource']['resourceType']}/{entry['resource']['id']}"


def _manifest(app, client, kick, headers) -> dict[str, Any]:
    ctx = app.extensions["ivclms"]
    bulk_export.run_pending(
        ctx.engine, bulk_export.files_dir(ctx.settings.data_dir), now=ctx.intake.clock, ttl=timedelta(hours=1)
    )
    status = kick.headers["Content-Location"].split("localhost", 1)[1]
    done = client.get(status, headers=headers)
    assert done.status_code == 200
    manifest: dict[str, Any] = done.get_json()
    return manifest


def _export_lines(app, client, kick, headers) -> list[dict[str, Any]]:
    out = []
    for output in _manifest(app, client, kick, headers)["output"]:
        resp = client.get(output["url"].split("localhost", 1)[1], headers=headers)
        assert resp.status_code == 200
        out += [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
        resp.close()
    return out


# -- finding 10: Idempotency-Key replay --------------------------------------------------------


def test_finding_10_idempotent_replay_needs_the_scopes_again(client):
    # Attack: the same sub with no scope replayed the stored answer: 200 with the full case.
    key = {"Idempotency-Key": "finding-10"}
    body = EXAMPLES[0].read_text()
    first = client.post("/cases", data=body, headers={**FULL, **key}, content_type="application/json")
    assert first.status_code == 201
    for scope in ("", "system/Patient.r", "openid"):
        replay = client.post(
            "/cases", data=body, headers={**bearer(scope), **key}, content_type="application/json"
        )
        assert replay.status_code == 403, scope
        assert "Idempotent-Replayed" not in replay.headers and "case_id" not in replay.get_data(as_text=True)
    again = client.post("/cases", data=body, headers={**FULL, **key}, content_type="application/json")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"


def test_finding_10_replays_are_keyed_by_owner_not_the_bare_subject(client):
    key = {"Idempotency-Key": "finding-10-owner"}
    body = EXAMPLES[0].read_text()
    first = client.post("/cases", data=body, headers={**FULL, **key}, content_type="application/json")
    assert first.status_code == 201
    # A client_id equal to the user's sub is another owner: its request runs (and is authorized) anew.
    mimic = bearer("system/*.cruds", sub=None, client_id="registry-a")
    other = client.post("/cases", data=body, headers={**mimic, **key}, content_type="application/json")
    assert "Idempotent-Replayed" not in other.headers


# -- finding 14: $export ownership and content -------------------------------------------------


def test_finding_14_export_owner_is_not_the_bare_client_id(app, client, examples):
    # Attack: a token with only client_id=client-a read client-a's files (owner = the bare string).
    owner = bearer("system/*.rs", sub="client-a")
    kick = client.get("/fhir/$export?_type=Patient", headers={**owner, **ASYNC})
    assert kick.status_code == 202
    manifest = _manifest(app, client, kick, owner)
    status = kick.headers["Content-Location"].split("localhost", 1)[1]
    url = manifest["output"][0]["url"].split("localhost", 1)[1]
    mimic = bearer("system/*.rs", sub=None, client_id="client-a")
    assert client.get(status, headers=mimic).status_code == 404
    assert client.get(url, headers=mimic).status_code == 404
    assert client.delete(status, headers=mimic).status_code == 404
    resp = client.get(url, headers=owner)
    assert resp.status_code == 200
    resp.close()


def test_finding_14_export_needs_read_on_each_type_and_holds_only_the_callers_sources(app, client, examples):
    assert client.get("/fhir/$export", headers={**bearer("system/Patient.rs"), **ASYNC}).status_code == 403
    hospital = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    kick = client.get("/fhir/$export", headers={**hospital, **ASYNC})
    assert kick.status_code == 202
    lines = _export_lines(app, client, kick, hospital)
    # Provenance too: the Bulk Data IG has a system export "include all available Provenance resources"
    # (issue 13 item 4); a Provenance is of its case's hospital.
    expected = {
        rid for rid, res, src in _all(examples) if src == HOSPITAL_A and res["resourceType"] in READ_TYPES
    }
    assert len(lines) == len(expected)
    assert {f"{r['resourceType']}/{r['id']}" for r in lines} == expected
    assert {source_of(r) for r in lines if r["resourceType"] != "Provenance"} == {HOSPITAL_A}


# -- a hospital client bound to one source system, through every read exit ---------------------


def test_hospital_client_sees_only_its_source_through_every_read_exit(client, examples):
    hospital = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    everything = _all(examples)
    own = {r for r, _, src in everything if src == HOSPITAL_A}
    other = [r for r, _, src in everything if src != HOSPITAL_A]
    for kind in RESOURCE_TYPES:
        body = client.get(f"/fhir/{kind}?_count=500", headers=hospital).get_json()
        expected = {r for r in own if r.startswith(f"{kind}/")}
        assert {_rid_of(e) for e in _entries(body)} == expected and body["total"] == len(expected), kind
    body = client.get(
        "/fhir/Observation?_include=Observation:subject&_revinclude=Provenance:target&_count=500",
        headers=hospital,
    ).get_json()
    assert {_rid_of(e) for e in _entries(body)} <= own
    provenance = [r for r, res, src in everything if res["resourceType"] == "Provenance"]
    own_provenance = [r for r in provenance if r in own]
    assert own_provenance and client.get(f"/fhir/{own_provenance[0]}", headers=hospital).status_code == 200
    for rid in other[:: max(1, len(other) // 40)] + [r for r in provenance if r not in own]:
        assert client.get(f"/fhir/{rid}", headers=hospital).status_code == 404, rid
        assert client.get(f"/fhir/{rid}/_history/1", headers=hospital).status_code == 404, rid
        assert client.get(f"/fhir/{rid}/_history", headers=hospital).status_code == 404, rid
    foreign = next(b for b in examples if source_of(b["entry"][0]["resource"]) == HOSPITAL_B)
    assert (
        client.get(f"/fhir/Patient/{_patient_id(foreign)}/$everything", headers=hospital).status_code == 404
    )
    mine = examples[0]
    body = client.get(f"/fhir/Patient/{_patient_id(mine)}/$everything", headers=hospital).get_json()
    assert len(_entries(body)) == len(mine["entry"]) and _warnings(body) == []
    # /cases: the list, one case, its history
    listed = client.get("/cases?_count=500", headers=hospital).get_json()["cases"]
    assert {c["source_system"] for c in listed} == {HOSPITAL_A} and len(listed) == 3
    everyone = client.get("/cases?_count=500", headers=FULL).get_json()["cases"]
    for case in everyone:
        expected_status = 200 if case["source_system"] == HOSPITAL_A else 404
        assert client.get(case["href"], headers=hospital).status_code == expected_status
        assert client.get(case["href"] + "/history", headers=hospital).status_code == expected_status
        assert client.get(case["href"] + "?version=9", headers=hospital).status_code == 404
    # the registry role reads across hospitals
    registry = bearer("system/*.rs", sources=[HOSPITAL_A], roles=("registry",))
    assert len(client.get("/cases?_count=500", headers=registry).get_json()["cases"]) == len(EXAMPLES)


def test_cases_need_every_case_type(client, examples):
    case = client.get("/cases", headers=FULL).get_json()["cases"][0]["href"]
    for scope in ("system/Patient.rs", "system/Patient.rs system/Observation.rs", "system/*.s"):
        assert client.get(case, headers=bearer(scope)).status_code == 403, scope
        assert client.get(case + "/history", headers=bearer(scope)).status_code == 403, scope
    assert client.get("/cases", headers=bearer("system/Patient.rs")).status_code == 403
    assert client.get("/cases", headers=bearer("system/*.s")).status_code == 200
    restricted = bearer("system/*.rs system/Observation.rs?code=" + TUMOUR_SIZE)
    assert client.get(case, headers=restricted).status_code == 200  # *.rs is unrestricted


# -- /sync and AuditEvent --------------------------------------------------------------------------


def test_sync_status_is_for_operators_with_case_reads(client, examples):
    assert client.get("/sync/status", headers=bearer("system/*.rs")).status_code == 200
    assert client.get("/sync/status", headers=bearer("system/*.rs", sources="*", roles=())).status_code == 200
    bound = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    assert client.get("/sync/status", headers=bound).status_code == 403
    assert client.get("/sync/status", headers=bearer("system/Patient.rs")).status_code == 403
    assert client.post("/sync/retry/1", headers=bearer("system/*.rs")).status_code == 403
    assert (
        client.post("/sync/retry/1", headers=bearer("system/*.u", sources=[HOSPITAL_A], roles=())).status_code
        == 403
    )
    assert client.post("/sync/retry/1", headers=bearer("system/*.u")).status_code == 404  # allowed: none


def test_audit_events_of_others_need_the_registry_role(client, examples):
    mine = bearer("system/AuditEvent.rs system/Patient.r", sub="hospital-a-app", roles=())
    client.get("/fhir/Patient", headers=mine)
    body = client.get("/fhir/AuditEvent?_count=500", headers=mine).get_json()
    who = {e["resource"]["agent"][0]["who"]["display"] for e in body["entry"]}
    assert who == {"#sub:hospital-a-app"}  # owner keys: a client id can never pass for this subject
    registry = bearer("system/AuditEvent.rs", roles=("registry",))
    body = client.get("/fhir/AuditEvent?_count=500", headers=registry).get_json()
    assert {"#sub:hospital-a-app", "#sub:registry-a"} <= {
        e["resource"]["agent"][0]["who"]["display"] for e in body["entry"]
    }
    assert client.get("/fhir/AuditEvent", headers=bearer("system/AuditEvent.s")).status_code == 403


def test_finding_3_refused_grant_on_an_included_type_withholds_it(client, examples):
    # A v1 scope with a restriction is refused (never widened): its type never leaves, even included.
    headers = bearer("system/Observation.rs system/Patient.read?identifier=x")
    body = client.get("/fhir/Observation?_include=Observation:subject&_count=500", headers=headers)
    assert body.status_code == 200
    assert _types(body.get_json()) == {"Observation"} and _warnings(body.get_json())
    assert client.get("/fhir/Patient", headers=headers).status_code == 403


def test_outside_review_a_deidentified_token_reaches_nothing_identified(client, examples):
    """Outside review (high): the documented de-identified recipient (``system/*.s``, role
    ``deidentified``, bound to every source) listed /cases and bisected a birth date in 16 counts of
    ``/fhir/Patient?_summary=count&identifier=...&date=le...``. docs/security.md: it "may de-identified
    extracts and summaries only"."""
    deid = bearer("system/*.rs", sources="*", roles=("deidentified",), client_id="study-1")
    patient = _patient_id(client.get("/fhir/Patient?_count=1", headers=FULL).get_json())
    identified = (
        "/cases",
        "/fhir/Patient?_summary=count&date=le1968-03-14",
        f"/fhir/Patient/{patient}",
        f"/fhir/Patient/{patient}/$everything",
        "/fhir/Observation",
        "/fhir/AuditEvent",
        "/sync/status",
        "/registry/cases.csv",
    )
    for path in identified:
        resp = client.get(path, headers=deid)
        assert resp.status_code == 403, (path, resp.status_code)
        assert "deidentified" in resp.get_json()["issue"][0]["diagnostics"]
    kick = client.get("/fhir/$export", headers={**deid, **ASYNC})
    assert kick.status_code == 403
    posted = client.post("/fhir/Patient/_search", data={"_summary": "count"}, headers=deid)
    assert posted.status_code == 403

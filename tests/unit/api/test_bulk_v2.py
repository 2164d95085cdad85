"""Issue 13 item 4: Bulk Data v2 (https://hl7.org/fhir/uv/bulkdata/export.html) kick-off parameters,
Provenance, the kick-off answer, Groups the service maintains, and a client that behaves like the IG's
reference client. The IG sentences a test relies on are quoted in it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.http import parse_date

from service import bulk_export, create_app
from service.bulk_export import COHORT_GROUP, group_id
from tests.support.read_side import FULL, HOSPITAL_A, HOSPITAL_B, TUMOUR_SIZE, load_examples
from tests.tokens import bearer

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
STRICT = {"Prefer": "respond-async, handling=strict", "Accept": "application/fhir+json"}
SUBSETTED = "SUBSETTED"


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def examples(client) -> list[dict[str, Any]]:
    return load_examples(client)


def _path(url: str) -> str:
    return url.split("localhost", 1)[1]


def _run(app) -> None:
    ctx = app.extensions["ivclms"]
    bulk_export.run_pending(
        ctx.engine,
        bulk_export.files_dir(ctx.settings.data_dir),
        now=ctx.intake.clock,
        ttl=timedelta(seconds=ctx.settings.export_ttl_s),
    )


def _manifest(app, client, kick, headers=FULL) -> dict[str, Any]:
    assert kick.status_code == 202, kick.get_json()
    _run(app)
    done = client.get(_path(kick.headers["Content-Location"]), headers=headers)
    assert done.status_code == 200, done.get_json()
    return done.get_json()


def _lines(client, url: str, headers=FULL) -> list[dict[str, Any]]:
    resp = client.get(_path(url), headers=headers)
    assert resp.status_code == 200
    out = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
    resp.close()
    return out


def _files(app, client, kick, headers=FULL) -> dict[str, list[dict[str, Any]]]:
    manifest = _manifest(app, client, kick, headers)
    return {o["type"]: _lines(client, o["url"], headers) for o in manifest["output"]}


def _warnings(client, manifest: dict[str, Any], headers=FULL) -> list[dict[str, Any]]:
    issues = []
    for item in manifest["error"]:
        assert item["type"] == "OperationOutcome"
        for outcome in _lines(client, item["url"], headers):
            issues += outcome["issue"]
    return issues


def _kick(client, url: str, headers=None, body: dict[str, Any] | None = None):
    headers = {**FULL, **ASYNC, **(headers or {})}
    if body is None:
        return client.get(url, headers=headers)
    return client.post(url, data=json.dumps(body), headers=headers, content_type="application/fhir+json")


def _has_code(resource: dict[str, Any], system: str, code: str) -> bool:
    return any(
        c.get("system") == system and c.get("code") == code for c in resource["code"].get("coding", [])
    )


def _total(client, query: str, headers=FULL) -> int:
    return int(client.get(f"/fhir/{query}&_summary=count", headers=headers).get_json()["total"])


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def _case_ids(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['fullUrl'].removeprefix('urn:uuid:')}" for e in bundle["entry"]
    }


def _source(bundle: dict[str, Any]) -> str:
    from service.auth.gate import source_of

    return source_of(bundle["entry"][0]["resource"]) or ""


def _patient_id(bundle: dict[str, Any]) -> str:
    return next(
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )


def _patients(ids) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{i}"}} for i in ids],
    }


# ---- _typeFilter ---------------------------------------------------------------------------------


def test_type_filter_exports_only_the_matching_resources(app, client, examples):
    """The IG: "a server with support for the parameter and requested search queries SHALL filter the data
    in the response to only include resources that meet the specified criteria"."""
    query = quote(f"Observation?code={TUMOUR_SIZE}", safe="")
    files = _files(app, client, _kick(client, f"/fhir/$export?_type=Observation,Patient&_typeFilter={query}"))
    system, code = TUMOUR_SIZE.split("|")
    observations = files["Observation"]
    assert observations and all(_has_code(o, system, code) for o in observations)
    assert len(observations) == _total(client, f"Observation?code={quote(TUMOUR_SIZE)}")
    assert len(observations) < _total(client, "Observation?_count=1")
    assert len(files["Patient"]) == len(examples)  # a type without a filter is not filtered


def test_type_filter_queries_for_one_type_are_ored(app, client, examples):
    """The IG: "two subqueries joined together with a comma for a logical 'or'"."""
    other = next(
        e["resource"]
        for b in examples
        for e in b["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and not _has_code(e["resource"], *TUMOUR_SIZE.split("|"))
    )
    other_id = next(
        e["fullUrl"].removeprefix("urn:uuid:") for b in examples for e in b["entry"] if e["resource"] is other
    )
    first = quote(f"Observation?code={TUMOUR_SIZE}", safe="")
    second = quote(f"Observation?_id={other_id}", safe="")
    # Once as two comma-joined queries, once as the parameter repeated: the same (the IG: "When repeated,
    # the server SHALL treat the repeated values as if they were comma delimited values").
    for url in (
        f"/fhir/$export?_type=Observation&_typeFilter={first},{second}",
        f"/fhir/$export?_type=Observation&_typeFilter={first}&_typeFilter={second}",
    ):
        observations = _files(app, client, _kick(client, url))["Observation"]
        assert len(observations) == _total(client, f"Observation?code={quote(TUMOUR_SIZE)}") + 1
        assert f"Observation/{other_id}" in _ids(observations)


@pytest.mark.parametrize(
    "type_filter",
    [
        "Condition?code=http://snomed.info/sct|443719001",  # Condition is not exported (_type=Observation)
        "Observation?colour=red",  # not a search parameter the server declares
        "Observation?_include=Observation:subject",  # "FHIR search response parameters ... SHALL NOT be used"
        "Observation?date=yesterday",  # a declared parameter, a bad value
        "no-type-here",
    ],
)
def test_type_filter_strict_refuses_what_it_cannot_honour(app, client, type_filter):
    """The IG: "A server unable to support the requested _typeFilter queries SHOULD return an error and
    FHIR OperationOutcome resource"."""
    url = f"/fhir/$export?_type=Observation&_typeFilter={quote(type_filter, safe='')}"
    resp = _kick(client, url, STRICT)
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == ["_typeFilter"]


def test_type_filter_lenient_ignores_it_with_a_warning_in_the_manifest(app, client, examples):
    """The IG: "If the request contained invalid or unsupported parameters along with a Prefer:
    handling=lenient header and the server processed the request, the server SHOULD include a FHIR
    OperationOutcome resource for each of these parameters"."""
    url = f"/fhir/$export?_type=Observation&_typeFilter={quote('Observation?colour=red', safe='')}"
    kick = _kick(client, url, {"Prefer": "respond-async, handling=lenient"})
    manifest = _manifest(app, client, kick)
    issues = _warnings(client, manifest)
    assert [i["expression"] for i in issues] == [["_typeFilter"]] and issues[0]["severity"] == "warning"
    assert "colour" in issues[0]["diagnostics"]
    observations = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert observations[0]["count"] == _total(client, "Observation?_count=1")  # the filter was not applied


# ---- _elements -----------------------------------------------------------------------------------


def test_elements_keeps_only_listed_and_mandatory_elements_tagged_subsetted(app, client, examples):
    """The IG: "the server SHOULD omit unlisted, non-mandatory elements ... A server SHOULD mark the
    resources with the tag SUBSETTED"; R4 search _elements: "Servers SHOULD always return mandatory
    elements whether they are requested or not"."""
    url = "/fhir/$export?_type=Patient,Observation&_elements=Patient.gender,status"
    files = _files(app, client, _kick(client, url))
    assert len(files["Patient"]) == len(examples)
    for patient in files["Patient"]:
        assert set(patient) == {"resourceType", "id", "meta", "gender"}
        assert any(t["code"] == SUBSETTED for t in patient["meta"]["tag"])
        assert patient["meta"]["versionId"]  # meta is kept whole, the tag added
    for observation in files["Observation"]:
        assert set(observation) == {
            "resourceType",
            "id",
            "meta",
            "status",
        }  # Patient.gender is Patient's only
        assert [t for t in observation["meta"]["tag"] if t["code"] == SUBSETTED] == [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": SUBSETTED}
        ]


def test_elements_of_a_type_not_exported_strict_is_400(app, client):
    resp = _kick(client, "/fhir/$export?_type=Patient&_elements=Observation.status", STRICT)
    assert resp.status_code == 400 and resp.get_json()["issue"][0]["expression"] == ["_elements"]
    nested = _kick(client, "/fhir/$export?_type=Patient&_elements=name.family", STRICT)
    assert nested.status_code == 400  # the IG: "only root elements in a resource are permitted"


# ---- patient -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["/fhir/Patient/$export", "/fhir/Group/{cohort}/$export"])
def test_patient_parameter_exports_only_those_patients(app, client, examples, level):
    """The IG: "When provided, the server SHALL NOT return resources in the patient compartments belonging
    to patients outside of this list"."""
    chosen = examples[:2]
    kick = _kick(client, level.format(cohort=COHORT_GROUP), body=_patients(_patient_id(b) for b in chosen))
    files = _files(app, client, kick)
    exported = set().union(*(_ids(lines) for lines in files.values()))
    assert exported == _case_ids(chosen[0]) | _case_ids(chosen[1])  # every type, Provenance included


def test_patient_parameter_still_passes_the_callers_grant(app, client, examples):
    """A client bound to hospital A names a hospital B patient: as unknown as a patient that does not
    exist (no existence leaks), and never exported."""
    hospital = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    mine = next(b for b in examples if _source(b) == HOSPITAL_A)
    theirs = next(b for b in examples if _source(b) == HOSPITAL_B)
    refused = _kick(client, "/fhir/Patient/$export", hospital, _patients([_patient_id(theirs)]))
    absent = _kick(
        client, "/fhir/Patient/$export", hospital, _patients(["00000000-0000-4000-8000-000000000000"])
    )
    assert refused.status_code == absent.status_code == 400
    assert refused.get_json()["issue"][0]["code"] == absent.get_json()["issue"][0]["code"] == "not-found"
    both = _kick(
        client, "/fhir/Patient/$export", hospital, _patients([_patient_id(mine), _patient_id(theirs)])
    )
    manifest = _manifest(app, client, both, hospital)
    exported = set().union(*(_ids(_lines(client, o["url"], hospital)) for o in manifest["output"]))
    assert exported == _case_ids(mine)
    assert [i["expression"] for i in _warnings(client, manifest, hospital)] == [["patient"]]


def test_patient_parameter_is_not_for_a_system_export(app, client, examples):
    """The IG: patient is "Not applicable to system level export requests"."""
    body = _patients([_patient_id(examples[0])])
    assert _kick(client, "/fhir/$export", STRICT, body).status_code == 400
    assert _kick(client, "/fhir/Patient/$export?patient=x", STRICT).status_code == 400  # POST only
    bad = _kick(client, "/fhir/Patient/$export", body={"resourceType": "Patient"})
    assert bad.status_code == 400 and bad.get_json()["issue"][0]["expression"] == ["Parameters"]


# ---- includeAssociatedData and unknown parameters -----------------------------------------------


def test_include_associated_data_and_unknown_parameters_strict_400_lenient_warned(app, client, examples):
    """The IG: "A server that is unable to support the requested includeAssociatedData values SHOULD return
    an error and FHIR OperationOutcome resource ... When a Prefer: handling=lenient header is included in
    the request, the server MAY process the request instead of returning an error"."""
    for name in ("includeAssociatedData=LatestProvenanceResources", "_colour=red"):
        resp = _kick(client, f"/fhir/$export?_type=Patient&{name}", STRICT)
        assert resp.status_code == 400
        assert resp.get_json()["issue"][0]["expression"] == [name.split("=")[0]]
    kick = _kick(
        client,
        "/fhir/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources&_colour=red",
        {"Prefer": "respond-async, handling=lenient"},
    )
    named = {w["diagnostics"].split(":")[0] for w in kick.get_json()["issue"] if w["severity"] == "warning"}
    assert named == {"includeAssociatedData", "_colour"}  # said at kick-off already
    manifest = _manifest(app, client, kick)
    assert sorted(i["expression"][0] for i in _warnings(client, manifest)) == [
        "_colour",
        "includeAssociatedData",
    ]
    assert [o["count"] for o in manifest["output"]] == [len(examples)]


# ---- Provenance ----------------------------------------------------------------------------------


def test_provenance_in_the_system_export_and_type_provenance_is_gated(app, client, examples):
    """The IG: "the server SHALL include ... all available Provenance resources in a system level export
    request unless a specific resource set is specified using the _type parameter and this set does not
    include Provenance"."""
    provenance = _total(client, "Provenance?_count=1")
    assert provenance > 0
    everything = _manifest(app, client, _kick(client, "/fhir/$export"))
    assert {o["type"]: o["count"] for o in everything["output"]}["Provenance"] == provenance
    only = _manifest(app, client, _kick(client, "/fhir/$export?_type=Provenance"))
    assert [(o["type"], o["count"]) for o in only["output"]] == [("Provenance", provenance)]
    no_provenance = bearer(" ".join(f"system/{t}.rs" for t in bulk_export.RESOURCE_TYPES))
    assert _kick(client, "/fhir/$export?_type=Provenance", no_provenance).status_code == 403
    # Without _type: "all supported resources within the scope of the client authorization".
    without = _manifest(app, client, _kick(client, "/fhir/$export", no_provenance), no_provenance)
    assert "Provenance" not in {o["type"] for o in without["output"]}
    hospital = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    theirs = _files(app, client, _kick(client, "/fhir/$export?_type=Provenance", hospital), hospital)
    expected = {
        rid
        for b in examples
        if _source(b) == HOSPITAL_A
        for rid in _case_ids(b)
        if rid.startswith("Provenance/")
    }
    assert _ids(theirs["Provenance"]) == expected


# ---- the kick-off answer, requiresAccessToken ----------------------------------------------------


def test_kick_off_202_is_an_operation_outcome_never_html(app, client):
    """The IG (kick-off success): "Optionally, a FHIR OperationOutcome resource in the body in JSON
    format"."""
    resp = _kick(client, "/fhir/$export")
    assert resp.status_code == 202 and resp.mimetype == "application/fhir+json"
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert "text/html" not in resp.headers["Content-Type"]


def test_requires_access_token_is_false_when_auth_is_off(settings, examples):
    """The IG: requiresAccessToken "SHALL be true if both the file server and the FHIR API server control
    access using OAuth 2.0 bearer tokens"; with authentication off neither does."""
    open_app = create_app(settings.replace(export_in_process=False, auth_disabled=True))
    try:
        client = open_app.test_client()
        manifest = _manifest(open_app, client, client.get("/fhir/$export?_type=Patient", headers=ASYNC), {})
        assert manifest["requiresAccessToken"] is False
        assert len(_lines(client, manifest["output"][0]["url"], {})) == manifest["output"][0]["count"]
    finally:
        open_app.extensions["ivclms"].engine.dispose()


# ---- Groups the service maintains ---------------------------------------------------------------


def test_groups_one_per_source_system_and_one_for_the_cohort(app, client, examples):
    bundle = client.get("/fhir/Group", headers=FULL).get_json()
    groups = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    sources = {_source(b) for b in examples}
    assert set(groups) == {COHORT_GROUP, *(group_id(s) for s in sources)}
    assert group_id(HOSPITAL_A) == group_id(HOSPITAL_A) != group_id(HOSPITAL_B)  # deterministic ids
    every = {f"Patient/{_patient_id(b)}" for b in examples}
    assert {m["entity"]["reference"] for m in groups[COHORT_GROUP]["member"]} == every
    for source in sources:
        read = client.get(f"/fhir/Group/{group_id(source)}", headers=FULL)
        assert read.status_code == 200 and read.get_json() == groups[group_id(source)]
        members = {m["entity"]["reference"] for m in read.get_json()["member"]}
        assert members == {f"Patient/{_patient_id(b)}" for b in examples if _source(b) == source}
        assert read.get_json()["quantity"] == len(members)
    assert client.get("/fhir/Group/nope", headers=FULL).status_code == 404
    assert client.get("/fhir/Group?_id=" + COHORT_GROUP, headers=FULL).get_json()["total"] == 1


def test_groups_are_gated_like_other_types(app, client, examples):
    """r on Group (403 otherwise); a client bound to a source system sees only its own source's Group
    and members (the cohort and the other Groups are 404, as for a resource of another hospital)."""
    assert client.get("/fhir/Group", headers=bearer("system/Patient.rs")).status_code == 403
    assert (
        client.get(
            f"/fhir/Group/{COHORT_GROUP}/$export", headers={**bearer("system/*.cud"), **ASYNC}
        ).status_code
        == 403
    )
    hospital = bearer("system/*.rs", sources=[HOSPITAL_A], roles=())
    listed = client.get("/fhir/Group", headers=hospital).get_json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [group_id(HOSPITAL_A)]
    assert client.get(f"/fhir/Group/{group_id(HOSPITAL_B)}", headers=hospital).status_code == 404
    assert client.get(f"/fhir/Group/{COHORT_GROUP}", headers=hospital).status_code == 404
    assert _kick(client, f"/fhir/Group/{COHORT_GROUP}/$export", hospital).status_code == 404
    # Members are what the caller may read of Patients: none without a Patient grant.
    no_patients = bearer("system/Group.rs")
    assert "member" not in client.get(f"/fhir/Group/{COHORT_GROUP}", headers=no_patients).get_json()


def test_group_export_holds_the_groups_patients(app, client, examples):
    """The IG: Group/[id]/$export obtains "FHIR resources of diverse resource types pertaining to all
    members of a specified Group"."""
    kick = _kick(client, f"/fhir/Group/{group_id(HOSPITAL_B)}/$export")
    files = _files(app, client, kick)
    exported = set().union(*(_ids(lines) for lines in files.values()))
    assert exported == set().union(*(_case_ids(b) for b in examples if _source(b) == HOSPITAL_B))
    manifest_request = _manifest(
        app, client, _kick(client, f"/fhir/Group/{COHORT_GROUP}/$export?_type=Patient")
    )
    assert manifest_request["output"][0]["url"].startswith("http://localhost/fhir/bulkfiles/")
    # A patient outside the Group: "who are not members of the group ... the server SHOULD return details
    # via a FHIR OperationOutcome resource in an error response".
    other = next(b for b in examples if _source(b) == HOSPITAL_A)
    refused = _kick(
        client, f"/fhir/Group/{group_id(HOSPITAL_B)}/$export", STRICT, _patients([_patient_id(other)])
    )
    assert refused.status_code == 400 and "not members" in refused.get_json()["issue"][0]["diagnostics"]


def test_capability_statement_lists_bulk_data_and_groups(client):
    statement = client.get("/fhir/metadata").get_json()
    assert statement["instantiates"] == ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient_ops = {o["definition"] for o in resources["Patient"]["operation"]}
    assert "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export" in patient_ops
    assert resources["Group"]["operation"] == [
        {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
    ]
    assert {i["code"] for i in resources["Group"]["interaction"]} == {"read", "search-type"}


# ---- a Bulk Data client like the IG's reference client ------------------------------------------


class BulkClient:
    """Kick-off, status polling that honours Retry-After (seconds or an HTTP date) within a deadline,
    manifest checks, downloads with line counts, cancel: the flow the IG's reference client runs."""

    def __init__(
        self, client, headers: dict[str, str], wait: Callable[[float], None], deadline_s: float = 60
    ):
        self.client, self.headers, self.wait, self.deadline_s = client, headers, wait, deadline_s
        self.waited: list[float] = []

    def kick_off(self, url: str, parameters: dict[str, Any] | None = None) -> str:
        headers = {**self.headers, **ASYNC}
        if parameters is None:
            resp = self.client.get(url, headers=headers)
        else:
            resp = self.client.post(
                url, data=json.dumps(parameters), headers=headers, content_type="application/fhir+json"
            )
        assert resp.status_code == 202, resp.get_json()
        return str(resp.headers["Content-Location"])

    def _retry_after(self, value: str) -> float:
        if value.isdigit():
            return float(value)
        moment = parse_date(value)
        assert moment is not None, value
        return max((moment - datetime.now(UTC)).total_seconds(), 0.0)

    def poll(self, status_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline_s
        while True:
            resp = self.client.get(_path(status_url), headers={**self.headers, "Accept": "application/json"})
            if resp.status_code == 200:
                assert resp.mimetype == "application/json" and resp.headers.get("Expires")
                return dict(resp.get_json())
            assert resp.status_code == 202, resp.get_json()
            assert resp.headers.get("X-Progress") and len(resp.headers["X-Progress"]) < 100
            delay = self._retry_after(resp.headers["Retry-After"])
            assert time.monotonic() + delay < deadline, "the export did not finish before the deadline"
            self.waited.append(delay)
            self.wait(delay)

    def download(self, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        for field in ("transactionTime", "request", "requiresAccessToken", "output", "error"):
            assert field in manifest, field
        assert datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00")).tzinfo is not None
        out: dict[str, list[dict[str, Any]]] = {}
        for item in manifest["output"]:
            assert set(item) == {"type", "url", "count"}
            resp = self.client.get(
                _path(item["url"]), headers={**self.headers, "Accept": "application/fhir+ndjson"}
            )
            assert resp.status_code == 200 and resp.mimetype == "application/fhir+ndjson"
            lines = resp.get_data(as_text=True).splitlines()
            resp.close()
            assert len(lines) == item["count"], item["type"]  # count: "the number of resources in the file"
            resources = [json.loads(line) for line in lines]
            assert {r["resourceType"] for r in resources} == {item["type"]}
            out.setdefault(item["type"], []).extend(resources)
        return out

    def cancel(self, status_url: str) -> None:
        """The IG: "Following the delete request, when subsequent requests are made to the polling
        location, the server SHALL return a 404 Not Found error and an associated FHIR OperationOutcome"."""
        assert self.client.delete(_path(status_url), headers=self.headers).status_code == 202
        after = self.client.get(_path(status_url), headers=self.headers)
        assert after.status_code == 404 and after.get_json()["resourceType"] == "OperationOutcome"


def test_bulk_data_client_flow_kick_off_poll_download_type_filter_cancel_and_group(app, client, examples):
    """Worker-driven: while the client waits what Retry-After says, a worker runs the queue (no sleeps)."""
    bulk = BulkClient(client, FULL, wait=lambda seconds: _run(app))
    status = bulk.kick_off("/fhir/$export")
    manifest = bulk.poll(status)
    assert bulk.waited == [2.0]  # it was asked to come back in 2 s, and did only then
    assert manifest["request"] == "http://localhost/fhir/$export" and manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    files = bulk.download(manifest)
    assert len(files["Patient"]) == len(examples) and "Provenance" in files
    query = quote(f"Observation?code={TUMOUR_SIZE}", safe="")
    filtered = bulk.download(bulk.poll(bulk.kick_off(f"/fhir/$export?_type=Observation&_typeFilter={query}")))
    assert 0 < len(filtered["Observation"]) < len(files["Observation"])
    bulk.cancel(bulk.kick_off("/fhir/$export"))  # queued
    finished = bulk.kick_off("/fhir/$export?_type=Patient")
    bulk.poll(finished)
    bulk.cancel(finished)  # done: its files go
    group = bulk.download(
        bulk.poll(bulk.kick_off(f"/fhir/Group/{group_id(HOSPITAL_A)}/$export", _patients([])))
    )
    assert {p["id"] for p in group["Patient"]} == {
        _patient_id(b) for b in examples if _source(b) == HOSPITAL_A
    }


def test_bulk_data_client_against_the_in_process_runner(settings, client):
    """The embedded runner (a thread): the client sleeps what Retry-After says, within its deadline."""
    load_examples(client)
    live = create_app(settings)  # export_in_process defaults to true; the same database
    try:
        bulk = BulkClient(live.test_client(), FULL, wait=time.sleep)
        files = bulk.download(bulk.poll(bulk.kick_off("/fhir/$export?_type=Patient,Provenance")))
        assert set(files) == {"Patient", "Provenance"}
        assert all(delay == 2.0 for delay in bulk.waited)
    finally:
        live.extensions["ivclms"].engine.dispose()

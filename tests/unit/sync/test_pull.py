"""``service.sync.pull`` against a fake FHIR server behind ``responses`` (no sockets): the fake applies
the worker's transactions like HAPI, stamps ``meta.lastUpdated`` and answers the searches a pull makes
(``identifier=system|``, ``subject=Patient/a,Patient/b``, ``_lastUpdated=gt``)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import Engine, select

from service.cli import main
from service.fhir.client import FhirClient, FhirUnavailable
from service.intake import Intake
from service.mapping.retract import retract
from service.mapping.spec import spec
from service.store.cases import find, find_version
from service.store.pull_tables import pull_conflicts, pulled_resources
from service.store.tables import synced_resources
from service.sync import outbox
from service.sync.pull import OVERLAP_S, PullReport, pull, read_cursor
from service.sync.status import status
from service.sync.worker import Worker
from tests.unit.sync.conftest import BASE, Clock, FakeFhir, example, submit

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"


class PullFake(FakeFhir):
    """The sync fake plus searches, ``meta.lastUpdated`` and edits made directly on the server."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.stamped: dict[str, str] = {}
        self.searches: list[tuple[str, dict[str, str]]] = []

    def _stamp(self) -> None:
        for name, resource in self.resources.items():
            version = resource["meta"]["versionId"]
            if self.stamped.get(name) != version:
                resource["meta"]["lastUpdated"] = self.clock.now.isoformat()
                self.stamped[name] = version

    def transaction(self, request: Any) -> tuple[int, dict[str, str], str]:
        answer = super().transaction(request)
        self._stamp()
        return answer

    def edit(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """An EHR user changes a resource on the server: a new version."""
        resource = self.resources[name]
        change(resource)
        resource["meta"]["versionId"] = str(int(resource["meta"]["versionId"]) + 1)
        self._stamp()

    def create(self, resource: dict[str, Any]) -> str:
        self.next_id += 1
        resource = {**copy.deepcopy(resource), "id": str(self.next_id), "meta": {"versionId": "1"}}
        name = f"{resource['resourceType']}/{resource['id']}"
        self.resources[name] = resource
        self._stamp()
        return name

    def named(self, resource_type: str, key: str) -> str:
        """The server name of the synced resource whose business identifier ends with ``|key``."""
        for (rtype, value), server_id in self.by_identifier.items():
            if rtype == resource_type and value.endswith(f"|{key}"):
                return f"{rtype}/{server_id}"
        raise KeyError(key)

    def search(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        rtype = parts.path.rsplit("/", 1)[1]
        params = dict(parse_qsl(parts.query))
        self.searches.append((rtype, params))
        found = []
        for name, resource in sorted(self.resources.items()):
            if not name.startswith(f"{rtype}/") or not self._matches(resource, params):
                continue
            found.append({"fullUrl": f"{BASE}/{name}", "resource": resource, "search": {"mode": "match"}})
        body = {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": found}
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(body)

    @staticmethod
    def _matches(resource: dict[str, Any], params: dict[str, str]) -> bool:
        for name, value in params.items():
            if name == "identifier":
                system, _, code = value.partition("|")
                if not any(
                    i.get("system") == system and (not code or i.get("value") == code)
                    for i in resource.get("identifier", [])
                ):
                    return False
            elif name in ("subject", "patient"):
                if (resource.get(name) or {}).get("reference") not in value.split(","):
                    return False
            elif name == "_lastUpdated":
                assert value.startswith("gt")
                stamp = resource["meta"]["lastUpdated"]
                if not stamp > value[2:].replace("Z", "+00:00"):
                    return False
        return True


@pytest.fixture
def server(clock: Clock) -> Iterator[PullFake]:
    fake = PullFake(clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, BASE, callback=fake.transaction)
        mock.add_callback(
            responses.GET, re.compile(re.escape(BASE) + r"/[A-Za-z]+/[^/?]+$"), callback=fake.read
        )
        mock.add_callback(
            responses.GET, re.compile(re.escape(BASE) + r"/[A-Za-z]+(\?.*)?$"), callback=fake.search
        )
        yield fake


@pytest.fixture
def fhir_client() -> Iterator[FhirClient]:
    c = FhirClient(BASE, retries=0, sleep=lambda _s: None)
    yield c
    c.close()


@pytest.fixture
def synced(intake: Intake, engine: Engine, server: PullFake, clock: Clock, fhir_client: FhirClient) -> str:
    """Example case 0 stored and delivered by the worker; returns its ref."""
    (ref,) = submit(intake, example(0))
    Worker(engine, fhir_client, worker_id="w", clock=clock).run_once()
    clock.advance(60)
    return ref


def run_pull(engine: Engine, client: FhirClient, clock: Clock, **options: Any) -> PullReport:
    return pull(engine, client, Intake(engine, enqueue=True, clock=clock), clock=clock, **options)


def current(engine: Engine, ref: str) -> tuple[int, dict[str, Any]]:
    with engine.connect() as conn:
        row = find(conn, ref)
        assert row is not None
        version = find_version(conn, ref, row.version)
        assert version is not None
    return row.version, json.loads(version.case_json)


def disease_status(patient: str, when: str, status_code: str = "271299001") -> dict[str, Any]:
    """A plain R4 disease-status Observation as an EHR writes it (LOINC code of the mapping, SNOMED value)."""
    code = spec().codes["disease-status"]
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": code["system"], "code": code["code"]}]},
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        "valueCodeableConcept": {"coding": [{"system": SCT, "code": status_code}]},
    }


def test_a_server_change_of_a_synced_resource_becomes_a_new_version(
    engine, server, synced, clock, fhir_client
):
    _, before = current(engine, synced)
    name = server.named("Observation", "outcome")
    server.edit(name, lambda r: r.update(effectiveDateTime="2025-02-01"))

    report = run_pull(engine, fhir_client, clock)

    assert (report.changed, report.unchanged, report.conflicts) == (1, 0, 0)
    version, after = current(engine, synced)
    assert version == 2
    expected = copy.deepcopy(before)
    expected["outcome"]["last_contact"] = "2025-02-01"
    assert after == expected


def test_nothing_changed_on_the_server_stores_no_version(engine, server, synced, clock, fhir_client):
    report = run_pull(engine, fhir_client, clock)
    assert report.fetched > 0  # the worker's own writes are read back ...
    assert (report.changed, report.created, report.conflicts) == (0, 0, 0)  # ... and recognised as such
    assert current(engine, synced)[0] == 1

    server.edit(server.named("Observation", "outcome"), lambda r: r.update(effectiveDateTime="2025-02-01"))
    assert run_pull(engine, fhir_client, clock).changed == 1
    again = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert (again.changed, again.conflicts) == (0, 0)  # the merged server version is known now
    assert current(engine, synced)[0] == 2


def test_a_plain_observation_of_a_synced_patient_adds_a_follow_up_visit(
    engine, server, synced, clock, fhir_client
):
    _, before = current(engine, synced)
    patient = server.named("Patient", "patient")
    server.create(disease_status(patient, "2024-04-01"))

    report = run_pull(engine, fhir_client, clock)

    assert (report.changed, report.conflicts, report.rejected) == (1, 0, 0)
    version, after = current(engine, synced)
    assert version == 2
    assert len(after["follow_up"]) == len(before["follow_up"]) + 1
    visit = after["follow_up"][-1]
    assert (visit["date"], visit["disease_status"]) == ("2024-04-01", "progressive")
    assert {k: v for k, v in after.items() if k != "follow_up"} == {
        k: v for k, v in before.items() if k != "follow_up"
    }
    assert after["follow_up"][:-1] == before["follow_up"]
    with engine.connect() as conn:
        (row,) = conn.execute(select(pulled_resources)).all()
    assert row.identifier.endswith(f"|follow_up[{len(before['follow_up'])}]")

    full = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert (full.changed, full.unchanged) == (0, 1)
    assert current(engine, synced)[0] == 2


def test_an_earlier_plain_visit_is_appended_and_no_stored_visit_is_renumbered(
    engine, server, synced, clock, fhir_client
):
    _, before = current(engine, synced)
    early = before["follow_up"][0]["date"][:4] + "-01-02"  # before the stored visit, after the surgery
    server.create(disease_status(server.named("Patient", "patient"), early))
    assert run_pull(engine, fhir_client, clock).changed == 1
    _, after = current(engine, synced)
    assert after["follow_up"][: len(before["follow_up"])] == before["follow_up"]
    assert [v["date"] for v in after["follow_up"][len(before["follow_up"]) :]] == [early]


def test_unrecognised_plain_resources_are_ignored(engine, server, synced, clock, fhir_client):
    blood_pressure = disease_status(server.named("Patient", "patient"), "2024-04-01")
    blood_pressure["code"] = {"coding": [{"system": LOINC, "code": "85354-9"}]}
    server.create(blood_pressure)
    report = run_pull(engine, fhir_client, clock)
    assert (report.ignored, report.changed, report.rejected) == (1, 0, 0)
    assert current(engine, synced)[0] == 1


def more_pack_years(resource: dict[str, Any]) -> None:
    (extension,) = [e for e in resource["extension"] if "valueDecimal" in e]
    extension["valueDecimal"] = 25


def test_a_change_on_both_sides_is_a_conflict_never_merged_and_shown_in_status(
    engine, intake, server, synced, clock, fhir_client
):
    changed = example(0)
    changed["outcome"]["last_contact"] = "2024-12-24"
    submit(intake, changed)  # version 2, not synced yet
    server.edit(server.named("Observation", "outcome"), lambda r: r.update(effectiveDateTime="2025-02-01"))
    # another element changed on the server only: merged in the same pull
    server.edit(server.named("Observation", "patient.smoking"), more_pack_years)

    report = run_pull(engine, fhir_client, clock)

    assert (report.conflicts, report.changed) == (1, 1)
    version, after = current(engine, synced)
    assert version == 3
    assert after["outcome"]["last_contact"] == "2024-12-24"  # the service's change stands
    assert after["patient"]["smoking"]["pack_years"] == 25
    report_status = status(engine, now=clock.now)
    (conflict,) = report_status.conflicts
    assert (conflict.kind, conflict.case_ref, conflict.resource_type) == ("conflict", synced, "Observation")
    assert conflict.identifier.endswith("|outcome")
    assert "SECRET" not in conflict.reason and "2025-02-01" not in conflict.reason
    shown = report_status.as_json()["conflicts"][0]
    assert shown["server_resource"]["effectiveDateTime"] == "2025-02-01"
    assert report_status.as_json()["pulled_until"] == {BASE: clock.now.isoformat()}

    again = run_pull(engine, fhir_client, clock, since=clock.now - timedelta(days=365))
    assert again.conflicts == 1
    assert len(status(engine).conflicts) == 1  # recorded once per server version


def test_the_services_own_write_in_flight_is_not_a_conflict(
    engine, intake, server, synced, clock, fhir_client
):
    """The worker wrote version 2 to the server but has not recorded it yet (it crashed, or is about to)."""
    changed = example(0)
    changed["outcome"]["last_contact"] = "2024-12-24"
    submit(intake, changed)
    with engine.begin() as conn:
        (claim,) = outbox.claim(conn, worker_id="w2", now=clock.now, lease_s=300, limit=1, server_url=BASE)
        bundle = json.loads(outbox.renew(conn, claim.id, "w2", clock.now + timedelta(seconds=300)))
    fhir_client.transaction(bundle, idempotent=True)  # sent, never recorded

    report = run_pull(engine, fhir_client, clock)
    assert (report.conflicts, report.changed) == (0, 0)
    assert current(engine, synced)[0] == 2


def test_the_cursor_defaults_since_and_an_explicit_since_wins(engine, server, synced, clock, fhir_client):
    assert read_cursor(engine, BASE) is None
    first = run_pull(engine, fhir_client, clock)
    assert first.since is None and first.cursor == clock.now
    assert all("_lastUpdated" not in params for _, params in server.searches)
    assert read_cursor(engine, BASE) == clock.now

    started = clock.now
    clock.advance(3600)
    server.searches.clear()
    second = run_pull(engine, fhir_client, clock)
    expected = started - timedelta(seconds=OVERLAP_S)
    assert second.since == expected
    stamps = {params.get("_lastUpdated") for _, params in server.searches}
    assert stamps == {"gt" + expected.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    assert read_cursor(engine, BASE) == clock.now

    server.searches.clear()
    explicit = clock.now - timedelta(days=400)
    run_pull(engine, fhir_client, clock, since=explicit)
    assert {p.get("_lastUpdated") for _, p in server.searches} == {
        "gt" + explicit.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    }


def test_an_unreachable_server_leaves_the_cursor(engine, server, synced, clock, fhir_client):
    run_pull(engine, fhir_client, clock)
    cursor = read_cursor(engine, BASE)
    clock.advance(60)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, re.compile(re.escape(BASE) + r"/.*"), status=503)
        with pytest.raises(FhirUnavailable):
            run_pull(engine, fhir_client, clock)
    assert read_cursor(engine, BASE) == cursor


def test_a_rejected_merge_is_recorded_and_the_case_kept(engine, server, synced, clock, fhir_client):
    def break_it(resource: dict[str, Any]) -> None:
        resource["valueCodeableConcept"] = {"coding": [{"system": "urn:unknown", "code": "x"}]}

    server.edit(server.named("Observation", "outcome"), break_it)
    report = run_pull(engine, fhir_client, clock)
    assert (report.rejected, report.changed) == (1, 0)
    assert current(engine, synced)[0] == 1
    with engine.connect() as conn:
        kinds = [r.kind for r in conn.execute(select(pull_conflicts))]
    assert kinds == ["rejected"]


def test_a_case_only_the_server_has_is_pulled_whole(engine, server, synced, clock, fhir_client):
    """Profiled resources of a case another installation synced: a new case, from its Patient."""
    prepared = Intake(engine, enqueue=False, clock=clock).prepare(example(1))  # mapped, not stored
    response = fhir_client.transaction(prepared.bundle, idempotent=True)
    assert response["type"] == "transaction-response"

    report = run_pull(engine, fhir_client, clock)
    assert report.created == 1
    _, case = current(engine, prepared.ref)
    assert case == prepared.case


def test_ivclms_pull_command(engine, server, synced, clock, tmp_path, db_url):
    server.create(disease_status(server.named("Patient", "patient"), "2024-04-01"))
    env = {
        "IVCLMS_DATA_DIR": str(tmp_path),
        "IVCLMS_DB_URL": db_url,
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_VALIDATE_INTAKE": "false",
    }
    result = CliRunner().invoke(main, ["pull", "--from", BASE, "--since", "2000-01-01T00:00:00Z"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 changed" in result.output and "cursor: " in result.output
    assert current(engine, synced)[0] == 2
    bad = CliRunner().invoke(main, ["pull", "--from", BASE, "--since", "2000-01-01"], env=env)
    assert bad.exit_code == 2 and "time zone" in bad.output
    missing = CliRunner().invoke(main, ["pull"], env={**env, "IVCLMS_FHIR_URL": ""})
    assert missing.exit_code == 2 and "--from" in missing.output


def test_worker_once_with_a_pull_interval_also_pulls(engine, server, synced, clock, tmp_path, db_url):
    server.create(disease_status(server.named("Patient", "patient"), "2024-04-01"))
    env = {
        "IVCLMS_DATA_DIR": str(tmp_path),
        "IVCLMS_DB_URL": db_url,
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_VALIDATE_INTAKE": "false",
        "IVCLMS_FHIR_URL": BASE,
    }
    result = CliRunner().invoke(main, ["worker", "--once", "--pull-interval-s", "60"], env=env)
    assert result.exit_code == 0, result.output
    assert "0 entries processed" in result.output and "1 changed" in result.output
    assert current(engine, synced)[0] == 2
    assert read_cursor(engine, BASE) is not None


def test_a_case_withdrawn_on_the_server_is_not_imported(engine, server, synced, clock, fhir_client):
    """Another installation withdrew a case (every resource marked entered-in-error): nothing to import."""
    intake = Intake(engine, enqueue=False, clock=clock)
    prepared = intake.prepare(example(1))
    marked = retract(prepared.bundle, now="2026-01-01T00:00:00Z")
    response = fhir_client.transaction(marked, idempotent=True)
    assert response["type"] == "transaction-response"

    report = run_pull(engine, fhir_client, clock)
    assert (report.created, report.rejected) == (0, 0)
    assert report.ignored == len(marked["entry"]) - 1  # all but the Provenance (not case data)
    with engine.connect() as conn:
        assert find(conn, prepared.ref) is None
        assert conn.execute(select(pull_conflicts)).first() is None


def test_the_worker_updates_a_merged_plain_resource_in_place(engine, server, synced, clock, fhir_client):
    """The EHR's Observation gains the business identifier and profile; no second copy beside it."""
    name = server.create(disease_status(server.named("Patient", "patient"), "2024-04-01"))
    assert run_pull(engine, fhir_client, clock).changed == 1
    with engine.connect() as conn:
        (merged,) = conn.execute(select(pulled_resources.c.identifier)).scalars()
    count_before = len(server.resources)

    assert Worker(engine, fhir_client, worker_id="w", clock=clock).run_once() == 1
    clock.advance(60)

    holders = [
        n for n, r in server.resources.items() if merged in {i.get("value") for i in r.get("identifier", [])}
    ]
    assert holders == [name]
    adopted = server.resources[name]
    assert adopted["meta"]["versionId"] == "2" and adopted["meta"]["profile"]
    assert len(server.resources) == count_before  # version 2 added no resource
    with engine.connect() as conn:
        (server_id,) = conn.execute(
            select(synced_resources.c.server_id).where(synced_resources.c.identifier == merged)
        ).scalars()
    assert f"Observation/{server_id}" == name
    again = run_pull(engine, fhir_client, clock)
    assert (again.changed, again.conflicts, again.rejected) == (0, 0, 0)


def _rejected_reasons(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r.reason for r in conn.execute(select(pull_conflicts)) if r.kind == "rejected"]


def test_a_surgery_marked_not_done_on_the_server_is_never_merged(engine, server, synced, clock, fhir_client):
    """R4 Procedure.status (isModifier) "not-done: The procedure was terminated prior to any activity
    beyond preparation": read by its codes alone the pull would keep the surgery as done. The same rule as
    POST /fhir (mappings/negations.yaml): recorded as rejected with the rule, the case unchanged."""
    server.edit(server.named("Procedure", "surgery[0]"), lambda r: r.update(status="not-done"))
    report = run_pull(engine, fhir_client, clock)
    assert (report.rejected, report.changed) == (1, 0)
    assert current(engine, synced)[0] == 1
    (reason,) = _rejected_reasons(engine)
    assert reason.startswith("status: a Procedure that was not done (status not-done)")


def test_a_procedure_of_the_surgery_moved_to_another_day_on_the_server_is_never_merged(
    engine, server, synced, clock, fhir_client
):
    """The Procedures of one surgery give its one date (issue 15 leftovers): an EHR that moves the IVC
    reconstruction alone to another day leaves two dates for one surgery. As POST /fhir: recorded as
    rejected with the rule, the case unchanged (neither date silently kept)."""
    _, before = current(engine, synced)
    day = before["surgery"][0]["date"]
    name = server.named("Procedure", "surgery[0].ivc_management")
    server.edit(name, lambda r: r.update(performedDateTime="2021-05-10"))
    report = run_pull(engine, fhir_client, clock)
    assert (report.rejected, report.changed) == (1, 0)
    assert current(engine, synced) == (1, before)
    (reason,) = _rejected_reasons(engine)
    assert "procedures of one surgery must share its date (surgery[0].date: performedDateTime" in reason
    assert day not in reason and "2021-05-10" not in reason, reason  # no values of the record


def test_a_plain_observation_with_no_result_yet_is_not_a_visit(engine, server, synced, clock, fhir_client):
    """R4 observation-status "registered: The existence of the observation is registered, but there is no
    result yet available"."""
    waiting = disease_status(server.named("Patient", "patient"), "2024-04-01")
    waiting["status"] = "registered"
    server.create(waiting)
    report = run_pull(engine, fhir_client, clock)
    assert (report.rejected, report.changed) == (1, 0)
    assert current(engine, synced)[0] == 1
    (reason,) = _rejected_reasons(engine)
    assert "has no result yet (status registered)" in reason

"""``$validate`` endpoints and ``ivclms validate``: the local validator as a FHIR server offers it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from service.cli import main
from tests.support.auth import auth_headers as _auth

EXAMPLE = (
    Path(__file__).resolve().parents[3] / "profiles" / "example" / "Observation-ivc-001-pathology-margin.json"
)


def _post(client, url, body):
    return client.post(url, data=json.dumps(body), headers=_auth(), content_type="application/fhir+json")


def _errors(outcome):
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def test_a_valid_example_has_no_errors(client):
    resource = json.loads(EXAMPLE.read_text())
    for url in ("/fhir/$validate", "/fhir/Observation/$validate"):
        resp = _post(client, url, resource)
        assert resp.status_code == 200
        assert _errors(resp.get_json()) == []


def test_a_broken_resource_names_the_element(client):
    resource = json.loads(EXAMPLE.read_text())
    resource["status"] = "bogus"
    outcome = _post(
        client,
        "/fhir/$validate",
        {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]},
    ).get_json()
    assert [e["expression"] for e in _errors(outcome)] == [["Observation.status"]]


def test_profile_parameter_and_wrong_type(client):
    resource = json.loads(EXAMPLE.read_text())
    del resource["meta"]
    profile = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-lab-result"
    resp = client.post(
        "/fhir/$validate",
        query_string={"profile": profile},
        data=json.dumps(resource),
        headers=_auth(),
        content_type="application/fhir+json",
    )
    assert _errors(resp.get_json()), "a resection margin is not a lab result"
    assert _post(client, "/fhir/Patient/$validate", resource).status_code == 400
    assert _post(client, "/fhir/$validate", [1, 2]).status_code == 400


def test_cli_validate_exit_codes(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(EXAMPLE.read_text())
    bad = tmp_path / "bad.json"
    broken = json.loads(EXAMPLE.read_text())
    broken["status"] = "bogus"
    bad.write_text(json.dumps(broken))
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "good.json: valid" in ok.output
    failed = runner.invoke(main, ["validate", str(good), str(bad)])
    assert failed.exit_code == 1
    assert "bad.json: error Observation.status" in failed.output

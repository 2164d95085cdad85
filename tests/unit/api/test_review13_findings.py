"""Findings of the outside review of issue 13 (a client and an attacker against the running service),
each reproduced as the reviewer sent it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service import create_app
from service.auth.tokens import KEY_CHARS, principal_from_claims
from tests.tokens import token

EXAMPLE = Path(__file__).parents[3] / "examples" / "ivclms-001-segment-ii-graft.json"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
PREFIX = "svc-" + "a" * 260
"""Two subjects that share their first 264 characters: past the 256 of the key columns."""


def _as(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('system/*.cruds', sub=sub)}"}


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


def test_owner_keys_of_long_subjects_stay_distinct_and_bounded() -> None:
    victim = principal_from_claims({"iss": "https://idp", "sub": PREFIX + "-victim", "scope": ""})
    attacker = principal_from_claims({"iss": "https://idp", "sub": PREFIX + "-attacker", "scope": ""})
    assert victim.owner != attacker.owner and victim.client != attacker.client
    assert max(len(victim.owner), len(attacker.owner), len(victim.client)) <= KEY_CHARS
    short = principal_from_claims({"iss": "https://idp", "sub": "registry-a", "scope": ""})
    assert short.owner == "https://idp#sub:registry-a"  # a short key is kept as it is


def test_an_export_of_a_long_subject_is_not_anothers_who_shares_its_first_256_characters(client) -> None:
    """The reviewer: the attacker's GET on the victim's status URL answered 200 with the manifest
    (owner keys were cut to 256 characters). docs/security.md: status and files belong to their owner."""
    kick = client.get("/fhir/$export?_type=Patient", headers={**_as(PREFIX + "-victim"), **ASYNC})
    assert kick.status_code == 202, kick.get_json()
    status = kick.headers["Content-Location"].split("localhost", 1)[1]
    assert client.get(status, headers=_as(PREFIX + "-victim")).status_code == 202
    stolen = client.get(status, headers=_as(PREFIX + "-attacker"))
    assert stolen.status_code == 404 and stolen.get_json()["resourceType"] == "OperationOutcome"
    assert client.delete(status, headers=_as(PREFIX + "-attacker")).status_code == 404


def test_an_idempotency_key_is_not_replayed_to_another_long_subject(client) -> None:
    body: dict[str, Any] = json.loads(EXAMPLE.read_text())
    key = {"Idempotency-Key": "long-sub-key"}
    first = client.post(
        "/cases",
        data=json.dumps(body),
        headers={**_as(PREFIX + "-victim"), **key},
        content_type="application/json",
    )
    assert first.status_code == 201
    other = client.post(
        "/cases",
        data=json.dumps(body),
        headers={**_as(PREFIX + "-attacker"), **key},
        content_type="application/json",
    )
    assert other.headers.get("Idempotent-Replayed") != "true"


FULL = {"Authorization": f"Bearer {token('system/*.cruds')}"}
NUL_QUERIES = (
    "/fhir/Patient?_id=%00",
    "/fhir/Patient?identifier=a|%00",
    "/fhir/Patient?_profile=%00",
    "/fhir/Observation?code=%00",
    "/fhir/Observation?subject=%00",
    "/fhir/Observation?subject=Patient/%00",
    "/fhir/Observation?%00=1",
)


@pytest.mark.parametrize("url", NUL_QUERIES)
def test_a_nul_in_a_search_value_is_400_naming_the_parameter(client, url: str) -> None:
    """The reviewer: each answered 500 (PostgreSQL refuses U+0000 in text). House rule: bad input
    gets an OperationOutcome that names the element, with a 4xx."""
    resp = client.get(url, headers=FULL)
    assert resp.status_code == 400
    issue = resp.get_json()["issue"][0]
    assert "U+0000" in issue["diagnostics"] and issue.get("expression")


def test_a_nul_in_a_form_search_is_400(client) -> None:
    resp = client.post(
        "/fhir/Observation/_search",
        data="code=%00",
        headers=FULL,
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == ["code"]


def test_a_nul_in_any_path_variable_of_the_route_table_is_never_a_500(app, client) -> None:
    """Over the whole route table: every rule with a variable, every method it has, the variable(s)
    given as ``%00`` and ``a%00b``; the reviewer found 500s on reads, history, vread, $everything,
    /cases, bulk status and files."""
    tried = 0
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint == "static":
            continue
        for value in ("%00", "a%00b"):
            path = rule.rule
            for name in rule.arguments:
                path = re.sub(rf"<(?:[a-z]+:)?{name}>", value, path)
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                resp = client.open(path, method=method, headers=FULL)
                tried += 1
                assert resp.status_code < 500, (method, path, resp.get_data(as_text=True)[:300])
                assert resp.status_code == 404, (method, path, resp.status_code)
    assert tried >= 20


def test_group_search_pages_by_count_and_warns_of_what_it_ignores(client) -> None:
    """The reviewer: Group?_count=1 gave every Group with no next link, _count=abc 200, name=x no
    warning. R4 search.html on _count: the server "SHALL NOT return more resources than requested"."""
    from tests.support.read_side import load_examples

    load_examples(client)
    everything = client.get("/fhir/Group", headers=FULL).get_json()
    ids = [e["resource"]["id"] for e in everything["entry"]]
    assert len(ids) == everything["total"] >= 2
    seen: list[str] = []
    url: str | None = "/fhir/Group?_count=1"
    while url:
        page = client.get(url, headers=FULL).get_json()
        assert page["total"] == len(ids) and len(page["entry"]) == 1
        seen.append(page["entry"][0]["resource"]["id"])
        url = next(
            (link["url"].split("localhost", 1)[1] for link in page["link"] if link["relation"] == "next"),
            None,
        )
    assert seen == ids
    for bad in ("abc", "-1", "501", "\u0661"):
        resp = client.get(f"/fhir/Group?_count={bad}", headers=FULL)
        assert resp.status_code == 400 and resp.get_json()["issue"][0]["expression"] == ["_count"]
    named = client.get("/fhir/Group?name=x", headers=FULL).get_json()
    outcome = [e for e in named["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and "name" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get("/fhir/Group?name=x", headers={**FULL, "Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_a_transaction_with_a_failing_read_writes_nothing(client) -> None:
    """The reviewer: a transaction holding a plain-R4 case, GET Patient/does-not-exist and GET with a
    search answered 200 with 201/404/400 entries, and the case was stored. R4 http.html
    (transaction): "servers SHALL either accept all actions and return a 200 OK, along with a
    response bundle, or reject all resources and return an HTTP 400 or 500 type response"."""
    from tests.unit.api.test_fhir_intake_answers import SOURCE, _plain

    bundle = _plain("transaction")
    writes = len(bundle["entry"])
    bundle["entry"] += [
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        {"request": {"method": "GET", "url": "Observation?code=x"}},
    ]
    resp = client.post(
        "/fhir" + SOURCE, data=json.dumps(bundle), headers=FULL, content_type="application/fhir+json"
    )
    assert resp.status_code == 400, resp.get_json()
    where = {e for i in resp.get_json()["issue"] for e in i.get("expression", [])}
    assert where == {f"Bundle.entry[{writes}]", f"Bundle.entry[{writes + 1}]"}
    assert client.get("/fhir/Patient?_summary=count", headers=FULL).get_json()["total"] == 0
    assert client.get("/cases", headers=FULL).get_json()["cases"] == []
    # The same case as a batch: the reads fail in their own entries, the case is stored.
    bundle["type"] = "batch"
    answer = client.post(
        "/fhir" + SOURCE, data=json.dumps(bundle), headers=FULL, content_type="application/fhir+json"
    )
    assert answer.status_code == 200
    statuses = [e["response"]["status"] for e in answer.get_json()["entry"]]
    assert statuses[-2].startswith("404") and statuses[-1].startswith("400")
    assert client.get("/fhir/Patient?_summary=count", headers=FULL).get_json()["total"] == 1


def test_the_host_is_compared_without_case(client) -> None:
    """RFC 3986 3.2.2: "The host subcomponent is case-insensitive"; Host: LOCALHOST was 400."""
    assert client.get("/healthz", headers={"Host": "LOCALHOST"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400


@pytest.mark.parametrize("value", ["ge2026", "ge2026-12", "2026-12-02", "ge2026-12-02T00:00:00Z"])
def test_dates_at_any_precision_are_search_values(client, value: str) -> None:
    """The reviewer: Procedure?date=2020, _lastUpdated=ge2026 and AuditEvent?date=ge2026-12-02 were
    400. R4 search.html (date): "the precision of the value determines the range it covers" (a year
    is the whole year)."""
    for url in (
        f"/fhir/Procedure?date={value}",
        f"/fhir/Patient?_lastUpdated={value}",
        f"/fhir/AuditEvent?date={value}",
    ):
        resp = client.get(url, headers=FULL)
        assert resp.status_code == 200, (url, resp.get_json())


def test_last_updated_by_year_and_month_covers_that_range(client) -> None:
    from tests.support.read_side import load_examples

    load_examples(client)
    total = client.get("/fhir/Patient?_summary=count", headers=FULL).get_json()["total"]
    this_year = datetime.now(UTC).strftime("%Y")
    this_month = datetime.now(UTC).strftime("%Y-%m")
    for value, expected in (
        (this_year, total),
        (f"ge{this_month}", total),
        (f"lt{this_year}", 0),
        ("2019", 0),
    ):
        got = client.get(f"/fhir/Patient?_lastUpdated={value}&_summary=count", headers=FULL).get_json()
        assert got["total"] == expected, value
    assert client.get("/fhir/AuditEvent?date=le2026", headers=FULL).status_code == 400  # only ge is served

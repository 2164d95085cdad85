"""Issue 12, "one gate for what leaves", as a property: for random scope sets (SMART v2 ``?``
restrictions, v1 scopes, odd strings), random source-system bindings and roles, every GET route of
the FHIR read side and of ``/cases`` answers without a 5xx, and every resource or case in any answer
is one the gate lets this principal see (its type, its restriction, its case's source system).

The nine examples are stored once per module; each example draws one principal and several requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service import create_app
from service.auth.gate import CASE_TYPES, visible
from service.auth.principal import Principal
from service.auth.tokens import principal_from_claims
from service.errors import Forbidden, Unauthorized
from service.search import READ_TYPES
from service.settings import Settings
from tests.support.auth import TEST_SECRET
from tests.support.read_side import load_examples
from tests.tokens import bearer

HOSPITALS = tuple(f"urn:ivclms:example:hospital-{x}" for x in "abcd")
MAX_EXAMPLES = 60
REQUESTS_PER_EXAMPLE = 4


class World:
    """The stored examples: every resource with its case's source system, and the cases."""

    def __init__(self, client: FlaskClient, bundles: list[dict[str, Any]]) -> None:
        self.client = client
        self.source: dict[str, str] = {}
        self.resources: list[tuple[str, str]] = []
        self.patients: list[str] = []
        for bundle in bundles:
            source = bundle["entry"][0]["resource"]["identifier"][0]["value"].split("|")[0]
            for entry in bundle["entry"]:
                kind = entry["resource"]["resourceType"]
                rid = entry["fullUrl"].removeprefix("urn:uuid:")
                self.source[f"{kind}/{rid}"] = source
                self.resources.append((kind, rid))
                if kind == "Patient":
                    self.patients.append(rid)
        full = bearer("system/*.cruds")
        self.cases: dict[str, str] = {
            c["href"]: c["source_system"]
            for c in client.get("/cases?_count=500", headers=full).get_json()["cases"]
        }
        assert len(self.cases) == len(bundles) and set(self.cases.values()) <= set(HOSPITALS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp("read-gate")
    app = create_app(Settings(data_dir=folder, auth_jwt_secret=TEST_SECRET, export_in_process=False))
    app.config["TESTING"] = True
    client = app.test_client()
    yield World(client, load_examples(client))
    app.extensions["ivclms"].engine.dispose()


# -- principals ------------------------------------------------------------------------------------

_TYPES = st.sampled_from([*READ_TYPES, "*"])
_PERMS = st.sampled_from(["r", "s", "rs", "cruds", "rsu", "read", "*"])
_ENFORCEABLE = st.sampled_from(
    [
        "code=http://loinc.org|21889-1",
        "code=21889-1",
        "code=http://loinc.org|21889-1,http://loinc.org|33728-7",
        "code=|21889-1",
        "identifier=nope",
        "subject=Patient/x",
        "patient=nope",
        "code=21889-1&code=1",
    ]
)
_ODD = st.one_of(
    st.builds(
        lambda t, p, r: f"system/{t}.{p}{r}",
        st.sampled_from([*READ_TYPES, "*", "AuditEvent", "Basic", "patient", ""]),
        st.sampled_from(["r", "rs", "read", "write", "c", "x", ""]),
        st.sampled_from(
            ["", "?date=ge2020-01-01", "?_id=x", "?target=Basic/1", "?%zz", "?", "?code", "?code=21889-1"]
        ),
    ),
    st.sampled_from(["openid", "launch", "patient/*.read", "user/Patient.rs", "system/", "system/*.", "*"]),
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=12).filter(
        lambda s: " " not in s
    ),
)
_SCOPE = st.one_of(
    st.builds(lambda t, p: f"system/{t}.{p}", _TYPES, _PERMS),  # plain v1/v2 grants
    st.builds(  # SMART v2 restrictions the service enforces
        lambda t, p, r: f"system/{t}.{p}?{r}",
        st.sampled_from(["Observation", "Condition", "Procedure", "Provenance"]),
        st.sampled_from(["rs", "r", "s"]),
        _ENFORCEABLE,
    ),
)
_SOURCES = st.one_of(
    st.none(),
    st.just("*"),
    st.lists(st.sampled_from(HOSPITALS), min_size=1, max_size=2),
    st.lists(st.sampled_from([*HOSPITALS, "urn:elsewhere", "URN:IVCLMS:EXAMPLE:HOSPITAL-A"]), max_size=3),
    st.sampled_from([HOSPITALS[0], f"{HOSPITALS[0]} {HOSPITALS[1]}", "", 7, ["*", 1]]),
)
_ROLES = st.one_of(
    st.none(),
    st.lists(st.sampled_from(["registry", "deidentified", "admin", ""]), max_size=3),
    st.just("registry"),
)


@st.composite
def claims(draw: st.DrawFn) -> dict[str, Any]:
    scopes = draw(st.lists(_SCOPE, min_size=1, max_size=4))
    if draw(st.booleans()):  # every type, as whole-case routes need
        scopes.append(draw(st.sampled_from(["system/*.rs", "system/*.read", "system/*.cruds", "system/*.s"])))
    if draw(st.integers(0, 3)) == 0:  # now and then odd or refused scopes beside them
        scopes += draw(st.lists(_ODD, min_size=1, max_size=2))
    body: dict[str, Any] = {"scope": " ".join(scopes), "exp": 4102444800}
    if draw(st.booleans()):
        body["sub"] = draw(st.sampled_from(["registry-a", "hospital-a-app", "x"]))
    else:
        body["client_id"] = draw(st.sampled_from(["client-a", "registry-a"]))
    sources = draw(_SOURCES)
    if sources is not None:
        body["ivclms_sources"] = sources
    roles = draw(_ROLES)
    if roles is not None:
        body["ivclms_roles"] = roles
    return body


# -- requests --------------------------------------------------------------------------------------

_QUERIES = st.lists(
    st.sampled_from(
        [
            "_count=3",
            "_count=500",
            "code=http://loinc.org|21889-1",
            "code=21889-1",
            "_include=Observation:subject",
            "_include=Condition:subject",
            "_include=Procedure:subject:Patient",
            "_revinclude=Observation:patient",
            "_revinclude=Condition:subject",
            "_revinclude=Provenance:target",
            "_summary=count",
            "date=ge2021-01-01",
            "_lastUpdated=ge2000-01-01",
            "identifier=x",
            "_sort=x",
        ]
    ),
    max_size=3,
)


@st.composite
def request_path(draw: st.DrawFn, world: World) -> str:
    route = draw(st.integers(0, 9))
    kind, rid = draw(st.sampled_from(world.resources))
    if route == 0:
        search_type = draw(st.sampled_from(READ_TYPES))
        return f"/fhir/{search_type}?" + "&".join(draw(_QUERIES))
    if route == 1:
        return f"/fhir/{kind}/{rid}"
    if route == 2:
        return f"/fhir/{kind}/{rid}/_history/{draw(st.integers(1, 2))}"
    if route == 3:
        return f"/fhir/{kind}/{rid}/_history"
    if route == 4:
        patient = draw(st.sampled_from(world.patients))
        return f"/fhir/Patient/{patient}/$everything" + draw(st.sampled_from(["", "?_since=2000-01-01"]))
    if route == 5:
        return "/cases?" + draw(st.sampled_from(["", "_count=2", "_count=500", "sync=pending"]))
    if route == 6:
        return draw(st.sampled_from(sorted(world.cases)))
    if route == 7:
        return draw(st.sampled_from(sorted(world.cases))) + "/history"
    if route == 8:
        return draw(st.sampled_from(sorted(world.cases))) + draw(
            st.sampled_from(["?version=1", "?version=2"])
        )
    return f"/fhir/{draw(st.sampled_from(READ_TYPES))}/{rid}"  # a real id under another type


# -- the property ----------------------------------------------------------------------------------


def _sees(principal: Principal, resource: dict[str, Any], source: str | None) -> bool:
    try:
        return visible(principal, resource, source=source)
    except Forbidden:  # a grant the gate refuses: nothing of that type may leave
        return False


def _reads_case(principal: Principal, source: str, action: str = "r") -> bool:
    return all(principal.allows(t, action) for t in CASE_TYPES) and principal.may_read_source(source)


def _check_fhir(world: World, principal: Principal, body: dict[str, Any]) -> int:
    resources = (
        [e["resource"] for e in body.get("entry", []) if "resource" in e]
        if body.get("resourceType") == "Bundle"
        else [body]
    )
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "OperationOutcome":
            assert "withheld" in json.dumps(resource) or "ignored" in json.dumps(resource)
            continue
        key = f"{kind}/{resource['id']}"
        assert key in world.source, key
        assert _sees(principal, resource, world.source[key]), key
    return len(resources)


def _check_cases(world: World, principal: Principal, path: str, body: dict[str, Any]) -> None:
    if "cases" in body:  # the list
        assert all(principal.allows(t, "s") for t in CASE_TYPES)
        for case in body["cases"]:
            assert principal.may_read_source(case["source_system"]), case["source_system"]
        return
    href = path.split("?", 1)[0].removesuffix("/history")
    assert _reads_case(principal, world.cases[href]), path


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), drawn=claims())
def test_every_read_exit_returns_only_what_the_gate_lets_the_caller_see(
    world: World, data: st.DataObject, drawn: dict[str, Any]
) -> None:
    token = jwt.encode(drawn, TEST_SECRET, algorithm="HS256")
    try:
        principal: Principal | None = principal_from_claims(drawn)
    except Unauthorized:
        principal = None
    for _ in range(REQUESTS_PER_EXAMPLE):
        path = data.draw(request_path(world), label="path")
        resp = world.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code < 500, (path, resp.get_data(as_text=True))
        event(f"{path.split('/')[1]} {resp.status_code}")
        if principal is None:
            assert resp.status_code == 401, path
            continue
        if resp.status_code != 200:
            continue
        body = resp.get_json()
        if path.startswith("/cases"):
            _check_cases(world, principal, path, body)
        else:
            event(f"resources checked > 0: {_check_fhir(world, principal, body) > 0}")

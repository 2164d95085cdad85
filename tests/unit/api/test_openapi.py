"""``/openapi.json`` is valid OpenAPI 3.1, describes every route, and carries the case schema."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from service.model.jsonschema import case_json_schema


def test_openapi_is_valid_and_public(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    validate(resp.get_json())


def test_every_route_is_described(app, client):
    document = client.get("/openapi.json").get_json()
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule).rstrip("/") or "/"
        path = path.replace("{ref}", "{id}").replace("{entry_id}", "{id}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if (path, method.lower()) not in described:
                missing.append(f"{method} {path}")
    assert not missing


def test_case_component_has_every_field_of_the_published_json_schema(client):
    case = client.get("/openapi.json").get_json()["components"]["schemas"]["Case"]
    published = case_json_schema()
    assert set(case["properties"]) == set(published["properties"])
    assert (
        case["properties"]["registry_consent"]["enum"] == published["properties"]["registry_consent"]["enum"]
    )


def test_docs_page_lists_the_endpoints(client):
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert "POST /cases" in resp.get_data(as_text=True)

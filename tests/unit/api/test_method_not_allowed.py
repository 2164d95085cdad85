"""A 405 names the methods the route has, on every route of the table.

RFC 9110, 15.5.6: "The origin server MUST generate an Allow header field in a 405 response containing a
list of the target resource's currently supported methods."
"""

from __future__ import annotations

import re

from tests.tokens import bearer


def _sample_path(rule: str) -> str:
    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", lambda m: "1" if m.group(1) == "int" else "x", rule)


def test_every_route_answers_405_with_allow(app, client):
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert len(rules) > 40  # the whole table, not a remembered few
    for rule in rules:
        path = _sample_path(rule.rule)
        resp = client.open(path, method="TRACE", headers=bearer())
        assert resp.status_code == 405, (rule.rule, resp.status_code)
        allowed = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
        assert set(rule.methods or ()) <= allowed, (rule.rule, allowed)
        assert "TRACE" not in allowed
        assert resp.get_json()["resourceType"] == "OperationOutcome"

"""Issue 12, finding 7: what a client puts in a URL is a 4xx OperationOutcome, never a 500.

Every input below was a 500 on main (a ValueError or OverflowError from ``datetime``, ``int()`` of a
non-ASCII digit, an integer the database driver could not hold, a naive time given to a UTC column).
"""

from __future__ import annotations

import base64
import time
import warnings

import jwt
import pytest

from tests.support.auth import TEST_SECRET
from tests.support.auth import auth_headers as _auth


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/fhir/Observation?date=2021-02-30", 400),
        ("GET", "/fhir/Observation?date=ge2020-13-45", 400),
        ("GET", "/fhir/Observation?date=le9999-12-31", 200),
        ("GET", "/fhir/Observation?date=ge9999-12-31", 200),
        ("GET", "/fhir/Observation?date=\u0662\u0660\u0662\u0660-01-01", 400),  # Arabic-Indic digits
        ("GET", "/fhir/Observation?date=ge\u0662020-01-01", 400),
        ("GET", "/fhir/Observation?date=eq2021-01-01T25:00", 400),  # outside review: the time was dropped
        ("GET", "/fhir/Observation?date=2021-01-01X", 400),
        ("GET", "/fhir/Observation?date=2021-01-01T10:00:00Z", 200),
        ("GET", "/fhir/Observation?_count=\u00b2", 400),  # "²".isdigit() is True
        ("GET", "/fhir/Observation?_count=00000000000000000000001", 400),
        ("GET", "/fhir/Observation?_lastUpdated=9999-12-31", 400),
        ("GET", "/fhir/Observation?_lastUpdated=le9999-12-31T23:59:59.999999Z", 400),
        ("GET", "/fhir/Observation?_lastUpdated=ge0001-01-01T00:00:00%2B01:00", 400),
        ("GET", "/fhir/Observation?_lastUpdated=2021-02-30T00:00:00Z", 400),
        ("GET", "/fhir/Observation?_cursor=" + _cursor("next|2026-01-01T00:00:00|x"), 400),
        ("GET", "/fhir/Observation?_cursor=" + _cursor("next|0001-01-01T00:00:00+01:00|x"), 400),
        ("GET", "/fhir/Patient/x/_history/99999999999999999999999", 404),
        ("GET", "/fhir/Patient/x/_history/2147483648", 404),
        ("GET", "/fhir/Patient/x/_history/\u00b2", 404),
        ("POST", "/sync/retry/99999999999999999999999", 404),
        ("POST", "/sync/retry/" + "9" * 5000, 404),
        ("GET", "/cases?cursor=" + _cursor("2026-01-01T00:00:00|x"), 400),
        ("GET", "/cases?since=0001-01-01T00:00:00%2B01:00", 400),
        ("GET", "/cases/x?version=\u00b2", 400),
        ("GET", "/fhir/AuditEvent?date=0001-01-01T00:00:00%2B14:00", 400),
        ("GET", "/fhir/Patient/x/$everything?_since=0001-01-01T00:00:00%2B14:00", 400),
        ("GET", "/registry/summary?diagnosed_from=2021-02-30", 400),
        ("GET", "/registry/cases.csv?since=0001-01-01T00:00:00%2B01:00", 400),
    ],
)
def test_finding_7_no_500_for_client_input(client, method, url, status):
    resp = client.open(url, method=method, headers=_auth())
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    if status >= 400:
        body = resp.get_json()
        assert body["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("scope", [7, ["system/*.rs"], {"a": 1}, None, True])
def test_finding_7_a_signed_token_with_a_scope_that_is_no_string_is_a_generic_401(client, scope):
    body = {"sub": "registry-a", "exp": int(time.time()) + 300, "scope": scope}
    signed = jwt.encode(body, TEST_SECRET, algorithm="HS256")
    resp = client.get("/cases", headers={"Authorization": f"Bearer {signed}"})
    assert resp.status_code == 401
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and "jwt" not in text.lower() and "TypeError" not in text


def _example_bundle() -> dict:
    import json as _json

    from service.case_files import map_case
    from tests.support.examples import EXAMPLES

    return map_case(_json.loads(EXAMPLES[0].read_text()), now="2026-01-01T00:00:00Z")


@pytest.mark.parametrize("where", ["coding system", "meta.profile", "referenced meta.profile"])
def test_finding_7_malformed_elements_the_validator_met_are_422_not_500(client, where):
    """Found by the hostile-input fuzz on this branch (they were 500s on main too): an unhashable
    coding system, and ``meta.profile: null`` on an entry and on a referenced resource."""
    import json as _json

    bundle = _example_bundle()
    entries = [e["resource"] for e in bundle["entry"]]
    if where == "coding system":
        coded = next(r for r in entries if r.get("code", {}).get("coding"))
        coded["code"]["coding"][0]["system"] = []
    elif where == "meta.profile":
        entries[1]["meta"]["profile"] = None
    else:
        next(r for r in entries if r["resourceType"] == "Patient")["meta"]["profile"] = None
    resp = client.post(
        "/fhir", data=_json.dumps(bundle), headers=_auth(), content_type="application/fhir+json"
    )
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("claims", "algorithm"),
    [
        ({"exp": "9999999999"}, "HS256"),  # RFC 7519 4.1.4: exp is a NumericDate (a number)
        ({"exp": True}, "HS256"),
        ({}, "HS384"),  # RFC 7518 3.2: HS384 needs a 48-byte key; the service guarantees 32 (HS256)
        ({}, "HS512"),
    ],
)
def test_outside_review_tokens_with_a_string_exp_or_another_hmac_are_401(client, claims, algorithm):
    body = {"sub": "x", "scope": "system/*.rs", "exp": int(time.time()) + 300, **claims}
    with warnings.catch_warnings():  # PyJWT warns that the test secret is short for HS512: the point
        warnings.simplefilter("ignore")
        signed = jwt.encode(body, TEST_SECRET, algorithm=algorithm)
    resp = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {signed}"})
    assert resp.status_code == 401
    assert resp.get_json()["issue"][0]["diagnostics"] in (
        "the access token is not valid",
        "the access token has expired",  # exp true is read as 1 (1970) by the JWT library
    )

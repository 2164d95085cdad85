"""Issue 13, items 3, 5 and 6: the FHIR read side as third-party clients use it.

POST search, ``_count=0``, ``$everything`` parameters and paging, 406 for XML, conditional read,
CORS, history verbs, ``AuditEvent?_summary=count`` and the CapabilityStatement's Bulk Data claims.
Where the spec leaves room, tests/integration/test_issue13_read_vs_hapi.py compares with HAPI.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import select

from service import create_app
from service.settings import Settings, SettingsError
from service.store.tables import resources
from tests.tokens import bearer
from tests.unit.api.test_fhir_read import LOINC_TUMOR_SIZE, _expected, _ids, _post

ALL = "system/*.cruds"


def _get(client, url: str, scope: str = ALL, **headers: str):
    return client.get(url, headers={**bearer(scope), **headers})


def _path(url: str) -> str:
    """An absolute link as a test-client path (path and query)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _outcomes(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "outcome"]


def _pages(client, url: str, scope: str = ALL) -> list[dict]:
    pages = []
    while url:
        resp = _get(client, url, scope)
        assert resp.status_code == 200, resp.get_json()
        pages.append(resp.get_json())
        url = next((_path(link["url"]) for link in pages[-1]["link"] if link["relation"] == "next"), "")
        assert len(pages) < 100
    return pages


# --- item 3: POST search and _count=0 ---------------------------------------------------------


def test_item_3_post_search_takes_parameters_from_the_url_and_the_form_body(client):
    """R4 http.html 3.1.0.8: "servers that support search SHALL support POST" (search by
    ``POST [base]/[type]/_search`` with an ``application/x-www-form-urlencoded`` body; parameters may
    be in the URL and in the body)."""
    _, _, first = _post(client, 0)
    _post(client, 1)
    (patient,) = _expected(first, "Patient")
    by_get = _pages(client, f"/fhir/Observation?patient={patient}&_count=3")
    resp = client.post(
        f"/fhir/Observation/_search?patient={patient}",
        data={"_count": "3"},
        headers=bearer(ALL),
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 200
    first_page = resp.get_json()
    assert first_page["type"] == "searchset"
    assert first_page["total"] == by_get[0]["total"] == len(_expected(first, "Observation"))
    assert _ids(first_page) == _ids(by_get[0]) and len(_ids(first_page)) == 3
    # The next link is a GET URL holding both the URL's and the body's parameters (as HAPI pages).
    next_url = next(link["url"] for link in first_page["link"] if link["relation"] == "next")
    query = dict(parse_qsl(urlsplit(next_url).query))
    assert query["patient"] == patient
    assert query["_count"] == "3"
    rest = _pages(client, _path(next_url))
    seen = _ids(first_page) + [i for page in rest for i in _ids(page)]
    assert sorted(seen) == sorted(_expected(first, "Observation"))


def test_item_3_post_search_passes_the_same_gate(client):
    _post(client, 0)
    _post(client, 1)
    restricted = f"system/Observation.rs?code={LOINC_TUMOR_SIZE}"
    via_get = _get(client, "/fhir/Observation?_count=500", restricted).get_json()
    via_post = client.post(
        "/fhir/Observation/_search",
        data={"_count": "500"},
        headers=bearer(restricted),
        content_type="application/x-www-form-urlencoded",
    )
    assert via_post.status_code == 200
    assert _ids(via_post.get_json()) == _ids(via_get) and via_get["total"] == via_post.get_json()["total"]
    sizes = [e["resource"] for e in via_post.get_json()["entry"]]
    assert sizes and all(any(c["code"] == "21889-1" for c in r["code"]["coding"]) for r in sizes)
    # No grant on the type: 403, as for GET; another source system's client sees none of these cases.
    refused = client.post("/fhir/Observation/_search", headers=bearer("system/Patient.rs"))
    assert refused.status_code == 403
    other = client.post(
        "/fhir/Observation/_search", headers=bearer(ALL, sources=["urn:other"], roles=()), data={}
    )
    assert other.status_code == 200 and other.get_json()["total"] == 0
    # The audit trail records a POST search as a read (R), not as a create.
    trail = _get(client, "/fhir/AuditEvent?_count=500").get_json()["entry"]
    searched = [
        e["resource"] for e in trail if e["resource"]["entity"][0]["what"]["reference"].endswith("_search")
    ]
    assert searched and {e["action"] for e in searched} == {"R"}


def test_item_3_post_search_refuses_other_body_types_and_unknown_types(client):
    resp = client.post(
        "/fhir/Observation/_search",
        data=b'{"code": "x"}',
        headers=bearer(ALL),
        content_type="application/json",
    )
    assert resp.status_code == 415 and resp.get_json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/Basic/_search", headers=bearer(ALL)).status_code == 404
    strict = client.post(
        "/fhir/Observation/_search",
        data={"colour": "blue"},
        headers={**bearer(ALL), "Prefer": "handling=strict"},
        content_type="application/x-www-form-urlencoded",
    )
    assert strict.status_code == 400 and "colour" in json.dumps(strict.get_json())


def test_item_3_count_zero_answers_the_total_and_no_entries(client):
    """fhirpy's ``.count()`` sends ``_count=0``; HAPI answers a searchset with ``total`` and no entry."""
    _, _, first = _post(client, 0)
    full = _get(client, "/fhir/Observation?_count=500").get_json()
    counted = _get(client, "/fhir/Observation?_count=0")
    assert counted.status_code == 200
    body = counted.get_json()
    assert body["total"] == full["total"] == len(_expected(first, "Observation"))
    assert body.get("entry", []) == []
    restricted = f"system/Observation.rs?code={LOINC_TUMOR_SIZE}"
    assert _get(client, "/fhir/Observation?_count=0", restricted).get_json()["total"] == len(
        _ids(_get(client, "/fhir/Observation?_count=500", restricted).get_json())
    )
    assert _get(client, "/fhir/Observation?_count=-1").status_code == 400
    assert _get(client, "/fhir/Observation?_count=501").status_code == 400


# --- item 5: $everything parameters ------------------------------------------------------------


def _everything_ids(client, patient: str) -> set[str]:
    return set(_ids(_get(client, f"/fhir/{patient}/$everything").get_json()))


def test_item_5_everything_pages_with_count_and_next_links(client):
    _, _, first = _post(client, 0)
    _post(client, 1)
    (patient,) = _expected(first, "Patient")
    whole = _everything_ids(client, patient)
    assert len(whole) > 6
    pages = _pages(client, f"/fhir/{patient}/$everything?_count=4")
    assert all(len(_ids(p)) <= 4 for p in pages) and len(pages) == -(-len(whole) // 4)
    seen = [i for p in pages for i in _ids(p)]
    assert len(seen) == len(set(seen)) and set(seen) == whole
    assert {p["total"] for p in pages} == {len(whole)}
    assert _get(client, f"/fhir/{patient}/$everything?_count=0").status_code == 400
    assert _get(client, f"/fhir/{patient}/$everything?_cursor=bmV4dA==").status_code == 400


def test_item_5_everything_type_filters_and_still_passes_the_gate(client):
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    typed = _get(client, f"/fhir/{patient}/$everything?_type=Observation,Condition").get_json()
    expected = _expected(first, "Observation") | _expected(first, "Condition")
    assert set(_ids(typed)) == expected and typed["total"] == len(expected)
    assert _get(client, f"/fhir/{patient}/$everything?_type=Basic").status_code == 400
    # A type asked for but not granted is withheld (counted in a warning), never returned.
    narrow = _get(client, f"/fhir/{patient}/$everything?_type=Observation", "system/Patient.r")
    assert narrow.status_code == 200
    assert _ids(narrow.get_json()) == []
    (warning,) = _outcomes(narrow.get_json())
    assert warning["issue"][0]["severity"] == "warning" and "withheld" in warning["issue"][0]["diagnostics"]


def test_item_5_everything_start_and_end_select_care_dates(client, app):
    """R4 patient-operation-everything, start/end: "The date range relates to care dates, not record
    currency dates - e.g. all records relating to care provided in a certain date range. If no start
    date is provided, all records prior to the end date are in scope." Resources without a care date
    are not care in a date range, so the window keeps them, and the Patient is always returned ("At
    a minimum, the patient resource itself is returned"; its date is a birth date)."""
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    with app.extensions["ivclms"].engine.connect() as conn:
        dates = {
            f"{r.resource_type}/{r.id}": r.date
            for r in conn.execute(
                select(resources.c.resource_type, resources.c.id, resources.c.date).where(
                    resources.c.patient_id == patient.split("/")[1]
                )
            )
        }
    days = sorted({d[:10] for d in dates.values() if d})
    assert len(days) >= 3
    start, end = days[1], days[-2]
    window = _get(client, f"/fhir/{patient}/$everything?start={start}&end={end}").get_json()
    undated = {k for k, d in dates.items() if d is None or k == patient}
    expected = undated | {k for k, d in dates.items() if d and start <= d[:10] <= end}
    assert set(_ids(window)) == expected and patient in expected
    assert expected != set(dates)  # the window left something out
    only_start = _get(client, f"/fhir/{patient}/$everything?start={days[-1][:4]}").get_json()
    assert set(_ids(only_start)) == undated | {k for k, d in dates.items() if d and d[:4] >= days[-1][:4]}
    only_end = _get(client, f"/fhir/{patient}/$everything?end={days[0]}").get_json()
    assert set(_ids(only_end)) == undated | {k for k, d in dates.items() if d and d[:10] <= days[0]}
    for bad in ("2021-02-30", "yesterday", "2021-13", "2021-01-01T00:00:00Z"):
        resp = _get(client, f"/fhir/{patient}/$everything?start={bad}")
        assert resp.status_code == 400 and "start" in json.dumps(resp.get_json())


def test_item_5_everything_unknown_parameters_warn_or_refuse(client):
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    lenient = _get(client, f"/fhir/{patient}/$everything?colour=blue").get_json()
    (warning,) = _outcomes(lenient)
    assert warning["issue"][0]["severity"] == "warning" and "colour" in warning["issue"][0]["diagnostics"]
    assert set(_ids(lenient)) == _everything_ids(client, patient)
    assert all("colour" not in link["url"] for link in lenient["link"])
    strict = _get(client, f"/fhir/{patient}/$everything?colour=blue", Prefer="handling=strict")
    assert strict.status_code == 400 and "colour" in json.dumps(strict.get_json())
    since = _get(client, f"/fhir/{patient}/$everything?_since=2999-01-01T00:00:00Z").get_json()
    assert _ids(since) == []


# --- item 6: formats, conditional read, CORS, history, audit count, capabilities ---------------


def test_item_6_xml_only_is_406_unless_json_is_acceptable(client):
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    for url, headers in [
        (f"/fhir/{patient}?_format=xml", {}),
        ("/fhir/Observation?_format=application/fhir+xml", {}),
        (f"/fhir/{patient}", {"Accept": "application/fhir+xml"}),
        ("/fhir/metadata", {"Accept": "application/xml"}),
    ]:
        resp = _get(client, url, **headers)
        assert resp.status_code == 406, url
        assert resp.mimetype == "application/fhir+json"
        assert resp.get_json()["resourceType"] == "OperationOutcome"
    for url, headers in [
        (f"/fhir/{patient}?_format=json", {}),
        (f"/fhir/{patient}", {"Accept": "application/fhir+xml, application/fhir+json;q=0.5"}),
        (f"/fhir/{patient}", {"Accept": "application/fhir+xml, */*;q=0.1"}),
        (f"/fhir/{patient}", {"Accept": "application/fhir+json"}),
    ]:
        assert _get(client, url, **headers).status_code == 200, (url, headers)


def test_item_6_if_none_match_with_the_current_etag_is_304(client):
    """R4 http.html, conditional read: a client sends If-None-Match with the ETag it holds, and a
    server that supports it answers 304 Not Modified when that is still the current version (HAPI
    does; see tests/integration/test_issue13_read_vs_hapi.py)."""
    _, _, first = _post(client, 0)
    (patient,) = _expected(first, "Patient")
    current = _get(client, f"/fhir/{patient}")
    etag = current.headers["ETag"]
    unchanged = _get(client, f"/fhir/{patient}", **{"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert unchanged.headers["ETag"] == etag
    assert _get(client, f"/fhir/{patient}", **{"If-None-Match": 'W/"99"'}).status_code == 200
    assert _get(client, f"/fhir/{patient}/_history/1", **{"If-None-Match": etag}).status_code == 304
    # Not a way round the gate: a caller that may not see the resource still gets 404.
    hidden = _get(client, f"/fhir/{patient}", "system/Patient.r?identifier=x|y", **{"If-None-Match": etag})
    assert hidden.status_code == 404


def _cors_app(tmp_path, db_url: str, origins: str):
    from tests.support.auth import TEST_SECRET

    settings = Settings(
        data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, db_url=db_url, http_cors_origins=origins
    )
    return create_app(settings)


def test_item_6_cors_only_for_listed_origins(tmp_path, db_url, client):
    origin = "https://smart.example.org"
    plain = _get(client, "/fhir/metadata", Origin=origin)
    assert "Access-Control-Allow-Origin" not in plain.headers  # default: no CORS at all
    app = _cors_app(tmp_path, db_url, f"{origin}, https://other.example.org")
    try:
        browser = app.test_client()
        resp = browser.get("/fhir/Patient", headers={**bearer(ALL), "Origin": origin})
        assert resp.status_code == 200
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"ETag", "Location", "Content-Location", "X-Progress", "Retry-After"} <= exposed
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert "Origin" in resp.headers["Vary"]
        # A preflight carries no token: answered before authentication, for a listed origin only.
        pre = browser.options(
            "/fhir/Patient",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, prefer",
            },
        )
        assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == origin
        allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "prefer", "if-match", "if-none-match"} <= allowed
        assert "GET" in pre.headers["Access-Control-Allow-Methods"]
        stranger = browser.get("/fhir/Patient", headers={**bearer(ALL), "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in stranger.headers
        stranger_pre = browser.options(
            "/fhir/Patient",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "Access-Control-Allow-Origin" not in stranger_pre.headers
        # docs/security.md: "Preflight OPTIONS needs no token": an unlisted origin's preflight was 401
        # (outside review); now 204 with nothing that lets the browser go on, and no body type.
        assert stranger_pre.status_code == 204 and "Access-Control-Allow-Methods" not in stranger_pre.headers
        assert "Content-Type" not in pre.headers and "Content-Type" not in stranger_pre.headers
        # Errors carry the header too, so that the browser app can read the OperationOutcome.
        unauthorized = browser.get("/fhir/Patient", headers={"Origin": origin})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["Access-Control-Allow-Origin"] == origin
        assert browser.get("/fhir/metadata").get_json()["rest"][0]["security"]["cors"] is True
    finally:
        app.extensions["ivclms"].engine.dispose()


@pytest.mark.parametrize("bad", ["*", "smart.example.org", "https://smart.example.org/app", "ftp://x.org"])
def test_item_6_cors_origins_must_be_origins(tmp_path, bad):
    with pytest.raises(SettingsError, match="HTTP_CORS_ORIGINS"):
        Settings(data_dir=tmp_path, auth_disabled=True, http_cors_origins=bad).validated()


def test_item_6_history_shows_version_1_as_created_and_later_as_updated(client):
    location, case, _ = _post(client, 0)
    case["patient"]["smoking"]["pack_years"] = case["patient"]["smoking"]["pack_years"] + 5
    resp = client.put(location, data=json.dumps(case), headers=bearer(ALL), content_type="application/json")
    assert resp.status_code == 200
    new = client.get(location, headers={**bearer(ALL), "Accept": "application/fhir+json"}).get_json()
    smoking = next(
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in new["entry"]
        if e["resource"]["meta"]["profile"][0].endswith("smoking")
    )
    history = _get(client, f"/fhir/Observation/{smoking}/_history").get_json()
    (second, first) = history["entry"]
    assert first["request"] == {"method": "POST", "url": "Observation"}
    assert first["response"]["status"].startswith("201")
    assert second["request"] == {"method": "PUT", "url": f"Observation/{smoking}"}
    assert second["response"]["status"].startswith("200")


def test_item_6_audit_event_summary_count_is_the_total_only(client):
    _post(client, 0)
    for _ in range(3):
        _get(client, "/fhir/Patient")
    listed = _get(client, "/fhir/AuditEvent?_count=500").get_json()["entry"]
    counted = _get(client, "/fhir/AuditEvent?_summary=count").get_json()
    # Each request is recorded after its answer: the listing is in the count, the count is not.
    assert counted["total"] == len(listed) + 1 and counted.get("entry", []) == []
    # A caller without the registry role counts only its own events, as it lists only those.
    other = "system/AuditEvent.rs system/Patient.rs"
    for _ in range(2):
        client.get("/fhir/Patient", headers=bearer(other, sub="someone-else", roles=()))
    own = client.get("/fhir/AuditEvent?_summary=count", headers=bearer(other, sub="someone-else", roles=()))
    assert own.get_json()["total"] == 2
    assert _get(client, "/fhir/AuditEvent?_summary=true").status_code == 400


def test_item_6_capability_statement_declares_bulk_data_and_patient_operations(client):
    statement = client.get("/fhir/metadata").get_json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    operations = {op["name"]: op["definition"] for op in patient["operation"]}
    assert operations == {
        "everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    }
    assert statement["rest"][0]["security"]["cors"] is False

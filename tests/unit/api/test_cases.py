"""``/cases`` through the Flask test client on a fresh SQLite database per test."""

from __future__ import annotations

import json

import pytest

from service import create_app
from service.case_files import EXAMPLE_SERIES
from service.store.cases import case_ref
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES


def _example(n: int = 0) -> dict:
    return json.loads(EXAMPLES[n].read_text())


def _count(api) -> int:
    return len(api.get("/cases?_count=500").get_json()["cases"])


def test_post_stores_a_case_and_answers_201_with_location_and_etag(api):
    case = _example()
    resp = api.post(case)
    assert resp.status_code == 201, resp.get_json()
    assert resp.headers["ETag"] == 'W/"1"'
    location = resp.headers["Location"]
    assert location.startswith("/cases/")
    again = api.get(location)
    assert again.status_code == 200
    assert again.get_json()["case_id"] == case["case_id"]
    assert again.get_json() == resp.get_json()


def test_reposting_the_same_case_returns_the_existing_one(api):
    first = api.post(_example())
    second = api.post(_example())
    assert second.status_code == 200
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["ETag"] == 'W/"1"'
    assert _count(api) == 1


def test_posting_other_content_for_an_existing_case_is_409_and_stores_nothing(api):
    api.post(_example())
    changed = _example()
    changed["patient"]["sex"] = "male" if changed["patient"]["sex"] == "female" else "female"
    resp = api.post(changed)
    assert resp.status_code == 409
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "PUT /cases/" in outcome["issue"][0]["diagnostics"]
    ref = api.post(_example()).headers["Location"]
    assert [v["version"] for v in api.get(ref + "/history").get_json()["versions"]] == [1]


def test_put_with_if_match_makes_version_2_and_keeps_version_1(api):
    ref = api.post(_example()).headers["Location"]
    changed = _example()
    changed["patient"]["sex"] = "male" if changed["patient"]["sex"] == "female" else "female"
    resp = api.put(ref, changed, {"If-Match": 'W/"1"'})
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["ETag"] == 'W/"2"'
    assert api.get(ref).get_json()["patient"]["sex"] == changed["patient"]["sex"]
    assert api.get(ref + "?version=1").get_json()["patient"]["sex"] == _example()["patient"]["sex"]
    history = api.get(ref + "/history").get_json()["versions"]
    assert [v["version"] for v in history] == [2, 1]
    assert history[0]["author"] == "registry-a"


def test_put_with_a_stale_etag_is_412(api):
    ref = api.post(_example()).headers["Location"]
    changed = _example()
    changed["patient"]["sex"] = "male" if changed["patient"]["sex"] == "female" else "female"
    assert api.put(ref, changed, {"If-Match": 'W/"1"'}).status_code == 200
    changed["patient"]["sex"] = _example()["patient"]["sex"]
    resp = api.put(ref, changed, {"If-Match": 'W/"1"'})
    assert resp.status_code == 412
    assert resp.get_json()["issue"][0]["code"] == "conflict"
    assert api.get(ref).headers["ETag"] == 'W/"2"'


def test_put_with_a_malformed_if_match_is_400(api):
    ref = api.post(_example()).headers["Location"]
    assert api.put(ref, _example(), {"If-Match": "yesterday"}).status_code == 400


def test_put_of_another_case_into_this_id_is_422(api):
    ref = api.post(_example(0)).headers["Location"]
    resp = api.put(ref, _example(1))
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["case_id"]


def test_put_to_an_unknown_case_is_404(api):
    case = _example()
    ref = case_ref(case["source_system"], case["case_id"])
    assert api.put(f"/cases/{ref}", case).status_code == 404


def test_put_of_another_case_is_422_whether_or_not_the_id_exists(api):
    """The body is checked against the URL before the lookup: the answer does not tell whether an
    id (derived from another hospital's business key) exists."""
    stored = api.post(_example(1)).headers["Location"]
    for path in (stored, "/cases/00000000-0000-0000-0000-000000000000"):
        assert api.put(path, _example()).status_code == 422


def test_accept_fhir_json_gives_the_mapped_bundle(api):
    ref = api.post(_example()).headers["Location"]
    resp = api.get(ref, {"Accept": "application/fhir+json"})
    assert resp.status_code == 200
    assert resp.content_type == "application/fhir+json"
    bundle = resp.get_json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert any(e["resource"]["resourceType"] == "Provenance" for e in bundle["entry"])


def test_invalid_case_is_422_with_the_path_and_nothing_is_stored(api):
    case = _example()
    case["surgery"][0]["ivc_management"]["method"] = "teleportation"
    resp = api.post(case)
    assert resp.status_code == 422
    expressions = [e for i in resp.get_json()["issue"] for e in i.get("expression", [])]
    assert "surgery[0].ivc_management.method" in expressions
    assert _count(api) == 0


def test_unknown_field_is_422(api):
    case = _example()
    case["favourite_colour"] = "blue"
    resp = api.post(case)
    assert resp.status_code == 422
    assert "favourite_colour" in json.dumps(resp.get_json())


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"a": NaN}', "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"case_id\nx", "text/csv", 415),
        (b"[]", "application/json", 422),
    ],
)
def test_malformed_requests_get_an_operation_outcome(api, body, content_type, status):
    resp = api.post(body, content_type=content_type)
    assert resp.status_code == status
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert _count(api) == 0


def test_oversized_body_is_413(tmp_path):
    from service.settings import Settings
    from tests.support.auth import TEST_SECRET

    app = create_app(Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, http_max_body_bytes=1000))
    body = json.dumps(_example())
    assert len(body) > 1000
    resp = app.test_client().post("/cases", data=body, headers=_auth(), content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_case_is_404(api):
    assert api.get("/cases/nope").status_code == 404
    ref = api.post(_example()).headers["Location"]
    assert api.get(ref + "?version=7").status_code == 404
    assert api.get(ref + "?version=x").status_code == 400


def test_scopes_are_enforced(api, client):
    resp = client.post(
        "/cases",
        data=json.dumps(_example()),
        content_type="application/json",
        headers=_auth("system/Patient.rs"),
    )
    assert resp.status_code == 403
    # A case holds every resource type: listing cases needs s on each (issue 12, one gate for what leaves).
    assert client.get("/cases", headers=_auth("system/Patient.rs")).status_code == 403
    assert client.get("/cases", headers=_auth("system/*.rs")).status_code == 200
    assert client.get("/cases").status_code == 401


def test_list_pages_with_a_cursor_and_filters_by_since(api):
    for n in range(5):
        assert api.post(_example(n)).status_code == 201
    seen, url = [], "/cases?_count=2"
    while url:
        page = api.get(url).get_json()
        assert len(page["cases"]) <= 2
        seen += [c["case_id"] for c in page["cases"]]
        url = page.get("next")
    assert sorted(seen) == sorted(_example(n)["case_id"] for n in range(5))
    assert api.get("/cases?since=2999-01-01T00:00:00Z").get_json()["cases"] == []
    assert api.get("/cases?since=yesterday").status_code == 400
    assert api.get("/cases?cursor=%%%").status_code == 400
    assert api.get("/cases?sync=lost").status_code == 400
    assert api.get("/cases?_count=0").status_code == 400


def test_idempotency_key_replays_the_first_answer(api):
    key = {"Idempotency-Key": "retry-1"}
    first = api.post(_example(), headers=key)
    again = api.post(_example(), headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    other = api.post(_example(1), headers=key)
    assert other.status_code == 422
    assert _count(api) == 1


def test_csv_import_stores_every_row(api):
    resp = api.post(EXAMPLE_SERIES.read_bytes(), path="/cases/import", content_type="text/csv")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["imported"] == body["created"] == len(EXAMPLES)
    assert _count(api) == len(EXAMPLES)
    again = api.post(EXAMPLE_SERIES.read_bytes(), path="/cases/import", content_type="text/csv").get_json()
    assert again["unchanged"] == len(EXAMPLES) and again["created"] == 0


def test_csv_import_with_one_bad_row_stores_nothing_and_names_the_row(api):
    lines = EXAMPLE_SERIES.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("case_id")
    row = lines[2].split(",")
    row[column] = ""
    lines[2] = ",".join(row)
    resp = api.post("\n".join(lines) + "\n", path="/cases/import", content_type="text/csv")
    assert resp.status_code == 422
    # lines[2] is the sheet's line 3 (header = line 1); the diagnostics name the column, the
    # expression keeps the case path.
    issues = resp.get_json()["issue"]
    assert [i["diagnostics"] for i in issues] == ["line 3: case_id: required"]
    assert issues[0]["expression"] == ["case_id"]
    assert _count(api) == 0


def test_csv_import_of_a_semicolon_separated_file_says_so(api):
    text = EXAMPLE_SERIES.read_text().replace(",", ";")
    resp = api.post(text, path="/cases/import", content_type="text/csv")
    assert resp.status_code == 422
    [issue] = resp.get_json()["issue"]
    assert "the file looks semicolon-separated" in issue["diagnostics"]
    assert _count(api) == 0


def test_the_same_case_posted_10_times_at_once_is_one_case(app):
    from concurrent.futures import ThreadPoolExecutor

    def post(_: int) -> int:
        resp = app.test_client().post(
            "/cases", data=json.dumps(_example()), headers=_auth(), content_type="application/json"
        )
        return resp.status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(post, range(10)))
    assert statuses == [200] * 9 + [201]
    listed = app.test_client().get("/cases", headers=_auth()).get_json()["cases"]
    assert len(listed) == 1 and listed[0]["version"] == 1


def test_concurrent_updates_without_if_match_each_make_a_version(app):
    from concurrent.futures import ThreadPoolExecutor

    client = app.test_client()
    ref = client.post("/cases", data=json.dumps(_example()), headers=_auth(), content_type="application/json")
    location = ref.headers["Location"]

    def put(n: int) -> int:
        case = _example()
        case["patient"]["smoking"]["pack_years"] = 20 + n
        resp = app.test_client().put(
            location, data=json.dumps(case), headers=_auth(), content_type="application/json"
        )
        return resp.status_code

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(put, range(6))) == {200}
    versions = client.get(location + "/history", headers=_auth()).get_json()["versions"]
    assert [v["version"] for v in versions] == list(range(7, 0, -1))


def test_delete_withdraws_as_entered_in_error_and_keeps_the_history(api, client):
    ref = api.post(_example()).headers["Location"]
    resp = client.delete(ref, headers={**_auth(), "If-Match": 'W/"1"'})
    assert resp.status_code == 200
    assert resp.headers["ETag"] == 'W/"2"' and resp.headers["X-Case-Status"] == "entered-in-error"
    bundle = api.get(ref, {"Accept": "application/fhir+json"}).get_json()
    statuses = {e["resource"]["resourceType"]: e["resource"].get("status") for e in bundle["entry"]}
    assert statuses["Observation"] == statuses["Procedure"] == "entered-in-error"
    condition = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition")
    assert condition["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert "clinicalStatus" not in condition
    assert api.get(ref + "?version=1", {"Accept": "application/fhir+json"}).get_json() != bundle
    assert client.delete(ref, headers=_auth()).headers["ETag"] == 'W/"2"'  # already withdrawn: no new version
    assert client.delete(ref, headers={**_auth(), "If-Match": 'W/"1"'}).status_code == 412
    assert client.delete("/cases/nope", headers=_auth()).status_code == 404
    assert client.delete(ref, headers=_auth("system/Patient.rs")).status_code == 403
    listed = api.get("/cases").get_json()["cases"][0]
    assert listed["status"] == "entered-in-error"
    # Re-posting the content reinstates it only through PUT.
    assert api.post(_example()).status_code == 409
    assert api.put(ref, _example()).headers["X-Case-Status"] == "active"


def test_database_down_is_503_with_retry_after_and_nothing_half_done(app, tmp_path):
    from service.db import make_engine
    from service.settings import Settings

    ctx = app.extensions["ivclms"]
    good = ctx.intake.engine
    ctx.intake.engine = make_engine(
        Settings(data_dir=tmp_path, auth_disabled=True, db_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    )
    try:
        resp = app.test_client().post(
            "/cases", data=json.dumps(_example()), headers=_auth(), content_type="application/json"
        )
    finally:
        ctx.intake.engine.dispose()
        ctx.intake.engine = good
    assert resp.status_code == 503
    assert resp.headers["Retry-After"].isdigit()
    assert resp.get_json()["issue"][0]["code"] == "transient"
    assert app.test_client().get("/cases", headers=_auth()).get_json()["cases"] == []

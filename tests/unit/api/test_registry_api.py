"""``/registry`` through the Flask test client: the example series imported, then pulled."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from service.api import registry
from service.case_files import EXAMPLE_SERIES
from service.model import csv_flat
from service.registry.extract import DERIVED_PREFIX
from tests.unit.api.test_security import token

N = 9
CONSENT_YES = ["IVC-001", "IVC-003", "IVC-004", "IVC-005", "IVC-006", "IVC-007", "IVC-009"]


def _auth(scope: str = "system/*.cruds") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope)}"}


@pytest.fixture
def api(app):
    if "registry" not in app.blueprints:  # until the application registers it itself
        app.register_blueprint(registry.bp)
    client = app.test_client()

    class Api:
        def get(self, path, headers=None):
            return client.get(path, headers={**_auth(), **(headers or {})})

        def post_csv(self, body):
            return client.post("/cases/import", data=body, headers=_auth(), content_type="text/csv")

        def delete(self, path):
            return client.delete(path, headers=_auth())

    api = Api()
    imported = api.post_csv(EXAMPLE_SERIES.read_bytes())
    assert imported.status_code == 200, imported.get_json()
    api.refs = {c["case_id"]: c["id"] for c in imported.get_json()["cases"]}
    api.client = client
    return api


def _rows(resp) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


def _case_ids(resp) -> list[str]:
    if resp.mimetype == "text/csv":
        return sorted(r["case_id"] for r in _rows(resp))
    return sorted(json.loads(line)["case_id"] for line in resp.get_data(as_text=True).splitlines())


def test_csv_extract_streams_the_import_columns_then_the_derived_ones(api):
    resp = api.get("/registry/cases.csv")
    assert resp.status_code == 200
    assert resp.is_streamed
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", resp.headers["X-Extract-As-Of"])
    rows = _rows(resp)
    assert len(rows) == N
    header = list(rows[0])
    n = len(csv_flat.column_names())
    assert header[:n] == csv_flat.column_names()
    assert all(c.startswith(DERIVED_PREFIX) for c in header[n:])
    ivc001 = next(r for r in rows if r["case_id"] == "IVC-001")
    assert (ivc001["derived_dfs_months"], ivc001["derived_os_months"]) == ("36.3", "37.9")


def test_csv_without_derived_columns_imports_back_unchanged(api):
    resp = api.get("/registry/cases.csv?derived=false")
    assert list(_rows(resp)[0]) == csv_flat.column_names()
    again = api.post_csv(resp.get_data())
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert (body["imported"], body["unchanged"], body["created"], body["updated"]) == (N, N, 0, 0)


def test_ndjson_extract_is_the_stored_case_plus_derived(api):
    resp = api.get("/registry/cases.ndjson")
    assert resp.status_code == 200 and resp.is_streamed
    assert resp.mimetype == "application/x-ndjson"
    lines = resp.get_data(as_text=True).splitlines()
    assert len(lines) == N
    for line in lines:
        record = json.loads(line)
        derived = record.pop("derived")
        assert set(derived) >= {"os_months", "os_event", "dfs_months", "dfs_event", "recurrence"}
        stored = api.get(f"/cases/{api.refs[record['case_id']]}").get_json()
        assert record == stored
    plain = api.get("/registry/cases.ndjson?derived=false").get_data(as_text=True).splitlines()
    assert all("derived" not in json.loads(line) for line in plain)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("consent=yes", CONSENT_YES),
        ("consent=no&consent=unknown", ["IVC-002", "IVC-008"]),
        ("institution=Example%20University%20Hospital%20A", ["IVC-001", "IVC-004", "IVC-009"]),
        ("segment=I", ["IVC-002", "IVC-003", "IVC-009"]),
        ("segment=III", ["IVC-004", "IVC-007", "IVC-008"]),
        ("diagnosed_from=2021-01-01", ["IVC-001", "IVC-005", "IVC-006", "IVC-007", "IVC-009"]),
        ("diagnosed_to=2019-12-31", ["IVC-002", "IVC-003", "IVC-008"]),
        ("consent=yes&segment=II&diagnosed_from=2022-01-01", ["IVC-005", "IVC-006"]),
        ("since=2999-01-01T00:00:00Z", []),
        ("since=2000-01-01T00:00:00Z", [f"IVC-00{n}" for n in range(1, 10)]),
    ],
)
def test_filters(api, fmt, query, expected):
    resp = api.get(f"/registry/cases.{fmt}?{query}")
    assert resp.status_code == 200, resp.get_json()
    assert _case_ids(resp) == expected


def test_explicit_cases_and_withdrawn_cases(api):
    a, b = api.refs["IVC-002"], api.refs["IVC-007"]
    resp = api.get(f"/registry/cases.csv?case={a}&case={b.upper()}")
    assert _case_ids(resp) == ["IVC-002", "IVC-007"]
    assert api.delete(f"/cases/{b}").status_code == 200
    assert _case_ids(api.get(f"/registry/cases.csv?case={a}&case={b}")) == ["IVC-002"]
    assert len(_rows(api.get("/registry/cases.csv"))) == N - 1
    assert api.get("/registry/summary").get_json()["cases"] == N - 1


def test_an_empty_pull_still_has_the_header(api):
    resp = api.get("/registry/cases.csv?since=2999-01-01T00:00:00Z")
    assert resp.get_data(as_text=True).splitlines()[0].startswith("case_id,source_system,")
    assert api.get("/registry/cases.ndjson?since=2999-01-01T00:00:00Z").get_data() == b""


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/registry/cases.csv?consent=maybe", "consent"),
        ("/registry/cases.csv?consnet=yes", "consnet"),
        ("/registry/cases.csv?segment=IV", "segment"),
        ("/registry/cases.csv?institution=", "institution"),
        ("/registry/cases.csv?since=yesterday", "since"),
        ("/registry/cases.csv?since=2026-01-01T00:00:00", "since"),
        ("/registry/cases.csv?since=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z", "since"),
        ("/registry/cases.csv?diagnosed_from=2021-13-01", "diagnosed_from"),
        ("/registry/cases.csv?diagnosed_to=21-01-01", "diagnosed_to"),
        ("/registry/cases.csv?diagnosed_from=2022-01-01&diagnosed_to=2021-01-01", "diagnosed_from"),
        ("/registry/cases.csv?case=IVC-001", "case"),
        ("/registry/cases.ndjson?deidentified=yes", "deidentified"),
        ("/registry/cases.ndjson?derived=1", "derived"),
        ("/registry/cases.ndjson?format=html", "format"),
        ("/registry/summary?format=xml", "format"),
        ("/registry/summary?deidentified=true", "deidentified"),
        ("/registry/summary?segment=0", "segment"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(api, path, parameter):
    resp = api.get(path)
    assert resp.status_code == 400
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [parameter]


def test_too_many_cases_is_400(api):
    query = "&".join(f"case=00000000-0000-0000-0000-{n:012d}" for n in range(501))
    resp = api.get(f"/registry/cases.csv?{query}")
    assert resp.status_code == 400 and resp.get_json()["issue"][0]["expression"] == ["case"]


def test_scopes(api):
    for path in ("/registry/cases.csv", "/registry/cases.ndjson", "/registry/summary"):
        assert api.client.get(path).status_code == 401
        assert api.client.get(path, headers=_auth("system/Patient.r")).status_code == 403
        assert api.client.get(path, headers=_auth("system/Patient.s")).status_code == 200
        assert api.client.get(path, headers=_auth("system/*.read")).status_code == 200


def test_deidentified_pull_needs_a_configured_key(api):
    resp = api.get("/registry/cases.ndjson?deidentified=true")
    assert resp.status_code == 501
    assert resp.get_json()["issue"][0]["expression"] == ["deidentified"]


def test_deidentified_pulls_carry_no_identifiers_or_dates(api, monkeypatch):
    monkeypatch.setattr(registry, "pseudonym_key", lambda: b"registry-key-for-tests-0123456789abcdef")
    identified = api.get("/registry/cases.csv").get_data(as_text=True)
    assert "A-0001" in identified and "IVC-001" in identified and "1968-03-14" in identified
    for fmt in ("csv", "ndjson"):
        resp = api.get(f"/registry/cases.{fmt}?deidentified=true")
        assert resp.status_code == 200
        text = resp.get_data(as_text=True)
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
        for value in ("A-0001", "IVC-001", "Example University Hospital A", "margins free of tumour"):
            assert value not in text
    rows = _rows(api.get("/registry/cases.csv?deidentified=true&consent=yes"))
    assert len(rows) == len(CONSENT_YES)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["case_id"]) for r in rows)
    again = _rows(api.get("/registry/cases.csv?deidentified=true&consent=yes"))
    assert [r["case_id"] for r in again] == [r["case_id"] for r in rows]  # stable pseudonyms


def test_summary_json_and_html(api):
    resp = api.get("/registry/summary")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    assert (body["cases"], body["operated"], body["deaths"], body["recurrences"]) == (N, 8, 1, 4)
    assert body["kaplan_meier"]["overall_survival"]["n"] == N
    assert api.get("/registry/summary?consent=no").get_json()["cases"] == 1
    for resp in (
        api.get("/registry/summary", {"Accept": "text/html"}),
        api.get("/registry/summary?format=html"),
    ):
        assert resp.status_code == 200 and resp.mimetype == "text/html"
        page = resp.get_data(as_text=True)
        assert "<script" not in page and "Kaplan-Meier" in page
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert api.get("/registry/summary?format=json", {"Accept": "text/html"}).mimetype == "application/json"


def test_registry_paths_are_in_the_openapi_document(api):
    paths = api.client.get("/openapi.json").get_json()["paths"]
    for path in ("/registry/cases.csv", "/registry/cases.ndjson", "/registry/summary"):
        assert "get" in paths[path]
        assert {p["name"] for p in paths[path]["get"]["parameters"]} >= {"since", "consent", "case"}


def test_openapi_document_stays_valid_with_the_registry_routes(api):
    from openapi_spec_validator import validate

    validate(api.client.get("/openapi.json").get_json())


def test_a_failure_mid_stream_cuts_the_response_and_logs_no_case_data(api, monkeypatch, caplog):
    from service.registry import source

    real = source.stream_cases

    def failing(engine, filters, **kwargs):
        stream = real(engine, filters, **kwargs)
        yield next(stream)
        yield next(stream)
        raise ValueError("choked on 1968-03-14 of A-0001")

    monkeypatch.setattr(source, "stream_cases", failing)
    resp = api.get("/registry/cases.csv")
    assert resp.status_code == 200  # the header and first row were read before the response started
    with pytest.raises(registry.ExtractStopped):
        resp.get_data()
    assert "ValueError" in caplog.text
    assert "1968-03-14" not in caplog.text and "A-0001" not in caplog.text


def test_a_database_failure_before_the_first_row_is_503(api, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from service.registry import source

    def down(engine, filters, **kwargs):
        raise OperationalError("SELECT", {}, Exception("connection refused"))
        yield  # pragma: no cover

    monkeypatch.setattr(source, "stream_cases", down)
    resp = api.get("/registry/cases.ndjson")
    assert resp.status_code == 503 and resp.headers["Retry-After"]

"""``/registry`` through the Flask test client: the example series imported, then pulled."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest

from service import create_app
from service.api import registry
from service.case_files import EXAMPLE_SERIES
from service.model import csv_flat
from service.registry.extract import DERIVED_PREFIX
from service.settings import Settings
from tests.support.auth import TEST_SECRET
from tests.tokens import bearer, token

N = 9
CONSENT_YES = ["IVC-001", "IVC-003", "IVC-004", "IVC-005", "IVC-006", "IVC-007", "IVC-009"]
EVERY_CONSENT = "consent=yes&consent=no&consent=unknown"
"""Every case (finding 13: without ``consent`` only consented cases leave; the registry role may ask)."""


def _auth(scope: str = "system/*.cruds") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope)}"}


def _make_api(app):
    """The example series imported into ``app``, with the calls the tests make."""
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


@pytest.fixture(scope="module")
def _shared_api(tmp_path_factory, module_db_url):
    """One import of the series for the module's tests that only read (most of them): importing it for
    each test was most of this file's time."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("registry"), auth_jwt_secret=TEST_SECRET, db_url=module_db_url
    )
    application = create_app(settings)
    application.config["TESTING"] = True
    yield _make_api(application)
    application.extensions["ivclms"].engine.dispose()


@pytest.fixture
def api(request, _shared_api):
    """The shared import; a test marked ``writes`` (it imports, changes or deletes) gets its own app."""
    if request.node.get_closest_marker("writes"):
        return _make_api(request.getfixturevalue("app"))
    return _shared_api


def _rows(resp) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


def _case_ids(resp) -> list[str]:
    if resp.mimetype == "text/csv":
        return sorted(r["case_id"] for r in _rows(resp))
    return sorted(json.loads(line)["case_id"] for line in resp.get_data(as_text=True).splitlines())


def test_csv_extract_streams_the_import_columns_then_the_derived_ones(api):
    resp = api.get(f"/registry/cases.csv?{EVERY_CONSENT}")
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


@pytest.mark.writes
def test_csv_without_derived_columns_imports_back_unchanged(api):
    resp = api.get(f"/registry/cases.csv?derived=false&{EVERY_CONSENT}")
    assert list(_rows(resp)[0]) == csv_flat.column_names()
    again = api.post_csv(resp.get_data())
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert (body["imported"], body["unchanged"], body["created"], body["updated"]) == (N, N, 0, 0)


def test_ndjson_extract_is_the_stored_case_plus_derived(api):
    resp = api.get(f"/registry/cases.ndjson?{EVERY_CONSENT}")
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
    if "consent=" not in query:  # finding 13: the filters select among the consented cases only
        expected = [c for c in expected if c in CONSENT_YES]
    assert _case_ids(resp) == expected
    if "consent=" not in query:
        everything = api.get(f"/registry/cases.{fmt}?{query}&{EVERY_CONSENT}")
        assert set(_case_ids(everything)) >= set(expected)


@pytest.mark.writes
def test_explicit_cases_and_withdrawn_cases(api):
    a, b = api.refs["IVC-002"], api.refs["IVC-007"]
    resp = api.get(f"/registry/cases.csv?case={a}&case={b.upper()}&{EVERY_CONSENT}")
    assert _case_ids(resp) == ["IVC-002", "IVC-007"]
    assert _case_ids(api.get(f"/registry/cases.csv?case={a}&case={b}")) == ["IVC-007"]  # 002: unknown
    assert api.delete(f"/cases/{b}").status_code == 200
    assert _case_ids(api.get(f"/registry/cases.csv?case={a}&case={b}&{EVERY_CONSENT}")) == ["IVC-002"]
    assert len(_rows(api.get(f"/registry/cases.csv?{EVERY_CONSENT}"))) == N - 1
    assert api.get(f"/registry/summary?{EVERY_CONSENT}").get_json()["cases"] == N - 1


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
        assert api.client.get(path, headers=_auth("system/*.r")).status_code == 403
        assert api.client.get(path, headers=_auth("system/*.rs")).status_code == 200
        assert api.client.get(path, headers=_auth("system/*.read")).status_code == 200
    # An identified extract hands out whole records: search alone is not enough (a FHIR search needs r
    # too); the summary aggregates and needs s.
    for path in ("/registry/cases.csv", "/registry/cases.ndjson"):
        assert api.client.get(path, headers=_auth("system/*.s")).status_code == 403
    assert api.client.get("/registry/summary", headers=_auth("system/*.s")).status_code == 200


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
    assert resp.get_json()["cases"] == len(CONSENT_YES)  # finding 13: consented cases by default
    body = api.get(f"/registry/summary?{EVERY_CONSENT}").get_json()
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


# ---- issue 12, findings 12 and 13 ------------------------------------------------------------------

KEY = b"a-master-pseudonym-key-of-32-bytes-or-more"
HOSPITAL_A = "urn:ivclms:example:hospital-a"


def _as(scope: str = "system/*.rs", **kwargs) -> dict[str, str]:
    return bearer(scope, **kwargs)


DEID_ONLY = {"roles": ("deidentified",), "client_id": "registry-x"}


@pytest.fixture
def keyed(api, monkeypatch):
    monkeypatch.setattr(registry, "pseudonym_key", lambda: KEY)
    return api


def _records(resp) -> list[dict]:
    return [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]


def test_finding_12_identified_extracts_need_the_registry_role(keyed):
    get = keyed.client.get
    for fmt in ("csv", "ndjson"):
        refused = get(f"/registry/cases.{fmt}", headers=_as(**DEID_ONLY))
        assert refused.status_code == 403
        assert "'registry'" in refused.get_json()["issue"][0]["diagnostics"]
        assert "deidentified=true" in refused.get_json()["issue"][0]["diagnostics"]
        assert get(f"/registry/cases.{fmt}?deidentified=true", headers=_as(**DEID_ONLY)).status_code == 200
        assert get(f"/registry/cases.{fmt}", headers=_as(roles=("registry",))).status_code == 200
        # No role at all: neither form, nor the summary.
        for path in (
            f"/registry/cases.{fmt}",
            f"/registry/cases.{fmt}?deidentified=true",
            "/registry/summary",
        ):
            resp = get(path, headers=_as(roles=None))
            assert resp.status_code == 403
            assert (
                "'deidentified'" in resp.get_json()["issue"][0]["diagnostics"]
                or "'registry'" in (resp.get_json()["issue"][0]["diagnostics"])
            )
    assert get("/registry/summary", headers=_as(**DEID_ONLY)).status_code == 200


def test_finding_12_a_pull_needs_search_on_every_case_type(keyed):
    # Patient.s alone used to pull every Observation, Condition, Procedure ... of every case.
    for path in ("/registry/cases.csv", "/registry/cases.ndjson?deidentified=true", "/registry/summary"):
        resp = keyed.client.get(path, headers=_as("system/Patient.rs"))
        assert resp.status_code == 403
        assert "system/Observation.s" in resp.get_json()["issue"][0]["diagnostics"]


def test_finding_12_pseudonyms_are_keyed_per_recipient(keyed):
    def pull(**claims):
        resp = keyed.client.get("/registry/cases.ndjson?deidentified=true", headers=_as(**claims))
        assert resp.status_code == 200
        return _records(resp)

    x1 = pull(roles=("deidentified",), client_id="registry-x", sub="analyst-1")
    x2 = pull(roles=("deidentified",), client_id="registry-x", sub="analyst-2")
    y = pull(roles=("deidentified",), client_id="registry-y")
    assert [r["case_id"] for r in x1] == [r["case_id"] for r in x2]  # same recipient: stable
    assert [r["source_system"] for r in x1] == [r["source_system"] for r in x2]
    assert not {r["case_id"] for r in x1} & {r["case_id"] for r in y}  # not linkable across recipients
    assert not {r["source_system"] for r in x1} & {r["source_system"] for r in y}
    # The same figures otherwise: only the keyed values differ.
    strip = [{k: v for k, v in r.items() if k not in ("case_id", "source_system")} for r in x1]
    assert sorted(strip, key=json.dumps) == sorted(
        ({k: v for k, v in r.items() if k not in ("case_id", "source_system")} for r in y), key=json.dumps
    )


def test_finding_12_source_system_is_pseudonymised(keyed):
    for fmt in ("csv", "ndjson"):
        text = keyed.client.get(f"/registry/cases.{fmt}?deidentified=true", headers=_as(**DEID_ONLY))
        text = text.get_data(as_text=True)
        assert "urn:ivclms:example" not in text and "hospital-" not in text
    rows = _rows(keyed.client.get("/registry/cases.csv?deidentified=true", headers=_as(**DEID_ONLY)))
    tokens = {r["source_system"] for r in rows}
    assert all(re.fullmatch(r"src-[0-9a-f]{16}", t) for t in tokens)
    assert len(tokens) == 4  # one opaque token per hospital (A-D), stable within this recipient's pull
    identified = {r["source_system"] for r in _rows(keyed.get("/registry/cases.csv"))}
    assert identified == {f"urn:ivclms:example:hospital-{h}" for h in "abcd"}


def _bisect(get, url, target_in, low: dt.date, high: dt.date) -> tuple[dt.date, dt.date, list[int]]:
    """The finding's attack: 13 requests halving [low, high] with diagnosed_to."""
    statuses = []
    for _ in range(13):
        middle = low + (high - low) // 2
        resp = get(f"{url}&diagnosed_to={middle.isoformat()}")
        statuses.append(resp.status_code)
        if resp.status_code != 200:
            continue
        if target_in(resp):
            high = middle
        else:
            low = middle + dt.timedelta(days=1)
    return low, high, statuses


def test_finding_12_bisecting_diagnosed_to_no_longer_recovers_a_diagnosis_date(keyed):
    start, end = dt.date(2010, 1, 1), dt.date(2010, 1, 1) + dt.timedelta(days=2**13 - 1)
    # Control: on the identified extract the 13 requests do find IVC-005's diagnosis, 2022-03-28.
    low, high, _ = _bisect(
        keyed.get, "/registry/cases.csv?derived=false", lambda r: "IVC-005" in _case_ids(r), start, end
    )
    assert low == high == dt.date(2022, 3, 28)

    def deid(url):
        return keyed.client.get(url, headers=_as(**DEID_ONLY))

    url = "/registry/cases.ndjson?deidentified=true"
    (target,) = [r for r in _records(deid(url)) if r["patient"]["age_at_diagnosis"] == 64]  # IVC-005
    pseudonym = target["case_id"]
    low, high, statuses = _bisect(deid, url, lambda r: pseudonym in r.get_data(as_text=True), start, end)
    assert statuses == [400] * 13 and (low, high) == (start, end)
    refused = deid(f"{url}&diagnosed_to=2022-03-28").get_json()
    assert refused["issue"][0]["expression"] == ["diagnosed_to"]
    # Years are accepted; they give the year the extract shows anyway, nothing finer.
    years = [
        y
        for y in range(2010, 2033)
        if pseudonym in deid(f"{url}&diagnosed_from={y}&diagnosed_to={y}").get_data(as_text=True)
    ]
    assert years == [target["diagnosis"]["year"]] == [2022]
    csv_url = "/registry/cases.csv?deidentified=true"
    row = next(r for r in _rows(deid(csv_url)) if r["case_id"] == pseudonym)
    assert row["diagnosis_year"] == "2022"


def _reimport_changed(api, case_id: str) -> None:
    lines = EXAMPLE_SERIES.read_text().splitlines()
    (line,) = [x for x in lines if x.startswith(case_id + ",")]
    changed = line.replace(",yes,", ",yes,", 1).replace(
        "Example Regional Hospital D", "Example Hospital D", 1
    )
    resp = api.post_csv((lines[0] + "\n" + changed + "\n").encode())
    assert resp.status_code == 200 and resp.get_json()["updated"] == 1, resp.get_json()


@pytest.mark.writes
def test_finding_12_since_in_deidentified_pulls_is_a_signed_cursor_not_a_chosen_instant(keyed):
    def deid(query, **claims):
        return keyed.client.get(
            f"/registry/cases.ndjson?deidentified=true&{query}", headers=_as(**{**DEID_ONLY, **claims})
        )

    # A chosen instant would let a client bisect when each pseudonym's record changed.
    for chosen in ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00.000Z~" + "0" * 32):
        resp = deid(f"since={chosen}")
        assert resp.status_code == 400 and resp.get_json()["issue"][0]["expression"] == ["since"]
    first = deid("")
    cursor = first.headers["X-Extract-As-Of"]
    instant_part, _, mac = cursor.rpartition("~")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", instant_part) and len(mac) == 32
    # Another recipient's cursor, or this one with its instant moved, is refused.
    assert deid(f"since={cursor}", client_id="registry-y").status_code == 400
    assert deid(f"since=2000-01-01T00:00:00.000Z~{mac}").status_code == 400
    # Passed back as it came, incremental pulls still work.
    assert deid(f"since={cursor}").get_data() == b""
    _reimport_changed(keyed, "IVC-005")
    changed = _records(deid(f"since={cursor}"))
    assert len(changed) == 1 and changed[0]["patient"]["age_at_diagnosis"] == 64
    # Identified pulls keep plain instants.
    assert keyed.get("/registry/cases.csv?since=2000-01-01T00:00:00Z").status_code == 200


@pytest.mark.parametrize("parameter", ["case", "institution"])
def test_finding_12_case_and_institution_filters_are_refused_in_deidentified_pulls(keyed, parameter):
    value = {"case": keyed.refs["IVC-001"], "institution": "Example University Hospital A"}[parameter]
    for path in ("/registry/cases.csv?deidentified=true&", "/registry/summary?"):
        resp = keyed.client.get(f"{path}{parameter}={value}", headers=_as(**DEID_ONLY))
        assert resp.status_code == 400
        assert resp.get_json()["issue"][0]["expression"] == [parameter]
    # The registry role asking for the identified extract may use them.
    assert keyed.get(f"/registry/cases.csv?{parameter}={value}").status_code == 200


def test_finding_12_summary_without_the_registry_role_follows_the_deidentified_rules(keyed):
    def summary(query):
        return keyed.client.get(f"/registry/summary?{query}", headers=_as(**DEID_ONLY))

    assert summary("diagnosed_to=2019-12-31").status_code == 400
    assert summary("diagnosed_to=2019").get_json()["cases"] == 1  # IVC-003; 002 and 008 lack consent
    assert summary("since=2000-01-01T00:00:00Z").status_code == 400
    # The registry role gets the exact filters.
    assert keyed.get("/registry/summary?diagnosed_to=2019-12-31").get_json()["cases"] == 1


def test_finding_12_callers_without_the_registry_role_read_their_own_source_systems(keyed):
    def pull(**claims):
        resp = keyed.client.get("/registry/cases.ndjson?deidentified=true", headers=_as(**claims))
        assert resp.status_code == 200
        return _records(resp)

    hospital_a = pull(roles=("deidentified",), sources=[HOSPITAL_A], client_id="x")
    assert sorted(r["patient"]["age_at_diagnosis"] for r in hospital_a) == [52, 56, 61]  # IVC-001, 009, 004
    assert len({r["source_system"] for r in hospital_a}) == 1
    # Bound to no source system: refused with the reason, not an empty file that looks like "no cases".
    unbound = keyed.client.get(
        "/registry/cases.ndjson?deidentified=true", headers=_as(roles=("deidentified",), sources=None)
    )
    assert unbound.status_code == 403 and "bound to no source system" in unbound.get_data(as_text=True)
    summary = keyed.client.get(
        "/registry/summary", headers=_as(roles=("deidentified",), sources=[HOSPITAL_A], client_id="x")
    )
    assert summary.get_json()["cases"] == 3
    # The registry role reads across hospitals, whatever the token's sources.
    everyone = keyed.client.get("/registry/cases.csv", headers=_as(roles=("registry",), sources=[HOSPITAL_A]))
    assert _case_ids(everyone) == CONSENT_YES


def test_finding_13_only_consented_cases_leave_by_default(keyed):
    for fmt in ("csv", "ndjson"):
        assert _case_ids(keyed.get(f"/registry/cases.{fmt}")) == CONSENT_YES
        deid = keyed.client.get(f"/registry/cases.{fmt}?deidentified=true", headers=_as(**DEID_ONLY))
        records = _rows(deid) if fmt == "csv" else _records(deid)
        assert [r["registry_consent"] for r in records] == ["yes"] * len(CONSENT_YES)
    assert keyed.get("/registry/summary").get_json()["cases"] == len(CONSENT_YES)
    # Other consent values: only when asked for, and only for the registry role.
    assert _case_ids(keyed.get("/registry/cases.csv?consent=no")) == ["IVC-008"]
    for path in (
        "/registry/cases.csv?deidentified=true&consent=no",
        "/registry/cases.ndjson?deidentified=true&consent=yes&consent=unknown",
        "/registry/summary?consent=unknown",
    ):
        resp = keyed.client.get(path, headers=_as(**DEID_ONLY))
        assert resp.status_code == 403
        issue = resp.get_json()["issue"][0]
        assert issue["expression"] == ["consent"] and "'registry'" in issue["diagnostics"]
    ok = keyed.client.get("/registry/cases.csv?deidentified=true&consent=yes", headers=_as(**DEID_ONLY))
    assert len(_rows(ok)) == len(CONSENT_YES)

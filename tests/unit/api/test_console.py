"""The landing page, /docs and the read-only console (/ui) through the Flask test client: what a user
sees, the same gate as the API, escaping and the pages' security headers."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from urllib.parse import urlencode

import pytest

from service.api import console
from service.api.security import PAGE_CSP
from service.case_files import EXAMPLE_SERIES
from service.registry import source
from tests.tokens import bearer

HTML = {"Accept": "text/html"}
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SOURCE_B = "urn:ivclms:example:hospital-b"


@pytest.fixture
def series(client):
    resp = client.post(
        "/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=bearer(), content_type="text/csv"
    )
    assert resp.status_code == 200, resp.get_json()
    return {c["case_id"]: c["id"] for c in resp.get_json()["cases"]}


def _get(client, path, **headers):
    return client.get(path, headers={**HTML, **bearer(), **headers})


def test_landing_page_for_browsers_and_json_for_the_rest(client):
    page = client.get("/", headers=HTML)
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    for href in ("/ui", "/docs", "/fhir/metadata", "/healthz", "/readyz"):
        assert f'href="{href}"' in text
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    body = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert body["links"]["docs"]["href"] == "/docs"
    assert client.get("/").mimetype == "application/json"  # no Accept: not a browser
    # RFC 9110 12.5.5: a response chosen by Accept names it in Vary (a cache keeps them apart)
    assert page.headers["Vary"] == "Accept" and client.get("/").headers["Vary"] == "Accept"


def test_docs_is_swagger_ui_served_from_here_with_no_inline_script(client):
    resp = client.get("/docs")
    page = resp.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/assets/' in attrs and not body.strip() for attrs, body in scripts)
    # CSP3: "script-src 'self'" without 'unsafe-inline' blocks inline script
    assert "script-src 'self';" in resp.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
    for asset in re.findall(r'(?:src|href)="(/assets/[^"]+)"', page):
        got = client.get(asset)
        assert got.status_code == 200, asset
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    init = client.get("/assets/docs-init.js").get_data(as_text=True)
    assert "SwaggerUIBundle" in init
    assert "http" not in re.sub(r"//.*", "", init)  # nothing fetched from elsewhere
    assert "SwaggerUIBundle" in client.get("/assets/swagger-ui/swagger-ui-bundle.js").get_data(as_text=True)


@pytest.mark.parametrize(
    "path", ["/assets/../api/console.py", "/assets/swagger-ui/../__init__.py", "/assets/nope.js"]
)
def test_assets_outside_the_folders_are_404(client, path):
    assert client.get(path).status_code == 404


def test_openapi_declares_bearer_for_try_it(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/"]["get"]["security"] == []


@pytest.mark.parametrize("path", ["/ui", "/ui/series", "/ui/cases/00000000-0000-4000-8000-000000000000"])
def test_console_without_a_token_is_401_and_shows_no_data(client, series, path):
    page = client.get(path, headers=HTML)
    assert page.status_code == 401 and page.mimetype == "text/html"
    assert page.headers["WWW-Authenticate"].startswith("Bearer")
    text = page.get_data(as_text=True)
    assert "not configured" in text and "IVC-00" not in text and "Hospital" not in text
    api = client.get(path)  # a non-browser client gets the OperationOutcome as from the API
    assert api.status_code == 401 and api.get_json()["resourceType"] == "OperationOutcome"


def test_case_list_with_filters_and_paging(client, series):
    page = _get(client, "/ui").get_data(as_text=True)
    assert "9 cases" in page and all(case_id in page for case_id in series)
    segment_i = _get(client, "/ui?segment=I").get_data(as_text=True)
    shown = set(re.findall(r">(IVC-\d{3})</a>", segment_i))
    assert shown and shown < set(series)
    assert not shown & {"IVC-004", "IVC-007"}  # segments II-III and III do not touch segment I
    assert "0 cases" in _get(client, "/ui?sync=dead").get_data(as_text=True)
    assert _get(client, "/ui?status=nonsense").status_code == 400


def test_case_list_shows_only_the_callers_sources(client, series):
    page = _get(client, "/ui", **bearer(sources=[SOURCE_B], roles=[])).get_data(as_text=True)
    assert "IVC-002" in page and "IVC-001" not in page


def test_case_page_timeline_resources_and_diff(client, series):
    ref = series["IVC-002"]
    case = json.loads((EXAMPLES / "ivclms-002-segment-i-ligation-local-recurrence.json").read_text())
    changed = copy.deepcopy(case)
    changed["surgery"][0]["date"] = "2019-06"
    changed["institution"] = '<script>alert("x")</script>'
    assert client.put(f"/cases/{ref}", json=changed, headers=bearer()).status_code == 200
    resp = _get(client, f"/ui/cases/{ref}")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    page = resp.get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    timeline = page.split("Clinical timeline", 1)[1].split("FHIR resources", 1)[0]
    assert re.search(r'class="when">2019-06</span> <strong>Surgery', timeline)  # a month stays a month
    assert re.search(r"<summary>Patient \(urn:uuid:[0-9a-f-]{36}\)</summary>", page)
    bundle = client.get(f"/cases/{ref}", headers={**bearer(), "Accept": "application/fhir+json"}).get_json()
    table = page.split('class="resources"', 1)[1].split("</table>", 1)[0]
    assert table.count("<summary>") == len(bundle["entry"])  # every resource, each with its result
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    outcome = client.post("/fhir/Patient/$validate", json=patient, headers=bearer()).get_json()
    errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    row = table.split("<summary>Patient (", 1)[1].split("</tr>", 1)[0]
    assert (f"{len(errors)} error" in row) if errors else ("valid" in row or "warnings" in row)
    diff = page.split("Changes from version", 1)[1]
    assert "surgery[0].date" in diff and "&#34;2019-06-20&#34;" in diff and "&#34;2019-06&#34;" in diff
    assert "No change" in _get(client, f"/ui/cases/{ref}?from=2&to=2").get_data(as_text=True)
    assert _get(client, f"/ui/cases/{ref}?from=9").status_code == 400


def test_case_page_of_another_source_is_refused(client, series):
    resp = _get(client, f"/ui/cases/{series['IVC-001']}", **bearer(sources=[SOURCE_B], roles=[]))
    assert resp.status_code in (403, 404) and "IVC-001" not in resp.get_data(as_text=True)


def test_series_page(client, series):
    resp = _get(client, "/ui/series?consent=yes&consent=no&consent=unknown")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert page.count("<svg") == 2 and 'class="at-risk">9</text>' in page
    assert "Data as of" in page and "<code>consent</code> = no" in page
    assert "(100.0%)" in page or "%)" in page  # counts with percentages
    assert "100% (no event yet)" in page or "95% CI" in page
    assert not re.search(r"\b1 \(95% CI 1-1\)", page) and "100.0%-100.0%" not in page
    default = _get(client, "/ui/series").get_data(as_text=True)
    assert "<code>consent</code> = yes (default)" in default
    csv_resp = _get(client, "/ui/series.csv?consent=yes&consent=no&consent=unknown")
    assert csv_resp.mimetype == "text/csv" and "Overall survival" in csv_resp.get_data(as_text=True)
    assert csv_resp.headers["X-Content-Type-Options"] == "nosniff"  # outside review: HTML and SVG had it
    formula = _get(client, "/ui/series.csv?institution=%3DHYPERLINK(1)").get_data(as_text=True)
    assert "filter,institution,'=HYPERLINK(1)" in formula  # OWASP CSV injection: neutralised
    svg = _get(client, "/ui/series/overall_survival.svg")
    assert svg.mimetype == "image/svg+xml" and svg.get_data(as_text=True).startswith("<svg")
    assert _get(client, "/ui/series/nope.svg").status_code == 404
    assert _get(client, "/ui/series?bogus=1").status_code == 400


def test_series_page_states_the_partial_date_filter_rule_next_to_the_filters(client, series):
    """Review 15: a year-only diagnosis passes both halves of its year; the page says so by the filters."""
    page = _get(client, "/ui/series?diagnosed_to=2020-06-30").get_data(as_text=True)
    filters = page.index("Filters applied")
    assert page.index(source.DATE_FILTER_RULE) - filters < 600


def test_series_needs_what_the_summary_needs(client, series):
    resp = _get(client, "/ui/series", **bearer(roles=[]))
    assert resp.status_code == 403 and "role" in resp.get_data(as_text=True)


def test_paging_walks_every_case_once_and_keeps_the_filters(client, series, monkeypatch):
    monkeypatch.setattr(console, "PAGE_SIZE", 4)
    seen: list[str] = []
    path: str | None = "/ui?status=active"
    while path:
        page = _get(client, html.unescape(path)).get_data(as_text=True)
        seen += re.findall(r">(IVC-\d{3})</a>", page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        path = found.group(1) if found else None
        if path:
            assert "status=active" in path
    assert sorted(seen) == sorted(series)  # 4 + 4 + 1, none twice
    last = _get(client, "/ui?status=active&offset=8").get_data(as_text=True)
    assert 'rel="prev"' in last and 'rel="next"' not in last


def test_institution_filter(client, series):
    case = client.get(f"/cases/{series['IVC-002']}", headers=bearer()).get_json()
    query = urlencode({"institution": case["institution"]})
    page = _get(client, f"/ui?{query}").get_data(as_text=True)
    shown = set(re.findall(r">(IVC-\d{3})</a>", page))
    assert "IVC-002" in shown and shown < set(series)


def test_an_unknown_case_is_a_404_page(client, series):
    resp = _get(client, "/ui/cases/00000000-0000-4000-8000-000000000000")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert "<h1>404" in resp.get_data(as_text=True)


def test_a_deidentified_recipient_sees_the_series_under_its_rules_and_nothing_else(client, series):
    deidentified = bearer("system/*.rs", roles=["deidentified"])
    page = _get(client, "/ui/series", **deidentified)
    assert page.status_code == 200 and "de-identified rules apply" in page.get_data(as_text=True)
    assert "IVC-00" not in page.get_data(as_text=True)
    refused = _get(client, "/ui/series?institution=Example%20General%20Hospital%20B", **deidentified)
    assert refused.status_code == 400 and "institution" in refused.get_data(as_text=True)
    assert _get(client, "/ui", **deidentified).status_code == 403
    assert _get(client, f"/ui/cases/{series['IVC-002']}", **deidentified).status_code == 403


def test_a_case_with_unknown_dates_has_its_page(client):
    # second outside review: `unknown` dates (issue 15) made every such case page a 500
    case = json.loads((EXAMPLES / "ivclms-001-segment-ii-graft.json").read_text())
    case["case_id"] = "UNKNOWN-DATES-1"
    case["diagnosis"]["date"] = "unknown"
    case["patient"]["birth_date"] = None
    case["patient"]["age_at_diagnosis"] = 52
    for surgery in case["surgery"]:
        surgery["date"] = "unknown"
    case["outcome"].update({"last_contact": "unknown", "last_contact_months_after_surgery": 27})
    case["follow_up"] = []
    case["therapies"] = []
    case["care_plan"] = None
    case["pathology"]["neoadjuvant_response_percent"] = None
    for complication in (case.get("postoperative") or {}).get("complications") or []:
        complication["date"] = None
    created = client.post("/cases", json=case, headers=bearer())
    assert created.status_code == 201, created.get_json()
    page = _get(client, created.headers["Location"].replace("/cases/", "/ui/cases/"))
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "date unknown (not given by the source)" in text and "27 months after surgery" in text


@pytest.mark.parametrize("path", ["/ui?segmnt=I", "/ui?segment=I&segment=II", "/ui?page=2"])
def test_the_case_list_refuses_a_parameter_it_does_not_know(client, series, path):
    """A misspelt filter silently ignored would show every case as if filtered (the API's extracts refuse
    it too)."""
    resp = _get(client, path)
    assert resp.status_code == 400
    named = "segment" if "segment" in path else path.split("?")[1].split("=")[0]
    assert named in resp.get_data(as_text=True)


def test_the_case_page_refuses_a_parameter_it_does_not_know(client, series):
    ref = series["IVC-002"]
    assert _get(client, f"/ui/cases/{ref}?frm=1").status_code == 400
    assert _get(client, f"/ui/cases/{ref}?from=1").status_code == 200

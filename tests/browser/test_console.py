"""The landing page, the API docs and the console in a real headless Chromium (issue 16).

``ivclms serve`` runs on loopback with authentication off (local trial mode) and the example series
imported; each page is opened as a user would, checked for what it shows, checked by axe-core (no
serious or critical violation) and kept as a screenshot under ``.run/screenshots/``. The browser's
console log must hold no Content-Security-Policy violation: the pages run under ``script-src 'self'``.
Needs the Debian ``chromium`` and ``chromium-driver`` packages and ``npm ci`` in tests/clients/js
(scripts/setup installs them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service.case_files import EXAMPLE_SERIES
from tests.browser.conftest import WAIT_S, _check_page, _healthy, _open
from tests.serving import Serve
from tests.tokens import token

EVERY_CONSENT = "consent=yes&consent=no&consent=unknown"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Serve(tmp_path_factory.mktemp("browser"), {"IVCLMS_AUTH_DISABLED": "true"}, _healthy)
    url = f"http://127.0.0.1:{server.port}"
    try:
        resp = requests.post(
            f"{url}/cases/import",
            data=EXAMPLE_SERIES.read_bytes(),
            headers={"Content-Type": "text/csv"},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server with authentication on (the test secret), as deployed: no OIDC sign-in yet."""
    server = Serve(tmp_path_factory.mktemp("guarded"), {}, _healthy)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _try_it(browser, operation_id: str):
    """Swagger UI's "try it out" on one operation, as a user clicks it: (the operation, its status)."""
    operation = browser.find_element(By.ID, operation_id)
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    for button in (".try-out__btn", "button.execute"):
        WebDriverWait(browser, WAIT_S).until(lambda d, b=button: operation.find_elements(By.CSS_SELECTOR, b))
        operation.find_element(By.CSS_SELECTOR, button).click()
    live = (By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    WebDriverWait(browser, WAIT_S).until(lambda d: operation.find_elements(*live))
    return operation, operation.find_element(*live).text.strip()


def test_landing_page(browser, base):
    _open(browser, f"{base}/", "ul.links")
    hrefs = {
        a.get_attribute("href").removeprefix(base)
        for a in browser.find_elements(By.CSS_SELECTOR, "ul.links a")
    }
    assert {"/ui", "/docs", "/fhir/metadata", "/healthz", "/readyz"} <= hrefs
    _check_page(browser, "landing")


def test_api_docs_swagger_ui_works_offline_under_the_csp(browser, base):
    _open(browser, f"{base}/docs", ".swagger-ui .opblock")
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/cases" in paths and "/ui/series" in paths
    assert browser.find_elements(By.CSS_SELECTOR, "button.authorize")  # bearer auth for "try it out"
    _check_page(browser, "docs")
    # "try it": GET /healthz from the page (fetch to our own origin, allowed by the CSP)
    _, status = _try_it(browser, "operations-default-get_healthz")
    assert status == "200"
    log = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in log if "Content Security Policy" in m], log


def test_case_list(browser, base):
    _open(browser, f"{base}/ui", "table.cases tbody tr")
    shown = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.cases tbody td:first-child a")}
    assert {f"IVC-00{i}" for i in range(1, 10)} <= shown
    _check_page(browser, "case-list")


def test_case_page_timeline_lists_the_surgery_at_its_date(browser, base):
    cases = requests.get(f"{base}/cases", timeout=30).json()["cases"]
    ref = next(c["id"] for c in cases if c["case_id"] == "IVC-002")
    stored = requests.get(f"{base}/cases/{ref}", timeout=30).json()  # the oracle: the case as stored
    _open(browser, f"{base}/ui/cases/{ref}", "ol.timeline")
    surgeries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.event-surgery .when")]
    assert surgeries == [s["date"] for s in stored["surgery"]]
    assert browser.find_elements(By.CSS_SELECTOR, "table.resources tbody tr")
    _check_page(browser, "case")


def test_series_page_kaplan_meier(browser, base):
    summary = requests.get(f"{base}/registry/summary?{EVERY_CONSENT}", timeout=60).json()
    _open(browser, f"{base}/ui/series?{EVERY_CONSENT}", "svg.km")
    curves = browser.find_elements(By.CSS_SELECTOR, "svg.km")
    assert len(curves) == 2
    for key, curve in (("overall_survival", curves[0]), ("disease_free_survival", curves[1])):
        assert curve.find_element(By.XPATH, "./ancestor::section").get_attribute("id") == key
        at_risk = [t.text for t in curve.find_elements(By.CSS_SELECTOR, "text.at-risk")]
        assert at_risk[0] == str(summary["kaplan_meier"][key]["n"])  # everyone is at risk at 0
        assert curve.find_elements(By.CSS_SELECTOR, "polyline.curve")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Data as of" in page and "consent = unknown" in page
    _check_page(browser, "series")


def test_with_auth_on_the_console_says_sign_in_is_not_configured(browser, guarded):
    browser.get(f"{guarded}/ui")
    heading = WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert heading.text.startswith("401")
    assert "not configured" in browser.find_element(By.TAG_NAME, "main").text
    assert not browser.find_elements(By.CSS_SELECTOR, "table.cases")
    _check_page(browser, "console-401")


def test_try_it_with_a_bearer_token_through_authorize(browser, guarded):
    _open(browser, f"{guarded}/docs", ".swagger-ui .opblock")
    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".auth-container input"))
    )
    field.send_keys(token())
    browser.find_element(By.CSS_SELECTOR, ".auth-container .auth-btn-wrapper .authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".auth-container .auth-btn-wrapper .btn-done").click()
    operation, status = _try_it(browser, "operations-default-get_cases")
    assert status == "200"  # without the token it is 401
    curl = operation.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert "Authorization: Bearer " in curl

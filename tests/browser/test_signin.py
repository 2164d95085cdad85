"""Console sign-in in a real headless Chromium (issue 16): ``ivclms serve`` with OpenID Connect pointed at
the harness's identity provider (mock-oauth2-server at IVCLMS_TEST_OAUTH_URL, its interactive login
form), a user signing in as they would and landing on the case list, then signing out.

The console is opened as ``http://localhost:<port>`` and the provider answers on ``127.0.0.1``: two
different sites, as in a hospital, so the provider's redirect back is cross-site and the SameSite=Strict
session cookie could not ride on it; the test proves the sign-in still ends on the console signed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service.case_files import EXAMPLE_SERIES
from tests.browser.conftest import WAIT_S, _check_page, _healthy, _open
from tests.serving import Serve
from tests.tokens import token

pytestmark = pytest.mark.integration

CLIENT_ID = "ivclms-console"
CLAIMS = {"scope": "system/*.rs", "ivclms_roles": ["registry"], "name": "Dr Alice Reader"}


@pytest.fixture(scope="module")
def issuer() -> str:
    value = os.environ.get("IVCLMS_TEST_OAUTH_URL")
    if not value:
        pytest.fail("IVCLMS_TEST_OAUTH_URL is not set: run these tests through scripts/test")
    return value.rstrip("/") + "/ivclms-console"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, issuer: str) -> Iterator[str]:
    settings = {"IVCLMS_OIDC_ISSUER": issuer, "IVCLMS_OIDC_CLIENT_ID": CLIENT_ID}
    server = Serve(tmp_path_factory.mktemp("signin"), settings, _healthy)
    try:
        resp = requests.post(
            f"http://127.0.0.1:{server.port}/cases/import",
            data=EXAMPLE_SERIES.read_bytes(),
            headers={"Content-Type": "text/csv", "Authorization": f"Bearer {token()}"},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        yield f"http://localhost:{server.port}"
    finally:
        server.stop()


def _at_login_form(browser: webdriver.Chrome, issuer: str) -> None:
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.NAME, "username")))
    assert browser.current_url.startswith(f"{issuer}/authorize?")


def test_sign_in_lands_on_the_case_list_and_sign_out_ends_it(browser, console, issuer):
    browser.get(f"{console}/ui?status=active")
    _at_login_form(browser, issuer)  # sent to the identity provider, not shown an error
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "claims").send_keys(json.dumps(CLAIMS))
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    user = WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "header .who .user"))
    )
    assert user.text == "Dr Alice Reader"
    assert browser.current_url == f"{console}/ui?status=active"  # back where the user was going
    assert browser.find_elements(By.CSS_SELECTOR, 'a[href^="/ui/cases/"]')
    session = next(c for c in browser.get_cookies() if c["name"] == "ivclms_session")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    _check_page(browser, "signin-case-list")

    _open(browser, f"{console}/ui/series", "header .who .user")  # the session carries on
    browser.find_element(By.CSS_SELECTOR, "header .who button[type=submit]").click()
    heading = WebDriverWait(browser, WAIT_S).until(
        ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Signed out")
    )
    assert heading
    assert not browser.find_elements(By.CSS_SELECTOR, "header .who")
    _check_page(browser, "signin-signed-out")

    browser.get(f"{console}/ui")
    _at_login_form(browser, issuer)  # signed out: the console asks for sign-in again


def test_a_stale_sign_in_answer_is_a_readable_400_page(browser, console, issuer):
    """The provider's answer with a state that is not this browser's: an error page, checked like every
    page, that offers to start again."""
    _open(browser, f"{console}/ui/callback?code=x&state=not-this-one", "h1")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("400")
    _check_page(browser, "signin-error")

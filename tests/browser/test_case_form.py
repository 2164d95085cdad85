"""Entering a case through the generated form in a real headless Chromium (issue 16): a bad field is
reported next to it, fixed, saved; the case is then found in the list and its timeline opened. axe-core
checks the form as first shown and with its errors (no serious or critical violation); screenshots go
to ``.run/screenshots/``. The form works without script: nothing here runs any."""

from __future__ import annotations

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import WAIT_S, _check_page, _open

CASE_ID = "IVC-FORM-1"
TYPED = {
    "case_id": CASE_ID,
    "source_system": "urn:ivclms:example:hospital-a",
    "institution": "Form Entry Hospital",
    "patient.identifier.system": "urn:ivclms:example:mrn",
    "patient.identifier.value": "MRN-FORM-1",
    "patient.birth_date": "1958-07",
    "diagnosis.date": "2020-03-15",
    "outcome.last_contact": "2021-13-01",  # no 13th month: the one bad field
}
CHOSEN = {
    "patient.sex": "female",
    "diagnosis.basis": "core_needle_biopsy",
    "diagnosis.ivc_segment_from": "II",
    "diagnosis.ivc_segment_to": "III",
    "outcome.vital_status": "alive",
}


def _by_name(browser, name: str):
    return browser.find_element(By.NAME, name)


def _save(browser) -> None:
    browser.find_element(By.CSS_SELECTOR, "form.case-form button[type=submit]:not([name])").click()


def test_enter_a_case_see_the_field_error_fix_it_and_find_it(browser, base):
    _open(browser, f"{base}/ui", "table.cases")
    browser.find_element(By.LINK_TEXT, "New case").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.case-form")))
    _check_page(browser, "case-form")
    for name, value in TYPED.items():
        _by_name(browser, name).send_keys(value)
    for name, value in CHOSEN.items():
        Select(_by_name(browser, name)).select_by_value(value)
    _save(browser)

    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".error-summary")))
    field = _by_name(browser, "outcome.last_contact")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("value") == "2021-13-01"  # what was typed is still there
    described = field.get_attribute("aria-describedby").split()
    messages = [browser.find_element(By.ID, i) for i in described if i.endswith("-error")]
    assert len(messages) == 1 and "month" in messages[0].text
    # next to its field: in the same field block, and the only field marked invalid
    block = field.find_element(By.XPATH, "./ancestor::div[contains(@class, 'field')][1]")
    assert messages[0].find_element(By.XPATH, "./ancestor::div[contains(@class, 'field')][1]") == block
    invalid = browser.find_elements(By.CSS_SELECTOR, "[aria-invalid=true]")
    assert [e.get_attribute("name") for e in invalid] == ["outcome.last_contact"]
    summary_link = browser.find_element(By.CSS_SELECTOR, ".error-summary a")
    assert summary_link.get_attribute("href").endswith("#" + field.get_attribute("id"))
    assert _by_name(browser, "case_id").get_attribute("value") == CASE_ID
    _check_page(browser, "case-form-errors")

    field.clear()
    field.send_keys("2021-12-01")
    _save(browser)
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "ol.timeline")))
    assert "/ui/cases/" in browser.current_url and CASE_ID in browser.find_element(By.TAG_NAME, "h1").text
    ref = browser.current_url.rsplit("/", 1)[-1]
    stored = requests.get(f"{base}/cases/{ref}", timeout=30).json()  # the oracle: the case as stored
    assert stored["outcome"]["last_contact"] == "2021-12-01"
    assert stored["diagnosis"]["ivc_segment_to"] == "III"
    assert stored["diagnosis"]["hepatic_vein_involvement"] is None  # left empty: not recorded
    _check_page(browser, "case-form-saved")

    _open(browser, f"{base}/ui", "table.cases")
    browser.find_element(By.LINK_TEXT, CASE_ID).click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "ol.timeline")))
    assert browser.current_url.endswith(f"/ui/cases/{ref}")
    dates = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.timeline .when")]
    assert stored["diagnosis"]["date"] in dates
    assert browser.find_element(By.LINK_TEXT, "Edit").get_attribute("href").endswith(f"/ui/cases/{ref}/edit")
    _check_page(browser, "case-form-timeline")


def test_edit_adds_an_operation_without_script_and_saves_a_new_version(browser, base):
    cases = requests.get(f"{base}/cases", timeout=30).json()["cases"]
    row = next(c for c in cases if c["case_id"] == "IVC-002")
    _open(browser, f"{base}/ui/cases/{row['id']}", "ol.timeline")
    browser.find_element(By.LINK_TEXT, "Edit").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.case-form")))
    stored = requests.get(f"{base}/cases/{row['id']}", timeout=30).json()
    count = len(stored["surgery"])
    assert _by_name(browser, "surgery.0.date").get_attribute("value") == stored["surgery"][0]["date"]
    assert not browser.find_elements(By.NAME, f"surgery.{count}.date")
    browser.find_element(By.CSS_SELECTOR, "button[name=_add][value=surgery]").click()
    new_date = WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.NAME, f"surgery.{count}.date"))
    )
    assert browser.current_url.endswith(f"#g-surgery-{count}")  # the page opens at the new item
    _check_page(browser, "case-form-edit")
    new_date.send_keys("unknown")
    Select(_by_name(browser, f"surgery.{count}.resection")).select_by_value("tumour_excision")
    Select(_by_name(browser, f"surgery.{count}.ivc_management.method")).select_by_value("none")
    _save(browser)
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "ol.timeline")))
    after = requests.get(f"{base}/cases/{row['id']}", timeout=30)
    assert after.headers["ETag"] == f'W/"{row["version"] + 1}"'
    added = after.json()["surgery"][count]
    assert (added["date"], added["resection"], added["ivc_management"]["method"]) == (
        "unknown",
        "tumour_excision",
        "none",
    )
    assert after.json()["surgery"][:count] == stored["surgery"]  # the others as they were

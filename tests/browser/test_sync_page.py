"""The console's sync page in a real headless Chromium (issue 16): retry a dead letter, look at a pull
conflict side by side, take the server's side of one and keep ours of another.

``ivclms serve`` runs on loopback with authentication off and no FHIR server (so nothing is sent and a
retried entry stays pending); two cases are posted through the API, then a dead letter and two
conflicts are written into the served instance's SQLite file the way the worker and the pull leave them
(``tests.sync_seed``). What the clicks changed is checked through the API, not the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service.db import make_engine
from service.settings import Settings
from tests import sync_seed
from tests.browser.conftest import WAIT_S, _check_page, _healthy, _open
from tests.serving import Serve
from tests.unit.sync.conftest import example

THEIRS = "2025-02-01"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("sync-page")
    server = Serve(tmp, {"IVCLMS_AUTH_DISABLED": "true"}, _healthy)
    url = f"http://127.0.0.1:{server.port}"
    engine = make_engine(Settings(data_dir=Path(tmp / "data"), auth_disabled=True, db_url=""))
    try:
        refs = []
        for index in (0, 1):
            answer = requests.post(f"{url}/cases", json=example(index), timeout=60)
            assert answer.status_code == 201, answer.text
            refs.append(answer.headers["Location"].rsplit("/", 1)[1])
        yield {
            "url": url,
            "refs": refs,
            "dead": sync_seed.dead_letter(engine, refs[0], 1),
            "theirs": sync_seed.outcome_conflict(engine, refs[0], THEIRS),
            "ours": sync_seed.outcome_conflict(engine, refs[1], THEIRS),
        }
    finally:
        engine.dispose()
        server.stop()


def _status(url: str) -> dict[str, object]:
    answer = requests.get(f"{url}/sync/status", timeout=30)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def _case(url: str, ref: str) -> dict[str, object]:
    answer = requests.get(f"{url}/cases/{ref}", timeout=30)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def _notice(browser, text: str) -> str:
    """Wait for the page that the form's 303 leads to, showing a message containing ``text``."""
    WebDriverWait(browser, WAIT_S).until(
        lambda d: any(text in n.text for n in d.find_elements(By.CSS_SELECTOR, ".notice"))
    )
    return str(browser.find_element(By.CSS_SELECTOR, ".notice").text)


def test_retry_a_dead_letter(browser, seeded):
    url, dead = seeded["url"], seeded["dead"]
    _open(browser, f"{url}/ui/sync", "table.dead tbody tr")
    row = browser.find_element(By.ID, f"dead-{dead}")
    assert "Profile not loaded" in row.text  # the server's OperationOutcome
    _check_page(browser, "sync")

    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    assert f"Outbox entry {dead} is pending" in _notice(browser, "is pending")
    assert not browser.find_elements(By.ID, f"dead-{dead}")
    status = _status(url)
    assert status["dead"] == [] and status["depth"]["dead"] == 0  # type: ignore[index]


def test_take_the_servers_side_of_a_conflict(browser, seeded):
    url, conflict, ref = seeded["url"], seeded["theirs"], seeded["refs"][0]  # type: ignore[index]
    ours = _case(url, ref)["outcome"]["last_contact"]  # type: ignore[index]
    assert ours != THEIRS
    _open(browser, f"{url}/ui/sync", f"#conflict-{conflict}")
    details = browser.find_element(By.ID, f"conflict-{conflict}")
    table = details.find_element(By.CSS_SELECTOR, "table.side-by-side")
    assert not table.is_displayed()  # closed until opened
    details.find_element(By.TAG_NAME, "summary").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: table.is_displayed())
    changed = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr.changed")
    ]
    assert ["effectiveDateTime", f'"{ours}"', f'"{THEIRS}"', "changed"] in changed  # both sides
    _check_page(browser, "sync-conflict")

    details.find_element(By.XPATH, './/button[normalize-space()="Take the server\'s"]').click()

    _notice(browser, f"Conflict {conflict}: took the server's side")
    assert _case(url, ref)["outcome"]["last_contact"] == THEIRS  # type: ignore[index]
    open_ids = [c["id"] for c in _status(url)["conflicts"]]  # type: ignore[attr-defined]
    assert conflict not in open_ids
    _check_page(browser, "sync-after-resolve")


def test_keep_ours_of_a_conflict(browser, seeded):
    url, conflict, ref = seeded["url"], seeded["ours"], seeded["refs"][1]  # type: ignore[index]
    before = _case(url, ref)
    pending = _status(url)["depth"]["pending"]  # type: ignore[index]
    _open(browser, f"{url}/ui/sync", f"#conflict-{conflict}")
    details = browser.find_element(By.ID, f"conflict-{conflict}")
    details.find_element(By.TAG_NAME, "summary").click()
    button = details.find_element(By.XPATH, './/button[normalize-space()="Keep ours"]')
    WebDriverWait(browser, WAIT_S).until(ec.element_to_be_clickable(button))
    button.click()

    _notice(browser, f"Conflict {conflict}: kept the service's side")
    assert _case(url, ref) == before  # the case is unchanged ...
    status = _status(url)
    assert status["depth"]["pending"] == pending + 1  # type: ignore[index]  # ... and queued to be sent again
    assert conflict not in [c["id"] for c in status["conflicts"]]  # type: ignore[attr-defined]

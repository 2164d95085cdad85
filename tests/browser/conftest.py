"""Shared by the browser tests: a headless Chromium, opening a page and waiting for it, and the check of
every page (screenshot, no CSP violation in the console log, axe-core: no serious or critical issue)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "tests" / "clients" / "js" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / ".run" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 30
"""Upper bound for a page to show what is awaited (a condition polled, not a timed assertion)."""


def _healthy(port: int) -> bool:
    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: webdriver.Chrome, url: str, ready: str) -> None:
    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, ready)))


def _check_page(driver: webdriver.Chrome, name: str) -> None:
    """Screenshot, no CSP violation in the console log, and axe-core: no serious or critical issue."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    log = [entry["message"] for entry in driver.get_log("browser")]
    assert not [m for m in log if "Content Security Policy" in m], log
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations), e => done(String(e)));"
    )
    assert isinstance(violations, list), violations
    bad = [(v["id"], v["impact"], v["help"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {bad}"

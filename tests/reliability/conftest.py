"""Reliability suite: a fresh app per test module on a temporary SQLite database, the invariants every
answer must keep, and a count of the inputs tried per target (written to
``.run/reports/reliability-inputs.txt`` when the session ends).

Bounded and self-stopping: hypothesis example counts are fixed, live servers bind 127.0.0.1 on an
ephemeral port and are shut down by their fixture.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service import create_app
from service.settings import Settings
from service.store.tables import case_versions, cases, outbox, resources
from tests.support.auth import TEST_SECRET
from tests.tokens import token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-0*.json"))
SERIES = ROOT / "examples" / "ivclms-case-series.csv"
REPORT = ROOT / ".run" / "reports" / "reliability-inputs.txt"
NOW = "2026-01-01T00:00:00Z"
UNREACHABLE_FHIR = "http://127.0.0.1:9/fhir"
"""Sync on (so accepted writes fill the outbox) towards the discard port; nothing here delivers."""

INPUTS: Counter[str] = Counter()
"""Requests sent per target, for the summary."""

COUNTED = (cases, case_versions, outbox, resources)
_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|site-packages|\.py:\d+")
"""What a leaked stack trace looks like (exception messages are checked where one is forced)."""


def example(n: int = 0) -> dict:
    return json.loads(EXAMPLES[n].read_text())


def auth(scope: str = "system/*.cruds") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope)}"}


def make_settings(data_dir: Path, **changes: object) -> Settings:
    return Settings(data_dir=data_dir, auth_jwt_secret=TEST_SECRET, **changes)  # type: ignore[arg-type]


def build(data_dir: Path, **changes: object) -> Flask:
    return create_app(make_settings(data_dir, **changes))


def row_counts(app: Flask) -> dict[str, int]:
    engine = app.extensions["ivclms"].engine
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in COUNTED}


def check_answer(resp, what: str = "") -> None:
    """No 5xx; every non-2xx is an OperationOutcome with issues; no stack trace in any body."""
    label = f"{what}: {resp.status_code} {resp.get_data(as_text=True)[:300]!r}"
    assert resp.status_code < 500, label
    text = resp.get_data(as_text=True)
    assert not _TRACE.search(text), label
    if resp.status_code >= 300 and resp.status_code != 304:
        if resp.mimetype == "text/html" and " /ui/" in what:
            return  # a console form answers a browser's post with a page: the form again, or a 303
        assert resp.mimetype == "application/fhir+json", label
        body = json.loads(text)
        assert body["resourceType"] == "OperationOutcome", label
        assert isinstance(body["issue"], list) and body["issue"], label
        assert all(i.get("severity") and i.get("code") for i in body["issue"]), label


class Probe:
    """Sends one request, counts it under ``target``, checks the invariants and that a rejected
    request stored nothing."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()

    def send(self, target: str, method: str, path: str, **kwargs: object):
        headers = {**auth(), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        before = row_counts(self.app)
        resp = self.client.open(path, method=method, headers=headers, **kwargs)
        INPUTS[target] += 1
        check_answer(resp, f"{method} {path}")
        if resp.status_code >= 400:
            assert row_counts(self.app) == before, f"{method} {path} {resp.status_code} stored rows"
        return resp


@pytest.fixture(scope="module")
def rel_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = build(tmp_path_factory.mktemp("rel"), db_url="", fhir_url=UNREACHABLE_FHIR)
    yield app
    app.extensions["ivclms"].engine.dispose()


@pytest.fixture(scope="module")
def probe(rel_app: Flask) -> Probe:
    return Probe(rel_app)


@pytest.fixture(scope="session", autouse=True)
def _inputs_report() -> Iterator[None]:
    started = time.perf_counter()
    yield
    if not INPUTS:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{target}\t{n}" for target, n in sorted(INPUTS.items())]
    lines.append(f"total\t{sum(INPUTS.values())}")
    lines.append(f"seconds\t{time.perf_counter() - started:.1f}")
    REPORT.write_text("\n".join(lines) + "\n")

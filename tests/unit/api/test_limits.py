"""Issue 12, finding 4: cost limits answered before the heavy work, naming the limit and its setting."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from service import bulk_export, create_app
from service.case_files import EXAMPLE_SERIES
from service.errors import TooMany
from service.limits import Limits, csv_data_rows
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES
from tests.tokens import bearer

NOW = "2026-01-01T00:00:00Z"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _app(settings, **limits):
    application = create_app(settings.replace(export_in_process=False, **limits))
    application.config["TESTING"] = True
    return application


@pytest.fixture
def forbid_heavy_work(monkeypatch):
    """Validation and mapping fail the test if they run: a refused request must not reach them."""

    def boom(*_args, **_kwargs):
        raise AssertionError("validation or mapping ran for a request over the limit")

    for target in (
        "service.intake.validate_case",
        "service.intake.case_to_bundle",
        "service.case_files.case_to_bundle",
        "service.model.csv_flat.validate_case",
        "service.bundle_intake.validate_case",
        "service.bundle_intake.profile_bundle",
    ):
        monkeypatch.setattr(target, boom)


def _outcome(resp, status: int, setting: str) -> str:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(i["diagnostics"] for i in body["issue"])
    assert setting in text, text
    return text


def test_finding_4_a_case_with_100000_labs_is_refused_before_mapping(client, forbid_heavy_work):
    case = json.loads(EXAMPLES[0].read_text())
    lab = {"test": "creatinine", "value": 0.8, "unit": "mg/dL", "date": "2019-05-06"}
    case["diagnosis"]["labs"] = [dict(lab) for _ in range(100_000)]
    body = json.dumps(case, separators=(",", ":"))
    assert len(body) < 10 * 1024 * 1024  # under the body limit: the cost limit is what refuses it
    resp = client.post("/cases", data=body, headers=_auth(), content_type="application/json")
    text = _outcome(resp, 413, "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE")
    assert "1000" in text
    assert resp.get_json()["issue"][0]["code"] == "too-costly"
    assert client.get("/cases", headers=_auth()).get_json()["cases"] == []  # nothing stored


def test_finding_4_a_long_array_of_values_is_refused_before_validation(client, forbid_heavy_work):
    case = json.loads(EXAMPLES[0].read_text())
    case["diagnosis"]["tumour_size"][0]["dimensions_cm"] = [1.0] * 200_000
    body = json.dumps(case)
    resp = client.post("/cases", data=body, headers=_auth(), content_type="application/json")
    _outcome(resp, 413, "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE")


def test_finding_4_a_mapped_bundle_over_the_limit_is_refused(settings):
    """Example 1 holds 36 array items and maps to 39 resources: within the pre-check, over the exact
    count."""
    app = _app(settings, limits_max_resources_per_case=37)
    client = app.test_client()
    resp = client.post(
        "/cases", data=EXAMPLES[0].read_text(), headers=_auth(), content_type="application/json"
    )
    text = _outcome(resp, 413, "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE")
    assert "39 resources" in text
    fits = _app(settings, limits_max_resources_per_case=39).test_client()
    ok = fits.post("/cases", data=EXAMPLES[0].read_text(), headers=_auth(), content_type="application/json")
    assert ok.status_code == 201


def test_finding_4_a_csv_over_the_cases_limit_is_refused_before_any_row_is_read(settings, forbid_heavy_work):
    client = _app(settings, limits_max_cases_per_import=8).test_client()
    series = EXAMPLE_SERIES.read_bytes()
    assert csv_data_rows(series.decode(), 100) == 9
    resp = client.post("/cases/import", data=series, headers=_auth(), content_type="text/csv")
    _outcome(resp, 413, "IVCLMS_LIMITS_MAX_CASES_PER_IMPORT")


def test_csv_rows_are_counted_as_records_not_lines():
    text = 'case_id,institution\r\na,"two\nlines"\r\n\r\nb,x\r\n'
    assert csv_data_rows(text, 100) == 2
    assert csv_data_rows(text, 0) == 1  # stops past the limit


def _bundle(*numbers: int) -> dict:
    entries = []
    for n in numbers:
        case = validate_case(json.loads(EXAMPLES[n].read_text()))
        entries += case_to_bundle(case, now=NOW)["entry"]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_finding_4_a_bundle_over_the_limits_is_refused_before_validation(
    settings, forbid_heavy_work, monkeypatch
):
    called = []
    monkeypatch.setattr("service.api.fhir_intake.errors", lambda *_: called.append(1) or [])
    client = _app(settings, limits_max_cases_per_import=2).test_client()
    three = _bundle(0, 1, 2)
    resp = client.post("/fhir", data=json.dumps(three), headers=_auth(), content_type="application/fhir+json")
    _outcome(resp, 413, "IVCLMS_LIMITS_MAX_CASES_PER_IMPORT")
    small = _app(settings, limits_max_resources_per_case=20).test_client()
    one = _bundle(0)
    resp = small.post("/fhir", data=json.dumps(one), headers=_auth(), content_type="application/fhir+json")
    text = _outcome(resp, 413, "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE")
    assert "Bundle.entry[" in text
    both = _app(settings, limits_max_resources_per_case=5, limits_max_cases_per_import=5).test_client()
    resp = both.post("/fhir", data=json.dumps(three), headers=_auth(), content_type="application/fhir+json")
    _outcome(resp, 413, "IVCLMS_LIMITS_MAX_RESOURCES_PER_CASE x IVCLMS_LIMITS_MAX_CASES_PER_IMPORT")
    assert called == []


def test_finding_4_a_client_has_at_most_the_configured_exports_at_once(settings):
    client = _app(settings, limits_max_active_exports=2).test_client()
    for _ in range(2):
        assert client.get("/fhir/$export", headers={**bearer(sub="a"), **ASYNC}).status_code == 202
    refused = client.get("/fhir/$export", headers={**bearer(sub="a"), **ASYNC})
    _outcome(refused, 429, "IVCLMS_LIMITS_MAX_ACTIVE_EXPORTS")
    assert refused.get_json()["issue"][0]["code"] == "throttled"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.get("/fhir/$export", headers={**bearer(sub="b"), **ASYNC}).status_code == 202  # per client


def test_finding_4_simultaneous_kick_offs_do_not_pass_the_limit(settings):
    from concurrent.futures import ThreadPoolExecutor

    app = _app(settings, limits_max_active_exports=2)
    ctx = app.extensions["ivclms"]
    files = bulk_export.files_dir(ctx.settings.data_dir)

    def kick(_: int) -> str:
        try:
            bulk_export.kick_off(
                ctx.engine,
                level="system",
                types=("Patient",),
                since=None,
                request_url="http://localhost/fhir/$export",
                principal="owner-a",
                now=datetime.now(UTC),
                limits=Limits(max_active_exports=2),
                files=files,
            )
            return "accepted"
        except TooMany:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(kick, range(16)))
    assert answers.count("accepted") == 2, answers
    ctx.engine.dispose()


def test_finding_4_export_bytes_kept_per_client(settings):
    app = _app(settings)
    client = app.test_client()
    assert (
        client.post(
            "/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=_auth(), content_type="text/csv"
        ).status_code
        == 200
    )
    ctx = app.extensions["ivclms"]
    files = bulk_export.files_dir(ctx.settings.data_dir)
    now = datetime.now(UTC)

    def kick(limits: Limits | None) -> str:
        return bulk_export.kick_off(
            ctx.engine,
            level="system",
            types=("Patient",),
            since=None,
            request_url="http://localhost/fhir/$export",
            principal="owner-a",
            now=now,
            limits=limits,
            files=files,
        )

    first = kick(None)
    bulk_export.run_pending(ctx.engine, files, now=lambda: now, ttl=timedelta(hours=1))
    kept = bulk_export.kept_bytes(ctx.engine, "owner-a", files, now)
    assert kept > 0 and bulk_export.get(ctx.engine, first).state == "done"
    with pytest.raises(TooMany) as refused:
        kick(Limits(max_export_bytes=kept))
    assert "IVCLMS_LIMITS_MAX_EXPORT_BYTES" in str(refused.value)
    assert 3500 <= refused.value.retry_after <= 3601  # until the kept files expire
    # Within the limit at kick-off, but its files would pass it: the job fails and leaves no file.
    second = kick(Limits(max_export_bytes=kept + 10))
    bulk_export.run_pending(
        ctx.engine, files, now=lambda: now, ttl=timedelta(hours=1), limits=Limits(max_export_bytes=kept + 10)
    )
    job = bulk_export.get(ctx.engine, second)
    assert job.state == "failed" and "IVCLMS_LIMITS_MAX_EXPORT_BYTES" in (job.error or "")
    assert not (files / second).exists()
    assert bulk_export.kept_bytes(ctx.engine, "owner-b", files, now) == 0
    ctx.engine.dispose()


def test_limits_must_be_positive(settings):
    from service.settings import SettingsError

    with pytest.raises(SettingsError, match="IVCLMS_LIMITS_MAX_ACTIVE_EXPORTS"):
        settings.replace(limits_max_active_exports=0)


def test_the_example_cases_fit_the_default_limits():
    defaults = Limits()
    for path in EXAMPLES:
        case = json.loads(path.read_text())
        mapped = case_to_bundle(validate_case(copy.deepcopy(case)), now=NOW)
        assert len(mapped["entry"]) * 10 < defaults.max_resources_per_case

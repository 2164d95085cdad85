"""Bulk Data $export: kick-off, polling, manifest, files, filters, cancel and expiry."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from service import bulk_export, create_app
from service.case_files import EXAMPLE_SERIES
from service.search import READ_TYPES
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES
from tests.tokens import token

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


def _load(client) -> None:
    resp = client.post(
        "/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=_auth(), content_type="text/csv"
    )
    assert resp.status_code == 200


def _run(app, now=None) -> int:
    ctx = app.extensions["ivclms"]
    clock = (lambda: now) if now else ctx.intake.clock
    return bulk_export.run_pending(
        ctx.engine, bulk_export.files_dir(ctx.settings.data_dir), now=clock, ttl=timedelta(hours=1)
    )


def _kick(client, url="/fhir/$export", headers=None):
    return client.get(url, headers={**_auth(), **ASYNC, **(headers or {})})


def _status_path(resp) -> str:
    return resp.headers["Content-Location"].split("localhost", 1)[1]


def _index_counts(client) -> dict[str, int]:
    counts = {}
    for kind in READ_TYPES:  # Provenance too: a system export SHALL include it (test_bulk_v2.py)
        counts[kind] = client.get(f"/fhir/{kind}?_summary=count", headers=_auth()).get_json()["total"]
    return {k: v for k, v in counts.items() if v}


def test_system_export_writes_every_resource_once_per_type(app, client):
    _load(client)
    kick = _kick(client)
    assert kick.status_code == 202
    status = _status_path(kick)
    pending = client.get(status, headers=_auth())
    assert pending.status_code == 202 and "X-Progress" in pending.headers and pending.headers["Retry-After"]
    assert _run(app) == 1
    done = client.get(status, headers=_auth())
    assert done.status_code == 200
    manifest = done.get_json()
    assert manifest["requiresAccessToken"] is True and manifest["request"].endswith("/fhir/$export")
    assert {o["type"]: o["count"] for o in manifest["output"]} == _index_counts(client)
    for output in manifest["output"]:
        path = output["url"].split("localhost", 1)[1]
        resp = client.get(path, headers=_auth())
        assert resp.status_code == 200 and resp.mimetype == "application/fhir+ndjson"
        lines = resp.get_data(as_text=True).splitlines()
        resp.close()
        resources = [json.loads(line) for line in lines]
        assert len(resources) == output["count"] == len({r["id"] for r in resources})
        assert {r["resourceType"] for r in resources} == {output["type"]}
        assert client.get(path).status_code == 401


def test_type_and_since_filters(app, client):
    _load(client)
    kick = _kick(client, "/fhir/$export?_type=Patient,Condition")
    _run(app)
    manifest = client.get(_status_path(kick), headers=_auth()).get_json()
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Condition"}
    later = _kick(client, "/fhir/$export?_since=2999-01-01T00:00:00Z")
    _run(app)
    assert client.get(_status_path(later), headers=_auth()).get_json()["output"] == []


def test_patient_level_export(app, client):
    _load(client)
    kick = _kick(client, "/fhir/Patient/$export?_type=Patient")
    _run(app)
    manifest = client.get(_status_path(kick), headers=_auth()).get_json()
    assert manifest["output"] == [
        {"type": "Patient", "url": manifest["output"][0]["url"], "count": len(EXAMPLES)}
    ]


@pytest.mark.parametrize(
    ("url", "headers", "expression"),
    [
        ("/fhir/$export", {"Prefer": ""}, "Prefer"),
        ("/fhir/$export?_type=Basic", {}, "_type"),
        ("/fhir/$export?_outputFormat=text/csv", {}, "_outputFormat"),
        ("/fhir/$export?_since=yesterday", {}, "_since"),
    ],
)
def test_bad_kick_offs_are_400(client, url, headers, expression):
    resp = _kick(client, url, headers)
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == [expression]


def test_cancel_and_expiry(app, client):
    _load(client)
    queued = _kick(client)
    assert client.delete(_status_path(queued), headers=_auth()).status_code == 202
    _run(app)
    assert client.get(_status_path(queued), headers=_auth()).status_code == 404
    finished = _kick(client)
    _run(app)
    status = _status_path(finished)
    assert client.get(status, headers=_auth()).status_code == 200
    folder = bulk_export.files_dir(app.extensions["ivclms"].settings.data_dir)
    assert any(folder.iterdir())
    _run(app, now=datetime.now(UTC) + timedelta(days=2))
    assert client.get(status, headers=_auth()).status_code == 404
    assert not any(folder.iterdir())


def test_another_client_cannot_see_a_job(app, client):
    kick = _kick(client)
    other = {"Authorization": f"Bearer {token()}"}
    import jwt

    from tests.support.auth import TEST_SECRET

    stranger = jwt.encode(
        {"sub": "someone-else", "scope": "system/*.rs", "exp": int(time.time()) + 300}, TEST_SECRET
    )
    assert client.get(_status_path(kick), headers=other).status_code == 202
    assert client.get(_status_path(kick), headers={"Authorization": f"Bearer {stranger}"}).status_code == 404


def test_in_process_runner_finishes_without_a_worker(settings):
    app = create_app(settings)  # export_in_process defaults to true
    client = app.test_client()
    _load(client)
    status = _status_path(_kick(client))
    deadline = time.monotonic() + 60
    while (resp := client.get(status, headers=_auth())).status_code == 202:
        assert time.monotonic() < deadline, "the background export did not finish in 60 s"
        time.sleep(0.05)
    assert resp.status_code == 200 and resp.get_json()["output"]
    app.extensions["ivclms"].engine.dispose()


def test_cli_export_writes_the_same_files(tmp_path, db_url):
    from click.testing import CliRunner

    from service.cli import main
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, auth_disabled=True, db_url=db_url))
    _load(app.test_client())
    env = {"IVCLMS_AUTH_DISABLED": "true", "IVCLMS_DATA_DIR": str(tmp_path), "IVCLMS_DB_URL": db_url}
    result = CliRunner().invoke(
        main, ["export", "--type", "Patient,Condition", "--out", str(tmp_path / "out")], env=env
    )
    assert result.exit_code == 0, result.output
    patients = (tmp_path / "out" / "Patient.ndjson").read_text().splitlines()
    assert len(patients) == len(EXAMPLES)
    assert {json.loads(line)["resourceType"] for line in patients} == {"Patient"}
    assert not (tmp_path / "out" / "Observation.ndjson").exists()
    bad = CliRunner().invoke(main, ["export", "--type", "Basic", "--out", str(tmp_path / "x")], env=env)
    assert bad.exit_code == 2
    app.extensions["ivclms"].engine.dispose()


def _files(client, status_path: str) -> dict[str, set[str]]:
    manifest = client.get(status_path, headers=_auth()).get_json()
    files = {}
    for output in manifest["output"]:
        resp = client.get(output["url"].split("localhost", 1)[1], headers=_auth())
        files[output["type"]] = set(resp.get_data(as_text=True).splitlines())
        resp.close()
    return files


def test_a_job_holds_the_resources_as_they_were_at_its_transaction_time(app, client):
    """Changed and removed after the kick-off, before the worker runs the job: exported as they were."""
    moments = iter(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(1000))
    app.extensions["ivclms"].intake.clock = lambda: next(moments)  # every write and kick-off its instant
    case = next(c for c in map(json.loads, (p.read_text() for p in EXAMPLES)) if len(c["follow_up"]) > 1)
    headers = {**_auth(), "Content-Type": "application/json"}
    created = client.post("/cases", data=json.dumps(case), headers=headers)
    assert created.status_code == 201
    before = _kick(client)
    assert _run(app) == 1
    pending = _kick(client)  # queued; the worker has not run it yet

    case["follow_up"] = case["follow_up"][:1]  # the later visits' resources leave the case
    case["outcome"]["last_contact"] = "2024-02-01"  # the vital-status Observation changes
    path = "/cases/" + created.headers["Location"].rsplit("/", 1)[1]
    assert client.put(path, data=json.dumps(case), headers=headers).status_code == 200
    after = _kick(client)
    assert _run(app) == 2

    then, queued, now = (_files(client, _status_path(k)) for k in (before, pending, after))
    assert queued == then
    assert now != then
    assert sum(map(len, now.values())) < sum(map(len, then.values()))  # the removed visits are gone now


def test_finding_9_an_expired_export_is_gone_on_every_read_before_any_purge(app, client):
    _load(client)
    kick = _kick(client)
    status = _status_path(kick)
    _run(app)
    manifest = client.get(status, headers=_auth()).get_json()
    file_path = manifest["output"][0]["url"].split("localhost", 1)[1]
    served = client.get(file_path, headers=_auth())
    assert served.status_code == 200
    served.close()
    ctx = app.extensions["ivclms"]
    job = bulk_export.get(ctx.engine, status.rsplit("/", 1)[1])
    assert job.expires_at is not None
    ctx.intake.clock = lambda: job.expires_at  # the instant it expires; no worker has purged it
    first = client.get(file_path, headers=_auth())
    assert first.status_code == 410  # expired: not served, whether or not purged
    assert first.get_json()["issue"][0]["code"] == "deleted"
    # That read purged it (outside review: the files stayed on disk until the next kick-off): the
    # folder is gone and the job with it.
    folder = bulk_export.files_dir(ctx.settings.data_dir) / job.id
    assert not folder.exists()
    for path in (status, file_path):
        assert client.get(path, headers=_auth()).status_code == 404, path


def test_finding_17_export_files_are_0600_in_0700_folders(app, client):
    _load(client)
    status = _status_path(_kick(client))
    _run(app)
    files = bulk_export.files_dir(app.extensions["ivclms"].settings.data_dir)
    job_id = status.rsplit("/", 1)[1]
    assert files.stat().st_mode & 0o777 == 0o700
    assert (files / job_id).stat().st_mode & 0o777 == 0o700
    written = list((files / job_id).iterdir())
    assert written and all(p.stat().st_mode & 0o777 == 0o600 for p in written)
    db = app.extensions["ivclms"].settings.data_dir / "ivclms.sqlite3"
    if db.exists():  # the embedded database (not on PostgreSQL)
        assert db.stat().st_mode & 0o777 == 0o600

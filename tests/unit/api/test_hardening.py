"""Issue 12, findings 15 (Host header) and 17 (no-store, generic 401 bodies)."""

from __future__ import annotations

import json

import pytest

from service import bulk_export, create_app
from service.case_files import EXAMPLE_SERIES
from tests.support.auth import auth_headers as _auth
from tests.support.examples import EXAMPLES

PUBLIC = "https://ivclms.example.org"
EVIL = "evil.example"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def public_app(settings):
    application = create_app(settings.replace(http_public_base_url=PUBLIC, export_in_process=False))
    application.config["TESTING"] = True
    yield application
    application.extensions["ivclms"].engine.dispose()


def _urls(value: object) -> list[str]:
    """Every absolute URL in a JSON document."""
    found: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            found += _urls(item)
    elif isinstance(value, list):
        for item in value:
            found += _urls(item)
    elif isinstance(value, str) and value.startswith(("http://", "https://")):
        found.append(value)
    return found


def test_finding_15_every_absolute_link_comes_from_the_public_base_url(public_app):
    client = public_app.test_client()
    host = {"Host": EVIL}
    headers = {**_auth(), **host}
    loaded = client.post(
        "/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=headers, content_type="text/csv"
    )
    assert loaded.status_code == 200
    kick = client.get("/fhir/$export", headers={**headers, **ASYNC})
    assert kick.status_code == 202
    assert kick.headers["Content-Location"].startswith(f"{PUBLIC}/fhir/bulkstatus/")
    ctx = public_app.extensions["ivclms"]
    bulk_export.run_pending(
        ctx.engine, bulk_export.files_dir(ctx.settings.data_dir), now=ctx.intake.clock, ttl=ctx_ttl()
    )
    status = kick.headers["Content-Location"].removeprefix(PUBLIC)
    manifest = client.get(status, headers=headers).get_json()
    patient = client.get("/fhir/Patient?_count=2", headers=headers).get_json()
    pid = patient["entry"][0]["resource"]["id"]
    read = client.get(f"/fhir/Patient/{pid}", headers=headers)
    everything = client.get(f"/fhir/Patient/{pid}/$everything", headers=headers).get_json()
    audit = client.get("/fhir/AuditEvent?_count=1", headers=headers).get_json()
    metadata = client.get("/fhir/metadata", headers=host).get_json()
    urls = [*_urls([manifest, patient, everything, audit, metadata]), read.headers["Location"]]
    assert len(urls) > 10
    assert {"next" in {link["relation"] for link in doc["link"]} for doc in (patient, audit)} == {True}
    ours = [u for u in urls if not u.startswith(("http://hl7.org", "http://loinc.org", "http://snomed.info"))]
    wrong = [u for u in ours if EVIL in u or "localhost" in u]
    assert not wrong, wrong
    assert manifest["output"] and all(
        o["url"].startswith(f"{PUBLIC}/fhir/bulkfiles/") for o in manifest["output"]
    )
    assert all(e["fullUrl"].startswith(f"{PUBLIC}/fhir/") for e in patient["entry"])


def ctx_ttl():
    from datetime import timedelta

    return timedelta(hours=1)


def test_finding_15_without_a_public_base_url_an_untrusted_host_is_400(client):
    resp = client.get("/fhir/Patient", headers={**_auth(), "Host": EVIL})
    assert resp.status_code == 400
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/metadata", headers={"Host": EVIL}).status_code == 400
    kick = client.get("/fhir/$export", headers={**_auth(), **ASYNC, "Host": EVIL})
    assert kick.status_code == 400 and "Content-Location" not in kick.headers
    for trusted in ("localhost", "localhost:8080", "127.0.0.1:8080"):
        ok = client.get("/fhir/Patient", headers={**_auth(), "Host": trusted})
        assert ok.status_code == 200, trusted
        assert ok.get_json()["link"][0]["url"].startswith(f"http://{trusted}/fhir/Patient")


def test_finding_15_trusted_hosts_are_configurable(settings):
    app = create_app(settings.replace(http_trusted_hosts="ivclms.internal"))
    client = app.test_client()
    assert client.get("/fhir/metadata", headers={"Host": "ivclms.internal"}).status_code == 200
    assert client.get("/fhir/metadata", headers={"Host": "localhost"}).status_code == 400
    app.extensions["ivclms"].engine.dispose()


def test_finding_17_no_store_on_every_response_behind_authentication(client):
    posted = client.post(
        "/cases", data=EXAMPLES[0].read_text(), headers=_auth(), content_type="application/json"
    )
    ref = posted.headers["Location"]
    responses = {
        "POST /cases": posted,
        "GET case": client.get(ref, headers=_auth()),
        "search": client.get("/fhir/Patient", headers=_auth()),
        "error 404": client.get("/cases/nope", headers=_auth()),
        "401": client.get("/cases"),
        "registry": client.get("/registry/summary?format=json", headers=_auth()),
        "audit": client.get("/fhir/AuditEvent", headers=_auth()),
    }
    for name, resp in responses.items():
        assert resp.headers.get("Cache-Control") == "no-store", name
    assert "no-store" not in client.get("/healthz").headers.get("Cache-Control", "")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not.a.token",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # alg none
    ],
)
def test_finding_17_401_bodies_are_generic(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    resp = client.get("/cases", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    text = json.dumps(resp.get_json())
    for internal in ("jwt", "PyJWT", "Signature", "decode", "segments", "padding", "Exception", "alg"):
        assert internal.lower() not in text.lower(), (internal, text)

import responses

from service import create_app
from service.settings import Settings


def test_healthz_is_public(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz_reports_database_and_sync_off(client, db_url):
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    assert body["checks"]["database"] == {"ok": True, "backend": backend}
    assert body["checks"]["fhir_server"]["configured"] is False
    assert "sync is off" in body["checks"]["fhir_server"]["reason"]


def test_readyz_is_503_with_reason_when_database_is_unreachable(tmp_path):
    bad = Settings(
        data_dir=tmp_path,
        auth_disabled=True,
        db_migrate=False,
        db_url=f"sqlite:///{tmp_path}/missing/dir/x.db",
    )
    resp = create_app(bad).test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["database"]["ok"] is False
    assert "database not reachable" in resp.get_json()["checks"]["database"]["reason"]


@responses.activate
def test_readyz_is_503_when_the_fhir_server_fails(tmp_path):
    responses.get("http://fhir.test/fhir/metadata", status=503)
    s = Settings(data_dir=tmp_path, auth_disabled=True, fhir_url="http://fhir.test/fhir")
    resp = create_app(s).test_client().get("/readyz")
    assert resp.status_code == 503
    check = resp.get_json()["checks"]["fhir_server"]
    assert check["ok"] is False and check["configured"] is True
    assert "503" in check["reason"]
    assert len(responses.calls) == 1, "readiness must not retry"


@responses.activate
def test_readyz_is_ready_when_the_fhir_server_answers(tmp_path):
    responses.get("http://fhir.test/fhir/metadata", json={"resourceType": "CapabilityStatement"})
    s = Settings(data_dir=tmp_path, auth_disabled=True, fhir_url="http://fhir.test/fhir")
    resp = create_app(s).test_client().get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["checks"]["fhir_server"] == {"ok": True, "configured": True}


@responses.activate
def test_readyz_names_no_url_that_can_hold_a_password(tmp_path):
    """Outside review of issue 13: /readyz (public) printed IVCLMS_FHIR_URL with its password."""
    url = "http://syncuser:s3cret-pass@fhir.test/fhir"
    for status in (200, 503):
        responses.get("http://fhir.test/fhir/metadata", status=status, json={"resourceType": "x"})
        s = Settings(data_dir=tmp_path, auth_disabled=True, fhir_url=url)
        text = create_app(s).test_client().get("/readyz").get_data(as_text=True)
        assert "s3cret" not in text and "syncuser" not in text and "fhir.test" not in text
        responses.reset()


@responses.activate
def test_readyz_names_the_kind_of_network_failure(tmp_path):
    import requests

    responses.get("http://fhir.test/fhir/metadata", body=requests.ConnectionError("refused"))
    s = Settings(data_dir=tmp_path, auth_disabled=True, fhir_url="http://fhir.test/fhir")
    check = create_app(s).test_client().get("/readyz").get_json()["checks"]["fhir_server"]
    assert check["ok"] is False and check["reason"] == "ConnectionError: the FHIR server is not reachable"

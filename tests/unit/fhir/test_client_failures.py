"""HTTP failure modes a real server cannot produce on demand (timeouts, 5xx, 429)."""

import pytest
import requests
import responses

from service.fhir.client import FhirClient, FhirConflict, FhirNotFound, FhirRejected, FhirUnavailable

BASE = "http://fhir.test/fhir"
OO = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(sleeps):
    return FhirClient(BASE, retries=3, sleep=sleeps.append, backoff_base=0.1)


@responses.activate
def test_get_retries_5xx_then_succeeds(client, sleeps):
    responses.get(f"{BASE}/Patient/1", status=503)
    responses.get(f"{BASE}/Patient/1", status=502)
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client.read("Patient", "1")["id"] == "1"
    assert len(responses.calls) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.3  # backoff grows (with jitter)


@responses.activate
def test_429_honours_retry_after(client, sleeps):
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    client.read("Patient", "1")
    assert sleeps == [7.0]


@responses.activate
def test_timeouts_exhaust_retries_into_unavailable(client, sleeps):
    responses.get(f"{BASE}/Patient/1", body=requests.exceptions.ReadTimeout())
    with pytest.raises(FhirUnavailable) as err:
        client.read("Patient", "1")
    assert len(responses.calls) == 4
    assert "ReadTimeout" in str(err.value)


@responses.activate
def test_post_is_not_retried(client):
    responses.post(f"{BASE}/Patient", status=503)
    with pytest.raises(FhirUnavailable):
        client.create({"resourceType": "Patient"})
    assert len(responses.calls) == 1


@responses.activate
def test_transaction_marked_idempotent_is_retried(client):
    responses.post(f"{BASE}", status=500)
    responses.post(f"{BASE}", json={"resourceType": "Bundle", "type": "transaction-response"})
    assert client.transaction({"resourceType": "Bundle"}, idempotent=True)["type"] == "transaction-response"
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize(
    ("status", "exc"), [(400, FhirRejected), (404, FhirNotFound), (409, FhirConflict), (412, FhirConflict)]
)
def test_4xx_is_typed_with_the_outcome_and_not_retried(client, status, exc):
    responses.put(f"{BASE}/Patient/1", status=status, json=OO)
    with pytest.raises(exc) as err:
        client.update({"resourceType": "Patient", "id": "1"})
    assert err.value.status == status
    assert err.value.outcome == OO
    assert len(responses.calls) == 1


@responses.activate
def test_validate_returns_the_outcome_of_an_invalid_resource(client):
    responses.post(f"{BASE}/Patient/$validate", status=412, json=OO)
    assert client.validate({"resourceType": "Patient"}) == OO


@responses.activate
def test_bearer_auth_header_and_tls_verification_default():
    from service.fhir.client import BearerAuth

    c = FhirClient(BASE, auth=BearerAuth("tok"))
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    c.capabilities()
    assert responses.calls[0].request.headers["Authorization"] == "Bearer tok"
    assert c._session.verify is True


@responses.activate
def test_oauth2_client_credentials_token_is_fetched_once_and_reused(tmp_path):
    from service.fhir.client import auth_from_settings
    from service.settings import Settings

    responses.post("http://auth.test/token", json={"access_token": "abc", "expires_in": 3600})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    s = Settings(
        data_dir=tmp_path,
        auth_disabled=True,
        fhir_url=BASE,
        fhir_auth_mode="oauth2",
        fhir_token_url="http://auth.test/token",
        fhir_client_id="id",
        fhir_client_secret="sec",
    )
    c = FhirClient.from_settings(s)
    assert auth_from_settings(s, requests.Session()) is not None
    c.capabilities()
    c.capabilities()
    token_calls = [call for call in responses.calls if call.request.url.startswith("http://auth.test")]
    assert len(token_calls) == 1
    assert "grant_type=client_credentials" in token_calls[0].request.body
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer abc"

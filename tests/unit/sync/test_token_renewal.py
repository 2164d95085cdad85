"""A 401 from the FHIR server renews the client-credentials token once and sends the request again; a
token endpoint that refuses is a credentials problem, never a dead letter (issue 13, sync behind real
authorization). The FHIR server and the token endpoint are ``responses`` mocks here; the same chain
runs against a real authorization server in tests/integration/test_fhir_oauth.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.fhir.client import FhirClient, FhirRejected, FhirTokenRefused, FhirUnavailable
from service.settings import Settings
from tests.unit.sync.conftest import entries, example, submit

BASE = "http://fhir.test/fhir"
TOKEN_URL = "https://auth.test/token"
BUNDLE_ANSWER = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@pytest.fixture
def smart_settings(tmp_path: Path) -> Settings:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Settings(
        data_dir=tmp_path,
        auth_disabled=True,
        fhir_url=BASE,
        fhir_auth_mode="smart-backend",
        fhir_token_url=TOKEN_URL,
        fhir_client_id="ivclms-hospital-a",
        fhir_private_key_file=str(pem),
        fhir_key_id="key-2026",
    ).validated()


def tokens(*values: str) -> None:
    for value in values:
        responses.post(TOKEN_URL, json={"access_token": value, "expires_in": 3600, "token_type": "bearer"})


def sent_tokens() -> list[str]:
    return [
        c.request.headers["Authorization"].removeprefix("Bearer ")
        for c in responses.calls
        if c.request.url.startswith(BASE)
    ]


def token_requests() -> int:
    return sum(1 for c in responses.calls if c.request.url == TOKEN_URL)


@responses.activate
def test_a_401_renews_the_token_once_and_the_request_goes_through(smart_settings):
    tokens("revoked-on-the-server", "fresh")
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    responses.post(BASE, status=401, headers=INVALID_TOKEN)
    responses.post(BASE, json=BUNDLE_ANSWER)

    client = FhirClient.from_settings(smart_settings)
    client.capabilities()
    client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})  # not idempotent
    client.capabilities()

    assert token_requests() == 2
    assert sent_tokens() == ["revoked-on-the-server", "revoked-on-the-server", "fresh", "fresh"]
    fresh_request = parse_qs(responses.calls[-3].request.body)  # the renewal: a new signed assertion
    assert fresh_request["grant_type"] == ["client_credentials"]
    jwt.decode(fresh_request["client_assertion"][0], options={"verify_signature": False})


@responses.activate
def test_a_second_401_is_the_answer_not_a_loop(smart_settings):
    tokens("a", "b", "c")
    responses.post(BASE, status=401, headers=INVALID_TOKEN)
    client = FhirClient.from_settings(smart_settings)
    with pytest.raises(FhirRejected) as raised:
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert raised.value.status == 401
    assert (token_requests(), sent_tokens()) == (2, ["a", "b"])


@responses.activate
def test_a_fixed_bearer_token_is_not_renewed(tmp_path):
    settings = Settings(
        data_dir=tmp_path, auth_disabled=True, fhir_url=BASE, fhir_auth_mode="bearer", fhir_token="fixed"
    )
    responses.get(f"{BASE}/metadata", status=401)
    with pytest.raises(FhirRejected):
        FhirClient.from_settings(settings).capabilities()
    assert len(responses.calls) == 1


@responses.activate
def test_a_refusing_token_endpoint_is_a_token_refusal_with_its_oauth_error_code(smart_settings):
    refusal = {"error": "invalid_client", "error_description": "no such key"}
    responses.post(TOKEN_URL, status=400, json=refusal)
    with pytest.raises(FhirTokenRefused, match=r"token endpoint answered 400 invalid_client$") as raised:
        FhirClient.from_settings(smart_settings).capabilities()
    assert raised.value.status == 400
    assert not any(c.request.url.startswith(BASE) for c in responses.calls)


@responses.activate
def test_a_token_endpoint_outage_is_an_outage(smart_settings):
    responses.post(TOKEN_URL, status=503, headers={"Retry-After": "7"})
    client = FhirClient(
        BASE,
        retries=0,
        auth=FhirClient.from_settings(smart_settings)._session.auth,
    )
    with pytest.raises(FhirUnavailable) as raised:
        client.capabilities()
    assert (raised.value.status, raised.value.retry_after) == (503, 7.0)


# ---- in the worker: renewed and delivered, or retried later; never dead ----------------------------


def _worker(engine, smart_settings, clock):
    from service.sync.worker import Worker

    return Worker(engine, FhirClient.from_settings(smart_settings), worker_id="w1", clock=clock)


def test_a_401_in_the_worker_renews_the_token_and_delivers(intake, engine, clock, smart_settings, fhir):
    submit(intake, example(0))
    for value in ("expired-early", "renewed"):
        fhir.http.post(TOKEN_URL, json={"access_token": value, "expires_in": 3600})
    fhir.fail((401, INVALID_TOKEN, None))
    assert _worker(engine, smart_settings, clock).run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts, entry.last_error) == ("done", 0, None)
    assert sum(1 for c in fhir.http.calls if c.request.url == TOKEN_URL) == 2
    assert len(fhir.transactions) == 1
    sent = [c.request.headers["Authorization"] for c in fhir.http.calls if c.request.url == BASE]
    assert sent == ["Bearer expired-early", "Bearer renewed"]


@pytest.mark.parametrize(
    ("token_status", "failures", "error"),
    [
        (400, 0, "refused: HTTP 400"),  # the token endpoint refuses the client: not about the Bundle
        (200, 2, "refused: HTTP 401"),  # the server refuses even the renewed token
    ],
)
def test_refused_credentials_are_retried_later_not_dead_lettered(
    intake, engine, clock, smart_settings, fhir, token_status, failures, error
):
    submit(intake, example(0))
    if token_status == 200:
        fhir.http.post(TOKEN_URL, json={"access_token": "t", "expires_in": 3600})
    else:
        fhir.http.post(TOKEN_URL, status=token_status, json={"error": "invalid_client"})
    fhir.fail(*[(401, INVALID_TOKEN, None)] * failures)
    assert _worker(engine, smart_settings, clock).run_once() == 1
    (entry,) = entries(engine)
    assert (entry.state, entry.attempts, entry.last_error) == ("pending", 1, error)
    assert fhir.transactions == []

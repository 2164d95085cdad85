"""SMART Backend Services authentication to the FHIR server: a signed client assertion per token."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs

import click
import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.cli import _fhir_client
from service.fhir.client import ASSERTION_LIFETIME_S, JWT_BEARER, FhirClient
from service.settings import Settings, SettingsError

BASE = "http://fhir.test/fhir"
TOKEN_URL = "https://auth.test/token"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _settings(tmp_path: Path, key_file: Path, **changes: str) -> Settings:
    values = {
        "data_dir": tmp_path,
        "auth_disabled": True,
        "fhir_url": BASE,
        "fhir_auth_mode": "smart-backend",
        "fhir_token_url": TOKEN_URL,
        "fhir_client_id": "ivclms-hospital-a",
        "fhir_private_key_file": str(key_file),
        "fhir_key_id": "key-2026",
        **changes,
    }
    return Settings(**values).validated()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS384", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    ],
)
@responses.activate
def test_the_token_request_carries_a_signed_assertion_and_the_token_is_reused(tmp_path, algorithm, make_key):
    key = make_key()
    settings = _settings(tmp_path, _pem(key, tmp_path / "key.pem"), fhir_jwt_alg=algorithm)
    responses.post(TOKEN_URL, json={"access_token": "granted", "expires_in": 300, "token_type": "bearer"})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})

    client = FhirClient.from_settings(settings)
    client.capabilities()
    client.capabilities()

    token_calls = [c for c in responses.calls if c.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    request = token_calls[0].request
    assert "Authorization" not in request.headers  # no secret: the assertion is the credential
    form = {k: v[0] for k, v in parse_qs(request.body).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.cruds"
    assert form["client_assertion_type"] == JWT_BEARER
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert (header["alg"], header["kid"], header["typ"]) == (algorithm, "key-2026", "JWT")
    claims = jwt.decode(assertion, key.public_key(), algorithms=[algorithm], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "ivclms-hospital-a"
    assert 0 < claims["exp"] - time.time() <= ASSERTION_LIFETIME_S
    assert len(claims["jti"]) >= 32
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer granted"


@responses.activate
def test_every_token_request_has_a_fresh_jti(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = _settings(tmp_path, _pem(key, tmp_path / "key.pem"))
    responses.post(TOKEN_URL, json={"access_token": "short", "expires_in": 30})  # under the renewal margin
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    client = FhirClient.from_settings(settings)
    client.capabilities()
    client.capabilities()
    bodies = [parse_qs(c.request.body) for c in responses.calls if c.request.url == TOKEN_URL]
    jtis = {jwt.decode(b["client_assertion"][0], options={"verify_signature": False})["jti"] for b in bodies}
    assert len(bodies) == 2 and len(jtis) == 2


def test_a_key_that_does_not_fit_the_algorithm_fails_at_start_up(tmp_path):
    key_file = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "p256.pem")
    for algorithm in ("RS384", "ES384"):  # an EC key is not RSA, and P-256 is not P-384
        settings = _settings(tmp_path, key_file, fhir_jwt_alg=algorithm)
        with pytest.raises(SettingsError, match="FHIR_PRIVATE_KEY_FILE does not fit"):
            FhirClient.from_settings(settings)


def test_a_file_that_is_not_a_private_key_is_a_configuration_error_on_the_command_line(tmp_path):
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(click.ClickException, match=r"configuration: .*not an unencrypted PEM private key"):
        _fhir_client(_settings(tmp_path, not_a_key))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fhir_key_id": ""}, "IVCLMS_FHIR_KEY_ID"),
        ({"fhir_token_url": ""}, "IVCLMS_FHIR_TOKEN_URL"),
        ({"fhir_jwt_alg": "HS256"}, "FHIR_JWT_ALG must be one of RS384, ES384"),
        ({"fhir_private_key_file": "/nonexistent/key.pem"}, "not a readable file"),
    ],
)
def test_incomplete_smart_backend_settings_fail_validation(tmp_path, changes, message):
    key_file = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), tmp_path / "key.pem")
    with pytest.raises(SettingsError, match=message):
        _settings(tmp_path, key_file, **changes)

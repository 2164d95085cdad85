"""Sync to a FHIR server behind real authorization (issue 13).

The chain is made of real components: the worker's SMART Backend Services client asks a real OAuth2
authorization server (no.nav.security:mock-oauth2-server, started by scripts/oauth, at
IVCLMS_TEST_OAUTH_URL) for a token with a signed client assertion; a guard in front of HAPI checks the
bearer token of every request against that server's JWKS (signature, issuer, expiry, subject = our
client id) and forwards what passes to the real HAPI FHIR server.

SMART Backend Services (SMART App Launch v2, backend-services.html): "the client SHALL obtain a new
access token" when the old one expires or is refused; RFC 6750 section 3.1: ``invalid_token`` is
answered with 401. A revoked token (the guard refuses its ``jti``) must lead to one renewal and the
delivery going through, not a dead letter.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine, select

from service.fhir.client import FhirClient
from service.intake import Intake
from service.settings import Settings
from service.store.tables import outbox
from service.sync.worker import Worker
from tests.support.sync import EXAMPLES, assert_hapi_holds_exactly, newest_bundles, submit, tagged

CLIENT_ID = "ivclms-hospital-a"
ISSUER = "ivclms"  # mock-oauth2-server: the first path segment names the issuer
SHORT_LIVED = "short-lived"  # tests/oauth/config.json: tokens of this issuer live 30 s


@pytest.fixture(scope="session")
def oauth_url() -> str:
    value = os.environ.get("IVCLMS_TEST_OAUTH_URL")
    if not value:
        pytest.fail("IVCLMS_TEST_OAUTH_URL is not set: run integration tests through scripts/test")
    return value.rstrip("/")


class Guard:
    """A resource server's token check in front of HAPI: every request needs a bearer token issued by
    the authorization server (verified with its JWKS) to our client; refused tokens get 401."""

    def __init__(self, hapi_url: str, oauth_url: str, issuer: str) -> None:
        self.origin = hapi_url.split("/fhir", 1)[0]
        self.issuer = f"{oauth_url}/{issuer}"
        self.keys = jwt.PyJWKClient(f"{self.issuer}/jwks")
        self.revoked: set[str] = set()
        self.seen: list[tuple[str | None, int]] = []
        """(jti of the token, status answered) per request, in order."""
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _GuardHandler)
        self.server.daemon_threads = True
        self.server.guard = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check(self, header: str | None) -> tuple[str | None, bool]:
        """(the token's jti, whether it is accepted)."""
        if not header or not header.startswith("Bearer "):
            return None, False
        token = header.removeprefix("Bearer ")
        try:
            key = self.keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            return None, False
        return claims["jti"], claims["sub"] == CLIENT_ID and claims["jti"] not in self.revoked

    def jtis(self, status: int = 200) -> list[str | None]:
        with self.lock:
            return [jti for jti, answered in self.seen if answered == status]


class _GuardHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        guard: Guard = self.server.guard  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        jti, accepted = guard.check(self.headers.get("Authorization"))
        if not accepted:
            with guard.lock:
                guard.seen.append((jti, 401))
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "login", "diagnostics": "invalid_token"}],
            }
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            self._answer(401, json.dumps(outcome).encode(), challenge)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "prefer")}
        answer = requests.request(
            self.command, guard.origin + self.path, data=body, headers=headers, timeout=120
        )
        with guard.lock:
            guard.seen.append((jti, answer.status_code))
        kind = {"Content-Type": answer.headers.get("Content-Type", "")}
        self._answer(answer.status_code, answer.content, kind)

    def _answer(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if value:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def guard(hapi_url: str, oauth_url: str) -> Iterator[Guard]:
    g = Guard(hapi_url, oauth_url, ISSUER)
    yield g
    g.close()


def smart_settings(tmp_path: Path, fhir_url: str, token_url: str, algorithm: str = "RS384") -> Settings:
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    pem = tmp_path / "client-key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Settings(
        data_dir=tmp_path,
        auth_disabled=True,
        fhir_url=fhir_url,
        fhir_auth_mode="smart-backend",
        fhir_token_url=token_url,
        fhir_client_id=CLIENT_ID,
        fhir_private_key_file=str(pem),
        fhir_key_id="ivclms-2026",
        fhir_jwt_alg=algorithm,
    ).validated()


def drain(worker: Worker) -> None:
    for _ in range(100):
        if worker.run_once() == 0:
            return
    raise AssertionError("the queue did not drain")


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_sync_obtains_caches_and_renews_its_token_from_a_real_authorization_server(
    package_loaded, hapi, engine: Engine, guard, oauth_url, tag, tmp_path, algorithm
):
    settings = smart_settings(tmp_path, guard.url, f"{oauth_url}/{ISSUER}/token", algorithm)
    intake = Intake(engine, enqueue=True)
    cases = [tagged(p, tag) for p in EXAMPLES[:3]]
    refs = submit(intake, cases)
    client = FhirClient.from_settings(settings)
    worker = Worker(engine, client)
    try:
        drain(worker)
        first = guard.jtis()
        assert len(first) == 3 and len(set(first)) == 1  # one token obtained, cached for every request
        assert guard.jtis(401) == []

        guard.revoked.add(first[0])  # the server revokes it (or it expired early on the server's clock)
        submit(intake, [tagged(EXAMPLES[0], tag, institution="Corrected after the token was revoked")])
        drain(worker)
    finally:
        client.close()

    assert guard.jtis(401) == [first[0]]  # refused once ...
    renewed = guard.jtis()[3:]
    assert len(renewed) == 1 and renewed[0] != first[0]  # ... renewed once, and delivered
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.state, outbox.c.attempts, outbox.c.last_error)).all()
    assert sorted(rows) == [("done", 0, None)] * 4  # nothing dead, nothing even retried
    assert_hapi_holds_exactly(hapi, list(newest_bundles(engine, refs).values()), tag)


def test_a_token_that_lives_less_than_the_renewal_margin_is_renewed_before_each_request(
    hapi_url, oauth_url, tmp_path
):
    short = Guard(hapi_url, oauth_url, SHORT_LIVED)
    settings = smart_settings(tmp_path, short.url, f"{oauth_url}/{SHORT_LIVED}/token")
    client = FhirClient.from_settings(settings)
    try:
        for _ in range(3):
            assert client.capabilities()["resourceType"] == "CapabilityStatement"
    finally:
        client.close()
        short.close()
    seen = short.jtis()
    assert len(seen) == 3 and len(set(seen)) == 3  # 30 s tokens, renewed 60 s before expiry: every time


def test_a_token_from_another_issuer_is_refused_by_the_guard(hapi_url, oauth_url, tmp_path):
    """The guard is a real check: a valid token of another issuer is not let through (the test above
    would pass vacuously otherwise)."""
    guard = Guard(hapi_url, oauth_url, ISSUER)
    answer = requests.post(
        f"{oauth_url}/{SHORT_LIVED}/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=(CLIENT_ID, "secret"),
        timeout=30,
    )
    try:
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        refused = requests.get(f"{guard.url}/metadata", headers=bearer, timeout=30)
        missing = requests.get(f"{guard.url}/metadata", timeout=30)
    finally:
        guard.close()
    assert (refused.status_code, missing.status_code) == (401, 401)
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

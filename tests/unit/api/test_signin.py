"""Console sign-in with OpenID Connect (issue 16) through the Flask test client, against the REAL
identity provider of the harness (no.nav.security:mock-oauth2-server at IVCLMS_TEST_OAUTH_URL, started by
scripts/oauth; its interactive login form takes a user name and the claims of the ID token).

What the provider does is its own (the oracle we did not write): it refuses a code redeemed with the
wrong PKCE verifier or twice, signs the ID token with its JWKS key and copies our nonce into it. The
tests that need it are marked ``integration`` and fail, never skip, without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from joserfc import jwt
from joserfc.jwk import RSAKey

from service import create_app
from service.api import signin
from service.auth.oidc import OidcClient, safe_next
from service.case_files import EXAMPLE_SERIES
from service.errors import BadRequest
from service.settings import Settings, SettingsError
from tests.support.auth import TEST_SECRET
from tests.tokens import bearer

HTML = {"Accept": "text/html"}
CLIENT_ID = "ivclms-console"
READER = {"scope": "system/*.rs", "ivclms_roles": ["registry"], "name": "Dr Alice Reader"}
"""Claims of a user who may list and open every case (as a token with these claims may on the API)."""


@pytest.fixture(scope="module")
def issuer() -> str:
    value = os.environ.get("IVCLMS_TEST_OAUTH_URL")
    if not value:
        pytest.fail("IVCLMS_TEST_OAUTH_URL is not set: run these tests through scripts/test")
    return value.rstrip("/") + "/ivclms-console"


def _settings(tmp_path: Path, issuer: str, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        auth_jwt_secret=TEST_SECRET,
        oidc_issuer=issuer,
        oidc_client_id=CLIENT_ID,
        **extra,
    )


@pytest.fixture
def oidc_app(tmp_path: Path, issuer: str) -> Iterator[Flask]:
    app = create_app(_settings(tmp_path, issuer))
    app.config["TESTING"] = True
    yield app
    app.extensions["ivclms"].engine.dispose()


@pytest.fixture
def web(oidc_app: Flask) -> FlaskClient:
    return oidc_app.test_client()


@pytest.fixture
def case_ids(web: FlaskClient) -> list[str]:
    resp = web.post(
        "/cases/import", data=EXAMPLE_SERIES.read_bytes(), headers=bearer(), content_type="text/csv"
    )
    assert resp.status_code == 200, resp.get_json()
    return [c["id"] for c in resp.get_json()["cases"]]


def _start(web: FlaskClient, next_path: str | None = None) -> str:
    """GET /ui/sign-in: the provider's authorization URL it redirects to."""
    query = "?" + urlencode({"next": next_path}) if next_path is not None else ""
    resp = web.get("/ui/sign-in" + query, headers=HTML)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return resp.headers["Location"]


def _login(authorize_url: str, user: str, claims: dict[str, Any]) -> str:
    """The provider's login form, as a user fills it in: the callback URL it sends the browser to."""
    resp = requests.post(
        authorize_url,
        data={"username": user, "claims": json.dumps(claims)},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def _callback(web: FlaskClient, url: str) -> Any:
    parts = urlsplit(url)
    assert parts.path == "/ui/callback"
    return web.get(f"{parts.path}?{parts.query}", headers=HTML)


def _sign_in(web: FlaskClient, user: str = "alice", claims: dict[str, Any] | None = None) -> Any:
    return _callback(web, _login(_start(web), user, READER if claims is None else claims))


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# ---- the code flow against the real provider ------------------------------------------------------


@pytest.mark.integration
def test_full_code_flow_signs_in_and_shows_the_case_list(web, case_ids):
    # no sign-in yet: the console sends the browser to sign in, back to the page it asked for
    first = web.get("/ui?status=active", headers=HTML)
    assert first.status_code == 302
    assert _query(first.headers["Location"]) == {"next": "/ui?status=active"}
    assert urlsplit(first.headers["Location"]).path == "/ui/sign-in"

    done = _callback(web, _login(_start(web, "/ui?status=active"), "alice", READER))
    assert done.status_code == 200
    page = done.get_data(as_text=True)
    # a same-site page that moves on (no redirect chain: a Strict cookie would not follow it)
    assert '<meta http-equiv="refresh" content="0;url=/ui?status=active">' in page
    assert done.headers["Cache-Control"] == "no-store"
    cookies = done.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("ivclms_session="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Secure" in session_cookie

    listing = web.get("/ui", headers=HTML)
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert 'Signed in as <strong class="user">Dr Alice Reader</strong>' in text
    assert sum(f'href="/ui/cases/{ref}"' in text for ref in case_ids) == min(len(case_ids), 25)
    assert web.get(f"/ui/cases/{case_ids[0]}", headers=HTML).status_code == 200


@pytest.mark.integration
def test_the_authorization_request_carries_pkce_s256_state_and_nonce(web, oidc_app):
    url = _start(web)
    asked = _query(url)
    assert asked["response_type"] == "code" and asked["client_id"] == CLIENT_ID
    assert asked["scope"] == "openid profile"
    assert asked["redirect_uri"] == "http://localhost/ui/callback"
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32
    # RFC 7636 4.2: code_challenge = BASE64URL(SHA256(code_verifier)), the verifier kept by the browser
    cookie = web.get_cookie(signin.TXN_COOKIE, path=signin.CALLBACK_PATH)
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    kept = URLSafeTimedSerializer(oidc_app.secret_key, salt="ivclms-oidc-transaction").loads(cookie.value)
    state, nonce, verifier, _next = kept
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert asked["code_challenge"] == digest
    assert (asked["state"], asked["nonce"]) == (state, nonce)


@pytest.mark.integration
@pytest.mark.parametrize("state", ["", "not-the-state"])
def test_a_wrong_or_missing_state_is_a_400_page(web, state):
    callback = _login(_start(web), "alice", READER)
    query = _query(callback)
    query.pop("state")
    if state:
        query["state"] = state
    resp = web.get("/ui/callback?" + urlencode(query), headers=HTML)
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    assert "state" in resp.get_data(as_text=True)
    assert web.get("/ui", headers=HTML).status_code == 302  # not signed in


@pytest.mark.integration
def test_a_callback_without_a_sign_in_in_progress_is_a_400_page(web, issuer):
    callback = _login(_start(web), "alice", READER)
    web.delete_cookie(signin.TXN_COOKIE, path=signin.CALLBACK_PATH)
    resp = _callback(web, callback)
    assert resp.status_code == 400
    assert "no sign-in is in progress" in resp.get_data(as_text=True)


@pytest.mark.integration
def test_a_replayed_callback_is_refused(web):
    url = _start(web)
    cookie = web.get_cookie(signin.TXN_COOKIE, path=signin.CALLBACK_PATH)
    assert cookie is not None
    callback = _login(url, "alice", READER)
    assert _callback(web, callback).status_code == 200
    # the transaction was used up: the same answer again finds none
    assert web.get_cookie(signin.TXN_COOKIE, path=signin.CALLBACK_PATH) is None
    assert _callback(web, callback).status_code == 400
    # an attacker who kept the transaction cookie too: the provider refuses a code redeemed twice
    web.set_cookie(signin.TXN_COOKIE, cookie.value, path=signin.CALLBACK_PATH)
    again = _callback(web, callback)
    assert again.status_code == 400
    assert "did not accept the sign-in code" in again.get_data(as_text=True)


@pytest.mark.integration
def test_an_id_token_with_another_nonce_is_refused(web):
    """A code minted for the same state and PKCE challenge (both visible in the authorization URL) but
    another nonce: only the nonce check can tell it apart, and it does."""
    url = _start(web)
    asked = _query(url)
    forged = {**asked, "nonce": "attacker-nonce-" + "x" * 32}
    authorize = url.split("?", 1)[0] + "?" + urlencode(forged)
    resp = _callback(web, _login(authorize, "mallory", READER))
    assert resp.status_code == 400
    assert "nonce" in resp.get_data(as_text=True)
    assert web.get("/ui", headers=HTML).status_code == 302


@pytest.mark.integration
@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/ui",
        "//evil.example/ui",
        "/\\evil.example",
        "/ui/../cases",
        "/cases",
        "javascript:x",
    ],
)
def test_next_cannot_leave_the_console(web, target):
    done = _callback(web, _login(_start(web, target), "alice", READER))
    assert done.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/ui">' in done.get_data(as_text=True)


@pytest.mark.integration
def test_sign_out_needs_the_csrf_token_and_ends_the_session(web):
    assert _sign_in(web).status_code == 200
    page = web.get("/ui", headers=HTML).get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert web.post("/ui/sign-out", data={}, headers=HTML).status_code == 403
    assert web.get("/ui", headers=HTML).status_code == 200  # still signed in
    out = web.post("/ui/sign-out", data={"csrf_token": token}, headers=HTML)
    assert out.status_code == 200 and "Signed out" in out.get_data(as_text=True)
    assert web.get("/ui", headers=HTML).status_code == 302


@pytest.mark.integration
def test_the_session_is_not_accepted_by_the_api(web, case_ids):
    assert _sign_in(web).status_code == 200
    assert web.get("/ui", headers=HTML).status_code == 200
    for path in ("/cases", f"/cases/{case_ids[0]}", "/registry/summary", "/fhir/Patient"):
        resp = web.get(path)
        assert resp.status_code == 401, path
        assert resp.mimetype == "application/fhir+json"


@pytest.mark.integration
def test_claims_grant_what_the_same_token_would(web, case_ids):
    """Search alone (system/*.s) opens neither the list (it shows content) nor a case page (403), as an
    access token with that scope opens neither GET /cases/{id}."""
    assert _sign_in(web, "sam", {"scope": "system/*.s", "ivclms_roles": ["registry"]}).status_code == 200
    assert web.get(f"/ui/cases/{case_ids[0]}", headers=HTML).status_code == 403
    assert web.get("/ui", headers=HTML).status_code == 403
    api = web.get(f"/cases/{case_ids[0]}", headers=bearer("system/*.s"))
    assert api.status_code == 403


@pytest.mark.integration
def test_a_list_valued_scope_claim_is_read_too(web, case_ids):
    assert _sign_in(web, "lisa", {"scope": ["system/*.rs"], "ivclms_roles": ["registry"]}).status_code == 200
    assert web.get(f"/ui/cases/{case_ids[0]}", headers=HTML).status_code == 200


@pytest.mark.integration
def test_malformed_claims_are_a_400_page_and_no_sign_in(web):
    resp = _sign_in(web, "bob", {"scope": 42, "ivclms_roles": ["registry"]})
    assert resp.status_code == 400
    assert "claims for this user are not valid" in resp.get_data(as_text=True)
    assert web.get("/ui", headers=HTML).status_code == 302


@pytest.mark.integration
def test_an_expired_session_is_refused(web, case_ids):
    assert _sign_in(web).status_code == 200
    with web.session_transaction() as sess:
        exp = sess["oidc"]["exp"]
        assert 8 * 3600 - 120 <= exp - time.time() <= 8 * 3600  # the default: 8 hours from sign-in
        sess["oidc"] = {**sess["oidc"], "exp": int(time.time()) - 1}
    resp = web.get(f"/ui/cases/{case_ids[0]}", headers=HTML)
    assert resp.status_code == 302 and urlsplit(resp.headers["Location"]).path == "/ui/sign-in"


@pytest.mark.integration
def test_a_bearer_token_wins_over_the_session(web, case_ids):
    assert _sign_in(web).status_code == 200
    assert web.get(f"/ui/cases/{case_ids[0]}", headers={**HTML, **bearer("system/*.s")}).status_code == 403


@pytest.mark.integration
def test_sign_in_makes_a_new_session(web):
    """Session fixation: what was in the browser's session before sign-in (its CSRF token) is gone."""
    with web.session_transaction() as sess:
        sess["csrf"] = "planted-by-someone-else"
        sess["extra"] = "planted"
    assert _sign_in(web).status_code == 200
    with web.session_transaction() as sess:
        assert sess["csrf"] != "planted-by-someone-else" and "extra" not in sess


# ---- without the provider -------------------------------------------------------------------------


WRITER = {"scope": "system/*.cruds", "ivclms_sources": "*", "name": "Dr Eve Writer"}


def test_a_console_post_without_a_sign_in_is_a_401_page_with_a_sign_in_link(tmp_path):
    web = create_app(_settings(tmp_path, "http://127.0.0.1:9/none")).test_client()  # never reached
    resp = web.post("/ui/cases/new", data={}, headers=HTML)
    assert resp.status_code == 401 and resp.mimetype == "text/html"
    assert '<a class="sign-in" href="/ui/sign-in">sign in</a>' in resp.get_data(as_text=True)
    assert web.post("/ui/sign-out", data={}, headers=HTML).status_code == 403  # only the form's token
    assert web.get("/ui/cases/x", headers={"Accept": "application/json"}).status_code == 302


@pytest.mark.integration
def test_a_console_form_post_goes_through_with_the_session_and_its_csrf_token(tmp_path, issuer):
    """The case form (a real console post) with a signed-in writer: a guessed CSRF token is refused
    before anything is read; the session's token reaches the form, whose empty case is 422 at its
    fields (the gate passed: a missing scope would be 403)."""
    web = create_app(_settings(tmp_path, issuer)).test_client()
    assert _sign_in(web, "eve", WRITER).status_code == 200
    refused = web.post("/ui/cases/new", data={"csrf_token": "guessed"}, headers=HTML)
    assert refused.status_code == 403 and "CSRF" in refused.get_data(as_text=True)
    with web.session_transaction() as sess:
        token = sess["csrf"]
    resp = web.post("/ui/cases/new", data={"csrf_token": token}, headers=HTML)
    assert resp.status_code == 422, resp.get_data(as_text=True)[:500]
    assert 'aria-invalid="true"' in resp.get_data(as_text=True)


def test_without_oidc_the_console_stays_as_it_was(client):
    assert client.get("/ui/sign-in", headers=HTML).status_code == 404
    resp = client.get("/ui", headers=HTML)
    assert resp.status_code == 401 and "Sign-in with\nOpenID Connect is not configured" in resp.get_data(
        as_text=True
    )


def test_auth_disabled_means_no_sign_in(tmp_path):
    app = create_app(
        Settings(data_dir=tmp_path, auth_disabled=True, oidc_issuer="https://idp.example", oidc_client_id="c")
    )
    web = app.test_client()
    assert web.get("/ui/sign-in", headers=HTML).status_code == 404
    assert web.get("/ui", headers=HTML).status_code == 200


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/ui", "/ui"),
        ("/ui/series?segment=II&consent=yes", "/ui/series?segment=II&consent=yes"),
        ("/ui/cases/abc?from=1&to=2", "/ui/cases/abc?from=1&to=2"),
        ("", "/ui"),
        ("/uix", "/ui"),
        ("/ui/./x", "/ui"),
        ("/ui//evil.example", "/ui"),
        ("/ui\\..\\x", "/ui"),
        ("/ui/\nx", "/ui"),
        ("http://localhost/ui", "/ui"),
        ("/ui#frag", "/ui"),
        ("/ui/sign-in?next=/ui", "/ui"),
        ("/ui/callback/", "/ui"),
        # outside review: a browser resolves an encoded dot segment (/ui/%2e%2e/ is /ui/../)
        ("/ui/%2e%2e/%2e%2e/docs", "/ui"),
        ("/ui/%2E%2E/docs", "/ui"),
        ("/ui/%252e%252e/docs", "/ui"),
        ("/ui/%2f%2fevil.example", "/ui"),
        ("/ui/cases/IVC%20001", "/ui/cases/IVC%20001"),
    ],
)
def test_safe_next(target, kept):
    assert safe_next(target) == kept


@pytest.mark.parametrize(
    ("issuer", "ok"),
    [
        ("https://idp.example.org/realms/h", True),
        ("http://127.0.0.1:8097/x", True),
        ("http://localhost:8097/x", True),
        ("http://idp.example.org/realms/h", False),
        ("ftp://idp.example.org", False),
        ("https://idp.example.org/?a=b", False),
    ],
)
def test_the_issuer_must_be_https_unless_loopback(tmp_path, issuer, ok):
    def make() -> Settings:
        return Settings(
            data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, oidc_issuer=issuer, oidc_client_id="c"
        )

    if ok:
        assert make().validated().oidc_enabled
    else:
        with pytest.raises(SettingsError, match="OIDC_ISSUER"):
            make().validated()


def test_oidc_needs_a_client_id_and_openid(tmp_path):
    base = Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET)
    with pytest.raises(SettingsError, match="OIDC_CLIENT_ID"):
        base.replace(oidc_issuer="https://idp.example.org")
    with pytest.raises(SettingsError, match="openid"):
        base.replace(oidc_issuer="https://idp.example.org", oidc_client_id="c", oidc_scopes="profile")
    with pytest.raises(SettingsError, match="SESSION_MAX_AGE"):
        base.replace(oidc_issuer="https://idp.example.org", oidc_client_id="c", oidc_session_max_age_s=0)


@pytest.mark.integration
@pytest.mark.parametrize("alg", ["RS256", "none"])
def test_an_id_token_not_signed_by_the_provider_is_refused(tmp_path, issuer, alg):
    """Right issuer, audience, nonce and the provider's own kid, but signed by another key (or not at
    all): refused by the check against the provider's JWKS."""
    client = OidcClient(_settings(tmp_path, issuer))
    kid = requests.get(client.metadata()["jwks_uri"], timeout=30).json()["keys"][0]["kid"]
    now = int(time.time())
    claims = {"iss": issuer, "aud": CLIENT_ID, "sub": "mallory", "nonce": "n", "iat": now, "exp": now + 300}
    if alg == "none":
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        forged = "eyJhbGciOiJub25lIn0." + body + "."
    else:
        forged = jwt.encode({"alg": alg, "kid": kid}, claims, RSAKey.generate_key(2048))
    with pytest.raises(BadRequest) as refused:
        client._verify(forged, "n")
    assert "signature" in refused.value.issues[0].diagnostics

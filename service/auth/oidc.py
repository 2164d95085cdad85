"""OpenID Connect sign-in for the console: authorization code with PKCE (S256), state and nonce (issue 16).

Flask-free: the Flask layer (``service.api.signin``) keeps the login transaction in a cookie and the
result in the session. Authlib's OAuth2 client builds the authorization request and redeems the code;
the ID token is verified with joserfc (Authlib's own JOSE library) against the provider's JWKS:
signature with an asymmetric algorithm only, ``iss``, ``aud`` (and ``azp`` when there are several
audiences), ``exp``, ``nonce``. Its claims become the same ``Principal`` as an access token's, through
``service.auth.tokens.principal_from_claims`` with the configured claim read as ``scope``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from service.auth.principal import Principal
from service.auth.tokens import ROLES_CLAIM, SOURCES_CLAIM, principal_from_claims
from service.errors import BadRequest, Issue, Unauthorized, Unavailable
from service.settings import Settings

TIMEOUT_S = 10.0
"""Connect and read timeout of every call to the identity provider."""
SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""ID-token algorithms accepted: asymmetric only (never ``none``, never an HMAC keyed by a client secret
that a public client does not have)."""
KEPT_CLAIMS = ("iss", "sub", "aud", "azp", SOURCES_CLAIM, ROLES_CLAIM, "preferred_username", "name")
"""Claims kept in the session besides the scope claim: enough to rebuild the principal and name the
user, nothing else of the ID token."""
SAFE_NEXT_DEFAULT = "/ui"
SIGNIN_PATHS = frozenset({"/ui/sign-in", "/ui/callback", "/ui/sign-out"})


@dataclass(frozen=True)
class Transaction:
    """One sign-in in progress: what the callback must find again (kept by the browser, signed)."""

    state: str
    nonce: str
    verifier: str
    next: str


def safe_next(target: str | None) -> str:
    """``target`` when it is a same-origin console path (``/ui`` or below), else ``/ui``: no open
    redirect through ``next`` (no scheme, host, ``//``, backslash or control character)."""
    if not target or len(target) > 2048:
        return SAFE_NEXT_DEFAULT
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target) or target.startswith("//"):
        return SAFE_NEXT_DEFAULT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.fragment:
        return SAFE_NEXT_DEFAULT
    path = parts.path
    if path != "/ui" and not path.startswith("/ui/"):
        return SAFE_NEXT_DEFAULT
    decoded = unquote(path)  # a browser resolves /ui/%2e%2e/ as /ui/../ (outside review)
    if any("/../" in p + "/" or "/./" in p + "/" or "//" in p or "\\" in p for p in (path, decoded)):
        return SAFE_NEXT_DEFAULT
    if decoded != path and unquote(decoded) != decoded:
        return SAFE_NEXT_DEFAULT  # encoded twice: nothing the console links to needs it
    if path.rstrip("/") in SIGNIN_PATHS:
        return SAFE_NEXT_DEFAULT  # back into sign-in: a loop
    return target


def principal_from_session(claims: Mapping[str, Any], scope_claim: str) -> Principal:
    """The principal of kept ID-token claims: ``scope_claim`` read as an access token's ``scope`` (a
    list of strings is joined), the rest exactly as for access tokens."""
    raw = claims.get(scope_claim, "")
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        raw = " ".join(raw)
    return principal_from_claims({**claims, "scope": raw})


class OidcClient:
    """The console's client at one OpenID provider; discovery and keys are fetched when first needed
    (the service starts even while the provider is down) and kept, keys refetched on an unknown ``kid``."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret
        self.scopes = settings.oidc_scopes
        self.scope_claim = settings.oidc_scope_claim
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    def _get(self, url: str) -> Any:
        try:
            resp = requests.get(url, timeout=TIMEOUT_S)
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError):
            raise Unavailable("the identity provider cannot be reached; try signing in later") from None

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                found = self._get(f"{self.issuer}/.well-known/openid-configuration")
                needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
                if (
                    not isinstance(found, dict)
                    or found.get("issuer", "").rstrip("/") != self.issuer
                    or not all(isinstance(found.get(k), str) for k in needed)
                ):
                    # OIDC Discovery 4.3: the issuer it names must be the one asked for
                    raise Unavailable("the identity provider's discovery document does not match its issuer")
                self._metadata = found
            return self._metadata

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, Transaction]:
        """The provider's authorization URL and the transaction the callback needs."""
        txn = Transaction(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
            next=safe_next(next_path),
        )
        with self._session(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=txn.state,
                nonce=txn.nonce,
                code_verifier=txn.verifier,
            )
        return url, txn

    def finish(self, redirect_uri: str, code: str, txn: Transaction) -> dict[str, Any]:
        """Redeem ``code`` (with the PKCE verifier) and return the verified ID token's kept claims."""
        try:
            with self._session(redirect_uri) as client:
                token = client.fetch_token(
                    self.metadata()["token_endpoint"],
                    code=code,
                    code_verifier=txn.verifier,
                    timeout=TIMEOUT_S,
                )
        except AuthlibBaseError:
            raise _refused("the identity provider did not accept the sign-in code") from None
        except requests.RequestException:
            raise Unavailable("the identity provider cannot be reached; try signing in later") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise _refused("the identity provider sent no ID token")
        claims = self._verify(id_token, txn.nonce)
        kept = {k: claims[k] for k in (*KEPT_CLAIMS, self.scope_claim) if k in claims}
        try:
            principal_from_session(kept, self.scope_claim)  # claims that make no principal fail here
        except Unauthorized:
            raise _refused(
                f"the identity provider's claims for this user are not valid ({self.scope_claim}, "
                f"{SOURCES_CLAIM} or {ROLES_CLAIM} malformed, or no sub)"
            ) from None
        return kept

    def _key_set(self, refresh: bool) -> KeySet:
        with self._lock:
            if self._keys is None or refresh:
                self._keys = None
                jwks_uri = self._metadata["jwks_uri"] if self._metadata else ""
                try:
                    self._keys = KeySet.import_key_set(self._get(jwks_uri))
                except (JoseError, ValueError, TypeError, KeyError):
                    raise Unavailable("the identity provider's keys cannot be read") from None
            return self._keys

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        issuer = self.metadata()["issuer"]  # exactly as the provider writes it (a trailing slash too)
        token = None
        for refresh in (False, True):  # an unknown kid only: the provider may have rotated its keys
            try:
                token = jwt.decode(id_token, self._key_set(refresh), algorithms=list(SIGNING_ALGS))
                break
            except InvalidKeyIdError:
                continue
            except (JoseError, ValueError, TypeError):
                break  # a bad signature or a malformed token is not worth another fetch of the keys
        if token is None:
            raise _refused("the ID token's signature is not valid")
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            now=int(time.time()),
            leeway=60,
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError:
            raise _refused(
                "the ID token is not valid for this sign-in (issuer, audience, expiry or nonce)"
            ) from None
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise _refused("the ID token was issued to another client")  # OIDC Core 3.1.3.7 item 5
        return claims


def _refused(message: str) -> BadRequest:
    return BadRequest([Issue("login", message)])

"""Bearer JWT verification into a Principal; built once at start-up.

A 401 says only what the client can act on (missing, expired, not valid): the library's reason
goes to nobody, since it can help an attacker shape a token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt

from service.auth.principal import EVERY_SOURCE, ROLES, Principal
from service.errors import Unauthorized
from service.settings import Settings

SOURCES_CLAIM = "ivclms_sources"
"""Source-system URIs the client may write (a list, or a space-separated string; ``*``: every one)."""
ROLES_CLAIM = "ivclms_roles"
"""Roles of the caller: ``registry``, ``deidentified`` (a list, or a space-separated string)."""
_NOT_VALID = "the access token is not valid"


def _words(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    """A claim holding a space-separated string or a list of strings; anything else is not valid."""
    raw = claims.get(name)
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return frozenset(raw)
    raise Unauthorized(_NOT_VALID)


def _text(claims: Mapping[str, Any], name: str) -> str:
    raw = claims.get(name)
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise Unauthorized(_NOT_VALID)
    return raw


KEY_CHARS = 256
"""The longest owner or client key kept (the columns that hold them are this wide)."""


def bounded_key(key: str) -> str:
    """A key of at most ``KEY_CHARS`` that is still unique: a longer one keeps its beginning (readable
    in the audit) and ends with the SHA-256 of the whole. Cutting it short instead made two callers
    whose keys share their first 256 characters one owner of each other's exports and replays
    (outside review of issue 13)."""
    if len(key) <= KEY_CHARS:
        return key
    digest = "#sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key[: KEY_CHARS - len(digest)] + digest


def principal_from_claims(
    claims: Mapping[str, Any], client_sources: Mapping[str, frozenset[str]] | None = None
) -> Principal:
    """The caller a verified token names. ``scope`` must be a string (RFC 9068 / SMART); the source
    systems are the token's claim and the operator's client table together."""
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthorized(_NOT_VALID)
    subject = _text(claims, "sub")
    client = _text(claims, "client_id") or _text(claims, "azp")
    issuer = _text(claims, "iss")
    sources = set(_words(claims, SOURCES_CLAIM))
    if client and client_sources and client in client_sources:
        sources |= client_sources[client]
    roles = frozenset(r for r in _words(claims, ROLES_CLAIM) if r in ROLES)
    # Each part percent-encoded, so "#" inside an issuer or subject cannot make two callers' keys meet
    # (iss "a", sub "b#sub:c" vs iss "a#sub:b", sub "c": second outside review).
    iss_, sub_, client_ = (quote(x, safe=":/@") for x in (issuer, subject, client))
    owner = f"{iss_}#sub:{sub_}" if subject else f"{iss_}#client_id:{client_}" if client else ""
    if not owner:
        raise Unauthorized(_NOT_VALID)  # nobody to audit or to own anything
    return Principal(
        subject=(subject or client)[:256],
        scopes=frozenset(scope.split()),
        sources=None if EVERY_SOURCE in sources else frozenset(sources),
        roles=roles,
        owner=bounded_key(owner),
        client=bounded_key(f"{iss_}#client_id:{client_}" if client else f"{iss_}#sub:{sub_}"),
    )


class TokenVerifier:
    """Verifies access tokens with the configured key."""

    def __init__(
        self, settings: Settings, client_sources: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        if settings.auth_jwt_public_key_file:
            self._key: Any = Path(settings.auth_jwt_public_key_file).read_text()
            self._algorithms = ["RS256", "RS384", "ES256", "ES384"]
        else:
            # HS256 only: the start-up check guarantees 32 bytes, which RFC 7518 3.2 allows for HS256 but
            # not for HS384/HS512 (48/64 bytes).
            self._key = settings.auth_jwt_secret
            self._algorithms = ["HS256"]
        self._audience = settings.auth_audience or None
        self._issuer = settings.auth_issuer or None
        self._client_sources = client_sources if client_sources is not None else settings.client_sources

    def verify(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("a bearer access token is required (Authorization: Bearer <token>)")
        token = authorization[7:].strip()
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthorized(_NOT_VALID) from None
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Unauthorized(_NOT_VALID)  # RFC 7519 4.1.4: exp is a NumericDate, not a string
        return principal_from_claims(claims, self._client_sources)

"""Bearer-token authentication with SMART on FHIR system scopes (v2 ``cruds`` and v1 ``read``/``write``).

Pure functions: the API layer passes the header in and gets claims or a typed error back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from service.errors import Forbidden, Unauthorized
from service.settings import Settings

_V1 = {"read": set("rs"), "write": set("cud"), "*": set("cruds")}


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def allows(self, resource_type: str, action: str) -> bool:
        """True when a ``system/`` scope grants ``action`` (one of c, r, u, d, s) on ``resource_type``."""
        return any(_scope_grants(scope, resource_type, action) for scope in self.scopes)


ANONYMOUS = Principal(subject="anonymous (auth disabled)", scopes=frozenset({"system/*.cruds"}))


def _scope_grants(scope: str, resource_type: str, action: str) -> bool:
    context, _, rest = scope.partition("/")
    if context != "system" or "." not in rest:
        return False
    rtype, _, perms = rest.partition(".")
    if rtype not in ("*", resource_type):
        return False
    perms = perms.split("?", 1)[0]
    allowed = _V1.get(perms)
    if allowed is None:
        allowed = set(perms) if set(perms) <= set("cruds") else set()
    return action in allowed


class TokenVerifier:
    """Verifies access tokens with the configured key; built once at start-up."""

    def __init__(self, settings: Settings) -> None:
        if settings.auth_jwt_public_key_file:
            self._key: Any = Path(settings.auth_jwt_public_key_file).read_text()
            self._algorithms = ["RS256", "RS384", "ES256", "ES384"]
        else:
            self._key = settings.auth_jwt_secret
            self._algorithms = ["HS256", "HS384", "HS512"]
        self._audience = settings.auth_audience or None
        self._issuer = settings.auth_issuer or None

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
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the access token is not valid: {exc}") from exc
        raw = claims.get("scope", "")
        scopes = frozenset(raw.split() if isinstance(raw, str) else raw)
        return Principal(
            subject=str(claims.get("sub") or claims.get("client_id") or "unknown"), scopes=scopes
        )


def require(principal: Principal, resource_type: str, action: str) -> None:
    if not principal.allows(resource_type, action):
        raise Forbidden(f"scope system/{resource_type}.{action} (or broader) is required")

"""Signed test tokens: one place that knows the claims the service reads (scope, sources, roles)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from tests.support.auth import TEST_SECRET

EVERY_ROLE = ("registry", "deidentified")


def token(
    scope: str = "system/*.cruds",
    secret: str = TEST_SECRET,
    exp_offset: int = 6 * 3600,
    *,
    sub: str | None = "registry-a",
    sources: Any = "*",
    roles: Any = EVERY_ROLE,
    **claims: Any,
) -> str:
    """A HS256 token; ``sources``/``roles`` None leave the claim out (a client bound to nothing). Valid
    for hours by default: modules mint tokens at import, and a full CI run takes half an hour."""
    body: dict[str, Any] = {"scope": scope, "exp": int(time.time()) + exp_offset, **claims}
    if sub is not None:
        body["sub"] = sub
    if sources is not None:
        body["ivclms_sources"] = sources
    if roles is not None:
        body["ivclms_roles"] = list(roles)
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(scope: str = "system/*.cruds", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope, **kwargs)}"}

"""The test signing secret and the Authorization header most API tests send."""

from __future__ import annotations

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def auth_headers(scope: str = "system/*.cruds") -> dict[str, str]:
    """A bearer token with ``scope`` (every source, every role) as request headers."""
    from tests.tokens import token  # tests.tokens reads TEST_SECRET from here

    return {"Authorization": f"Bearer {token(scope)}"}

"""Fixtures shared by the unit test folders."""

from __future__ import annotations

import json

import pytest

from tests.support.auth import auth_headers as _auth


@pytest.fixture
def api(client):
    """``/cases`` through the test client with a token of every scope (a module may define its own)."""

    class Api:
        def post(self, body, path="/cases", headers=None, content_type="application/json"):
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            return client.post(
                path, data=data, headers={**_auth(), **(headers or {})}, content_type=content_type
            )

        def put(self, path, body, headers=None):
            return client.put(
                path,
                data=json.dumps(body),
                headers={**_auth(), **(headers or {})},
                content_type="application/json",
            )

        def get(self, path, headers=None):
            return client.get(path, headers={**_auth(), **(headers or {})})

    return Api()

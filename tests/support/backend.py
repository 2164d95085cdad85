"""Which database the tests run on."""

from __future__ import annotations

import os

BACKEND = os.environ.get("IVCLMS_TEST_DB", "sqlite")
"""``postgres``: the same tests on a fresh database of the server at IVCLMS_TEST_PG_URL (scripts/test)."""

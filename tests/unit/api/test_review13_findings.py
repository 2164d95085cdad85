"""Findings of the outside review of issue 13 (a client and an attacker against the running service),
each reproduced as the reviewer sent it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service import create_app
from service.auth.tokens import KEY_CHARS, principal_from_claims
from tests.tokens import token

EXAMPLE = Path(__file__).parents[3] / "examples" / "ivclms-001-segment-ii-graft.json"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
PREFIX = "svc-" + "a" * 260
"""Two subjects that share their first 264 characters: past the 256 of the key columns."""


def _as(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('system/*.cruds', sub=sub)}"}


@pytest.fixture
def app(settings):
    application = create_app(settings.replace(export_in_process=False))
    yield application
    application.extensions["ivclms"].engine.dispose()


def test_owner_keys_of_long_subjects_stay_distinct_and_bounded() -> None:
    victim = principal_from_claims({"iss": "https://idp", "sub": PREFIX + "-victim", "scope": ""})
    attacker = principal_from_claims({"iss": "https://idp", "sub": PREFIX + "-attacker", "scope": ""})
    assert victim.owner != attacker.owner and victim.client != attacker.client
    assert max(len(victim.owner), len(attacker.owner), len(victim.client)) <= KEY_CHARS
    short = principal_from_claims({"iss": "https://idp", "sub": "registry-a", "scope": ""})
    assert short.owner == "https://idp#sub:registry-a"  # a short key is kept as it is


def test_an_export_of_a_long_subject_is_not_anothers_who_shares_its_first_256_characters(client) -> None:
    """The reviewer: the attacker's GET on the victim's status URL answered 200 with the manifest
    (owner keys were cut to 256 characters). docs/security.md: status and files belong to their owner."""
    kick = client.get("/fhir/$export?_type=Patient", headers={**_as(PREFIX + "-victim"), **ASYNC})
    assert kick.status_code == 202, kick.get_json()
    status = kick.headers["Content-Location"].split("localhost", 1)[1]
    assert client.get(status, headers=_as(PREFIX + "-victim")).status_code == 202
    stolen = client.get(status, headers=_as(PREFIX + "-attacker"))
    assert stolen.status_code == 404 and stolen.get_json()["resourceType"] == "OperationOutcome"
    assert client.delete(status, headers=_as(PREFIX + "-attacker")).status_code == 404


def test_an_idempotency_key_is_not_replayed_to_another_long_subject(client) -> None:
    body: dict[str, Any] = json.loads(EXAMPLE.read_text())
    key = {"Idempotency-Key": "long-sub-key"}
    first = client.post(
        "/cases",
        data=json.dumps(body),
        headers={**_as(PREFIX + "-victim"), **key},
        content_type="application/json",
    )
    assert first.status_code == 201
    other = client.post(
        "/cases",
        data=json.dumps(body),
        headers={**_as(PREFIX + "-attacker"), **key},
        content_type="application/json",
    )
    assert other.headers.get("Idempotent-Replayed") != "true"

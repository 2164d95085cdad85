"""Withdrawal marks: what ``retract`` sets is what ``withdrawn`` recognises, from the same rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.mapping.forward import case_to_bundle
from service.mapping.retract import retract, withdrawn
from service.model import validate_case

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_a_retracted_case_is_withdrawn_and_the_live_one_is_not(path: Path) -> None:
    bundle = case_to_bundle(validate_case(json.loads(path.read_text())), now=NOW)
    assert not withdrawn(resources(bundle))
    assert withdrawn(resources(retract(bundle, now=NOW)))


def test_one_live_resource_means_not_withdrawn() -> None:
    bundle = case_to_bundle(validate_case(json.loads(EXAMPLES[0].read_text())), now=NOW)
    marked = resources(retract(bundle, now=NOW))
    for position, live in enumerate(resources(bundle)):
        if live["resourceType"] == "Provenance":
            continue
        mixed = copy.deepcopy(marked)
        mixed[position] = live
        assert not withdrawn(mixed), live["resourceType"]


def test_a_server_adding_a_display_still_reads_as_withdrawn() -> None:
    bundle = retract(case_to_bundle(validate_case(json.loads(EXAMPLES[0].read_text())), now=NOW), now=NOW)
    marked = resources(bundle)
    for resource in marked:
        for coding in resource.get("verificationStatus", {}).get("coding", []):
            coding["display"] = "Entered in Error (as the server shows it)"
    assert withdrawn(marked)
    assert not withdrawn([r for r in marked if r["resourceType"] == "Provenance"])  # nothing marked

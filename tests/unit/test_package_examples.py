"""The package's example folder: every profile shown at least once, every reference resolvable."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service import package_examples
from service.package_build import PROFILES_DIR

EXAMPLE_DIR = PROFILES_DIR / package_examples.EXAMPLE_DIR
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _load(folder: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return [r for r in found if "resourceType" in r]  # not package.json


def _references(node):
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def test_every_resource_profile_has_an_example():
    profiles = {
        sd["url"]
        for sd in _load(PROFILES_DIR)
        if sd["resourceType"] == "StructureDefinition"
        and sd.get("derivation") == "constraint"
        and sd["kind"] == "resource"
    }
    claimed = {p for r in _load(EXAMPLE_DIR) for p in r.get("meta", {}).get("profile", [])}
    assert len(profiles) >= 30
    assert profiles - claimed == set()
    assert claimed - profiles == set()


def test_references_resolve_inside_the_example_folder_and_ids_are_valid():
    resources = _load(EXAMPLE_DIR)
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(present) == len(resources), "two examples share a type and id"
    for r in resources:
        assert FHIR_ID.match(r["id"]), r["id"]
        assert (EXAMPLE_DIR / f"{r['resourceType']}-{r['id']}.json").is_file()
        assert r["text"]["status"] == "generated"
        for ref in _references(r):
            assert ref in present, f"{r['id']}: {ref} does not resolve"
            assert not ref.startswith("urn:uuid:")


def test_ids_are_readable_and_a_long_key_keeps_them_unique():
    short = {
        "identifier": [{"system": package_examples.IDENTIFIER_SYSTEM, "value": "urn:x|IVC-9|surgery[0]"}]
    }
    assert package_examples.resource_id("IVC-9", short) == "ivc-9-surgery-0"
    long_keys = [f"{'surgery[0].organs_resected' * 3}[{i}]" for i in range(2)]
    ids = [
        package_examples.resource_id(
            "IVC-9",
            {"identifier": [{"system": package_examples.IDENTIFIER_SYSTEM, "value": f"urn:x|IVC-9|{k}"}]},
        )
        for k in long_keys
    ]
    assert all(len(i) <= 64 and FHIR_ID.match(i) for i in ids)
    assert ids[0] != ids[1]

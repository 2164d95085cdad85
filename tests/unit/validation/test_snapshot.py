"""Snapshots: generated from base + differential, and cached on disk until profiles/ or the base change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.validation import definitions, snapshot
from service.validation.model import compile_snapshot

LAB = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-lab-result"


@pytest.fixture(scope="module")
def defs() -> definitions.Definitions:
    return definitions.load()


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    out = tmp_path / "profiles"
    out.mkdir()
    for path in definitions.package_files():
        shutil.copy(path, out / path.name)
    return out


def _element(snaps: dict, url: str, eid: str) -> dict:
    return next(e for e in snaps[url] if e["id"] == eid)


def test_snapshot_keeps_base_rules_and_adds_the_differential(defs):
    snaps = snapshot.generate_all(defs, definitions.PROFILES_DIR)
    status = _element(snaps, LAB, "Observation.status")
    assert status["min"] == 1  # profile
    assert status["binding"]["strength"] == "required"  # base R4
    code = _element(snaps, LAB, "Observation.code")
    assert code["binding"]["valueSet"] == "https://fhir.ivc-lms.org/ValueSet/ivclms-lab-test-vs"
    assert {c["key"] for c in _element(snaps, LAB, "Observation")["constraint"]} >= {
        "obs-6",
        "obs-7",
        "dom-2",
    }


def test_component_slices_get_the_children_of_component(defs):
    url = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-tumor-size"
    snaps = snapshot.generate_all(defs, definitions.PROFILES_DIR)
    ids = [e["id"] for e in snaps[url]]
    slices = [i for i in ids if i.startswith("Observation.component:") and i.count(".") == 1]
    assert slices
    for s in slices:
        assert f"{s}.code" in ids and f"{s}.value[x]" in ids
    root = compile_snapshot(snaps[url])
    assert root.children["component"][0].slices


def test_complex_extension_slices_unfold_the_extension_type(defs):
    url = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-ivc-segments"
    snaps = snapshot.generate_all(defs, definitions.PROFILES_DIR)
    ids = {e["id"] for e in snaps[url]}
    assert {"Extension.extension:from.url", "Extension.extension:from.value[x]"} <= ids
    assert _element(snaps, url, "Extension.extension:from.url")["fixedUri"] == "from"


def test_cache_is_reused_and_invalidated_when_a_profile_changes(defs, profiles, tmp_path):
    cache = tmp_path / "cache"
    first = snapshot.cached_snapshots(defs, profiles, cache)
    (written,) = cache.glob("snapshots-*.json")
    assert snapshot.cached_snapshots(defs, profiles, cache) == first
    assert list(cache.glob("snapshots-*.json")) == [written]

    lab = profiles / "StructureDefinition-ivclms-lab-result.json"
    sd = json.loads(lab.read_text())
    effective = next(e for e in sd["differential"]["element"] if e["id"] == "Observation.effective[x]")
    effective["min"] = 1
    lab.write_text(json.dumps(sd))
    changed_defs = definitions.load(profiles)
    second = snapshot.cached_snapshots(changed_defs, profiles, cache)
    (rewritten,) = cache.glob("snapshots-*.json")
    assert rewritten != written
    assert _element(first, LAB, "Observation.effective[x]")["min"] == 0
    assert _element(second, LAB, "Observation.effective[x]")["min"] == 1


def test_cache_key_depends_on_the_base_version(profiles):
    assert snapshot.cache_key(profiles, "a") != snapshot.cache_key(profiles, "b")
    assert snapshot.cache_key(profiles, "a") == snapshot.cache_key(profiles, "a")

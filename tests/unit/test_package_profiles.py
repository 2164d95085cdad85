"""Profiles, extensions, logical model and model map of profiles/: derived from the mapping, complete."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service import package_build, package_model
from service.codes import table
from service.mapping import spec as spec_module
from service.mapping.spec import PROFILE_PREFIX, spec
from service.package_profiles import ProfileError, builder

MAPPING_TEXT = "\n".join(
    line
    for line in (spec_module.MAPPINGS_DIR / "case-fhir.yaml").read_text().splitlines()
    if not line.lstrip().startswith("#")
)


def _sds() -> dict[str, dict[str, Any]]:
    return {
        r["url"]: r
        for r in package_build.scan(package_build.PROFILES_DIR).values()
        if r["resourceType"] == "StructureDefinition"
    }


def _elements(sd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in sd["differential"]["element"]}


@pytest.mark.parametrize("template", spec().templates, ids=lambda t: t.name)
def test_each_template_has_its_profile(template):
    sd = _sds()[template.profile]
    assert (sd["kind"], sd["type"], sd["derivation"]) == ("resource", template.resource_type, "constraint")
    assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{template.resource_type}"
    assert sd["title"] == template.title and template.description in sd["description"]
    elements = _elements(sd)
    assert elements[f"{template.resource_type}.identifier"]["min"] == 1
    must_support = [e for e in elements.values() if e.get("mustSupport")]
    assert len(must_support) >= 2
    if template.mcode:
        assert f"StructureDefinition/{template.mcode}" in sd["description"]
        assert {"identity": "mcode"}.items() <= sd["mapping"][1].items()


def test_every_project_extension_in_the_mapping_is_defined_with_its_context():
    urls = {PROFILE_PREFIX + name for name in re.findall(r"extension\(ext:([a-z0-9-]+)\)", MAPPING_TEXT)}
    assert len(urls) > 20
    sds = _sds()
    for url in urls:
        ext = sds[url]
        assert (ext["type"], ext["kind"]) == ("Extension", "complex-type")
        assert ext["context"], url
        assert _elements(ext)["Extension.url"]["fixedUri"] == url


def test_every_component_selector_is_a_slice_with_its_code_as_pattern():
    for template in spec().templates:
        sd = _sds()[template.profile]
        patterns = [
            (c["system"], c["code"])
            for e in sd["differential"]["element"]
            for c in e.get("patternCodeableConcept", {}).get("coding", [])
            if re.fullmatch(r"Observation\.component:\w+\.code", e["id"])
        ]
        for alias, code in re.findall(r"component\(([A-Z]+)\|([^)]+)\)", _template_text(template.name)):
            system = {
                **spec_module.systems(),
                "OBS": f"{spec_module.CANONICAL}/CodeSystem/ivclms-observation",
            }[alias]
            assert (system, code) in patterns, (template.name, code)


def _template_text(name: str) -> str:
    start = MAPPING_TEXT.index(f"  - name: {name}\n")
    end = MAPPING_TEXT.find("\n  - name: ", start + 1)
    return MAPPING_TEXT[start : end if end > 0 else None]


def test_every_code_table_field_is_bound_to_its_valueset():
    bound = {
        e["binding"]["valueSet"]
        for sd in _sds().values()
        for e in sd["differential"]["element"]
        if "binding" in e and e["binding"]["strength"] == "required"
    }
    for name in set(re.findall(r"as: (?:codeable|coding)\(([a-z0-9-]+)\)", MAPPING_TEXT)):
        assert table(name).valueset in bound, name


def test_a_fixed_code_is_a_pattern_on_the_profile():
    sd = _sds()[PROFILE_PREFIX + "tumor-size"]
    code = _elements(sd)["Observation.code"]
    assert code["min"] == 1
    assert code["patternCodeableConcept"] == {"coding": [{"system": "http://loinc.org", "code": "21889-1"}]}


def test_every_data_set_element_lands_in_a_profile():
    assert package_model.unmapped() == []


def test_docs_mapping_is_up_to_date():
    assert package_model.DOCS_FILE.read_text(encoding="utf-8") == package_model.render(), (
        "run: python -m service.package_model"
    )


def test_logical_model_has_an_element_per_field_and_the_map_uses_them():
    model = _sds()[package_model.MODEL_URL]
    assert (model["kind"], model["derivation"]) == ("logical", "specialization")
    ids = [e["id"] for e in model["differential"]["element"]]
    assert len(ids) == len(list(package_model.walk())) + 1
    aliases = {e["alias"][0] for e in model["differential"]["element"][1:]}
    assert aliases == {el.path for el in package_model.walk()}
    conceptmap = package_build.scan(package_build.PROFILES_DIR)["ConceptMap-ivclms-case-to-fhir.json"]
    profiles = {t.profile for t in spec().templates}
    codes = set()
    for group in conceptmap["group"]:
        assert group["source"] == package_model.MODEL_URL and group["target"] in profiles
        for element in group["element"]:
            codes.add(element["code"])
            assert all(t["code"] for t in element["target"])
    assert codes <= set(ids)
    leaves = {
        f"{package_model.MODEL_NAME}.{package_model.element_path(el.path)}"
        for el in package_model.walk()
        if el.leaf
    }
    assert leaves <= codes


def test_a_template_path_that_is_not_a_fhir_element_is_a_profile_error():
    text = """
version: "0"
resources:
  - name: broken
    resourceType: Observation
    each: outcome
    fields:
      - {field: vital_status, path: notAnElement, as: codeable(vital-status)}
"""
    broken = spec_module.load(text)
    with pytest.raises(ProfileError, match=r"broken.*notAnElement"):
        builder(broken, broken.templates[0])

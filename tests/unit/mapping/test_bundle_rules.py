"""Rule-based checks of the Bundle that need no golden file."""

from __future__ import annotations

import ast
import copy
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from service.mapping import forward, paths, reverse, spec
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.mapping.spec import IDENTIFIER_SYSTEM, PROFILE_PREFIX, MappingError, load
from service.model import validate_case

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"
RELATED = "http://hl7.org/fhir/StructureDefinition/condition-related"


def example(name: str = "ivclms-001") -> dict[str, Any]:
    path = next(p for p in EXAMPLES if p.name.startswith(name))
    return validate_case(json.loads(path.read_text()))


@pytest.fixture(params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def bundle(request: pytest.FixtureRequest) -> dict[str, Any]:
    return case_to_bundle(validate_case(json.loads(request.param.read_text())), now=NOW)


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def business_value(resource: dict[str, Any]) -> str:
    values = [i["value"] for i in resource.get("identifier", []) if i["system"] == IDENTIFIER_SYSTEM]
    assert len(values) == 1, resource["resourceType"]
    return str(values[0])


def test_bundle_is_a_transaction(bundle: dict[str, Any]):
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["entry"]


def test_every_reference_resolves_inside_the_bundle(bundle: dict[str, Any]):
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    for entry in bundle["entry"]:
        for ref in references(entry["resource"]):
            assert ref in full_urls, (entry["resource"]["resourceType"], ref)


def test_every_resource_is_profiled_and_identified(bundle: dict[str, Any]):
    for entry in bundle["entry"]:
        resource = entry["resource"]
        (profile,) = resource["meta"]["profile"]
        assert re.fullmatch(re.escape(PROFILE_PREFIX) + r"[a-z0-9-]+", profile)
        if resource["resourceType"] == "Provenance":
            continue
        value = business_value(resource)
        assert (
            entry["fullUrl"] == f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, IDENTIFIER_SYSTEM + '|' + value)}"
        )


def test_full_url_is_the_name_based_uuid_of_the_identifier():
    """spec.full_url formats the SHA-1 digest itself; RFC 4122 4.3 as Python's uuid.uuid5 implements it
    is the oracle, over enough names to meet all four variant nibbles and non-ASCII text."""
    names = [f"https://src.example/{i}|C-{i}|surgery[{i % 3}].renal_veins" for i in range(200)]
    names += ["https://hôpital.example/ü|Fall-ß|diagnosis", "", "|", "x" * 500]
    for name in names:
        expected = uuid.uuid5(uuid.NAMESPACE_URL, IDENTIFIER_SYSTEM + "|" + name)
        assert spec.full_url(name) == f"urn:uuid:{expected}"


def test_every_request_is_a_conditional_put_by_the_identifier(bundle: dict[str, Any]):
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert request["method"] == "PUT"
        if resource["resourceType"] == "Provenance":
            assert request["url"] == f"Provenance/{resource['id']}"
            continue
        url = urlsplit(request["url"])
        assert url.path == resource["resourceType"]
        assert "|" not in url.query and "#" not in url.query and "[" not in url.query
        assert parse_qs(url.query) == {"identifier": [f"{IDENTIFIER_SYSTEM}|{business_value(resource)}"]}


def test_provenance_covers_every_resource(bundle: dict[str, Any]):
    *entries, last = bundle["entry"]
    provenance = last["resource"]
    assert provenance["resourceType"] == "Provenance"
    assert [t["reference"] for t in provenance["target"]] == [e["fullUrl"] for e in entries]
    assert provenance["recorded"] == NOW
    assert provenance["policy"] == [f"https://fhir.ivc-lms.org/mapping/case-fhir/{spec.spec().version}"]
    assert provenance["agent"][0]["who"]["display"].startswith("urn:ivclms:")


def test_same_input_gives_byte_identical_output():
    case = example()
    first = json.dumps(case_to_bundle(case, now=NOW))
    assert json.dumps(case_to_bundle(copy.deepcopy(case), now=NOW)) == first


def test_element_keys_are_stable_paths():
    keys = {
        business_value(e["resource"]).rsplit("|", 1)[1]
        for e in case_to_bundle(example(), now=NOW)["entry"][:-1]
    }
    for key in (
        "patient",
        "diagnosis",
        "diagnosis.tumour_size[0]",
        "surgery[0]",
        "surgery[0].renal_veins[1]",
    ):
        assert key in keys
    assert {"therapies[0]", "therapies[1]", "follow_up[0]"} <= keys


def by_profile(bundle: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["meta"]["profile"] == [PROFILE_PREFIX + name]
    ]


def test_links_between_resources():
    bundle = case_to_bundle(example("ivclms-004"), now=NOW)
    url_of = {business_value(e["resource"]).rsplit("|", 1)[1]: e["fullUrl"] for e in bundle["entry"][:-1]}
    (primary,) = by_profile(bundle, "primary-cancer")
    assert primary["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "443719001",
        "display": "Leiomyosarcoma (disorder)",
    }
    for secondary in by_profile(bundle, "secondary-cancer"):
        assert paths.get(secondary, f"extension({RELATED}).valueReference.reference") == url_of["diagnosis"]
        assert secondary["code"]["coding"][0]["code"] == "128462008"
    for procedure in by_profile(bundle, "surgery"):
        assert procedure["reasonReference"] == [{"reference": url_of["diagnosis"]}]
    (plan,) = by_profile(bundle, "care-plan")
    outcomes = [a["outcomeReference"][0]["reference"] for a in plan["activity"] if "outcomeReference" in a]
    assert outcomes and all(ref in url_of.values() for ref in outcomes)


def test_graft_is_a_device_of_the_ivc_procedure():
    bundle = case_to_bundle(example(), now=NOW)
    (device,) = by_profile(bundle, "graft")
    (ivc,) = by_profile(bundle, "ivc-management")
    device_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is device)
    assert ivc["focalDevice"] == [{"manipulated": {"reference": device_url}}]


def test_an_unmapped_case_value_is_an_error_naming_it():
    case = example()
    case["diagnosis"]["growth_pattern"] = "spiral"
    with pytest.raises(MappingError, match=r"diagnosis\.growth_pattern.*'spiral'.*growth-pattern"):
        case_to_bundle(case, now=NOW)


def test_an_unknown_code_in_a_bundle_is_an_error_naming_it():
    bundle = case_to_bundle(example(), now=NOW)
    (size,) = by_profile(bundle, "tumor-size")
    size["method"] = {"coding": [{"system": "http://example.org", "code": "ruler"}]}
    with pytest.raises(MappingError, match="ruler"):
        bundle_to_case(bundle)


def test_reverse_ignores_resources_of_other_profiles():
    bundle = case_to_bundle(example(), now=NOW)
    bundle["entry"].append({"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Basic"}})
    assert bundle_to_case(bundle) == example()


def test_reverse_of_an_empty_bundle_is_an_error():
    with pytest.raises(MappingError, match="no IVC-LMS resource"):
        bundle_to_case({"resourceType": "Bundle", "type": "transaction", "entry": []})


def test_a_bad_converter_is_rejected_when_the_mapping_loads():
    text = (
        "version: '1'\nresources:\n  - {name: x, resourceType: Basic, each: patient,\n"
        "     fields: [{field: sex, path: code, as: colour}]}\n"
    )
    with pytest.raises(MappingError, match="colour"):
        load(text)


def test_template_names_are_unique_and_profiles_distinct():
    names = [t.name for t in spec.spec().templates]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("module", [forward, reverse, spec, paths], ids=lambda m: m.__name__)
def test_no_code_literals_in_python(module: Any):
    """Codes live in mappings/: no LOINC/SNOMED-like or code-system literals in the mapping engine."""
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert not re.fullmatch(r"\d{4,}(-\d)?", node.value), node.value
            assert "snomed" not in node.value and "loinc" not in node.value, node.value


def test_every_selector_code_is_declared_in_the_codes_section():
    """Component codes in selectors are listed as data (the project CodeSystem is generated from them)."""
    declared = {(c["system"], str(c["code"])) for c in spec.spec().codes.values()}
    for template in spec.spec().templates:
        for field in template.group.fields:
            for step in paths.parse(field.path):
                if step.coding is not None:
                    assert step.coding in declared, (template.name, field.path)

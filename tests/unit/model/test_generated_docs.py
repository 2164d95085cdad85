"""docs/case.schema.json and docs/case-model.md are generated from the schemas and kept up to date."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from service.codes import table
from service.model import docs, jsonschema
from tests.strategies import valid_cases
from tests.unit.model.conftest import EXAMPLES, ROOT, load_example

REGENERATE = "python -m service.model.{} > docs/{}"


def test_committed_json_schema_is_the_generated_one():
    committed = (ROOT / "docs" / "case.schema.json").read_text()
    assert committed == jsonschema.render(), "regenerate: " + REGENERATE.format(
        "jsonschema", "case.schema.json"
    )


def test_committed_case_model_doc_is_the_generated_one():
    committed = (ROOT / "docs" / "case-model.md").read_text()
    assert committed == docs.render(), "regenerate: " + REGENERATE.format("docs", "case-model.md")


def test_json_schema_shape():
    schema = jsonschema.case_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert all(d["additionalProperties"] is False for d in schema["$defs"].values())
    assert schema["required"] == ["case_id", "source_system", "patient", "diagnosis", "outcome"]
    ivc = schema["$defs"]["IvcManagement"]["properties"]
    # the values, then the data-absent reasons the table accepts (codes.yaml `absent:`)
    assert ivc["method"]["enum"] == [*table("ivc-management").keys(), "unknown"]
    assert ivc["graft_material"]["enum"] == [*table("graft-material").keys(), "unknown", None]
    diameter = ivc["graft_diameter_mm"]["anyOf"][0]
    assert diameter["anyOf"][1]["properties"]["unit"]["enum"] == ["mm", "cm"]
    grade = schema["$defs"]["Pathology"]["properties"]["fnclcc_grade"]
    assert grade["enum"] == [1, 2, 3, "unknown", "not_applicable", None]
    json.dumps(schema)  # serialisable


def test_every_field_has_a_description():
    schema = jsonschema.case_json_schema()
    for name, definition in [("case", schema), *schema["$defs"].items()]:
        for field, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_doc_covers_every_group_and_the_csv_layout():
    text = docs.render()
    for number in range(1, 12):
        assert f"\n## {number}. " in text
    assert "`surgery[].ivc_management.graft_material`" in text
    assert "| `follow_up.imaging` | 2 |" in text


# A small validator for the keywords the generated schema uses (no jsonschema dependency), enough to
# check that the schema accepts what validate_case accepts and rejects unknown fields.

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def conforms(value, spec, root):
    if "$ref" in spec:
        spec = root["$defs"][spec["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in spec and not any(conforms(value, s, root) for s in spec["anyOf"]):
        return False
    if "enum" in spec and not any(value == e and type(value) is type(e) for e in spec["enum"]):
        return False
    if "type" in spec:
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        if not any(_is_type(value, t) for t in types):
            return False
    if isinstance(value, dict) and "properties" in spec:
        if any(k not in spec["properties"] for k in value) or any(
            k not in value for k in spec.get("required", [])
        ):
            return False
        return all(conforms(v, spec["properties"][k], root) for k, v in value.items())
    if isinstance(value, list) and "items" in spec:
        return spec.get("minItems", 0) <= len(value) <= spec.get("maxItems", len(value)) and all(
            conforms(v, spec["items"], root) for v in value
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            return False
        if "maximum" in spec and value > spec["maximum"]:
            return False
    return not (isinstance(value, str) and len(value) < spec.get("minLength", 0))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_conform_to_the_json_schema(path):
    schema = jsonschema.case_json_schema()
    case = load_example(path)
    assert conforms(case, schema, schema)
    case["surgery"] = [{**s, "extra": 1} for s in case["surgery"]] or case["surgery"]
    case["patient"]["extra"] = 1
    assert not conforms(case, schema, schema)


def test_unit_objects_conform_to_the_json_schema():
    schema = jsonschema.case_json_schema()
    case = load_example()
    case["surgery"][0]["blood_loss_ml"] = {"value": 1.5, "unit": "L"}
    case["diagnosis"]["tumour_size"][0]["dimensions_cm"] = {"value": [90, 65], "unit": "mm"}
    assert conforms(case, schema, schema)
    case["surgery"][0]["blood_loss_ml"] = {"value": 1.5, "unit": "pint"}
    assert not conforms(case, schema, schema)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cases())
def test_generated_cases_conform_to_the_json_schema(case):
    schema = jsonschema.case_json_schema()
    assert conforms(case, schema, schema)

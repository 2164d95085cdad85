"""A grade may be a bound (data set, "Incomplete records": "a grade may be a bound (Clavien-Dindo
`< IIIa`). In FHIR: Quantity.comparator and Range").

FHIR R4 has no comparator on a CodeableConcept, so the bound is the grade in
``component(clavien-dindo).valueCodeableConcept`` and the comparator in the project modifier extension
``ivclms-grade-comparator`` on that component, with the codes of Quantity.comparator: "if the
comparator is "<" , then the real value is < stated value". It is a *modifier* extension (R4
BackboneElement.modifierExtension: "additional information that is not part of the basic definition of
the element and that modifies the understanding of the element in which it is contained"); a reader
that ignored it would read "Grade IIIa" for "< IIIa".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Unprocessable
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import flatten, read_csv, unflatten, write_csv
from service.model.fields import grades_within
from service.model.jsonschema import case_json_schema

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
COMPARATOR_URL = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-grade-comparator"
CLAVIEN_DINDO = ["I", "II", "IIIa", "IIIb", "IVa", "IVb", "V"]


def _case(grade: Any) -> dict[str, Any]:
    path = ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json"
    data = json.loads(path.read_text())
    data["postoperative"]["complications"][0]["clavien_dindo"] = grade
    return data


def _component(bundle: dict[str, Any]) -> dict[str, Any]:
    complication = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["meta"]["profile"][0].endswith("-complication")
    )
    found: dict[str, Any] = complication["component"][0]
    return found


def test_a_bound_on_a_grade_is_kept_as_given():
    case = validate_case(_case({"comparator": "<", "value": "IIIa"}))
    assert case["postoperative"]["complications"][0]["clavien_dindo"] == {"comparator": "<", "value": "IIIa"}


@pytest.mark.parametrize(
    ("grade", "message"),
    [
        ({"comparator": "<", "value": "I"}, "no grade is < I"),
        ({"comparator": ">", "value": "V"}, "no grade is > V"),
        ({"comparator": "<=", "value": "V"}, "the bound says nothing"),
        ({"comparator": "<", "value": "unknown"}, "the grade of a bound must be one of"),
        ({"comparator": "<", "value": "IV"}, "the grade of a bound must be one of"),
        ({"comparator": "~", "value": "II"}, "comparator must be one of: <, <=, >=, >"),
        ({"comparator": "<"}, "a bound on a grade is {comparator, value}"),
        ("<IIIa", "a bound on a grade is {comparator, value}"),
    ],
)
def test_a_bad_bound_names_the_element_and_the_rule(grade: Any, message: str):
    with pytest.raises(Unprocessable) as caught:
        validate_case(_case(grade))
    issue = caught.value.issues[0]
    assert issue.expression == "postoperative.complications[0].clavien_dindo"
    assert message in issue.diagnostics


def test_grades_within_a_bound_follow_the_table_order():
    assert grades_within({"comparator": "<", "value": "IIIa"}, CLAVIEN_DINDO) == ["I", "II"]
    assert grades_within({"comparator": "<=", "value": "IIIa"}, CLAVIEN_DINDO) == ["I", "II", "IIIa"]
    assert grades_within({"comparator": ">", "value": "IVa"}, CLAVIEN_DINDO) == ["IVb", "V"]
    assert grades_within({"comparator": ">=", "value": "IVb"}, CLAVIEN_DINDO) == ["IVb", "V"]
    assert grades_within("II", CLAVIEN_DINDO) == ["II"]
    assert grades_within("unknown", CLAVIEN_DINDO) == []


def test_the_bound_is_the_grade_with_a_comparator_modifier_extension():
    bundle = case_to_bundle(validate_case(_case({"comparator": "<", "value": "IIIa"})), now=NOW)
    component = _component(bundle)
    assert component["modifierExtension"] == [{"url": COMPARATOR_URL, "valueCode": "<"}]
    codes = {c["code"] for c in component["valueCodeableConcept"]["coding"]}
    assert "IIIa" in codes
    assert "extension" not in component  # a plain extension could be ignored: it must be a modifier


def test_a_plain_grade_has_no_comparator():
    component = _component(case_to_bundle(validate_case(_case("IIIb")), now=NOW))
    assert "modifierExtension" not in component


@pytest.mark.parametrize("comparator", ["<", "<=", ">=", ">"])
def test_a_bound_round_trips(comparator: str):
    case = validate_case(_case({"comparator": comparator, "value": "IIIb"}))
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_a_stated_unknown_still_round_trips_as_data_absent_reason():
    case = validate_case(_case("unknown"))
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    component = _component(bundle)
    assert "dataAbsentReason" in component and "modifierExtension" not in component
    assert bundle_to_case(bundle) == case


def test_csv_writes_and_reads_a_bound_grade():
    case = validate_case(_case({"comparator": "<", "value": "IIIa"}))
    row = flatten(case)
    assert row["postoperative_complications1_clavien_dindo"] == "<IIIa"
    assert validate_case(unflatten(row)) == case
    ((_, back),) = read_csv(write_csv([case]))
    assert back == case


def test_csv_reads_a_spaced_bound_and_a_plain_grade():
    case = validate_case(_case("II"))
    row = flatten(case)
    row["postoperative_complications1_clavien_dindo"] = ">= IIIa"
    assert validate_case(unflatten(row))["postoperative"]["complications"][0]["clavien_dindo"] == {
        "comparator": ">=",
        "value": "IIIa",
    }


def test_json_schema_offers_the_bound_on_the_grade():
    schema = case_json_schema()
    (complication,) = [d for name, d in schema["$defs"].items() if name.startswith("Complication")]
    grade = complication["properties"]["clavien_dindo"]
    (bound,) = [s for s in _subschemas(grade) if s.get("type") == "object"]
    assert bound["properties"]["comparator"] == {"enum": ["<", "<=", ">=", ">"]}
    assert bound["properties"]["value"] == {"enum": CLAVIEN_DINDO}


def _subschemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = [schema]
    for sub in schema.get("anyOf", []):
        out += _subschemas(sub)
    return out

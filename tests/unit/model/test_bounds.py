"""Bounds and ranges (data set, "Incomplete records": "A measurement may be a bound (`> 75 %`, `< 2 cm`)
or a range (`90-95 %`) ... In FHIR: Quantity.comparator and Range").

Oracles, FHIR R4: Quantity.comparator "How the value should be understood and represented - whether
the actual value is greater or less than the stated value due to measurement issues; e.g. if the
comparator is "<" , then the real value is < stated value" (codes < | <= | >= | >); Range "A set of
ordered Quantities defined by a low and high limit", rng-2 "If present, low SHALL have a lower value than
high".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Unprocessable
from service.mapping import paths
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import flatten, read_csv, unflatten, write_csv

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
UCUM = "http://unitsofmeasure.org"
LUMINAL = "extension(https://fhir.ivc-lms.org/StructureDefinition/ivclms-luminal-occlusion)"


def _case() -> dict[str, Any]:
    path = ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json"
    case = validate_case(json.loads(path.read_text()))
    case["diagnosis"]["luminal_occlusion_percent"] = {"low": 90, "high": 95}
    case["pathology"]["neoadjuvant_response_percent"] = {"comparator": ">", "value": 75}
    case["pathology"]["closest_margin_mm"] = {"comparator": "<", "value": 1}
    case["surgery"][0]["blood_loss_ml"] = {"low": 500, "high": 800}
    case["presentation"]["symptoms"][0]["duration_months"] = {"comparator": ">", "value": 12}
    return validate_case(case)


def _resource(bundle: dict[str, Any], profile_end: str) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["meta"]["profile"][0].endswith(profile_end)
    )


def test_bounds_and_ranges_round_trip():
    case = _case()
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_a_bound_is_quantity_comparator():
    bundle = case_to_bundle(_case(), now=NOW)
    response = _resource(bundle, "ivclms-neoadjuvant-response")
    assert response["valueQuantity"] == {
        "value": 75,
        "comparator": ">",
        "unit": "%",
        "system": UCUM,
        "code": "%",
    }
    margin = _resource(bundle, "ivclms-resection-margin")
    distance = paths.get(margin, "component(http://loinc.org|33737-8).valueQuantity")
    assert (distance["comparator"], distance["value"], distance["code"]) == ("<", 1, "mm")


def test_a_range_is_a_range_with_low_below_high():
    bundle = case_to_bundle(_case(), now=NOW)
    condition = _resource(bundle, "ivclms-primary-cancer")
    span = paths.get(condition, f"{LUMINAL}.valueRange")
    assert span == {
        "low": {"value": 90, "unit": "%", "system": UCUM, "code": "%"},
        "high": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
    }
    assert paths.get(condition, f"{LUMINAL}.valueQuantity") is None


def test_units_convert_inside_bounds_and_ranges():
    case = _case()
    case["surgery"][0]["blood_loss_ml"] = {"low": 0.5, "high": 0.8, "unit": "L"}
    case["pathology"]["closest_margin_mm"] = {"comparator": "<", "value": 0.1, "unit": "cm"}
    out = validate_case(case)
    assert out["surgery"][0]["blood_loss_ml"] == {"low": 500, "high": 800}
    assert out["pathology"]["closest_margin_mm"] == {"comparator": "<", "value": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"comparator": "~", "value": 5}, "comparator must be one of: <, <=, >=, >"),
        (
            {"low": 95, "high": 90},
            "a range needs low < high (a single value is given as a plain number, not a range)",
        ),
        ({"low": 90}, "must be a number, {value, unit}, a bound {comparator, value} or a range {low, high}"),
        ({"comparator": ">", "value": 120}, "must be at most 100"),
        (  # outside (clinician) review: the CSV's "90-95" got "must be a number", no word of 90..95
            "90-95",
            "must be a number, a bound (>75, <=2) or a range written with two dots (90..95); in JSON "
            "{comparator, value} or {low, high}",
        ),
    ],
)
def test_bad_bounds_are_refused_naming_the_element(value: Any, message: str):
    case = _case()
    case["diagnosis"]["luminal_occlusion_percent"] = value
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert [(i.expression, i.diagnostics) for i in raised.value.issues] == [
        ("diagnosis.luminal_occlusion_percent", f"diagnosis.luminal_occlusion_percent: {message}")
    ]


def test_csv_cells_for_bounds_and_ranges():
    row = flatten(_case())
    assert row["diagnosis_luminal_occlusion_percent"] == "90..95"
    assert row["pathology_neoadjuvant_response_percent"] == ">75"
    assert row["pathology_closest_margin_mm"] == "<1"
    assert row["surgery1_blood_loss_ml"] == "500..800"
    assert validate_case(unflatten(row)) == _case()


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (">=75", {"comparator": ">=", "value": 75}),
        ("> 75", {"comparator": ">", "value": 75}),
        ("90 .. 95.5", {"low": 90, "high": 95.5}),
        ("80", 80),
    ],
)
def test_csv_bound_spellings(cell: str, expected: Any):
    row = flatten(_case())
    row["pathology_neoadjuvant_response_percent"] = cell
    assert validate_case(unflatten(row))["pathology"]["neoadjuvant_response_percent"] == expected


def test_csv_file_round_trip_keeps_bounds():
    case = _case()
    ((_line, read),) = read_csv(write_csv([case]))
    assert read == case


@pytest.mark.parametrize(
    ("path", "bound", "words"),
    [
        (("diagnosis", "luminal_occlusion_percent"), {"comparator": ">", "value": 100}, "no value is > 100"),
        (("pathology", "closest_margin_mm"), {"comparator": "<", "value": 0}, "no value is < 0"),
        (("surgery", 0, "blood_loss_ml"), {"comparator": "<", "value": 0}, "no value is < 0"),
    ],
)
def test_a_bound_past_the_scale_is_refused(path, bound, words):
    """ "> 100 %" or "< 0 mm" admits no value the element may take (a percentage is 0-100, a margin or a
    blood loss is not negative): as impossible as 101 %, and refused like it, naming the element."""
    case = _case()
    node = case
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bound
    with pytest.raises(Unprocessable) as caught:
        validate_case(case)
    named = ".".join(str(p) for p in path).replace(".0.", "[0].")
    assert [i.diagnostics for i in caught.value.issues if i.expression == named] == [
        f"{named}: {words}: " + ("the scale ends at 100" if ">" in words else "the scale starts at 0")
    ]


@pytest.mark.parametrize("bound", [{"comparator": ">=", "value": 100}, {"comparator": "<=", "value": 0}])
def test_a_bound_at_the_end_of_the_scale_still_admits_that_end(bound):
    case = _case()
    case["diagnosis"]["luminal_occlusion_percent"] = bound
    assert validate_case(case)["diagnosis"]["luminal_occlusion_percent"] == bound

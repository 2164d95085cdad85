"""Bounds and ranges on laboratory results (data set, "Incomplete records": "A measurement may be a
bound (`> 75 %`, `< 2 cm`) or a range (`90-95 %`) ... In FHIR: Quantity.comparator and Range").

Case reports give "creatinine < 90 umol/L" and "LDH > 250 U/L". FHIR R4 Quantity.comparator: "if the
comparator is "<" , then the real value is < stated value"; Range: "A set of ordered Quantities defined
by a low and high limit". The unit of a result is its own field (the test's canonical UCUM unit), so
the mapping writes it into the Quantity (or both ends of the Range) and reads it back from there.
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
from service.model.csv_flat import flatten, unflatten

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
UCUM = "http://unitsofmeasure.org"
UMOL_PER_MG_DL = 88.42
"""Creatinine: 1 mg/dL = 88.42 umol/L (service.model.units.LAB_CONVERSIONS; molar mass 113.12 g/mol)."""


def _case(*labs: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(
        (ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json").read_text()
    )
    data["diagnosis"]["labs"] = [{"date": "2018-02-01", **lab} for lab in labs]
    return validate_case(data)


def _labs(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The Observations of ``diagnosis.labs[*]`` (by their business identifier's element key)."""
    resources = [e["resource"] for e in bundle["entry"]]
    return [r for r in resources if "|diagnosis.labs[" in r.get("identifier", [{}])[0].get("value", "")]


def test_a_bound_is_kept_and_converted_to_the_canonical_unit():
    case = _case({"test": "creatinine", "value": {"comparator": "<", "value": 90}, "unit": "umol/L"})
    lab = case["diagnosis"]["labs"][0]
    assert lab["unit"] == "mg/dL"
    assert lab["value"]["comparator"] == "<"
    assert lab["value"]["value"] == pytest.approx(90 / UMOL_PER_MG_DL, abs=0.01)


def test_a_bound_is_quantity_comparator_with_the_results_unit():
    case = _case({"test": "ldh", "value": {"comparator": ">", "value": 250}, "unit": "U/L"})
    (lab,) = _labs(case_to_bundle(case, now=NOW))
    assert lab["valueQuantity"] == {
        "value": 250,
        "comparator": ">",
        "unit": "U/L",
        "system": UCUM,
        "code": "U/L",
    }
    assert "valueRange" not in lab


def test_a_range_is_value_range_with_the_unit_on_both_ends():
    case = _case({"test": "ldh", "value": {"low": 200, "high": 250}, "unit": "U/L"})
    (lab,) = _labs(case_to_bundle(case, now=NOW))
    end = {"unit": "U/L", "system": UCUM, "code": "U/L"}
    assert lab["valueRange"] == {"low": {"value": 200, **end}, "high": {"value": 250, **end}}
    assert "valueQuantity" not in lab


def test_plain_bound_and_range_results_round_trip():
    case = _case(
        {"test": "creatinine", "value": 1.1, "unit": "mg/dL"},
        {"test": "creatinine", "value": {"comparator": "<", "value": 90}, "unit": "umol/L"},
        {"test": "ldh", "value": {"low": 200, "high": 250}, "unit": "U/L"},
        {"test": "ldh", "value": {"comparator": ">=", "value": 250}, "unit": "U/L"},
    )
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_a_quantity_that_is_not_ucum_is_refused_on_read():
    case = _case({"test": "ldh", "value": 265, "unit": "U/L"})
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    (lab,) = _labs(bundle)
    lab["valueQuantity"]["system"] = "http://example.org/units"
    with pytest.raises(Exception, match="UCUM"):
        bundle_to_case(bundle)


def test_csv_reads_and_writes_a_bound_result():
    case = _case({"test": "ldh", "value": {"comparator": ">", "value": 250}, "unit": "U/L"})
    row = flatten(case)
    assert row["diagnosis_labs1_value"] == ">250"
    assert validate_case(unflatten(row)) == case
    row["diagnosis_labs1_value"] = "200..250"
    assert validate_case(unflatten(row))["diagnosis"]["labs"][0]["value"] == {"low": 200, "high": 250}


def test_a_reversed_range_names_the_element_and_the_rule():
    with pytest.raises(Unprocessable) as caught:
        _case({"test": "ldh", "value": {"low": 250, "high": 200}, "unit": "U/L"})
    issue = caught.value.issues[0]
    assert issue.expression == "diagnosis.labs[0].value"
    assert "low < high" in issue.diagnostics

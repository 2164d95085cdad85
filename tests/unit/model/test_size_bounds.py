"""A bound on the largest tumour dimension ("> 10 cm"; data set, "Incomplete records": "A measurement
may be a bound (`> 75 %`, `< 2 cm`) ... In FHIR: Quantity.comparator").

Decision: only the largest (first) dimension may be a bound, so ``dimensions_cm`` stays a list of 1-3
sizes, largest first, and each still lands in its LOINC component (33728-7 "Size.maximum dimension in
Tumor" for the largest, with Quantity.comparator). After ``<``/``<=`` the other dimensions must be
below / not above the bound; after ``>``/``>=`` any size fits.
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
from service.registry import summary

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
LOINC = "http://loinc.org"


def _case(dimensions: Any, pathology: Any = None) -> dict[str, Any]:
    data = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())
    data["diagnosis"]["tumour_size"] = [{"dimensions_cm": dimensions, "method": "imaging", "date": None}]
    if pathology is not None:
        data["pathology"]["tumour_size_cm"] = pathology
    return validate_case(data)


def test_the_largest_dimension_may_be_a_bound():
    case = _case([{"comparator": ">", "value": 10}, 6])
    assert case["diagnosis"]["tumour_size"][0]["dimensions_cm"] == [{"comparator": ">", "value": 10}, 6]


def test_a_bound_in_mm_is_converted_to_cm():
    case = _case({"value": [{"comparator": "<", "value": 20}], "unit": "mm"})
    assert case["diagnosis"]["tumour_size"][0]["dimensions_cm"] == [{"comparator": "<", "value": 2}]


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        ([8, {"comparator": ">", "value": 10}], "only the largest (first) dimension may be a bound"),
        ([{"comparator": "<", "value": 5}, 6], "the largest is < 5"),
        ([{"comparator": "<", "value": 5}, 5], "the largest is < 5"),
        ([{"comparator": "~", "value": 5}], "comparator one of"),
        ([{"low": 5, "high": 6}], "a bound on the largest dimension is {comparator, value}"),
        ([{"comparator": ">", "value": 0}], "greater than 0"),
        ([{"comparator": ">", "value": 10}, 3, 4], "largest first"),
    ],
)
def test_a_bad_size_bound_names_the_element_and_the_rule(dimensions: Any, message: str):
    with pytest.raises(Unprocessable) as caught:
        _case(dimensions)
    issue = caught.value.issues[0]
    assert issue.expression == "diagnosis.tumour_size[0].dimensions_cm"
    assert message in issue.diagnostics


def test_a_bound_after_which_a_larger_second_size_fits():
    # "> 10" with a 12 cm second dimension: the largest is at least 12, consistent
    assert _case([{"comparator": ">", "value": 10}, 12])


def test_the_bound_is_quantity_comparator_on_the_maximum_dimension_and_round_trips():
    case = _case([{"comparator": ">", "value": 10}, 6, 4], pathology=[{"comparator": ">=", "value": 11}])
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    sizes = [e["resource"] for e in bundle["entry"] if "|diagnosis.tumour_size[0]" in str(e["resource"])]
    components = sizes[0]["component"]
    maximum = next(c for c in components if c["code"]["coding"][0] == {"system": LOINC, "code": "33728-7"})
    assert maximum["valueQuantity"]["comparator"] == ">" and maximum["valueQuantity"]["value"] == 10
    assert bundle_to_case(bundle) == case


def test_csv_writes_and_reads_a_bound_largest_dimension():
    case = _case([{"comparator": ">", "value": 10}, 6])
    row = flatten(case)
    assert row["diagnosis_tumour_size1_dimensions_cm"] == ">10;6"
    assert validate_case(unflatten(row)) == case


def test_the_summary_leaves_a_bound_size_out_of_the_numbers_and_counts_it():
    bounded = _case([{"comparator": ">", "value": 10}, 6], pathology=[{"comparator": ">", "value": 10}])
    plain = _case([8, 5])
    found = summary.summarise([bounded, plain])
    assert found["tumour_size_cm"] | {} == {
        "n": 1,
        "mean": 8.0,
        "median": 8.0,
        "min": 8,
        "max": 8,
        "missing": 0,
        "imprecise": 1,
    }
    assert found["tumour_dimensions_cm"][0]["imprecise"] == 1
    assert found["tumour_dimensions_cm"][1]["n"] == 2  # the second dimension is a number in both
    assert found["pathological_tumour_size_cm"]["imprecise"] == 1
    assert found["precision"]["measurements_bound"] == 2
    assert "1 bound or range left out" in summary.render_html(found)

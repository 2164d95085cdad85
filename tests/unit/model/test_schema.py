"""Loading: the canonical form, unknown fields, types, units."""

from __future__ import annotations

from typing import Any

import pytest

from service.codes import table
from service.errors import Unprocessable
from service.model import validate_case
from tests.unit.model.conftest import EXAMPLES, load_example


def problems(data: Any) -> list[str]:
    with pytest.raises(Unprocessable) as caught:
        validate_case(data)
    return [issue.diagnostics for issue in caught.value.issues]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_loads_to_itself(path):
    case = load_example(path)
    assert validate_case(case) == case


def test_loading_keeps_the_example_key_order(example):
    assert list(validate_case(example)) == list(example)
    assert list(validate_case(example)["surgery"][0]) == list(example["surgery"][0])


def test_input_does_not_change(example):
    before = repr(example)
    validate_case(example)
    assert repr(example) == before


def test_omitted_optional_fields_come_back_as_null_and_empty_lists():
    minimal = {
        "case_id": "C1",
        "source_system": "urn:test",
        "patient": {
            "identifier": {"system": "urn:mrn", "value": "1"},
            "sex": "female",
            "age_at_diagnosis": 55,
        },
        "diagnosis": {
            "date": "2020-01-01",
            "basis": "imaging",
            "ivc_segment_from": "I",
            "ivc_segment_to": "II",
        },
        "outcome": {"vital_status": "alive", "last_contact": "2021-01-01"},
    }
    case = validate_case(minimal)
    assert case["institution"] is None
    assert case["surgery"] == [] and case["therapies"] == [] and case["follow_up"] == []
    assert case["presentation"] is None and case["pathology"] is None and case["care_plan"] is None
    assert case["patient"]["history"] == [] and case["patient"]["smoking"] is None
    assert case["diagnosis"]["labs"] == [] and case["diagnosis"]["growth_pattern"] is None
    assert case["outcome"]["death_date"] is None
    assert validate_case(case) == case


def test_null_lists_become_empty_and_empty_groups_become_null(example):
    example["surgery"][0]["renal_veins"] = None
    example["surgery"][0]["organs_resected"] = None
    example["presentation"] = {"date": None, "symptoms": [], "incidental": None}
    case = validate_case(example)
    assert case["surgery"][0]["renal_veins"] == []
    assert case["presentation"] is None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(colour="blue"), "colour: unknown field"),
        (lambda c: c["patient"].update(eyes="brown"), "patient.eyes: unknown field"),
        (
            lambda c: c["patient"]["identifier"].update(use="official"),
            "patient.identifier.use: unknown field",
        ),
        (
            lambda c: c["surgery"][0]["ivc_management"].update(x=1),
            "surgery[0].ivc_management.x: unknown field",
        ),
        (
            lambda c: c["therapies"][0]["radiotherapy"].update(x=1),
            "therapies[0].radiotherapy.x: unknown field",
        ),
        (lambda c: c["follow_up"][0]["imaging"][0].update(x=1), "follow_up[0].imaging[0].x: unknown field"),
        (lambda c: c["care_plan"]["activities"][3].update(x=1), "care_plan.activities[3].x: unknown field"),
    ],
)
def test_unknown_fields_are_errors_at_every_level(example, mutate, expected):
    mutate(example)
    assert problems(example) == [expected]


@pytest.mark.parametrize(
    ("mutate", "expected", "code"),
    [
        (lambda c: c.pop("case_id"), "case_id: required", "required"),
        (lambda c: c.pop("patient"), "patient: required", "required"),
        (lambda c: c["patient"].pop("sex"), "patient.sex: required", "required"),
        (lambda c: c["surgery"][0].pop("ivc_management"), "surgery[0].ivc_management: required", "required"),
        (lambda c: c["diagnosis"].update(date=None), "diagnosis.date: must not be null", "invalid"),
        (
            lambda c: c["patient"].update(sex="f"),
            "patient.sex: must be one of: female, male, other, unknown",
            "invalid",
        ),
        (
            lambda c: c["pathology"].update(fnclcc_grade=4),
            "pathology.fnclcc_grade: must be one of: 1, 2, 3, unknown, not_applicable",
            "invalid",
        ),
        (
            lambda c: c["pathology"].update(fnclcc_grade="2"),
            "pathology.fnclcc_grade: must be one of: 1, 2, 3, unknown, not_applicable",
            "invalid",
        ),
        (
            lambda c: c["diagnosis"].update(date="20.02.2021"),
            "diagnosis.date: must be a date YYYY, YYYY-MM or YYYY-MM-DD",
            "invalid",
        ),
        (
            lambda c: c["diagnosis"].update(date="2021-02-30"),
            "diagnosis.date: must be a valid calendar date (2021-02 has 28 days)",
            "invalid",
        ),
        (
            lambda c: c["presentation"].update(incidental="no"),
            "presentation.incidental: must be true or false",
            "invalid",
        ),
        (
            lambda c: c["surgery"][0].update(operative_time_min="345"),
            "surgery[0].operative_time_min: must be a number",
            "invalid",
        ),
        (
            lambda c: c["surgery"][0].update(transfusion_units=1.5),
            "surgery[0].transfusion_units: must be a whole number",
            "invalid",
        ),
        (
            lambda c: c["surgery"][0].update(blood_loss_ml=-1),
            "surgery[0].blood_loss_ml: must be at least 0",
            "invalid",
        ),
        (
            lambda c: c["diagnosis"].update(luminal_occlusion_percent=120),
            "diagnosis.luminal_occlusion_percent: must be at most 100",
            "invalid",
        ),
        (
            lambda c: c.update(institution=""),
            "institution: must not be empty (omit the field or use null)",
            "invalid",
        ),
        (
            lambda c: c.update(source_system="hospital a"),
            "source_system: must be an absolute URI (scheme:...)",
            "invalid",
        ),
        (lambda c: c.update(surgery={}), "surgery: must be a list", "invalid"),
        (lambda c: c.update(patient=[]), "patient: must be an object", "invalid"),
        (
            lambda c: c["diagnosis"]["tumour_size"][0].update(dimensions_cm=[6.0, 9.0]),
            "diagnosis.tumour_size[0].dimensions_cm: dimensions must be given largest first",
            "invalid",
        ),
        (
            lambda c: c["diagnosis"]["tumour_size"][0].update(dimensions_cm=[4, 3, 2, 1]),
            "diagnosis.tumour_size[0].dimensions_cm: must be a list of 1 to 3 numbers",
            "invalid",
        ),
    ],
)
def test_field_errors_name_the_path(example, mutate, expected, code):
    mutate(example)
    with pytest.raises(Unprocessable) as caught:
        validate_case(example)
    issues = caught.value.issues
    assert [i.diagnostics for i in issues] == [expected]
    assert issues[0].code == code
    assert issues[0].expression == expected.split(":")[0]
    assert caught.value.status == 422


def test_all_problems_are_reported_together(example):
    example["patient"].pop("sex")
    example["surgery"][0]["bar"] = 1
    example["follow_up"][0]["disease_status"] = "cured"
    found = problems(example)
    assert "patient.sex: required" in found
    assert "surgery[0].bar: unknown field" in found
    assert any(p.startswith("follow_up[0].disease_status: must be one of: ned,") for p in found)


def test_a_non_object_case_is_an_error():
    assert problems([1, 2]) == ["case: must be an object"]


def test_allowed_values_come_from_the_code_tables(example):
    example["surgery"][0]["ivc_management"]["method"] = "stent"
    allowed = ", ".join([*table("ivc-management").keys(), "unknown"])
    assert problems(example) == [f"surgery[0].ivc_management.method: must be one of: {allowed}"]


# ---- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_value", "get_value", "expected"),
    [
        (
            lambda c, v: c["diagnosis"]["tumour_size"][0].update(dimensions_cm=v),
            lambda c: c["diagnosis"]["tumour_size"][0]["dimensions_cm"],
            ({"value": [90, 65, 60], "unit": "mm"}, [9.0, 6.5, 6.0]),
        ),
        (
            lambda c, v: c["pathology"].update(tumour_size_cm=v),
            lambda c: c["pathology"]["tumour_size_cm"],
            ({"value": [85], "unit": "mm"}, [8.5]),
        ),
        (
            lambda c, v: c["surgery"][0]["ivc_management"].update(graft_diameter_mm=v),
            lambda c: c["surgery"][0]["ivc_management"]["graft_diameter_mm"],
            ({"value": 2, "unit": "cm"}, 20.0),
        ),
        (
            lambda c, v: c["pathology"].update(closest_margin_mm=v),
            lambda c: c["pathology"]["closest_margin_mm"],
            ({"value": 0.25, "unit": "cm"}, 2.5),
        ),
        (
            lambda c, v: c["surgery"][0].update(operative_time_min=v),
            lambda c: c["surgery"][0]["operative_time_min"],
            ({"value": 5.75, "unit": "h"}, 345.0),
        ),
        (
            lambda c, v: c["surgery"][0].update(blood_loss_ml=v),
            lambda c: c["surgery"][0]["blood_loss_ml"],
            ({"value": 1.5, "unit": "L"}, 1500.0),
        ),
        (
            lambda c, v: c["presentation"]["symptoms"][0].update(duration_months=v),
            lambda c: c["presentation"]["symptoms"][0]["duration_months"],
            ({"value": 91, "unit": "days"}, 2.9897),
        ),
        (
            lambda c, v: c["presentation"]["symptoms"][0].update(duration_months=v),
            lambda c: c["presentation"]["symptoms"][0]["duration_months"],
            ({"value": 6, "unit": "weeks"}, 1.3799),
        ),
        (
            lambda c, v: c["postoperative"].update(length_of_stay_days=v),
            lambda c: c["postoperative"]["length_of_stay_days"],
            ({"value": 2, "unit": "weeks"}, 14.0),
        ),
        (
            lambda c, v: c["therapies"][1].update(duration_months=v),
            lambda c: c["therapies"][1]["duration_months"],
            ({"value": 0.5, "unit": "years"}, 6.0),
        ),
        (
            lambda c, v: c["therapies"][0]["radiotherapy"].update(dose_per_fraction_gy=v),
            lambda c: c["therapies"][0]["radiotherapy"]["dose_per_fraction_gy"],
            ({"value": 180, "unit": "cGy"}, 1.8),
        ),
        (
            lambda c, v: c["diagnosis"]["tumour_size"][0].update(dimensions_cm=v),
            lambda c: c["diagnosis"]["tumour_size"][0]["dimensions_cm"],
            ({"value": [9, 6.5], "unit": "cm"}, [9, 6.5]),
        ),
    ],
)
def test_measures_in_another_unit_are_converted(example, set_value, get_value, expected):
    given, canonical = expected
    set_value(example, given)
    case = validate_case(example)
    assert get_value(case) == canonical
    assert validate_case(case) == case


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["surgery"][0].update(operative_time_min={"value": 3, "unit": "days"}),
            "surgery[0].operative_time_min: unit 'days' is not allowed; allowed units: min, h",
        ),
        (
            lambda c: c["diagnosis"]["tumour_size"][0].update(dimensions_cm={"value": [3], "unit": "in"}),
            "diagnosis.tumour_size[0].dimensions_cm: unit 'in' is not allowed; allowed units: mm, cm",
        ),
        (
            lambda c: c["surgery"][0].update(blood_loss_ml={"value": 3}),
            "surgery[0].blood_loss_ml: a measure object needs both value and unit",
        ),
        (
            lambda c: c["surgery"][0].update(blood_loss_ml={"value": 3, "unit": "L", "when": "x"}),
            "surgery[0].blood_loss_ml: unknown field(s) when; a measure is {value, unit}, a bound "
            "{comparator, value} or a range {low, high}",
        ),
        (
            lambda c: c["therapies"][0]["radiotherapy"].update(boost_gy={"value": 5, "unit": "Gray"}),
            "therapies[0].radiotherapy.boost_gy: unit 'Gray' is not allowed; allowed units: Gy, cGy",
        ),
        (
            lambda c: c["therapies"][1].update(duration_months={"value": 5, "unit": "fortnights"}),
            "therapies[1].duration_months: unit 'fortnights' is not allowed; "
            "allowed units: days, weeks, months, years",
        ),
    ],
)
def test_unknown_units_name_the_field_and_allowed_units(example, mutate, expected):
    mutate(example)
    assert problems(example) == [expected]


@pytest.mark.parametrize(
    ("test", "given", "value", "unit"),
    [
        ("creatinine", {"value": 123.8, "unit": "umol/L"}, 1.4001, "mg/dL"),
        ("creatinine", {"value": 123.8, "unit": "µmol/L"}, 1.4001, "mg/dL"),
        ("hemoglobin", {"value": 119, "unit": "g/L"}, 11.9, "g/dL"),
        ("calcium", {"value": 2.5, "unit": "mmol/L"}, 10.02, "mg/dL"),
        ("egfr", {"value": 82.0, "unit": "mL/min/{1.73_m2}"}, 82.0, "mL/min/{1.73_m2}"),
    ],
)
def test_lab_results_are_converted_to_the_table_unit(example, test, given, value, unit):
    example["postoperative"]["renal_function"][0] = {"test": test, "date": None, **given}
    lab = validate_case(example)["postoperative"]["renal_function"][0]
    assert (lab["value"], lab["unit"]) == (value, unit)


@pytest.mark.parametrize(
    ("test", "unit", "allowed"),
    [
        ("egfr", "mL/min", "mL/min/{1.73_m2}"),
        ("creatinine", "mg/L", "mg/dL, umol/L, µmol/L"),
        ("ldh", "IU/L", "U/L"),
    ],
)
def test_lab_units_must_be_the_tables(example, test, unit, allowed):
    example["diagnosis"]["labs"][0].update(test=test, unit=unit)
    assert problems(example) == [
        f"diagnosis.labs[0].unit: unit {unit!r} is not allowed for {test}; allowed units: {allowed}"
    ]


# ---- derived values ---------------------------------------------------------------------------


def test_age_is_derived_from_birth_date(example):
    example["patient"]["age_at_diagnosis"] = None
    assert validate_case(example)["patient"]["age_at_diagnosis"] == 52
    example["patient"]["birth_date"] = "1968-02-21"  # birthday the day after diagnosis
    assert validate_case(example)["patient"]["age_at_diagnosis"] == 52
    example["patient"]["birth_date"] = "1968-02-20"
    assert validate_case(example)["patient"]["age_at_diagnosis"] == 53


def test_age_without_birth_date_is_kept(example):
    example["patient"]["birth_date"] = None
    example["patient"]["age_at_diagnosis"] = 60
    assert validate_case(example)["patient"]["age_at_diagnosis"] == 60


def test_follow_up_months_are_derived_from_date(example):
    example["follow_up"][0]["months_after_surgery"] = None
    example["follow_up"][0]["date"] = "2021-10-12"  # 183 days after surgery
    assert validate_case(example)["follow_up"][0]["months_after_surgery"] == 6.0


def test_a_follow_up_in_months_stays_an_interval(example):
    """Data set, "Incomplete records": intervals "stay intervals, in the unit given"; "24 months after
    surgery" names no day, so none is derived and stored as if recorded."""
    example["follow_up"][0]["date"] = None
    example["follow_up"][0]["months_after_surgery"] = 24
    follow_up = validate_case(example)["follow_up"][0]
    assert (follow_up["date"], follow_up["months_after_surgery"]) == (None, 24)


def test_follow_up_months_in_another_unit(example):
    example["follow_up"][0]["date"] = None
    example["follow_up"][0]["months_after_surgery"] = {"value": 1, "unit": "years"}
    follow_up = validate_case(example)["follow_up"][0]
    assert (follow_up["date"], follow_up["months_after_surgery"]) == (None, 12.0)


def test_follow_up_months_count_from_the_first_surgery(example):
    """The interval is bounded from the earliest operation (2021-04-12), not from the one listed first:
    48 months after it is past the last contact (2024-04-20) by more than a month's rounding."""
    second = {**example["surgery"][0], "date": "2021-06-01", "organs_resected": [], "renal_veins": []}
    example["surgery"].insert(0, second)
    example["care_plan"]["activities"][1]["performed"] = "surgery[1]"
    example["follow_up"][0]["date"] = None
    example["follow_up"][0]["months_after_surgery"] = 36
    assert validate_case(example)["follow_up"][0]["date"] is None
    example["follow_up"][0]["months_after_surgery"] = 48
    with pytest.raises(Unprocessable) as caught:
        validate_case(example)
    assert any(
        i.expression == "follow_up[0].months_after_surgery"
        and "(surgery[1].date 2021-04-12)" in i.diagnostics
        and "after outcome.last_contact" in i.diagnostics
        for i in caught.value.issues
    ), caught.value.issues


def test_follow_up_without_surgery_keeps_what_is_given(example):
    example["surgery"] = []
    example["postoperative"] = None
    example["care_plan"]["activities"] = [
        a for a in example["care_plan"]["activities"] if a["kind"] != "surgery"
    ]
    example["follow_up"][0]["date"] = None
    follow_up = validate_case(example)["follow_up"][0]
    assert (follow_up["date"], follow_up["months_after_surgery"]) == (None, 12.0)


def test_surveillance_period_in_months_is_converted_to_years(example):
    example["care_plan"]["activities"][3]["for_years"] = {"value": 60, "unit": "months"}
    assert validate_case(example)["care_plan"]["activities"][3]["for_years"] == 5.0

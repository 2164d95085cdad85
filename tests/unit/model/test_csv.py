"""The case series CSV: layout, round trip, row errors."""

from __future__ import annotations

import copy

import pytest

from service.errors import Unprocessable
from service.model import validate_case
from service.model.csv_flat import MAX_ENTRIES, column_names, flatten, read_csv, unflatten, write_csv
from tests.unit.model.conftest import EXAMPLES, load_example


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_round_trip_through_a_row(path):
    case = validate_case(load_example(path))
    assert validate_case(unflatten(flatten(case))) == case


def test_examples_round_trip_through_a_file():
    cases = [validate_case(load_example(p)) for p in EXAMPLES]
    results = read_csv(write_csv(cases))
    assert [n for n, _ in results] == list(range(2, len(cases) + 2))  # file lines; the header is line 1
    assert [c for _, c in results] == cases


def test_column_names_are_readable_paths(example):
    row = flatten(example)
    assert row["case_id"] == "IVC-001"
    assert row["patient_identifier_system"] == "urn:ivclms:example:hospital-a:mrn"
    assert row["patient_history2_text"] == "hypertension"
    assert row["surgery1_ivc_management_method"] == "interposition_graft"
    assert row["surgery1_ivc_management_graft_diameter_mm"] == "20"
    assert row["surgery1_renal_veins2_management"] == "sacrificed_with_nephrectomy"
    assert row["surgery2_date"] == ""
    assert row["diagnosis_tumour_size1_dimensions_cm"] == "9.0;6.5;6.0"
    assert row["diagnosis_adjacent_organ_invasion"] == "right_kidney"
    assert row["diagnosis_labs1_unit"] == "mL/min/{1.73_m2}"
    assert row["diagnosis_hepatic_vein_involvement"] == "false"
    assert row["therapies1_radiotherapy_total_dose_gy"] == "50.4"
    assert row["follow_up1_months_after_surgery"] == "12.0"
    assert row["follow_up1_imaging1_findings"] == "no recurrence, graft patent"
    assert row["care_plan_activities4_every_months"] == "6"
    assert row["reference"] == ""


def test_every_row_has_every_column_once(example):
    names = column_names()
    assert len(names) == len(set(names))
    assert list(flatten(example)) == names


def test_every_repeating_group_has_a_maximum():
    groups = {name for name in MAX_ENTRIES}
    assert "surgery" in groups and "follow_up.imaging" in groups
    assert MAX_ENTRIES["surgery"] == 2
    assert MAX_ENTRIES["therapies"] == 6
    assert MAX_ENTRIES["follow_up"] == 8


def test_more_entries_than_columns_is_a_clear_error(example):
    example["surgery"] = [copy.deepcopy(example["surgery"][0]) for _ in range(3)]
    example["follow_up"][0]["imaging"] *= 3
    with pytest.raises(Unprocessable) as caught:
        flatten(example)
    assert [i.diagnostics for i in caught.value.issues] == [
        "surgery: 3 entries; the CSV layout holds at most 2",
        "follow_up[0].imaging: 3 entries; the CSV layout holds at most 2",
    ]


def test_columns_may_be_left_out():
    text = (
        "case_id,source_system,patient_identifier_system,patient_identifier_value,patient_sex,"
        "patient_age_at_diagnosis,diagnosis_date,diagnosis_basis,diagnosis_ivc_segment_from,"
        "diagnosis_ivc_segment_to,outcome_vital_status,outcome_last_contact\n"
        "C1,urn:test,urn:mrn,1,female,55,2020-01-01,imaging,I,II,alive,2021-01-01\n"
    )
    [(number, case)] = read_csv(text)
    assert number == 2
    assert isinstance(case, dict)
    assert case["patient"]["age_at_diagnosis"] == 55
    assert case["surgery"] == []


def test_row_errors_carry_the_row_number(example):
    good = flatten(example)
    bad_graft = {**good, "surgery1_ivc_management_graft_material": ""}
    bad_types = {**good, "surgery1_operative_time_min": "long", "presentation_incidental": "maybe"}
    text = write_rows([good, bad_graft, bad_types])
    results = read_csv(text)
    assert [n for n, _ in results] == [2, 3, 4]
    assert results[0][1] == example
    second, third = results[1][1], results[2][1]
    assert isinstance(second, Unprocessable) and isinstance(third, Unprocessable)
    assert [i.diagnostics for i in second.issues] == [
        "line 3: surgery1_ivc_management_graft_material: required when method is "
        "patch_cavoplasty or interposition_graft"
    ]
    assert [i.diagnostics for i in third.issues] == [
        "line 4: presentation_incidental: must be true or false",
        "line 4: surgery1_operative_time_min: must be a number",
    ]
    assert third.issues[1].expression == "surgery[0].operative_time_min"


def test_a_gap_in_a_repeating_group_is_reported_not_renumbered(example):
    row = flatten(example)
    row["therapies3_kind"] = "chemotherapy"
    row["therapies3_timing"] = "adjuvant"
    row = {k: v for k, v in row.items() if not k.startswith("therapies2_")}
    [(_, error)] = read_csv(write_rows([row]))
    assert isinstance(error, Unprocessable)
    assert "line 2: therapies2_kind: required" in [i.diagnostics for i in error.issues]


def test_unknown_columns_are_rejected():
    with pytest.raises(Unprocessable) as caught:
        read_csv("case_id,colour\nC1,blue\n")
    assert [i.diagnostics for i in caught.value.issues] == ["header: unknown column colour"]
    with pytest.raises(Unprocessable):
        unflatten({"colour": "blue"})


def test_a_row_with_too_many_cells_is_an_error():
    [(number, error)] = read_csv("case_id\nC1,extra\n")
    assert number == 2
    assert isinstance(error, Unprocessable)
    assert error.issues[0].diagnostics == "line 2: more cells than header columns"


def test_text_with_separators_quotes_and_newlines_survives(example):
    example["diagnosis"]["biopsy_result"] = 'spindle cells; "LMS",\nline two'
    [(_, case)] = read_csv(write_csv([example]))
    assert case == example


def write_rows(rows):
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
    return out.getvalue()


def test_code_and_date_cells_are_trimmed_and_a_bom_is_ignored(example):
    row = flatten(example)
    row["patient_sex"] = " female "
    row["diagnosis_date"] = "2021-02-20 "
    [(_, case)] = read_csv("\ufeff" + write_rows([row]))
    assert case == example


@pytest.mark.parametrize("cell", ["\u0661\u0662\u0660", "\uff11\uff12\uff10", "nan", "inf"])
def test_a_number_cell_is_ascii_digits_only(example, cell):
    """Python's float() takes Arabic-Indic and fullwidth digits, nan and inf; a sheet's number is none of
    them (FHIR decimal: "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?")."""
    row = {**flatten(example), "surgery1_operative_time_min": cell}
    [(_line, found)] = read_csv(write_rows([row]))
    assert isinstance(found, Unprocessable), found
    assert [i.diagnostics for i in found.issues] == ["line 2: surgery1_operative_time_min: must be a number"]

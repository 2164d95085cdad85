"""Case and Bundle files: the example case series, CSV import per row, JSON and Bundle checks."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from service import case_files
from service.case_files import (
    EXAMPLE_SERIES,
    CaseFileError,
    bundle_file_name,
    check_instant,
    example_series_csv,
    import_rows,
    load_json,
    map_case,
    unmap_bundle,
)
from service.errors import Unprocessable
from service.mapping.spec import MappingError
from service.model.csv_flat import read_csv

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"


def examples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in EXAMPLES]


def series_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(EXAMPLE_SERIES.read_text(), newline="")))


def write_rows(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---- the example case series --------------------------------------------------------------------


def test_example_series_is_write_csv_of_the_json_examples():
    """Fails when an example changes and the CSV was not regenerated:
    ``python -m service.case_files --write-example-csv``."""
    with open(EXAMPLE_SERIES, encoding="utf-8", newline="") as file:
        assert file.read() == example_series_csv()


def test_example_series_holds_every_example_in_file_order():
    assert len(EXAMPLES) == 9
    assert [case for _, case in read_csv(EXAMPLE_SERIES.read_text())] == examples()


def test_the_generator_writes_the_series(tmp_path, monkeypatch, capsys):
    target = tmp_path / "series.csv"
    monkeypatch.setattr(case_files, "EXAMPLE_SERIES", target)
    assert case_files.main(["--write-example-csv"]) == 0
    assert target.read_text() == example_series_csv()
    assert str(target) in capsys.readouterr().out
    assert case_files.main([]) == 2


# ---- import_rows --------------------------------------------------------------------------------


def test_import_of_the_example_series_maps_every_row():
    report = import_rows(EXAMPLE_SERIES.read_text(), NOW)
    assert report.summary() == "9 cases imported, 0 rows rejected"
    assert [r.number for r in report.imported] == list(range(1, 10))
    assert [unmap_bundle(r.bundle) for r in report.imported] == examples()
    assert [r.bundle for r in report.imported] == [map_case(case, now=NOW) for case in examples()]
    assert all(r.issues == () for r in report.rows)


def test_broken_rows_are_rejected_with_their_numbers_and_the_others_kept():
    rows = series_rows()
    rows[1]["patient_sex"] = "robot"
    rows[4]["diagnosis_date"] = ""
    report = import_rows(write_rows(rows), NOW)
    assert report.summary() == "7 cases imported, 2 rows rejected"
    assert [(r.number, r.bundle) for r in report.rejected] == [(2, None), (5, None)]
    assert [i.diagnostics for r in report.rejected for i in r.issues] == [
        "line 3: patient_sex: must be one of: female, male, other, unknown",
        "line 6: diagnosis_date: required",
    ]
    assert [r.case_id for r in report.imported] == ["IVC-001", "IVC-003", "IVC-004"] + [
        f"IVC-00{n}" for n in range(6, 10)
    ]


def test_a_row_that_fails_mapping_is_rejected_alone(monkeypatch):
    real = case_files.case_to_bundle

    def failing(case: dict[str, Any], *, now: str) -> dict[str, Any]:
        if case["case_id"] == "IVC-003":
            raise MappingError("diagnosis.growth_pattern: value 'spiral' is not mapped")
        return real(case, now=now)

    monkeypatch.setattr(case_files, "case_to_bundle", failing)
    report = import_rows(EXAMPLE_SERIES.read_text(), NOW)
    [rejected] = report.rejected
    assert (rejected.number, rejected.case_id, rejected.bundle) == (3, "IVC-003", None)
    assert [i.diagnostics for i in rejected.issues] == [
        "line 4: diagnosis_growth_pattern: value 'spiral' is not mapped"
    ]
    assert len(report.imported) == 8


def test_a_repeated_case_id_is_rejected_not_overwritten():
    rows = series_rows()
    rows.append(copy.deepcopy(rows[0]))
    report = import_rows(write_rows(rows), NOW)
    [rejected] = report.rejected
    assert rejected.number == 10
    assert [i.diagnostics for i in rejected.issues] == [
        "line 11: case_id: IVC-001 is already the case of line 2"
    ]


def test_an_unknown_header_column_rejects_the_file():
    with pytest.raises(Unprocessable, match="header: unknown column colour"):
        import_rows("case_id,colour\nC1,blue\n", NOW)


def test_a_column_given_twice_rejects_the_file():
    """Review 15, M5: a header with ``patient_sex`` twice (female, then male) was accepted and the last
    cell kept. A column given twice has no one value, so the file is refused naming it, as an unknown
    column is (docs/case-model.md: "an unknown column, or a column given twice, is an error")."""
    [row] = series_rows()[:1]
    assert row["patient_sex"] == "female"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([[*row, "patient_sex"], [*row.values(), "male"]])
    doubled = out.getvalue()
    with pytest.raises(Unprocessable) as caught:
        import_rows(doubled, NOW)
    [issue] = caught.value.issues
    assert issue.diagnostics == "header: column patient_sex given more than once"
    assert issue.expression == "patient_sex"


def test_an_empty_series_imports_nothing():
    assert import_rows("", NOW).summary() == "0 cases imported, 0 rows rejected"


# ---- JSON, instants, Bundles, file names --------------------------------------------------------


def test_load_json_names_the_file_and_position():
    with pytest.raises(CaseFileError) as caught:
        load_json('{\n  "case_id": }', "case.json")
    assert str(caught.value) == "case.json: not valid JSON: Expecting value (line 2, column 14)"
    assert load_json('\ufeff{"a": 1}', "x") == {"a": 1}


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00Z", "2026-01-01T10:00:00.123+02:00"])
def test_instants_are_accepted(value):
    assert check_instant(value) == value


@pytest.mark.parametrize("value", ["2026-01-01", "2026-01-01T00:00Z", "2026-01-01T00:00:00", "now"])
def test_non_instants_are_rejected(value):
    with pytest.raises(ValueError, match="not an instant"):
        check_instant(value)


def test_map_case_validates_first():
    case = examples()[0]
    case["surgery"][0]["ivc_management"]["graft_material"] = None
    with pytest.raises(Unprocessable) as caught:
        map_case(case, now=NOW)
    assert [i.diagnostics for i in caught.value.issues] == [
        "surgery[0].ivc_management.graft_material: required when method is "
        "patch_cavoplasty or interposition_graft"
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a FHIR Bundle (not a JSON object)"),
        ({"resourceType": "Patient"}, "not a FHIR Bundle (resourceType: 'Patient')"),
        ({"resourceType": "Bundle", "entry": {}}, "Bundle.entry must be a list of objects"),
        ({"resourceType": "Bundle", "entry": [{"resource": "x"}]}, "Bundle.entry must be a list of objects"),
    ],
)
def test_what_is_not_a_bundle_is_a_case_file_error(data, message):
    with pytest.raises(CaseFileError, match=re.escape(message)):
        unmap_bundle(data)


def test_a_bundle_of_the_wrong_shape_inside_is_a_mapping_error():
    bundle = map_case(examples()[0], now=NOW)
    bundle["entry"][0]["resource"]["identifier"] = "x"
    with pytest.raises(MappingError, match="unexpected shape"):
        unmap_bundle(bundle)


@pytest.mark.parametrize(
    ("case_id", "name"),
    [
        ("IVC-001", "IVC-001.bundle.json"),
        ("../etc/x", "..%2Fetc%2Fx.bundle.json"),
        ("a b%c", "a%20b%25c.bundle.json"),
    ],
)
def test_bundle_file_names_stay_in_the_directory(case_id, name):
    assert bundle_file_name(case_id) == name

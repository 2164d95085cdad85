"""A published case series reproduced to the paper's precision (issue 15).

tests/data/published/ann-vasc-surg-2016-ivc-lms.csv holds what Ann Vasc Surg 2016;33:245-251 says of
each patient (README.md cites it). The paper: "There were 2 males (66.7%) and 1 female (33.3%). Mean
age at diagnosis was 60.3 years (range 43-78)" (an en dash in the paper). The summary's statistics
and its page cells must print exactly that from the per-patient values.

ann-vasc-surg-2016-ivc-lms.cases.csv holds the same patients in the project's CSV case-series format,
with only what the paper says. The case model requires a diagnosis date, which the paper does not
give for any patient, so the service refuses every row for that element alone: the test pins that
blocker (README.md, "What blocks a full case"), so that the day the model can say "unknown" for it,
this test fails and the rows can become cases.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from service.case_files import import_rows
from service.registry import summary

PUBLISHED = Path(__file__).resolve().parents[2] / "data" / "published"
DATA = PUBLISHED / "ann-vasc-surg-2016-ivc-lms.csv"
CASES = PUBLISHED / "ann-vasc-surg-2016-ivc-lms.cases.csv"
NOW = "2026-01-01T00:00:00Z"
"""A fixed import clock (no row holds a date, so it only has to be a valid instant)."""


def rows(path: Path = DATA) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_mean_age_and_range_as_the_paper_prints_them():
    ages = [int(row["age_at_diagnosis_years"]) for row in rows()]
    stats = summary.describe(ages)
    assert (stats["mean"], stats["min"], stats["max"]) == (60.3, 43, 78)
    assert summary._range(stats, "mean") == "60.3 (43-78); n = 3"


def test_sex_as_the_paper_prints_it():
    sexes = Counter(row["sex"] for row in rows())
    assert summary._pct(sexes["male"], 3) == "2 (66.7%)"
    assert summary._pct(sexes["female"], 3) == "1 (33.3%)"


def _series_summary() -> dict:
    """The summary of these three patients as far as the paper lets it be computed: its sex counts
    and age statistics from the per-patient rows, every other figure empty (no case can be built,
    see the module docstring)."""
    table = summary.summarise([])
    patients = rows()
    table["cases"] = len(patients)
    table["sex"] = {**table["sex"], **Counter(row["sex"] for row in patients)}
    table["age_at_diagnosis_years"] = summary.describe(
        [int(row["age_at_diagnosis_years"]) for row in patients]
    )
    return table


def test_the_summary_page_prints_the_papers_age_and_sex_cells():
    """The paper: "Mean age at diagnosis was 60.3 years (range 43-78)" and "There were 2 males
    (66.7%) and 1 female (33.3%)"; the page prints the same figures at the same precision."""
    page = summary.render_html(_series_summary())
    assert "<td>Age at diagnosis, years: mean (range)</td><td class=n>60.3 (43-78); n = 3</td>" in page
    assert "<td>Sex: Male</td><td class=n>2 (66.7%)</td>" in page
    assert "<td>Sex: Female</td><td class=n>1 (33.3%)</td>" in page


def test_the_summary_json_prints_the_papers_mean_and_range():
    """The JSON carries 60.3, 43 and 78 as numbers that print as the paper does (not 60.333...)."""
    printed = json.loads(json.dumps(_series_summary()))["age_at_diagnosis_years"]
    assert (printed["n"], printed["mean"], printed["min"], printed["max"]) == (3, 60.3, 43, 78)
    assert '"mean": 60.3,' in json.dumps(_series_summary()["age_at_diagnosis_years"])


def test_every_row_quotes_its_sentence():
    for row in rows():
        assert f"{row['age_at_diagnosis_years']}-year-old" in row["paper_sentence"]
        assert ("man" if row["sex"] == "male" else "woman") in row["paper_sentence"]


def test_the_case_format_rows_say_only_what_the_paper_says():
    """Each value of the case-format file traces to the patient's sentences of the abstract."""
    quoted = {row["patient"]: row for row in rows()}
    for case in rows(CASES):
        paper = quoted[case["patient_identifier_value"]]
        text = f"{paper['paper_sentence']} {paper['paper_more']}"
        assert (case["patient_sex"], case["patient_age_at_diagnosis"]) == (
            paper["sex"],
            paper["age_at_diagnosis_years"],
        )
        if case["diagnosis_tumour_size1_dimensions_cm"]:
            assert f"{case['diagnosis_tumour_size1_dimensions_cm']}-cm IVC" in text
        segment = "II" if "middle segment of the IVC" in text else "unknown"
        assert (case["diagnosis_ivc_segment_from"], case["diagnosis_ivc_segment_to"]) == (segment, segment)
        assert (case["presentation_incidental"] == "true") == ("incidentally" in text)
        # "All patients ... are alive with a mean overall survival of 21 months (range 12-30)."
        assert case["outcome_vital_status"] == "alive"
        assert case["diagnosis_basis"] == "unknown"


def test_the_service_refuses_the_rows_only_for_the_diagnosis_date_the_paper_does_not_give():
    report = import_rows(CASES.read_text(encoding="utf-8"), NOW)
    assert len(report.rows) == 3 and not report.imported
    for row in report.rejected:
        assert [(issue.code, issue.expression) for issue in row.issues] == [("required", "diagnosis.date")]
        assert row.issues[0].diagnostics == f"line {row.line}: diagnosis_date: required"

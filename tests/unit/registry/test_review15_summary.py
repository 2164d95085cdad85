"""Outside review 15 of the registry summary: findings that each had a failing case before the fix.

- Therapies stated as not given (``status: not_given``) or only ``planned`` were counted as given.
- Two partial dates equal at their coarser precision (diagnosis 2014, surgery 2014) made up a
  diagnosis-to-surgery gap from two midpoints (OS 28.5 vs follow-up after surgery 25.5).
- The summary and its Kaplan-Meier table rounded differently from the extract (37.19 vs 37.2).
- The page hid the not-recorded counts and the R0 rate's denominator; "Worst: Grade II" was printed
  while an ungraded complication also existed.
- A number Decimal cannot quantize at 2 decimals (1e27) raised InvalidOperation (a 500).
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import pytest

from service.codes import table
from service.model.validate import validate_case
from service.registry import docs, extract, outcomes, source, summary

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
BASE: dict[str, Any] = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())
DATED = ("date", "start", "end")


def _undated(value: Any) -> Any:
    """Every date of a case left out, so a test sets only the dates it is about."""
    if isinstance(value, dict):
        return {k: None if k in DATED and isinstance(v, str) else _undated(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undated(v) for v in value]
    return value


def operated(n: int, diagnosis: str, surgery: str, **outcome: Any) -> dict[str, Any]:
    data = _undated(copy.deepcopy(BASE))
    data["case_id"] = f"R15-{n}"
    data["patient"]["birth_date"] = None
    data["patient"]["age_at_diagnosis"] = 60
    data["diagnosis"]["date"] = diagnosis
    data["surgery"][0]["date"] = surgery
    data["follow_up"] = []
    data["outcome"] = {**data["outcome"], "last_contact": None, **outcome}
    return validate_case(data, now=NOW)


# ---- 2. therapies not given are not counted ------------------------------------------------------


def _with_therapy(status: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    chemo = {
        **copy.deepcopy(data["therapies"][0]),
        "kind": "chemotherapy",
        "timing": "adjuvant",  # the example has none: "any" tells too
        "status": status,
        "radiotherapy": None,
        "drugs": [],
        "stop_reason": None,
        "start": None,
        "end": None,
    }
    if status == "not_given":
        chemo["not_given_reason"] = "patient declined"
    data["therapies"].append(chemo)
    return validate_case(data, now=NOW)


@pytest.mark.parametrize("status", ["not_given", "planned"])
def test_a_therapy_not_given_or_only_planned_is_not_counted(status):
    found = summary.summarise([_with_therapy(status)])["therapy"]["adjuvant"]
    assert found == {"radiotherapy": 0, "chemotherapy": 0, "targeted_therapy": 0, "any": 0}


@pytest.mark.parametrize("status", ["completed", "in_progress", "stopped"])
def test_a_therapy_given_is_counted(status):
    found = summary.summarise([_with_therapy(status)])["therapy"]["adjuvant"]
    assert (found["chemotherapy"], found["any"]) == (1, 1)


def test_the_given_statuses_are_the_therapy_status_table_less_planned_and_not_given():
    assert set(table("therapy-status").keys()) - set(summary.GIVEN_STATUSES) == {"planned", "not_given"}
    assert "planned` and `not_given` were not given" in docs.render()


# ---- 3. no gap invented between equal partial dates ----------------------------------------------


def test_diagnosis_and_surgery_in_the_same_year_make_no_gap():
    """The reviewer's four cases: diagnosis 2014, surgery 2014, alive 21/25/26/30 months after
    surgery. OS and follow-up must agree with the follow-up after surgery: median 25.5 (21-30)."""
    cases = [
        operated(i, "2014", "2014", last_contact_months_after_surgery=m)
        for i, m in enumerate((21, 25, 26, 30))
    ]
    found = summary.summarise(cases)
    for key in ("follow_up_months", "follow_up_after_surgery_months"):
        assert (found[key]["median"], found[key]["min"], found[key]["max"]) == (25.5, 21, 30), key
    os_ = outcomes.overall_survival(cases[0])
    assert os_ is not None and (os_.reported_months, os_.imprecise) == (21, True)


def test_equal_partial_dates_span_zero_at_the_coarser_precision():
    assert outcomes.span("2014", "2014") == (0.0, "year")
    assert outcomes.span("2014", "2014-06") == (0.0, "year")
    assert outcomes.span("2014-06", "2014-06") == (0.0, "month")
    # a full date and a partial one keep the midpoint rule (docs: 2019-03-10 to 2019)
    assert outcomes.span("2019-03-10", "2019")[0] > 0  # type: ignore[index]


def test_same_year_gap_is_consistent_with_the_death_case():
    """Diagnosis 2012, surgery 2012, death 2014: OS = DFS (gap 0), as with the alive cases above."""
    case = operated(9, "2012", "2012", vital_status="dead", death_date="2014", last_contact="2014")
    os_, dfs = outcomes.overall_survival(case), outcomes.disease_free_survival(case)
    assert os_ is not None and dfs is not None
    assert os_.reported_months == dfs.reported_months == 24


# ---- 4. one rounding for extract and summary -----------------------------------------------------


def test_summary_and_km_use_the_extracts_rounding():
    # diagnosis 2021-02-20 to last contact 2024-04-20: 1155 days = 37.947 months; the extract says 37.9
    data = copy.deepcopy(BASE)
    case = validate_case(data, now=NOW)
    derived = extract.derived_values(case)
    found = summary.summarise([case])
    assert found["follow_up_months"]["median"] == derived["os_months"]
    km_times = [r["time_months"] for r in found["kaplan_meier"]["overall_survival"]["table"]]
    assert km_times == [derived["os_months"]]
    assert [r["time_months"] for r in found["kaplan_meier"]["disease_free_survival"]["table"]] == [
        derived["dfs_months"]
    ]
    assert round(derived["os_months"], 1) == derived["os_months"]


def test_a_year_only_death_and_a_censoring_at_the_same_rounded_time_share_a_row():
    """Review: the KM table put a year-only death at 24 before a censoring at 24.02."""
    dead = outcomes.TimeToEvent(24.016, 1, "year")
    alive = outcomes.TimeToEvent(24.02, 0, "exact")
    assert (dead.rounded_months, alive.rounded_months) == (24.0, 24.0)


# ---- 5 and 7. the page shows unknowns and denominators -------------------------------------------


def _complicated(n: int, complications: list[dict[str, Any]] | None, transfusion: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["case_id"] = f"C-{n}"
    data["surgery"][0]["transfusion_units"] = transfusion
    post = data["postoperative"]
    if complications is None:
        post["had_complications"], post["complications"] = None, []
    else:
        post["had_complications"] = bool(complications)
        post["complications"] = complications
    return validate_case(data, now=NOW)


def _cd(grade: str | None) -> dict[str, Any]:
    return {"type": "acute_kidney_injury", "text": None, "clavien_dindo": grade, "date": "2021-04-15"}


def _row(page: str, label: str) -> str:
    start = page.index(f"<td>{html.escape(label)}</td><td class=n>") + len(
        f"<td>{html.escape(label)}</td><td class=n>"
    )
    return page[start : page.index("</td>", start)]


def test_the_page_shows_not_recorded_counts_the_r0_denominator_and_grade_or_unknown():
    cases = [
        _complicated(1, [_cd("II"), _cd(None)], 2),  # worst known II, another ungraded
        _complicated(2, [_cd("II")], 0),
        _complicated(3, None, None),  # neither recorded
    ]
    found = summary.summarise(cases)
    assert found["complications"]["not_recorded"] == 1
    assert found["complications"]["highest_grade_or_higher_unknown"]["II"] == 1
    page = summary.render_html(found)
    assert _row(page, "Complications not recorded") == "1 (33.3%)"
    assert _row(page, "Transfusion not recorded") == "1 (33.3%)"
    assert _row(page, "Worst: Grade II or unknown") == "1 (33.3%)"
    assert _row(page, "Worst: Grade II") == "1 (33.3%)"  # only the certain one
    assert "(percentages of the 3 operated)" in page
    assert _row(page, "R0 rate (of 3 recorded margins: R0, R1 or R2)").endswith("of 3)")


def test_the_r0_rate_names_its_denominator_of_one():
    data = copy.deepcopy(BASE)
    data["pathology"]["margin"] = "R1"
    page = summary.render_html(summary.summarise([validate_case(data, now=NOW)]))
    assert _row(page, "R0 rate (of 1 recorded margin: R0, R1 or R2)") == "0.0% (0 of 1)"


# ---- 6. the date-filter rule is stated ----------------------------------------------------------


def test_the_partial_date_filter_rule_is_stated_on_the_page_and_in_the_docs():
    assert "both halves of the year" in source.DATE_FILTER_RULE
    assert source.DATE_FILTER_RULE in docs.render()
    assert html.escape(source.DATE_FILTER_RULE) in summary.render_html(summary.summarise([]))


# ---- 1. numbers Decimal cannot quantize ----------------------------------------------------------


def test_a_huge_number_is_summarised_not_an_error():
    assert summary._round(1e27) == 1e27
    found = summary.describe([1e27, 1.0])
    assert found["max"] == 1e27
    assert outcomes.rounded(1e30, "year") == 1e30
    km = summary.kaplan_meier([1e27, 5.0], [0, 1])
    assert km["table"][-1]["time_months"] == 1e27
    summary.render_html({**summary.summarise([]), "follow_up_months": found})

"""The case-series summary with incomplete records (issue 15): months kept as months, all tumour
dimensions, ungraded complications as unknown, the precision block and the Definitions on the page.

Issue 15: "Follow-up recorded as 21 / 25 / 26 / 30 months comes back as 20.99 / 25.49 / ... the
paper's 'median 25.5 (21-30) months' can never be printed. Keep an interval recorded in months as
months."
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

from service.model.validate import validate_case
from service.registry import outcomes, summary

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
BASE: dict[str, Any] = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())


def case_with(months_after_surgery: float, n: int) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["case_id"] = f"P-{n}"
    data["outcome"]["last_contact"] = None
    data["outcome"]["last_contact_months_after_surgery"] = months_after_surgery
    return validate_case(data, now=NOW)


def test_follow_up_recorded_in_months_gives_the_papers_median_and_range():
    cases = [case_with(m, i) for i, m in enumerate((21, 25, 26, 30))]
    found = summary.summarise(cases)["follow_up_after_surgery_months"]
    assert (found["median"], found["min"], found["max"]) == (25.5, 21, 30)
    page = summary.render_html(summary.summarise(cases))
    assert "25.5 (21-30); n = 4" in page


def test_an_interval_in_months_is_exact_and_dfs_uses_it():
    case = case_with(21, 0)
    dfs = outcomes.disease_free_survival(case)
    assert dfs is not None and dfs.exact and dfs.event == 0 and dfs.months == 21


def test_a_year_only_last_contact_is_taken_at_its_midpoint_and_counted():
    data = copy.deepcopy(BASE)
    data["outcome"]["last_contact"] = "2024"  # diagnosis 2021-02-20: midpoint of 2024 = 2024-07-01
    case = validate_case(data, now=NOW)
    os_ = outcomes.overall_survival(case)
    assert os_ is not None and not os_.exact
    assert os_.months == (dt.date(2024, 7, 1) - dt.date(2021, 2, 20)).days / 30.4375
    found = summary.summarise([case])
    assert found["precision"]["os_midpoint"] == 1 and found["precision"]["dates_year"] == 1
    assert "Overall survival times using a partial date at its midpoint" in summary.render_html(found)


def test_all_three_tumour_dimensions_with_mean_and_median():
    case = validate_case(copy.deepcopy(BASE), now=NOW)
    first = case["diagnosis"]["tumour_size"][0]["dimensions_cm"]
    dims = summary.summarise([case])["tumour_dimensions_cm"]
    assert [d["mean"] for d in dims[: len(first)]] == first
    assert [d["median"] for d in dims[: len(first)]] == first


def test_an_ungraded_complication_is_unknown_not_not_major():
    data = copy.deepcopy(BASE)
    data["postoperative"]["had_complications"] = True
    data["postoperative"]["complications"] = [
        {"type": "lower_limb_edema", "text": None, "clavien_dindo": None, "date": None}
    ]
    found = summary.summarise([validate_case(data, now=NOW)])["complications"]
    assert (found["major"], found["major_unknown"]) == (0, 1)


def test_the_page_states_time_zero_and_events():
    page = summary.render_html(summary.summarise([validate_case(copy.deepcopy(BASE), now=NOW)]))
    assert "<h2>Definitions</h2>" in page
    assert "time zero: date of diagnosis; event: death" in page
    assert "time zero: date of the first surgery" in page

"""Survival times at the precision their inputs allow (issue 15; docs/registry.md, "Survival precision"):

"a time is reported at the precision its inputs allow. Between full dates, or from intervals recorded in
months: as computed (the extract: 0.1 month). A time that used a month-precision date (`2019-06`) and
none coarser: whole months ... A time that used a year-only date (`2019`): whole months at most, and
flagged imprecise".

Hand-worked (midpoints: service.registry.outcomes.span; months = days / 30.4375):
- diagnosis 2019, last contact 2021 (alive): 2019-01-01 + 364 // 2 = 2019-07-02; 2021-01-01 + 364 // 2 =
  2021-07-02; 731 days = 24.016 months -> 24, imprecise.
- diagnosis 2019-03, death 2020-06: 2019-03-01 + 30 // 2 = 2019-03-16; 2020-06-01 + 29 // 2 =
  2020-06-15; 366 (29 Feb 2020) + 91 = 457 days = 15.014 months -> 15, not flagged.
- diagnosis 2019-03-10, last contact 2019-11-25: 260 days = 8.542 months -> 8.5 (exact, 0.1 month).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

from service.model.validate import validate_case
from service.registry import extract, outcomes, summary

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
NOT_OPERATED = ROOT / "examples" / "ivclms-007-segment-iii-unresectable-palliative.json"
BASE: dict[str, Any] = json.loads(NOT_OPERATED.read_text())


def _case(diagnosis: str, last: str, *, dead: bool = False, n: int = 0) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["case_id"] = f"S-{n}"
    data["diagnosis"]["date"] = diagnosis
    data["patient"]["birth_date"] = None
    data["patient"]["age_at_diagnosis"] = data["patient"]["age_at_diagnosis"] or 60
    for group in ("imaging", "tumour_size", "labs"):
        for entry in data["diagnosis"][group]:
            entry["date"] = None
    data["presentation"] = None
    data["care_plan"] = None
    data["follow_up"] = []
    data["therapies"] = []
    data["outcome"]["last_contact"] = last
    if dead:
        data["outcome"]["vital_status"] = "dead"
        data["outcome"]["death_date"] = last
    return validate_case(data, now=NOW)


def test_two_year_only_dates_give_whole_months_flagged_imprecise():
    os_ = outcomes.overall_survival(_case("2019", "2021"))
    assert os_ is not None
    assert round(os_.months, 2) == 24.02  # the midpoint arithmetic, with its false decimals
    assert (os_.reported_months, os_.precision, os_.imprecise) == (24, "year", True)
    derived = extract.derived_values(_case("2019", "2021"))
    assert (derived["os_months"], derived["os_imprecise"]) == (24, True)


def test_month_precision_dates_give_whole_months_not_flagged():
    case = _case("2019-03", "2020-06", dead=True)
    os_ = outcomes.overall_survival(case)
    assert os_ is not None and os_.event == 1
    assert round(os_.months, 3) == 15.014
    assert (os_.reported_months, os_.precision, os_.imprecise) == (15, "month", False)
    derived = extract.derived_values(case)
    assert (derived["os_months"], derived["os_imprecise"]) == (15, False)


def test_full_dates_keep_a_tenth_of_a_month():
    derived = extract.derived_values(_case("2019-03-10", "2019-11-25"))
    assert (derived["os_months"], derived["os_imprecise"]) == (8.5, False)


def test_a_year_only_end_beside_a_full_date_is_flagged():
    os_ = outcomes.overall_survival(_case("2019-03-10", "2021"))
    assert os_ is not None and os_.precision == "year"
    assert os_.reported_months == round(os_.months) != os_.months


def test_the_summary_uses_the_reported_months_and_counts_year_only_times():
    cases = [_case("2019", "2021", n=0), _case("2019-03", "2020-06", dead=True, n=1)]
    found = summary.summarise(cases)
    follow_up = found["follow_up_months"]
    assert (follow_up["min"], follow_up["max"], follow_up["median"]) == (15, 24, 19.5)
    precision = found["precision"]
    assert (precision["os_midpoint"], precision["os_year_only"]) == (2, 1)
    times = [row["time_months"] for row in found["kaplan_meier"]["overall_survival"]["table"]]
    assert times == [15, 24]
    page = summary.render_html(found)
    assert "one that used a year-only date is also flagged imprecise" in page

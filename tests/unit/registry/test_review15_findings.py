"""Outside review 15 of the registry (issue 15), second round: each test failed before its fix.

Contract (docs/registry.md): "an unknown is its own row, never a value and never dropped"; the data set,
"Unknown vs none": "none" is a real answer, unknown is not.

- H2: a partial death date was taken at the midpoint of its whole period, before the known last contact
  (death ``2020``, last contact 2020-11-20: OS 18 months, follow-up after surgery 21.6).
- M2: unknown vital status, lost to follow-up not recorded, and recurrence without any follow-up were
  printed as known zeros.
- M3: a Kaplan-Meier median "not reached" was printed for a curve with no case in it.
- M4: the segment filter dropped a tumour with one unknown end although its known end is involved.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from service.model.units import DAYS_PER_MONTH
from service.model.validate import validate_case
from service.registry import extract, outcomes, source, summary
from tests.unit.registry.test_review15_summary import BASE, NOW, _undated


def _case(n: int, diagnosis: str, surgery: str | None, *, follow_up=(), **outcome: Any) -> dict[str, Any]:
    """Example 001 with only the dates a test sets; ``follow_up``: (date, disease status) pairs."""
    data = _undated(copy.deepcopy(BASE))
    data["case_id"] = f"R15b-{n}"
    data["patient"]["birth_date"] = None
    data["patient"]["age_at_diagnosis"] = 60
    data["diagnosis"]["date"] = diagnosis
    template = data["follow_up"][0]
    if surgery is None:
        data["surgery"], data["postoperative"], data["pathology"], data["care_plan"] = [], None, None, None
    else:
        data["surgery"][0]["date"] = surgery
    data["follow_up"] = [
        {**copy.deepcopy(template), "date": date, "months_after_surgery": None, "disease_status": status}
        | ({"sites": ["local"]} if status == "local_recurrence" else {})
        for date, status in follow_up
    ]
    data["outcome"] = {**data["outcome"], "last_contact": None, **outcome}
    return validate_case(data, now=NOW)


def _months(start: str, end: dt.date) -> float:
    return (end - dt.date.fromisoformat(start)).days / DAYS_PER_MONTH


def _mid(low: dt.date, high: dt.date) -> dt.date:
    """docs/registry.md: "taken at the midpoint of the days it may still be"."""
    return low + (high - low) // 2


# ---- H2: a partial date is bounded by what the record proves ------------------------------------


def test_a_year_only_death_is_not_placed_before_the_last_contact():
    """The reviewer's case: diagnosis 2019-01-15, surgery 2019-02-01, follow-up 2020-11-20 ned, last
    contact 2020-11-20, dead, death date ``2020``. The death lies in 2020-11-20..2020-12-31."""
    case = _case(
        1,
        "2019-01-15",
        "2019-02-01",
        follow_up=[("2020-11-20", "ned")],
        vital_status="dead",
        death_date="2020",
        last_contact="2020-11-20",
    )
    death = _mid(dt.date(2020, 11, 20), dt.date(2020, 12, 31))
    os_, dfs = outcomes.overall_survival(case), outcomes.disease_free_survival(case)
    assert os_ is not None and dfs is not None and os_.event == dfs.event == 1
    assert os_.months == pytest.approx(_months("2019-01-15", death))
    assert dfs.months == pytest.approx(_months("2019-02-01", death))
    assert (os_.reported_months, dfs.reported_months) == (23, 22)  # were 18 and 17
    # never before the last day the patient is known alive (22.2 months after diagnosis)
    assert os_.months >= _months("2019-01-15", dt.date(2020, 11, 20))
    assert extract.derived_values(case)["os_months"] == 23
    found = summary.summarise([case])
    assert found["follow_up_months"]["median"] == 23
    assert found["follow_up_after_surgery_months"]["median"] == pytest.approx(21.6)  # 658 days, exact


def test_a_year_only_last_contact_is_not_before_a_follow_up_assessment():
    """Alive, assessed on 2020-11-20, last contact ``2020``: censored in 2020-11-20..2020-12-31."""
    case = _case(
        2,
        "2019-01-15",
        "2019-02-01",
        follow_up=[("2020-11-20", "ned")],
        vital_status="alive",
        last_contact="2020",
    )
    os_ = outcomes.overall_survival(case)
    assert os_ is not None and os_.event == 0
    assert os_.months == pytest.approx(
        _months("2019-01-15", _mid(dt.date(2020, 11, 20), dt.date(2020, 12, 31)))
    )


def test_a_year_only_recurrence_is_not_after_the_last_contact():
    """Recurrence seen in ``2021``, last contact 2021-03-10 (alive): the assessment lies in
    2021-01-01..2021-03-10, so the DFS event is not after the last contact."""
    case = _case(
        3,
        "2019-01-15",
        "2019-02-01",
        follow_up=[("2021", "local_recurrence")],
        vital_status="alive",
        last_contact="2021-03-10",
    )
    dfs = outcomes.disease_free_survival(case)
    assert dfs is not None and dfs.event == 1
    assert dfs.months == pytest.approx(_months("2019-02-01", _mid(dt.date(2021, 1, 1), dt.date(2021, 3, 10))))
    assert dfs.months <= _months("2019-02-01", dt.date(2021, 3, 10))


def test_bounds_that_contradict_the_date_are_not_applied():
    assert outcomes.span("2019-01-15", "2020", dt.date(2021, 1, 1)) == outcomes.span("2019-01-15", "2020")


# ---- M2: unknowns are their own row, never a known zero ------------------------------------------


def _row(rows: list[Any], title: str) -> str:
    found = [value for row in rows if isinstance(row, tuple) for key, value in [row] if key == title]
    assert len(found) == 1, (title, [r[0] for r in rows if isinstance(r, tuple)])
    return found[0]


def test_unknown_vital_status_is_not_counted_as_alive():
    """Six cases of unknown vital status: was "Deaths (of 6 cases) 0 (0.0%)" with no unknown row."""
    cases = [
        _case(i, "2019-01-15", None, vital_status="unknown", last_contact="2020-01-15") for i in range(6)
    ]
    found = summary.summarise(cases)
    assert found["outcome"]["vital_status"] == {"alive": 0, "dead": 0, "unknown": 6}
    rows = summary.table_rows(found)
    assert _row(rows, "Vital status unknown (of 6 cases)") == "6 (100.0%)"
    assert _row(rows, "Vital status: dead (of 0 known)") == "0"  # no percentage of nothing
    assert not [r for r in rows if isinstance(r, tuple) and r[0].startswith("Deaths")]


def test_lost_to_follow_up_not_recorded_is_unknown_not_no():
    cases = [
        _case(1, "2019-01-15", None, vital_status="alive", last_contact="2020-01-15", lost_to_follow_up=None),
        _case(
            2, "2019-01-15", None, vital_status="alive", last_contact="2020-01-15", lost_to_follow_up=False
        ),
        _case(3, "2019-01-15", None, vital_status="alive", last_contact="2020-01-15", lost_to_follow_up=True),
    ]
    found = summary.summarise(cases)
    assert found["outcome"]["lost_to_follow_up"] == {"yes": 1, "no": 1, "unknown": 1}
    rows = summary.table_rows(found)
    assert _row(rows, "Lost to follow-up: yes (of 2 recorded)") == "1 (50.0%)"
    assert _row(rows, "Lost to follow-up unknown (of 3 cases)") == "1 (33.3%)"


def test_no_recurrence_needs_evidence_of_follow_up_after_surgery():
    """Three operated cases with no follow-up and no last contact: was "Recurrence 0 (0.0%)"."""
    unseen = [
        _case(i, "2019-01-15", "2019-02-01", vital_status="alive", last_contact="unknown") for i in range(3)
    ]
    assert [outcomes.recurrence(c) for c in unseen] == [None, None, None]
    assert extract.derived_values(unseen[0])["recurrence"] is None
    found = summary.summarise(unseen)
    assert found["outcome"]["recurrence"] == {"yes": 0, "no": 0, "unknown": 3}
    assert found["precision"]["dfs_unknown"] == 3
    rows = summary.table_rows(found)
    assert _row(rows, "Recurrence unknown (of 3 operated)") == "3 (100.0%)"


def test_an_assessment_or_a_later_last_contact_is_evidence_of_no_recurrence():
    assessed = _case(
        1,
        "2019-01-15",
        "2019-02-01",
        follow_up=[("2019-08", "ned")],
        vital_status="alive",
        last_contact="unknown",
    )
    seen = _case(2, "2019-01-15", "2019-02-01", vital_status="alive", last_contact="2020-02-01")
    same_day = _case(3, "2019-01-15", "2019-02-01", vital_status="alive", last_contact="2019-02-01")
    recurred = _case(
        4,
        "2019-01-15",
        "2019-02-01",
        follow_up=[("2019-08", "local_recurrence")],
        vital_status="alive",
        last_contact="2020-02-01",
    )
    assert [outcomes.recurrence(c) for c in (assessed, seen, same_day, recurred)] == [
        False,
        False,
        None,
        True,
    ]
    found = summary.summarise([assessed, seen, same_day, recurred])
    assert found["outcome"]["recurrence"] == {"yes": 1, "no": 2, "unknown": 1}
    assert found["recurrences"] == 1
    assert _row(summary.table_rows(found), "Recurrence: yes (of 3 operated with follow-up)") == "1 (33.3%)"


# ---- M3: Kaplan-Meier median with no case in the curve -------------------------------------------


def test_a_curve_with_no_case_has_no_median_and_an_all_censored_one_is_not_reached():
    unknown = [_case(1, "2019-01-15", None, vital_status="alive", last_contact="unknown")]
    found = summary.summarise(unknown)
    assert found["kaplan_meier"]["overall_survival"]["n"] == 0
    assert _row(summary.table_rows(found), "Overall survival: median, months") == "-"  # was "not reached"
    censored = summary.summarise(
        [_case(2, "2019-01-15", None, vital_status="alive", last_contact="2020-01-15")]
    )
    assert _row(summary.table_rows(censored), "Overall survival: median, months") == "not reached"


# ---- M4: segment filter with one unknown end -----------------------------------------------------


@pytest.mark.parametrize(
    ("ends", "wanted", "selected"),
    [
        (("unknown", "I"), "I", True),  # a known end is certainly involved
        (("III", "unknown"), "III", True),
        (("unknown", "I"), "II", False),  # the span beyond a known end is not known
        (("III", "unknown"), "II", False),
        (("unknown", "unknown"), "II", False),
        (("I", "III"), "II", True),  # both ends known: the span between them, as before
    ],
)
def test_the_segment_filter_takes_a_known_end_as_involved(ends, wanted, selected):
    case = _case(1, "2019-01-15", None, vital_status="alive", last_contact="2020-01-15")
    case["diagnosis"]["ivc_segment_from"], case["diagnosis"]["ivc_segment_to"] = ends
    assert source.matches(case, source.Filters(segments=(wanted,))) is selected

"""Outside review 15 of the registry (issue 15), second review: outcome times ignored intervals.

Contract (docs/registry.md): "A death is not before the last day the patient is known alive (the last
contact, each follow-up assessment), a last contact not before an assessment". The bounds were taken from
dates only: an interval the record gives in months ("alive 10 months after surgery") was ignored, so a
year-only death could be placed before it (HS1, HS2, M4). Each test failed before its fix. Expected
values are computed here from the documented rule: a partial date is taken "at the midpoint of the days
it may still be", which, when only an interval bounds it, is the midpoint in months of the window from
that interval to the latest time its dates allow.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from service.model.units import DAYS_PER_MONTH
from service.model.validate import validate_case
from service.registry import outcomes, summary
from tests.unit.registry.test_review15_summary import BASE, NOW, _undated


def _case(
    diagnosis: str, surgery: str, *, follow_up: tuple[dict[str, Any], ...] = (), **outcome: Any
) -> dict[str, Any]:
    """Example 001 with only the dates a test sets; ``follow_up``: the fields of each assessment."""
    data = _undated(copy.deepcopy(BASE))
    data["case_id"] = "R15c-1"
    data["patient"]["birth_date"] = None
    data["patient"]["age_at_diagnosis"] = 60
    data["diagnosis"]["date"] = diagnosis
    data["surgery"][0]["date"] = surgery
    template = data["follow_up"][0]
    data["follow_up"] = [
        {**copy.deepcopy(template), "date": None, "months_after_surgery": None} | fu for fu in follow_up
    ]
    data["outcome"] = {**data["outcome"], "last_contact": None, **outcome}
    return validate_case(data, now=NOW)


def _months(start: dt.date, end: dt.date) -> float:
    return (end - start).days / DAYS_PER_MONTH


def _window_mid(floor: float, most: float) -> float:
    """Midpoint, in months, of the days still possible: from the known-alive interval to the latest."""
    assert most >= floor
    return (floor + most) / 2


# ---- HS1: the same partial period no longer puts a death at 0 when an interval proves it later -----


@pytest.mark.parametrize(
    "proof",
    [
        {"outcome": {"last_contact_months_after_surgery": 10}},
        {
            "follow_up": ({"months_after_surgery": 10, "disease_status": "ned"},),
            "outcome": {"last_contact": "unknown"},
        },
    ],
    ids=["last-contact-months", "assessment-months"],
)
def test_a_year_only_death_is_not_before_an_interval_known_alive(proof):
    """Diagnosis, surgery and death all ``2020``, alive 10 months after surgery: was OS = DFS = 0."""
    case = _case(
        "2020",
        "2020",
        follow_up=proof.get("follow_up", ()),
        vital_status="dead",
        death_date="2020",
        **proof.get("outcome", {}),
    )
    # latest possible: died 2020-12-31, diagnosed / operated 2020-01-01
    most = _months(dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    os_, dfs = outcomes.overall_survival(case), outcomes.disease_free_survival(case)
    assert os_ is not None and dfs is not None and os_.event == dfs.event == 1
    assert os_.months >= 10 and dfs.months >= 10
    assert os_.months == pytest.approx(_window_mid(10, most))
    assert dfs.months == pytest.approx(_window_mid(10, most))
    assert os_.precision == dfs.precision == "year"
    # docs/registry.md: "the midpoint of 10..12 months, OS = DFS = 11 months, not 0"
    assert os_.reported_months == dfs.reported_months == 11


def test_a_year_only_death_is_not_before_the_last_contact_months_after_diagnosis():
    """HS2: diagnosis 2019-01-15, surgery 2019-02-01, alive 22 months after diagnosis, death ``2020``:
    was OS 18 (the middle of 2020), before the known alive time of 22 months."""
    case = _case(
        "2019-01-15",
        "2019-02-01",
        vital_status="dead",
        death_date="2020",
        last_contact_months_after_diagnosis=22,
    )
    os_ = outcomes.overall_survival(case)
    assert os_ is not None and os_.event == 1
    assert os_.months == pytest.approx(_window_mid(22, _months(dt.date(2019, 1, 15), dt.date(2020, 12, 31))))
    assert os_.reported_months == 23
    dfs = outcomes.disease_free_survival(case)
    # after surgery: at least 22 months after diagnosis less the 17 days to surgery
    floor = 22 - _months(dt.date(2019, 1, 15), dt.date(2019, 2, 1))
    assert dfs is not None and dfs.event == 1
    most = _months(dt.date(2019, 2, 1), dt.date(2020, 12, 31))
    assert dfs.months == pytest.approx(_window_mid(floor, most))


def test_an_interval_that_leaves_no_day_for_the_death_makes_the_time_unknown():
    """Alive 30 months after surgery, death ``2020`` after surgery 2020: no time fits, unknown."""
    case = _case("2020", "2020", vital_status="dead", death_date="2020", last_contact_months_after_surgery=30)
    assert outcomes.overall_survival(case) is None
    assert outcomes.disease_free_survival(case) is None


# ---- M4: a last contact is not before an assessment given in months -------------------------------


def test_a_year_only_last_contact_is_not_before_an_assessment_in_months():
    """Surgery 2019-02-01, assessment (date unknown) 30 months after surgery, last contact ``2021``:
    was DFS 29.0 censored, before the assessment."""
    case = _case(
        "2019-01-15",
        "2019-02-01",
        follow_up=({"date": "unknown", "months_after_surgery": 30, "disease_status": "ned"},),
        vital_status="alive",
        last_contact="2021",
    )
    dfs = outcomes.disease_free_survival(case)
    assert dfs is not None and dfs.event == 0
    assert dfs.months >= 30
    expected = _window_mid(30, _months(dt.date(2019, 2, 1), dt.date(2021, 12, 31)))
    assert dfs.months == pytest.approx(expected)
    # the summary's follow-up after surgery is the same last contact, in whole months (a year-only date)
    assert summary.summarise([case])["follow_up_after_surgery_months"]["median"] == int(expected + 0.5)


# ---- M6: "no recurrence" needs a last contact certainly after the surgery -------------------------


def test_a_last_contact_in_the_surgery_month_is_no_evidence_of_follow_up():
    """Surgery 2019-05-20, last contact ``2019-05`` (may be the surgery day): was recurrence no."""
    same_month = _case("2019-05-01", "2019-05-20", vital_status="alive", last_contact="2019-05")
    assert outcomes.recurrence(same_month) is None
    later = _case("2019-05-01", "2019-05-20", vital_status="alive", last_contact="2019-06")
    assert outcomes.recurrence(later) is False


# ---- L3: an assessment in months proves the patient alive then -------------------------------------


def test_a_recurrence_before_a_death_of_unknown_time_is_the_first_event():
    """Surgery date unknown, local recurrence 10 months after surgery, dead, no death date nor last
    contact: was DFS unknown; the assessment at 10 proves the patient alive then, so the recurrence
    is the first event."""
    case = _case(
        "2019-01-15",
        "unknown",
        follow_up=({"months_after_surgery": 10, "disease_status": "local_recurrence", "sites": ["local"]},),
        vital_status="dead",
        death_date=None,
        last_contact="unknown",
    )
    dfs = outcomes.disease_free_survival(case)
    assert dfs is not None and (dfs.months, dfs.event, dfs.precision) == (10, 1, "exact")

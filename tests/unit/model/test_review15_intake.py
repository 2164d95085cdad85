"""Outside review of issue 15 (a clinician and an attacker), the case intake: huge numbers gave 500s
or were stored and broke the registry; intervals reached past today; impossible timelines were stored.
Each must be refused by ``validate_case`` (the intake of POST /cases) as issues naming the element."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from service.errors import Unprocessable
from service.model import validate_case
from service.model.rules import date_after
from tests.unit.model.conftest import load_example

NOW = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
"""A fixed clock: "today" is decided by it, not by the machine's date."""


@pytest.fixture
def case() -> dict[str, Any]:
    """Example 001: diagnosis 2021-02-20, surgery 2021-04-12, follow-up 2022-04-12 (12 months), alive,
    last contact 2024-04-20; a complication on 2021-04-15; therapies from 2021-02-25 and 2021-04-13."""
    return copy.deepcopy(load_example())


def _refused(case: dict[str, Any]) -> dict[str, str]:
    """{element: its diagnostics, joined by newlines} of the issues; fails the test when the case is
    accepted."""
    with pytest.raises(Unprocessable) as raised:
        validate_case(case, now=NOW)
    found: dict[str, str] = {}
    for i in raised.value.issues:
        found[i.expression] = "\n".join(filter(None, (found.get(i.expression), i.diagnostics)))
    return found


def test_the_unchanged_example_is_accepted(case: dict[str, Any]) -> None:
    """The baseline every test below changes one thing of."""
    validate_case(case, now=NOW)


# ---- 1. huge numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("months", [1e6, {"value": 1e5, "unit": "years"}])
def test_a_huge_follow_up_interval_is_refused_not_a_500(case: dict[str, Any], months: Any) -> None:
    """Was: OverflowError in date_after (dt.timedelta), a 500 from POST /cases."""
    case["surgery"][0]["date"] = "2014-02-01"
    case["follow_up"][0].update({"date": None, "months_after_surgery": months})
    issues = _refused(case)
    assert "must be at most 1560 months" in issues["follow_up[0].months_after_surgery"]


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        (("surgery", 0, "operative_time_min"), 1e27, "surgery[0].operative_time_min"),
        (("surgery", 0, "blood_loss_ml"), {"value": 1e300, "unit": "L"}, "surgery[0].blood_loss_ml"),
        (("surgery", 0, "transfusion_units"), 10**30, "surgery[0].transfusion_units"),
        (("pathology", None, "tumour_size_cm"), [1e300], "pathology.tumour_size_cm"),
    ],
)
def test_a_number_beyond_the_ceiling_is_refused(
    case: dict[str, Any], where: tuple[str, int | None, str], value: Any, path: str
) -> None:
    """Was stored (201), then GET /registry/summary answered 500 for everyone (Decimal quantize)."""
    section, index, name = where
    target = case[section] if index is None else case[section][index]
    target[name] = value
    assert "must be at most 1e+09 in absolute value" in _refused(case)[path]


@pytest.mark.parametrize(
    "value",
    [{"comparator": ">", "value": 1e12}, {"low": 1, "high": 1e12}],
)
def test_each_number_of_a_bound_or_range_is_under_the_ceiling(case: dict[str, Any], value: Any) -> None:
    case["surgery"][0]["blood_loss_ml"] = {**value, "unit": "mL"}
    assert "must be at most 1e+09" in _refused(case)["surgery[0].blood_loss_ml"]


@pytest.mark.parametrize("months", [1e300, 12_000_000, 1561])
def test_a_last_contact_interval_beyond_130_years_is_refused(case: dict[str, Any], months: float) -> None:
    """12 000 000 months was stored and made the console's survival chart hundreds of MB."""
    case["outcome"].update({"last_contact": None, "last_contact_months_after_diagnosis": months})
    issues = _refused(case)
    expected = "1e+09 in absolute value" if months > 1e9 else "1560 months"
    assert f"must be at most {expected}" in issues["outcome.last_contact_months_after_diagnosis"]


def test_durations_in_days_and_years_are_bounded_in_their_own_unit(case: dict[str, Any]) -> None:
    case["postoperative"]["length_of_stay_days"] = 47483
    case["care_plan"] = {
        "activities": [
            {"kind": "surveillance_imaging", "modality": "ct", "every_months": 6, "for_years": 131}
        ]
    }
    issues = _refused(case)
    assert "must be at most 47482 days" in issues["postoperative.length_of_stay_days"]
    assert "must be at most 130 years" in issues["care_plan.activities[0].for_years"]


def test_a_bounded_duration_is_bounded_too(case: dict[str, Any]) -> None:
    case["presentation"] = {
        "symptoms": [{"symptom": "abdominal_pain", "duration_months": {"low": 1, "high": 2000}}]
    }
    assert "must be at most 1560 months" in _refused(case)["presentation.symptoms[0].duration_months"]


def test_the_postoperative_day_is_bounded(case: dict[str, Any]) -> None:
    """An integer counted into dates like a duration."""
    case["therapies"][1].update({"start": None, "start_postoperative_day": 10**12})
    assert "must be at most" in _refused(case)["therapies[1].start_postoperative_day"]


def test_130_years_exactly_is_accepted_by_the_field(case: dict[str, Any]) -> None:
    """The bound itself is allowed (then refused only as after today, a different rule)."""
    case["outcome"].update({"last_contact": None, "last_contact_months_after_diagnosis": 1560})
    issues = _refused(case)
    assert "must be at most" not in issues["outcome.last_contact_months_after_diagnosis"]
    assert "after today" in issues["outcome.last_contact_months_after_diagnosis"]


def test_date_after_refuses_to_overflow() -> None:
    """Defence in depth: ValueError (a rule reports it), never OverflowError."""
    with pytest.raises(ValueError, match="no calendar date"):
        date_after("2014-02-01", 1e6)
    with pytest.raises(ValueError, match="no calendar date"):
        date_after("9999-12-01", 2)


def test_a_follow_up_after_a_surgery_at_the_calendar_end_is_an_issue(case: dict[str, Any]) -> None:
    """Derivation from a surgery in 9999 overflowed even with a small interval."""
    case["surgery"][0]["date"] = "9999-12-01"
    case["follow_up"][0].update({"date": None, "months_after_surgery": 2})
    issues = _refused(case)
    assert "beyond the calendar" in issues["follow_up[0].months_after_surgery"]


# ---- 2. intervals that end after today --------------------------------------------------------------


def _interval_case(case: dict[str, Any], **outcome: Any) -> dict[str, Any]:
    case["diagnosis"]["date"], case["surgery"][0]["date"] = "2020-01-05", "2020-02-01"
    case["follow_up"] = []
    case["patient"]["age_at_diagnosis"] = None  # derived again from the birth date
    for therapy in case["therapies"]:
        therapy["start"] = therapy["end"] = None
    case["postoperative"]["complications"][0]["date"] = None
    case["postoperative"]["renal_function"] = []
    case["care_plan"] = None
    case["outcome"].update({"last_contact": None, **outcome})
    return case


def test_last_contact_months_after_surgery_reaching_past_today_is_refused(case: dict[str, Any]) -> None:
    """Surgery 2020-02-01 + 120 months = 2030."""
    issues = _refused(_interval_case(case, last_contact_months_after_surgery=120))
    assert "must not end after today (2026-12-02" in issues["outcome.last_contact_months_after_surgery"]


def test_an_interval_from_a_month_date_counts_from_its_earliest_day(case: dict[str, Any]) -> None:
    """Surgery 2026-06 + 27 months: 2028 at the earliest."""
    case = _interval_case(case, last_contact_months_after_surgery=27)
    case["diagnosis"]["date"], case["surgery"][0]["date"] = "2026-05", "2026-06"
    issues = _refused(case)
    assert (
        "27 months after surgery[0].date (2026-06) is 2028-08-30 at the earliest"
        in issues["outcome.last_contact_months_after_surgery"]
    )


def test_a_follow_up_interval_from_a_year_surgery_reaching_past_today_is_refused(
    case: dict[str, Any],
) -> None:
    case = _interval_case(case, last_contact="2025")
    case["diagnosis"]["date"], case["surgery"][0]["date"] = "2020", "2020"
    case["follow_up"] = [{"months_after_surgery": 120, "disease_status": "ned"}]
    issues = _refused(case)
    assert "must not end after today" in issues["follow_up[0].months_after_surgery"]


def test_last_contact_months_after_diagnosis_past_today_is_refused(case: dict[str, Any]) -> None:
    issues = _refused(_interval_case(case, last_contact_months_after_diagnosis=84))
    assert "after diagnosis.date (2020-01-05)" in issues["outcome.last_contact_months_after_diagnosis"]


def test_an_interval_ending_before_today_is_accepted(case: dict[str, Any]) -> None:
    """2020-02-01 + 60 months = 2025: in the past."""
    validate_case(_interval_case(case, last_contact_months_after_surgery=60), now=NOW)


# ---- 3. impossible timelines ------------------------------------------------------------------------


def _dead(case: dict[str, Any], death: str) -> dict[str, Any]:
    case["outcome"].update({"vital_status": "dead", "death_date": death, "last_contact": death})
    return case


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("surgery[0].date", lambda c: c["surgery"][0].update(date="2022-07")),
        (
            "follow_up[0].date",
            lambda c: c["follow_up"][0].update(date="2022-08-01", months_after_surgery=None),
        ),
        ("therapies[1].start", lambda c: c["therapies"][1].update(start="2022-07")),
        (
            "postoperative.complications[0].date",
            lambda c: c["postoperative"]["complications"][0].update(date="2022-07-02"),
        ),
        ("outcome.last_contact", lambda c: c["outcome"].update(last_contact="2023")),
    ],
)
def test_nothing_certainly_after_the_death(case: dict[str, Any], path: str, change: Any) -> None:
    case = _dead(case, "2022-06")
    case["follow_up"][0].update(date="2022-04-12")
    validate_case(copy.deepcopy(case), now=NOW)  # the same case without the change is valid
    change(case)
    issues = _refused(case)
    assert f"{path}: must not be after outcome.death_date (2022-06)" in issues[path].splitlines()


def test_a_date_in_the_month_of_the_death_is_accepted(case: dict[str, Any]) -> None:
    """Coarser precision: 2022-06-30 may be the day of a death in 2022-06."""
    case = _dead(case, "2022-06")
    case["outcome"]["last_contact"] = "2022-06-30"
    validate_case(case, now=NOW)


def test_a_follow_up_after_the_last_contact_is_refused(case: dict[str, Any]) -> None:
    case["outcome"]["last_contact"] = "2022-03"
    issues = _refused(case)
    assert (
        issues["follow_up[0].date"] == "follow_up[0].date: must not be after outcome.last_contact (2022-03)"
    )


def test_follow_up_months_beyond_the_last_contact_months_are_refused(case: dict[str, Any]) -> None:
    case["outcome"].update({"last_contact": None, "last_contact_months_after_surgery": 10})
    issues = _refused(case)
    assert "outcome.last_contact_months_after_surgery (10)" in issues["follow_up[0].months_after_surgery"]


def test_follow_up_date_and_months_contradicting_at_a_partial_precision_are_refused(
    case: dict[str, Any],
) -> None:
    """Surgery 2021-04-12, follow-up in 2022-04 but '30 months after': the last contact's rule."""
    case["follow_up"][0].update({"date": "2022-04", "months_after_surgery": 30})
    issues = _refused(case)
    assert "cannot fall on follow_up[0].date (2022-04)" in issues["follow_up[0].months_after_surgery"]


def test_follow_up_date_and_months_within_a_partial_precision_are_accepted(case: dict[str, Any]) -> None:
    case["follow_up"][0].update({"date": "2022-04", "months_after_surgery": 12})
    validate_case(case, now=NOW)


def test_a_complication_before_the_surgery_is_refused(case: dict[str, Any]) -> None:
    case["postoperative"]["complications"][0]["date"] = "2021-03"
    issues = _refused(case)
    assert (
        "must not be before the first surgery (surgery[0].date 2021-04-12)"
        in issues["postoperative.complications[0].date"]
    )


def test_30_day_mortality_with_the_patient_alive_is_refused(case: dict[str, Any]) -> None:
    case["postoperative"]["mortality_30d"] = True
    issues = _refused(case)
    assert "outcome.vital_status alive" in issues["postoperative.mortality_30d"]


def test_30_day_mortality_with_a_death_months_later_is_refused(case: dict[str, Any]) -> None:
    case = _dead(case, "2021-06")  # surgery 2021-04-12: at least 50 days
    case["postoperative"]["mortality_30d"] = True
    case["follow_up"] = []
    issues = _refused(case)
    assert "outcome.death_date (2021-06)" in issues["postoperative.mortality_30d"]


def test_30_day_mortality_with_a_death_possibly_within_30_days_is_accepted(case: dict[str, Any]) -> None:
    case = _dead(case, "2021-05")  # 2021-05-01 is 19 days after 2021-04-12
    case["postoperative"]["mortality_30d"] = True
    case["postoperative"]["renal_function"] = []
    case["follow_up"] = []
    validate_case(case, now=NOW)


@pytest.mark.parametrize("grade", ["V", {"comparator": ">", "value": "IVb"}])
def test_clavien_dindo_grade_v_with_the_patient_alive_is_refused(case: dict[str, Any], grade: Any) -> None:
    case["postoperative"]["complications"][0]["clavien_dindo"] = grade
    issues = _refused(case)
    assert "outcome.vital_status alive" in issues["postoperative.complications[0].clavien_dindo"]


# ---- through the API: POST /cases answers 422 with an OperationOutcome, and stores nothing -----------


def _stored(client_api: Any) -> int:
    return len(client_api.get("/cases?_count=500").get_json()["cases"])


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (
            lambda c: (
                c["surgery"][0].update(date="2014-02-01"),
                c["follow_up"][0].update(date=None, months_after_surgery=1e6),
            ),
            "follow_up[0].months_after_surgery",
        ),
        (lambda c: c["surgery"][0].update(operative_time_min=1e27), "surgery[0].operative_time_min"),
        (
            lambda c: c["outcome"].update(last_contact=None, last_contact_months_after_diagnosis=12_000_000),
            "outcome.last_contact_months_after_diagnosis",
        ),
        (lambda c: c["postoperative"].update(mortality_30d=True), "postoperative.mortality_30d"),
    ],
)
def test_post_cases_answers_422_naming_the_element_and_stores_nothing(
    api: Any,
    change: Any,
    expression: str,
) -> None:
    case = load_example()
    change(case)
    before = _stored(api)
    resp = api.post(case)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert expression in [e for i in body["issue"] for e in i.get("expression", [])]
    assert _stored(api) == before


def test_a_birth_date_giving_an_age_past_the_models_limit_is_refused(case: dict[str, Any]) -> None:
    """Derived, the age would be stored beyond what a given age may be (maximum 130): second outside
    review, born 1850 and diagnosed 2021 was stored as age 171."""
    case["patient"].update({"birth_date": "1850-01-01", "age_at_diagnosis": None})
    issues = _refused(case)
    assert "more than 130" in issues["patient.birth_date"]


def test_an_unknown_diagnosis_cannot_be_placed_in_the_future_by_birth_and_age(case: dict[str, Any]) -> None:
    """Diagnosis date unknown: birth date + age at diagnosis is the earliest it can be (data set: "a date
    after today is an error")."""
    case["diagnosis"]["date"] = "unknown"
    case["patient"].update({"birth_date": "2020-05-01", "age_at_diagnosis": 40})
    issues = _refused(case)
    assert "cannot be in the future" in issues["patient.age_at_diagnosis"]


def test_a_follow_up_in_months_after_the_death_is_refused(case: dict[str, Any]) -> None:
    """Data set: "diagnosis <= surgery <= follow-up"; nothing after the death. A visit given in months
    is bounded with a month of the source's rounding."""
    surgery = case["surgery"][0]["date"]
    case["outcome"].update({"vital_status": "dead", "death_date": case["outcome"]["last_contact"]})
    case["follow_up"][0].update({"date": None, "months_after_surgery": 600})
    issues = _refused(case)
    assert (
        f"600 months after the first surgery ({surgery}) is after outcome.death_date"
        in issues["follow_up[0].months_after_surgery"]
    )


def test_a_follow_up_in_months_beside_an_unknown_last_contact_is_no_crash(case: dict[str, Any]) -> None:
    """Found reading the change again: the months-only bound read outcome.last_contact "unknown" as a
    date (DateError, a 500 from POST /cases). An unknown last contact bounds nothing; the interval to it
    still does (30 months after surgery, the visit at 12)."""
    case["follow_up"][0].update({"date": None, "months_after_surgery": 12})
    case["outcome"].update({"last_contact": "unknown", "last_contact_months_after_surgery": 30})
    stored = validate_case(case, now=NOW)
    assert (stored["follow_up"][0]["date"], stored["outcome"]["last_contact"]) == (None, "unknown")
    case["outcome"]["last_contact_months_after_surgery"] = 6
    assert "must not be more than" in _refused(case)["follow_up[0].months_after_surgery"]

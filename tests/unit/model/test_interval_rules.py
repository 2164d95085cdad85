"""Intervals and the dates they count between (outside clinician review of issue 15: both cases below
were accepted). Data set, "Incomplete records": "Date rules compare at the coarser precision"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Unprocessable
from service.model import validate_case

LITERATURE = Path(__file__).parents[3] / "examples" / "literature"
EXAMPLE = LITERATURE / "ivclms-020-literature-unknown-extent-graft-material.json"


def _case(**outcome: Any) -> dict[str, Any]:
    case = json.loads(EXAMPLE.read_text())
    case["diagnosis"]["date"], case["surgery"][0]["date"] = "2014", "2014"
    case["outcome"].update(
        {
            "last_contact": None,
            "last_contact_months_after_diagnosis": None,
            "last_contact_months_after_surgery": None,
        }
    )
    case["outcome"].update(outcome)
    return case


def _refused(case: dict[str, Any]) -> list[str]:
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    return [i.expression for i in raised.value.issues]


def test_an_interval_longer_than_its_dates_allow_is_refused() -> None:
    """Surgery in 2014, last contact in 2014: at most 12 months apart, not 27."""
    case = _case(last_contact="2014", last_contact_months_after_surgery=27)
    assert _refused(case) == ["outcome.last_contact_months_after_surgery"]


def test_fewer_months_after_diagnosis_than_after_surgery_is_refused() -> None:
    case = _case(last_contact_months_after_surgery=27, last_contact_months_after_diagnosis=10)
    assert _refused(case) == ["outcome.last_contact_months_after_diagnosis"]


@pytest.mark.parametrize(
    "outcome",
    [
        {"last_contact": "2016", "last_contact_months_after_surgery": 27},  # 2014 + 27 months falls in 2016
        {"last_contact": "2014", "last_contact_months_after_surgery": 11},  # both in 2014: up to ~12 months
        {"last_contact_months_after_surgery": 27, "last_contact_months_after_diagnosis": 27},  # same day
        {"last_contact_months_after_surgery": 27, "last_contact_months_after_diagnosis": 26.5},  # rounding
    ],
)
def test_intervals_the_partial_dates_allow_are_accepted(outcome: dict[str, Any]) -> None:
    validate_case(_case(**outcome))


def test_a_neoadjuvant_response_needs_a_neoadjuvant_therapy_given() -> None:
    """Outside clinician review: a response "> 75 %" with no neoadjuvant therapy was accepted."""
    case = json.loads((LITERATURE / "ivclms-021-neoadjuvant-response-bound-margin-unknown.json").read_text())
    assert case["pathology"]["neoadjuvant_response_percent"] is not None
    validate_case(json.loads(json.dumps(case)))  # as published: neoadjuvant chemotherapy given
    case["therapies"] = [t for t in case["therapies"] if t["timing"] != "neoadjuvant"]
    case["care_plan"] = None
    assert "pathology.neoadjuvant_response_percent" in _refused(case)


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        ("2021-03", "2021", False),
        ("2021-03", "2021-03-05", False),
        ("2021", "2021", True),
        ("2020-03", "2021", True),
        ("2021-03", "2021-04-02", True),
    ],
)
def test_a_therapys_start_and_end_must_be_comparable(start: str, end: str, ok: bool) -> None:
    """HAPI refused the Period 2021-03 to 2021 (found by tests/integration/test_property_in_hapi.py with
    a random seed): FHIR per-1 "If present, start SHALL have a lower value than end", and FHIRPath
    "If one value is specified to a different level of precision than the other, the result is empty"."""
    case = json.loads((LITERATURE / "ivclms-021-neoadjuvant-response-bound-margin-unknown.json").read_text())
    therapy = next(t for t in case["therapies"] if t["start"] and t["end"])
    therapy["start"], therapy["end"] = start, end
    if ok:
        validate_case(case)
    else:
        assert any(e.startswith("therapies[") and e.endswith("].end") for e in _refused(case))

"""Partial dates (issue 15): parsing, precision, the coarse-precision date rules and "not after today".

Expectations come from the data set ("Incomplete records"): "Every date may be a year (2019), a year
and month (2019-06) or a full date, and keeps that precision everywhere ... Date rules compare at the
coarser precision (2019 <= 2019-06-12 holds); a date after today is an error."
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from service.errors import Unprocessable
from service.model import dates
from service.model.jsonschema import case_json_schema
from service.model.validate import validate_case

NOW = dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.UTC)


def problems(data: dict[str, Any], now: dt.datetime = NOW) -> list[str]:
    with pytest.raises(Unprocessable) as caught:
        validate_case(data, now=now)
    return [i.diagnostics for i in caught.value.issues]


@pytest.mark.parametrize(
    ("text", "precision", "earliest", "latest"),
    [
        ("2019", "year", "2019-01-01", "2019-12-31"),
        ("2019-06", "month", "2019-06-01", "2019-06-30"),
        ("2020-02", "month", "2020-02-01", "2020-02-29"),
        ("2019-06-12", "day", "2019-06-12", "2019-06-12"),
    ],
)
def test_a_partial_date_keeps_its_precision_and_its_days(text, precision, earliest, latest):
    found = dates.parse(text)
    assert (found.text, found.precision) == (text, precision)
    assert (found.earliest.isoformat(), found.latest.isoformat()) == (earliest, latest)
    assert found.exact == (found.earliest if precision == "day" else None)


@pytest.mark.parametrize(
    "text",
    [
        "2019-02-30",
        "2019-13",
        "2019-00",
        "2019-6",
        "19",
        "2019-06-12T10:00",
        "0000",
        # FHIR R4 date: "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|
        # [1-2][0-9]|3[0-1]))?)?" -- ASCII digits, the whole value (Python's \d and $ took these)
        "2019-06-12\n",
        "\u0662\u0660\u0661\u0669",
        "\uff12\uff10\uff11\uff19-06",
    ],
)
def test_impossible_or_malformed_dates_are_refused(text):
    with pytest.raises(dates.DateError):
        dates.parse(text)


@pytest.mark.parametrize("value", ["2019-02-30", "2019-13"])
def test_an_impossible_date_is_a_422_naming_the_element(example, value):
    example["diagnosis"]["date"] = value
    found = problems(example)
    assert len(found) == 1 and found[0].startswith("diagnosis.date: must be a valid calendar date")


@pytest.mark.parametrize("value", ["2019", "2019-06"])
def test_every_date_element_accepts_year_and_month(example, value):
    # example 001: diagnosis 2021-02-20, surgery 2021-04-12; 2021 and 2021-04 hold both
    example["patient"]["birth_date"] = None
    example["outcome"]["last_contact"] = "2024"
    example["diagnosis"]["date"] = value.replace("2019-06", "2021-02").replace("2019", "2021")
    example["surgery"][0]["date"] = value.replace("2019-06", "2021-04").replace("2019", "2021")
    case = validate_case(example, now=NOW)
    assert case["diagnosis"]["date"] == example["diagnosis"]["date"]
    assert case["surgery"][0]["date"] == example["surgery"][0]["date"]
    assert case["outcome"]["last_contact"] == "2024"


def test_the_json_schema_pattern_allows_the_three_forms():
    text = json.dumps(case_json_schema())
    assert r"^\\d{4}-\\d{2}-\\d{2}$" not in text and json.dumps(dates.PATTERN) in text
    assert all(re.match(dates.PATTERN, t) for t in ("2019", "2019-06", "2019-06-12"))
    assert not any(re.match(dates.PATTERN, t) for t in ("2019-6", "201", "2019-06-12T00:00"))


def test_2019_before_2019_06_12_holds():
    """Data set: "2019 <= 2019-06-12 holds"."""
    assert not dates.certainly_before("2019-06-12", "2019")
    assert not dates.certainly_before("2019", "2019-06-12")
    assert dates.certainly_before("2018", "2019-01-01")
    assert dates.certainly_before("2019-05", "2019-06-01")


def test_date_rules_compare_at_the_coarser_precision(example):
    example["diagnosis"]["date"] = "2021"  # the first operation, 2021-04-12, is in 2021: in order
    example["patient"]["birth_date"] = None
    validate_case(example, now=NOW)
    example["surgery"][0]["date"] = "2020-12"
    assert "surgery[0].date: must not be before diagnosis.date" in problems(example)


def test_a_date_after_today_is_an_error_naming_the_element(example):
    example["outcome"]["last_contact"] = "2031-01-01"
    assert problems(example) == [
        "outcome.last_contact: must not be after today (2026-12-02, the latest date on Earth now)"
    ]


def test_today_in_utc_plus_14_is_not_refused(example):
    """At 2026-12-01T12:00Z it is already 2026-12-02 at UTC+14 (Kiribati)."""
    example["outcome"]["last_contact"] = "2026-12-02"
    validate_case(example, now=dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC))
    example["outcome"]["last_contact"] = "2026-12-03"
    assert problems(example, dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)) == [
        "outcome.last_contact: must not be after today (2026-12-02, the latest date on Earth now)"
    ]


def test_a_partial_date_of_this_year_is_not_after_today(example):
    example["outcome"]["last_contact"] = "2026"
    validate_case(example, now=NOW)


def test_age_is_derived_only_when_determinate(example):
    example["patient"]["birth_date"] = "1968"
    example["patient"]["age_at_diagnosis"] = None
    example["diagnosis"]["date"] = "2021-01"
    assert validate_case(example, now=NOW)["patient"]["age_at_diagnosis"] is None  # 52 or 53
    example["patient"]["birth_date"] = "1968-06"
    assert validate_case(example, now=NOW)["patient"]["age_at_diagnosis"] == 52


def test_a_given_age_must_be_one_the_partial_dates_allow(example):
    example["patient"]["birth_date"] = "1968"
    example["diagnosis"]["date"] = "2021-01"
    example["patient"]["age_at_diagnosis"] = 53
    assert validate_case(example, now=NOW)["patient"]["age_at_diagnosis"] == 53
    example["patient"]["age_at_diagnosis"] = 55
    assert problems(example) == [
        "patient.age_at_diagnosis: must be an age that birth_date and diagnosis.date allow (52 to 53)"
    ]


def test_last_contact_as_an_interval_stays_in_months(example):
    example["outcome"]["last_contact"] = None
    example["outcome"]["last_contact_months_after_surgery"] = 21
    case = validate_case(example, now=NOW)
    assert case["outcome"]["last_contact"] is None
    assert case["outcome"]["last_contact_months_after_surgery"] == 21


def test_last_contact_date_or_interval_is_required(example):
    example["outcome"]["last_contact"] = None
    assert problems(example) == [
        "outcome.last_contact: last_contact or last_contact_months_after_diagnosis/_surgery is required"
    ]

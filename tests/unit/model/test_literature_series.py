"""examples/ivclms-literature-series.csv: three literature-style cases whose dates are years or
months only and whose last contact is an interval (issue 15: "New examples: at least three
literature-style cases with only year/month dates ... one CSV series with them")."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from service.model import dates
from service.model.csv_flat import read_csv
from service.model.schema import CaseSchema
from service.model.validate import dated_paths
from service.registry import summary

SERIES = Path(__file__).resolve().parents[3] / "examples" / "ivclms-literature-series.csv"
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def test_the_series_loads_and_validates():
    rows = read_csv(SERIES.read_text())
    assert all(isinstance(case, dict) for _, case in rows), rows
    assert [case["case_id"] for _, case in rows] == ["LIT-001", "LIT-002", "LIT-003"]


def test_every_date_is_a_year_or_a_month_and_last_contact_is_an_interval():
    for _, case in read_csv(SERIES.read_text()):
        found = [dates.parse(value).precision for _, value in dated_paths(CaseSchema(), case, "")]
        assert found and set(found) <= {"year", "month"}
        assert case["outcome"]["last_contact"] is None
        assert case["outcome"]["last_contact_months_after_surgery"] is not None


def test_the_summary_keeps_the_recorded_months_and_counts_the_partial_dates():
    cases = [case for _, case in read_csv(SERIES.read_text())]
    found = summary.summarise(cases)
    follow_up = found["follow_up_after_surgery_months"]
    assert (follow_up["median"], follow_up["min"], follow_up["max"]) == (27, 21, 40)
    assert found["precision"]["dates_day"] == 0
    assert found["precision"]["last_contact_as_interval"] == 3

"""The range the ``date`` search parameter indexes for a resource (service.store.resources.date_range)."""

from __future__ import annotations

import pytest

from service.store.resources import date_range, last_day


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021", "2021-12-31"),
        ("2020-02", "2020-02-29"),  # a leap year's February (R4 date: YYYY-MM is the whole month)
        ("2021-02", "2021-02-28"),
        ("2021-12-05", "2021-12-05"),
        ("2021-12-05T23:30:00-05:00", "2021-12-05"),  # the day as written, as the start is compared
    ],
)
def test_last_day_is_the_last_day_a_value_covers(value: str, expected: str) -> None:
    assert last_day(value) == expected


def test_date_range_reads_dates_and_periods_open_or_closed() -> None:
    """R4 datatypes, Period: "If the end of the period is missing, it means that the period is
    ongoing": no last day (None), which a ``ge`` search of any later day matches."""
    assert date_range({"performedPeriod": {"start": "2023-03-16"}}) == ("2023-03-16", None)
    assert date_range({"performedPeriod": {"start": "2023-03-16", "end": "2023-04"}}) == (
        "2023-03-16",
        "2023-04-30",
    )
    assert date_range({"effectivePeriod": {"end": "2023-04-02"}}) == (None, "2023-04-02")
    assert date_range({"effectiveDateTime": "2023-04-02T10:00:00Z"}) == ("2023-04-02T10:00:00Z", "2023-04-02")
    assert date_range({"birthDate": "1968"}) == ("1968", "1968-12-31")
    # The first element of the list that the resource has wins; an empty Period counts as none.
    assert date_range({"performedPeriod": {}, "recordedDate": "2022-01-01"}) == ("2022-01-01", "2022-01-01")
    assert date_range({"code": {"text": "x"}}) == (None, None)

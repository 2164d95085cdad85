"""Partial dates: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``, kept at the precision they were recorded in.

Charts and published case reports often give only a year or a month (data set, "Incomplete records":
"Every date may be a year (2019), a year and month (2019-06) or a full date, and keeps that precision
everywhere"). FHIR's ``date`` and ``dateTime`` allow the same three forms, so the case model keeps the
ISO text as given and this module answers the questions asked of it: its earliest and latest day,
whether two dates are *certainly* in a given order, and whether a value is determinate to the day.

Nothing here rounds a partial date to a day: a rule that needs a day asks ``exact`` and leaves the
value unknown when there is none.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

Precision = Literal["year", "month", "day"]
PRECISIONS: tuple[Precision, ...] = ("year", "month", "day")
PATTERN = r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"
"""The JSON Schema pattern of a partial date (FHIR R4 ``date`` without its optional timezone-free
relaxations: four-digit year, two-digit month and day). ASCII digits only, matched whole: Python's
backslash-d takes any Unicode digit and ``$`` a trailing newline, both of which FHIR's ``date`` refuses."""
_FORM = re.compile(PATTERN)
UNKNOWN = "unknown"
"""The value of a date the source does not give (issue 15: diagnosis.date, surgery[].date): still
required, so a forgotten date is an error, but ``unknown`` says the source has none. Rules treat it as
"not known" (``known``): nothing is checked against it and nothing derived from it."""
_MIN_YEAR = 1
UTC_LEAD = dt.timedelta(hours=14)
"""The furthest ahead of UTC a civil time zone runs (UTC+14, Line Islands): "today" somewhere on Earth
is at most the UTC date of now + 14 h, so a date up to that day is never wrongly refused."""


class DateError(ValueError):
    """A text that is no partial date; the message says which rule it breaks."""


@dataclass(frozen=True, order=False)
class PartialDate:
    """A date known to a year, a month or a day; ``earliest``/``latest`` are the days it may be."""

    text: str
    precision: Precision
    earliest: dt.date
    latest: dt.date

    @property
    def exact(self) -> dt.date | None:
        """The day, when the date is known to the day; else None (never a guessed day)."""
        return self.earliest if self.precision == "day" else None

    @property
    def year(self) -> int:
        return self.earliest.year

    def midpoint(self) -> dt.date:
        """The middle day of the possible days (used only where documented, e.g. survival times)."""
        return self.earliest + (self.latest - self.earliest) // 2


def parse(text: str) -> PartialDate:
    """``text`` as a PartialDate; DateError when the form is wrong or the day does not exist."""
    if not isinstance(text, str) or not _FORM.fullmatch(text):
        raise DateError("must be a date YYYY, YYYY-MM or YYYY-MM-DD")
    parts = [int(p) for p in text.split("-")]
    year = parts[0]
    if year < _MIN_YEAR:
        raise DateError("must be a valid calendar date (year 0001 or later)")
    if len(parts) == 1:
        return PartialDate(text, "year", dt.date(year, 1, 1), dt.date(year, 12, 31))
    month = parts[1]
    if not 1 <= month <= 12:
        raise DateError("must be a valid calendar date (month 01-12)")
    last = calendar.monthrange(year, month)[1]
    if len(parts) == 2:
        return PartialDate(text, "month", dt.date(year, month, 1), dt.date(year, month, last))
    day = parts[2]
    if not 1 <= day <= last:
        raise DateError(f"must be a valid calendar date ({year:04d}-{month:02d} has {last} days)")
    exact = dt.date(year, month, day)
    return PartialDate(text, "day", exact, exact)


def known(value: str | None) -> str | None:
    """The date, or None when it is absent or ``unknown``: what a rule or derivation may read."""
    return None if value is None or value == UNKNOWN else value


def is_partial(text: str) -> bool:
    return parse(text).precision != "day"


def certainly_before(a: str, b: str) -> bool:
    """True when every day ``a`` may be is before every day ``b`` may be. Date rules fail only then:
    they compare at the coarser precision ("2019 <= 2019-06-12 holds")."""
    return parse(a).latest < parse(b).earliest


def agree(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` may be the same day: neither is certainly before the other (``2021``
    and ``2021-04-12`` agree; ``2021-03`` and ``2021-04-12`` do not)."""
    return not certainly_before(a, b) and not certainly_before(b, a)


def comparable(a: str, b: str) -> bool:
    """Whether FHIRPath can order ``a`` and ``b``: dates of different precisions that agree at the
    coarser one compare as empty (FHIRPath, Date/Time comparison: "If one value is specified to a
    different level of precision than the other, the result is empty"), so FHIR's per-1 ("start SHALL
    have a lower value than end") cannot hold for a Period ``2021-03`` to ``2021``; HAPI refuses it."""
    x, y = parse(a), parse(b)
    if x.precision == y.precision:
        return True
    size = min(len(x.text), len(y.text))
    return x.text[:size] != y.text[:size]


def certainly_after_day(a: str, day: dt.date) -> bool:
    """True when every day ``a`` may be is after ``day``."""
    return parse(a).earliest > day


def latest_today(now: dt.datetime) -> dt.date:
    """The latest calendar date that is "today" anywhere on Earth at ``now`` (see ``UTC_LEAD``)."""
    return (now.astimezone(dt.UTC) + UTC_LEAD).date()


def sort_key(text: str) -> tuple[dt.date, dt.date]:
    """Order of partial dates by earliest, then latest day (2019 sorts before 2019-01-05)."""
    found = parse(text)
    return found.earliest, found.latest


def exact(text: str | None) -> dt.date | None:
    """The day of a full date; None for a partial, absent or unknown one."""
    text = known(text)
    return None if text is None else parse(text).exact


def full_years_between(birth: str, on: str) -> int | None:
    """Age in full years at ``on`` when it is determinate: the same for every pair of days the two
    dates may be. ``1960`` born, ``2019-06`` diagnosed: 58 or 59, so None (left unknown)."""
    b, d = parse(birth), parse(on)

    def years(born: dt.date, day: dt.date) -> int:
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))

    low, high = years(b.latest, d.earliest), years(b.earliest, d.latest)
    return low if low == high else None

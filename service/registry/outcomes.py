"""Outcome measures of one case, as registries and case-series papers define them.

Pure functions of a canonical case (``service.model.validate_case`` output); no clock: every interval
ends at a date or an interval recorded in the case. Months between two full dates are days / 30.4375
(the data set's convention, ``service.model.units.DAYS_PER_MONTH``); an interval recorded in months is
used as recorded (21 months stays 21, never 20.99).

Event and censoring rules (documented in docs/registry.md):

- **Overall survival (OS)**, every case. Time zero: ``diagnosis.date``. Event: death
  (``outcome.vital_status`` = dead) at ``outcome.death_date``, or at the last contact when the
  death date is missing. Otherwise censored at the last contact (alive, unknown, lost to follow-up).
  The last contact is ``outcome.last_contact`` or an interval ``last_contact_months_after_diagnosis`` /
  ``_after_surgery``.
- **Disease-free (recurrence-free) survival (DFS)**, operated cases only (at least one surgery). Time
  zero: the first (earliest) ``surgery[].date``. Event: the earliest of (a) the first follow-up
  assessment on or after that surgery whose ``disease_status`` is not ``ned`` (local recurrence,
  distant metastasis, both, stable or progressive disease: the patient is no longer disease-free;
  persistent disease after an incomplete resection counts at its first assessment) and (b) death
  from any cause (as for OS). Otherwise censored at the last contact.
- **Recurrence**: operated cases only; yes when event (a) happened; no when it did not and the record
  shows the patient after the surgery (a follow-up assessment, or a last contact certainly after it: death
  without recurrence is no recurrence then); unknown (None) otherwise, and when not operated.
- **Partial dates** (``2019``, ``2019-06``): an interval between two full dates is exact. When one end
  is a year or a month, it is taken at the midpoint of the days it may still be (after the other end:
  ``2019-03-10`` to ``2019`` uses the middle of 2019-03-10..2019-12-31; and within what the rest of the
  record proves: a death is not before the last contact or a follow-up assessment, a last contact not
  before an assessment, neither an assessment nor a last contact after a death; nor before an interval
  in months the patient is known alive at: else the midpoint in months of the window from that
  interval to the latest time the dates allow, unknown when none is left) and the time is marked
  ``exact = False``; the summary counts such times on its page. An interval recorded in months is
  exact. An interval that certainly ends before it starts (inconsistent dates) is unknown (None).
- **Reported precision** (``TimeToEvent.precision``, ``reported_months``): a time is reported at the
  precision its inputs allow. Full dates and recorded intervals: ``exact``, reported as computed (the
  extract rounds to 0.1 month). A month-precision date (``2019-06``) and no coarser: ``month``,
  reported in whole months. A year-only date (``2019``): ``year``, reported in whole months at most and
  flagged imprecise (``imprecise``): its midpoint may be six months off. Two year-only dates
  2019 -> 2021 give 24 months (the midpoints are 731 days apart, 24.02 months: false decimals).
- **Same partial period**: two partial dates that are equal at the coarser one's precision (``2014``
  and ``2014``, ``2014`` and ``2014-06``, ``2014-06`` and ``2014-06``) may be the same day: the interval
  between them is 0 months (no gap is invented from midpoints), at the coarser precision (``year``:
  flagged imprecise; ``month``: whole months). So diagnosis 2014, surgery 2014, alive 21 months after
  surgery gives OS = 21 months, as diagnosis 2012, surgery 2012, death 2014 gives OS = DFS.
- **Rounding** (``rounded``): one rounding for the extract and the summary (its numbers and its
  Kaplan-Meier input): exact times to 0.1 month, times that used a partial date in whole months (half
  up both).
- **Unknown time zero** (issue 15: ``diagnosis.date`` or a ``surgery[].date`` is ``unknown``, as in
  published series): nothing is counted from it. OS is then ``last_contact_months_after_diagnosis``
  (or the death) as recorded, else unknown; DFS is counted from follow-up ``months_after_surgery`` and
  ``last_contact_months_after_surgery`` as recorded, else unknown. A case still counts as operated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from service.model import dates
from service.model.rules import first_surgery
from service.model.units import DAYS_PER_MONTH

# The codes these rules name, per table of mappings/codes.yaml (a test checks that each exists).
DISEASE_FREE = "ned"
DEAD = "dead"
OUTCOME_CODES: dict[str, tuple[str, ...]] = {"disease-status": (DISEASE_FREE,), "vital-status": (DEAD,)}


Precision = Literal["exact", "month", "year"]
"""How precise a time is: from full dates or recorded intervals, or using a month- or year-only date."""
_COARSENESS: tuple[Precision, ...] = ("exact", "month", "year")


def coarser(a: Precision, b: Precision) -> Precision:
    return a if _COARSENESS.index(a) >= _COARSENESS.index(b) else b


MONTH_DECIMALS = 1
"""Exact times are reported to 0.1 month (extract and summary alike)."""


def _half_up(value: float, decimals: int) -> float:
    """``value`` rounded half up to ``decimals``; a value too large for Decimal's 28 digits (a float that
    large has no fraction left to round) or not finite is returned as it is, never an error."""
    try:
        places = Decimal(1).scaleb(-decimals)
        return float(Decimal(repr(float(value))).quantize(places, rounding=ROUND_HALF_UP))
    except InvalidOperation:
        return float(value)


def reported(months: float, precision: Precision) -> float:
    """``months`` at the precision its inputs allow: as computed when exact, else whole months (half up:
    23.5 -> 24, as a paper rounds)."""
    if precision == "exact":
        return months
    return _half_up(months, 0)


def rounded(months: float, precision: Precision) -> float:
    """The one rounding of the extract and the summary: 0.1 month when exact, whole months when a partial
    date was used (``reported``)."""
    return _half_up(reported(months, precision), MONTH_DECIMALS)


@dataclass(frozen=True)
class TimeToEvent:
    """Months from time zero to the event or to censoring; ``event`` 1 = observed, 0 = censored;
    ``precision`` ``month`` or ``year`` when a partial date was taken at its midpoint."""

    months: float
    event: int
    precision: Precision = "exact"

    @property
    def exact(self) -> bool:
        """False when a partial date was taken at its midpoint."""
        return self.precision == "exact"

    @property
    def imprecise(self) -> bool:
        """True when a year-only date was used: even whole months are finer than its inputs."""
        return self.precision == "year"

    @property
    def reported_months(self) -> float:
        """The months at the precision the inputs allow (``reported``)."""
        return reported(self.months, self.precision)

    @property
    def rounded_months(self) -> float:
        """The months as the extract and the summary print them (``rounded``)."""
        return rounded(self.months, self.precision)


@dataclass(frozen=True)
class Point:
    """A moment of the case as recorded: a (partial) date and/or intervals after diagnosis / surgery."""

    date: str | None = None
    after_diagnosis: float | None = None
    after_surgery: float | None = None
    not_before: dt.date | None = None
    """The first day the record allows for a partial ``date`` (e.g. a death is not before the last
    day the patient is known alive); None when the record proves nothing."""
    not_after: dt.date | None = None
    """The last day the record allows for a partial ``date`` (e.g. an assessment is not after the death)."""
    alive_after_diagnosis: float | None = None
    """Months after diagnosis the record proves the patient alive at (a recorded interval of a contact or
    an assessment): a moment placed from a partial ``date`` is not before it (issue 15, second review
    HS1/HS2: bounds from dates alone let a death ``2020`` fall before "alive 10 months after surgery")."""
    alive_after_surgery: float | None = None
    """As ``alive_after_diagnosis``, in months after the first surgery."""


def months(days: int) -> float:
    return days / DAYS_PER_MONTH


Elapsed = tuple[float, Precision]
"""(months, precision) of an interval."""


def _precision_of(date: dates.PartialDate) -> Precision:
    return "exact" if date.precision == "day" else "month" if date.precision == "month" else "year"


def span(
    start: str | None,
    end: str | None,
    not_before: dt.date | None = None,
    not_after: dt.date | None = None,
) -> Elapsed | None:
    """(months, precision) from ``start`` to ``end``; partial ends at the midpoint of the days they may
    still be (precision: the coarser end); 0 when both are partial and one's period holds the other
    (they may be the same day); None when ``end`` is certainly before ``start`` or either is
    absent or ``unknown``. A partial ``end`` is first clipped to ``not_before``..``not_after``, what
    the rest of the record proves (issue 15, review H2: a death in ``2020`` after a last contact on
    2020-11-20 lies in 2020-11-20..2020-12-31, not at 2020-07-01); bounds that leave no day are
    ignored (the record contradicts itself; the date alone is used)."""
    start, end = dates.known(start), dates.known(end)
    if start is None or end is None:
        return None
    a, b = dates.parse(start), dates.parse(end)
    if b.latest < a.earliest:
        return None
    if a.exact is not None and b.exact is not None:
        return months((b.exact - a.exact).days), "exact"
    precision = coarser(_precision_of(a), _precision_of(b))
    low, high = _clip(b, not_before, not_after)
    clipped = (low, high) != (b.earliest, b.latest)
    if a.exact is None and b.exact is None and not clipped and _same_period(a, b):
        return 0.0, precision  # may be the same day: no gap invented from two midpoints
    first = a.exact or _mid(a.earliest, min(a.latest, high))
    last = b.exact or _mid(max(low, first), high)
    if last < first:
        return None
    return months((last - first).days), precision


def _clip(
    date: dates.PartialDate, not_before: dt.date | None, not_after: dt.date | None
) -> tuple[dt.date, dt.date]:
    """The days ``date`` may be that the record allows: its period intersected with the bounds."""
    low = max(date.earliest, not_before) if not_before is not None else date.earliest
    high = min(date.latest, not_after) if not_after is not None else date.latest
    return (low, high) if low <= high else (date.earliest, date.latest)


def _same_period(a: dates.PartialDate, b: dates.PartialDate) -> bool:
    """Two partial dates equal at the coarser one's precision: one's period holds the other's."""
    return (a.earliest <= b.earliest and b.latest <= a.latest) or (
        b.earliest <= a.earliest and a.latest <= b.latest
    )


def _mid(low: dt.date, high: dt.date) -> dt.date:
    return low + (high - low) // 2


def diagnosis_date(case: Mapping[str, Any]) -> str | None:
    """The diagnosis date (possibly partial); None when the source gives none (``unknown``)."""
    return dates.known(case["diagnosis"]["date"])


def operated(case: Mapping[str, Any]) -> bool:
    """At least one operation recorded (dated or not): DFS and recurrence apply."""
    return bool(case["surgery"])


def surgery_date(case: Mapping[str, Any]) -> str | None:
    """Date (possibly partial) of the first (earliest) operation; None when the case was not operated
    or an operation's date is ``unknown`` (then the first one is not known: ``operated`` tells)."""
    first = first_surgery(dict(case))
    return None if first is None else dates.known(first[1])


def index_surgery(case: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first (earliest) operation, the one case series report."""
    first = first_surgery(dict(case))
    if first is None:
        return None
    found: dict[str, Any] = case["surgery"][first[0]]
    return found


def died(case: Mapping[str, Any]) -> bool:
    return bool(case["outcome"]["vital_status"] == DEAD)


def _days(values: list[str | None], end: Literal["earliest", "latest"]) -> list[dt.date]:
    parsed = [dates.parse(v) for v in (dates.known(value) for value in values) if v is not None]
    return [getattr(p, end) for p in parsed]


def _known_alive(case: Mapping[str, Any]) -> dt.date | None:
    """The last day the record proves the patient alive: the earliest day of the last contact and
    of each follow-up assessment (an assessment is made on a living patient), the latest of these."""
    found = _days([case["outcome"]["last_contact"], *(fu["date"] for fu in case["follow_up"])], "earliest")
    return max(found, default=None)


def _death_latest(case: Mapping[str, Any]) -> dt.date | None:
    """The last day the patient may have died on (a recorded death date), else None."""
    if not died(case):
        return None
    return min(_days([case["outcome"]["death_date"]], "latest"), default=None)


def _latest(values: list[float | None]) -> float | None:
    return max((value for value in values if value is not None), default=None)


def last_contact(case: Mapping[str, Any]) -> Point:
    """The last contact; a partial date is bounded by the follow-up assessments (not before them, by
    date or by ``months_after_surgery``) and a recorded death (not after it)."""
    outcome = case["outcome"]
    return Point(
        outcome["last_contact"],
        outcome.get("last_contact_months_after_diagnosis"),
        outcome.get("last_contact_months_after_surgery"),
        not_before=max(_days([fu["date"] for fu in case["follow_up"]], "earliest"), default=None),
        not_after=_death_latest(case),
        alive_after_surgery=_latest([fu["months_after_surgery"] for fu in case["follow_up"]]),
    )


def death_point(case: Mapping[str, Any]) -> Point | None:
    """When the patient died: the death date, else the last contact; None if not dead. A partial death
    date is not before the last day the record proves the patient alive (``_known_alive``), nor before
    a recorded interval of the last contact or an assessment (``Point.alive_after_diagnosis``)."""
    if not died(case):
        return None
    outcome = case["outcome"]
    death = outcome["death_date"]
    if death is None:
        return last_contact(case)
    return Point(
        death,
        not_before=_known_alive(case),
        alive_after_diagnosis=outcome.get("last_contact_months_after_diagnosis"),
        alive_after_surgery=_latest(
            [
                outcome.get("last_contact_months_after_surgery"),
                *(fu["months_after_surgery"] for fu in case["follow_up"]),
            ]
        ),
    )


def assessment(case: Mapping[str, Any], fu: Mapping[str, Any]) -> Point:
    """A follow-up assessment; a partial date is not after the last contact nor a recorded death."""
    ends = _days([case["outcome"]["last_contact"]], "latest")
    death = _death_latest(case)
    if death is not None:
        ends.append(death)
    date = dates.known(fu["date"])  # an assessment dated ``unknown`` has only its interval, if any
    return Point(date, None, fu["months_after_surgery"], not_after=min(ends, default=None))


def elapsed(case: Mapping[str, Any], zero: str, point: Point) -> Elapsed | None:
    """(months, precision) from time zero (``diagnosis`` or ``surgery``) to ``point``, from what is recorded:
    an interval in the same reference as recorded; else the dates; else the other interval and the
    diagnosis-to-surgery time (exact only when that is). None when it cannot be known."""
    diagnosis, surgery = diagnosis_date(case), surgery_date(case)
    if zero == "diagnosis":
        if point.after_diagnosis is not None:
            return point.after_diagnosis, "exact"
        if point.date is not None:
            found = span(diagnosis, point.date, point.not_before, point.not_after)
            return _not_before_alive(found, alive_after(case, "diagnosis", point), diagnosis, point)
        if point.after_surgery is not None:
            gap = span(diagnosis, surgery)
            return None if gap is None else (gap[0] + point.after_surgery, gap[1])
        return None
    if not operated(case):
        return None
    if point.date is not None and dates.exact(point.date) and dates.exact(surgery):
        return span(surgery, point.date, point.not_before, point.not_after)
    if point.after_surgery is not None:
        return point.after_surgery, "exact"
    if point.date is not None:
        found = span(surgery, point.date, point.not_before, point.not_after)
        return _not_before_alive(found, alive_after(case, "surgery", point), surgery, point)
    if point.after_diagnosis is not None:
        gap = span(diagnosis, surgery)
        if gap is None or point.after_diagnosis < gap[0]:
            return None
        return point.after_diagnosis - gap[0], gap[1]
    return None


def _gap(case: Mapping[str, Any]) -> tuple[float, float] | None:
    """(fewest, most) months the dates allow from diagnosis to the first surgery; None when either is
    absent or ``unknown``."""
    diagnosis, surgery = diagnosis_date(case), surgery_date(case)
    if diagnosis is None or surgery is None:
        return None
    a, b = dates.parse(diagnosis), dates.parse(surgery)
    return months(max(0, (b.earliest - a.latest).days)), months((b.latest - a.earliest).days)


def alive_after(case: Mapping[str, Any], zero: str, point: Point) -> float | None:
    """The fewest months after time zero (``diagnosis`` or ``surgery``) that ``point`` may be at, from the
    intervals the record proves the patient alive at (``Point.alive_after_diagnosis`` / ``_surgery``);
    an interval in the other reference is moved by the diagnosis-to-surgery time at its most cautious
    (a surgery is not before its diagnosis: with either date unknown, the gap is taken as 0 after
    diagnosis and not used after surgery). None when the record proves nothing."""
    gap = _gap(case)
    if zero == "diagnosis":
        moved = (
            None if point.alive_after_surgery is None else point.alive_after_surgery + (gap[0] if gap else 0)
        )
        return _latest([point.alive_after_diagnosis, moved])
    moved = (
        None if point.alive_after_diagnosis is None or gap is None else point.alive_after_diagnosis - gap[1]
    )
    return _latest([point.alive_after_surgery, moved])


def _not_before_alive(
    found: Elapsed | None, floor: float | None, start: str | None, point: Point
) -> Elapsed | None:
    """``found`` (a time placed from a partial date) when it is not before ``floor`` (``alive_after``);
    else the midpoint, in months, of what remains of the window: ``floor`` to the latest the dates allow
    (the latest day of ``point.date`` within ``not_after``, from the earliest day of ``start``), as a
    partial date elsewhere is taken at the midpoint of the days it may still be. None when no time in
    that window remains (the record contradicts itself: unknown, as dates that end before they start).
    Times from two full dates are as the dates say."""
    if found is None or floor is None or found[1] == "exact" or found[0] >= floor:
        return found
    if start is None or point.date is None:
        return found
    end = dates.parse(point.date)
    high = end.latest
    if point.not_after is not None and end.earliest <= point.not_after < high:
        high = point.not_after
    most = months((high - dates.parse(start).earliest).days)
    if most < floor:
        return None
    return (floor + most) / 2, found[1]


def _time(found: Elapsed | None, event: int) -> TimeToEvent | None:
    return None if found is None else TimeToEvent(found[0], event, found[1])


def overall_survival(case: Mapping[str, Any]) -> TimeToEvent | None:
    death = death_point(case)
    if death is not None:
        return _time(elapsed(case, "diagnosis", death), 1)
    return _time(elapsed(case, "diagnosis", last_contact(case)), 0)


def _recurrence_times(case: Mapping[str, Any]) -> list[Elapsed | None]:
    """Each follow-up assessment after the first surgery that is not disease-free, as its time after
    that surgery; None for one whose time cannot be known (its surgery date is ``unknown``, or its own
    date is ``unknown``, and it gives no months_after_surgery): it is still a recurrence, only not
    timed ("Recurrence occurred in all patients", J Korean Surg Soc 2012, with no time)."""
    return [time for _, time in _recurrences(case)]


def _recurrences(case: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Elapsed | None]]:
    """(assessment, time after the first surgery or None) of each recurrence (``_recurrence_times``)."""
    if not operated(case):
        return []
    start = surgery_date(case)
    found: list[tuple[Mapping[str, Any], Elapsed | None]] = []
    for fu in case["follow_up"]:
        if fu["disease_status"] == DISEASE_FREE:
            continue
        date = dates.known(fu["date"])
        if date is not None and start is not None and dates.certainly_before(date, start):
            continue
        time = elapsed(case, "surgery", assessment(case, fu))
        untimed = date is None and fu["months_after_surgery"] is None
        if time is not None or start is None or untimed:
            found.append((fu, time))
    return found


LOCAL_STATUSES = frozenset({"local_recurrence", "local_and_distant"})
DISTANT_STATUSES = frozenset({"distant_metastasis", "local_and_distant"})


def recurrence_types(case: Mapping[str, Any]) -> set[str]:
    """``local`` and/or ``distant``: the kinds of recurrence any assessment after the first surgery
    records (disease-status local_recurrence, distant_metastasis, local_and_distant), timed or not;
    stable or progressive disease is a recurrence of neither kind."""
    found: set[str] = set()
    for fu, _ in _recurrences(case):
        if fu["disease_status"] in LOCAL_STATUSES:
            found.add("local")
        if fu["disease_status"] in DISTANT_STATUSES:
            found.add("distant")
    return found


def recurrence_sites(case: Mapping[str, Any]) -> set[str]:
    """The sites (table metastasis-site) of every recurrence after the first surgery, timed or not."""
    return {site for fu, _ in _recurrences(case) for site in fu["sites"]}


def followed_after_surgery(case: Mapping[str, Any]) -> bool:
    """Whether the record shows the patient after the first surgery, the evidence a "no recurrence"
    needs (review 15, M2): a follow-up assessment (any status; the case model keeps them on or after
    the first surgery), or a last contact (date or interval; the death for the dead without a death
    date) known to be after the surgery. A series with no follow-up proves nothing: unknown."""
    if not operated(case):
        return False
    if case["follow_up"]:
        return True
    return _certainly_after_surgery(case, last_contact(case))


def _certainly_after_surgery(case: Mapping[str, Any], point: Point) -> bool:
    """Whether ``point`` is certainly after the first surgery's day (second review 15, M6): a partial
    date's earliest day after the surgery's latest day, not its midpoint (last contact ``2019-05`` after
    surgery 2019-05-20 may be the surgery day); or an interval after surgery above 0; or one after
    diagnosis above the longest diagnosis-to-surgery time the dates allow."""
    surgery, date = surgery_date(case), dates.known(point.date)
    gap = _gap(case)
    return any(
        [
            point.after_surgery is not None and point.after_surgery > 0,
            date is not None
            and surgery is not None
            and dates.parse(date).earliest > dates.parse(surgery).latest,
            point.after_diagnosis is not None and gap is not None and point.after_diagnosis > gap[1],
        ]
    )


def recurrence(case: Mapping[str, Any]) -> bool | None:
    """True when a recurrence was recorded; False only with evidence of follow-up after surgery
    (``followed_after_surgery``); unknown (None) otherwise and when not operated. "none" is a real
    answer, unknown is not (data set, "Unknown vs none")."""
    if not operated(case):
        return None
    if _recurrence_times(case):
        return True
    return False if followed_after_surgery(case) else None


def disease_free_survival(case: Mapping[str, Any]) -> TimeToEvent | None:
    """DFS; unknown (None) when not operated, or when a recurrence's time cannot be known (the
    earliest event may be that one)."""
    if not operated(case):
        return None
    times = _recurrence_times(case)
    if None in times:
        return None
    events = [time for time in times if time is not None]
    death = death_point(case)
    if death is not None:
        at_death = elapsed(case, "surgery", death)
        floor = alive_after(case, "surgery", death)
        if at_death is not None:
            events.append(at_death)
        elif not (events and floor is not None and floor >= min(e[0] for e in events)):
            return None  # a death is an event: with its time unknown, so is DFS (never censored)
        # (unless the record proves the patient alive at or after the first recurrence: second
        # review 15, L3, that recurrence is the first event whenever the death was)
    if events:
        return _time(min(events, key=lambda e: e[0]), 1)
    return _time(elapsed(case, "surgery", last_contact(case)), 0)


def diagnosis_to_surgery_days(case: Mapping[str, Any]) -> int | None:
    """Days from diagnosis to the first surgery when both are full dates; else unknown."""
    start, diagnosis = dates.exact(surgery_date(case)), dates.exact(diagnosis_date(case))
    return None if start is None or diagnosis is None else (start - diagnosis).days

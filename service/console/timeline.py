"""A case's clinical timeline: what happened, in order, each at the precision recorded.

Pure: a canonical case in, events out. A date stays as written (``2019`` is a year, never
``2019-01-01``); an event with no date but an interval (follow-up 6 months after surgery) shows the
interval and sorts at its anchor plus that many months. Events with neither sort after the last dated
one of their kind's anchor (a complication after the surgery).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.codes import table
from service.model import dates
from service.model.units import DAYS_PER_MONTH
from service.registry import outcomes

RECURRENCE_STATUSES = ("local_recurrence", "distant_metastasis", "local_and_distant")
"""disease-status codes (mappings/codes.yaml) that mean the tumour came back: the timeline marks the
first follow-up with one of them as the recurrence (a test checks each code exists)."""
TIMING_KINDS: dict[str, str] = {"neoadjuvant": "neoadjuvant", "adjuvant": "adjuvant"}
"""therapy-timing codes with a timeline kind of their own; other timings are kind ``therapy``."""
_FAR = dt.date(9999, 12, 31)


@dataclass(frozen=True)
class Event:
    """One entry of the timeline. ``when`` is the date as recorded (or an interval, or "date not
    recorded"); ``kind`` one of diagnosis, neoadjuvant, surgery, complication, adjuvant, therapy,
    follow-up, recurrence, last-contact, death."""

    kind: str
    when: str
    title: str
    detail: str
    order: tuple[dt.date, int]


def display(table_name: str, key: Any) -> str:
    """A code's display from its table; an unknown or absent key as written (never dropped)."""
    if key is None:
        return "not recorded"
    values = table(table_name).values
    return values[key].display if key in values else str(key).replace("_", " ")


def _day(text: str | None) -> dt.date | None:
    """The earliest day of a recorded date; None for none or ``unknown`` (the source gives no date)."""
    known = dates.known(text)
    return None if known is None else dates.parse(known).earliest


def _when(text: str | None) -> str | None:
    return "date unknown (not given by the source)" if text == dates.UNKNOWN else text


def _grade(grade: Any) -> str:
    """A Clavien-Dindo grade as recorded: a grade, ``unknown``, or a bound (``< IIIa``)."""
    if isinstance(grade, Mapping):
        return f"{grade.get('comparator', '')} {grade.get('value', '')}".strip()
    return str(grade)


def _plus_months(anchor: dt.date | None, months: Any) -> dt.date | None:
    if anchor is None or not isinstance(months, int | float):
        return None
    try:
        return anchor + dt.timedelta(days=round(float(months) * DAYS_PER_MONTH))
    except OverflowError:  # intake bounds durations; a sort key must never fail a page
        return None


def _segments(diagnosis: Mapping[str, Any]) -> str:
    low, high = diagnosis.get("ivc_segment_from"), diagnosis.get("ivc_segment_to")
    return f"IVC segment {low}" if low == high else f"IVC segments {low}-{high}"


def timeline(case: Mapping[str, Any]) -> list[Event]:
    """The events of ``case`` in clinical order (stable for ties: the order they are listed here)."""
    events: list[Event] = []

    def add(
        kind: str,
        text: str | None,
        fallback: str,
        at: dt.date | None,
        title: str,
        detail: str,
        shown: str = "",
    ) -> None:
        """``text`` the recorded date (sorts the event), ``shown`` what to print instead when set."""
        when = shown or _when(text) or fallback
        events.append(Event(kind, when, title, detail, ((_day(text) or at or _FAR), len(events))))

    diagnosis = case.get("diagnosis") or {}
    diagnosed = _day(diagnosis.get("date"))
    add(
        "diagnosis",
        diagnosis.get("date"),
        "date not recorded",
        None,
        "Diagnosis",
        f"{display('diagnosis-basis', diagnosis.get('basis'))}; {_segments(diagnosis)}",
    )
    surgeries = case.get("surgery") or []
    first_surgery = min((d for s in surgeries if (d := _day(s.get("date"))) is not None), default=None)
    for therapy in case.get("therapies") or []:
        timing = therapy.get("timing")
        kind = TIMING_KINDS.get(str(timing), "therapy")
        start, end = therapy.get("start"), therapy.get("end")
        span = f"{start} to {end}" if start and end else None
        anchor = first_surgery if kind == "adjuvant" else diagnosed
        title = f"{display('therapy-timing', timing)} {display('therapy-kind', therapy.get('kind')).lower()}"
        status = display("therapy-status", therapy.get("status")) if therapy.get("status") else ""
        add(kind, start, "date not recorded", anchor, title, status, shown=span or "")
    for surgery in surgeries:
        method = (surgery.get("ivc_management") or {}).get("method")
        detail = (
            f"{display('surgery-intent', surgery.get('intent'))}; IVC: {display('ivc-management', method)}"
        )
        add("surgery", surgery.get("date"), "date not recorded", None, "Surgery", detail)
    for complication in (case.get("postoperative") or {}).get("complications") or []:
        grade = complication.get("clavien_dindo")
        text = complication.get("text")
        what = display("complication", complication.get("type"))
        detail = (f"Clavien-Dindo {_grade(grade)}" if grade else "not graded") + (f"; {text}" if text else "")
        add("complication", complication.get("date"), "date not recorded", first_surgery, what, detail)
    recurrence_seen = False
    for follow_up in case.get("follow_up") or []:
        months = follow_up.get("months_after_surgery")
        fallback = (
            f"{months:g} months after surgery" if isinstance(months, int | float) else "date not recorded"
        )
        at = _plus_months(first_surgery, months)
        status = follow_up.get("disease_status")
        add("follow-up", follow_up.get("date"), fallback, at, "Follow-up", display("disease-status", status))
        if status in RECURRENCE_STATUSES and not recurrence_seen:
            recurrence_seen = True
            sites = ", ".join(display("metastasis-site", s) for s in follow_up.get("sites") or [])
            detail = display("disease-status", status) + (f" ({sites})" if sites else "")
            add("recurrence", follow_up.get("date"), fallback, at, "Recurrence", detail)
    outcome = case.get("outcome") or {}
    if outcome.get("vital_status") == outcomes.DEAD:
        cause = outcome.get("death_cause")
        add(
            "death",
            outcome.get("death_date"),
            "date not recorded",
            None,
            "Death",
            str(cause) if cause else "cause not recorded",
        )
    else:
        last = outcome.get("last_contact")
        after_surgery = outcome.get("last_contact_months_after_surgery")
        after_diagnosis = outcome.get("last_contact_months_after_diagnosis")
        interval = ""
        if isinstance(after_surgery, int | float):
            interval = f"{after_surgery:g} months after surgery"
        elif isinstance(after_diagnosis, int | float):
            interval = f"{after_diagnosis:g} months after diagnosis"
        if last or interval:
            at = _plus_months(first_surgery, after_surgery) or _plus_months(diagnosed, after_diagnosis)
            add(
                "last-contact",
                last,
                "date not recorded",
                at,
                "Last contact",
                display("vital-status", outcome.get("vital_status")),
                shown=interval if dates.known(last) is None else "",
            )
    return sorted(events, key=lambda e: e.order)

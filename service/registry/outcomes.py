"""Outcome measures of one case, as registries and case-series papers define them.

Pure functions of a canonical case (``service.model.validate_case`` output); no clock: every interval
ends at a date recorded in the case. Months are days / 30.4375 (the data set's convention,
``service.model.units.DAYS_PER_MONTH``).

Event and censoring rules (documented in docs/registry.md):

- **Overall survival (OS)**, every case. Time zero: ``diagnosis.date``. Event: death
  (``outcome.vital_status`` = dead) at ``outcome.death_date``, or at ``outcome.last_contact`` when the
  death date is missing. Otherwise censored at ``outcome.last_contact`` (alive, unknown, lost to
  follow-up).
- **Disease-free (recurrence-free) survival (DFS)**, operated cases only (at least one surgery). Time
  zero: the first (earliest) ``surgery[].date``. Event: the earliest of (a) the date of the first
  follow-up assessment on or after that surgery whose ``disease_status`` is not ``ned`` (local
  recurrence, distant metastasis, both, stable or progressive disease: the patient is no longer
  disease-free; persistent disease after an incomplete resection counts at its first assessment) and
  (b) death from any cause (as for OS). Otherwise censored at ``outcome.last_contact``.
- **Recurrence**: operated cases only; yes when event (a) happened, no otherwise (death without
  recurrence is no recurrence). Not operated: unknown (None).
- An interval that would end before it starts (inconsistent dates) is unknown (None).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.model.rules import first_surgery
from service.model.units import DAYS_PER_MONTH

# The codes these rules name, per table of mappings/codes.yaml (a test checks that each exists).
DISEASE_FREE = "ned"
DEAD = "dead"
OUTCOME_CODES: dict[str, tuple[str, ...]] = {"disease-status": (DISEASE_FREE,), "vital-status": (DEAD,)}


@dataclass(frozen=True)
class TimeToEvent:
    """Time from time zero to the event or to censoring; ``event`` 1 = observed, 0 = censored."""

    start: dt.date
    end: dt.date
    event: int

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def months(self) -> float:
        return self.days / DAYS_PER_MONTH


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def months(days: int) -> float:
    return days / DAYS_PER_MONTH


def diagnosis_date(case: Mapping[str, Any]) -> dt.date:
    return _date(case["diagnosis"]["date"])


def surgery_date(case: Mapping[str, Any]) -> dt.date | None:
    """Date of the first (earliest) operation; None when the case was not operated."""
    first = first_surgery(dict(case))
    return None if first is None else _date(first[1])


def index_surgery(case: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first (earliest) operation, the one case series report."""
    first = first_surgery(dict(case))
    if first is None:
        return None
    found: dict[str, Any] = case["surgery"][first[0]]
    return found


def death_date(case: Mapping[str, Any]) -> dt.date | None:
    """Date of death (the last contact when a dead patient's death date is missing); None if not dead."""
    outcome = case["outcome"]
    if outcome["vital_status"] != DEAD:
        return None
    return _date(outcome["death_date"] or outcome["last_contact"])


def _interval(start: dt.date, end: dt.date, event: int) -> TimeToEvent | None:
    return None if end < start else TimeToEvent(start, end, event)


def overall_survival(case: Mapping[str, Any]) -> TimeToEvent | None:
    start = diagnosis_date(case)
    died = death_date(case)
    if died is not None:
        return _interval(start, died, 1)
    return _interval(start, _date(case["outcome"]["last_contact"]), 0)


def recurrence_date(case: Mapping[str, Any]) -> dt.date | None:
    """Date of the first follow-up on or after the first surgery that is not disease-free."""
    start = surgery_date(case)
    if start is None:
        return None
    found = [
        _date(fu["date"])
        for fu in case["follow_up"]
        if fu["date"] is not None and _date(fu["date"]) >= start and fu["disease_status"] != DISEASE_FREE
    ]
    return min(found) if found else None


def recurrence(case: Mapping[str, Any]) -> bool | None:
    if surgery_date(case) is None:
        return None
    return recurrence_date(case) is not None


def disease_free_survival(case: Mapping[str, Any]) -> TimeToEvent | None:
    start = surgery_date(case)
    if start is None:
        return None
    events = [d for d in (recurrence_date(case), death_date(case)) if d is not None]
    if events:
        return _interval(start, min(events), 1)
    return _interval(start, _date(case["outcome"]["last_contact"]), 0)


def diagnosis_to_surgery_days(case: Mapping[str, Any]) -> int | None:
    start = surgery_date(case)
    return None if start is None else (start - diagnosis_date(case)).days

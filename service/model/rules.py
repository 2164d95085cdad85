"""Derived values and the cross-field rules of the data set, on a loaded (canonical) case.

Each broken rule yields one Issue naming the element (``surgery[0].ivc_management.graft_material``)
and the rule. ``derive`` fills the derived values in place; ``check`` only reads.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from service.codes import table
from service.errors import Issue
from service.model import dates
from service.model.fields import grades_within
from service.model.units import DAYS_PER_MONTH, MAX_AGE_YEARS

# ``performed`` of a care plan activity: surgery[i] or therapies[i].
_PERFORMED = re.compile(r"^(surgery|therapies)\[(\d+)\]$")
# Organs whose resection is a nephrectomy, and the side.
_KIDNEY_SIDE = {"right_kidney": "right", "left_kidney": "left"}
_OTHER_TEXT = "other"
_GRAFTED_IVC = ("patch_cavoplasty", "interposition_graft")

# The codes the rules name, per table of mappings/codes.yaml (a test checks that each exists).
RULE_CODES: dict[str, tuple[str, ...]] = {
    "ivc-management": _GRAFTED_IVC,
    "renal-vein-management": ("reconstruction_with_graft", "sacrificed_with_nephrectomy"),
    "organ": (*_KIDNEY_SIDE, _OTHER_TEXT),
    "side": tuple(_KIDNEY_SIDE.values()),
    "ihc-marker": ("ki67", _OTHER_TEXT),
    "vital-status": ("dead", "alive"),
    "clavien-dindo": ("V",),
    "plan-activity": ("surgery", "surveillance_imaging", "radiotherapy", "chemotherapy", "anticoagulation"),
    "therapy-kind": ("radiotherapy", "chemotherapy", "anticoagulation"),
    "history-condition": (_OTHER_TEXT,),
    "symptom": (_OTHER_TEXT,),
    "metastasis-site": (_OTHER_TEXT,),
    "lesion-nature": (_OTHER_TEXT,),
    "complication": (_OTHER_TEXT,),
    "drug": (_OTHER_TEXT,),
}
_MONTHS_TOLERANCE = 0.1 + 1e-9
_DOSE_TOLERANCE = 0.01 + 1e-9


def issue(path: str, rule: str, code: str = "business-rule") -> Issue:
    return Issue(code=code, diagnostics=f"{path}: {rule}", expression=path)


def full_years(birth: str, on: str) -> int:
    """Age in full years between two full dates (``dates.full_years_between`` for partial ones)."""
    found = dates.full_years_between(birth, on)
    if found is None:
        raise ValueError("full_years needs dates whose age is determinate")
    return found


def months_between(start: str, end: str) -> float:
    """Months (days / 30.4375, 1 decimal) between two full dates."""
    a, b = dates.parse(start).exact, dates.parse(end).exact
    if a is None or b is None:
        raise ValueError("months_between needs full dates")
    return round((b - a).days / DAYS_PER_MONTH, 1)


def date_after(start: str, months: float) -> str:
    """The day ``months`` after a full date (days = months x 30.4375, rounded)."""
    a = dates.parse(start).exact
    if a is None:
        raise ValueError("date_after needs a full date")
    try:  # defence in depth: intake bounds every duration, but a date must never overflow into a 500
        return (a + dt.timedelta(days=round(months * DAYS_PER_MONTH))).isoformat()
    except (OverflowError, ValueError):
        raise ValueError(f"{months} months after {start} is no calendar date") from None


def first_surgery(case: dict[str, Any]) -> tuple[int, str] | None:
    """(index, date) of the first operation: the earliest by earliest possible day, then latest day,
    then list order (2019 sorts before 2019-03-02; ties keep the order given). When any operation's
    date is ``unknown`` no date orders them: the first listed, with date ``unknown`` (the list order is
    the only order the source gives), so callers read the date through ``dates.known`` and derive
    nothing from it."""
    if any(s["date"] == dates.UNKNOWN for s in case["surgery"]):
        return 0, dates.UNKNOWN
    dated = [(dates.sort_key(s["date"]), i, s["date"]) for i, s in enumerate(case["surgery"])]
    if not dated:
        return None
    _, index, date = min(dated)
    return index, date


# ---- derived values ---------------------------------------------------------------------------


def derive(case: dict[str, Any]) -> list[Issue]:
    """Fill age_at_diagnosis and follow-up date / months_after_surgery where they are determinate;
    report disagreements. A partial date derives nothing it cannot know: born ``1960`` and diagnosed
    ``2019-06`` leaves the age unknown (58 or 59) unless it is given, and then it must be possible."""
    issues: list[Issue] = []
    patient, diagnosis_date = case["patient"], dates.known(case["diagnosis"]["date"])
    if diagnosis_date is None:
        # no date to count the age from: the age itself is the only way to know it (issue 15)
        if patient["age_at_diagnosis"] is None:
            rule_text = "required when diagnosis.date is unknown"
            issues.append(issue("patient.age_at_diagnosis", rule_text, "required"))
    elif patient["birth_date"] is not None:
        if dates.certainly_before(diagnosis_date, patient["birth_date"]):
            issues.append(issue("patient.birth_date", "must not be after diagnosis.date"))
        else:
            issues += _age(patient, diagnosis_date)
    elif patient["age_at_diagnosis"] is None:
        issues.append(issue("patient.age_at_diagnosis", "required when birth_date is absent", "required"))

    first = first_surgery(case)
    for i, fu in enumerate(case["follow_up"]):
        path = f"follow_up[{i}]"
        if fu["date"] is None and fu["months_after_surgery"] is None:
            # ``unknown`` satisfies it: the source says when, or says it does not know (issue 15)
            issues.append(issue(f"{path}.date", "date or months_after_surgery is required", "required"))
            continue
        # derived only between full dates: a month or year date has no day to count from
        if first is None or dates.exact(first[1]) is None:
            continue
        surgery_date = first[1]
        if dates.known(fu["date"]) is None:
            # Not derived: "6 months after surgery" names no day, and a day counted from it (months x
            # 30.4375) would be stored as if recorded and refuse true records near a month's end. The
            # interval stays an interval; the rules bound it with the source's rounding
            # (months_certainly_after, span_allows).
            continue
        if dates.exact(fu["date"]) is None:
            continue
        elif fu["months_after_surgery"] is None:
            if fu["date"] >= surgery_date:
                fu["months_after_surgery"] = months_between(surgery_date, fu["date"])
        else:
            derived = months_between(surgery_date, fu["date"])
            if abs(derived - fu["months_after_surgery"]) > _MONTHS_TOLERANCE:
                issues.append(
                    issue(
                        f"{path}.months_after_surgery",
                        f"must agree with date within 0.1 month ({derived} months after the first "
                        f"surgery, surgery[{first[0]}].date)",
                    )
                )
    return issues


def _age(patient: dict[str, Any], diagnosis_date: str) -> list[Issue]:
    """Derive the age when determinate; a given age must be one the two dates allow."""
    birth, d = dates.parse(patient["birth_date"]), dates.parse(diagnosis_date)
    age = dates.full_years_between(birth.text, d.text)
    given = patient["age_at_diagnosis"]
    if age is not None and age > MAX_AGE_YEARS:
        # derived, it would be stored beyond what the element allows when given (outside review: 171)
        rule_text = f"gives an age at diagnosis of {age} with diagnosis.date: more than {MAX_AGE_YEARS}"
        return [issue("patient.birth_date", rule_text)]
    if age is not None:
        if given is None:
            patient["age_at_diagnosis"] = age
            return []
        if given == age:
            return []
        rule_text = f"must equal the age derived from birth_date and diagnosis.date ({age})"
        return [issue("patient.age_at_diagnosis", rule_text)]
    if given is None:
        return []
    low = max(0, dates.full_years_between(birth.latest.isoformat(), d.earliest.isoformat()) or 0)
    high = dates.full_years_between(birth.earliest.isoformat(), d.latest.isoformat()) or low
    if low <= given <= high:
        return []
    rule_text = f"must be an age that birth_date and diagnosis.date allow ({low} to {high})"
    return [issue("patient.age_at_diagnosis", rule_text)]


# ---- rules --------------------------------------------------------------------------------------


Rule = Callable[[dict[str, Any]], Iterator[Issue]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def check(case: dict[str, Any]) -> list[Issue]:
    return [found for fn in RULES for found in fn(case)]


def before(a: str | None, b: str | None) -> bool:
    """Certainly out of order; an absent or ``unknown`` date (issue 15) is in no order: the rule is
    skipped."""
    a, b = dates.known(a), dates.known(b)
    return a is not None and b is not None and dates.certainly_before(a, b)


@rule
def dates_consistent(case: dict[str, Any]) -> Iterator[Issue]:
    """diagnosis <= surgery <= follow-up, start <= end: compared at the coarser precision, so a rule
    fails only when the dates are certainly out of order (data set, "Incomplete records": "Date rules
    compare at the coarser precision (2019 <= 2019-06-12 holds)")."""
    diagnosis = dates.known(case["diagnosis"]["date"])

    for i, s in enumerate(case["surgery"]):
        if before(s["date"], diagnosis):
            yield issue(f"surgery[{i}].date", "must not be before diagnosis.date")
    first = first_surgery(case)
    for i, fu in enumerate(case["follow_up"]):
        if dates.known(fu["date"]) is None:  # absent or ``unknown``: in no order (issue 15)
            continue
        if before(fu["date"], diagnosis):
            yield issue(f"follow_up[{i}].date", "must not be before diagnosis.date")
        elif first is not None and before(fu["date"], first[1]):
            yield issue(
                f"follow_up[{i}].date", f"must not be before the first surgery (surgery[{first[0]}].date)"
            )
    for i, t in enumerate(case["therapies"]):
        if t["start"] is not None and t["end"] is not None:
            if before(t["end"], t["start"]):
                yield issue(f"therapies[{i}].end", "must not be before start")
            elif not dates.comparable(t["start"], t["end"]):
                yield issue(
                    f"therapies[{i}].end",
                    f"{t['end']} and start {t['start']} cannot be ordered (FHIR Period, per-1): give the "
                    "year alone in both, or a month or day in both",
                )
    outcome = case["outcome"]
    if outcome["last_contact"] is not None and before(outcome["last_contact"], diagnosis):
        yield issue("outcome.last_contact", "must not be before diagnosis.date")
    if outcome["death_date"] is not None and before(outcome["death_date"], diagnosis):
        yield issue("outcome.death_date", "must not be before diagnosis.date")


def not_after_today(dated: Iterable[tuple[str, str]], today: dt.date) -> Iterator[Issue]:
    """Each (path, date) whose every possible day is after ``today`` (the latest calendar day anywhere
    on Earth, ``dates.latest_today``): a record cannot hold a day that has not come yet, and a last
    contact in the future would turn the survival estimates into fiction (issue 15)."""
    for path, value in dated:
        if dates.certainly_after_day(value, today):
            yield issue(path, f"must not be after today ({today.isoformat()}, the latest date on Earth now)")


@rule
def last_contact_given(case: dict[str, Any]) -> Iterator[Issue]:
    """The last contact is a date or an interval in months (data set, "Incomplete records": "Intervals
    may be given instead of dates ... and stay intervals, in the unit given"), or ``unknown`` stated
    explicitly when the source gives neither (issue 15); an interval after surgery needs an operation
    to count from."""
    outcome = case["outcome"]
    intervals = ("last_contact_months_after_diagnosis", "last_contact_months_after_surgery")
    if outcome["last_contact"] is None and all(outcome[name] is None for name in intervals):
        yield issue(
            "outcome.last_contact",
            "last_contact or last_contact_months_after_diagnosis/_surgery is required",
            "required",
        )
    if outcome["last_contact_months_after_surgery"] is not None and not case["surgery"]:
        yield issue("outcome.last_contact_months_after_surgery", "only allowed when a surgery is recorded")


INTERVAL_SLACK_MONTHS = 1.0
"""Months recorded as months are rounded by their source; an interval is refused only when it misses
the span its dates allow by more than this."""


def _months_only_after(case: dict[str, Any], limit: str | None) -> Iterator[tuple[int, float, str, int]]:
    """(index, months, first surgery date, its index) of each follow-up given only in months after the
    first surgery that certainly ends after the date ``limit`` (a death, a last contact)."""
    first = first_surgery(case)
    surgery = dates.known(first[1]) if first else None
    if first is None or surgery is None or limit is None:
        return
    for i, fu in enumerate(case["follow_up"]):
        months = fu["months_after_surgery"]
        untimed = dates.known(fu["date"]) is None
        if untimed and months is not None and months_certainly_after(surgery, months, limit):
            yield i, months, surgery, first[0]


def months_certainly_after(start: str, months: float, limit: str) -> bool:
    """Whether ``months`` after the (partial) date ``start`` ends after the (partial) date ``limit`` on
    every day the dates allow, with ``INTERVAL_SLACK_MONTHS`` for the source's rounding."""
    longest = (dates.parse(limit).latest - dates.parse(start).earliest).days / DAYS_PER_MONTH
    return months > longest + INTERVAL_SLACK_MONTHS


def span_allows(start: str, end: str, months: float) -> bool:
    """Whether ``months`` can lie between two (partial) dates: within every span they allow, with
    ``INTERVAL_SLACK_MONTHS`` for the source's rounding."""
    begin, finish = dates.parse(start), dates.parse(end)
    shortest = (finish.earliest - begin.latest).days / DAYS_PER_MONTH
    longest = (finish.latest - begin.earliest).days / DAYS_PER_MONTH
    return shortest - INTERVAL_SLACK_MONTHS <= months <= longest + INTERVAL_SLACK_MONTHS


@rule
def intervals_agree_with_dates(case: dict[str, Any]) -> Iterator[Issue]:
    """An interval and the dates it counts between cannot disagree (data set: "Date rules compare at
    the coarser precision"; outside clinician review: 27 months after a 2014 operation with a last
    contact in 2014, or 27 months after surgery but 10 after diagnosis, were accepted). Refused only
    when certainly wrong: beyond every span the partial dates allow, with one month of slack."""
    outcome = case["outcome"]
    after_diagnosis = outcome["last_contact_months_after_diagnosis"]
    after_surgery = outcome["last_contact_months_after_surgery"]
    if (
        after_diagnosis is not None
        and after_surgery is not None
        and after_diagnosis + INTERVAL_SLACK_MONTHS < after_surgery
    ):
        yield issue(
            "outcome.last_contact_months_after_diagnosis",
            f"{after_diagnosis} months after diagnosis is less than {after_surgery} months after "
            "surgery, but the operation is not before the diagnosis",
        )
    first = first_surgery(case)
    starts = (
        ("diagnosis", dates.known(case["diagnosis"]["date"]), after_diagnosis),
        ("surgery", dates.known(first[1]) if first else None, after_surgery),
    )
    last = dates.known(outcome["last_contact"])
    for name, start, months in starts:
        if start is None or last is None or months is None:
            continue
        if not span_allows(start, last, months):
            yield issue(
                f"outcome.last_contact_months_after_{name}",
                f"{months} months after the {name} ({start}) cannot end at the last contact ({last})",
            )


def _diagnosis_floor(patient: dict[str, Any]) -> str | None:
    """The earliest day a diagnosis of unknown date can be: birth date + the age at diagnosis in years."""
    birth, age = dates.known(patient.get("birth_date")), patient.get("age_at_diagnosis")
    if birth is None or not isinstance(age, int):
        return None
    day = dates.parse(birth).earliest
    try:
        floor = day.replace(year=day.year + age)
    except ValueError:  # 29 February in a year that has none
        floor = day.replace(year=day.year + age, day=28)
    return floor.isoformat()


def intervals_not_after_today(case: dict[str, Any], today: dt.date) -> Iterator[Issue]:
    """An interval counted from a known anchor (diagnosis or first surgery, even partial) whose
    earliest possible end is after ``today``: the same "a date after today is an error" as
    ``not_after_today``, for the days an interval names (outside review: 120 months after a 2020
    operation was accepted). Earliest end = the anchor's earliest day + months x 30.4375 days."""
    first = first_surgery(case)
    diagnosis = ("diagnosis.date", dates.known(case["diagnosis"]["date"]))
    if diagnosis[1] is None:  # unknown: not before birth + age (second outside review)
        floor = _diagnosis_floor(case["patient"])
        diagnosis = ("patient.birth_date + age_at_diagnosis", floor)
        if floor is not None and dates.parse(floor).earliest > today:
            yield issue(
                "patient.age_at_diagnosis",
                f"birth_date + age_at_diagnosis ({floor} at the earliest) is after today "
                f"({today.isoformat()}): the diagnosis (date unknown) cannot be in the future",
            )
    surgery = (f"surgery[{first[0]}].date", dates.known(first[1])) if first else ("", None)
    if first and surgery[1] is None:  # unknown: not before the diagnosis ("diagnosis <= surgery")
        surgery = (f"{diagnosis[0]} (surgery[{first[0]}].date is unknown, not before it)", diagnosis[1])
    outcome = case["outcome"]
    months, days = ("months", DAYS_PER_MONTH), ("days", 1.0)
    intervals: list[tuple[str, tuple[str, str | None], float | None, tuple[str, float]]] = [
        (
            "outcome.last_contact_months_after_diagnosis",
            diagnosis,
            outcome["last_contact_months_after_diagnosis"],
            months,
        ),
        (
            "outcome.last_contact_months_after_surgery",
            surgery,
            outcome["last_contact_months_after_surgery"],
            months,
        ),
    ]
    intervals += [
        (f"follow_up[{i}].months_after_surgery", surgery, fu["months_after_surgery"], months)
        for i, fu in enumerate(case["follow_up"])
    ]
    intervals += [
        (f"therapies[{i}].start_postoperative_day", surgery, t["start_postoperative_day"], days)
        for i, t in enumerate(case["therapies"])
    ]
    for path, (anchor_path, anchor), amount, (unit, days_each) in intervals:
        if anchor is None or amount is None:
            continue
        counted = f"{amount:g} {unit} after {anchor_path} ({anchor})"
        try:
            earliest = dates.parse(anchor).earliest + dt.timedelta(days=math.floor(amount * days_each))
        except OverflowError:
            yield issue(path, f"{counted} is beyond the calendar")
            continue
        if earliest > today:
            yield issue(
                path,
                f"must not end after today ({today.isoformat()}, the latest date on Earth now): "
                f"{counted} is {earliest.isoformat()} at the earliest",
            )


@rule
def nothing_after_death(case: dict[str, Any]) -> Iterator[Issue]:
    """No operation, follow-up, therapy start, complication or last contact certainly after the death
    (outside clinician review: such timelines were stored); compared at the coarser precision."""
    outcome = case["outcome"]
    death = dates.known(outcome["death_date"])
    if death is None:
        return
    dated = [(f"surgery[{i}].date", s["date"]) for i, s in enumerate(case["surgery"])]
    dated += [(f"follow_up[{i}].date", fu["date"]) for i, fu in enumerate(case["follow_up"])]
    dated += [(f"therapies[{i}].start", t["start"]) for i, t in enumerate(case["therapies"])]
    if case["postoperative"] is not None:
        complications = case["postoperative"]["complications"]
        dated += [(f"postoperative.complications[{i}].date", c["date"]) for i, c in enumerate(complications)]
    dated.append(("outcome.last_contact", outcome["last_contact"]))
    for path, value in dated:
        if before(death, value):
            yield issue(path, f"must not be after outcome.death_date ({death})")
    for i, months, surgery, _first in _months_only_after(case, death):
        yield issue(
            f"follow_up[{i}].months_after_surgery",
            f"{months:g} months after the first surgery ({surgery}) is after outcome.death_date ({death})",
        )


@rule
def follow_up_within_last_contact(case: dict[str, Any]) -> Iterator[Issue]:
    """A follow-up is a contact, so the last contact is not before it: by date (coarser precision) or
    by months after surgery (0.1 month for the rounding of derived months). A follow-up with both a
    date and months must agree with them within what the partial dates allow (full dates: ``derive``),
    the rule of the last contact (``span_allows``)."""
    outcome = case["outcome"]
    last, last_months = outcome["last_contact"], outcome["last_contact_months_after_surgery"]
    first = first_surgery(case)
    surgery = dates.known(first[1]) if first else None
    past_last = {i: (m, s, f) for i, m, s, f in _months_only_after(case, dates.known(last))}
    for i, fu in enumerate(case["follow_up"]):
        path, months = f"follow_up[{i}]", fu["months_after_surgery"]
        if before(last, fu["date"]):
            yield issue(f"{path}.date", f"must not be after outcome.last_contact ({last})")
        if i in past_last:
            given, start, index = past_last[i]
            yield issue(
                f"{path}.months_after_surgery",
                f"{given:g} months after the first surgery (surgery[{index}].date {start}) is "
                f"after outcome.last_contact ({last})",
            )
        if months is not None and last_months is not None and months > last_months + _MONTHS_TOLERANCE:
            yield issue(
                f"{path}.months_after_surgery",
                f"must not be more than outcome.last_contact_months_after_surgery ({last_months:g})",
            )
        date = dates.known(fu["date"])
        if first is None or surgery is None or date is None or months is None:
            continue
        both_full = dates.exact(surgery) is not None and dates.exact(date) is not None
        if not both_full and not span_allows(surgery, date, months):
            yield issue(
                f"{path}.months_after_surgery",
                f"{months:g} months after the first surgery (surgery[{first[0]}].date {surgery}) "
                f"cannot fall on follow_up[{i}].date ({date})",
            )


@rule
def complications_after_surgery(case: dict[str, Any]) -> Iterator[Issue]:
    """A postoperative complication is not certainly before the first operation."""
    post, first = case["postoperative"], first_surgery(case)
    if post is None or first is None:
        return
    for i, complication in enumerate(post["complications"]):
        if before(complication["date"], first[1]):
            yield issue(
                f"postoperative.complications[{i}].date",
                f"must not be before the first surgery (surgery[{first[0]}].date {first[1]})",
            )


DEATH_WITHIN_DAYS = 30
"""postoperative.mortality_30d: death within 30 days of surgery."""


@rule
def deaths_agree(case: dict[str, Any]) -> Iterator[Issue]:
    """A death the postoperative record states (30-day mortality, Clavien-Dindo grade V: "death of a
    patient") cannot contradict the outcome: not with vital status alive, and a 30-day death not
    certainly more than 30 days after the first full surgery date."""
    post, outcome = case["postoperative"], case["outcome"]
    if post is None:
        return
    alive = outcome["vital_status"] == "alive"
    if post["mortality_30d"] is True:
        if alive:
            yield issue("postoperative.mortality_30d", "true contradicts outcome.vital_status alive")
        first = first_surgery(case)
        surgery, death = dates.exact(first[1]) if first else None, dates.known(outcome["death_date"])
        if surgery is not None and death is not None:
            days = (dates.parse(death).earliest - surgery).days
            if days > DEATH_WITHIN_DAYS:
                yield issue(
                    "postoperative.mortality_30d",
                    f"true contradicts outcome.death_date ({death}): at least {days} days after the "
                    f"first surgery (surgery[{first[0] if first else 0}].date {surgery.isoformat()})",
                )
    order = table("clavien-dindo").keys()
    for i, complication in enumerate(post["complications"]):
        if alive and grades_within(complication["clavien_dindo"], order) == ["V"]:
            yield issue(
                f"postoperative.complications[{i}].clavien_dindo",
                "grade V (death of the patient) contradicts outcome.vital_status alive",
            )


@rule
def response_needs_neoadjuvant_therapy(case: dict[str, Any]) -> Iterator[Issue]:
    """A response to neoadjuvant therapy needs a neoadjuvant therapy given (or one whose timing is
    unknown) in the case (outside clinician review of issue 15: accepted with no therapy at all)."""
    if case["pathology"] is None or case["pathology"].get("neoadjuvant_response_percent") is None:
        return
    given = [
        t
        for t in case["therapies"]
        if t["timing"] in ("neoadjuvant", "unknown") and t["status"] != "not_given"
    ]
    if not given:
        yield issue(
            "pathology.neoadjuvant_response_percent",
            "needs a therapy with timing neoadjuvant (or unknown) that was given",
        )


@rule
def death_only_when_dead(case: dict[str, Any]) -> Iterator[Issue]:
    outcome = case["outcome"]
    if outcome["vital_status"] != "dead":
        for name in ("death_date", "death_cause"):
            if outcome[name] is not None:
                yield issue(f"outcome.{name}", "only allowed when vital_status is dead")


@rule
def performance_scores(case: dict[str, Any]) -> Iterator[Issue]:
    """ECOG 0-4 and Karnofsky 0-100 in steps of 10 (data set, "Elements added"; mCODE's answer lists
    LL529-9 and LL4986-7 list those scores)."""
    for i, entry in enumerate(case["patient"]["performance_status"]):
        score, path = entry["score"], f"patient.performance_status[{i}].score"
        if entry["scale"] == "ecog" and score > 4:
            yield issue(path, "an ECOG score is 0 to 4")
        if entry["scale"] == "karnofsky" and score % 10:
            yield issue(path, "a Karnofsky score is 0 to 100 in steps of 10")


@rule
def therapy_not_given(case: dict[str, Any]) -> Iterator[Issue]:
    """A therapy stated as not given has a reason only then, and no course (dates, cycles, drugs given)."""
    for i, therapy in enumerate(case["therapies"]):
        path = f"therapies[{i}]"
        if therapy["status"] != "not_given":
            if therapy["not_given_reason"] is not None:
                yield issue(f"{path}.not_given_reason", "only allowed when status is not_given")
            continue
        for name in ("start", "end", "cycles_completed", "start_postoperative_day"):
            if therapy[name] is not None:
                yield issue(f"{path}.{name}", "not allowed when status is not_given")


@rule
def postoperative_day_needs_surgery(case: dict[str, Any]) -> Iterator[Issue]:
    for i, therapy in enumerate(case["therapies"]):
        if therapy["start_postoperative_day"] is not None and not case["surgery"]:
            yield issue(f"therapies[{i}].start_postoperative_day", "needs an operation (surgery is empty)")


@rule
def weight_loss_has_an_amount(case: dict[str, Any]) -> Iterator[Issue]:
    loss = (case.get("presentation") or {}).get("weight_loss")
    if loss is not None and loss["kg"] is None and loss["percent"] is None:
        yield issue("presentation.weight_loss", "needs kg or percent (a period alone says no amount)")


@rule
def segments_ordered(case: dict[str, Any]) -> Iterator[Issue]:
    order = table("ivc-segment").keys()
    diagnosis = case["diagnosis"]
    if diagnosis["ivc_segment_from"] not in order or diagnosis["ivc_segment_to"] not in order:
        return  # an unknown end bounds nothing: the known end alone is kept, no order is implied
    if order.index(diagnosis["ivc_segment_from"]) > order.index(diagnosis["ivc_segment_to"]):
        yield issue("diagnosis.ivc_segment_from", f"must not be above ivc_segment_to ({' <= '.join(order)})")


@rule
def graft_material(case: dict[str, Any]) -> Iterator[Issue]:
    for i, s in enumerate(case["surgery"]):
        ivc = s["ivc_management"]
        if ivc["method"] in _GRAFTED_IVC and ivc["graft_material"] is None:
            yield issue(
                f"surgery[{i}].ivc_management.graft_material",
                f"required when method is {' or '.join(_GRAFTED_IVC)}",
            )
        for j, rv in enumerate(s["renal_veins"]):
            if rv["management"] == "reconstruction_with_graft" and rv["material"] is None:
                yield issue(
                    f"surgery[{i}].renal_veins[{j}].material",
                    "required when management is reconstruction_with_graft",
                )


@rule
def renal_veins(case: dict[str, Any]) -> Iterator[Issue]:
    for i, s in enumerate(case["surgery"]):
        seen: set[str] = set()
        for j, rv in enumerate(s["renal_veins"]):
            if rv["side"] in seen:
                yield issue(f"surgery[{i}].renal_veins[{j}].side", "each side at most once per surgery")
            seen.add(rv["side"])
        sacrificed = {
            rv["side"] for rv in s["renal_veins"] if rv["management"] == "sacrificed_with_nephrectomy"
        }
        for organ in s["organs_resected"]:
            side = _KIDNEY_SIDE.get(organ["organ"])
            if side is not None and side not in sacrificed:
                yield issue(
                    f"surgery[{i}].renal_veins",
                    f"{organ['organ']} resected (nephrectomy) requires a {side} renal vein entry with "
                    "management sacrificed_with_nephrectomy",
                )


@rule
def radiotherapy(case: dict[str, Any]) -> Iterator[Issue]:
    for i, t in enumerate(case["therapies"]):
        rt = t["radiotherapy"]
        if rt is None:
            continue
        path = f"therapies[{i}].radiotherapy"
        if t["kind"] != "radiotherapy":
            yield issue(path, "only allowed when kind is radiotherapy")
            continue
        total, fractions, per = rt["total_dose_gy"], rt["fractions"], rt["dose_per_fraction_gy"]
        if total is not None and fractions is not None and per is not None:
            expected = fractions * per + (rt["boost_gy"] or 0)
            if abs(expected - total) > _DOSE_TOLERANCE:
                yield issue(
                    f"{path}.total_dose_gy",
                    f"must equal fractions x dose_per_fraction_gy (+ boost_gy) within 0.01 Gy "
                    f"(expected {round(expected, 4):g})",
                )


@rule
def lifelong_or_duration(case: dict[str, Any]) -> Iterator[Issue]:
    plan = case["care_plan"]
    entries = [(f"therapies[{i}]", t) for i, t in enumerate(case["therapies"])]
    if plan is not None:
        entries += [(f"care_plan.activities[{i}]", a) for i, a in enumerate(plan["activities"])]
    for path, entry in entries:
        if entry["lifelong"] and entry["duration_months"] is not None:
            yield issue(f"{path}.duration_months", "not allowed when lifelong is true")


@rule
def complications(case: dict[str, Any]) -> Iterator[Issue]:
    post = case["postoperative"]
    if post is None:
        return
    had, listed = post["had_complications"], post["complications"]
    if had is False and listed:
        yield issue("postoperative.complications", "must be empty when had_complications is false")
    elif had is True and not listed:
        yield issue("postoperative.complications", "at least one required when had_complications is true")
    elif had is None and listed:
        yield issue("postoperative.had_complications", "must be true when complications are listed")


def _other_entries(case: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, str]]:
    """(path, entry, code field, text field) of every entry with a code that has an ``other`` value."""
    diagnosis, pathology, post = case["diagnosis"], case["pathology"], case["postoperative"]
    presentation = case["presentation"]
    groups: list[tuple[str, list[dict[str, Any]], str, str]] = [
        ("patient.history", case["patient"]["history"], "condition", "text"),
        ("diagnosis.metastases", diagnosis["metastases"], "site", "text"),
        ("diagnosis.uncertain_lesions", diagnosis["uncertain_lesions"], "site", "text"),
        ("diagnosis.uncertain_lesions", diagnosis["uncertain_lesions"], "nature", "text"),
    ]
    if presentation is not None:
        groups.append(("presentation.symptoms", presentation["symptoms"], "symptom", "text"))
    for i, s in enumerate(case["surgery"]):
        groups.append((f"surgery[{i}].organs_resected", s["organs_resected"], "organ", "detail"))
        groups.append((f"surgery[{i}].events", s["events"], "event", "text"))
    if pathology is not None:
        groups.append(("pathology.ihc", pathology["ihc"], "marker", "text"))
        groups.append(("pathology.metastatic_lesions", pathology["metastatic_lesions"], "site", "text"))
    if post is not None:
        groups.append(("postoperative.complications", post["complications"], "type", "text"))
    for i, t in enumerate(case["therapies"]):
        groups.append((f"therapies[{i}].drugs", t["drugs"], "agent", "text"))
    for i, fu in enumerate(case["follow_up"]):
        groups.append((f"follow_up[{i}].uncertain_lesions", fu["uncertain_lesions"], "site", "text"))
        groups.append((f"follow_up[{i}].uncertain_lesions", fu["uncertain_lesions"], "nature", "text"))
    for path, entries, code_field, text_field in groups:
        for j, entry in enumerate(entries):
            yield f"{path}[{j}]", entry, code_field, text_field


@rule
def other_needs_text(case: dict[str, Any]) -> Iterator[Issue]:
    for path, entry, code_field, text_field in _other_entries(case):
        if entry[code_field] == _OTHER_TEXT and entry[text_field] is None:
            yield issue(f"{path}.{text_field}", f"required when {code_field} is other")


@rule
def ihc_results(case: dict[str, Any]) -> Iterator[Issue]:
    pathology = case["pathology"]
    if pathology is None:
        return
    for i, ihc in enumerate(pathology["ihc"]):
        if ihc["marker"] == "ki67":
            if ihc["percent"] is None:
                yield issue(f"pathology.ihc[{i}].percent", "required when marker is ki67")
        elif ihc["result"] is None and ihc["percent"] is None:
            yield issue(f"pathology.ihc[{i}].result", "result or percent required")


@rule
def care_plan(case: dict[str, Any]) -> Iterator[Issue]:
    plan = case["care_plan"]
    if plan is None:
        return
    surveillance = ("modality", "every_months", "for_years")
    for i, activity in enumerate(plan["activities"]):
        path, kind = f"care_plan.activities[{i}]", activity["kind"]
        if kind == "surveillance_imaging":
            for name in surveillance:
                if activity[name] is None:
                    yield issue(f"{path}.{name}", "required when kind is surveillance_imaging")
            if activity["performed"] is not None:
                yield issue(f"{path}.performed", "not allowed when kind is surveillance_imaging")
            continue
        for name in surveillance:
            if activity[name] is not None:
                yield issue(f"{path}.{name}", "only allowed when kind is surveillance_imaging")
        if activity["performed"] is not None:
            message = _performed_problem(case, kind, activity["performed"])
            if message:
                yield issue(f"{path}.performed", message)


def _performed_problem(case: dict[str, Any], kind: str, ref: str) -> str | None:
    wanted = "surgery" if kind == "surgery" else "therapies"
    match = _PERFORMED.match(ref)
    if match is None or match.group(1) != wanted:
        return f"must be a reference {wanted}[i] when kind is {kind}"
    index = int(match.group(2))
    entries = case[wanted]
    if index >= len(entries):
        return f"{ref} does not exist"
    if wanted == "therapies" and entries[index]["kind"] != kind:
        return f"{ref} is not a {kind} therapy"
    return None

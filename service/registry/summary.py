"""The case-series table that papers on IVC-LMS report, with Kaplan-Meier survival estimates.

``summarise(cases)`` reads canonical cases one at a time (a stream is fine: each case is reduced to a
few numbers at once) and returns a JSON-serialisable dict; ``render_html`` prints it as one HTML page
(no JavaScript; every text escaped). Definitions (also in docs/registry.md):

- Counts by code list every value of the code table (zero included), in table order, plus
  ``not_recorded`` where the element is optional.
- Surgical figures (IVC management, renal veins, operative time, blood loss, transfusion, length of
  stay, complications, margin) describe the operated cases, at their first (index) operation.
- ``tumour_size_cm``: the largest dimension of the first tumour measurement at diagnosis (earliest
  dated ``diagnosis.tumour_size[]``, else the first listed), i.e. before neoadjuvant therapy;
  ``tumour_dimensions_cm``: all three dimensions of it; ``pathological_tumour_size_cm``: the largest
  dimension of ``pathology.tumour_size_cm``.
- Continuous values: n, mean, median, min, max, rounded to the input's precision (min and max as
  recorded, mean and median one decimal more, at most 2); values that are not recorded are left out
  and counted in ``missing``.
- ``precision``: how many dates are partial, intervals recorded, ages unknown, survival times taken
  at a partial date's midpoint or unknown. The page states the time zeros and events (Definitions).
- Complications: ``by_grade`` counts complications, ``highest_grade`` counts patients by their worst
  grade (``bound`` when the only grades known are bounds such as ``< IIIa``), and
  ``highest_grade_or_higher_unknown`` how many of those also have a complication that may be graded
  higher (ungraded, ``unknown``, a bound admitting a higher grade): the page says "Grade II or
  unknown" for them; ``major`` = patients with
  a complication of grade IIIa or higher, or bounded there (``> II``, ``>= IIIa``); ``major_unknown`` =
  patients with none such but a complication that may have been major: ungraded, graded ``unknown`` or
  bounded across IIIa (``< IVa`` is I to IIIb). A ``< IIIa`` bound is not major: the bound decides.
- ``r0_rate`` = R0 / operated cases with a recorded margin (R0, R1 or R2; unknown and not applicable
  left out).
- Unknowns (data set, "Incomplete records": `unknown` = the source does not say): every coded count
  whose element takes a data-absent reason has its own ``unknown`` key (and ``not_applicable`` where
  the table accepts it), never dropped and never counted as a value; an IVC span with an unknown end
  is ``unknown``; a complication graded `unknown` counts under ``unknown``, one with no grade under
  ``ungraded``.
- Bounds and ranges (``> 2000`` mL, ``500..800``, a largest tumour dimension ``> 10`` cm): not
  numbers, so left out of n, mean, median, min and max (and of ``missing``: they were recorded); each
  continuous value that takes them reports them as ``imprecise``, and ``precision`` counts them
  (``measurements_bound``, ``measurements_range``).
- Neoadjuvant / adjuvant therapy: patients with at least one therapy of that timing given, per kind;
  given = status absent, in progress, completed or stopped (``planned`` and ``not_given`` are not).
- Recurrence, DFS and OS follow ``service.registry.outcomes``; follow-up = time from diagnosis to the
  last contact (death for the dead), over every case. ``recurrence_types`` (``local``, ``distant``)
  and ``recurrence_sites`` (table metastasis-site) count operated cases with a recurrence of that
  kind or at that site, timed or not (a follow-up dated ``unknown`` counts; its DFS is unknown).
  Recurrence (yes / no / unknown; no needs
  evidence of follow-up after surgery), vital status (alive / dead / unknown) and lost to follow-up
  (yes / no / unknown: not recorded is unknown, never no) are counted with their unknowns in their
  own row (``outcome``); the page gives each answer over the known answers.
- Kaplan-Meier median: "not reached" when the curve exists and stays above 0.5, "-" when no case is
  in it.
- Kaplan-Meier (``lifelines``): product-limit estimate, 95% confidence interval by the exponential
  Greenwood (log(-log)) formula; time in months (days / 30.4375).
"""

from __future__ import annotations

import html
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from service.codes import table
from service.model import dates
from service.model import fields as f
from service.model.schema import CaseSchema
from service.model.validate import dated_paths
from service.registry import deidentify as deid
from service.registry import outcomes, source

# The codes the summary names, per table of mappings/codes.yaml (a test checks that each exists).
MAJOR_FROM = "IIIa"
NEOADJUVANT, ADJUVANT = "neoadjuvant", "adjuvant"
ONCOLOGIC_KINDS = ("radiotherapy", "chemotherapy", "targeted_therapy")
R0 = "R0"
GIVEN_STATUSES = ("in_progress", "completed", "stopped")
"""A therapy counts as given when its status is one of these or absent; ``planned`` and ``not_given``
(stated as not given) were not given and are not counted."""
SUMMARY_CODES: dict[str, tuple[str, ...]] = {
    "clavien-dindo": (MAJOR_FROM,),
    "therapy-timing": (NEOADJUVANT, ADJUVANT),
    "therapy-kind": ONCOLOGIC_KINDS,
    "margin": (R0,),
    "therapy-status": GIVEN_STATUSES,
}
NOT_RECORDED = "not_recorded"
BOUND = "bound"
"""A grade recorded as a bound (Clavien-Dindo ``< IIIa``): counted under its own key, never as a grade."""
UNKNOWN, NOT_APPLICABLE = "unknown", "not_applicable"
"""Data-absent reasons (mappings/codes.yaml ``absent:``): counted under their own keys, never as a value."""
LANDMARKS_MONTHS = (12, 36, 60)
"""Survival is also reported at 1, 3 and 5 years."""
DECIMALS = 2
PRECISION_KEYS = (
    "dates",
    "dates_day",
    "dates_month",
    "dates_year",
    "last_contact_as_interval",
    "age_unknown",
    "os_midpoint",
    "os_year_only",
    "os_unknown",
    "dfs_midpoint",
    "dfs_year_only",
    "dfs_unknown",
    "measurements_bound",
    "measurements_range",
)
KM_DECIMALS = 4
RECURRENCE_TYPES = ("local", "distant")
"""Kinds of recurrence counted per operated case (a case with both counts in each)."""


@dataclass
class _Series:
    """What the summary keeps of each case: numbers and codes, never the case."""

    cases: int = 0
    operated: int = 0
    sex: Counter[str] = field(default_factory=Counter)
    age: list[float] = field(default_factory=list)
    size: list[float] = field(default_factory=list)
    path_size: list[float] = field(default_factory=list)
    segments: Counter[str] = field(default_factory=Counter)
    ivc: Counter[str] = field(default_factory=Counter)
    renal: dict[str, Counter[str]] = field(default_factory=dict)
    surgical: dict[str, list[float]] = field(default_factory=dict)
    missing: Counter[str] = field(default_factory=Counter)
    transfused: int = 0
    complications: Counter[str] = field(default_factory=Counter)
    by_grade: Counter[str] = field(default_factory=Counter)
    highest: Counter[str] = field(default_factory=Counter)
    margin: Counter[str] = field(default_factory=Counter)
    therapy: dict[str, Counter[str]] = field(default_factory=dict)
    recurrence: Counter[str] = field(default_factory=Counter)
    vital: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    recurrence_types: Counter[str] = field(default_factory=Counter)
    recurrence_sites: Counter[str] = field(default_factory=Counter)
    follow_up: list[float] = field(default_factory=list)
    follow_up_surgery: list[float] = field(default_factory=list)
    dimensions: list[list[float]] = field(default_factory=lambda: [[], [], []])
    major: int = 0
    major_unknown: int = 0
    highest_uncertain: Counter[str] = field(default_factory=Counter)
    fnclcc: Counter[str] = field(default_factory=Counter)
    graft: Counter[str] = field(default_factory=Counter)
    imprecise: Counter[str] = field(default_factory=Counter)
    precision: Counter[str] = field(default_factory=Counter)
    os: list[tuple[float, int]] = field(default_factory=list)
    dfs: list[tuple[float, int]] = field(default_factory=list)


SURGICAL = {
    "operative_time_min": ("surgery", "operative_time_min"),
    "blood_loss_ml": ("surgery", "blood_loss_ml"),
    "transfusion_units": ("surgery", "transfusion_units"),
    "length_of_stay_days": ("postoperative", "length_of_stay_days"),
}


def _segment_span(diagnosis: Mapping[str, Any]) -> str:
    """``from-to`` (one segment alone); ``unknown`` when either end is unknown: a span with an unknown
    end is not one of the spans (data set, "Incomplete records": `unknown` = the source does not say)."""
    low, high = diagnosis["ivc_segment_from"], diagnosis["ivc_segment_to"]
    if UNKNOWN in (low, high):
        return UNKNOWN
    return low if low == high else f"{low}-{high}"


def segment_spans() -> list[str]:
    """Every span ``from-to`` (a single segment alone), in table order: I, I-II, I-III, II, ..."""
    order = table("ivc-segment").keys()
    return [a if a == b else f"{a}-{b}" for i, a in enumerate(order) for b in order[i:]]


def _first_dimensions(diagnosis: Mapping[str, Any]) -> list[Any] | None:
    """The dimensions of the first measurement at diagnosis (earliest dated, else the first listed)."""
    sizes = diagnosis["tumour_size"]
    if not sizes:
        return None

    def key(pair: tuple[int, Mapping[str, Any]]) -> tuple[Any, ...]:
        date = pair[1]["date"]
        return (date is None, dates.sort_key(date) if date else (), pair[0])

    found: list[Any] = min(enumerate(sizes), key=key)[1]["dimensions_cm"]
    return found


def _first_size(diagnosis: Mapping[str, Any]) -> Any:
    found = _first_dimensions(diagnosis)
    return None if found is None else found[0]


def _add_size(series: _Series, name: str, values: list[float], value: Any) -> None:
    """A size into its list, or, a bound (``> 10`` cm: the largest dimension may be one), counted as
    imprecise and left out of the numbers like the other bounds (data set, "Bounds")."""
    if isinstance(value, Mapping):
        series.imprecise[name] += 1
        series.precision["measurements_bound"] += 1
    else:
        values.append(value)


def _count_precision(series: _Series, case: Mapping[str, Any]) -> None:
    """How many dates of the case are partial (year or month) and how many intervals are recorded."""
    for _, value in dated_paths(CaseSchema(), case, ""):
        series.precision["dates"] += 1
        series.precision[f"dates_{dates.parse(value).precision}"] += 1
    outcome = case["outcome"]
    if outcome["last_contact"] is None:
        series.precision["last_contact_as_interval"] += 1
    if case["patient"]["age_at_diagnosis"] is None:
        series.precision["age_unknown"] += 1


YES, NO = "yes", "no"


def _yes_no(value: bool | None) -> str:
    """A yes/no answer as its count key; None (not given, not known) is ``unknown``, never ``no``
    (data set, "Unknown vs none": "none" is a real answer, unknown is not)."""
    return UNKNOWN if value is None else YES if value else NO


def given(therapy: Mapping[str, Any]) -> bool:
    """Whether a therapy was given: status absent, in progress, completed or stopped; a ``planned``
    or ``not_given`` one is not counted as given."""
    return therapy.get("status") is None or therapy["status"] in GIVEN_STATUSES


def _add(series: _Series, case: Mapping[str, Any], age_cap: float | None) -> None:
    series.cases += 1
    patient, diagnosis, outcome = case["patient"], case["diagnosis"], case["outcome"]
    series.sex[patient["sex"]] += 1
    age = patient["age_at_diagnosis"]
    if age is not None:
        series.age.append(age if age_cap is None else min(age, age_cap))
    size = _first_size(diagnosis)
    if size is not None:
        _add_size(series, "tumour_size_cm", series.size, size)
    for i, value in enumerate(_first_dimensions(diagnosis) or []):
        if not isinstance(value, Mapping):  # a bound is counted once, under tumour_size_cm
            series.dimensions[i].append(value)
        elif i == 0:
            series.imprecise["tumour_dimensions_cm"] += 1
    _count_precision(series, case)
    pathology = case["pathology"]
    if pathology and pathology["tumour_size_cm"]:
        _add_size(series, "pathological_tumour_size_cm", series.path_size, pathology["tumour_size_cm"][0])
    grade = (pathology or {}).get("fnclcc_grade")
    series.fnclcc[NOT_RECORDED if grade is None else str(grade)] += 1
    series.segments[_segment_span(diagnosis)] += 1
    _add_surgery(series, case)
    for timing in (NEOADJUVANT, ADJUVANT, UNKNOWN):
        kinds = {t["kind"] for t in case["therapies"] if t["timing"] == timing and given(t)}
        counter = series.therapy.setdefault(timing, Counter())
        for kind in ONCOLOGIC_KINDS:
            counter[kind] += kind in kinds
        counter["any"] += bool(kinds & set(ONCOLOGIC_KINDS))
    if outcomes.operated(case):
        recurred = outcomes.recurrence(case)
        series.recurrence[_yes_no(recurred)] += 1
        if recurred:
            series.recurrence_types.update(outcomes.recurrence_types(case))
            series.recurrence_sites.update(outcomes.recurrence_sites(case))
    series.vital[outcome["vital_status"]] += 1
    series.lost[_yes_no(outcome["lost_to_follow_up"])] += 1
    # times rounded as the extract rounds them (outcomes.rounded): 0.1 month when exact, whole months
    # from a partial date, so the summary, its Kaplan-Meier table and the extract print the same numbers
    os_ = outcomes.overall_survival(case)
    if os_ is None:
        series.precision["os_unknown"] += 1
    else:
        series.os.append((os_.rounded_months, os_.event))
        series.follow_up.append(os_.rounded_months)
        series.precision["os_midpoint"] += not os_.exact
        series.precision["os_year_only"] += os_.imprecise
    dfs = outcomes.disease_free_survival(case)
    if dfs is not None:
        series.dfs.append((dfs.rounded_months, dfs.event))
        series.precision["dfs_midpoint"] += not dfs.exact
        series.precision["dfs_year_only"] += dfs.imprecise
    elif outcomes.operated(case):
        series.precision["dfs_unknown"] += 1
    after = outcomes.elapsed(case, "surgery", outcomes.last_contact(case))
    if after is not None:
        series.follow_up_surgery.append(outcomes.rounded(*after))


def _add_surgery(series: _Series, case: Mapping[str, Any]) -> None:
    surgery = outcomes.index_surgery(case)
    if surgery is None:
        return
    series.operated += 1
    management = surgery["ivc_management"]
    series.ivc[management["method"]] += 1
    if management.get("graft_material") is not None:
        series.graft[management["graft_material"]] += 1
    handled = {rv["side"]: rv["management"] for rv in surgery["renal_veins"]}
    sides = table("side").keys()
    for side in sides:
        series.renal.setdefault(side, Counter())[handled.get(side, NOT_RECORDED)] += 1
    postoperative = case["postoperative"] or {}
    groups = {"surgery": surgery, "postoperative": postoperative}
    for name, (group, key) in SURGICAL.items():
        value = groups[group].get(key)
        if value is None:
            series.missing[name] += 1
        elif isinstance(value, Mapping):
            # a bound (``> 2000``) or a range (``90..95``) is not a number: it has no place in a mean or
            # median, so it is left out of them and counted as imprecise (data set, "Bounds")
            series.imprecise[name] += 1
            series.precision["measurements_bound" if "comparator" in value else "measurements_range"] += 1
        else:
            series.surgical.setdefault(name, []).append(value)
    if (surgery["transfusion_units"] or 0) > 0:
        series.transfused += 1
    listed = postoperative.get("complications") or []
    had = postoperative.get("had_complications")
    if listed or had:
        series.complications["with"] += 1
    elif had is False:
        series.complications["without"] += 1
    else:
        series.complications[NOT_RECORDED] += 1
    grades = table("clavien-dindo").keys()
    graded = [c["clavien_dindo"] for c in listed if c["clavien_dindo"] in grades]
    for c in listed:
        series.by_grade[_grade_key(c["clavien_dindo"], grades)] += 1
    if graded:
        worst = max(graded, key=grades.index)
        series.highest[worst] += 1
        if any(_may_exceed(c["clavien_dindo"], worst, grades) for c in listed):
            series.highest_uncertain[worst] += 1
    elif listed:
        # no grade known: a bound if any was one, `unknown` if any was stated unknown, else none was
        # recorded ("ungraded")
        ungraded = {_grade_key(c["clavien_dindo"], grades) for c in listed}
        series.highest[next((k for k in (BOUND, UNKNOWN) if k in ungraded), "ungraded")] += 1
    major = [_is_major(c["clavien_dindo"], grades) for c in listed]
    if True in major:
        series.major += 1
    elif None in major:
        series.major_unknown += 1  # an ungraded complication may have been major: unknown, not "no"
    margin = (case["pathology"] or {}).get("margin")
    series.margin[margin or NOT_RECORDED] += 1


def _may_exceed(grade: Any, worst: str, grades: list[str]) -> bool:
    """Whether a complication may have been graded higher than ``worst``: ungraded, ``unknown``, or a
    bound that admits a higher grade. Its patient's worst is then "``worst`` or unknown"."""
    within = f.grades_within(grade, grades)
    return not within or max(grades.index(g) for g in within) > grades.index(worst)


def _grade_key(grade: Any, grades: Sequence[str]) -> str:
    """A Clavien-Dindo grade's key: the grade, ``bound`` (``< IIIa``: not one grade), ``unknown`` (stated
    unknown) or ``ungraded`` (none given)."""
    if isinstance(grade, Mapping):
        return BOUND
    if grade in grades:
        return str(grade)
    return UNKNOWN if grade == UNKNOWN else "ungraded"


def _is_major(grade: Any, grades: list[str]) -> bool | None:
    """Whether a complication is major (grade IIIa or higher): what its grade decides. A bound decides
    when every grade it admits is on one side (``< IIIa``: I or II, not major; ``> II`` and ``>= IIIa``:
    major); one that admits both (``< IVa``: I to IIIb) is unknown, as are ``unknown`` and no grade."""
    within = f.grades_within(grade, grades)
    if not within:
        return None
    sides = {grades.index(g) >= grades.index(MAJOR_FROM) for g in within}
    return sides.pop() if len(sides) == 1 else None


def _round(value: float | None, decimals: int = DECIMALS) -> float | None:
    """Rounded half up on the decimal the value prints as (53.25 -> 53.3, as papers print it; Python's
    ``round`` gives 53.2: the float 53.25 is exact and ``round`` breaks ties to even)."""
    if value is None or not math.isfinite(value):
        return None
    try:
        exact = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than Decimal's 28 (1e27): a float that large has no fraction
        return float(value)
    return float(exact)


def decimals_of(values: Iterable[float]) -> int:
    """The precision the values were recorded at: the most decimals any of them has (21.0 has none),
    at most DECIMALS."""
    most = 0
    for value in values:
        text = repr(float(value))
        if "e" in text:
            return DECIMALS
        most = max(most, len(text.split(".")[1].rstrip("0")))
    return min(most, DECIMALS)


def describe(values: Sequence[float], missing: int = 0, imprecise: int | None = None) -> dict[str, Any]:
    """n, mean, median, min, max of the recorded values (None when there are none), and missing;
    ``imprecise`` (for elements that take bounds and ranges): values recorded as a bound or range, left
    out of n, mean, median, min and max.
    Rounded to the input's precision: min and max as recorded, mean and median one decimal more
    (at most DECIMALS), so months recorded as 21, 25, 26, 30 give median 25.5 and range 21-30, as a
    paper prints them."""
    extra = {} if imprecise is None else {"imprecise": imprecise}
    if not values:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "missing": missing, **extra}
    places = decimals_of(values)
    centre = min(places + 1, DECIMALS)
    return {
        "n": len(values),
        "mean": _round(statistics.fmean(values), centre),
        "median": _round(statistics.median(values), centre),
        "min": _round(min(values), places),
        "max": _round(max(values), places),
        "missing": missing,
        **extra,
    }


def _counts(counter: Counter[str], keys: Iterable[str], *extra: str) -> dict[str, int]:
    return {k: counter[k] for k in [*keys, *extra]}


def kaplan_meier(durations: Sequence[float], events: Sequence[int]) -> dict[str, Any]:
    """Product-limit estimate with ``lifelines``: a row per distinct time with an event or censoring.

    ``table`` rows: time (months), at_risk (just before the time), events, censored, survival and the
    95% CI (exponential Greenwood). ``median_months``: None when survival never falls to 0.5.
    ``at_months``: survival at 12/36/60 months (None past the longest follow-up).
    """
    result: dict[str, Any] = {
        "n": len(durations),
        "events": int(sum(events)),
        "median_months": None,
        "table": [],
        "at_months": {str(t): None for t in LANDMARKS_MONTHS},
    }
    if not durations:
        return result
    from lifelines import KaplanMeierFitter  # heavy (pandas, scipy): imported when first used

    fitter = KaplanMeierFitter(alpha=0.05)
    fitter.fit(list(durations), event_observed=list(events))
    ci = fitter.confidence_interval_
    lower, upper = ci.columns[0], ci.columns[1]
    steps: list[tuple[float, dict[str, Any]]] = []
    for time, entry in fitter.event_table.iterrows():
        if int(entry["removed"]) == 0:
            continue
        row = {
            "time_months": _round(float(time)),
            "at_risk": int(entry["at_risk"]),
            "events": int(entry["observed"]),
            "censored": int(entry["censored"]),
            "survival": _round(float(fitter.survival_function_.loc[time].iloc[0]), KM_DECIMALS),
            "ci_lower": _round(float(ci.loc[time, lower]), KM_DECIMALS),
            "ci_upper": _round(float(ci.loc[time, upper]), KM_DECIMALS),
        }
        steps.append((float(time), row))
    result["table"] = [row for _, row in steps]
    result["median_months"] = _round(float(fitter.median_survival_time_))
    longest = max(durations)
    for landmark in LANDMARKS_MONTHS:
        if landmark > longest:
            continue
        point: dict[str, Any] = {"survival": 1.0, "ci_lower": 1.0, "ci_upper": 1.0}
        for time, row in steps:
            if time <= landmark:
                point = {k: row[k] for k in ("survival", "ci_lower", "ci_upper")}
        result["at_months"][str(landmark)] = point
    return result


def summarise(cases: Iterable[Mapping[str, Any]], *, deidentified: bool = False) -> dict[str, Any]:
    """The case-series table of ``cases`` (canonical case dicts). ``deidentified``: ages over 89
    count as 90 (de-identified extracts show them as "90+"), so min, max and mean do not give them."""
    series = _Series()
    age_cap = deid.AGE_CAP + 1 if deidentified else None
    for case in cases:
        _add(series, case, age_cap)
    grades = table("clavien-dindo").keys()
    margins = table("margin").keys()
    sides = table("side").keys()
    recorded_margins = sum(series.margin[m] for m in margins)
    return {
        "cases": series.cases,
        "operated": series.operated,
        "sex": _counts(series.sex, table("sex").keys()),
        "age_at_diagnosis_years": describe(series.age, series.cases - len(series.age)),
        "tumour_size_cm": describe(
            series.size,
            series.cases - len(series.size) - series.imprecise["tumour_size_cm"],
            series.imprecise["tumour_size_cm"],
        ),
        "tumour_dimensions_cm": [
            describe(d, series.cases - len(d) - (series.imprecise["tumour_dimensions_cm"] if i == 0 else 0))
            | ({"imprecise": series.imprecise["tumour_dimensions_cm"]} if i == 0 else {})
            for i, d in enumerate(series.dimensions)
        ],
        "pathological_tumour_size_cm": describe(
            series.path_size,
            series.operated - len(series.path_size) - series.imprecise["pathological_tumour_size_cm"],
            series.imprecise["pathological_tumour_size_cm"],
        ),
        "segments": _counts(series.segments, segment_spans(), UNKNOWN),
        "fnclcc_grade": _counts(
            series.fnclcc, table("fnclcc-grade").keys(), UNKNOWN, NOT_APPLICABLE, NOT_RECORDED
        ),
        "ivc_management": _counts(series.ivc, table("ivc-management").keys(), UNKNOWN),
        "graft_material": _counts(series.graft, table("graft-material").keys(), UNKNOWN),
        "renal_veins": {
            side: _counts(
                series.renal.get(side, Counter()),
                table("renal-vein-management").keys(),
                UNKNOWN,
                NOT_RECORDED,
            )
            for side in sides
        },
        **{
            name: describe(series.surgical.get(name, []), series.missing[name], series.imprecise[name])
            for name in SURGICAL
        },
        "transfused": series.transfused,
        "complications": {
            "patients_with": series.complications["with"],
            "patients_without": series.complications["without"],
            NOT_RECORDED: series.complications[NOT_RECORDED],
            "by_grade": _counts(series.by_grade, grades, BOUND, UNKNOWN, "ungraded"),
            "highest_grade": _counts(series.highest, grades, BOUND, UNKNOWN, "ungraded"),
            "highest_grade_or_higher_unknown": _counts(series.highest_uncertain, grades),
            "major": series.major,
            "major_unknown": series.major_unknown,
        },
        "margin": {
            **_counts(series.margin, margins, UNKNOWN, NOT_APPLICABLE, NOT_RECORDED),
            "r0_rate": _round(series.margin[R0] / recorded_margins, 4) if recorded_margins else None,
        },
        "therapy": {
            timing: _counts(series.therapy.get(timing, Counter()), ONCOLOGIC_KINDS, "any")
            for timing in (NEOADJUVANT, ADJUVANT, UNKNOWN)
        },
        # the yes counts (recurrences, deaths, lost) stay for existing callers; ``outcome`` gives each
        # with its no and unknown counts, the unknowns in their own row
        "recurrences": series.recurrence[YES],
        "recurrence_types": _counts(series.recurrence_types, RECURRENCE_TYPES),
        "recurrence_sites": _counts(series.recurrence_sites, table("metastasis-site").keys()),
        "deaths": series.vital[outcomes.DEAD],
        "lost_to_follow_up": series.lost[YES],
        "outcome": {
            "recurrence": _counts(series.recurrence, (YES, NO), UNKNOWN),
            "vital_status": _counts(series.vital, table("vital-status").keys()),
            "lost_to_follow_up": _counts(series.lost, (YES, NO), UNKNOWN),
        },
        "follow_up_months": describe(series.follow_up, series.precision["os_unknown"]),
        "follow_up_after_surgery_months": describe(
            series.follow_up_surgery, series.operated - len(series.follow_up_surgery)
        ),
        "precision": {key: series.precision[key] for key in PRECISION_KEYS},
        "kaplan_meier": {
            "disease_free_survival": kaplan_meier([t for t, _ in series.dfs], [e for _, e in series.dfs]),
            "overall_survival": kaplan_meier([t for t, _ in series.os], [e for _, e in series.os]),
        },
    }


# ---- HTML -------------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}td.n{text-align:right}"
    "th.group{background:#f3f3f3}"
)


def _display(table_name: str, key: str) -> str:
    if key in _ABSENT_DISPLAY:
        return _ABSENT_DISPLAY[key]
    values = table(table_name).values
    return values[key].display if key in values else key.replace("_", " ")


_ABSENT_DISPLAY = {
    UNKNOWN: "unknown",
    NOT_APPLICABLE: "not applicable",
    NOT_RECORDED: "not recorded",
    BOUND: "a bound (e.g. < IIIa)",
}


def _share(share: Decimal) -> str:
    """A share (a fraction, exact) as a percentage with one decimal rounded half up, as papers print
    it: 1 of 16 is 6.3%, where Python's format gives 6.2% (6.25 is exact and its ties go to even)."""
    try:
        return f"{(100 * share).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"
    except InvalidOperation:  # more digits than Decimal's 28: no tie can matter at that size
        return f"{100 * float(share):.1f}%"


def _pct(n: int, of: int) -> str:
    return f"{n} ({_share(Decimal(n) / Decimal(of))})" if of else str(n)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _range(stats: Mapping[str, Any], centre: str) -> str:
    imprecise = stats.get("imprecise")
    note = f"; {imprecise} bound or range left out" if imprecise else ""
    if not stats["n"]:
        return "-" + note
    return f"{_num(stats[centre])} ({_num(stats['min'])}-{_num(stats['max'])}); n = {stats['n']}" + note


def percent(value: float | None) -> str:
    """A survival fraction as a percentage with one decimal (pages show percentages, JSON fractions),
    from the decimal the fraction prints as (0.8125 -> 81.3%)."""
    if value is None or not math.isfinite(value):
        return "-"
    return _share(Decimal(repr(float(value))))


def events_by(rows: Sequence[Mapping[str, Any]], month: float) -> int:
    """Events observed at or before ``month`` (rows of ``kaplan_meier``'s table)."""
    return sum(int(r["events"]) for r in rows if float(r["time_months"]) <= month)


def landmark_text(km: Mapping[str, Any], months: str) -> str:
    """Survival at a landmark of ``km["at_months"]`` as "p% (95% CI l-u%)". Before any event the
    estimate is 100% by construction and has no interval to give, so the text says so instead of
    "1 (95% CI 1-1)"; past the longest follow-up there is no estimate."""
    point = km["at_months"][months]
    if point is None:
        return "- (past the longest follow-up)"
    if events_by(km["table"], float(months)) == 0:
        return "100% (no event yet)"
    return f"{percent(point['survival'])} (95% CI {percent(point['ci_lower'])}-{percent(point['ci_upper'])})"


def _rows(summary: Mapping[str, Any]) -> list[tuple[str, str] | str]:
    """(label, value) rows and group headings (plain strings), not yet escaped."""
    n, operated = summary["cases"], summary["operated"]
    rows: list[tuple[str, str] | str] = ["Patients", ("Cases", str(n)), ("Operated", _pct(operated, n))]
    rows += [(f"Sex: {_display('sex', k)}", _pct(v, n)) for k, v in summary["sex"].items() if v]
    age = summary["age_at_diagnosis_years"]
    rows += [("Age at diagnosis, years: mean (range)", _range(age, "mean"))]
    rows += [("Age at diagnosis, years: median (range)", _range(age, "median"))]
    rows += ["Tumour"]
    rows += [("Size at diagnosis, cm: mean (range)", _range(summary["tumour_size_cm"], "mean"))]
    rows += [("Size at diagnosis, cm: median (range)", _range(summary["tumour_size_cm"], "median"))]
    for i, stats in enumerate(summary["tumour_dimensions_cm"], 1):
        rows += [(f"Size at diagnosis, dimension {i}, cm: mean (range)", _range(stats, "mean"))]
        rows += [(f"Size at diagnosis, dimension {i}, cm: median (range)", _range(stats, "median"))]
    rows += [
        ("Pathological size, cm: median (range)", _range(summary["pathological_tumour_size_cm"], "median"))
    ]
    rows += [(f"IVC segment {k}", _pct(v, n)) for k, v in summary["segments"].items() if v]
    rows += [
        (f"FNCLCC grade: {_display('fnclcc-grade', k)}", _pct(v, n))
        for k, v in summary["fnclcc_grade"].items()
        if v
    ]
    rows += [f"Surgery (index operation, n = {operated})"]
    rows += [
        (f"IVC management: {_display('ivc-management', k)}", _pct(v, operated))
        for k, v in summary["ivc_management"].items()
        if v
    ]
    rows += [
        (f"Graft or patch material: {_display('graft-material', k)}", _pct(v, operated))
        for k, v in summary["graft_material"].items()
        if v
    ]
    for side, counts in summary["renal_veins"].items():
        label = _display("side", side)
        rows += [
            (f"{label} renal vein: {_display('renal-vein-management', k)}", _pct(v, operated))
            for k, v in counts.items()
            if v
        ]
    transfusion = summary["transfusion_units"]
    rows += [
        ("Operative time, min: median (range)", _range(summary["operative_time_min"], "median")),
        ("Estimated blood loss, mL: median (range)", _range(summary["blood_loss_ml"], "median")),
        ("Red cell transfusion, units: median (range)", _range(transfusion, "median")),
        (f"Patients transfused (of {operated} operated)", _pct(summary["transfused"], operated)),
        ("Transfusion not recorded", _pct(transfusion["missing"], operated)),
        ("Length of stay, days: median (range)", _range(summary["length_of_stay_days"], "median")),
    ]
    complications = summary["complications"]
    rows += [
        f"Complications (Clavien-Dindo; percentages of the {operated} operated)",
        ("Patients with complications", _pct(complications["patients_with"], operated)),
        ("Patients without complications", _pct(complications["patients_without"], operated)),
        ("Complications not recorded", _pct(complications[NOT_RECORDED], operated)),
    ]
    uncertain = complications.get("highest_grade_or_higher_unknown", {})
    for k, v in complications["highest_grade"].items():
        maybe = uncertain.get(k, 0)
        if v - maybe:
            rows += [(f"Worst: {_display('clavien-dindo', k)}", _pct(v - maybe, operated))]
        if maybe:
            rows += [(f"Worst: {_display('clavien-dindo', k)} or unknown", _pct(maybe, operated))]
    rows += [(f"Major (grade {MAJOR_FROM} or higher)", _pct(complications["major"], operated))]
    rows += [
        (
            f"Major unknown (a complication ungraded or bounded across {MAJOR_FROM}, none {MAJOR_FROM}+)",
            _pct(complications["major_unknown"], operated),
        )
    ]
    rows += [
        (f"Complications: {_display('clavien-dindo', k)}", str(v))
        for k, v in complications["by_grade"].items()
        if v
    ]
    margin = summary["margin"]
    rows += [f"Pathology (percentages of the {operated} operated)"]
    rows += [
        (f"Margin {_display('margin', k)}", _pct(v, operated))
        for k, v in margin.items()
        if k != "r0_rate" and v
    ]
    rate = margin["r0_rate"]
    codes = table("margin").keys()
    recorded = sum(v for k, v in margin.items() if k in codes)
    rows += [
        (
            f"R0 rate (of {recorded} recorded margin{'' if recorded == 1 else 's'}: R0, R1 or R2)",
            "-" if rate is None else f"{percent(rate)} ({margin[R0]} of {recorded})",
        )
    ]
    rows += [f"Therapy given (percentages of the {n} cases)"]
    for timing, counts in summary["therapy"].items():
        title = "Timing unknown" if timing == UNKNOWN else _display("therapy-timing", timing)
        rows += [
            (f"{title}: {'any' if k == 'any' else _display('therapy-kind', k)}", _pct(v, n))
            for k, v in counts.items()
        ]
    rows += [
        "Outcome",
        *_known_rows(
            "Recurrence", summary["outcome"]["recurrence"], f"{operated} operated", "operated with follow-up"
        ),
        *((f"Recurrence: {kind}", _pct(v, operated)) for kind, v in summary["recurrence_types"].items() if v),
        *(
            (f"Recurrence site: {_display('metastasis-site', k)}", _pct(v, operated))
            for k, v in summary["recurrence_sites"].items()
            if v
        ),
        *_known_rows("Vital status", summary["outcome"]["vital_status"], f"{n} cases", "known"),
        *_known_rows("Lost to follow-up", summary["outcome"]["lost_to_follow_up"], f"{n} cases", "recorded"),
        # papers give follow-up as a mean (range) as often as a median (range): the page prints both
        ("Follow-up, months: mean (range)", _range(summary["follow_up_months"], "mean")),
        ("Follow-up, months: median (range)", _range(summary["follow_up_months"], "median")),
        (
            "Follow-up after surgery, months: mean (range)",
            _range(summary["follow_up_after_surgery_months"], "mean"),
        ),
        (
            "Follow-up after surgery, months: median (range)",
            _range(summary["follow_up_after_surgery_months"], "median"),
        ),
    ]
    for key, title in (
        ("disease_free_survival", "Disease-free survival"),
        ("overall_survival", "Overall survival"),
    ):
        km = summary["kaplan_meier"][key]
        rows += [
            (
                f"{title}: median, months",
                _median_text(km),
            )
        ]
        rows += [(f"{title} at {t} months", landmark_text(km, t)) for t in km["at_months"]]
    return rows


def _median_text(km: Mapping[str, Any]) -> str:
    """The Kaplan-Meier median: "-" when no case is in the curve (no data; review 15, M3), "not
    reached" only when the curve exists and stays above 0.5."""
    if km["median_months"] is not None:
        return _num(km["median_months"])
    return "not reached" if km["n"] else "-"


def _known_rows(title: str, counts: Mapping[str, int], of_all: str, known: str) -> list[tuple[str, str]]:
    """One row per known answer, as a percentage of the known answers, then the unknowns in their own
    row as a percentage of all (docs/registry.md: "an unknown is its own row, never a value and never
    dropped"): 6 cases of unknown vital status print "Vital status unknown (of 6 cases) 6 (100.0%)",
    never "Deaths 0 (0.0%)"."""
    answers = {k: v for k, v in counts.items() if k != UNKNOWN}
    total = sum(answers.values())
    unknown = counts.get(UNKNOWN, 0)
    rows = [
        (f"{title}: {k.replace('_', ' ')} (of {total} {known})", _pct(v, total)) for k, v in answers.items()
    ]
    return [*rows, (f"{title} unknown (of {of_all})", _pct(unknown, total + unknown))]


_KM_HEAD = ("months", "at risk", "events", "censored", "survival", "95% CI")


def table_rows(summary: Mapping[str, Any]) -> list[tuple[str, str] | str]:
    """The rows of the summary table (counts and survival with percentages), not yet escaped."""
    return _rows(summary)


def _km_table(title: str, km: Mapping[str, Any]) -> str:
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in _KM_HEAD) + "</tr>"
    body = "".join(
        f"<tr><td class=n>{_num(r['time_months'])}</td><td class=n>{r['at_risk']}</td>"
        f"<td class=n>{r['events']}</td><td class=n>{r['censored']}</td>"
        f"<td class=n>{percent(r['survival'])}</td>"
        f"<td class=n>{percent(r['ci_lower'])}-{percent(r['ci_upper'])}</td></tr>"
        for r in km["table"]
    )
    caption = f"{title} (Kaplan-Meier; n = {km['n']}, events = {km['events']})"
    return f"<h2>{html.escape(caption)}</h2><table>{head}{body}</table>"


_PRECISION_LABELS = {
    "dates": "Dates recorded",
    "dates_day": "... to the day",
    "dates_month": "... to the month only",
    "dates_year": "... to the year only",
    "last_contact_as_interval": "Last contact given as an interval (months), no date",
    "age_unknown": "Age at diagnosis unknown (not given, not determinate from partial dates)",
    "os_midpoint": "Overall survival times using a partial date at its midpoint (in whole months)",
    "os_year_only": "... of which using a year-only date (imprecise even in whole months)",
    "os_unknown": "Overall survival time unknown (left out)",
    "dfs_midpoint": "Disease-free survival times using a partial date at its midpoint (in whole months)",
    "dfs_year_only": "... of which using a year-only date (imprecise even in whole months)",
    "dfs_unknown": "Disease-free survival time unknown (operated, left out)",
    "measurements_bound": "Measurements given as a bound (e.g. > 2000 mL), left out of means and medians",
    "measurements_range": "Measurements given as a range (e.g. 500-800 mL), left out of means and medians",
}

DEFINITIONS = (
    (
        "Overall survival",
        "time zero: date of diagnosis; event: death (at the death date, else at the "
        "last contact); otherwise censored at the last contact.",
    ),
    (
        "Disease-free survival",
        "operated cases; time zero: date of the first surgery; event: the first "
        "follow-up after it whose disease status is not 'no evidence of disease', or death from any cause; "
        "otherwise censored at the last contact.",
    ),
    (
        "Follow-up",
        "time from diagnosis to the last contact (to death for the dead); after surgery: "
        "from the first surgery to the last contact.",
    ),
    ("Months", "an interval recorded in months is used as recorded; between two full dates, days / 30.4375."),
    (
        "Partial dates",
        "a date known only to the year or month is taken at the midpoint of the days it "
        "may still be (after the other end of the interval, and within what the record proves: a death "
        "not before the last contact or a follow-up assessment); such times are counted under Precision. "
        "A time is reported at the precision its inputs allow: one that used a month- or year-only date "
        "is given in whole months (2019 to 2021: 24, not 24.02); one that used a year-only date is also "
        "flagged imprecise (its midpoint may be six months off).",
    ),
    (
        "Recurrence",
        "operated cases; yes: a follow-up after the first surgery whose disease status is not 'no "
        "evidence of disease'; no: none such, and the patient was seen after the surgery (a follow-up "
        "assessment, or a last contact after it); otherwise unknown, never no. Each answer is a "
        "percentage of the known answers; unknowns have their own row (so do vital status and lost to "
        "follow-up, where not recorded is unknown).",
    ),
    (
        "Major complication",
        f"worst Clavien-Dindo grade {MAJOR_FROM} or higher; a grade recorded as a bound counts by what "
        f"the bound decides (< {MAJOR_FROM}: not major; > II or >= {MAJOR_FROM}: major; < IVa: unknown); "
        "a patient with an ungraded complication, or a bound that does not decide, and none graded that "
        "high is counted as unknown, not as not major.",
    ),
    (
        "Unknown",
        "a coded value the source does not give (unknown, not applicable) is counted in its own "
        "row, never as a category and never dropped; an IVC extent with an unknown end is unknown "
        "(a segment filter still selects it by its known end: that segment is certainly involved).",
    ),
    (
        "Bounds and ranges",
        "a measurement recorded as a bound (> 2000 mL) or a range (500-800 mL) is not a number: it is "
        "left out of the mean, median and range, and counted under Precision.",
    ),
    (
        "Rounding",
        "minimum and maximum as recorded; mean and median one decimal more (at most two). Survival and "
        "follow-up times as in the extract: 0.1 month when exact, whole months when a partial date was "
        "used.",
    ),
    (
        "Same partial period",
        "two partial dates equal at the coarser one's precision (2014 and 2014, 2014 and 2014-06) may "
        "be the same day: the time between them is 0, at the coarser precision (a year: imprecise).",
    ),
    (
        "Therapy given",
        "a therapy counts when it was given: status absent, in progress, completed or stopped; planned "
        "and not given (stated as not given) are not counted.",
    ),
    (
        "Worst grade or unknown",
        "a patient whose worst known Clavien-Dindo grade is II but who also has an ungraded complication "
        "(or one graded unknown, or a bound admitting a higher grade) is shown as 'Grade II or unknown'.",
    ),
    ("Diagnosis date filters", source.DATE_FILTER_RULE),
)
DEFINITIONS_HTML = (
    "<h2>Definitions</h2><dl>"
    + "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in DEFINITIONS)
    + "</dl>"
)


def _precision_table(precision: Mapping[str, int]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(_PRECISION_LABELS[k])}</td><td class=n>{v}</td></tr>"
        for k, v in precision.items()
    )
    return f"<h2>Precision</h2><table><tr><th>values</th><th>n</th></tr>{body}</table>"


def render_html(summary: Mapping[str, Any], title: str = "IVC-LMS case series") -> str:
    """The summary as one HTML page: no script, every text escaped."""
    cells = []
    for row in _rows(summary):
        if isinstance(row, str):
            cells.append(f"<tr><th class=group colspan=2>{html.escape(row)}</th></tr>")
        else:
            cells.append(f"<tr><td>{html.escape(row[0])}</td><td class=n>{html.escape(row[1])}</td></tr>")
    km = summary["kaplan_meier"]
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style><h1>{html.escape(title)}</h1>"
        f"<table><tr><th>characteristic</th><th>n (%) or value</th></tr>{''.join(cells)}</table>"
        + _km_table("Disease-free survival", km["disease_free_survival"])
        + _km_table("Overall survival", km["overall_survival"])
        + _precision_table(summary["precision"])
        + DEFINITIONS_HTML
        + "</html>"
    )

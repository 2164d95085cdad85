"""Hypothesis strategies: valid canonical IVC-LMS cases (every field present, every rule respected).

``valid_cases()`` yields cases for which ``validate_case(case) == case``; small list sizes keep them
within the CSV layout.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from service.codes import table
from service.model.fields import case_id_problem, grades_within
from service.model.labs import canonical_unit, has_unit
from service.model.rules import date_after, full_years, months_between

Draw = Callable[[st.SearchStrategy[Any]], Any]
Case = dict[str, Any]


def code(name: str) -> st.SearchStrategy[str]:
    """A key of the table, data-absent reasons (``unknown``, codes.yaml ``absent:``) included."""
    return st.sampled_from(table(name).accepted())


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


texts = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "Zs"], include_characters="\n;,\"'"),
    min_size=1,
    max_size=12,
)
case_ids = st.text(
    alphabet=st.characters(categories=["L", "N"]) | st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    min_size=1,
    max_size=12,
).filter(lambda s: unicodedata.normalize("NFKC", s) == s and case_id_problem(s) is None)
"""Case ids the model keeps as they are (NFC and NFKC, no invisible or look-alike characters: finding 16)."""
uris = st.from_regex(r"urn:ivclms:[a-z0-9]{1,8}(:[a-z0-9-]{1,8})?", fullmatch=True)
booleans = st.booleans()


def amounts(maximum: float = 1000) -> st.SearchStrategy[float]:
    return st.integers(0, int(maximum)) | st.floats(0, maximum).map(lambda x: round(x, 2))


def bounded(values: st.SearchStrategy[float], top: float | None = None) -> st.SearchStrategy[Any]:
    """A value, a bound {comparator, value} or a range {low, high} (data set, "Incomplete records"); a
    bound admits some value of the scale [0, top] (``< 0``, ``> 100 %`` are refused)."""
    bound = st.fixed_dictionaries(
        {"comparator": st.sampled_from(["<", "<=", ">=", ">"]), "value": values}
    ).filter(
        lambda b: (
            not (b["comparator"] == "<" and b["value"] <= 0)
            and not (top is not None and b["comparator"] == ">" and b["value"] >= top)
        )
    )
    span = st.tuples(values, values).filter(lambda p: p[0] < p[1]).map(lambda p: {"low": p[0], "high": p[1]})
    return values | bound | span


def grade_bounds(name: str) -> st.SearchStrategy[dict[str, str]]:
    """A bound on an ordinal grade that admits some grades and excludes others (``< IIIa``)."""
    keys = table(name).keys()
    below = st.fixed_dictionaries(
        {"comparator": st.sampled_from(["<", ">="]), "value": st.sampled_from(keys[1:])}
    )
    above = st.fixed_dictionaries(
        {"comparator": st.sampled_from([">", "<="]), "value": st.sampled_from(keys[:-1])}
    )
    return below | above


@st.composite
def intraoperative_events(draw: Draw) -> dict[str, Any]:
    event = draw(code("intraoperative-event"))
    return {
        "event": event,
        **with_other_text(draw, event),
        "blood_loss_ml": draw(opt(bounded(amounts(10000)))),
        "transfusion_units": draw(opt(st.integers(0, 20))),
    }


def percents() -> st.SearchStrategy[float]:
    return amounts(100)


def iso(day: dt.date) -> str:
    return day.isoformat()


LATEST_DAY = dt.date(2026, 6, 30)
"""No generated date is later: a date after today is refused (issue 15), and this day has passed."""


def day_between(draw: Draw, start: dt.date, max_days: int) -> dt.date:
    return min(start + dt.timedelta(days=draw(st.integers(0, max_days))), max(start, LATEST_DAY))


def collapse(group: dict[str, Any]) -> dict[str, Any] | None:
    """Optional groups with nothing in them are null in the canonical form."""
    return None if all(v is None or v == [] for v in group.values()) else group


def with_other_text(draw: Draw, value: str, text_name: str = "text") -> dict[str, Any]:
    return {text_name: draw(texts) if value == "other" else draw(opt(texts))}


@st.composite
def labs(draw: Draw, on_or_after: dt.date) -> dict[str, Any]:
    """A result with a value, with a value and its interpretation, or only its interpretation (data set,
    "Stated normal"); a test with no single unit (tumour markers) only ever the last."""
    test = draw(code("lab-test"))
    interpretation = draw(opt(code("interpretation")) if has_unit(test) else code("interpretation"))
    valued = has_unit(test) and (interpretation is None or draw(booleans))
    return {
        "test": test,
        "value": draw(bounded(amounts(500))) if valued else None,
        "unit": canonical_unit(test) if valued else None,
        "interpretation": interpretation,
        "date": draw(opt(st.builds(iso, st.just(on_or_after)))),
    }


@st.composite
def imaging(draw: Draw, around: dt.date) -> dict[str, Any]:
    return {
        "modality": draw(code("imaging-modality")),
        "date": draw(opt(st.just(iso(around - dt.timedelta(days=draw(st.integers(0, 60))))))),
        "findings": draw(opt(texts)),
        "coded_findings": draw(st.lists(code("imaging-finding"), max_size=2)),
        "size_cm": draw(st.just([]) | dimensions()),
        "interpretation": draw(opt(code("interpretation"))),
    }


@st.composite
def uncertain_lesions(draw: Draw, around: dt.date | str | None) -> dict[str, Any]:
    site, nature = draw(code("metastasis-site")), draw(code("lesion-nature"))
    return {
        "site": site,
        "nature": nature,
        "certainty": draw(opt(code("lesion-certainty"))),
        "text": draw(texts) if "other" in (site, nature) else draw(opt(texts)),
        "date": draw(opt(st.just(around if isinstance(around, str | None) else iso(around)))),
    }


@st.composite
def sites(draw: Draw) -> dict[str, Any]:
    site = draw(code("metastasis-site"))
    text = with_other_text(draw, site)
    return {"site": site, **text, "certainty": draw(opt(code("certainty")))}


@st.composite
def dimensions(draw: Draw) -> list[Any]:
    """1-3 sizes, largest first; the largest sometimes a bound ("> 10 cm", "< 31 cm")."""
    values: list[Any] = sorted(
        draw(st.lists(st.floats(0.1, 30).map(lambda x: round(x, 1)), min_size=1, max_size=3)), reverse=True
    )
    comparator = draw(st.none() | st.sampled_from(["<", "<=", ">=", ">"]))
    if comparator is not None:
        top = values[0] if comparator in (">", ">=") else round(values[0] + 1, 1)
        values[0] = {"comparator": comparator, "value": top}
    return values


@st.composite
def patients(draw: Draw, diagnosis: dt.date) -> dict[str, Any]:
    birth = draw(
        opt(st.dates(diagnosis - dt.timedelta(days=90 * 365), diagnosis - dt.timedelta(days=18 * 365)))
    )
    age = full_years(iso(birth), iso(diagnosis)) if birth else draw(st.integers(18, 90))
    history = []
    for _ in range(draw(st.integers(0, 2))):
        condition = draw(code("history-condition"))
        history.append(
            {
                "condition": condition,
                **with_other_text(draw, condition),
                "date": draw(opt(st.just(iso(diagnosis)))),
            }
        )
    smoking = draw(
        opt(st.fixed_dictionaries({"status": code("smoking-status"), "pack_years": opt(amounts(80))}))
    )
    return {
        "identifier": {"system": draw(uris), "value": draw(texts)},
        "sex": draw(code("sex")),
        "birth_date": iso(birth) if birth else None,
        "age_at_diagnosis": age,
        "smoking": smoking,
        "history": history,
        "performance_status": draw(st.lists(performance_statuses(), max_size=2)),
    }


def performance_statuses() -> st.SearchStrategy[dict[str, Any]]:
    ecog = st.fixed_dictionaries({"scale": st.just("ecog"), "score": st.integers(0, 4)})
    karnofsky = st.fixed_dictionaries(
        {"scale": st.just("karnofsky"), "score": st.integers(0, 10).map(lambda x: 10 * x)}
    )
    return (ecog | karnofsky).map(lambda entry: {**entry, "date": None})


def weight_losses() -> st.SearchStrategy[dict[str, Any]]:
    """An amount (kg and/or percent, either may be a bound or range), with or without a period."""
    kg, percent = opt(bounded(amounts(40))), opt(bounded(percents(), 100))
    loss = st.fixed_dictionaries({"kg": kg, "percent": percent, "over_months": opt(bounded(amounts(24)))})
    return loss.filter(lambda x: x["kg"] is not None or x["percent"] is not None)


@st.composite
def presentations(draw: Draw, diagnosis: dt.date) -> dict[str, Any] | None:
    symptoms = []
    for _ in range(draw(st.integers(0, 2))):
        symptom = draw(code("symptom"))
        symptoms.append(
            {
                "symptom": symptom,
                **with_other_text(draw, symptom),
                "duration_months": draw(opt(bounded(amounts(24)))),
            }
        )
    group = {
        "date": draw(opt(st.just(iso(diagnosis - dt.timedelta(days=draw(st.integers(0, 90))))))),
        "symptoms": symptoms,
        "incidental": draw(opt(booleans)),
        "weight_loss": draw(opt(weight_losses())),
    }
    return collapse(group)


@st.composite
def diagnoses(draw: Draw, diagnosis: dt.date) -> dict[str, Any]:
    order = table("ivc-segment").keys()
    low = draw(st.integers(0, len(order) - 1))
    high = draw(st.integers(low, len(order) - 1))
    return {
        "date": iso(diagnosis),
        "basis": draw(code("diagnosis-basis")),
        "biopsy_result": draw(opt(texts)),
        "imaging": draw(st.lists(imaging(diagnosis), max_size=2)),
        "tumour_size": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "dimensions_cm": dimensions(),
                        "method": opt(code("size-method")),
                        "date": opt(st.just(iso(diagnosis))),
                    }
                ),
                max_size=2,
            )
        ),
        # either end may be unknown (data set, "Incomplete records"); known ends stay ordered
        "ivc_segment_from": draw(st.sampled_from([order[low], *table("ivc-segment").absent])),
        "ivc_segment_to": draw(st.sampled_from([order[high], *table("ivc-segment").absent])),
        "growth_pattern": draw(opt(code("growth-pattern"))),
        "luminal_occlusion_percent": draw(opt(bounded(percents(), 100))),
        "renal_vein_involvement": draw(opt(code("renal-vein-involvement"))),
        "hepatic_vein_involvement": draw(opt(booleans)),
        "right_atrium_extension": draw(opt(booleans)),
        "adjacent_organ_invasion": draw(st.lists(code("organ"), max_size=2)),
        "venous_collaterals": draw(opt(code("collaterals"))),
        "tumour_thrombus": draw(opt(booleans)),
        "metastases": draw(st.lists(sites(), max_size=2)),
        "uncertain_lesions": draw(st.lists(uncertain_lesions(diagnosis), max_size=1)),
        "labs": draw(st.lists(labs(diagnosis), max_size=2)),
    }


KIDNEY_SIDE = {"right_kidney": "right", "left_kidney": "left"}
GRAFTED = ("patch_cavoplasty", "interposition_graft")


@st.composite
def surgeries(draw: Draw, day: dt.date) -> dict[str, Any]:
    organs = []
    for _ in range(draw(st.integers(0, 2))):
        organ = draw(code("organ"))
        organs.append({"organ": organ, **with_other_text(draw, organ, "detail")})
    veins: dict[str, dict[str, Any]] = {}
    for side in draw(st.lists(code("side"), max_size=2, unique=True)):
        management = draw(code("renal-vein-management"))
        material = draw(code("graft-material")) if management == "reconstruction_with_graft" else None
        veins[side] = {"side": side, "management": management, "material": material}
    for organ in organs:
        side = KIDNEY_SIDE.get(organ["organ"])
        if side is not None:
            veins[side] = {"side": side, "management": "sacrificed_with_nephrectomy", "material": None}
    method = draw(code("ivc-management"))
    material = draw(code("graft-material")) if method in GRAFTED else draw(opt(code("graft-material")))
    return {
        "date": iso(day),
        "intent": draw(opt(code("surgery-intent"))),
        "approach": draw(opt(code("approach"))),
        "resection": draw(code("resection")),
        "organs_resected": organs,
        "ivc_management": {
            "method": method,
            "graft_material": material,
            "graft_diameter_mm": draw(opt(amounts(30))),
        },
        "renal_veins": list(veins.values()),
        "bypass": draw(opt(code("bypass"))),
        "operative_time_min": draw(opt(amounts(900))),
        "clamp_time_min": draw(opt(amounts(120))),
        "blood_loss_ml": draw(opt(bounded(amounts(10000)))),
        "transfusion_units": draw(opt(st.integers(0, 20))),
        "events": draw(st.lists(intraoperative_events(), max_size=2)),
        "frozen_section": draw(opt(texts)),
    }


@st.composite
def pathologies(draw: Draw) -> dict[str, Any]:
    ihc = []
    for _ in range(draw(st.integers(0, 3))):
        marker = draw(code("ihc-marker"))
        percent = draw(percents()) if marker == "ki67" else draw(opt(percents()))
        result = draw(opt(code("ihc-result")))
        if marker != "ki67" and percent is None and result is None:
            result = draw(code("ihc-result"))
        ihc.append({"marker": marker, "result": result, "percent": percent, **with_other_text(draw, marker)})
    lesions = []
    for _ in range(draw(st.integers(0, 1))):
        site = draw(code("metastasis-site"))
        lesions.append({"site": site, **with_other_text(draw, site), "confirmed_lms": draw(opt(booleans))})
    return {
        "histology": draw(code("histology")),
        "histologic_subtype": draw(st.lists(code("histologic-subtype"), max_size=2)),
        "differentiation": draw(opt(code("differentiation"))),
        "fnclcc_grade": draw(opt(code("fnclcc-grade").map(lambda k: int(k) if k.isdigit() else k))),
        "tumour_size_cm": draw(st.just([]) | dimensions()),
        "margin": draw(opt(code("margin"))),
        "closest_margin_mm": draw(opt(bounded(amounts(50)))),
        "neoadjuvant_response_percent": draw(opt(bounded(percents(), 100))),
        "ihc": ihc,
        "metastatic_lesions": lesions,
    }


@st.composite
def postoperatives(draw: Draw, surgery_day: dt.date) -> dict[str, Any] | None:
    had = draw(opt(booleans))
    complications = []
    for _ in range(draw(st.integers(1, 2)) if had else 0):
        kind = draw(code("complication"))
        complications.append(
            {
                "type": kind,
                **with_other_text(draw, kind),
                "clavien_dindo": draw(opt(code("clavien-dindo") | grade_bounds("clavien-dindo"))),
                "date": draw(opt(st.just(iso(surgery_day)))),
            }
        )
    return collapse(
        {
            "had_complications": had,
            "complications": complications,
            "length_of_stay_days": draw(opt(amounts(90))),
            "icu_stay_days": draw(opt(amounts(30))),
            "mortality_30d": draw(opt(booleans)),
            "renal_function": draw(st.lists(labs(surgery_day), max_size=2)),
        }
    )


@st.composite
def therapies(draw: Draw, diagnosis: dt.date, operated: bool = False) -> dict[str, Any]:
    kind = draw(code("therapy-kind"))
    status = draw(opt(code("therapy-status")))
    given = status != "not_given"  # a therapy stated as not given has no course
    start = draw(opt(st.just(day_between(draw, diagnosis, 400)))) if given else None
    end = day_between(draw, start, 300) if start and draw(booleans) else None
    radiotherapy = None
    if kind == "radiotherapy" and draw(booleans):
        fractions = draw(opt(st.integers(1, 40)))
        per = draw(opt(st.sampled_from([1.8, 2.0, 2.5, 3.0])))
        boost = draw(opt(st.sampled_from([5.4, 10.0])))
        total = round(fractions * per + (boost or 0), 4) if fractions and per else draw(amounts(70))
        radiotherapy = {
            "total_dose_gy": total,
            "fractions": fractions,
            "dose_per_fraction_gy": per,
            "boost_gy": boost,
        }
    drugs = []
    for _ in range(draw(st.integers(0, 2))):
        agent = draw(code("drug"))
        drugs.append(
            {
                "agent": agent,
                **with_other_text(draw, agent),
                "dose": draw(opt(amounts(5000))),
                "unit": draw(opt(code("dose-unit"))),
                "route": draw(opt(texts)),
                "frequency": draw(opt(texts)),
            }
        )
    lifelong = draw(opt(booleans))
    return {
        "kind": kind,
        "timing": draw(code("therapy-timing")),
        "start": iso(start) if start else None,
        "end": iso(end) if end else None,
        "status": status,
        "not_given_reason": None if given else draw(opt(texts)),
        "start_postoperative_day": draw(opt(st.integers(0, 30))) if given and operated else None,
        "radiotherapy": radiotherapy,
        "drugs": drugs,
        "cycles_planned": draw(opt(st.integers(0, 12))),
        "cycles_completed": draw(opt(st.integers(0, 12))) if given else None,
        "duration_months": None if lifelong else draw(opt(amounts(36))),
        "lifelong": lifelong,
        "stop_reason": draw(opt(code("stop-reason"))),
        "stop_reason_text": draw(opt(texts)),
    }


@st.composite
def follow_ups(draw: Draw, diagnosis: dt.date, first_surgery: dt.date | None) -> dict[str, Any]:
    base = first_surgery or diagnosis
    if draw(booleans):
        day = iso(day_between(draw, base, 2000))
        months = months_between(iso(first_surgery), day) if first_surgery else None
    else:
        months = draw(st.integers(0, 60) | st.floats(0, 60).map(lambda x: round(x, 1)))
        if first_surgery is not None:  # the derived day must not be after today (issue 15)
            room = (max(first_surgery, LATEST_DAY) - first_surgery).days / 30.4375
            months = min(months, int(room))
        day = None  # an interval stays an interval: no day is derived from it (rules.derive)
    return {
        "date": day,
        "months_after_surgery": months,
        "disease_status": draw(code("disease-status")),
        "sites": draw(st.lists(code("metastasis-site"), max_size=2)),
        "graft_patency": draw(opt(code("graft-patency"))),
        "renal_function": draw(st.lists(labs(base), max_size=1)),
        "lower_limb_edema": draw(opt(booleans)),
        "imaging": draw(st.lists(imaging(base), max_size=1)),
        # seen at this visit: its date, if any (an undated visit's lesion is undated)
        "uncertain_lesions": draw(st.lists(uncertain_lesions(day), max_size=1)),
    }


@st.composite
def outcomes(draw: Draw, diagnosis: dt.date) -> dict[str, Any]:
    status = draw(code("vital-status"))
    dead = status == "dead"
    return {
        "vital_status": status,
        "last_contact": iso(day_between(draw, diagnosis, 4000)),
        "last_contact_months_after_diagnosis": None,
        "last_contact_months_after_surgery": None,
        "lost_to_follow_up": draw(opt(booleans)),
        "death_date": iso(day_between(draw, diagnosis, 4000)) if dead and draw(booleans) else None,
        "death_cause": draw(opt(texts)) if dead else None,
    }


@st.composite
def care_plans(draw: Draw, case: Case) -> dict[str, Any] | None:
    activities = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(code("plan-activity"))
        activity: dict[str, Any] = {
            "kind": kind,
            "performed": None,
            "duration_months": None,
            "lifelong": draw(opt(booleans)),
            "modality": None,
            "every_months": None,
            "for_years": None,
        }
        if not activity["lifelong"]:
            activity["duration_months"] = draw(opt(amounts(36)))
        if kind == "surveillance_imaging":
            activity["modality"] = draw(code("imaging-modality"))
            activity["every_months"] = draw(st.sampled_from([3, 6, 12]))
            activity["for_years"] = draw(st.sampled_from([2, 5, 10]))
        elif kind == "surgery":
            targets = [f"surgery[{i}]" for i in range(len(case["surgery"]))]
            activity["performed"] = draw(opt(st.sampled_from(targets))) if targets else None
        else:
            targets = [f"therapies[{i}]" for i, t in enumerate(case["therapies"]) if t["kind"] == kind]
            activity["performed"] = draw(opt(st.sampled_from(targets))) if targets else None
        activities.append(activity)
    return collapse(
        {
            "decision_date": draw(opt(st.just(case["diagnosis"]["date"]))),
            "decision": draw(opt(texts)),
            "intent": draw(opt(code("surgery-intent"))),
            "activities": activities,
        }
    )


@st.composite
def valid_cases(draw: Draw) -> Case:
    """A valid canonical case."""
    diagnosis = draw(st.dates(dt.date(2000, 1, 1), dt.date(2022, 12, 31)))
    surgery_days = sorted(day_between(draw, diagnosis, 365) for _ in range(draw(st.integers(0, 2))))
    first = surgery_days[0] if surgery_days else None
    case: Case = {
        "case_id": draw(case_ids),
        "source_system": draw(uris),
        "institution": draw(opt(texts)),
        "reference": draw(opt(st.just("https://doi.org/10.1000/xyz123"))),
        "registry_consent": draw(opt(code("consent"))),
        "patient": draw(patients(diagnosis)),
        "presentation": draw(presentations(diagnosis)),
        "diagnosis": draw(diagnoses(diagnosis)),
        "surgery": [draw(surgeries(day)) for day in surgery_days],
        "pathology": draw(opt(pathologies())),
        "postoperative": draw(postoperatives(first)) if first else None,
        "therapies": draw(st.lists(therapies(diagnosis, bool(surgery_days)), max_size=3)),
        "follow_up": draw(st.lists(follow_ups(diagnosis, first), max_size=3)),
        "outcome": draw(outcomes(diagnosis)),
        "care_plan": None,
    }
    given = [
        t
        for t in case["therapies"]
        if t["timing"] in ("neoadjuvant", "unknown") and t["status"] != "not_given"
    ]
    if case["pathology"] is not None and not given:  # a response needs its therapy (rules.py)
        case["pathology"]["neoadjuvant_response_percent"] = None
    one_timeline(case, first)
    case["care_plan"] = draw(care_plans(case))
    return case


def one_timeline(case: Case, first: dt.date | None) -> None:
    """Make the drawn dates one possible life (rules.py, outside review of issue 15): the last contact
    not before any operation, follow-up, therapy start or complication; the death not before the last
    contact; a 30-day death and a Clavien-Dindo grade V only for a patient who may have died so."""
    outcome, post = case["outcome"], case["postoperative"]
    events = [s["date"] for s in case["surgery"]] + [fu["date"] for fu in case["follow_up"]]
    if first is not None:  # the day a visit given in months may fall on, at the latest
        events += [
            date_after(iso(first), fu["months_after_surgery"])
            for fu in case["follow_up"]
            if fu["date"] is None and fu["months_after_surgery"] is not None
        ]
    events += [t["start"] for t in case["therapies"]]
    if post is not None:
        events += [c["date"] for c in post["complications"]]
    outcome["last_contact"] = max([outcome["last_contact"], *(e for e in events if e is not None)])
    if outcome["death_date"] is not None:
        outcome["death_date"] = max(outcome["death_date"], outcome["last_contact"])
    if post is None:
        return
    alive = outcome["vital_status"] == "alive"
    death = outcome["death_date"]
    late = first is not None and death is not None and dt.date.fromisoformat(death) > first + dt.timedelta(30)
    if post["mortality_30d"] and (alive or late):
        post["mortality_30d"] = None
    for complication in post["complications"]:
        grade = complication["clavien_dindo"]
        if alive and grades_within(grade, table("clavien-dindo").keys()) == ["V"]:
            complication["clavien_dindo"] = None
    case["postoperative"] = collapse(post)

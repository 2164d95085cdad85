"""The case-series summary: counts against the examples (worked out here independently) and the
Kaplan-Meier table against a small example computed by hand."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics

import pytest

from service.codes import table
from service.registry import outcomes, summary
from tests.unit.registry.conftest import EXAMPLE_FILES


@pytest.fixture
def written():
    return [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLE_FILES]


@pytest.mark.parametrize("codes", [summary.SUMMARY_CODES, outcomes.OUTCOME_CODES])
def test_every_code_the_rules_name_exists(codes):
    for name, keys in codes.items():
        assert set(keys) <= set(table(name).keys()), name


# ---- Kaplan-Meier ----------------------------------------------------------------------------------
#
# Six patients: times 1, 2, 2, 3, 4, 5; events 1, 1, 0, 1, 0, 1 (0 = censored).
#   t=1: 6 at risk, 1 event:                 S = 5/6           = 0.8333
#   t=2: 5 at risk, 1 event, 1 censored:     S = 5/6 * 4/5     = 0.6667
#   t=3: 3 at risk, 1 event:                 S = 4/6 * 2/3     = 0.4444
#   t=4: 2 at risk, 0 events, 1 censored:    S = 0.4444
#   t=5: 1 at risk, 1 event:                 S = 0
# Median: the first time S <= 0.5 is t=3.
# 95% CI at t=1 (exponential Greenwood): V = d / (n (n - d)) = 1/30; v = ln S = ln(5/6);
#   bounds = exp(-exp(ln(-v) -/+ 1.959964 * sqrt(V) / v)) = 0.2731 .. 0.9747.
HAND = [
    (1.0, 6, 1, 0, 0.8333),
    (2.0, 5, 1, 1, 0.6667),
    (3.0, 3, 1, 0, 0.4444),
    (4.0, 2, 0, 1, 0.4444),
    (5.0, 1, 1, 0, 0.0),
]


def test_kaplan_meier_table_against_the_hand_computed_example():
    km = summary.kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
    got = [(r["time_months"], r["at_risk"], r["events"], r["censored"], r["survival"]) for r in km["table"]]
    assert got == HAND
    assert (km["n"], km["events"], km["median_months"]) == (6, 4, 3.0)
    v, variance, z = math.log(5 / 6), 1 / 30, 1.959964
    lower = math.exp(-math.exp(math.log(-v) - z * math.sqrt(variance) / v))
    upper = math.exp(-math.exp(math.log(-v) + z * math.sqrt(variance) / v))
    assert (round(lower, 4), round(upper, 4)) == (0.2731, 0.9747)
    first = km["table"][0]
    assert (first["ci_lower"], first["ci_upper"]) == pytest.approx((lower, upper), abs=1e-4)
    assert all(r["ci_lower"] <= r["survival"] <= r["ci_upper"] for r in km["table"])
    assert km["at_months"] == {"12": None, "36": None, "60": None}  # past the longest follow-up


def test_kaplan_meier_landmarks_take_the_step_at_or_before_the_time():
    km = summary.kaplan_meier([6, 20, 40, 70], [1, 0, 1, 0])
    # t=6: 4 at risk, 1 event: 0.75; t=40: 2 at risk, 1 event: 0.375. 12 -> 0.75, 36 -> 0.75, 60 -> 0.375.
    assert [km["at_months"][t]["survival"] for t in ("12", "36", "60")] == [0.75, 0.75, 0.375]
    assert km["median_months"] == 40.0


def test_kaplan_meier_of_nobody_and_of_no_events():
    empty = summary.kaplan_meier([], [])
    assert (empty["n"], empty["table"], empty["median_months"]) == (0, [], None)
    alive = summary.kaplan_meier([3, 14], [0, 0])
    assert [r["survival"] for r in alive["table"]] == [1.0, 1.0]
    assert alive["median_months"] is None  # not reached
    assert alive["at_months"]["12"]["survival"] == 1.0


# ---- the examples ----------------------------------------------------------------------------------


def _months(start: str, end: str) -> float:
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days / 30.4375


def test_summary_counts_of_the_examples(cases, written):
    s = summary.summarise(cases)
    operated = [c for c in written if c["surgery"]]
    assert (s["cases"], s["operated"]) == (9, 8)
    assert s["sex"] == {"female": 8, "male": 1, "other": 0, "unknown": 0}
    ages = [52, 55, 45, 61, 64, 42, 68, 51, 56]  # from the files, 001 .. 009
    assert [c["patient"]["age_at_diagnosis"] for c in written] == ages
    assert s["age_at_diagnosis_years"] == {
        "n": 9,
        "mean": round(494 / 9, 1),  # ages are whole years: mean and median to one decimal (issue 15)
        "median": 55,
        "min": 42,
        "max": 68,
        "missing": 0,
    }
    # Largest dimension of the first measurement: 9.0 6.2 11.0 7.5 5.4 3.2 8.2 6.8 10.2, sum 67.5.
    assert s["tumour_size_cm"] == {
        "n": 9,
        "mean": 7.5,
        "median": 7.5,
        "min": 3.2,
        "max": 11.0,
        "missing": 0,
        "imprecise": 0,
    }
    assert s["segments"] == {"I": 1, "I-II": 2, "I-III": 0, "II": 3, "II-III": 1, "III": 2, "unknown": 0}
    assert s["ivc_management"] == {
        "none": 0,
        "ligation": 1,
        "primary_repair": 1,
        "patch_cavoplasty": 2,
        "interposition_graft": 4,
        "unknown": 0,
    }
    assert s["renal_veins"]["left"] == {
        "none": 1,
        "reimplantation": 1,
        "reconstruction_with_graft": 1,
        "ligation": 1,
        "sacrificed_with_nephrectomy": 1,
        "unknown": 0,
        "not_recorded": 3,
    }
    assert s["renal_veins"]["right"]["sacrificed_with_nephrectomy"] == 2
    assert s["renal_veins"]["right"]["reimplantation"] == 2
    # Operative time 180 210 300 330 345 390 420 480: median (330 + 345) / 2.
    assert {k: s["operative_time_min"][k] for k in ("median", "min", "max")} == {
        "median": 337.5,
        "min": 180,
        "max": 480,
    }
    # Blood loss 350 600 900 1100 1500 1800 2200 2500; transfusion 0 0 1 2 2 3 4 5;
    # length of stay 6 9 10 12 14 16 18 21.
    assert (s["blood_loss_ml"]["median"], s["blood_loss_ml"]["min"], s["blood_loss_ml"]["max"]) == (
        1300,
        350,
        2500,
    )
    assert (s["transfusion_units"]["median"], s["transfused"]) == (2, 6)
    assert (s["length_of_stay_days"]["median"], s["length_of_stay_days"]["max"]) == (13, 21)
    complications = s["complications"]
    assert (complications["patients_with"], complications["patients_without"]) == (7, 1)
    by_grade = {g: n for g, n in complications["by_grade"].items() if n}
    assert by_grade == {"I": 2, "II": 4, "IIIa": 2, "IIIb": 1}
    highest = {g: n for g, n in complications["highest_grade"].items() if n}
    assert highest == {"I": 2, "II": 2, "IIIa": 2, "IIIb": 1}
    assert complications["major"] == 3
    assert s["margin"] == {
        "R0": 6,
        "R1": 2,
        "R2": 0,
        "unknown": 0,
        "not_applicable": 0,
        "not_recorded": 0,
        "r0_rate": 0.75,
    }
    assert s["therapy"]["neoadjuvant"] == {
        "radiotherapy": 2,
        "chemotherapy": 1,
        "targeted_therapy": 0,
        "any": 3,
    }
    assert s["therapy"]["adjuvant"] == {"radiotherapy": 1, "chemotherapy": 2, "targeted_therapy": 0, "any": 3}
    # Recurrence: 002 (local), 003 (lung), 008 (liver), 009 (local and distant); one death (003).
    assert (s["recurrences"], s["deaths"], s["lost_to_follow_up"]) == (4, 1, 1)
    # follow-up times rounded as the extract rounds them (0.1 month, review 15), then summarised
    follow_up = [round(_months(c["diagnosis"]["date"], c["outcome"]["last_contact"]), 1) for c in written]
    assert s["follow_up_months"]["median"] == round(statistics.median(follow_up), 2)
    assert s["follow_up_months"]["min"] == min(follow_up)
    assert s["follow_up_months"]["max"] == max(follow_up)
    assert len(operated) == s["operated"]


def test_summary_survival_of_the_examples(cases):
    km = summary.summarise(cases)["kaplan_meier"]
    os_, dfs = km["overall_survival"], km["disease_free_survival"]
    assert (os_["n"], os_["events"], os_["median_months"]) == (9, 1, None)
    # OS times (months): 007 8.21, 005 15.28, 006 25.33, 009 27.96, 001 37.95, 004 38.08, 003 40.25
    # (death, 1225 days), 002 45.6, 008 56.64: at the death 3 are at risk (003, 002, 008), S = 2/3.
    # Times as the extract gives them: 0.1 month (1225 / 30.4375 = 40.246 -> 40.2).
    death = next(r for r in os_["table"] if r["events"])
    assert (death["time_months"], death["at_risk"], death["survival"]) == (
        round(1225 / 30.4375, 1),
        3,
        0.6667,
    )
    assert [r["at_risk"] for r in os_["table"]] == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert (dfs["n"], dfs["events"]) == (8, 4)
    # DFS events at 18.27 (003), 26.22 (009), 26.91 (002), 32.30 (008) months, to 0.1 as the extract.
    assert [r["time_months"] for r in dfs["table"] if r["events"]] == [18.3, 26.2, 26.9, 32.3]
    assert dfs["median_months"] == 32.3


def test_summary_of_nothing(cases):
    s = summary.summarise([])
    assert s["cases"] == 0 and s["margin"]["r0_rate"] is None
    assert s["age_at_diagnosis_years"]["median"] is None
    assert "<table>" in summary.render_html(s)


def test_html_is_escaped_and_has_no_script(cases):
    page = summary.render_html(summary.summarise(cases), title="<script>alert(1)</script>")
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "Interposition graft" in page and "Overall survival" in page
    assert "337.5 (180-480)" in page


def test_finding_12_deidentified_summaries_do_not_give_ages_over_89(cases):
    old = [json.loads(json.dumps(c)) for c in cases[:3]]
    old[0]["patient"]["age_at_diagnosis"] = 97
    exact = summary.summarise(old)["age_at_diagnosis_years"]
    capped = summary.summarise(old, deidentified=True)["age_at_diagnosis_years"]
    assert exact["max"] == 97
    assert capped["max"] == 90 and capped["min"] == exact["min"]

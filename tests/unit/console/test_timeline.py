"""The clinical timeline of a case: every kind of event, in order, each date as recorded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from service.codes import table
from service.console.timeline import RECURRENCE_STATUSES, TIMING_KINDS, timeline

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CASE = json.loads((EXAMPLES / "ivclms-002-segment-i-ligation-local-recurrence.json").read_text())


def _kinds(events):
    return [(e.kind, e.when) for e in events]


def test_the_codes_the_timeline_names_exist():
    assert set(RECURRENCE_STATUSES) <= set(table("disease-status").keys())
    assert set(TIMING_KINDS) <= set(table("therapy-timing").keys())


def test_example_case_in_clinical_order():
    events = _kinds(timeline(CASE))
    assert events[0] == ("diagnosis", "2019-05-14")
    assert ("surgery", "2019-06-20") in events
    assert ("complication", "2019-06-24") in events
    assert ("adjuvant", "2019-08-05 to 2019-09-13") in events
    # the recurrence is the first follow-up whose disease status says the tumour came back
    assert ("recurrence", "2021-09-16") in events
    assert [k for k, _ in events].count("recurrence") == 1
    assert events[-1] == ("last-contact", "2023-03-01")
    assert events.index(("surgery", "2019-06-20")) < events.index(("complication", "2019-06-24"))


def test_a_year_stays_a_year_and_sorts_within_its_year():
    case = copy.deepcopy(CASE)
    case["surgery"][0]["date"] = "2019"
    case["diagnosis"]["date"] = "2019-05"
    events = _kinds(timeline(case))
    assert ("surgery", "2019") in events and ("diagnosis", "2019-05") in events
    assert not any(when.startswith("2019-01-01") for _, when in events)


def test_neoadjuvant_therapy_and_death():
    case = copy.deepcopy(CASE)
    case["therapies"].append(
        {**case["therapies"][1], "timing": "neoadjuvant", "start": "2019-05-20", "end": "2019-06-01"}
    )
    case["outcome"] = {**case["outcome"], "vital_status": "dead", "death_date": "2024", "death_cause": "x"}
    events = timeline(case)
    kinds = [e.kind for e in events]
    assert kinds.index("diagnosis") < kinds.index("neoadjuvant") < kinds.index("surgery")
    assert (events[-1].kind, events[-1].when) == ("death", "2024")
    assert "last-contact" not in kinds


def test_an_undated_follow_up_shows_its_interval():
    case = copy.deepcopy(CASE)
    case["follow_up"][0]["date"] = None
    events = _kinds(timeline(case))
    assert ("follow-up", "6 months after surgery") in events
    # placed about six months after the surgery: after the adjuvant therapy that started 2019-08-05
    assert events.index(("adjuvant", "2019-08-05 to 2019-09-13")) < events.index(
        ("follow-up", "6 months after surgery")
    )


def test_unknown_dates_bounds_and_an_interval_only_last_contact():
    # second outside review: every case with an `unknown` date (issue 15) made its case page a 500
    case = copy.deepcopy(CASE)
    case["diagnosis"]["date"] = "unknown"
    for surgery in case["surgery"]:
        surgery["date"] = "unknown"
    case["outcome"].update(
        {"last_contact": "unknown", "last_contact_months_after_surgery": 27, "vital_status": "alive"}
    )
    post = case.get("postoperative") or {}
    if post.get("complications"):
        post["complications"][0]["clavien_dindo"] = {"comparator": "<", "value": "IIIa"}
    events = _kinds(timeline(case))
    assert ("diagnosis", "date unknown (not given by the source)") in events
    assert ("surgery", "date unknown (not given by the source)") in events
    assert ("last-contact", "27 months after surgery") in events
    details = [e.detail for e in timeline(case)]
    if post.get("complications"):
        assert any("Clavien-Dindo < IIIa" in d for d in details)
    assert not any("{" in d for d in details)  # no dict printed as text

"""Elements added to the data set (2026-12, "Elements added"): performance status, weight loss,
histologic subtype, therapy not given, therapy start relative to surgery, eGFR by equation.

Oracles: shared/terminology.md §9 (LOINC 89247-1 "ECOG Performance Status score", 89243-0 "Karnofsky
Performance Status score"; verified in mCODE SD_PerformanceStatus.fsh, whose profiles take
valueInteger); FHIR R4 MedicationStatement.status "not-taken" ("The medication was not consumed by the
patient") and Procedure.status "not-done" ("The procedure was not performed"); R4 Range for a range.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Unprocessable
from service.mapping import paths
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import flatten, unflatten

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
LNC = "http://loinc.org"
EXT = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-"


def _base() -> dict[str, Any]:
    path = ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json"
    return validate_case(json.loads(path.read_text()))


def _case() -> dict[str, Any]:
    case = _base()
    case["patient"]["performance_status"] = [
        {"scale": "ecog", "score": 1, "date": case["diagnosis"]["date"]},
        {"scale": "karnofsky", "score": 80, "date": None},
    ]
    case["presentation"]["weight_loss"] = {"kg": {"low": 5, "high": 6}, "percent": None, "over_months": 3}
    case["pathology"]["histologic_subtype"] = ["spindle_cell", "fascicular"]
    case["therapies"].append(
        {
            "kind": "anticoagulation",
            "timing": "post_operative_prophylaxis",
            "status": "not_given",
            "not_given_reason": "bleeding risk",
            "drugs": [{"agent": "lmwh"}],
        }
    )
    case["therapies"][0]["start_postoperative_day"] = 2
    case["diagnosis"]["labs"].append({"test": "egfr_ckd_epi", "value": 85, "unit": "mL/min/{1.73_m2}"})
    return validate_case(case)


def _resources(bundle: dict[str, Any], profile_end: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["meta"]["profile"][0].endswith(profile_end)
    ]


def test_added_elements_round_trip_and_csv():
    case = _case()
    assert bundle_to_case(json.loads(json.dumps(case_to_bundle(case, now=NOW)))) == case
    assert validate_case(unflatten(flatten(case))) == case


def test_performance_status_is_coded_by_its_scale_in_loinc():
    ecog, karnofsky = _resources(case_to_bundle(_case(), now=NOW), "ivclms-performance-status")
    assert ecog["code"]["coding"][0] == {
        "system": LNC,
        "code": "89247-1",
        "display": "ECOG Performance Status score",
    }
    assert ecog["valueInteger"] == 1
    assert karnofsky["code"]["coding"][0]["code"] == "89243-0"
    assert karnofsky["valueInteger"] == 80


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"scale": "ecog", "score": 5}, "an ECOG score is 0 to 4"),
        ({"scale": "karnofsky", "score": 85}, "a Karnofsky score is 0 to 100 in steps of 10"),
    ],
)
def test_performance_scores_outside_the_scale_are_refused(entry: dict[str, Any], message: str):
    case = _base()
    case["patient"]["performance_status"] = [entry]
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert [i.expression for i in raised.value.issues] == ["patient.performance_status[0].score"]
    assert raised.value.issues[0].diagnostics.endswith(message)


def test_weight_loss_range_is_a_range_and_needs_an_amount():
    (loss,) = _resources(case_to_bundle(_case(), now=NOW), "ivclms-weight-loss")
    assert (loss["valueRange"]["low"]["value"], loss["valueRange"]["high"]["value"]) == (5, 6)
    assert loss["valueRange"]["low"]["code"] == "kg"
    case = _base()
    case["presentation"]["weight_loss"] = {"over_months": 6}
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert [i.expression for i in raised.value.issues] == ["presentation.weight_loss"]


def test_histologic_subtype_is_listed_on_the_primary_cancer():
    (condition,) = _resources(case_to_bundle(_case(), now=NOW), "ivclms-primary-cancer")
    subtypes = paths.get_all(condition, f"extension({EXT}histologic-subtype)[*].valueCodeableConcept")
    assert [s["coding"][0]["code"] for s in subtypes] == ["spindle_cell", "fascicular"]


def test_a_therapy_not_given_is_not_done_and_its_drug_not_taken_with_the_reason():
    bundle = case_to_bundle(_case(), now=NOW)
    procedure = next(r for r in _resources(bundle, "ivclms-systemic-therapy") if r["status"] == "not-done")
    assert paths.get(procedure, f"extension({EXT}not-given-reason).valueString") == "bleeding risk"
    (statement,) = [r for r in _resources(bundle, "ivclms-medication") if r["status"] == "not-taken"]
    assert statement["statusReason"] == [{"text": "bleeding risk"}]


def test_not_given_forbids_a_course_and_a_reason_needs_not_given():
    case = _case()
    case["therapies"][-1]["start"] = case["surgery"][0]["date"]
    case["therapies"][0]["not_given_reason"] = "x"
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    last = len(case["therapies"]) - 1
    assert sorted(i.expression for i in raised.value.issues) == sorted(
        [f"therapies[{last}].start", "therapies[0].not_given_reason"]
    )


def test_start_postoperative_day_is_an_extension_and_needs_an_operation():
    bundle = case_to_bundle(_case(), now=NOW)
    therapy = next(
        r for r in bundle["entry"] if r["resource"]["identifier"][0]["value"].endswith("|therapies[0]")
    )
    assert paths.get(therapy["resource"], f"extension({EXT}start-postoperative-day).valueInteger") == 2
    case = _case()
    case["surgery"] = []
    case["pathology"] = None
    case["postoperative"] = None
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert "therapies[0].start_postoperative_day" in [i.expression for i in raised.value.issues]


def test_an_intraoperative_haemorrhage_is_an_observation_part_of_the_operation():
    case = _case()
    case["surgery"][0]["events"] = [
        {
            "event": "haemorrhage",
            "text": None,
            "blood_loss_ml": {"comparator": ">", "value": 2000},
            "transfusion_units": 6,
        }
    ]
    case = validate_case(case)
    bundle = case_to_bundle(case, now=NOW)
    (event,) = _resources(bundle, "ivclms-intraoperative-event")
    assert event["valueCodeableConcept"]["coding"][0]["code"] == "haemorrhage"
    loss = paths.get(
        event, "component(https://fhir.ivc-lms.org/CodeSystem/ivclms-observation|blood-loss).valueQuantity"
    )
    assert (loss["comparator"], loss["value"], loss["code"]) == (">", 2000, "mL")
    (surgery,) = _resources(bundle, "ivclms-surgery")
    surgery_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is surgery)
    assert event["partOf"] == [{"reference": surgery_url}]
    assert bundle_to_case(json.loads(json.dumps(bundle))) == case
    case["surgery"][0]["events"] = [{"event": "other"}]
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert [i.expression for i in raised.value.issues] == ["surgery[0].events[0].text"]


def test_egfr_by_ckd_epi_has_no_mdrd_loinc_code():
    """terminology.md §9: CKD-EPI has no verified LOINC code, so only the project code is written."""
    labs = _resources(case_to_bundle(_case(), now=NOW), "ivclms-lab-result")
    ckd = next(r for r in labs if r["code"]["coding"][-1]["code"] == "egfr_ckd_epi")
    assert [c["system"] for c in ckd["code"]["coding"]] == [
        "https://fhir.ivc-lms.org/CodeSystem/ivclms-lab-test"
    ]

"""Unknown vs none (data set, "Incomplete records"): every coded element a rule requires also takes
``unknown`` (and ``not_applicable`` where it makes sense); in FHIR a data-absent reason.

Oracles: FHIR R4 Observation.dataAbsentReason, "Provides a reason why the expected value in the element
Observation.value[x] is missing", and invariant obs-6, "dataAbsentReason SHALL only be present if
Observation.value[x] is not present"; the R4 CodeSystem data-absent-reason (codes ``unknown``
"Unknown", ``not-applicable`` "Not Applicable").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.codes import DATA_ABSENT_REASON, table
from service.errors import Unprocessable
from service.mapping import paths
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
DAR_UNKNOWN = {"system": DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}
DAR_NA = {"system": DATA_ABSENT_REASON, "code": "not-applicable", "display": "Not Applicable"}


def _example() -> dict[str, Any]:
    path = ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _unknowns() -> dict[str, Any]:
    case = validate_case(_example())
    case["diagnosis"]["basis"] = "unknown"
    case["diagnosis"]["ivc_segment_to"] = "unknown"
    surgery = case["surgery"][0]
    surgery["resection"] = "unknown"
    surgery["ivc_management"]["graft_material"] = "unknown"
    case["pathology"]["margin"] = "not_applicable"
    case["pathology"]["fnclcc_grade"] = "unknown"
    case["postoperative"]["complications"][0]["clavien_dindo"] = "unknown"
    case["therapies"][0]["timing"] = "unknown"
    return validate_case(case)


def _resource(bundle: dict[str, Any], profile_end: str) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["meta"]["profile"][0].endswith(profile_end)
    )


def test_unknowns_round_trip_losslessly():
    case = _unknowns()
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_unknown_in_an_extension_is_a_data_absent_reason_coding():
    bundle = case_to_bundle(_unknowns(), now=NOW)
    condition = _resource(bundle, "ivclms-primary-cancer")
    basis = paths.get(
        condition,
        "extension(https://fhir.ivc-lms.org/StructureDefinition/ivclms-diagnosis-basis).valueCodeableConcept",
    )
    assert basis["coding"] == [DAR_UNKNOWN]
    graft = _resource(bundle, "ivclms-graft")
    assert graft["extension"][0]["valueCodeableConcept"]["coding"] == [DAR_UNKNOWN]


def test_unknown_observation_value_is_data_absent_reason_and_no_value():
    """obs-6: dataAbsentReason only when value[x] is absent; the same holds for a component (obs-7)."""
    bundle = case_to_bundle(_unknowns(), now=NOW)
    margin = _resource(bundle, "ivclms-resection-margin")
    assert margin["dataAbsentReason"]["coding"] == [DAR_NA]
    assert "valueCodeableConcept" not in margin
    grade = _resource(bundle, "ivclms-histologic-grade")
    assert grade["dataAbsentReason"]["coding"] == [DAR_UNKNOWN]
    assert "valueCodeableConcept" not in grade
    complication = _resource(bundle, "ivclms-complication")
    (component,) = complication["component"]
    assert component["dataAbsentReason"]["coding"] == [DAR_UNKNOWN]
    assert "valueCodeableConcept" not in component


def test_none_stays_a_real_answer():
    case = validate_case(_example())
    case["surgery"][0]["ivc_management"] = {
        "method": "none",
        "graft_material": None,
        "graft_diameter_mm": None,
    }
    case = validate_case(case)
    bundle = case_to_bundle(case, now=NOW)
    management = _resource(bundle, "ivclms-ivc-management")
    assert management["code"]["coding"] == [table("ivc-management").local("none").as_fhir()]
    assert bundle_to_case(bundle) == case


def test_graft_material_rule_is_satisfied_by_unknown_not_by_nothing():
    case = validate_case(_example())
    assert case["surgery"][0]["ivc_management"]["method"] in ("interposition_graft", "patch_cavoplasty")
    missing = copy.deepcopy(case)
    missing["surgery"][0]["ivc_management"]["graft_material"] = None
    with pytest.raises(Unprocessable) as raised:
        validate_case(missing)
    assert any(i.expression == "surgery[0].ivc_management.graft_material" for i in raised.value.issues)
    case["surgery"][0]["ivc_management"]["graft_material"] = "unknown"
    assert validate_case(case)["surgery"][0]["ivc_management"]["graft_material"] == "unknown"


@pytest.mark.parametrize(
    ("path", "value"),
    [(("pathology", "margin"), "unknwn"), (("diagnosis", "basis"), "not-applicable")],
)
def test_a_misspelt_reason_is_refused_naming_the_element(path: tuple[str, str], value: str):
    """Only the reasons a table lists are accepted (diagnosis basis has no `not_applicable`)."""
    case = validate_case(_example())
    case[path[0]][path[1]] = value
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    assert [i.expression for i in raised.value.issues] == [".".join(path)]
    assert "unknown" in raised.value.issues[0].diagnostics


def test_unknown_segment_end_implies_no_order():
    case = validate_case(_example())
    case["diagnosis"]["ivc_segment_from"] = "unknown"
    case["diagnosis"]["ivc_segment_to"] = "II"
    assert validate_case(case)["diagnosis"]["ivc_segment_from"] == "unknown"


def test_value_sets_admit_the_reasons_their_table_accepts():
    vs = json.loads((ROOT / "profiles" / "ValueSet-ivclms-margin-vs.json").read_text())
    dar = [inc for inc in vs["compose"]["include"] if inc["system"] == DATA_ABSENT_REASON]
    assert dar == [
        {
            "system": DATA_ABSENT_REASON,
            "concept": [
                {"code": "unknown", "display": "Unknown"},
                {"code": "not-applicable", "display": "Not Applicable"},
            ],
        }
    ]
    cs = json.loads((ROOT / "profiles" / "CodeSystem-ivclms-margin.json").read_text())
    assert "unknown" not in [c["code"] for c in cs["concept"]]  # not a project code

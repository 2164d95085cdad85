"""Issue 15, the diagnosis-side elements: a test or study with only its stated interpretation, an imaging
study as a study (coded findings, size, interpretation), lesions of uncertain nature.

Oracles: the data set ("Stated normal": "A study or test may be recorded with only its interpretation
(normal / abnormal) and no value: renal scintigraphy, GFR, tumour markers"; "lesions of uncertain
nature | site, suspected nature (metastasis / infection / other), certainty"); FHIR R4
Observation.interpretation ("A categorical assessment of an observation value. For example, high, low,
normal.") with the HL7 v3 ObservationInterpretation codes N, A, H, L; R4 Observation.partOf ("A larger
event of which this particular Observation is a component or step", Procedure allowed); R4
condition-ver-status ("provisional: This is a tentative diagnosis - still a candidate that is under
consideration"; "differential: One of a set of potential (and typically mutually exclusive) diagnoses
asserted to further guide the diagnostic process and preliminary treatment"; "refuted: This condition
has been ruled out by diagnostic and clinical evidence"); shared/terminology.md §1 (SCT 128462008 is
the secondary cancer code, which a lesion of open nature must not carry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Unprocessable
from service.mapping import paths
from service.mapping.forward import case_to_bundle
from service.mapping.recognise import profile_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import column_names, flatten, unflatten
from tests.unit.mapping.test_recognise import plain

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
V3OI = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDVER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
LNC = "http://loinc.org"
OBS = "https://fhir.ivc-lms.org/CodeSystem/ivclms-observation"
PROFILE = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-"
EGFR_UNIT = "mL/min/{1.73_m2}"


def _base() -> dict[str, Any]:
    path = ROOT / "examples" / "ivclms-002-segment-i-ligation-local-recurrence.json"
    return validate_case(json.loads(path.read_text()))


def _case() -> dict[str, Any]:
    case = _base()
    diagnosis = case["diagnosis"]
    diagnosis["imaging"] = [
        {
            "modality": "ct",
            "date": diagnosis["date"],
            "findings": "8 x 4.5 cm intraluminal IVC mass, collaterals",
            "coded_findings": ["intraluminal_mass", "venous_collaterals"],
            "size_cm": [8, 4.5],
        },
        {"modality": "renal_scintigraphy", "findings": "normal split function", "interpretation": "normal"},
    ]
    diagnosis["labs"] = [
        {"test": "tumour_markers", "interpretation": "normal"},
        {"test": "egfr", "interpretation": "normal"},
        {"test": "creatinine", "value": 1.6, "unit": "mg/dL", "interpretation": "high"},
    ]
    diagnosis["uncertain_lesions"] = [
        {"site": "lung", "nature": "metastasis", "certainty": "differential", "text": "6 mm nodule"},
        {"site": "liver", "nature": "infection", "certainty": "suspected", "date": diagnosis["date"]},
    ]
    visit = case["follow_up"][0]
    visit["imaging"][0]["coded_findings"] = ["no_abnormality"]
    visit["imaging"][0]["interpretation"] = "normal"
    visit["uncertain_lesions"] = [
        {"site": "other", "nature": "other", "certainty": "refuted", "text": "adrenal nodule: adenoma"}
    ]
    return validate_case(case)


def _resources(bundle: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["meta"]["profile"][0] == PROFILE + name]


def _key(resource: dict[str, Any]) -> str:
    return str(resource["identifier"][0]["value"]).rsplit("|", 1)[1]


def _entry(bundle: dict[str, Any], key: str) -> dict[str, Any]:
    return next(
        e for e in bundle["entry"] if e["resource"].get("identifier", [{}])[0].get("value", "").endswith(key)
    )


def _errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(Unprocessable) as caught:
        validate_case(data)
    return {i.expression: i.diagnostics for i in caught.value.issues}


# ---- the three elements through JSON, CSV and FHIR ---------------------------------------------------


def test_new_elements_round_trip_through_fhir_and_csv():
    case = _case()
    assert bundle_to_case(json.loads(json.dumps(case_to_bundle(case, now=NOW)))) == case
    assert validate_case(unflatten(flatten(case))) == case


def test_csv_has_columns_for_each_new_element():
    names = set(column_names())
    assert {
        "diagnosis_labs1_interpretation",
        "diagnosis_imaging1_coded_findings",
        "diagnosis_imaging1_size_cm",
        "diagnosis_imaging1_interpretation",
        "diagnosis_uncertain_lesions1_site",
        "diagnosis_uncertain_lesions1_nature",
        "diagnosis_uncertain_lesions1_certainty",
        "follow_up1_imaging1_interpretation",
        "follow_up1_uncertain_lesions1_nature",
        "postoperative_renal_function1_interpretation",
    } <= names
    row = flatten(_case())
    assert row["diagnosis_imaging1_coded_findings"] == "intraluminal_mass;venous_collaterals"
    assert row["diagnosis_labs1_value"] == "" and row["diagnosis_labs1_interpretation"] == "normal"


# ---- stated interpretation ----------------------------------------------------------------------------


def test_a_result_stated_only_as_normal_is_an_observation_with_interpretation_and_no_value():
    bundle = case_to_bundle(_case(), now=NOW)
    markers = _entry(bundle, "|diagnosis.labs[0]")["resource"]
    assert not any(k.startswith("value") for k in markers)
    assert "dataAbsentReason" not in markers  # the result is known: it is normal
    assert markers["interpretation"][0]["coding"][0] == {"system": V3OI, "code": "N", "display": "Normal"}
    high = _entry(bundle, "|diagnosis.labs[2]")["resource"]
    assert high["valueQuantity"]["value"] == 1.6
    assert high["interpretation"][0]["coding"][0]["code"] == "H"


def test_renal_scintigraphy_stated_normal_is_the_interpretation_of_its_study():
    bundle = case_to_bundle(_case(), now=NOW)
    findings = _entry(bundle, "|diagnosis.imaging[1]#findings")["resource"]
    assert findings["interpretation"][0]["coding"][0] == {"system": V3OI, "code": "N", "display": "Normal"}
    study = _entry(bundle, "|diagnosis.imaging[1]")
    assert study["resource"]["resourceType"] == "Procedure"
    assert findings["partOf"] == [{"reference": study["fullUrl"]}]


@pytest.mark.parametrize(
    ("lab", "where", "rule"),
    [
        ({"test": "egfr"}, "value", "value or interpretation is required"),
        ({"test": "egfr", "value": 80}, "unit", "required with value"),
        ({"test": "egfr", "unit": EGFR_UNIT, "interpretation": "normal"}, "unit", "only allowed with value"),
        ({"test": "tumour_markers", "value": 3, "unit": "U/mL"}, "value", "interpretation only"),
        ({"test": "egfr", "interpretation": "borderline"}, "interpretation", "must be one of"),
    ],
)
def test_a_result_needs_a_value_or_an_interpretation_and_a_unit_only_with_a_value(lab, where, rule):
    case = _base()
    case["diagnosis"]["labs"] = [lab]
    errors = _errors(case)
    assert rule in errors[f"diagnosis.labs[0].{where}"]


def test_through_the_api_a_result_with_neither_is_a_422_naming_the_element(api):
    case = json.loads(next((ROOT / "examples" / "literature").glob("ivclms-020-*.json")).read_text())
    case["diagnosis"]["labs"][0].update(value=None, unit=None, interpretation=None)
    resp = api.post(case)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = next(i for i in body["issue"] if "diagnosis.labs[0].value" in i.get("expression", []))
    assert "value or interpretation is required" in issue["diagnostics"]


def test_a_value_keeps_its_unit_conversion_beside_an_interpretation():
    case = _base()
    case["postoperative"]["renal_function"] = [
        {"test": "creatinine", "value": 141.4, "unit": "umol/L", "interpretation": "high"}
    ]
    lab = validate_case(case)["postoperative"]["renal_function"][0]
    assert lab["value"] == pytest.approx(1.6, abs=0.001)  # 141.4 umol/L / 88.4
    assert (lab["unit"], lab["interpretation"]) == ("mg/dL", "high")


# ---- imaging study as a study ---------------------------------------------------------------------------


def test_an_imaging_study_carries_coded_findings_and_its_size_as_components():
    bundle = case_to_bundle(_case(), now=NOW)
    findings = _entry(bundle, "|diagnosis.imaging[0]#findings")["resource"]
    assert findings["code"]["coding"][0]["code"] == "imaging-findings"
    coded = paths.get_all(findings, f"component({OBS}|imaging-finding)[*].valueCodeableConcept")
    assert [c["coding"][0]["code"] for c in coded] == ["intraluminal_mass", "venous_collaterals"]
    largest = paths.get(findings, f"component({LNC}|33728-7).valueQuantity")
    other = paths.get(findings, f"component({LNC}|33729-5).valueQuantity")
    assert (largest["value"], largest["code"], other["value"]) == (8, "cm", 4.5)
    assert findings["effectiveDateTime"] == _case()["diagnosis"]["date"]


def test_a_study_with_modality_date_and_text_only_has_no_findings_observation():
    case = _base()
    assert case["diagnosis"]["imaging"], "the base example has imaging"
    assert _resources(case_to_bundle(case, now=NOW), "imaging-findings") == []


def test_follow_up_findings_are_placed_with_their_study_when_read_from_plain_r4():
    """An EHR's resources carry no element keys: the findings follow their study through partOf."""
    case = _case()
    made = case_to_bundle(case, now=NOW)
    profiled = profile_bundle(plain(made), source_system=case["source_system"], case_id=case["case_id"])
    assert profiled.issues == ()
    keys = {_key(e["resource"]) for e in profiled.bundle["entry"] if "identifier" in e["resource"]}
    assert {"follow_up[0].imaging[0]#findings", "diagnosis.imaging[0]#findings"} <= keys
    assert bundle_to_case(profiled.bundle)["follow_up"][0]["imaging"][0]["coded_findings"] == [
        "no_abnormality"
    ]


# ---- lesions of uncertain nature ------------------------------------------------------------------------


def test_lesions_of_uncertain_nature_are_conditions_with_their_verification_status():
    bundle = case_to_bundle(_case(), now=NOW)
    lesions = {_key(r): r for r in _resources(bundle, "uncertain-lesion")}
    status = {k: r["verificationStatus"]["coding"][0] for k, r in lesions.items()}
    assert status["diagnosis.uncertain_lesions[0]"] == {
        "system": CONDVER,
        "code": "differential",
        "display": "Differential",
    }
    assert status["diagnosis.uncertain_lesions[1]"]["code"] == "provisional"
    assert status["follow_up[0].uncertain_lesions[0]"]["code"] == "refuted"
    lung = lesions["diagnosis.uncertain_lesions[0]"]
    assert lung["bodySite"][0]["coding"][0]["code"] == "39607008"  # Lung structure, terminology.md §1
    assert lung["code"]["coding"][0]["code"] == "metastasis"


def test_a_suspected_metastasis_of_open_nature_is_not_coded_as_a_secondary_cancer():
    bundle = case_to_bundle(_case(), now=NOW)
    for lesion in _resources(bundle, "uncertain-lesion"):
        assert all(c.get("code") != "128462008" for c in lesion["code"]["coding"])
    assert _resources(bundle, "secondary-cancer") == []


@pytest.mark.parametrize("field", ["site", "nature"])
def test_an_uncertain_lesion_of_other_site_or_nature_needs_its_text(field):
    case = _base()
    lesion = {"site": "lung", "nature": "infection", field: "other"}
    case["diagnosis"]["uncertain_lesions"] = [lesion]
    case["follow_up"][0]["uncertain_lesions"] = [dict(lesion)]
    errors = _errors(case)
    assert errors["diagnosis.uncertain_lesions[0].text"].endswith(f"required when {field} is other")
    assert errors["follow_up[0].uncertain_lesions[0].text"].endswith(f"required when {field} is other")


def test_an_uncertain_lesion_needs_a_site_and_a_known_nature():
    case = _base()
    case["diagnosis"]["uncertain_lesions"] = [{"nature": "tumour", "certainty": "confirmed"}]
    errors = _errors(case)
    assert "diagnosis.uncertain_lesions[0].site" in errors
    assert "must be one of" in errors["diagnosis.uncertain_lesions[0].nature"]
    assert "must be one of" in errors["diagnosis.uncertain_lesions[0].certainty"]


# ---- the literature examples state what reports state ---------------------------------------------------


def _literature(stem: str) -> dict[str, Any]:
    path = next((ROOT / "examples" / "literature").glob(f"{stem}-*.json"))
    return validate_case(json.loads(path.read_text()))


def test_literature_examples_carry_stated_normals_studies_and_uncertain_lesions():
    c020, c021, c022 = _literature("ivclms-020"), _literature("ivclms-021"), _literature("ivclms-022")
    scintigraphy = [i for i in c020["diagnosis"]["imaging"] if i["modality"] == "renal_scintigraphy"]
    assert [i["interpretation"] for i in scintigraphy] == ["normal"]
    markers = [lab for lab in c020["diagnosis"]["labs"] if lab["test"] == "tumour_markers"]
    assert markers == [
        {"test": "tumour_markers", "value": None, "unit": None, "interpretation": "normal", "date": None}
    ]
    assert c021["diagnosis"]["imaging"][0]["size_cm"] == [11]
    assert c021["follow_up"][0]["uncertain_lesions"][0]["certainty"] == "differential"
    assert c022["diagnosis"]["uncertain_lesions"][0]["nature"] == "metastasis"

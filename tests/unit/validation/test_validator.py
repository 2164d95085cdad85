"""Single rules of the walker on small hand-made resources; expected results come from FHIR R4 and
the package's profiles as written (e.g. ivclms-tumor-size fixes the unit to cm)."""

from __future__ import annotations

import copy

import pytest

from tests.contract.corpus import bundles

PROFILE = "https://fhir.ivc-lms.org/StructureDefinition/"


def _resource(profile: str) -> dict:
    for _, bundle in bundles():
        for entry in bundle["entry"]:
            if entry["resource"]["meta"]["profile"][0] == PROFILE + profile:
                return copy.deepcopy(entry["resource"])
    raise AssertionError(profile)


def _errors(issues):
    return [(i.expression, i.code) for i in issues if i.severity == "error"]


def test_expression_names_the_json_element_with_list_indexes(validator):
    obs = next(r for r in (_resource("ivclms-tumor-size"),) if "component" in r)
    index = next(i for i, c in enumerate(obs["component"]) if "valueQuantity" in c)
    obs["component"][index]["valueQuantity"]["code"] = obs["component"][index]["valueQuantity"]["unit"] = "mm"
    errors = _errors(validator.validate(obs))
    assert (f"Observation.component[{index}].valueQuantity", "value") in errors


def test_unknown_element_is_an_error_where_it_is(validator):
    obs = _resource("ivclms-lab-result")
    obs["code"]["bogus"] = 1
    assert _errors(validator.validate(obs)) == [("Observation.code.bogus", "structure")]


def test_base_required_binding_applies_under_the_profile(validator):
    obs = _resource("ivclms-lab-result")
    obs["status"] = "done"  # not in http://hl7.org/fhir/ValueSet/observation-status
    assert _errors(validator.validate(obs)) == [("Observation.status", "code-invalid")]


@pytest.mark.parametrize(
    "value, ok",
    [("2021", True), ("2021-02", True), ("2021-02-10", True), ("2021-2-10", False), ("10.02.2021", False)],
)
def test_date_format_is_the_r4_regex(validator, value, ok):
    patient = _resource("ivclms-patient")
    patient["birthDate"] = value
    assert (_errors(validator.validate(patient)) == []) is ok


def test_unknown_extension_is_accepted_with_information_as_hapi_does(validator):
    obs = _resource("ivclms-lab-result")
    obs["extension"] = [{"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "x"}]
    issues = validator.validate(obs)
    assert _errors(issues) == []
    assert [(i.severity, i.expression) for i in issues if i.severity == "information"] == [
        ("information", "Observation.extension[0]")
    ]


def test_project_code_outside_its_code_system_is_an_error(validator):
    obs = _resource("ivclms-lab-result")
    project = next(c for c in obs["code"]["coding"] if c["system"].startswith("https://fhir.ivc-lms.org/"))
    project["code"] = "no-such-test"
    index = obs["code"]["coding"].index(project)
    # the LOINC coding next to it still puts the concept in the value set: only the coding is wrong
    assert _errors(validator.validate(obs)) == [(f"Observation.code.coding[{index}]", "code-invalid")]


def test_loinc_code_is_checked_against_the_enumerated_value_set_only(validator):
    obs = _resource("ivclms-lab-result")
    obs["code"]["coding"] = [c for c in obs["code"]["coding"] if c["system"] == "http://loinc.org"]
    assert obs["code"]["coding"], "the example carries a LOINC code"
    assert _errors(validator.validate(obs)) == []
    obs["code"]["coding"][0]["code"] = "1-8"  # a LOINC code the lab-test value set does not list
    assert _errors(validator.validate(obs)) == [("Observation.code", "code-invalid")]


def test_unresolved_literal_reference_of_the_wrong_type_is_only_a_warning(validator):
    obs = _resource("ivclms-lab-result")
    obs["subject"] = {"reference": "Device/1"}
    issues = validator.validate(obs)
    assert _errors(issues) == []
    assert any(i.severity == "warning" and i.expression == "Observation.subject" for i in issues)


def test_reference_inside_a_bundle_must_conform_to_the_target_profile(validator):
    _, bundle = bundles()[0]
    bundle = copy.deepcopy(bundle)
    patient = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Patient")
    del bundle["entry"][patient]["resource"]["meta"]  # no longer claims ivclms-patient ...
    del bundle["entry"][patient]["resource"]["identifier"]  # ... and no longer conforms to it
    errors = _errors(validator.validate_bundle(bundle))
    assert (f"Bundle.entry[{patient}].resource", "structure") not in errors
    assert any(e[0].endswith(".subject") for e in errors)


def test_explicit_unknown_profile_is_an_error(validator):
    obs = _resource("ivclms-lab-result")
    issues = validator.validate(obs, [PROFILE + "no-such-profile"])
    assert ("Observation", "not-found") in _errors(issues)


def test_invariant_from_base_r4_is_evaluated(validator):
    obs = _resource("ivclms-lab-result")
    del obs["meta"]  # base Observation: effective[x] may be a Period
    obs["effectivePeriod"] = {"start": "2021-02-10", "end": "2021-02-01"}
    del obs["effectiveDateTime"]
    issues = validator.validate(obs)
    assert _errors(issues) == [("Observation.effectivePeriod", "invariant")]
    assert "per-1" in next(i.diagnostics for i in issues if i.severity == "error")


def test_validating_does_not_change_the_resource(validator):
    obs = _resource("ivclms-tumor-size")
    before = copy.deepcopy(obs)
    validator.validate(obs)
    assert obs == before


@pytest.mark.parametrize("system", [[], {}, 7])
def test_coding_system_of_the_wrong_json_type_is_an_error_not_a_crash(validator, system):
    """Found by tests/reliability/test_hostile_input.py (a 500 on POST /fhir): a coding bound to a
    value set whose system is not a string raised TypeError in the value-set check."""
    obs = _resource("ivclms-presentation")
    index = next(i for i, c in enumerate(obs["component"]) if c["code"].get("coding"))
    obs["component"][index]["code"]["coding"][0]["system"] = system
    errors = _errors(validator.validate(obs))
    assert any(where == f"Observation.component[{index}].code.coding[0].system" for where, _ in errors)


@pytest.mark.parametrize("profile", [None, "https://fhir.ivc-lms.org/StructureDefinition/ivclms-smoking", 3])
def test_meta_profile_of_the_wrong_json_type_is_an_error_not_a_crash(validator, profile):
    """Found by the same fuzzer: ``meta.profile`` null (or not a list) raised TypeError."""
    obs = _resource("ivclms-smoking")
    obs["meta"]["profile"] = profile
    errors = _errors(validator.validate(obs))
    assert ("Observation.meta.profile", "structure") in errors

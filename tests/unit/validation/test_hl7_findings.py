"""Issue 14: what HL7's validator test cases showed, each on a small resource of its own (the whole suite
runs in tests/conformance/). Expected verdicts come from FHIR R4 and the reference (Java) validator's
expected outcome for the named test case."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from click.testing import CliRunner

from service.cli import main
from service.validation import Validator
from service.validation.snapshot import generate

CORE = "http://hl7.org/fhir/StructureDefinition/"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Test"}]}


def _errors(issues: list[Any]) -> list[tuple[str | None, str]]:
    return [(i.expression, i.diagnostics) for i in issues if i.severity in ("error", "fatal")]


def _patient(**changes: Any) -> dict[str, Any]:
    patient = copy.deepcopy(PATIENT)
    patient.update(changes)
    return patient


# ---- false errors ---------------------------------------------------------------------------------


def test_finding_1_resource_with_only_resource_type_is_valid(validator: Validator) -> None:
    # R4 ele-1 sits on Element ("All FHIR elements must have a @value or children"), not on Resource;
    # HL7 test case params-empty-r4: {"resourceType": "Parameters"} is valid.
    assert _errors(validator.validate({"resourceType": "Parameters"})) == []
    assert _errors(validator.validate({"resourceType": "Parameters", "id": "x"})) == []


def test_finding_2_hash_reference_between_sibling_contained_resources_is_valid(validator: Validator) -> None:
    # ref-1 reads %rootResource.contained, for a contained resource its container (case document-manifest)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": [
            {"resourceType": "Practitioner", "id": "pr"},
            {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "#pr"}},
        ],
        "performer": [{"reference": "#role"}],
    }
    assert _errors(validator.validate(observation)) == []
    observation["contained"][1]["practitioner"]["reference"] = "#nowhere"
    assert any("ref-1" in message for _, message in _errors(validator.validate(observation)))


def test_finding_3_extension_context_on_a_primitive_is_the_primitive(validator: Validator) -> None:
    # humanname-own-name has context HumanName.family; it sits in _family (test case bundle-profiles)
    patient = _patient(
        name=[
            {
                "family": "van Beethoven",
                "_family": {
                    "extension": [
                        {"url": CORE + "humanname-own-name", "valueString": "Beethoven"},
                    ]
                },
            }
        ]
    )
    assert _errors(validator.validate(patient)) == []
    patient["_gender"] = {"extension": [{"url": CORE + "humanname-own-name", "valueString": "x"}]}
    patient["gender"] = "male"
    assert any("not allowed" in m for _, m in _errors(validator.validate(patient)))


def test_finding_4_required_primitive_given_only_by_its_extensions_is_present(validator: Validator) -> None:
    # R4 json.html: a primitive may be given by "_name" alone (its extensions, e.g. data-absent-reason)
    observation = {
        "resourceType": "Observation",
        "_status": {"extension": [{"url": CORE + "data-absent-reason", "valueCode": "unknown"}]},
        "code": {"text": "x"},
    }
    assert not [e for e in _errors(validator.validate(observation)) if "minimum required" in e[1]]


def test_finding_5_profiled_contained_resource_keeps_its_resource_type(validator: Validator) -> None:
    profile = {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/contained-practitioner",
        "name": "P",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": CORE + "Patient",
        "derivation": "constraint",
        "differential": {"element": [{"path": "Patient.contained", "type": [{"code": "Practitioner"}]}]},
    }
    extended = validator.with_resources([profile])
    patient = _patient(
        contained=[{"resourceType": "Practitioner", "id": "d"}], generalPractitioner=[{"reference": "#d"}]
    )
    assert _errors(extended.validate(patient, [profile["url"]])) == []


# ---- missed errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["/foobar==", "org_1", "x" * 65])
def test_finding_6_resource_id_form(validator: Validator, rid: str) -> None:
    # R4 datatypes.html#id: "Any combination of upper- or lower-case ASCII letters, numerals, '-' and
    # '.', with a length limit of 64 characters" (test cases resource-invalid-id-1..3)
    assert "Patient.id" in [e for e, _ in _errors(validator.validate(_patient(id=rid)))]
    contained = _patient(contained=[{"resourceType": "Organization", "id": rid}])
    assert "Patient.contained[0].id" in [e for e, _ in _errors(validator.validate(contained))]


def test_finding_7_extensions_on_resource_id_are_errors(validator: Validator) -> None:
    patient = _patient(_id={"extension": [{"url": CORE + "data-absent-reason", "valueCode": "unknown"}]})
    assert ("Patient.id", "Extensions are not allowed on Resource.id") in _errors(validator.validate(patient))


def test_finding_8_narrative_xhtml_rules(validator: Validator) -> None:
    # txt-1 / txt-2 (htmlChecks()): no scripts, no entities XML does not define, some content
    ok = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello</p></div>'
    assert _errors(validator.validate(_patient(text={"status": "generated", "div": ok}))) == []
    for div in (
        '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>x</div>',
        '<div xmlns="http://www.w3.org/1999/xhtml">&reg;</div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"> </div>',
        '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">x</p></div>',
    ):
        found = _errors(validator.validate(_patient(text={"status": "generated", "div": div})))
        assert any("txt-" in m for _, m in found), div


def test_finding_9_dom_3_contained_resource_must_be_referenced(validator: Validator) -> None:
    patient = _patient(contained=[{"resourceType": "Organization", "id": "o", "name": "x"}])
    assert any("dom-3" in m for _, m in _errors(validator.validate(patient)))
    patient["managingOrganization"] = {"reference": "#o"}
    assert _errors(validator.validate(patient)) == []


def test_finding_10_tim_9_offset_needs_a_when_that_is_not_a_meal(validator: Validator) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/p"},
        "dosageInstruction": [{"timing": {"repeat": {"offset": 30, "when": ["C"]}}}],
    }
    assert any("tim-9" in m for _, m in _errors(validator.validate(request)))
    request["dosageInstruction"][0]["timing"]["repeat"]["when"] = ["ACM"]
    assert _errors(validator.validate(request)) == []


def test_finding_11_per_1_mixed_precision_fails_as_in_the_reference(validator: Validator) -> None:
    # test case encounter-period: start 2023-06-21, end 2023-06-21T06:20:00Z
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "period": {"start": "2023-06-21", "end": "2023-06-21T06:20:00Z"},
    }
    assert any("per-1" in m for _, m in _errors(validator.validate(encounter)))
    encounter["period"] = {"start": "2023-06-20", "end": "2023-06-21T06:20:00Z"}
    assert _errors(validator.validate(encounter)) == []


@pytest.mark.parametrize("day", ["2020-02-30", "2021-02-29", "2020-04-31T10:00:00Z"])
def test_finding_12_impossible_calendar_dates(validator: Validator, day: str) -> None:
    assert _errors(validator.validate(_patient(birthDate=day[:10])))
    period = {"resourceType": "Encounter", "status": "finished", "period": {"start": day}}
    period["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    assert _errors(validator.validate(period))


def test_finding_13_leap_day_is_a_date(validator: Validator) -> None:
    assert _errors(validator.validate(_patient(birthDate="2020-02-29"))) == []


def test_finding_14_que_12_with_two_enable_when(validator: Validator) -> None:
    # R4 que-12 human text: "If there are more than one enableWhen, enableBehavior must be specified"
    when = {"question": "1", "operator": "exists", "answerBoolean": True}
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [
            {"linkId": "1", "type": "boolean"},
            {"linkId": "2", "type": "boolean", "enableWhen": [when, copy.deepcopy(when)]},
        ],
    }
    assert any("que-12" in m for _, m in _errors(validator.validate(questionnaire)))


def test_finding_15_bundle_link_relation_once_and_absolute_full_url(validator: Validator) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "link": [{"relation": "self", "url": "http://a/1"}, {"relation": "self", "url": "http://a/2"}],
        "entry": [{"fullUrl": "Patient/p1", "resource": copy.deepcopy(PATIENT)}],
    }
    found = _errors(validator.validate_bundle(bundle))
    assert ("Bundle.link[1]", "The link relation 'self' occurs twice") in found
    assert any(e == "Bundle.entry[0].fullUrl" for e, _ in found)


def test_finding_16_attachment_size_must_match_data(validator: Validator) -> None:
    media = {
        "resourceType": "Media",
        "status": "completed",
        "content": {"contentType": "text/plain", "data": "aGVsbG8gd29ybGQ=", "size": 100},
    }
    assert ("Media.content.size", "Stated attachment size 100 is not the size of data, 11") in _errors(
        validator.validate(media)
    )
    media["content"]["size"] = 11
    assert _errors(validator.validate(media)) == []


def test_finding_17_unknown_code_in_a_v2_table(validator: Validator) -> None:
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    patient = _patient(identifier=[{"type": {"coding": [{"system": v2, "code": "MR"}]}, "value": "1"}])
    assert _errors(validator.validate(patient)) == []
    patient["identifier"][0]["type"]["coding"][0]["code"] = "NOT-A-CODE"
    assert any("Unknown code 'NOT-A-CODE'" in m for _, m in _errors(validator.validate(patient)))


def test_finding_18_duplicate_contained_ids(validator: Validator) -> None:
    patient = _patient(
        contained=[{"resourceType": "Organization", "id": "o"}, {"resourceType": "Organization", "id": "o"}],
        managingOrganization={"reference": "#o"},
    )
    assert ("Patient.contained[1]", "Duplicate contained id 'o'") in _errors(validator.validate(patient))


# ---- snapshot generation -----------------------------------------------------------------------------


def test_finding_19_snapshot_of_a_differential_without_ids(validator: Validator) -> None:
    base = validator.defs.structure(CORE + "Patient")["snapshot"]["element"]  # type: ignore[index]
    snap = generate(validator.defs, base, [{"path": "Patient.name", "min": 1}])
    assert next(e for e in snap if e["id"] == "Patient.name")["min"] == 1


def test_finding_20_snapshot_of_a_slice_inside_a_content_reference(validator: Validator) -> None:
    base = validator.defs.structure(CORE + "Parameters")["snapshot"]["element"]  # type: ignore[index]
    diff = [
        {
            "id": "Parameters.parameter.part",
            "path": "Parameters.parameter.part",
            "slicing": {"rules": "open"},
        },
        {"id": "Parameters.parameter.part:a", "path": "Parameters.parameter.part", "sliceName": "a"},
        {
            "id": "Parameters.parameter.part:a.name",
            "path": "Parameters.parameter.part.name",
            "fixedString": "a",
        },
    ]
    snap = generate(validator.defs, base, diff)
    assert next(e for e in snap if e["id"] == "Parameters.parameter.part:a.name")["fixedString"] == "a"


def test_finding_21_snapshot_of_an_extension_constraining_its_own_value(validator: Validator) -> None:
    # test case StructureDefinition-Slice23: Extension.valueIdentifier names Extension.value[x]
    base = validator.defs.structure(CORE + "Extension")["snapshot"]["element"]  # type: ignore[index]
    diff = [
        {"id": "Extension", "path": "Extension"},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "type": [{"code": "Identifier"}]},
        {"id": "Extension.valueIdentifier", "path": "Extension.valueIdentifier", "short": "the id"},
    ]
    snap = generate(validator.defs, base, diff)
    assert next(e for e in snap if e["id"] == "Extension.value[x]")["short"] == "the id"


# ---- part 4: the command line and the project's own extensions -----------------------------------


def test_finding_22_own_extension_is_never_an_unknown_extension(validator: Validator) -> None:
    url = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-not-defined"
    issues = validator.validate(_patient(extension=[{"url": url, "valueString": "x"}]))
    assert not [i for i in issues if "Unknown extension" in i.diagnostics]
    assert [i.severity for i in issues if url in i.diagnostics] == ["warning"]
    other = validator.validate(_patient(extension=[{"url": "http://example.org/x", "valueString": "x"}]))
    assert [i.severity for i in other if "Unknown extension" in i.diagnostics] == ["information"]


def test_finding_23_validate_errors_only_prints_errors_and_the_summary(tmp_path: Any) -> None:
    target = tmp_path / "p.json"
    patient = _patient(
        extension=[{"url": "http://example.org/x", "valueString": "x"}], birthDate="2020-02-30"
    )
    target.write_text(json.dumps(patient))
    runner = CliRunner()
    full = runner.invoke(main, ["validate", str(target)])
    short = runner.invoke(main, ["validate", "--errors-only", str(target)])
    assert full.exit_code == short.exit_code == 1
    assert "information" in full.output and "warning" in full.output
    lines = short.output.strip().splitlines()
    assert [line for line in lines if " information " in line or " warning " in line] == []
    assert any(" error Patient.birthDate" in line for line in lines)
    others = len(full.output.strip().splitlines()) - 2  # every issue line but the error, and the summary
    assert lines[-1].endswith(f"p.json: INVALID (1 errors, {others} other issues)")
    assert len(lines) == 2


def test_finding_24_quantity_limits_across_metric_prefixes(validator: Validator) -> None:
    # test cases obs-value-min-g / obs-value-max-g: -1 g is below a minValue of 0 kg
    profile = {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/weight-limits",
        "name": "W",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Observation",
        "baseDefinition": CORE + "Observation",
        "derivation": "constraint",
        "differential": {
            "element": [
                {
                    "path": "Observation.value[x]",
                    "type": [{"code": "Quantity"}],
                    "minValueQuantity": {"value": 0, "system": "http://unitsofmeasure.org", "code": "kg"},
                    "maxValueQuantity": {"value": 2, "system": "http://unitsofmeasure.org", "code": "kg"},
                }
            ]
        },
    }
    extended = validator.with_resources([profile])
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
    ucum = "http://unitsofmeasure.org"
    for value, code, bad in ((-1, "g", True), (1500, "g", False), (2500, "g", True), (1, "[lb_av]", False)):
        observation["valueQuantity"] = {"value": value, "system": ucum, "code": code}
        assert bool(_errors(extended.validate(observation, [profile["url"]]))) is bad, (value, code)


def test_finding_25_bundle_against_a_profile_still_resolves_its_entries(validator: Validator) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "http://a/Patient/p1", "resource": copy.deepcopy(PATIENT)},
            {
                "fullUrl": "http://a/Observation/o1",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Observation/o1"},
                },
            },
        ],
    }
    found = _errors(validator.validate_bundle(bundle, [CORE + "Bundle"]))
    assert any(e == "Bundle.entry[1].resource.subject" for e, _ in found)


def _profile(url: str, rtype: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": "T",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": rtype,
        "baseDefinition": CORE + rtype,
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def test_finding_26_min_value_duration_is_relative_to_now(validator: Validator) -> None:
    # test cases toplevel-minvalueduration-fail / toplevel-maxvalueduration-fail
    years = {"system": "http://unitsofmeasure.org", "code": "a", "unit": "a"}
    profile = _profile(
        "http://example.org/StructureDefinition/birth-window",
        "Patient",
        [
            {
                "path": "Patient.birthDate",
                "minValueDuration": {**years, "value": 100},
                "maxValueDuration": {**years, "value": 10},
            }
        ],
    )
    extended = validator.with_resources([profile])
    for day, bad in (("1850-01-01", True), ("2100-01-01", True), ("1990-05-01", False), ("1990", False)):
        assert bool(_errors(extended.validate(_patient(birthDate=day), [profile["url"]]))) is bad, day


def test_finding_27_additional_required_binding(validator: Validator) -> None:
    # test case additional-bindings-observation-2: R5 binding.additional (purpose required) in R4
    value_set = {
        "resourceType": "ValueSet",
        "url": "http://example.org/ValueSet/two-codes",
        "status": "active",
        "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "8310-5"}]}]},
    }
    additional = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ElementDefinition.binding.additional"
    binding = {
        "strength": "example",
        "valueSet": "http://hl7.org/fhir/ValueSet/observation-codes",
        "extension": [
            {
                "url": additional,
                "extension": [
                    {"url": "purpose", "valueCode": "required"},
                    {"url": "valueSet", "valueCanonical": value_set["url"]},
                ],
            }
        ],
    }
    profile = _profile(
        "http://example.org/StructureDefinition/obs-additional",
        "Observation",
        [{"path": "Observation.code", "binding": binding}],
    )
    extended = validator.with_resources([profile, value_set])
    observation = {"resourceType": "Observation", "status": "final"}
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
    assert _errors(extended.validate(observation, [profile["url"]])) == []
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "100066-0"}]}
    assert _errors(extended.validate(observation, [profile["url"]]))


@pytest.mark.parametrize("system", [["http://x"], {"a": 1}, 5])
def test_finding_28_coding_system_of_the_wrong_json_type_is_an_error_not_a_crash(
    validator: Validator, system: Any
) -> None:
    # found by tests/reliability/test_hostile_input.py: the binding lookup hashed the system
    patient = _patient(maritalStatus={"coding": [{"system": system, "code": "M"}]})
    assert any(e == "Patient.maritalStatus.coding[0].system" for e, _ in _errors(validator.validate(patient)))

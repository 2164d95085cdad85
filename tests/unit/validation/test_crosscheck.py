"""Issue 14: rules that need another resource (``service/validation/crosscheck.py``), each on a small
resource of its own. The oracle is the reference (Java) validator's expected outcome for the named HL7
test case (fhir-test-cases 1.7.69, quoted) and the R4 SearchParameter definitions themselves
(``search-parameters.json`` of HAPI's R4 jar: AllergyIntolerance-clinical-status is a token,
Organization-name a string on Organization). Each test has its valid twin, so a rule that reports
everything fails as surely as one that reports nothing."""

from __future__ import annotations

from typing import Any

import pytest

from service.validation import Validator

SP = "http://hl7.org/fhir/SearchParameter/"


def _errors(issues: list[Any]) -> list[tuple[str | None, str]]:
    return [(i.expression, i.diagnostics) for i in issues if i.severity in ("error", "fatal")]


def _capability(
    param_type: str, definition: str = SP + "AllergyIntolerance-clinical-status"
) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "draft",
        "date": "2019-08-24",
        "kind": "requirements",
        "description": "One search parameter",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": "AllergyIntolerance",
                        "searchParam": [
                            {"name": "clinical-status", "definition": definition, "type": param_type}
                        ],
                    }
                ],
            }
        ],
    }


def test_capability_statement_search_param_type_is_the_definitions(validator: Validator) -> None:
    # case capstmt, reference: "Type mismatch - SearchParameter
    # 'http://hl7.org/fhir/SearchParameter/AllergyIntolerance-clinical-status|4.0.1' type is token, but
    # type here is date" at CapabilityStatement.rest[0].resource[0].searchParam[0]
    errors = _errors(validator.validate(_capability("date")))
    assert [e for e, _ in errors] == ["CapabilityStatement.rest[0].resource[0].searchParam[0]"]
    assert "type is token, but type here is date" in errors[0][1]
    assert _errors(validator.validate(_capability("token"))) == []
    versioned = _capability("token", SP + "AllergyIntolerance-clinical-status|4.0.1")
    assert _errors(validator.validate(versioned)) == []


def test_capability_statement_with_an_unknown_definition_is_not_guessed_at(validator: Validator) -> None:
    unknown = _capability("date", "http://example.org/SearchParameter/nowhere")
    assert _errors(validator.validate(unknown)) == []


def _derived(**changes: Any) -> dict[str, Any]:
    sp = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/organization-name",
        "name": "OrganizationName",
        "derivedFrom": SP + "Organization-name",
        "status": "active",
        "description": "Organizations by name",
        "code": "name",
        "base": ["Organization"],
        "type": "string",
        "expression": "Organization.name | Organization.alias",
    }
    sp.update(changes)
    return sp


def test_derived_search_parameter_keeps_the_type(validator: Validator) -> None:
    # case sp-diff-type, reference: "The type string is different to the type
    # http://hl7.org/fhir/SearchParameter/Organization-name in the derivedFrom SearchParameter"
    assert _errors(validator.validate(_derived())) == []
    errors = _errors(validator.validate(_derived(type="token")))
    assert [e for e, _ in errors] == ["SearchParameter"]
    assert "type token is different to the type string" in errors[0][1]


def _composite(components: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/code-value-quantity",
        "name": "CodeValueQuantity",
        "status": "active",
        "description": "Observations by code and quantity value",
        "code": "code-value-quantity",
        "base": ["Observation"],
        "type": "composite",
        "expression": "Observation",
        "component": components,
    }


def test_composite_search_parameter_has_two_or_more_components(validator: Validator) -> None:
    # case sp-composite (a composite with one component), reference: "When the SearchParameter has a
    # type of 'composite', then the SearchParameter must define two or more components"
    code = {"definition": SP + "clinical-code", "expression": "code"}
    value = {"definition": SP + "Observation-value-quantity", "expression": "value.as(Quantity)"}
    assert _errors(validator.validate(_composite([code, value]))) == []
    errors = _errors(validator.validate(_composite([code])))
    assert [e for e, _ in errors] == ["SearchParameter"]
    assert "must define two or more components" in errors[0][1]


def test_derived_search_parameter_searches_only_its_parents_bases(validator: Validator) -> None:
    # case sp-diff-base, reference: "The resource type Patient is not listed as a base in the
    # SearchParameter this is derived from (http://hl7.org/fhir/SearchParameter/Organization-name)"
    errors = _errors(validator.validate(_derived(base=["Patient"])))
    assert [e for e, _ in errors] == ["SearchParameter"]
    assert "resource type Patient is not listed as a base" in errors[0][1]


def test_derived_from_a_parameter_on_resource_allows_any_base(validator: Validator) -> None:
    # Resource-id (base Resource) applies to every resource type
    derived = _derived(
        derivedFrom=SP + "Resource-id", base=["Patient"], type="token", expression="Patient.id"
    )
    assert _errors(validator.validate(derived)) == []


QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "url": "http://example.org/Questionnaire/heights",
    "version": "0.1.0",
    "status": "active",
    "item": [
        {
            "linkId": "group",
            "type": "group",
            "item": [
                {
                    "linkId": "height",
                    "type": "decimal",
                    "extension": [
                        {"url": "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces", "valueInteger": 2}
                    ],
                },
                {
                    "linkId": "length",
                    "type": "quantity",
                    "extension": [
                        {"url": "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces", "valueInteger": 2}
                    ],
                },
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def with_questionnaire(validator: Validator) -> Validator:
    return validator.with_resources([QUESTIONNAIRE])


def _response(
    height: Any = 1.66, length: Any = 1.66, link: str = "height", questionnaire: str | None = None
) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire or "http://example.org/Questionnaire/heights|0.1.0",
        "status": "completed",
        "item": [
            {
                "linkId": "group",
                "item": [
                    {"linkId": link, "answer": [{"valueDecimal": height}]},
                    {
                        "linkId": "length",
                        "answer": [
                            {
                                "valueQuantity": {
                                    "value": length,
                                    "system": "http://unitsofmeasure.org",
                                    "code": "m",
                                }
                            }
                        ],
                    },
                ],
            }
        ],
    }


def test_questionnaire_response_link_ids_exist_in_the_questionnaire(with_questionnaire: Validator) -> None:
    # case qr-vr, reference: "LinkId '1.1' not found in questionnaire" at QuestionnaireResponse
    assert _errors(with_questionnaire.validate(_response())) == []
    errors = _errors(with_questionnaire.validate(_response(link="1.1")))
    assert errors == [("QuestionnaireResponse.item[0].item[0]", "LinkId '1.1' not found in questionnaire")]
    misplaced = _errors(with_questionnaire.validate(_response(link="group")))
    assert [e for e, _ in misplaced] == ["QuestionnaireResponse.item[0].item[0]"]


def test_questionnaire_response_decimal_places_are_limited_by_the_item(with_questionnaire: Validator) -> None:
    # case decimal-precision-questionnaire, reference: "The value 1.666 has too many decimal places
    # (limit = 2)" on valueDecimal and on valueQuantity.value; 1.66 is valid
    errors = _errors(with_questionnaire.validate(_response(height=1.666, length=1.666)))
    assert [e for e, _ in errors] == [
        "QuestionnaireResponse.item[0].item[0].answer[0].value.ofType(decimal)",
        "QuestionnaireResponse.item[0].item[1].answer[0].value.ofType(Quantity)",
    ]
    assert all("too many decimal places (limit = 2)" in m for _, m in errors)
    assert _errors(with_questionnaire.validate(_response(height=2, length=0.5))) == []


def test_questionnaire_response_without_its_questionnaire_is_not_checked(
    validator: Validator, with_questionnaire: Validator
) -> None:
    # the base validator has no Questionnaire; another version of it is not this one
    assert _errors(validator.validate(_response(link="1.1"))) == []
    other = "http://example.org/Questionnaire/heights|9.9"
    assert _errors(with_questionnaire.validate(_response(link="1.1", questionnaire=other))) == []


MEASURE_URL = "http://example.org/Measure/cohort-of-one"


def _measure(scoring: str) -> dict[str, Any]:
    return {
        "resourceType": "Measure",
        "url": MEASURE_URL,
        "status": "active",
        "scoring": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-scoring", "code": scoring}]
        },
    }


def _report(**group: Any) -> dict[str, Any]:
    return {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": MEASURE_URL,
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
        "group": [{"population": [{"count": 3}], **group}],
    }


def test_cohort_measure_report_gives_each_groups_score(validator: Validator) -> None:
    # case measure-report-ihe, reference: "A measureScore is required when the Measure.scoring=cohort"
    # at MeasureReport.group[0]; its cohort twins (measure-report-cohort-summary, -ada, -cyd) carry a
    # measureScore and are valid.
    cohort = validator.with_resources([_measure("cohort")])
    errors = _errors(cohort.validate(_report()))
    assert errors == [
        ("MeasureReport.group[0]", "A measureScore is required when the Measure.scoring=cohort")
    ]
    assert _errors(cohort.validate(_report(measureScore={"value": 3}))) == []


def test_measure_report_of_another_scoring_or_an_unknown_measure_is_not_checked(validator: Validator) -> None:
    assert _errors(validator.with_resources([_measure("proportion")]).validate(_report())) == []
    assert _errors(validator.validate(_report())) == []


BUNDLED_ORG = "http://example.org/StructureDefinition/org-endpoint-bundled"


def _bundled_org_profile() -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": BUNDLED_ORG,
        "name": "OrgEndpointBundled",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Organization",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Organization",
        "derivation": "constraint",
        "differential": {
            "element": [
                {"id": "Organization", "path": "Organization"},
                {
                    "id": "Organization.endpoint",
                    "path": "Organization.endpoint",
                    "type": [
                        {
                            "code": "Reference",
                            "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Endpoint"],
                            "aggregation": ["bundled"],
                        }
                    ],
                },
            ]
        },
    }


def _collection(endpoint_ref: str) -> dict[str, Any]:
    base = "https://fhir.example.org/"
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": base + "Organization/o1",
                "resource": {
                    "resourceType": "Organization",
                    "id": "o1",
                    "meta": {"profile": [BUNDLED_ORG]},
                    "name": "Example Labs",
                    "endpoint": [{"reference": endpoint_ref}],
                },
            },
            {
                "fullUrl": base + "Endpoint/e1",
                "resource": {
                    "resourceType": "Endpoint",
                    "id": "e1",
                    "status": "active",
                    "connectionType": {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                        "code": "hl7-fhir-rest",
                    },
                    "payloadType": [{"text": "FHIR"}],
                    "address": "https://fhir.example.org/r4",
                },
            },
        ],
    }


def test_bundled_aggregation_needs_the_target_in_the_bundle(validator: Validator) -> None:
    # R4 resource-aggregation-mode, bundled: "The resource the reference points to will be found in the
    # same bundle as the resource that includes the reference." Case res-inv-example-bad#profile, reference:
    # "Bundled or contained reference not found within the bundle/resource Endpoint/examplelabsXX".
    profiled = validator.with_resources([_bundled_org_profile()])
    errors = _errors(profiled.validate_bundle(_collection("Endpoint/missing")))
    assert [m for _, m in errors] == [
        "Bundled or contained reference not found within the bundle/resource Endpoint/missing"
    ]
    assert _errors(profiled.validate_bundle(_collection("Endpoint/e1"))) == []
    # without the profile's aggregation, an unresolved reference in a collection is not an error (HAPI's
    # $validate agrees: corpus case reference:subject-literal)
    assert _errors(validator.validate_bundle(_collection("Endpoint/missing"))) == []

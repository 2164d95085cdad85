"""Modifier extensions go under ``modifierExtension``, others under ``extension`` (outside review).

R4 extensibility.html: "Modifier extensions SHALL NOT be used where a normal extension would do", and an
extension defined with ``isModifier: true`` carried in ``extension`` is one a reader may ignore. HAPI
answers such a resource with "... must not be used as an extension (it's a modifierExtension)".
"""

from __future__ import annotations

from typing import Any

from service.validation import Validator

COMPARATOR = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-grade-comparator"
DO_NOT_PERFORM = "http://hl7.org/fhir/StructureDefinition/request-doNotPerform"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"


def _complication(where: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "complication"},
        "component": [
            {
                "code": {"text": "Clavien-Dindo"},
                "valueCodeableConcept": {"text": "IIIa"},
                where: [{"url": COMPARATOR, "valueCode": "<"}],
            }
        ],
    }


def _messages(validator: Validator, resource: dict[str, Any]) -> list[str]:
    return [f"{i.severity} {i.expression}: {i.diagnostics}" for i in validator.validate(resource)]


def test_project_modifier_extension_under_extension_is_an_error(validator: Validator) -> None:
    found = _messages(validator, _complication("extension"))
    assert any(
        m.startswith("error Observation.component[0].extension[0]")
        and "must not be used as an extension (it's a modifierExtension)" in m
        for m in found
    ), found


def test_project_modifier_extension_under_modifier_extension_is_accepted(validator: Validator) -> None:
    found = _messages(validator, _complication("modifierExtension"))
    assert not any("modifierExtension" in m or "Unknown" in m for m in found), found
    assert not any(m.startswith("error") for m in found), found


def test_core_modifier_extension_under_extension_is_an_error(validator: Validator) -> None:
    order = {
        "resourceType": "NutritionOrder",
        "status": "active",
        "intent": "order",
        "patient": {"display": "x"},
        "dateTime": "2024-01-01",
        "extension": [{"url": DO_NOT_PERFORM, "valueBoolean": True}],
    }
    found = _messages(validator, order)
    assert any(
        m.startswith("error NutritionOrder.extension[0]") and "(it's a modifierExtension)" in m for m in found
    ), found
    order["modifierExtension"] = order.pop("extension")
    assert not any("(it's a modifierExtension)" in m for m in _messages(validator, order))


def test_plain_extension_under_modifier_extension_is_an_error(validator: Validator) -> None:
    patient = {
        "resourceType": "Patient",
        "modifierExtension": [{"url": BIRTH_PLACE, "valueAddress": {"city": "Y"}}],
    }
    found = _messages(validator, patient)
    assert any(
        m.startswith("error Patient.modifierExtension[0]") and "must not be used as a modifierExtension" in m
        for m in found
    ), found
    patient["extension"] = patient.pop("modifierExtension")
    assert not any(m.startswith("error") for m in _messages(validator, patient))

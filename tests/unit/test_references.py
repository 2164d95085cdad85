"""Every Reference of a resource, named by the element holding it."""

from __future__ import annotations

from service.references import references


def test_every_reference_with_its_element_and_nothing_else() -> None:
    procedure = {
        "resourceType": "Procedure",
        "subject": {"reference": "Patient/p", "display": "not a reference"},
        "focalDevice": [{"manipulated": {"reference": "Device/d"}}],
        "reasonReference": [{"reference": "Condition/c1"}, {"reference": "Condition/c2"}],
        "note": [{"text": "reference"}],
        "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:1"}}],
    }
    found = [(element, ref["reference"]) for element, ref in references(procedure)]
    assert found == [
        ("subject", "Patient/p"),
        ("manipulated", "Device/d"),
        ("reasonReference", "Condition/c1"),
        ("reasonReference", "Condition/c2"),
        ("valueReference", "urn:uuid:1"),
    ]


def test_the_reference_objects_are_the_resources_own() -> None:
    """Callers rewrite references in place (package examples)."""
    resource = {"subject": {"reference": "urn:uuid:1"}}
    for _, ref in references(resource):
        ref["reference"] = "Patient/p"
    assert resource == {"subject": {"reference": "Patient/p"}}

"""The CapabilityStatement: built from what the service really implements, nothing more."""

from __future__ import annotations

from typing import Any

from service import __version__


def capability_statement(base_url: str, *, auth_required: bool) -> dict[str, Any]:
    """Foundation: only `metadata` itself; later capabilities add their resources and operations here."""
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "IVC-LMS interoperability service. Case intake, mapping and registry access.",
        "security": {
            "cors": False,
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "description": (
                "Bearer JWT with SMART v2 system scopes required."
                if auth_required
                else "Authentication is DISABLED on this instance."
            ),
        },
        "resource": [],
        "interaction": [],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "ivclms", "version": __version__},
        "implementation": {"description": "IVC-LMS FHIR interoperability service", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }

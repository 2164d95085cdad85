"""The CapabilityStatement: built from what the service really implements, nothing more."""

from __future__ import annotations

from typing import Any

from service import __version__, search
from service.mapping.spec import spec

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
"""Bulk Data IG: the CapabilityStatement a Bulk Data server instantiates."""
SYSTEM_EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
PATIENT_EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
GROUP_EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
PATIENT_EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def _resources() -> list[dict[str, Any]]:
    """One entry per served type, from the same declarations the search engine runs on."""
    out = []
    for resource_type in search.READ_TYPES:
        profile = next((t.profile for t in spec().templates if t.resource_type == resource_type), None)
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": c} for c in ("read", "vread", "history-instance", "search-type")],
            "conditionalRead": "not-match",
            "versioning": "versioned",
            "readHistory": True,
            "searchParam": [
                {"name": p.name, "type": p.type, "documentation": p.documentation}
                for p in search.search_params()[resource_type]
            ],
            "searchInclude": [f"{resource_type}:{p}" for p in search.reference_params()[resource_type]],
            "searchRevInclude": sorted(
                f"{source}:{p}"
                for source, params in search.reference_params().items()
                for p in params
                if source != resource_type
            ),
        }
        if profile:
            entry["supportedProfile"] = sorted(
                {t.profile for t in spec().templates if t.resource_type == resource_type}
            )
        if resource_type == "Patient":
            entry["operation"] = [
                {"name": "everything", "definition": PATIENT_EVERYTHING},
                {"name": "export", "definition": PATIENT_EXPORT},
            ]
        out.append(entry)
    out.append(
        {
            "type": "Group",
            "documentation": (
                "Groups the service maintains: one per source system (id source-<uuid5 of the source "
                "system>) and one for the whole cohort (id ivclms-cohort); members are the Patients."
            ),
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": "_id", "type": "token", "documentation": "Logical id"}],
            "searchInclude": [],
            "operation": [{"name": "export", "definition": GROUP_EXPORT}],
        }
    )
    out.append(
        {
            "type": "AuditEvent",
            "interaction": [{"code": "search-type"}],
            "searchParam": [{"name": "date", "type": "date", "documentation": "Recorded at or after (ge)"}],
        }
    )
    return out


def capability_statement(base_url: str, *, auth_required: bool, cors: bool = False) -> dict[str, Any]:
    """What this instance serves: read side, intake of Bundles, audit; nothing it does not do."""
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "IVC-LMS interoperability service. Case intake, mapping and registry access.",
        "security": {
            "cors": cors,
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
        "resource": _resources(),
        "interaction": [
            {
                "code": "transaction",
                "documentation": "All or nothing: POST/PUT of a case's resources and GET/HEAD reads by "
                "id or version; an entry that would fail refuses the whole Bundle. No DELETE entries.",
            },
            {
                "code": "batch",
                "documentation": "Each patient's resources stand alone. Entries: POST/PUT of a case's "
                "resources, GET/HEAD reads by id or version, DELETE Patient/[id] (withdraws the case). "
                "Searches and operations as entries are answered 400 in their entry.",
            },
        ],
        "operation": [
            {
                "name": "export",
                "definition": SYSTEM_EXPORT,
                "documentation": (
                    "Bulk Data v2: _type (Provenance included), _since, _outputFormat, _typeFilter (search "
                    "parameters declared here), _elements, patient (POST, Patient- and Group-level); "
                    "includeAssociatedData is not supported (400 with Prefer: handling=strict, else a "
                    "warning in the manifest's error files)"
                ),
            }
        ],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": {"name": "ivclms", "version": __version__},
        "implementation": {"description": "IVC-LMS FHIR interoperability service", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }

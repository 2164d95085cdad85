"""``/openapi.json`` (OpenAPI 3.1, built with apispec from the marshmallow case schema) and ``/docs``.

The case schema's fields describe themselves through ``service.model.jsonschema`` (the same JSON
Schema published for EHR teams), so the API document and the schema file cannot disagree. A unit
test checks that every route of the application is described here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify, render_template
from marshmallow import fields

from service import __version__
from service.model import jsonschema
from service.model.schema import CaseSchema

bp = Blueprint(
    "openapi", __name__, template_folder=str(Path(__file__).resolve().parent.parent / "console" / "templates")
)

OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
JSON = "application/json"
FHIR = "application/fhir+json"


def _own_field(_converter: Any, field: fields.Field[Any], **_kwargs: Any) -> dict[str, Any]:
    if isinstance(field, (fields.Nested, fields.List)):
        return {}  # apispec makes the component references
    return jsonschema.field_schema(field, {})


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request (bad JSON, bad parameter)",
        401: "No valid bearer token",
        403: "The token lacks the scope",
        404: "Not found",
        406: "Asked for a format other than JSON (_format=xml, Accept: application/fhir+xml only)",
        409: "Conflicts with what is stored",
        412: "If-Match is not the current version",
        410: "Expired (the export's files are gone, or about to be)",
        413: "Body, or its cases or resources, over a configured limit (the issue names the setting)",
        415: "Wrong Content-Type",
        429: "Too many exports queued or running, or too many bytes kept, for this client; see Retry-After",
        422: "Breaks the case schema, a rule or a profile; nothing stored",
        503: "Database unavailable; retry after Retry-After",
    }
    return {str(s): {"description": reasons[s], "content": {FHIR: {"schema": OUTCOME}}} for s in statuses}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": required, "schema": schema}


REF = _param("id", "path", "Case id (uuid derived from source system + case id)", {"type": "string"}, True)
IDEMPOTENCY = _param(
    "Idempotency-Key", "header", "Retries with the same key get the first answer again", {"type": "string"}
)
CASE = {"$ref": "#/components/schemas/Case"}
TYPE = _param("resource_type", "path", "A served resource type", {"type": "string"}, True)
JOB = _param("job_id", "path", "Export job id", {"type": "string"}, True)
EXPORT: dict[str, Any] = {
    "summary": "Bulk Data export kick-off (Prefer: respond-async); 202 + Content-Location",
    "description": "Scope r on each exported type; the job holds only what the token may read (its SMART "
    "v2 restrictions and source systems) and belongs to the token's owner.",
    "parameters": [
        _param("_type", "query", "Resource types, comma-separated", {"type": "string"}),
        _param("_since", "query", "Only resources updated after this instant", {"type": "string"}),
        _param("_outputFormat", "query", "application/fhir+ndjson", {"type": "string"}),
        _param(
            "_typeFilter",
            "query",
            "[type]?[search parameters], comma-separated (ORed per type)",
            {"type": "string"},
        ),
        _param(
            "_elements", "query", "Root elements to keep ([type].[element] or [element])", {"type": "string"}
        ),
        _param(
            "Prefer",
            "header",
            "respond-async; handling=strict refuses what is not honoured",
            {"type": "string"},
            True,
        ),
    ],
    "responses": {"202": {"description": "Accepted; poll Content-Location"}, **_errors(400, 401, 403, 429)},
}
EXPORT_POST: dict[str, Any] = {
    **EXPORT,
    "summary": "Bulk Data export kick-off with a FHIR Parameters body (patient: Patient- and Group-level)",
    "requestBody": {"content": {"application/fhir+json": {"schema": {"type": "object"}}}},
}
GROUP = _param(
    "group_id",
    "path",
    "Group id (ivclms-cohort, or source-<uuid> of a source system)",
    {"type": "string"},
    True,
)
# What each read route needs and what of the data it returns (issue 12: one gate for what leaves).
CASES_LIST = (
    "Scopes: s on every case type (system/*.s); only cases of the token's source systems unless "
    "it has the registry role."
)
CASE_READ = (
    "Scopes: r on every case type (system/*.r); a case of a source system outside the token's "
    "(without the registry role) is 404."
)
FHIR_SEARCH = (
    "Scopes: s and r on the type (a _summary=count needs s); SMART v2 restrictions and the token's "
    "source systems filter the matches (exact totals); included resources the token may not "
    "read are left out, counted in a warning OperationOutcome entry."
)
FHIR_READ = "Scope r on the type; a resource outside the token's restriction or source systems is 404."
EVERYTHING = (
    "Scope Patient.r; other resources only as the token may read them (a warning entry counts "
    "those left out)."
)
AUDIT = (
    "Scopes AuditEvent.s and .r; the caller's own events unless it has the registry role. Also by POST "
    "/fhir/AuditEvent/_search (parameters in the URL and the form body)."
)
RID = _param("resource_id", "path", "Resource id", {"type": "string"}, True)
IF_NONE_MATCH = _param(
    "If-None-Match", "header", 'The ETag held (W/"3"): 304 without a body when current', {"type": "string"}
)
FORMAT = _param("_format", "query", "json (the only format served; xml is 406)", {"type": "string"})
SEARCH_COUNT = _param(
    "_count", "query", "Page size (0-500, default 50; 0: the total only, no entries)", {"type": "integer"}
)
PREFER = _param("Prefer", "header", "handling=strict: unknown parameters are 400", {"type": "string"})
BUNDLE = {"type": "object", "description": "FHIR R4 Bundle"}
FHIR_BUNDLE = {"content": {FHIR: {"schema": BUNDLE}}}
WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 503)


def _paths() -> dict[str, dict[str, Any]]:
    case_answer = {"content": {JSON: {"schema": CASE}, FHIR: {"schema": BUNDLE}}}
    return {
        "/cases": {
            "post": {
                "summary": "Store a case (201), or return the identical stored one (200)",
                "parameters": [IDEMPOTENCY],
                "requestBody": {"required": True, "content": {JSON: {"schema": CASE}}},
                "responses": {
                    "201": {"description": "Created; Location and ETag headers", **case_answer},
                    "200": {"description": "The same case was already stored", **case_answer},
                    **_errors(*WRITE_ERRORS, 409),
                },
            },
            "get": {
                "summary": "Cases, oldest update first, paged with a cursor",
                "description": CASES_LIST,
                "parameters": [
                    _param("_count", "query", "Page size (1-500, default 50)", {"type": "integer"}),
                    _param("since", "query", "Updated at or after this instant", {"type": "string"}),
                    _param("sync", "query", "Sync state of the newest version", {"type": "string"}),
                    _param("cursor", "query", "The `next` link's cursor", {"type": "string"}),
                ],
                "responses": {"200": {"description": "A page of cases"}, **_errors(400, 401, 403)},
            },
        },
        "/cases/{id}": {
            "get": {
                "summary": "The case JSON, or its FHIR Bundle with Accept: application/fhir+json",
                "description": CASE_READ,
                "parameters": [REF, _param("version", "query", "A past version", {"type": "integer"})],
                "responses": {
                    "200": {"description": "The case", **case_answer},
                    **_errors(400, 401, 403, 404),
                },
            },
            "put": {
                "summary": "A new version of the case",
                "parameters": [
                    REF,
                    IDEMPOTENCY,
                    _param("If-Match", "header", 'The ETag read (W/"3"); 412 when stale', {"type": "string"}),
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": CASE}}},
                "responses": {
                    "200": {"description": "Stored", **case_answer},
                    **_errors(*WRITE_ERRORS, 404, 412),
                },
            },
            "delete": {
                "summary": "Withdraw as entered-in-error (a new version; sent to the FHIR server marked so)",
                "parameters": [
                    REF,
                    _param("If-Match", "header", "The ETag read; 412 when stale", {"type": "string"}),
                ],
                "responses": {
                    "200": {"description": "Withdrawn", **case_answer},
                    **_errors(400, 401, 403, 404, 412),
                },
            },
        },
        "/cases/{id}/history": {
            "get": {
                "summary": "Every version of a case, newest first",
                "description": CASE_READ,
                "parameters": [REF],
                "responses": {"200": {"description": "Versions"}, **_errors(401, 403, 404)},
            }
        },
        "/cases/import": {
            "post": {
                "summary": "A CSV case series (one row per case); all rows or none",
                "parameters": [IDEMPOTENCY],
                "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}},
                "responses": {
                    "200": {"description": "Counts and the case of each row"},
                    **_errors(*WRITE_ERRORS),
                },
            }
        },
        "/fhir": {
            "post": {
                "summary": "A transaction, batch or collection Bundle from an EHR, stored as cases",
                "description": "Write scopes (c or u on every case type); a Bundle of GET/HEAD entries "
                "only needs the read scope of each entry's type.",
                "parameters": [
                    IDEMPOTENCY,
                    _param(
                        "source-system", "query", "Source system of plain R4 resources", {"type": "string"}
                    ),
                ],
                "requestBody": {"required": True, "content": {FHIR: {"schema": BUNDLE}}},
                "responses": {
                    "200": {
                        "description": "transaction-response / batch-response",
                        "content": {FHIR: {"schema": BUNDLE}},
                    },
                    **_errors(*WRITE_ERRORS),
                },
            }
        },
        "/fhir/{resource_type}": {
            "get": {
                "summary": "FHIR search (parameters: /fhir/metadata); Prefer: handling=strict",
                "description": FHIR_SEARCH,
                "parameters": [TYPE, SEARCH_COUNT, FORMAT, PREFER],
                "responses": {
                    "200": {"description": "searchset Bundle", **FHIR_BUNDLE},
                    **_errors(400, 401, 403, 404, 406),
                },
            }
        },
        "/fhir/{resource_type}/_search": {
            "post": {
                "summary": "FHIR search by POST: parameters in the URL and the form body (next links: GET)",
                "description": FHIR_SEARCH,
                "parameters": [TYPE, SEARCH_COUNT, FORMAT, PREFER],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                        }
                    },
                },
                "responses": {
                    "200": {"description": "searchset Bundle", **FHIR_BUNDLE},
                    **_errors(400, 401, 403, 404, 406, 415),
                },
            }
        },
        "/fhir/{resource_type}/{resource_id}": {
            "get": {
                "summary": "FHIR read (If-None-Match: conditional read)",
                "description": FHIR_READ,
                "parameters": [TYPE, RID, IF_NONE_MATCH],
                "responses": {
                    "200": {"description": "The resource"},
                    "304": {"description": "If-None-Match named the current version"},
                    "410": {"description": "Removed"},
                    **_errors(401, 403, 404),
                },
            }
        },
        "/fhir/{resource_type}/{resource_id}/_history": {
            "get": {
                "summary": "FHIR instance history",
                "description": FHIR_READ,
                "parameters": [TYPE, RID],
                "responses": {
                    "200": {"description": "history Bundle", **FHIR_BUNDLE},
                    **_errors(401, 403, 404),
                },
            }
        },
        "/fhir/{resource_type}/{resource_id}/_history/{version}": {
            "get": {
                "summary": "FHIR vread",
                "description": FHIR_READ,
                "parameters": [
                    TYPE,
                    RID,
                    _param("version", "path", "versionId", {"type": "integer"}, True),
                    IF_NONE_MATCH,
                ],
                "responses": {
                    "200": {"description": "That version"},
                    "304": {"description": "If-None-Match named this version"},
                    **_errors(401, 403, 404),
                },
            }
        },
        "/fhir/Patient/{patient_id}/$everything": {
            "get": {
                "summary": "The patient's case: every resource",
                "description": EVERYTHING,
                "parameters": [
                    _param("patient_id", "path", "Patient id", {"type": "string"}, True),
                    _param("_since", "query", "Only resources updated at or after", {"type": "string"}),
                    _param("_count", "query", "Page size (1-500); next links page on", {"type": "integer"}),
                    _param("_type", "query", "Resource types, comma-separated", {"type": "string"}),
                    _param(
                        "start",
                        "query",
                        "Care dates on or after (YYYY, YYYY-MM, YYYY-MM-DD); undated resources stay",
                        {"type": "string"},
                    ),
                    _param(
                        "end",
                        "query",
                        "Care dates on or before (YYYY, YYYY-MM, YYYY-MM-DD); undated resources stay",
                        {"type": "string"},
                    ),
                    _param("_cursor", "query", "The next link's page", {"type": "string"}),
                    PREFER,
                ],
                "responses": {
                    "200": {"description": "searchset Bundle", **FHIR_BUNDLE},
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/fhir/$export": {"get": EXPORT, "post": EXPORT_POST},
        "/fhir/Patient/$export": {
            "get": {**EXPORT, "summary": "Bulk Data export of the patients' resources"},
            "post": EXPORT_POST,
        },
        "/fhir/Group/{group_id}/$export": {
            "get": {
                **EXPORT,
                "summary": "Bulk Data export of a Group's patients",
                "parameters": [GROUP, *EXPORT["parameters"]],
                "responses": {**EXPORT["responses"], **_errors(404)},
            },
            "post": {
                **EXPORT_POST,
                "parameters": [GROUP, *EXPORT["parameters"]],
                "responses": {**EXPORT_POST["responses"], **_errors(404)},
            },
        },
        "/fhir/Group/{group_id}": {
            "get": {
                "summary": "A Group the service maintains (one per source system, one for the cohort)",
                "parameters": [GROUP],
                "responses": {"200": {"description": "Group (r on Group)"}, **_errors(401, 403, 404)},
            }
        },
        "/fhir/Group": {
            "get": {
                "summary": "The Groups the caller may read (a source-bound client: its sources' Groups)",
                "parameters": [
                    _param("_id", "query", "Group ids", {"type": "string"}),
                    _param("_count", "query", "Page size, 0-500 (0: the total alone)", {"type": "integer"}),
                    _param("_offset", "query", "Where a next page starts", {"type": "integer"}),
                ],
                "responses": {
                    "200": {"description": "searchset Bundle", **FHIR_BUNDLE},
                    **_errors(400, 401, 403),
                },
            }
        },
        "/fhir/bulkstatus/{job_id}": {
            "get": {
                "summary": "Export status: 202 + X-Progress while running, 200 + manifest when done",
                "parameters": [JOB],
                "responses": {
                    "200": {"description": "Manifest"},
                    "202": {"description": "In progress"},
                    **_errors(401, 404, 410),
                },
            },
            "delete": {
                "summary": "Cancel an export, or delete a finished one's files",
                "parameters": [JOB],
                "responses": {"202": {"description": "Cancelled"}, **_errors(401, 404)},
            },
        },
        "/fhir/bulkfiles/{job_id}/{name}": {
            "get": {
                "summary": "One NDJSON output file",
                "parameters": [
                    JOB,
                    _param("name", "path", "File name from the manifest", {"type": "string"}, True),
                ],
                "responses": {
                    "200": {"description": "application/fhir+ndjson"},
                    **_errors(401, 403, 404, 410),
                },
            }
        },
        "/fhir/AuditEvent": {
            "get": {
                "summary": "The audit trail as FHIR AuditEvents",
                "description": AUDIT,
                "parameters": [
                    _param("date", "query", "Recorded at or after (ge) this instant", {"type": "string"}),
                    _param("_count", "query", "Page size (0-500; 0: the total only)", {"type": "integer"}),
                    _param("_summary", "query", "count: the total only", {"type": "string"}),
                ],
                "responses": {"200": {"description": "searchset Bundle"}, **_errors(400, 401, 403)},
            }
        },
        "/fhir/metadata": {
            "get": {
                "summary": "CapabilityStatement",
                "security": [],
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "OK"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: database, storage (not full) and FHIR server",
                "security": [],
                "responses": {
                    "200": {"description": "Ready"},
                    "503": {"description": "Not ready, with reasons"},
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OK"}}}
        },
        "/docs": {
            "get": {"summary": "Human docs", "security": [], "responses": {"200": {"description": "HTML"}}}
        },
    }


EXTRA_PATHS: dict[str, dict[str, Any]] = {}
"""Paths other blueprints add (sync, validation) with ``describe``."""


def describe(path: str, operations: dict[str, Any]) -> None:
    EXTRA_PATHS.setdefault(path, {}).update(operations)


@cache
def openapi() -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="IVC-LMS FHIR interoperability service",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": "Case intake, storage, sync to a FHIR server and registry pulls for IVC-LMS."},
    )
    plugin.converter.add_attribute_function(_own_field)  # type: ignore[union-attr]
    spec.components.schema("Case", schema=CaseSchema)
    spec.components.schema(
        "OperationOutcome",
        {"type": "object", "description": "FHIR R4 OperationOutcome", "required": ["resourceType", "issue"]},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.options["security"] = [{"bearer": []}]
    for path, operations in {**_paths(), **EXTRA_PATHS}.items():
        spec.path(path=path, operations=_with_input_errors(operations))
    return spec.to_dict()


def _with_input_errors(operations: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a query parameter may answer 400 (a control character in any
    parameter, ``service.api.http_edges``), and every one with a path parameter 404."""
    out: dict[str, Any] = {}
    for method, op in operations.items():
        where = {p.get("in") for p in op.get("parameters", []) if isinstance(p, dict)}
        extra = (["400"] if "query" in where else []) + (["404"] if "path" in where else [])
        responses = dict(op.get("responses", {}))
        for status in extra:
            responses.setdefault(status, _errors(int(status))[status])
        out[method] = {**op, "responses": responses}
    return out


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi())


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI on ``/openapi.json``, every asset served by us (``/assets/swagger-ui/``): works offline
    and under the pages' CSP (``script-src 'self'``). Without JavaScript, a table of the endpoints."""
    endpoints = [
        (method.upper(), path, op.get("summary", ""))
        for path, operations in openapi()["paths"].items()
        for method, op in operations.items()
    ]
    page = render_template("docs.html", endpoints=endpoints)
    return Response(page, content_type="text/html; charset=utf-8")

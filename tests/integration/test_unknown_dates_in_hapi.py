"""A case with unknown dates of diagnosis, surgery and last contact, in the real HAPI FHIR server (issue 15).

The primitive carries no value and the data-absent-reason extension (R4 extension-data-absent-reason:
"Provides a reason why the expected value or elements in the element that is extended are missing");
R4 json.html lets a primitive have "only extensions" with its value absent. Every resource of the
bundle must pass HAPI's ``$validate`` against its profile exactly as the examples do, and the stored
resources, read back from HAPI, must give the same case (unknown stays unknown).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from tests.integration.test_profiles_in_hapi import _assert_conform, _issues, report  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ivclms-001-segment-ii-graft.json"
NOW = "2026-01-01T00:00:00Z"
DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def _undated(tag: str) -> dict[str, Any]:
    case = json.loads(EXAMPLE.read_text())
    case["case_id"] = tag
    case["diagnosis"]["date"] = "unknown"
    for surgery in case["surgery"]:
        surgery["date"] = "unknown"
    case["outcome"]["last_contact"] = "unknown"
    case["patient"]["age_at_diagnosis"] = 52
    # a recurrence whose time the source does not give ("Recurrence occurred in all patients", J Korean
    # Surg Soc 2012): the follow-up's date is unknown too (fudate15)
    for fu in case["follow_up"]:
        fu.update({"date": "unknown", "months_after_surgery": None})
        fu.update({"disease_status": "distant_metastasis", "sites": ["lung"]})
    return validate_case(case)


def test_a_case_with_unknown_dates_conforms_to_the_profiles(package_loaded, hapi, report, tag):  # noqa: F811
    bundle = case_to_bundle(_undated(tag), now=NOW)
    resources = [e["resource"] for e in bundle["entry"]]
    absent = [r for r in resources if any(k.startswith("_") for k in r)]
    assert len(absent) >= 5, (
        "the diagnosis, the operation, the vital status, the disease status and the graft patency "
        "carry the extension"
    )
    assert any(r["_effectiveDateTime"] for r in absent if "ivclms-disease-status" in r["meta"]["profile"][0])
    _assert_conform(hapi, package_loaded, report, resources)


def test_hapi_refuses_a_data_absent_reason_code_outside_its_value_set(package_loaded, hapi, tag):
    """The check is real: the extension's valueCode is bound (required) to the data-absent-reason
    value set, so a made-up code is an error (the oracle is HAPI's, not ours)."""
    bundle = case_to_bundle(_undated(tag), now=NOW)
    condition = copy.deepcopy(
        next(e["resource"] for e in bundle["entry"] if "_onsetDateTime" in e["resource"])
    )
    condition["_onsetDateTime"]["extension"][0]["valueCode"] = "not-a-reason"
    errors = "\n".join(_issues(hapi.validate(condition, profile=condition["meta"]["profile"][0]), "error"))
    assert "not-a-reason" in errors


def test_hapi_stores_the_unknown_dates_as_sent(package_loaded, hapi, tag):
    """HAPI keeps each primitive's data-absent-reason extension and invents no value; the case read
    from those date elements is the case sent (the mapping's own round trip: tests/unit/model/
    test_unknown_dates.py)."""
    case = _undated(tag)
    bundle = case_to_bundle(case, now=NOW)
    answer = hapi.transaction(copy.deepcopy(bundle), idempotent=True)
    assert all(e["response"]["status"][:3] in ("200", "201") for e in answer["entry"]), answer["entry"]
    checked = 0
    entries = []
    for sent, got in zip(bundle["entry"], answer["entry"], strict=True):
        resource = dict(sent["resource"])
        absent = [key for key in resource if key.startswith("_")]
        if absent:
            resource_type, rid = got["response"]["location"].split("/")[:2]
            stored = hapi.read(resource_type, rid)
            for key in absent:
                assert stored[key] == {"extension": [{"url": DAR, "valueCode": "unknown"}]}, key
                assert key[1:] not in stored
                resource[key] = stored[key]
                checked += 1
        entries.append({**sent, "resource": resource})
    # diagnosis, operation, its IVC management and graft procedure(s), vital status, and the
    # follow-up's disease status and graft patency
    assert checked >= 7
    assert bundle_to_case({**bundle, "entry": entries}) == case

"""Partial dates and intervals survive case -> FHIR Bundle -> case (issue 15).

FHIR R4 datatypes.html, date and dateTime: "A date, or partial date (e.g. just year or year + month)
as used in human communication" -- so the case's ``2019`` and ``2019-06`` are written as they are.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from tests.unit.mapping.test_round_trip import covered

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def partial_case() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())
    data = copy.deepcopy(data)
    data["patient"]["birth_date"] = "1968"
    data["patient"]["age_at_diagnosis"] = 52
    data["diagnosis"]["date"] = "2021-02"
    data["surgery"][0]["date"] = "2021-04"
    data["follow_up"][0]["date"] = "2022"
    data["follow_up"][0]["months_after_surgery"] = 12
    data["outcome"]["last_contact"] = None
    data["outcome"]["last_contact_months_after_surgery"] = 36
    return data


def test_partial_dates_and_intervals_round_trip():
    case = validate_case(partial_case(), now=NOW)
    bundle = case_to_bundle(case, now="2026-12-02T00:00:00Z")
    text = json.dumps(bundle)
    assert '"performedDateTime": "2021-04"' in text and '"birthDate": "1968"' in text
    assert covered(bundle_to_case(json.loads(text))) == covered(case)


def test_the_interval_is_a_quantity_in_months():
    case = validate_case(partial_case(), now=NOW)
    bundle = case_to_bundle(case, now="2026-12-02T00:00:00Z")
    quantities = [
        ext["valueQuantity"]
        for entry in bundle["entry"]
        for ext in entry["resource"].get("extension", [])
        if ext["url"].endswith("ivclms-last-contact-months-after-surgery")
    ]
    assert quantities == [{"value": 36, "unit": "mo", "system": "http://unitsofmeasure.org", "code": "mo"}]

"""Incomplete records through the API: a literature-style case is stored and read back as sent; bad
unknowns, bounds and added elements are a 422 OperationOutcome naming the element (never a 500)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

LITERATURE = sorted((Path(__file__).resolve().parents[3] / "examples" / "literature").glob("ivclms-*.json"))


def _case() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LITERATURE[0].read_text())
    return data


def test_a_literature_case_with_unknowns_and_ranges_is_stored_and_read_back(api):
    case = _case()
    resp = api.post(case)
    assert resp.status_code == 201
    got = api.get(resp.headers["Location"]).get_json()
    assert got["diagnosis"]["ivc_segment_to"] == "unknown"
    assert got["diagnosis"]["luminal_occlusion_percent"] == {"low": 90, "high": 95}
    assert got["surgery"][0]["ivc_management"]["graft_material"] == "unknown"


@pytest.mark.parametrize(
    ("path", "value", "expression"),
    [
        (
            ("diagnosis", "luminal_occlusion_percent"),
            {"low": 95, "high": 90},
            "diagnosis.luminal_occlusion_percent",
        ),
        (
            ("pathology", "closest_margin_mm"),
            {"comparator": "about", "value": 1},
            "pathology.closest_margin_mm",
        ),
        (("diagnosis", "basis"), "not-known", "diagnosis.basis"),
    ],
)
def test_bad_incomplete_values_are_422_naming_the_element(api, path, value, expression):
    case = _case()
    case[path[0]][path[1]] = value
    resp = api.post(case)
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert expression in [e for i in body["issue"] for e in i.get("expression", [])]

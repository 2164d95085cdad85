"""Patient.deceased[x] from the outcome (issue 15, brief item 4).

FHIR R4 Patient.deceased[x] (boolean | dateTime): "Indicates if the individual is deceased or not". A
patient recorded dead with no date of death is ``deceasedBoolean: true``; a death date is
``deceasedDateTime`` at the precision recorded (R4 dateTime allows ``YYYY`` and ``YYYY-MM``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-01-01T00:00:00Z"
DEAD = ROOT / "examples" / "ivclms-003-segment-i-ii-dacron-left-nephrectomy.json"
ALIVE = ROOT / "examples" / "ivclms-001-segment-ii-graft.json"


def _patient(case: dict[str, Any]) -> dict[str, Any]:
    bundle = case_to_bundle(case, now=NOW)
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    return found


def _deceased(patient: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in patient.items() if k.startswith("deceased")}


def _dead(death_date: str | None) -> dict[str, Any]:
    data = json.loads(DEAD.read_text())
    data["outcome"]["death_date"] = death_date
    return validate_case(data)


def test_dead_without_a_date_is_deceased_boolean_true():
    assert _deceased(_patient(_dead(None))) == {"deceasedBoolean": True}


def test_dead_without_a_date_round_trips():
    case = _dead(None)
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_a_death_date_at_year_precision_is_deceased_date_time_2019():
    case = _dead("2021")
    assert _deceased(_patient(case)) == {"deceasedDateTime": "2021"}
    bundle = json.loads(json.dumps(case_to_bundle(case, now=NOW)))
    assert bundle_to_case(bundle) == case


def test_a_full_death_date_is_deceased_date_time_only():
    assert _deceased(_patient(_dead("2021-06-18"))) == {"deceasedDateTime": "2021-06-18"}


def test_alive_has_no_deceased():
    assert _deceased(_patient(validate_case(json.loads(ALIVE.read_text())))) == {}

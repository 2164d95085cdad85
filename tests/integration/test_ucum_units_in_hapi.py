"""Every UCUM unit code the mapping writes is a valid UCUM code, by HAPI's UCUM service.

Rule of the house: a UCUM code is used only when verified. ``shared/terminology.md`` lists some of the
units (mm, cm, cGy, mL/min/{1.73_m2}, mg/dL, g/dL, %); the others the mapping writes (``mo``, ``a``, ``d``,
``min``, ``kg``, ``mL``, ``Gy``, ``U/L``, ``mg/m2``, ``mg``, ``[iU]``, ...) are checked here against an
oracle we did not write: HAPI FHIR's validator parses each code with the UCUM essence it ships
(``Quantity.system = http://unitsofmeasure.org``) and reports "Error processing unit" for a code that is
not UCUM. The negative twin proves the oracle answers.

The codes are read from the data, not listed here: ``quantity(<code>)`` in ``mappings/case-fhir.yaml``,
and the ``unit:`` / ``ucum:`` of the tables in ``mappings/codes.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).parents[2]
UCUM = "http://unitsofmeasure.org"


def _mapping_units() -> set[str]:
    lines = (ROOT / "mappings/case-fhir.yaml").read_text().splitlines()
    text = "\n".join(line.split("#", 1)[0] for line in lines)  # not the comments' examples
    return set(re.findall(r"quantity\(([^)@]+)\)", text))


def _table_units() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("unit", "ucum") and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((ROOT / "mappings/codes.yaml").read_text()))
    return found


UNITS = sorted(_mapping_units() | _table_units())


def _unit_errors(hapi_url: str, code: str) -> list[str]:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "a measurement"},
        "valueQuantity": {"value": 1, "unit": code, "system": UCUM, "code": code},
    }
    response = requests.post(
        f"{hapi_url}/Observation/$validate",
        json=observation,
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=60,
    )
    outcome = response.json()
    return [
        str(i.get("diagnostics", ""))
        for i in outcome.get("issue", [])
        if i.get("severity") in ("error", "fatal")
    ]


def test_the_units_are_read_from_the_data() -> None:
    # the ones the mapping is known to write; if the regexes broke, this set would shrink
    assert {"cm", "mm", "mo", "a", "d", "min", "mL", "Gy", "kg", "%", "mg/dL", "[iU]"} <= set(UNITS)


@pytest.mark.parametrize("code", UNITS)
def test_unit_is_valid_ucum_for_hapi(hapi_url: str, code: str) -> None:
    assert _unit_errors(hapi_url, code) == []


def test_hapi_rejects_a_code_that_is_not_ucum(hapi_url: str) -> None:
    errors = _unit_errors(hapi_url, "months")
    assert any("months" in e for e in errors), errors

"""Value set membership from the loaded definitions (base R4 and profiles/)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_base_value_set_of_a_whole_code_system(validator):
    expansion = validator.terminology.expansion("http://hl7.org/fhir/ValueSet/observation-status|4.0.1")
    assert expansion.contains("http://hl7.org/fhir/observation-status", "final") is True
    assert expansion.contains(None, "done") is False


def test_package_value_set_has_project_and_enumerated_standard_codes(validator):
    vs = json.loads((ROOT / "profiles" / "ValueSet-ivclms-lab-test-vs.json").read_text())
    expansion = validator.terminology.expansion(vs["url"])
    for include in vs["compose"]["include"]:
        for concept in include.get("concept", []):
            assert expansion.contains(include["system"], concept["code"]) is True
    assert expansion.contains("http://loinc.org", "1-8") is False


def test_a_whole_external_system_makes_membership_unknown(validator):
    # base R4: ucum-units includes all of UCUM, which cannot be enumerated here
    expansion = validator.terminology.expansion("http://hl7.org/fhir/ValueSet/ucum-units")
    assert expansion.contains("http://unitsofmeasure.org", "mg") is None

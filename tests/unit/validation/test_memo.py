"""The memo of clean complex values (``Validator._clean``) changes no issue: every corpus case and
mapped example gives the same issues, in the same order, with the memo off, with it filling, and with
it warm from every other case -- and the checks that read beyond a value still run on a memo hit."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.errors import Issue
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.validation import Validator
from tests.contract.corpus import corpus

SYSTEM = uuid.UUID("4b1e0a57-0f5c-4a47-9d4e-6f2a3c1b7d03")
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))


def _inputs() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, resource): the corpus (resources, mutations, case Bundles) and the mapped examples."""
    found = [(c.name, c.kind, c.resource) for c in corpus()]
    for path in EXAMPLES:
        case = validate_case(json.loads(path.read_text()))
        found.append((path.name, "bundle", case_to_bundle(case, now="2026-01-01T00:00:00Z")))
    return found


def _run(validator: Validator, kind: str, resource: dict[str, Any]) -> list[Issue]:
    return validator.validate_bundle(resource) if kind == "bundle" else validator.validate(resource)


def test_same_issues_with_and_without_the_memo():
    inputs = _inputs()
    plain = Validator.load()
    plain.memo = False
    memo = Validator.load()
    expected = [_run(plain, kind, resource) for _, kind, resource in inputs]
    assert not plain._clean
    filling = [_run(memo, kind, resource) for _, kind, resource in inputs]
    assert memo._clean, "the memo was never used: this comparison would prove nothing"
    warm = [_run(memo, kind, resource) for _, kind, resource in reversed(inputs)][::-1]
    for (name, _, _), want, first, second in zip(inputs, expected, filling, warm, strict=True):
        assert first == want, name
        assert second == want, name
    assert any(expected), "the inputs include broken resources"


def _observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": subject},
    }


def _collection(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:4b1e0a57-0f5c-4a47-9d4e-6f2a3c1b7d01", "resource": _observation(
                "urn:uuid:4b1e0a57-0f5c-4a47-9d4e-6f2a3c1b7d02")},
            {"fullUrl": "urn:uuid:4b1e0a57-0f5c-4a47-9d4e-6f2a3c1b7d02", "resource": target},
        ],
    }  # fmt: skip


def _errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def test_a_reference_found_clean_is_still_resolved_in_each_bundle():
    validator = Validator.load()
    assert _errors(validator.validate_bundle(_collection({"resourceType": "Patient"}))) == []
    # the same Reference value now points at a Medication: R4 Observation.subject allows
    # Patient | Group | Device | Location only
    errors = _errors(validator.validate_bundle(_collection({"resourceType": "Medication"})))
    assert [e.expression for e in errors] == ["Bundle.entry[0].resource.subject"]
    assert "Invalid Resource target type" in errors[0].diagnostics


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ((({"system": "http://loinc.org", "code": "8310-5"}),), "a tuple is not a JSON array"),
        ([{"system": SYSTEM, "code": "8310-5"}], "a UUID object is not a JSON string"),
    ],
)
def test_a_value_the_memo_holds_does_not_stand_for_one_json_would_merge_with_it(broken, why):
    validator = Validator.load()
    clean = _observation("Patient/p1")
    assert _errors(validator.validate(clean)) == []
    clean["code"] = {"coding": [{"system": str(SYSTEM), "code": "8310-5"}]}
    assert _errors(validator.validate(clean)) == []
    changed = _observation("Patient/p1")
    changed["code"] = {"coding": broken}
    assert _errors(validator.validate(changed)), why

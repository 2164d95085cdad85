"""Invariants decided by an absent name (``validator._absent_plan``) give fhirpathpy's verdict: every
planned constraint of base R4 and the package, on a value its name is absent from, is compared with
fhirpathpy itself; the whole validator gives the same issues with the decision off and on; and the
forms whose precedence does not let an absent name decide are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import Issue
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.validation import Validator
from service.validation.validator import _absent_plan, _decided
from tests.contract.corpus import corpus

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))


def _planned(validator: Validator) -> list[tuple[str, str, str]]:
    """(element path, key, expression) of every constraint in the loaded snapshots with a plan."""
    found: dict[tuple[str, str], str] = {}
    sources = [*validator.snapshots.values()]
    for sd in validator.defs.structures.values():
        if isinstance(sd.get("snapshot"), dict):
            sources.append(sd["snapshot"]["element"])
    for elements in sources:
        for element in elements:
            for c in element.get("constraint", []):
                expression = c.get("expression")
                if isinstance(expression, str) and _absent_plan(expression) is not None:
                    found.setdefault((expression, element["path"]), c["key"])
    return [(path, key, expression) for (expression, path), key in sorted(found.items())]


def test_every_decided_invariant_agrees_with_fhirpathpy(validator: Validator) -> None:
    planned = _planned(validator)
    keys = {key for _, key, _ in planned}
    # the base R4 forms the mapped Bundles meet most (observation.html, datatypes.html, dom-6)
    assert {"obs-6", "obs-7", "dom-6", "qty-3", "tim-4"} <= keys, keys
    # a value with one unrelated property: every planned name is absent from it
    node: dict[str, Any] = {"id": "a"}
    compared = 0
    for path, key, expression in planned:
        plan = _absent_plan(expression)
        assert plan is not None
        decided = _decided(plan, node)
        if decided is None:
            continue  # a name that starts "id"
        want = validator.invariants._evaluate(expression, node, path, node, node)
        if want is None:
            continue  # fhirpathpy cannot evaluate it: the validator does not decide it either
        assert decided is want, (path, key, expression)
        compared += 1
    assert compared > 50, compared


@pytest.mark.parametrize(
    "expression",
    [
        # R4 FHIRPath: "implies" binds looser than "or", and "xor" alike (left to right)
        "a.empty() or b implies c",
        "a.empty() or b xor c",
        "a.exists() implies b implies c",
        "(a.empty() or b) and c",
        "x and z.empty()",
        "x or z.count().empty()",
        "x or (y or z.empty())",
        "x or z.where(a = ')').empty()",
        "x or z.where(a).empty() = false",
        "true.empty() or b",
        "extension.exists() != value.exists()",
    ],
)
def test_forms_an_absent_name_does_not_decide_are_refused(expression: str) -> None:
    assert _absent_plan(expression) is None


def test_the_plans_of_the_observation_invariants() -> None:
    obs7 = "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"
    assert _absent_plan(obs7) == (("value", True), ("component", True))
    assert _absent_plan("text.`div`.exists()") == (("text", False),)
    plan = _absent_plan("dataAbsentReason.empty() or value.empty()")
    assert plan is not None
    # a choice property reaches ``value``: not absent, not decided
    assert _decided(plan, {"valueQuantity": {}, "dataAbsentReason": {}}) is None
    assert _decided(plan, {"_valueString": {}}) is True  # dataAbsentReason is absent


def _inputs() -> list[tuple[str, str, dict[str, Any]]]:
    found = [(c.name, c.kind, c.resource) for c in corpus()]
    for path in EXAMPLES:
        case = validate_case(json.loads(path.read_text()))
        found.append((path.name, "bundle", case_to_bundle(case, now="2026-01-01T00:00:00Z")))
    return found


def _run(validator: Validator, kind: str, resource: dict[str, Any]) -> list[Issue]:
    return validator.validate_bundle(resource) if kind == "bundle" else validator.validate(resource)


def test_same_issues_with_and_without_deciding() -> None:
    inputs = _inputs()
    plain = Validator.load()
    plain.decide = False
    decided = Validator.load()
    for name, kind, resource in inputs:
        assert _run(decided, kind, resource) == _run(plain, kind, resource), name

"""The literature-style examples (examples/literature/): unknowns, bounds, ranges and the elements
added, each loading to itself, validating against the project profiles, round-tripping through FHIR
and through the CSV layout.

They live in their own folder because the nine-case series (examples/ivclms-0*.json) is the fixture
whose published-style figures the registry tests pin; these cases are checked here instead, with the
same checks the series gets (tests/unit/mapping/test_round_trip.py, test_package_examples.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import read_csv, write_csv
from service.validation.gate import errors
from service.validation.validator import Validator

ROOT = Path(__file__).resolve().parents[2]
LITERATURE = sorted((ROOT / "examples" / "literature").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def test_at_least_three_literature_examples():
    assert len(LITERATURE) >= 3


@pytest.mark.parametrize("path", LITERATURE, ids=[p.stem for p in LITERATURE])
def test_literature_example_loads_to_itself_and_round_trips(path: Path):
    raw = _load(path)
    case = validate_case(raw)
    assert case == raw
    assert bundle_to_case(json.loads(json.dumps(case_to_bundle(case, now=NOW)))) == case


@pytest.mark.parametrize("path", LITERATURE, ids=[p.stem for p in LITERATURE])
def test_literature_example_conforms_to_the_profiles(path: Path, validator: Validator):
    bundle = case_to_bundle(validate_case(_load(path)), now=NOW)
    assert errors(validator.validate_bundle(bundle)) == []


def test_literature_examples_round_trip_through_csv():
    cases = [validate_case(_load(p)) for p in LITERATURE]
    assert [case for _line, case in read_csv(write_csv(cases))] == cases


def _walk(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(x for v in node.values() for x in _walk(v))]
    if isinstance(node, list):
        return [x for v in node for x in _walk(v)]
    return [node]


def test_the_examples_hold_unknowns_bounds_ranges_and_the_added_elements():
    values = [x for p in LITERATURE for x in _walk(_load(p))]
    assert "unknown" in values and "not_given" in values
    assert any(isinstance(v, dict) and "comparator" in v for v in values)
    assert any(isinstance(v, dict) and set(v) == {"low", "high"} for v in values)
    cases = [_load(p) for p in LITERATURE]
    assert any(c["patient"]["performance_status"] for c in cases)
    assert any(c["presentation"] and c["presentation"]["weight_loss"] for c in cases)
    assert any(c["pathology"] and c["pathology"]["histologic_subtype"] for c in cases)
    assert any(t["start_postoperative_day"] is not None for c in cases for t in c["therapies"])

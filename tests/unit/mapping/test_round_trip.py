"""Case -> Bundle -> case is lossless, for the examples and for generated cases."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.mapping.spec import case_set, case_tokens, spec
from service.model import validate_case
from tests.strategies import valid_cases

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"


def covered(case: dict[str, Any]) -> dict[str, Any]:
    """The case without the paths listed in ``not_yet_mapped`` (``[*]`` for every list item)."""
    out = copy.deepcopy(case)
    for path in spec().not_yet_mapped:
        _blank(out, case_tokens(path))
    return out


def _blank(node: Any, tokens: list[str | int]) -> None:
    head, *rest = tokens
    if head == "*":
        for item in node if isinstance(node, list) else []:
            _blank(item, rest)
    elif not rest:
        if isinstance(node, dict) and head in node:
            case_set(node, [head], None)
    elif isinstance(node, dict | list):
        child = node.get(head) if isinstance(node, dict) else None
        if child is not None:
            _blank(child, rest)


def test_all_examples_are_found():
    assert len(EXAMPLES) == 9


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_round_trip(path: Path):
    case = validate_case(json.loads(path.read_text()))
    assert covered(bundle_to_case(case_to_bundle(case, now=NOW))) == covered(case)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cases())
def test_generated_cases_round_trip(case: dict[str, Any]):
    case = validate_case(case)
    bundle = case_to_bundle(case, now=NOW)
    assert covered(bundle_to_case(json.loads(json.dumps(bundle)))) == covered(case)


def test_nothing_is_left_unmapped():
    assert spec().not_yet_mapped == ()

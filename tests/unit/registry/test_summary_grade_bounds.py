"""Major complications when a Clavien-Dindo grade is a bound (issue 15, brief: "a `< IIIa` is 'not
major', a `> II` or `>= IIIa` bound is 'major', `< IV` is unknown for major - count by what the bound
decides, unknown otherwise").

Clavien-Dindo order (mappings/codes.yaml): I < II < IIIa < IIIb < IVa < IVb < V; major = IIIa or higher.
``< IVa`` admits I to IIIb: some major, some not, so it decides nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.model import validate_case
from service.registry import summary

ROOT = Path(__file__).resolve().parents[3]
BASE: dict[str, Any] = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())


def _case(*grades: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["postoperative"]["complications"] = [
        {"type": "acute_kidney_injury", "text": None, "clavien_dindo": g, "date": None} for g in grades
    ]
    data["postoperative"]["had_complications"] = True
    return validate_case(data)


def _complications(*cases: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = summary.summarise(list(cases))["complications"]
    return found


@pytest.mark.parametrize(
    ("grade", "major", "major_unknown"),
    [
        ({"comparator": "<", "value": "IIIa"}, 0, 0),  # I or II: not major
        ({"comparator": "<=", "value": "II"}, 0, 0),
        ({"comparator": ">", "value": "II"}, 1, 0),  # IIIa or higher: major
        ({"comparator": ">=", "value": "IIIa"}, 1, 0),
        ({"comparator": "<", "value": "IVa"}, 0, 1),  # I to IIIb: unknown
        ({"comparator": ">", "value": "I"}, 0, 1),  # II to V: unknown
        ("II", 0, 0),
        ("IIIa", 1, 0),
        ("unknown", 0, 1),
        (None, 0, 1),
    ],
)
def test_major_is_what_the_grade_or_its_bound_decides(grade: Any, major: int, major_unknown: int):
    found = _complications(_case(grade))
    assert (found["major"], found["major_unknown"]) == (major, major_unknown)


def test_a_patient_with_a_deciding_major_bound_is_major_whatever_else():
    found = _complications(_case({"comparator": "<", "value": "IVa"}, {"comparator": ">=", "value": "IIIa"}))
    assert (found["major"], found["major_unknown"]) == (1, 0)


def test_a_not_major_bound_beside_an_undecided_one_is_unknown():
    found = _complications(_case({"comparator": "<", "value": "IIIa"}, {"comparator": "<", "value": "IVa"}))
    assert (found["major"], found["major_unknown"]) == (0, 1)


def test_bounds_are_counted_under_bound_not_as_a_grade():
    found = _complications(
        _case({"comparator": "<", "value": "IIIa"}), _case("II", {"comparator": ">", "value": "II"})
    )
    assert found["by_grade"]["bound"] == 2
    assert found["by_grade"]["IIIa"] == 0 and found["by_grade"]["II"] == 1
    # worst grade: the graded patient by its grade; the one with only a bound under "bound"
    assert found["highest_grade"]["II"] == 1 and found["highest_grade"]["bound"] == 1
    assert (found["major"], found["major_unknown"]) == (1, 0)


def test_the_page_shows_bounds_and_the_rule():
    page = summary.render_html(summary.summarise([_case({"comparator": "<", "value": "IVa"})]))
    assert "Worst: a bound (e.g. &lt; IIIa)" in page
    assert "a grade recorded as a bound counts by what the bound decides" in page

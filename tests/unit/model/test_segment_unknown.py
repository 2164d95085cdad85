"""An IVC extent with an unknown end (issue 15 leftovers, item 2).

The data set: segment from <= to (I <= II <= III), and "Unknown vs none": ``unknown`` is "the source
does not say". A record saying "from segment III" and nothing of where it ends keeps ``to`` unknown:
nothing derives ``to = III`` (the tumour may reach the atrium, or the report may not say), and an
unknown end bounds nothing, so no order is checked against it. Both ends known must be in order.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.errors import Unprocessable
from service.model import validate_case
from service.model.csv_flat import flatten, read_csv, write_csv
from service.registry import summary


def _with(example: dict[str, Any], low: str, high: str) -> dict[str, Any]:
    case = copy.deepcopy(example)
    case["diagnosis"]["ivc_segment_from"] = low
    case["diagnosis"]["ivc_segment_to"] = high
    return case


@pytest.mark.parametrize(("low", "high"), [("unknown", "I"), ("III", "unknown"), ("unknown", "unknown")])
def test_an_unknown_end_is_accepted_and_stays_unknown(example: dict[str, Any], low: str, high: str) -> None:
    diagnosis = validate_case(_with(example, low, high))["diagnosis"]
    assert (diagnosis["ivc_segment_from"], diagnosis["ivc_segment_to"]) == (low, high)


def test_a_span_going_down_is_refused(example: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable) as caught:
        validate_case(_with(example, "II", "I"))
    assert [(i.expression, i.diagnostics) for i in caught.value.issues] == [
        (
            "diagnosis.ivc_segment_from",
            "diagnosis.ivc_segment_from: must not be above ivc_segment_to (I <= II <= III)",
        )
    ]


def test_csv_keeps_either_end_unknown(example: dict[str, Any]) -> None:
    cases = [validate_case(_with(example, "unknown", "I")), validate_case(_with(example, "III", "unknown"))]
    cases[1]["case_id"] = "IVC-001-B"
    rows = [flatten(c) for c in cases]
    assert [(r["diagnosis_ivc_segment_from"], r["diagnosis_ivc_segment_to"]) for r in rows] == [
        ("unknown", "I"),
        ("III", "unknown"),
    ]
    assert [c for _, c in read_csv(write_csv(cases))] == cases


def test_summary_counts_a_span_with_either_end_unknown_as_unknown(example: dict[str, Any]) -> None:
    cases = [
        validate_case(_with(example, "unknown", "I")),
        validate_case(_with(example, "III", "unknown")),
        validate_case(_with(example, "II", "III")),
    ]
    counts = {k: v for k, v in summary.summarise(cases)["segments"].items() if v}
    assert counts == {"unknown": 2, "II-III": 1}

"""Unknowns and bounds in the case-series summary (issue 15: "unknowns shown as unknown").

The data set, "Incomplete records", is the oracle for every expected count below:
- "Every coded element a rule requires also takes `unknown` (the source does not say) and, where it
  makes sense, `not applicable`; "none" is a real answer" -> an `unknown` is its own row, never a
  value of the table and never dropped (the rows of each count add up to the cases counted).
- "A measurement may be a bound (`> 75 %`, `< 2 cm`) or a range (`90-95 %`)" -> a bound or a range is
  not a number: it cannot enter a mean or a median, so it is left out of them and counted as imprecise.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from service.model.validate import validate_case
from service.registry import summary

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
BASE: dict[str, Any] = json.loads((ROOT / "examples" / "ivclms-001-segment-ii-graft.json").read_text())
# BASE: IVC segment II-II, interposition graft of ringed ePTFE, FNCLCC grade 2, margin R0, blood loss
# 1500 mL, neoadjuvant radiotherapy, one complication (acute kidney injury) of Clavien-Dindo grade II.


def _case(n: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["case_id"] = f"U-{n}"
    surgery = data["surgery"][0]
    for key, value in changes.items():
        if key in ("ivc_segment_from", "ivc_segment_to"):
            data["diagnosis"][key] = value
        elif key in ("margin", "fnclcc_grade"):
            data["pathology"][key] = value
        elif key == "graft_material":
            surgery["ivc_management"]["graft_material"] = value
        elif key == "method":
            surgery["ivc_management"] = {"method": value, "graft_material": None, "graft_diameter_mm": None}
        elif key == "blood_loss_ml":
            surgery["blood_loss_ml"] = value
        elif key == "clavien_dindo":
            data["postoperative"]["had_complications"] = True
            data["postoperative"]["complications"] = [
                {"type": "lower_limb_edema", "text": None, "clavien_dindo": value, "date": None}
            ]
        elif key == "timing":
            data["therapies"][0]["timing"] = value
        else:
            raise KeyError(key)
    return validate_case(data, now=NOW)


@pytest.fixture(scope="module")
def found() -> dict[str, Any]:
    cases = [
        _case(1),
        _case(
            2,
            ivc_segment_from="unknown",
            ivc_segment_to="unknown",
            margin="unknown",
            fnclcc_grade="unknown",
            graft_material="unknown",
            blood_loss_ml={"comparator": ">", "value": 2000},
            clavien_dindo="unknown",
            timing="unknown",
        ),
        _case(
            3,
            ivc_segment_from="II",
            ivc_segment_to="unknown",
            margin="not_applicable",
            fnclcc_grade="not_applicable",
            method="unknown",
            blood_loss_ml={"low": 500, "high": 800},
        ),
    ]
    return summary.summarise(cases)


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def test_an_unknown_ivc_extent_is_counted_as_unknown_not_as_a_span(found: dict[str, Any]) -> None:
    # case 3 knows the lower end (II) only: the span is unknown, not "II"
    assert _nonzero(found["segments"]) == {"II": 1, "unknown": 2}
    assert sum(found["segments"].values()) == found["cases"]


def test_unknown_and_not_applicable_margin_are_own_rows_and_left_out_of_the_r0_rate(
    found: dict[str, Any],
) -> None:
    margin = found["margin"]
    assert {k: v for k, v in margin.items() if k != "r0_rate" and v} == {
        "R0": 1,
        "unknown": 1,
        "not_applicable": 1,
    }
    assert margin["r0_rate"] == 1.0  # R0 / margins recorded as R0, R1 or R2 (1 / 1)


def test_fnclcc_grade_counts_unknown_and_not_applicable(found: dict[str, Any]) -> None:
    assert _nonzero(found["fnclcc_grade"]) == {"2": 1, "unknown": 1, "not_applicable": 1}
    assert sum(found["fnclcc_grade"].values()) == found["cases"]


def test_ivc_management_and_graft_material_unknown(found: dict[str, Any]) -> None:
    assert _nonzero(found["ivc_management"]) == {"interposition_graft": 2, "unknown": 1}
    assert _nonzero(found["graft_material"]) == {"ringed_eptfe": 1, "unknown": 1}


def test_a_complication_graded_unknown_is_unknown_and_may_be_major(found: dict[str, Any]) -> None:
    complications = found["complications"]
    # cases 1 and 3 keep BASE's grade II; case 2's only complication is graded `unknown`
    assert _nonzero(complications["by_grade"]) == {"II": 2, "unknown": 1}
    assert _nonzero(complications["highest_grade"]) == {"II": 2, "unknown": 1}
    # an unknown grade may be IIIa or higher: not "not major", so major_unknown (issue 15: "An
    # ungraded complication is counted as 'not major' (it is unknown)")
    assert (complications["major"], complications["major_unknown"]) == (0, 1)


def test_therapy_of_unknown_timing_is_not_counted_as_neoadjuvant(found: dict[str, Any]) -> None:
    assert found["therapy"]["neoadjuvant"]["radiotherapy"] == 2
    assert found["therapy"]["unknown"]["radiotherapy"] == 1


def test_a_bound_and_a_range_are_imprecise_and_left_out_of_mean_and_median(found: dict[str, Any]) -> None:
    blood = found["blood_loss_ml"]
    # only case 1 (1500 mL) is a number; "> 2000" and "500..800" are not
    assert (blood["n"], blood["mean"], blood["median"], blood["missing"], blood["imprecise"]) == (
        1,
        1500,
        1500,
        0,
        2,
    )
    precision = found["precision"]
    assert (precision["measurements_bound"], precision["measurements_range"]) == (1, 1)


def test_the_page_shows_unknown_rows_and_says_bounds_are_left_out(found: dict[str, Any]) -> None:
    page = summary.render_html(found)
    assert "IVC segment unknown" in page
    assert "Margin unknown" in page and "Margin not applicable" in page
    assert "FNCLCC grade: unknown" in page
    assert "Graft or patch material: unknown" in page
    assert "2 bound or range left out" in page
    assert "left out of the mean, median and range, and counted under Precision" in page
    assert "Measurements given as a bound (e.g. &gt; 2000 mL), left out of means and medians" in page

"""A follow-up assessment whose time the source does not give (issue 15, J Korean Surg Soc 2012).

The paper: "Recurrence occurred in all patients. Distant recurrence resulted in three patients
undergoing lung resection and three patients undergoing thigh muscle resection." There was an
assessment that found a distant recurrence, and no time for it. Issue 15: what a record does not say
stays unknown. ``follow_up[].date`` takes ``unknown`` as ``surgery[].date`` does: it satisfies "date or
months_after_surgery is required" (the source says when, or says it does not know), the date rules
skip it, FHIR carries it as the data-absent-reason extension on ``_effectiveDateTime`` (R4
extension-data-absent-reason: "Provides a reason why the expected value or elements in the element
that is extended are missing"), and the registry counts the recurrence while its time, and so the
case's disease-free survival, is unknown: never "disease-free until the last contact".
"""

from __future__ import annotations

import copy
import csv
import io
from typing import Any

import jsonschema
import pytest

from service.errors import Unprocessable
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import read_csv, write_csv
from service.model.jsonschema import case_json_schema
from service.registry import outcomes, summary
from tests.unit.model.conftest import load_example
from tests.unit.model.test_unknown_dates import NOW, UNKNOWN_EXTENSION, _resources

UNTIMED = {"date": "unknown", "months_after_surgery": None}


def _recurred(**follow_up: Any) -> dict[str, Any]:
    """Example 1 (diagnosis 2021-02-20, surgery 2021-04-12, last contact 2024-04-20) whose one
    follow-up found a distant recurrence in the lung, at a time the source does not give."""
    case = copy.deepcopy(load_example())
    case["follow_up"][0].update(
        {"disease_status": "distant_metastasis", "sites": ["lung"], **UNTIMED, **follow_up}
    )
    return case


def _refused(case: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    return [(i.code, i.expression or "") for i in raised.value.issues]


# ---- model ----------------------------------------------------------------------------------------


def test_an_unknown_follow_up_date_is_accepted_kept_and_derives_nothing() -> None:
    """With a full surgery date, a full follow-up date derives months_after_surgery; ``unknown``
    derives none (no day to count to)."""
    fu = validate_case(_recurred())["follow_up"][0]
    assert (fu["date"], fu["months_after_surgery"]) == ("unknown", None)


def test_unknown_satisfies_date_or_months_but_absence_does_not() -> None:
    case = _recurred()
    del case["follow_up"][0]["date"]
    assert _refused(case) == [("required", "follow_up[0].date")]


@pytest.mark.parametrize("value", ["Unknown", "unk", "", "?"])
def test_only_the_exact_value_unknown_is_accepted(value: str) -> None:
    assert ("invalid", "follow_up[0].date") in _refused(_recurred(date=value))


def test_the_date_rules_skip_an_unknown_follow_up_date() -> None:
    """diagnosis <= surgery <= follow-up <= last contact, and nothing after death: ``unknown`` is in
    no order, so none of them can fail on it (a real date there would: see the control)."""
    case = _recurred()
    case["outcome"].update({"vital_status": "dead", "death_date": "2024-04-20"})
    assert validate_case(case)["follow_up"][0]["date"] == "unknown"
    control = _recurred(date="2021-01-01")  # before diagnosis 2021-02-20
    assert "follow_up[0].date" in [expression for _, expression in _refused(control)]


def test_the_json_schema_takes_unknown_for_the_follow_up_date() -> None:
    case = validate_case(_recurred())
    jsonschema.validate(case, case_json_schema())
    case["follow_up"][0]["date"] = "not known"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(case, case_json_schema())


def test_the_csv_cell_unknown_round_trips() -> None:
    case = validate_case(_recurred())
    text = write_csv([case])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["follow_up1_date"] == "unknown"
    ((_, back),) = read_csv(text)
    assert back == case


# ---- FHIR -----------------------------------------------------------------------------------------


def test_fhir_writes_the_data_absent_reason_and_no_effective_value() -> None:
    bundle = case_to_bundle(validate_case(_recurred()), now=NOW)
    (status,) = _resources(bundle, "ivclms-disease-status")
    assert "effectiveDateTime" not in status and status["_effectiveDateTime"] == UNKNOWN_EXTENSION
    (patency,) = _resources(bundle, "ivclms-graft-patency")
    assert "effectiveDateTime" not in patency and patency["_effectiveDateTime"] == UNKNOWN_EXTENSION


def test_the_round_trip_is_lossless() -> None:
    case = validate_case(_recurred())
    back = bundle_to_case(case_to_bundle(case, now=NOW))
    assert back == case and back["follow_up"][0]["date"] == "unknown"


# ---- registry -------------------------------------------------------------------------------------


def test_a_recurrence_at_an_unknown_time_counts_and_makes_dfs_unknown() -> None:
    """The surgery date is known, the recurrence's time is not: it is a recurrence (distant, lung),
    DFS is unknown (the event may be at any time before the last contact), overall survival is the
    same as with no recurrence recorded."""
    case = validate_case(_recurred())
    assert outcomes.recurrence(case) is True
    assert outcomes.recurrence_types(case) == {"distant"}
    assert outcomes.recurrence_sites(case) == {"lung"}
    assert outcomes.disease_free_survival(case) is None
    free = validate_case(load_example())
    assert outcomes.overall_survival(case) == outcomes.overall_survival(free)
    assert outcomes.disease_free_survival(free) is not None  # the control: censored at last contact


def test_a_disease_free_assessment_at_an_unknown_time_is_no_recurrence() -> None:
    case = validate_case(_recurred(disease_status="ned", sites=[]))
    assert outcomes.recurrence(case) is False
    assert outcomes.disease_free_survival(case) == outcomes.disease_free_survival(
        validate_case(load_example())
    )


def test_the_summary_counts_the_recurrence_and_states_dfs_unknown() -> None:
    report = summary.summarise([validate_case(_recurred()), validate_case(load_example())])
    assert report["recurrences"] == 1
    assert report["recurrence_types"] == {"local": 0, "distant": 1}
    assert {k: v for k, v in report["recurrence_sites"].items() if v} == {"lung": 1}
    assert report["precision"]["dfs_unknown"] == 1
    assert report["kaplan_meier"]["disease_free_survival"]["n"] == 1
    assert report["kaplan_meier"]["overall_survival"]["n"] == 2
    page = summary.render_html(report)
    assert "<td>Recurrence site: Lung</td><td class=n>1 (50.0%)</td>" in page

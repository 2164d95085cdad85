"""A case whose source gives no date of diagnosis or of surgery (issue 15).

The issue: "Case reports and old charts give a year, or '6 months earlier', or only intervals
('follow-up 27 months'). Every literature case needed placeholder dates." The data set, "Incomplete
records": "Intervals may be given instead of dates ... and stay intervals"; "Unknown vs none".

``diagnosis.date``, ``surgery[].date`` (and ``outcome.last_contact``) take the explicit value
``unknown``: still required (absence stays an error), written in FHIR as an absent primitive with the
data-absent-reason extension. R4 extension-data-absent-reason: "Provides a reason why the expected
value or elements in the element that is extended are missing." Every rule that needs the date is
skipped, nothing is derived from it, and the registry counts no time from it.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from service.errors import Unprocessable
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.model import validate_case
from service.model.csv_flat import read_csv, write_csv
from service.model.jsonschema import case_json_schema
from service.model.rules import first_surgery
from service.registry import deidentify, outcomes, source, summary
from service.registry.extract import derived_values
from service.store.resources import date_range
from tests.support.auth import auth_headers as _auth
from tests.unit.model.conftest import ROOT, load_example

NOW = "2026-01-01T00:00:00Z"
DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
UNKNOWN_EXTENSION = {"extension": [{"url": DAR, "valueCode": "unknown"}]}
"""The JSON of an R4 primitive with no value and the data-absent-reason extension (R4 json.html:
"the value is ... absent" and the extension sits in the ``_element`` property)."""


def _undated(**changes: Any) -> dict[str, Any]:
    """Example 1 as a source without diagnosis and surgery dates: unknown dates, the age given."""
    case = copy.deepcopy(load_example())
    case["diagnosis"]["date"] = "unknown"
    for surgery in case["surgery"]:
        surgery["date"] = "unknown"
    case["patient"]["age_at_diagnosis"] = 52
    case.update(changes)
    return case


def _refused(case: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(Unprocessable) as raised:
        validate_case(case)
    return [(i.code, i.expression or "") for i in raised.value.issues]


# ---- schema ---------------------------------------------------------------------------------------


def test_unknown_diagnosis_and_surgery_dates_are_accepted_and_kept() -> None:
    case = validate_case(_undated())
    assert case["diagnosis"]["date"] == "unknown"
    assert [s["date"] for s in case["surgery"]] == ["unknown"]


@pytest.mark.parametrize("where", ["diagnosis", "surgery"])
def test_a_missing_date_is_still_an_error(where: str) -> None:
    """Absence is not ``unknown``: a forgotten date is refused, not silently accepted."""
    case = _undated()
    entry = case["diagnosis"] if where == "diagnosis" else case["surgery"][0]
    del entry["date"]
    expression = "diagnosis.date" if where == "diagnosis" else "surgery[0].date"
    assert _refused(case) == [("required", expression)]
    entry["date"] = None
    assert _refused(case) == [("invalid", expression)]


@pytest.mark.parametrize("value", ["Unknown", "unk", "", "UNKNOWN", "?"])
def test_only_the_exact_value_unknown_is_accepted(value: str) -> None:
    assert _refused(_undated(diagnosis={**_undated()["diagnosis"], "date": value})) == [
        ("invalid", "diagnosis.date")
    ]


@pytest.mark.parametrize("path", [("patient", "birth_date"), ("outcome", "death_date")])
def test_other_dates_take_no_unknown(path: tuple[str, str]) -> None:
    """Only the dates named by the issue (and the last contact) take ``unknown``: an unknown birth or
    death date is simply left out (it is not required)."""
    case = _undated()
    case[path[0]][path[1]] = "unknown"
    assert ("invalid", f"{path[0]}.{path[1]}") in _refused(case)


def test_the_json_schema_allows_unknown_only_where_the_model_does() -> None:
    schema = case_json_schema()
    jsonschema.validate(validate_case(_undated()), schema)
    broken = validate_case(_undated())
    broken["patient"]["birth_date"] = "unknown"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---- rules ----------------------------------------------------------------------------------------


def test_age_at_diagnosis_is_required_when_the_diagnosis_date_is_unknown() -> None:
    """ "birth date, or age at diagnosis | 1": with no diagnosis date a birth date gives no age."""
    case = _undated()
    case["patient"]["age_at_diagnosis"] = None
    assert _refused(case) == [("required", "patient.age_at_diagnosis")]


def test_a_given_age_is_kept_with_a_birth_date_and_no_diagnosis_date() -> None:
    """Born 1968-03-14 and 30 at an unknown diagnosis: nothing to check the age against, kept."""
    case = _undated()
    case["patient"]["age_at_diagnosis"] = 30
    assert validate_case(case)["patient"]["age_at_diagnosis"] == 30


def test_ordering_rules_that_need_the_date_are_skipped() -> None:
    """An operation in 1990 cannot be "before diagnosis" when the diagnosis date is unknown; a
    follow-up in 1980 cannot be "before the first surgery" when that date is unknown."""
    case = _undated()
    case["surgery"][0]["date"] = "1990"
    case["follow_up"][0]["months_after_surgery"] = None  # 12 months after 1990 is not 2022
    validate_case(case)
    case["surgery"][0]["date"] = "unknown"
    case["follow_up"][0].update({"date": "1980-01-01", "months_after_surgery": None})
    case["follow_up"][0]["imaging"][0]["date"] = "1980-01-01"
    assert validate_case(case)["follow_up"][0]["months_after_surgery"] is None  # nothing derived
    # the same dates with the operation known are refused: the rule itself still holds
    case["surgery"][0]["date"] = "1990"
    assert _refused(case) == [("business-rule", "follow_up[0].date")]


def test_nothing_is_derived_from_an_unknown_surgery_date() -> None:
    """months_after_surgery alone leaves the follow-up date unknown; a date and months that disagree
    with each other cannot be compared: both are kept as recorded."""
    case = _undated()
    case["follow_up"][0].update({"date": None, "months_after_surgery": 27})
    assert validate_case(case)["follow_up"][0]["date"] is None
    case["follow_up"][0].update({"date": "2022-04-12", "months_after_surgery": 3})
    assert validate_case(case)["follow_up"][0]["months_after_surgery"] == 3


def test_intervals_are_not_checked_against_an_unknown_start() -> None:
    """27 months after diagnosis with a last contact in 2024: checkable only with a diagnosis date."""
    outcome = {
        "last_contact": "2024",
        "last_contact_months_after_diagnosis": 2,
        "last_contact_months_after_surgery": 1,
    }
    case = _undated()
    case["outcome"].update(outcome)
    case["follow_up"][0]["months_after_surgery"] = None  # not beyond the last contact's 1 month
    validate_case(case)
    # the intervals are still checked against each other (no date needed for that)
    case["outcome"].update(
        {"last_contact_months_after_diagnosis": 1, "last_contact_months_after_surgery": 27}
    )
    assert _refused(case) == [("business-rule", "outcome.last_contact_months_after_diagnosis")]


def test_an_unknown_operation_date_makes_the_first_operation_unknown() -> None:
    """Of a 2019 operation and one on an unknown date, either may be the first: its date is unknown
    and the list order given is kept (the first listed is the index operation)."""
    case = validate_case(_undated())
    undated = copy.deepcopy(case["surgery"][0])
    case["surgery"] = [{**undated, "date": "2019"}, undated]
    assert first_surgery(case) == (0, "unknown")
    case["surgery"] = [undated, {**undated, "date": "2019"}]
    assert first_surgery(case) == (0, "unknown")
    assert outcomes.surgery_date(case) is None and outcomes.operated(case)
    case["surgery"] = [{**undated, "date": "2019"}, {**undated, "date": "2018"}]
    assert first_surgery(case) == (1, "2018")  # all known: by date, as before


def test_a_postoperative_day_needs_only_an_operation_not_its_date() -> None:
    case = _undated()
    case["therapies"][1].update({"start": None, "end": None, "start_postoperative_day": 1})
    assert validate_case(case)["therapies"][1]["start_postoperative_day"] == 1


def test_unknown_is_never_after_today() -> None:
    """The future-date rule reads dates only; ``unknown`` is none (a 1900 clock refuses the others)."""
    import datetime as dt

    with pytest.raises(Unprocessable) as raised:
        validate_case(_undated(), now=dt.datetime(1900, 1, 1, tzinfo=dt.UTC))
    paths = {i.expression for i in raised.value.issues}
    assert "patient.birth_date" in paths
    assert not paths & {"diagnosis.date", "surgery[0].date"}


def test_an_unknown_last_contact_satisfies_the_last_contact_rule() -> None:
    """ "last_contact or an interval is required": ``unknown`` states that the source gives neither."""
    case = _undated()
    case["outcome"]["last_contact"] = "unknown"
    assert validate_case(case)["outcome"]["last_contact"] == "unknown"
    case["outcome"]["last_contact"] = None
    assert _refused(case) == [("required", "outcome.last_contact")]


# ---- CSV ------------------------------------------------------------------------------------------


def test_the_csv_cell_unknown_round_trips() -> None:
    case = validate_case(_undated())
    text = write_csv([case])
    row = next(csv.DictReader(io.StringIO(text)))
    assert (row["diagnosis_date"], row["surgery1_date"]) == ("unknown", "unknown")
    ((line, back),) = read_csv(text)
    assert line == 2 and back == case


# ---- FHIR -----------------------------------------------------------------------------------------


def _resources(bundle: dict[str, Any], profile_suffix: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"].get("meta", {}).get("profile", [""])[0].endswith(profile_suffix)
    ]


def test_fhir_carries_the_data_absent_reason_on_the_primitive_and_no_value() -> None:
    case = validate_case(_undated(outcome={**_undated()["outcome"], "last_contact": "unknown"}))
    bundle = case_to_bundle(case, now=NOW)
    (condition,) = _resources(bundle, "ivclms-primary-cancer")
    assert "onsetDateTime" not in condition and condition["_onsetDateTime"] == UNKNOWN_EXTENSION
    (surgery,) = _resources(bundle, "ivclms-surgery")
    assert "performedDateTime" not in surgery and surgery["_performedDateTime"] == UNKNOWN_EXTENSION
    (ivc,) = _resources(bundle, "ivclms-ivc-management")
    assert ivc["_performedDateTime"] == UNKNOWN_EXTENSION
    (vital,) = _resources(bundle, "ivclms-vital-status")
    assert "effectiveDateTime" not in vital and vital["_effectiveDateTime"] == UNKNOWN_EXTENSION


def test_the_round_trip_is_lossless() -> None:
    case = validate_case(_undated(outcome={**_undated()["outcome"], "last_contact": "unknown"}))
    back = bundle_to_case(case_to_bundle(case, now=NOW))
    assert back == case
    assert back["diagnosis"]["date"] == "unknown" and back["surgery"][0]["date"] == "unknown"


def test_a_known_date_writes_no_extension() -> None:
    bundle = json.dumps(case_to_bundle(validate_case(load_example()), now=NOW))
    assert DAR not in bundle


def test_the_store_indexes_no_date_for_a_resource_without_one() -> None:
    (condition,) = _resources(case_to_bundle(validate_case(_undated()), now=NOW), "ivclms-primary-cancer")
    assert date_range(condition) == (None, None)


def test_a_case_with_unknown_dates_is_stored_and_searched_by_date(client) -> None:
    """Written through the API and found by the date search of the read side without a crash: a date
    search does not match a resource without a date."""
    data = json.dumps(_undated())
    created = client.post("/cases", data=data, headers=_auth(), content_type="application/json")
    assert created.status_code == 201, created.get_json()
    for query in ("Condition?date=ge2000", "Procedure?date=lt2030", "Condition?_count=50"):
        resp = client.get(f"/fhir/{query}", headers=_auth())
        assert resp.status_code == 200, resp.get_json()
    found = client.get("/fhir/Condition?date=ge1900", headers=_auth()).get_json()
    onsets = [e["resource"] for e in found.get("entry", []) if "_onsetDateTime" in e["resource"]]
    assert onsets == []
    every = client.get("/fhir/Condition?_count=50", headers=_auth()).get_json()
    assert any(e["resource"].get("_onsetDateTime") == UNKNOWN_EXTENSION for e in every["entry"])


# ---- registry -------------------------------------------------------------------------------------


def _outcome(**values: Any) -> dict[str, Any]:
    outcome = {
        "last_contact": None,
        "last_contact_months_after_diagnosis": None,
        "last_contact_months_after_surgery": None,
    }
    return {**_undated()["outcome"], **outcome, **values}


def test_overall_survival_from_the_recorded_interval_when_time_zero_is_unknown() -> None:
    case = validate_case(_undated(outcome=_outcome(last_contact_months_after_diagnosis=27)))
    assert outcomes.overall_survival(case) == outcomes.TimeToEvent(27, 0, "exact")


def test_overall_survival_is_unknown_without_an_interval() -> None:
    """A last contact date counts from nothing when the diagnosis date is unknown."""
    case = validate_case(_undated())
    assert outcomes.overall_survival(case) is None
    assert derived_values(case)["os_months"] is None
    assert outcomes.diagnosis_to_surgery_days(case) is None


def test_disease_free_survival_from_months_after_surgery() -> None:
    """The last contact 40 months after surgery; a recurrence at follow-up 12 months after it."""
    case = _undated(outcome=_outcome(last_contact_months_after_surgery=40))
    assert outcomes.disease_free_survival(validate_case(case)) == outcomes.TimeToEvent(40, 0, "exact")
    case["follow_up"][0]["disease_status"] = "local_recurrence"
    validated = validate_case(case)
    assert outcomes.disease_free_survival(validated) == outcomes.TimeToEvent(12, 1, "exact")
    assert outcomes.recurrence(validated) is True


def test_an_untimed_recurrence_is_a_recurrence_with_unknown_dfs() -> None:
    """A recurrence seen at a dated follow-up after an operation on an unknown date: it happened, but
    when after surgery is unknown, so DFS is unknown rather than the last contact's censoring."""
    case = _undated(outcome=_outcome(last_contact_months_after_surgery=40))
    case["follow_up"][0].update({"disease_status": "local_recurrence", "months_after_surgery": None})
    validated = validate_case(case)
    assert outcomes.recurrence(validated) is True
    assert outcomes.disease_free_survival(validated) is None


def test_the_summary_counts_unknown_survival_and_leaves_it_out_of_kaplan_meier() -> None:
    timed = validate_case(_undated(outcome=_outcome(last_contact_months_after_diagnosis=27)))
    untimed = validate_case(_undated())
    report = summary.summarise([timed, untimed])
    assert report["cases"] == 2 and report["operated"] == 2
    assert report["precision"]["os_unknown"] == 1
    assert report["kaplan_meier"]["overall_survival"]["n"] == 1
    # second outside review: follow-up said missing 0 beside an unknown OS time
    assert report["follow_up_months"]["n"] == 1 and report["follow_up_months"]["missing"] == 1
    assert report["precision"]["dfs_unknown"] == 2
    assert "<td>" in summary.render_html(report)


def test_de_identification_gives_no_year_or_offsets_from_an_unknown_diagnosis_date() -> None:
    out = deidentify.deidentify(validate_case(_undated()), b"k" * 32)
    assert out["diagnosis"][deidentify.YEAR] is None
    assert out["surgery"][0]["date" + deidentify.DAYS_SUFFIX] is None
    assert out["outcome"]["last_contact" + deidentify.DAYS_SUFFIX] is None


def test_a_date_filter_leaves_out_an_unknown_diagnosis_date() -> None:
    """Not known to be inside the bound, so not in it; without a date filter the case is in."""
    import datetime as dt

    case = validate_case(_undated())
    assert source.matches(case, source.Filters())
    assert not source.matches(case, source.Filters(diagnosed_from=dt.date(2000, 1, 1)))
    assert not source.matches(case, source.Filters(diagnosed_to_year=2030))


ALL_EXAMPLES = sorted((ROOT / "examples").glob("ivclms-0*.json")) + sorted(
    (ROOT / "examples" / "literature").glob("ivclms-*.json")
)


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=[p.stem for p in ALL_EXAMPLES])
def test_every_example_with_its_dates_unknown_is_valid_and_round_trips(path: Path) -> None:
    """Each example with its diagnosis, operation and last-contact dates made unknown (the age and the
    follow-up months kept as derived from them): still a valid case (nothing left to disagree with),
    and the FHIR round trip gives it back unchanged."""
    known = validate_case(load_example(path))
    case = copy.deepcopy(known)
    case["diagnosis"]["date"] = "unknown"
    for surgery in case["surgery"]:
        surgery["date"] = "unknown"
    if case["outcome"]["last_contact"] is not None:
        case["outcome"]["last_contact"] = "unknown"
    undated = validate_case(case)
    assert bundle_to_case(case_to_bundle(undated, now=NOW)) == undated


def test_a_death_of_unknown_time_after_surgery_makes_dfs_unknown_not_censored() -> None:
    """Second outside review: dead in 2023-05, surgery date unknown, last contact 20 months after surgery
    gave DFS 20 censored. docs/registry.md: the DFS event includes "death from any cause", so a death whose
    time after surgery is unknown makes DFS unknown; it is never counted as survival without an event."""
    case = _undated(
        outcome=_outcome(last_contact_months_after_surgery=20, vital_status="dead", death_date="2023-05")
    )
    for fu in case["follow_up"]:
        fu["date"] = None
    validated = validate_case(case)
    assert outcomes.died(validated)
    assert outcomes.disease_free_survival(validated) is None


def test_an_unknown_anchor_still_bounds_an_interval_by_today() -> None:
    """Second outside review: an unknown date switched off "a date after today is an error" for the
    intervals counted from it. An unknown surgery is not before the diagnosis ("diagnosis <= surgery");
    an unknown diagnosis is not before birth date + age at diagnosis. Example 1: born 1968-03-14."""
    case = _undated(outcome=_outcome(last_contact_months_after_diagnosis=1000))
    assert case["patient"]["birth_date"] == "1968-03-14" and case["patient"]["age_at_diagnosis"] == 52
    assert ("business-rule", "outcome.last_contact_months_after_diagnosis") in _refused(case)
    dated_diagnosis = _undated(outcome=_outcome(last_contact_months_after_surgery=1500))
    dated_diagnosis["diagnosis"]["date"] = "2021-02-20"
    dated_diagnosis["patient"]["age_at_diagnosis"] = None
    assert ("business-rule", "outcome.last_contact_months_after_surgery") in _refused(dated_diagnosis)
    # the true record of the same shape stays accepted
    fine = _undated(outcome=_outcome(last_contact_months_after_surgery=27))
    fine["diagnosis"]["date"] = "2021-02-20"
    fine["patient"]["age_at_diagnosis"] = None
    assert validate_case(fine)["outcome"]["last_contact_months_after_surgery"] == 27

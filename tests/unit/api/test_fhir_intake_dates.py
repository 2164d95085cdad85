"""``POST /fhir``: surgery dates given to the year, as a dateTime with a time, or as a Period (issue 15,
outside review, findings H1 and M1).

H1: plain intake placed work-up imaging and labs "on or before the first surgery" by the resection's
own date read at its first day, so a resection dated ``2021`` (its parts on 2021-04-12) put the
January CT into ``follow_up[0].imaging``. Placement now uses the date the case keeps for the surgery
(the most precise its Procedures agree on) and compares at the coarser precision, as the data set says
("Incomplete records": "Date rules compare at the coarser precision (2019 <= 2019-06-12 holds)"); a
fact that overlaps the surgery's date is refused, not guessed, unless it is on or before the diagnosis.

M1: R4 dateTime allows "YYYY-MM-DDThh:mm:ss+zz:zz" and Procedure.performed[x] allows a Period; both
were refused. The case date of a dateTime is its calendar date as written (R4: "If hours and minutes
are specified, a time zone SHALL be populated": the date in that zone), that of a Period its start.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.mapping.datetimes import case_date, read_date
from tests.unit.api.test_cases import _auth
from tests.unit.api.test_fhir_intake_modifiers import PREFIX, _bundle, _case, _entry, _post, _stored, client
from tests.unit.mapping.test_recognise import plain

__all__ = ["client"]
EHR = "?source-system=urn:ivclms:example:ehr"
SURGERY_PROCEDURES = ("surgery", "organ-resection", "ivc-management", "renal-vein-management")


def _procedures(bundle: dict[str, Any], names: tuple[str, ...] = SURGERY_PROCEDURES) -> list[dict[str, Any]]:
    """ivclms-001's Procedures of the surgery (the resection and its 4 parts), by profile."""
    return [
        e["resource"]
        for e in bundle["entry"]
        if any(PREFIX + n in e["resource"].get("meta", {}).get("profile", []) for n in names)
    ]


def _stored_case(client: FlaskClient) -> dict[str, Any]:
    (listed,) = _stored(client)
    case: dict[str, Any] = client.get(f"/cases/{listed['id']}", headers=_auth()).get_json()
    return case


def _placed_as_in_example_1(case: dict[str, Any]) -> None:
    """ivclms-001's own placement: CT 2021-01-25 and MRI 2021-02-02 and the 2021-02-10 eGFR and
    haemoglobin are work-up (before the 2021-04-12 operation), the 2021-04-19 creatinine postoperative,
    the 2022-04-05 CT at the 2022-04-12 visit."""
    assert [i["date"] for i in case["diagnosis"]["imaging"]] == ["2021-01-25", "2021-02-02"], case
    assert [(lab["test"], lab["date"]) for lab in case["diagnosis"]["labs"]] == [
        ("egfr", "2021-02-10"),
        ("hemoglobin", "2021-02-10"),
    ], case
    assert [lab["date"] for lab in case["postoperative"]["renal_function"]] == ["2021-04-19"], case
    assert [i["date"] for i in case["follow_up"][0]["imaging"]] == ["2022-04-05"], case
    assert case["surgery"][0]["date"] == "2021-04-12", case


def _resection(bundle: dict[str, Any]) -> dict[str, Any]:
    (resection,) = _procedures(bundle, ("surgery",))
    return resection


def test_a_resection_dated_to_the_year_places_by_the_day_its_parts_give(client: FlaskClient) -> None:
    """H1: the resection says 2021, its four parts 2021-04-12; the case keeps 2021-04-12, so the
    January CT is work-up, not follow-up."""
    bundle = _bundle(_case())
    _resection(bundle)["performedDateTime"] = "2021"
    resp = _post(client, plain(bundle), EHR)
    assert resp.status_code == 200, resp.get_json()
    _placed_as_in_example_1(_stored_case(client))


def test_a_resection_with_a_performed_period_places_by_its_start(client: FlaskClient) -> None:
    """H1 and M1: performed[x] as a Period (start in its own zone, +02:00) reads as its start's day."""
    bundle = _bundle(_case())
    resection = _resection(bundle)
    del resection["performedDateTime"]
    resection["performedPeriod"] = {"start": "2021-04-12T08:00:00+02:00", "end": "2021-04-12T14:30:00+02:00"}
    resp = _post(client, plain(bundle), EHR)
    assert resp.status_code == 200, resp.get_json()
    _placed_as_in_example_1(_stored_case(client))


def test_every_surgery_procedure_as_a_period_gives_the_surgery_date(client: FlaskClient) -> None:
    """M1: Period on all five surgery Procedures was 422 "surgery[0].date: required"."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        del procedure["performedDateTime"]
        procedure["performedPeriod"] = {"start": "2021-04-12T08:00:00Z"}
    resp = _post(client, plain(bundle), EHR)
    assert resp.status_code == 200, resp.get_json()
    _placed_as_in_example_1(_stored_case(client))


def test_a_surgery_known_to_the_year_does_not_guess_a_later_lab_into_either_place(
    client: FlaskClient,
) -> None:
    """H1: all five surgery Procedures at 2021. The work-up facts (on or before the 2021-02-20
    diagnosis) stay work-up; the 2021-04-19 creatinine may be before or after the operation, so the
    Bundle is refused naming it, nothing stored."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        procedure["performedDateTime"] = "2021"
    sent = plain(bundle)
    creatinine = next(
        n for n, e in enumerate(sent["entry"]) if e["resource"].get("effectiveDateTime") == "2021-04-19"
    )
    resp = _post(client, sent, EHR)
    body = resp.get_json()
    assert resp.status_code == 422, body
    said = [(i.get("expression", []), i["diagnostics"]) for i in body["issue"]]
    assert len(said) == 1, said
    (expression, diagnostics) = said[0]
    assert expression == [f"Bundle.entry[{creatinine}]"], said
    assert "effectiveDateTime (2021-04-19) cannot be placed before or after the surgery (2021)" in diagnostics
    assert _stored(client) == []


@pytest.mark.parametrize("plain_r4", [False, True], ids=["profiled", "plain"])
def test_every_surgery_procedure_with_a_time_is_its_date(client: FlaskClient, plain_r4: bool) -> None:
    """M1: "2021-04-12T10:00:00Z" on all five was 422 "surgery[0].date: must be a date YYYY..."."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        procedure["performedDateTime"] = "2021-04-12T10:00:00Z"
    resp = _post(client, plain(bundle), EHR) if plain_r4 else _post(client, bundle)
    assert resp.status_code == 200, resp.get_json()
    _placed_as_in_example_1(_stored_case(client))


@pytest.mark.parametrize(("parts", "agree"), [("2021-04-12", True), ("2021-04-13", False)])
@pytest.mark.parametrize("plain_r4", [False, True], ids=["profiled", "plain"])
def test_a_timed_resection_agrees_with_the_day_as_written_in_its_own_zone(
    client: FlaskClient, plain_r4: bool, parts: str, agree: bool
) -> None:
    """M1: 23:30 at -05:00 is 2021-04-12 where it was written (04:30 on the 13th in UTC): it agrees
    with parts on 2021-04-12 and not with parts on 2021-04-13."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        procedure["performedDateTime"] = parts
    _resection(bundle)["performedDateTime"] = "2021-04-12T23:30:00-05:00"
    resp = _post(client, plain(bundle), EHR) if plain_r4 else _post(client, bundle)
    body = resp.get_json()
    if agree:
        assert resp.status_code == 200, body
        assert _stored_case(client)["surgery"][0]["date"] == "2021-04-12"
    else:
        assert resp.status_code == 422, body
        said = " ".join(i["diagnostics"] for i in body["issue"])
        assert "(2021-04-12T23:30:00-05:00)" in said and "do not agree" in said, body
        assert _stored(client) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-04-12T23:30:00-05:00", "2021-04-12"),
        ("2021-04-12T00:15:00.250+14:00", "2021-04-12"),
        ("2021-04-12T10:00:00Z", "2021-04-12"),
        ("2021-04", "2021-04"),
        ("2021-04-12T10:00:00", "2021-04-12T10:00:00"),  # no zone: not R4, left for the validator
        ("2021-04-12T10:00Z", "2021-04-12T10:00Z"),  # R4 dateTime has seconds
    ],
)
def test_case_date_of_a_datetime(value: str, expected: str) -> None:
    assert case_date(value) == expected


def test_a_period_without_a_start_gives_no_date() -> None:
    node = {"performedPeriod": {"end": "2021-04-12"}}
    assert read_date(node, "performedDateTime") == (None, "performedPeriod.start")
    assert read_date({}, "performedDateTime") == (None, "performedDateTime")
    node = {"performedPeriod": {"start": "2021-04-12T08:00:00Z"}}
    assert read_date(node, "performedDateTime") == ("2021-04-12", "performedPeriod.start")


def _expressions_and_diagnostics(body: dict[str, Any]) -> list[tuple[list[str], str]]:
    return [(i.get("expression", []), i["diagnostics"]) for i in body["issue"]]


@pytest.mark.parametrize("plain_r4", [False, True], ids=["profiled", "plain"])
def test_a_case_rule_names_the_element_the_client_sent(client: FlaskClient, plain_r4: bool) -> None:
    """L7: a time without a zone is not an R4 dateTime ("If hours and minutes are specified, a time
    zone SHALL be populated"); the 422 names the resection's performedDateTime where the client put
    it (the profile validator, when on, says so first), not only the case path ``surgery[0].date``."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        procedure["performedDateTime"] = "2021-04-12T10:00:00"
    sent = plain(bundle) if plain_r4 else bundle
    resection = next(
        n
        for n, e in enumerate(sent["entry"])
        if e["resource"].get("performedDateTime") == "2021-04-12T10:00:00" and not e["resource"].get("partOf")
    )
    resp = _post(client, sent, EHR if plain_r4 else "")
    body = resp.get_json()
    assert resp.status_code == 422, body
    element = f"Bundle.entry[{resection}].resource.performedDateTime"
    said = _expressions_and_diagnostics(body)
    assert any(e == [element] for e, _ in said), said
    assert all(e[0].startswith("Bundle.entry[") for e, _ in said), said
    assert _stored(client) == []


def test_a_last_contact_after_today_names_the_vital_status_element(client: FlaskClient) -> None:
    """L7: the data set's rule that no date is after today fails on ``outcome.last_contact``; the 422
    names the vital-status Observation's effectiveDateTime, with the rule's own words."""
    bundle = _bundle(_case())
    position, status = _entry(bundle, "vital-status")
    status["effectiveDateTime"] = "2099-01-01"
    resp = _post(client, bundle)
    body = resp.get_json()
    assert resp.status_code == 422, body
    element = f"Bundle.entry[{position}].resource.effectiveDateTime"
    said = _expressions_and_diagnostics(body)
    assert any(
        e == [element] and d.startswith(f"{element} (outcome.last_contact: must not be after today")
        for e, d in said
    ), said
    assert _stored(client) == []


def test_a_surgery_period_without_a_start_is_refused_naming_its_start(client: FlaskClient) -> None:
    """Second review L2: ``performedPeriod {end}`` on all five surgery Procedures. R4 Period: "If the
    low element is missing, the meaning is that the low boundary is not known"; the case is not
    written with an ``unknown`` surgery date (the end sent would be lost): the 422 names the
    resection's performedPeriod.start, where the date is missing, with the case rule."""
    bundle = _bundle(_case())
    for procedure in _procedures(bundle):
        del procedure["performedDateTime"]
        procedure["performedPeriod"] = {"end": "2021-04-12"}
    sent = plain(bundle)
    resection = next(
        n
        for n, e in enumerate(sent["entry"])
        if "performedPeriod" in e["resource"] and not e["resource"].get("partOf")
    )
    resp = _post(client, sent, EHR)
    body = resp.get_json()
    assert resp.status_code == 422, body
    element = f"Bundle.entry[{resection}].resource.performedPeriod.start"
    said = _expressions_and_diagnostics(body)
    assert any(e == [element] and d.startswith(f"{element} (surgery[0].date: ") for e, d in said), said
    assert _stored(client) == []

"""``POST /fhir`` of plain resources: results after the surgery and follow-up visits of unknown date
(issue 15, second outside review, HF1 and M5).

HF1: with every follow-up visit dated unknown (or none sent), ivclms-001's 2022-04-05 CT, a year after
the 2021-04-12 operation, had "no anchor" and went to ``diagnosis.imaging``: work-up after the
surgery, against the data set's "Dates are consistent: diagnosis <= surgery <= follow-up". A result
certainly after the surgery is never work-up; with no visit of known date to attach it to, it is
refused naming its entry (as a result overlapping the surgery's date is, H1), not guessed onto a visit.

M5: the disease status dated unknown and the graft patency dated 2022-04-12, separate resources
linked by nothing, were merged into one visit dated 2022-04-12: a date no resource stated for the
disease status. They are one visit only when their dates agree (both the same, or both unknown).
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.unit.api.test_cases import _auth
from tests.unit.api.test_fhir_intake_modifiers import _bundle, _case, _entry, _post, _stored, client
from tests.unit.mapping.test_recognise import plain

__all__ = ["client"]
EHR = "?source-system=urn:ivclms:example:ehr"
DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
UNKNOWN = {"extension": [{"url": DAR, "valueCode": "unknown"}]}
MONTHS = "months-after-surgery"
LATE_CT = "2022-04-05"


def _dated_unknown(resource: dict[str, Any]) -> None:
    """effectiveDateTime -> data-absent-reason ``unknown``, and no interval from surgery either."""
    del resource["effectiveDateTime"]
    resource["_effectiveDateTime"] = UNKNOWN
    kept = [x for x in resource.get("extension", []) if MONTHS not in x["url"]]
    resource.pop("extension", None)
    if kept:
        resource["extension"] = kept


def _at(sent: dict[str, Any], date: str, resource_type: str = "Procedure") -> int:
    (position,) = [
        n
        for n, e in enumerate(sent["entry"])
        if e["resource"]["resourceType"] == resource_type
        and date in (e["resource"].get("performedDateTime"), e["resource"].get("effectiveDateTime"))
    ]
    return position


def _said(body: dict[str, Any]) -> list[tuple[list[str], str]]:
    return [(i.get("expression", []), i["diagnostics"]) for i in body["issue"]]


def _ct_refused(client: FlaskClient, bundle: dict[str, Any]) -> list[tuple[list[str], str]]:
    """Posts ``bundle`` made plain: 422 naming the 2022-04-05 CT entry, nothing stored."""
    sent = plain(bundle)
    ct = _at(sent, "2022-04-05")
    resp = _post(client, sent, EHR)
    body = resp.get_json()
    assert resp.status_code == 422, body
    said = _said(body)
    assert any(
        e == [f"Bundle.entry[{ct}]"]
        and "performedDateTime (2022-04-05) cannot be placed: after the surgery (2021-04-12) and no "
        "follow-up visit of known date"
        in d
        for e, d in said
    ), said
    assert _stored(client) == []
    return said


def test_a_ct_after_the_surgery_with_every_visit_dated_unknown_is_refused(client: FlaskClient) -> None:
    """HF1: disease status and graft patency dated unknown; the CT is refused, not made work-up."""
    bundle = _bundle(_case())
    _dated_unknown(_entry(bundle, "disease-status")[1])
    _dated_unknown(_entry(bundle, "graft-patency")[1])
    said = _ct_refused(client, bundle)
    assert len(said) == 1, said


def test_a_ct_after_the_surgery_with_no_visit_is_refused(client: FlaskClient) -> None:
    """HF1: no follow-up Observation at all; the 2022 CT has no visit, and is not work-up."""
    bundle = _bundle(_case())
    drop = {_entry(bundle, "disease-status")[0], _entry(bundle, "graft-patency")[0]}
    bundle["entry"] = [e for n, e in enumerate(bundle["entry"]) if n not in drop]
    said = _ct_refused(client, bundle)
    assert len(said) == 1, said


def test_a_ct_after_the_surgery_with_a_visit_period_without_start_is_refused(client: FlaskClient) -> None:
    """HF1: the disease status as ``effectivePeriod {end}`` gives no date (a Period is read by its
    start); the CT is still not work-up."""
    bundle = _bundle(_case())
    status = _entry(bundle, "disease-status")[1]
    del status["effectiveDateTime"]
    status["effectivePeriod"] = {"end": "2022-04-12"}
    _ct_refused(client, bundle)


def test_a_lab_after_the_surgery_with_no_visit_is_postoperative(client: FlaskClient) -> None:
    """HF1's boundary: a lab has the surgery as anchor (``postoperative.renal_function``), so the
    2021-04-19 creatinine is still placed with no visit sent, and the work-up stays work-up."""
    bundle = _bundle(_case())
    drop = {_entry(bundle, n)[0] for n in ("disease-status", "graft-patency")}
    drop |= {n for n, e in enumerate(bundle["entry"]) if e["resource"].get("performedDateTime") == LATE_CT}
    bundle["entry"] = [e for n, e in enumerate(bundle["entry"]) if n not in drop]
    resp = _post(client, plain(bundle), EHR)
    assert resp.status_code == 200, resp.get_json()
    (listed,) = _stored(client)
    case = client.get(f"/cases/{listed['id']}", headers=_auth()).get_json()
    assert [i["date"] for i in case["diagnosis"]["imaging"]] == ["2021-01-25", "2021-02-02"], case
    assert [lab["date"] for lab in case["postoperative"]["renal_function"]] == ["2021-04-19"], case
    assert not case.get("follow_up"), case


def test_a_dated_graft_patency_is_not_the_visit_of_a_disease_status_dated_unknown(
    client: FlaskClient,
) -> None:
    """M5: the disease status dated unknown, the graft patency 2022-04-12, linked by nothing; one visit
    would be dated 2022-04-12 (12 months after surgery) for a disease status that gave no date. The
    graft patency is refused naming its entry (and the CT, which has no visit of known date)."""
    bundle = _bundle(_case())
    _dated_unknown(_entry(bundle, "disease-status")[1])
    sent = plain(bundle)
    (patency,) = [n for n, e in enumerate(sent["entry"]) if "graft-patency" in str(e["resource"].get("code"))]
    resp = _post(client, sent, EHR)
    body = resp.get_json()
    assert resp.status_code == 422, body
    said = _said(body)
    assert any(
        e == [f"Bundle.entry[{patency}]"] and "no candidate for its item agrees with it (date 2022-04-12" in d
        for e, d in said
    ), said
    assert any(e == [f"Bundle.entry[{_at(sent, LATE_CT)}]"] for e, _ in said), said
    assert _stored(client) == []

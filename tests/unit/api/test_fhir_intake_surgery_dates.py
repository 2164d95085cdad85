"""``POST /fhir``: the Procedures of one surgery give one date (issue 15, outside review).

The case holds one date per surgery (``surgery[].date``); the resection Procedure writes it and each
Procedure that is part of the operation (IVC management, organ resection, renal veins) repeats it. A
Bundle whose resection says 2020-03-02 and whose IVC reconstruction says 2020-04-10 was stored with
one of the two dates and the other dropped. It is now 422 naming both elements and the rule, nothing
stored. Dates of different precision agree when one contains the other: the data set ("Incomplete
records") says "Date rules compare at the coarser precision (2019 <= 2019-06-12 holds)", so the year
2021 agrees with 2021-04-12 and the case keeps the day.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.case_files import unmap_bundle
from service.mapping.spec import MappingError
from tests.support.auth import auth_headers as _auth
from tests.unit.api.test_fhir_intake_modifiers import _bundle, _case, _entry, _post, _stored, client
from tests.unit.mapping.test_recognise import plain

__all__ = ["client"]
RULE = "procedures of one surgery must share its date"
EHR = "?source-system=urn:ivclms:example:ehr"


def _conflicting() -> tuple[dict[str, Any], int, int]:
    """ivclms-001's own Bundle with the IVC management performed on another day than the resection."""
    bundle = _bundle(_case())
    surgery, resection = _entry(bundle, "surgery")
    ivc, management = _entry(bundle, "ivc-management")
    assert resection["performedDateTime"] == "2021-04-12"
    management["performedDateTime"] = "2021-05-10"
    return bundle, surgery, ivc


def _refused_naming_both(
    client: FlaskClient, bundle: dict[str, Any], first: int, second: int, query: str
) -> None:
    resp = _post(client, bundle, query)
    body = resp.get_json()
    assert resp.status_code == 422, body
    assert body["resourceType"] == "OperationOutcome"
    a = f"Bundle.entry[{first}].resource.performedDateTime"
    b = f"Bundle.entry[{second}].resource.performedDateTime"
    assert {e for i in body["issue"] for e in i.get("expression", [])} >= {a, b}, body
    said = [i["diagnostics"] for i in body["issue"]]
    assert any(a in d and b in d and RULE in d and "2021-05-10" in d for d in said), body
    assert _stored(client) == []


def test_profiled_procedures_of_one_surgery_on_two_days_are_refused(client: FlaskClient) -> None:
    bundle, surgery, ivc = _conflicting()
    _refused_naming_both(client, bundle, surgery, ivc, "")


def test_plain_procedures_of_one_surgery_on_two_days_are_refused(client: FlaskClient) -> None:
    bundle, _, _ = _conflicting()
    sent = plain(bundle)
    dates = {e["resource"].get("performedDateTime"): n for n, e in enumerate(sent["entry"])}
    resection = next(
        n
        for n, e in enumerate(sent["entry"])
        if e["resource"]["resourceType"] == "Procedure"
        and e["resource"].get("performedDateTime") == "2021-04-12"
        and not e["resource"].get("partOf")
    )
    _refused_naming_both(client, sent, resection, dates["2021-05-10"], EHR)


@pytest.mark.parametrize(("resection", "management"), [("2021", "2021-04-12"), ("2021-04-12", "2021-04")])
def test_dates_of_different_precision_that_agree_are_one_date_kept_to_the_day(
    client: FlaskClient, resection: str, management: str
) -> None:
    bundle = _bundle(_case())
    _entry(bundle, "surgery")[1]["performedDateTime"] = resection
    _entry(bundle, "ivc-management")[1]["performedDateTime"] = management
    resp = _post(client, bundle)
    assert resp.status_code == 200, resp.get_json()
    (listed,) = _stored(client)
    stored = client.get(f"/cases/{listed['id']}", headers=_auth()).get_json()
    assert stored["surgery"][0]["date"] == "2021-04-12", stored


def test_a_month_that_does_not_contain_the_day_is_a_conflict(client: FlaskClient) -> None:
    bundle = _bundle(_case())
    surgery = _entry(bundle, "surgery")[0]
    ivc, management = _entry(bundle, "ivc-management")
    management["performedDateTime"] = "2021-05"
    resp = _post(client, bundle)
    assert resp.status_code == 422, resp.get_json()
    assert RULE in resp.get_data(as_text=True)
    assert f"Bundle.entry[{surgery}]" in resp.get_data(as_text=True)
    assert f"Bundle.entry[{ivc}]" in resp.get_data(as_text=True)


def test_unmap_refuses_the_conflict_naming_both_elements() -> None:
    """``ivclms unmap`` reads a Bundle file with the same code (``unmap_bundle``)."""
    bundle, surgery, ivc = _conflicting()
    with pytest.raises(MappingError) as raised:
        unmap_bundle(bundle)
    said = str(raised.value)
    assert f"Bundle.entry[{surgery}].resource.performedDateTime (2021-04-12)" in said
    assert f"Bundle.entry[{ivc}].resource.performedDateTime (2021-05-10)" in said
    assert RULE in said

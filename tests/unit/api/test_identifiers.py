"""Issue 12, finding 16: identifier variants made a second case for the same patient.

The business key (source system + case id) names a case and its public id (``case_ref``). Case ids
are NFKC-normalised and refused (422 naming ``case_id`` and the rule) when they hold invisible, bidi,
control, space-other-than-U+0020 or non-ASCII punctuation characters (U+2010 HYPHEN is refused, not
folded: a client learns its id is not what it thinks), or leading/trailing whitespace. Source systems
are URIs of RFC 3986 characters, stored and compared lower-cased. On every intake path: case JSON,
CSV and FHIR Bundles.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.model.csv_flat import write_csv
from service.store.cases import case_ref
from tests.support.examples import EXAMPLES
from tests.tokens import bearer
from tests.unit.mapping.test_recognise import plain

ADMIN = bearer("system/*.cruds")
NOW = "2026-01-01T00:00:00Z"
FHIR = "application/fhir+json"

VARIANTS = {
    "zero-width space": ("IVC-001\u200b", "U+200B"),
    "hyphen U+2010": ("IVC\u2010001", "U+2010"),
    "non-breaking hyphen": ("IVC\u2011001", "U+2011"),
    "minus sign": ("IVC\u2212001", "U+2212"),
    "bidi override": ("\u202eIVC-001", "U+202E"),
    "bidi isolate": ("IVC-001\u2066", "U+2066"),
    "byte order mark": ("\ufeffIVC-001", "U+FEFF"),
    "combining grapheme joiner": ("IVC-001\u034f", "U+034F"),
    "variation selector": ("IVC-001\ufe0f", "U+FE0F"),
    "no-break space": ("IVC\u00a0001", "U+00A0"),
    "tab": ("IVC-001\tx", "U+0009"),
    "line feed": ("IVC\n001", "U+000A"),
    "delete": ("IVC-001\x7f", "U+007F"),
    "trailing space": ("IVC-001 ", "whitespace"),
    "leading space": (" IVC-001", "whitespace"),
}


def example(n: int = 0, **changes: Any) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(EXAMPLES[n].read_text())
    case.update(changes)
    return case


def cases(client: Any) -> list[dict[str, Any]]:
    return list(client.get("/cases?_count=500", headers=ADMIN).get_json()["cases"])


def renamed_bundle(case_id: str) -> dict[str, Any]:
    """The example's profiled Bundle (a collection: no request URLs) with every occurrence of its case
    id replaced, business identifiers included: what an EHR sending a look-alike id would post."""
    made = case_to_bundle(validate_case(example()), now=NOW)
    entries = [{k: v for k, v in e.items() if k != "request"} for e in made["entry"]]
    text = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    return dict(json.loads(text.replace("IVC-001", json.dumps(case_id)[1:-1])))


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_finding_16_look_alike_case_id_is_refused_on_every_intake_path(client, variant):
    case_id, named = VARIANTS[variant]
    resp = client.post("/cases", json=example(case_id=case_id), headers=ADMIN)
    assert resp.status_code == 422, resp.get_json()
    (issue,) = resp.get_json()["issue"]
    assert issue["expression"] == ["case_id"] and named in issue["diagnostics"]

    text = write_csv([{**validate_case(example()), "case_id": case_id}])
    resp = client.post("/cases/import", data=text, headers=ADMIN, content_type="text/csv")
    assert resp.status_code == 422, resp.get_json()
    assert any(named in i["diagnostics"] and "case_id" in i["diagnostics"] for i in resp.get_json()["issue"])

    body = json.dumps(renamed_bundle(case_id))
    resp = client.post("/fhir", data=body, headers=ADMIN, content_type=FHIR)
    assert resp.status_code == 422, resp.get_json()
    said = " ".join(i["diagnostics"] for i in resp.get_json()["issue"])
    # FHIR R4 datatypes: a string is "[ \r\n\t\S]+", so U+00A0 is refused by the validator first
    assert named in said or (variant == "no-break space" and "is not a valid string" in said), said
    assert cases(client) == []


def test_finding_16_case_id_is_nfc_normalised(client):
    """``Zürich`` typed with a combining diaeresis (u + U+0308) is the same case as the precomposed one."""
    composed, decomposed = "Z\u00fcrich-7", "Zu\u0308rich-7"
    assert unicodedata.normalize("NFC", decomposed) == composed != decomposed
    first = client.post("/cases", json=example(case_id=decomposed), headers=ADMIN)
    assert first.status_code == 201
    assert first.get_json()["case_id"] == composed
    assert first.headers["Location"] == f"/cases/{case_ref('urn:ivclms:example:hospital-a', composed)}"
    again = client.post("/cases", json=example(case_id=composed), headers=ADMIN)
    assert again.status_code == 200
    assert len(cases(client)) == 1


def test_finding_16_fullwidth_case_id_is_the_same_case(client):
    """Found by the outside review: IVC-001 in fullwidth forms (U+FF29 ...) made a second case for
    ``IVC-001``. Unicode compatibility normalisation (NFKC, UAX #15: "compatibility equivalence ...
    fullwidth and halfwidth forms") folds them."""
    plain, fullwidth = "IVC-7001", "\uff29\uff36\uff23-7001"
    assert unicodedata.normalize("NFKC", fullwidth) == plain != fullwidth
    assert client.post("/cases", json=example(case_id=plain), headers=ADMIN).status_code == 201
    again = client.post("/cases", json=example(case_id=fullwidth), headers=ADMIN)
    assert again.status_code == 200, again.get_json()
    assert len(cases(client)) == 1


def test_finding_16_letters_and_digits_of_any_script_are_case_ids(client):
    for n, case_id in enumerate(["Ωμέγα-1", "病例/2021 17", "ИВК_003", "क-४"]):
        resp = client.post("/cases", json=example(n, case_id=case_id), headers=ADMIN)
        assert resp.status_code == 201, (case_id, resp.get_json())


def test_finding_16_upper_case_source_system_is_the_same_case(client):
    """RFC 3986, 6.2.2.1: "the scheme and host are case-insensitive and therefore should be normalized
    to lowercase"; RFC 8141, 3.1: URN-equivalence lowercases "the URI scheme "urn"" and "the NID".
    This service stores and compares source systems lower-cased entirely (a hospital is never told
    apart by letter case), which covers both and the NSS too."""
    original = example()
    assert client.post("/cases", json=original, headers=ADMIN).status_code == 201
    for source in ("URN:IVCLMS:EXAMPLE:HOSPITAL-A", "urn:IVCLMS:example:Hospital-A"):
        resp = client.post("/cases", json=example(source_system=source), headers=ADMIN)
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["source_system"] == original["source_system"]
    bundle = json.dumps(plain(case_to_bundle(validate_case(original), now=NOW)))
    for source, status in (("URN:IVCLMS:EXAMPLE:EHR", "201 Created"), ("urn:ivclms:example:ehr", "200 OK")):
        resp = client.post(f"/fhir?source-system={source}", data=bundle, headers=ADMIN, content_type=FHIR)
        assert resp.status_code == 200, resp.get_json()
        assert {e["response"]["status"] for e in resp.get_json()["entry"]} == {status}
    csv = write_csv([validate_case(original)]).replace(
        original["source_system"], "URN:ivclms:EXAMPLE:hospital-a", 1
    )
    resp = client.post("/cases/import", data=csv, headers=ADMIN, content_type="text/csv")
    assert resp.status_code == 200 and resp.get_json()["unchanged"] == 1, resp.get_json()
    assert sorted(c["source_system"] for c in cases(client)) == [
        "urn:ivclms:example:ehr",
        original["source_system"],
    ]


@pytest.mark.parametrize("source", ["urn:ivclms:hospital\u200b-a", "urn:ivclms:hospit\u0430l-a", "urn:a|b"])
def test_finding_16_source_system_of_non_uri_characters_is_refused(client, source):
    resp = client.post("/cases", json=example(source_system=source), headers=ADMIN)
    assert resp.status_code == 422
    (issue,) = resp.get_json()["issue"]
    assert issue["expression"] == ["source_system"] and "RFC 3986" in issue["diagnostics"]


def test_finding_16_examples_keep_their_ids():
    """The normalisation moves no stored case: every example's key is already normal."""
    for path in EXAMPLES:
        raw = json.loads(path.read_text())
        case = validate_case(raw)
        assert (case["source_system"], case["case_id"]) == (raw["source_system"], raw["case_id"])
        assert case_ref(case["source_system"], case["case_id"]) == case_ref(
            raw["source_system"], raw["case_id"]
        )


def test_finding_16_bundle_answers_name_the_stored_resources(client):
    """A profiled Bundle whose identifiers carry an upper-case source is stored under the lower-case
    one, and the transaction-response locations name the resources as stored."""
    case = validate_case(example())
    made = case_to_bundle(case, now=NOW)
    upper = case["source_system"].upper()
    text = json.dumps(made).replace(case["source_system"], upper)
    text = text.replace(case["source_system"].replace(":", "%3A"), upper.replace(":", "%3A"))
    assert case["source_system"] not in text
    resp = client.post("/fhir", data=text, headers=ADMIN, content_type=FHIR)
    assert resp.status_code == 200, resp.get_json()
    expected = [
        e["fullUrl"].removeprefix("urn:uuid:")
        for e in made["entry"]
        if e["resource"]["resourceType"] != "Provenance"
    ]
    got = [
        e["response"]["location"].split("/")[1]
        for e, sent in zip(resp.get_json()["entry"], made["entry"], strict=True)
        if sent["resource"]["resourceType"] != "Provenance"
    ]
    assert got == expected
    (row,) = cases(client)
    assert row["source_system"] == case["source_system"]


def test_outside_review_free_text_is_bounded(client):
    """A 9 MB ``institution`` was stored (201); free text is bounded like identifiers are."""
    from service.model.fields import TEXT_MAX

    long = client.post("/cases", json=example(institution="x" * (TEXT_MAX + 1)), headers=ADMIN)
    assert long.status_code == 422
    issue = long.get_json()["issue"][0]
    assert "institution" in issue["diagnostics"] and f"at most {TEXT_MAX}" in issue["diagnostics"]
    assert cases(client) == []
    assert client.post("/cases", json=example(institution="x" * TEXT_MAX), headers=ADMIN).status_code == 201
